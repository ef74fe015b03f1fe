//! Webhook signatures of every signed source, both ways: `sign_*` computes the header a
//! platform would send (the demo generator, the benchmark and tests sign with these), and
//! `verify_*` checks a received header in constant time (`hmac`'s `verify_slice`).
//!
//! - Shopify `X-Shopify-Hmac-Sha256` and WooCommerce `X-WC-Webhook-Signature`: base64 of
//!   HMAC-SHA256 over the raw request body, keyed by the webhook secret.
//! - Twilio `X-Twilio-Signature`: base64 of HMAC-SHA1 keyed by the auth token over the
//!   full public URL followed by every POST parameter's name and value, sorted by name.
//!
//! A header that is not valid base64 simply fails verification: a wrong signature and a
//! garbled one get the same answer, so the check leaks nothing about the secret.
//! Secrets presented as they are (write keys, bearer tokens) are compared with
//! [`secret_matches`], also in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

fn hmac_sha256(secret: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac
}

fn twilio_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Sorted by name; repeated names keep a deterministic order by value.
    sorted.sort();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

fn verify(mac: impl Mac, header: &str) -> bool {
    match STANDARD.decode(header.trim()) {
        Ok(expected) => mac.verify_slice(&expected).is_ok(),
        Err(_) => false,
    }
}

/// The `X-Shopify-Hmac-Sha256` header Shopify sends for `body` signed with `secret`.
pub fn sign_shopify(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(secret, body).finalize().into_bytes())
}

/// Checks an `X-Shopify-Hmac-Sha256` header in constant time.
pub fn verify_shopify(secret: &str, body: &[u8], header: &str) -> bool {
    verify(hmac_sha256(secret, body), header)
}

/// The `X-WC-Webhook-Signature` header WooCommerce sends for `body` signed with `secret`.
pub fn sign_woocommerce(secret: &str, body: &[u8]) -> String {
    sign_shopify(secret, body)
}

/// Checks an `X-WC-Webhook-Signature` header in constant time.
pub fn verify_woocommerce(secret: &str, body: &[u8], header: &str) -> bool {
    verify_shopify(secret, body, header)
}

/// The `X-Twilio-Signature` header Twilio sends when it POSTs `params` to `url` (the
/// full public URL, query string included), keyed by the account's auth token.
pub fn sign_twilio(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(twilio_mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks an `X-Twilio-Signature` header in constant time.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    verify(twilio_mac(auth_token, url, params), header)
}

/// Compares a presented secret (write key, bearer token) with the stored one in
/// constant time.
pub fn secret_matches(stored: &str, presented: &str) -> bool {
    stored.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_round_trip_and_tamper() {
        let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
        let sig = sign_shopify("hush", body);
        assert!(verify_shopify("hush", body, &sig));
        assert!(!verify_shopify("other", body, &sig), "wrong secret");
        assert!(
            !verify_shopify("hush", br#"{"id":820982911946154509}"#, &sig),
            "tampered body"
        );
        assert!(!verify_shopify("hush", body, "not base64 !!"));
        assert!(!verify_shopify("hush", body, ""));
    }

    #[test]
    fn shopify_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = sign_shopify("Jefe", b"what do ya want for nothing?");
        let hex = hex::encode(STANDARD.decode(sig).unwrap());
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn twilio_signs_url_and_sorted_params() {
        // The example of Twilio's security documentation.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sig = sign_twilio("12345", url, &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        let mut reversed = params.clone();
        reversed.reverse();
        assert!(verify_twilio("12345", url, &reversed, &sig), "order-free");
        assert!(!verify_twilio(
            "12345",
            "https://mycompany.com/other",
            &params,
            &sig
        ));
        assert!(!verify_twilio("54321", url, &params, &sig));
    }
}
