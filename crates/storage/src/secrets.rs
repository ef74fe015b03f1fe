//! Integration secrets at rest: sealed with XChaCha20-Poly1305 under a key from the
//! environment (`INTEGRATION_SECRETS_KEY`), so a copy of the database (a backup, a
//! replica, a leaked dump) does not hand out the brands' signing secrets and write
//! keys.
//!
//! A sealed value is `version (1) ‖ key id (4) ‖ nonce (24) ‖ ciphertext and tag`. The
//! nonce is random (24 bytes: collisions are not a concern); the key id is the start
//! of the key's SHA-256, so a value sealed under another key is refused by name rather
//! than as a bare authentication failure; the associated data binds each value to its
//! row (the integration id), so sealed secrets cannot be swapped between rows.
//!
//! The key is 32 random bytes, written base64 (`openssl rand -base64 32`, or
//! [`SecretsKey::generate`]). Losing it loses the secrets (integrations then need
//! `rotate-secret` and the new secret pasted into each platform); changing it needs
//! the old one to re-seal (`ctl integration reseal`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::StorageError;

/// Format version of sealed values.
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The key integration secrets are sealed with. Never printed.
#[derive(Clone)]
pub struct SecretsKey {
    key: [u8; 32],
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey({})", hex::encode(self.id))
    }
}

impl SecretsKey {
    /// Parses the setting's value: base64 of exactly 32 bytes. The error never
    /// contains the value.
    pub fn from_base64(value: &str) -> Result<Self, StorageError> {
        let bytes = STANDARD.decode(value.trim()).map_err(|_| {
            StorageError::Invalid(
                "INTEGRATION_SECRETS_KEY is not base64 (make one with `openssl rand -base64 32`)"
                    .into(),
            )
        })?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, StorageError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            StorageError::Invalid(format!(
                "INTEGRATION_SECRETS_KEY must be 32 bytes, base64; this one is {} bytes",
                bytes.len()
            ))
        })?;
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Self { key, id })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.key))
    }

    /// A new random key and its base64 form (for `.env`, tests and `ctl`).
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random generator is available");
        let text = STANDARD.encode(bytes);
        (Self::from_bytes(&bytes).expect("32 bytes make a key"), text)
    }

    /// Seals `secret` for the row identified by `row` (its id's bytes).
    pub fn seal(&self, row: &[u8], secret: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random generator is available");
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: row,
                },
            )
            .expect("sealing a short secret cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value [`seal`](Self::seal)ed for `row`. Refused when it was sealed
    /// under another key, for another row, or altered.
    pub fn open(&self, row: &[u8], sealed: &[u8]) -> Result<String, StorageError> {
        let corrupt = || StorageError::Invalid("a sealed integration secret is corrupt".into());
        if sealed.len() < HEADER_LEN || sealed[0] != VERSION {
            return Err(corrupt());
        }
        if sealed[1..=KEY_ID_LEN] != self.id {
            return Err(StorageError::Invalid(format!(
                "an integration secret was sealed under another INTEGRATION_SECRETS_KEY \
                 (key id {}, this key is {})",
                hex::encode(&sealed[1..=KEY_ID_LEN]),
                hex::encode(self.id)
            )));
        }
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let plain = self
            .cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: row,
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }

    /// The key's id (start of its SHA-256, hex), for messages.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_row() {
        let (key, text) = SecretsKey::generate();
        let again = SecretsKey::from_base64(&text).unwrap();
        let sealed = key.seal(b"row-1", "shpss_supersecret");
        assert!(
            !sealed
                .windows(b"supersecret".len())
                .any(|w| w == b"supersecret"),
            "the plaintext is not in the sealed value"
        );
        assert_ne!(
            sealed,
            key.seal(b"row-1", "shpss_supersecret"),
            "fresh nonce"
        );
        assert_eq!(again.open(b"row-1", &sealed).unwrap(), "shpss_supersecret");
        assert!(key.open(b"row-2", &sealed).is_err(), "bound to its row");
        let (other, _) = SecretsKey::generate();
        let err = other.open(b"row-1", &sealed).unwrap_err().to_string();
        assert!(err.contains("another INTEGRATION_SECRETS_KEY"), "{err}");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"row-1", &altered).is_err());
        assert!(key.open(b"row-1", b"plain").is_err());
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = SecretsKey::from_base64("not base64 at all!")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not base64 at all"), "{err}");
        let short = STANDARD.encode([7u8; 16]);
        let err = SecretsKey::from_base64(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(!format!("{:?}", SecretsKey::generate().0).contains('='));
    }
}
