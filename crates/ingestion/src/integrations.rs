//! Creating integrations and rotating their secrets: which kinds exist and what a
//! generated secret looks like come from the source registry ([`crate::sources`]);
//! `storage::integrations` stores the rows. `ctl integration add`, the api-gateway, the
//! demo and the tests all create integrations here, so none of them keeps its own list
//! of kinds.

use sqlx::PgPool;
use storage::StorageError;
use storage::integrations::{self, Integration};
use storage::secrets::SecretsKey;
use uuid::Uuid;

use crate::sources;

/// Creates an integration of `kind` named `name`, its secret sealed under `key`.
/// `secret` of `None` generates one with the source's credential prefix.
pub async fn create(
    db: &PgPool,
    key: &SecretsKey,
    kind: &str,
    name: &str,
    secret: Option<&str>,
) -> Result<Integration, StorageError> {
    let connector = sources::by_kind(kind).ok_or_else(|| {
        let kinds: Vec<&str> = sources::all().map(|c| c.source().as_str()).collect();
        StorageError::Invalid(format!(
            "unknown integration kind `{kind}` (one of {})",
            kinds.join(", ")
        ))
    })?;
    let secret = secret.map_or_else(
        || integrations::generate_secret(connector.credential().prefix()),
        str::to_owned,
    );
    integrations::insert(db, key, connector.source(), name, &secret).await
}

/// Replaces an integration's secret with a new random one (same prefix rule as
/// [`create`]) and returns the updated row; `None` when there is no such integration.
pub async fn rotate_secret(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
) -> Result<Option<Integration>, StorageError> {
    let Some(current) = integrations::get(db, key, id).await? else {
        return Ok(None);
    };
    let connector = sources::by_kind(&current.kind).ok_or_else(|| {
        StorageError::Invalid(format!("stored integration kind `{}`", current.kind))
    })?;
    let secret = integrations::generate_secret(connector.credential().prefix());
    integrations::set_secret(db, key, id, &secret).await
}
