//! Signed outbound webhooks, after Svix's scheme ("Verifying webhooks manually"): the
//! receiver gets `X-ConstIntel-Id` (stable across retries: dedupe on it),
//! `X-ConstIntel-Timestamp` (Unix seconds) and `X-ConstIntel-Signature: v1=<hex>`, the
//! HMAC-SHA256, keyed by the shared secret, of `{timestamp}.{body}`. Receivers check
//! the signature in constant time and refuse old timestamps (replays).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{SendError, retry_after, transport_error};

/// The id header.
pub const ID_HEADER: &str = "X-ConstIntel-Id";
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "X-ConstIntel-Timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-ConstIntel-Signature";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a signature header in constant time, and that `timestamp` is within
/// `tolerance_secs` of `now` (both Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    header.split(' ').any(|sig| {
        sig.strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            .is_some_and(|bytes| mac(secret, timestamp, body).verify_slice(&bytes).is_ok())
    })
}

/// POSTs `body` (JSON) to `url`, signed. 2xx: delivered (the status is returned); 408,
/// 429, 5xx and refused connections: transient; other 4xx: permanent.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &[u8],
    id: &str,
    timestamp: i64,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, SendError> {
    let signature = sign(secret, timestamp, &body);
    let resp = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let code = status.as_u16().to_string();
    let message = format!("the receiver answered {status}");
    if matches!(status.as_u16(), 408 | 429) || status.is_server_error() {
        Err(SendError::Transient {
            code,
            message,
            retry_after: retry_after(resp.headers()),
        })
    } else {
        Err(SendError::Permanent { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_and_old_timestamps() {
        let secret = b"whsec-test";
        let body = br#"{"type":"automation.triggered"}"#;
        let sig = sign(secret, 1_700_000_000, body);
        assert!(sig.starts_with("v1="));
        assert!(verify(
            secret,
            1_700_000_000,
            body,
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            b"{}",
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"other",
            1_700_000_000,
            body,
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_001,
            body,
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            body,
            &sig,
            1_700_001_000,
            300
        ));
        assert!(!verify(
            secret,
            1_700_000_000,
            body,
            "v1=zz",
            1_700_000_000,
            300
        ));
    }
}
