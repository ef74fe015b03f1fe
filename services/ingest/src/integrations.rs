//! The integrations ingest authenticates deliveries against, cached in memory.
//!
//! Every webhook names its integration (by id in the path, or by write key / bearer
//! token), and looking it up in Postgres per request would cost a round trip per event.
//! Lookups are cached for `INGEST_INTEGRATION_CACHE_MS`, misses included (so a flood of
//! unknown ids does not reach Postgres either); disabling or rotating an integration
//! takes effect within that time. The cache is cleared whole when it grows past a bound,
//! which keeps memory flat whatever ids callers invent.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ingestion::signing::secret_matches;
use sqlx::PgPool;
use storage::StorageError;
use storage::integrations::{self, Integration};
use storage::secrets::SecretsKey;
use uuid::Uuid;

const MAX_ENTRIES: usize = 10_000;

struct Cached {
    at: Instant,
    value: Option<Arc<Integration>>,
}

type SecretKey = (&'static str, Vec<u8>);

/// Cached integration lookups.
pub struct Integrations {
    db: PgPool,
    key: SecretsKey,
    ttl: Duration,
    by_id: RwLock<HashMap<Uuid, Cached>>,
    by_secret: RwLock<HashMap<SecretKey, Cached>>,
}

fn fresh<K: std::hash::Hash + Eq>(
    map: &RwLock<HashMap<K, Cached>>,
    key: &K,
    ttl: Duration,
) -> Option<Option<Arc<Integration>>> {
    let map = map
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get(key)
        .filter(|c| c.at.elapsed() < ttl)
        .map(|c| c.value.clone())
}

fn remember<K: std::hash::Hash + Eq>(
    map: &RwLock<HashMap<K, Cached>>,
    key: K,
    value: Option<Arc<Integration>>,
) {
    let mut map = map
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(
        key,
        Cached {
            at: Instant::now(),
            value,
        },
    );
}

impl Integrations {
    /// Lookups in `db` (secrets opened with `key`), each cached for `ttl` (zero: no
    /// caching).
    pub fn new(db: PgPool, key: SecretsKey, ttl: Duration) -> Self {
        Self {
            db,
            key,
            ttl,
            by_id: RwLock::default(),
            by_secret: RwLock::default(),
        }
    }

    /// The integration `id` if it exists and is of `kind`.
    pub async fn by_id(
        &self,
        kind: &str,
        id: Uuid,
    ) -> Result<Option<Arc<Integration>>, StorageError> {
        let found = match fresh(&self.by_id, &id, self.ttl) {
            Some(hit) => hit,
            None => {
                let row = integrations::get(&self.db, &self.key, id)
                    .await?
                    .map(Arc::new);
                remember(&self.by_id, id, row.clone());
                row
            }
        };
        Ok(found.filter(|i| i.kind == kind))
    }

    /// The integration of `kind` whose secret is `secret` (write key, bearer token).
    /// Found through the secret's hash, then compared in constant time.
    pub async fn by_secret(
        &self,
        kind: &'static str,
        secret: &str,
    ) -> Result<Option<Arc<Integration>>, StorageError> {
        let key = (kind, integrations::secret_sha256(secret));
        let found = match fresh(&self.by_secret, &key, self.ttl) {
            Some(hit) => hit,
            None => {
                let row = integrations::find_by_secret(&self.db, &self.key, kind, secret)
                    .await?
                    .map(Arc::new);
                remember(&self.by_secret, key, row.clone());
                row
            }
        };
        Ok(found.filter(|i| secret_matches(&i.secret, secret)))
    }
}
