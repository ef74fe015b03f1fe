//! Twilio's Messages API, for WhatsApp.
//!
//! Follows Twilio's API reference "Messages resource → Create a Message resource":
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic with the account
//! SID and auth token, form-encoded `To`, `From` (or `MessagingServiceSid`), `Body` or
//! `ContentSid` + `ContentVariables` (JSON), and `StatusCallback`. A 201 answers the
//! Message resource (`sid` `SM…`, `status`); errors answer `{code, message, more_info,
//! status}` ("API Responses → Errors"). 429 and 5xx are transient; other 4xx permanent
//! (e.g. 21211 invalid `To`, 63016 free-form outside the 24-hour window).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{SendError, retry_after, transport_error};

/// A Twilio account's Messages API.
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: SecretString,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// One outbound WhatsApp message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    /// `whatsapp:+E164`.
    pub to: String,
    /// `whatsapp:+E164` sender (unused with a Messaging Service).
    pub from: Option<String>,
    /// Messaging Service SID (`MG…`) to send from.
    pub messaging_service_sid: Option<String>,
    /// Free-form text.
    pub body: Option<String>,
    /// Template SID (`HX…`).
    pub content_sid: Option<String>,
    /// The template's variables as a JSON object string.
    pub content_variables: Option<String>,
    /// Where Twilio reports the message's status.
    pub status_callback: Option<String>,
}

impl Outbound {
    /// The form parameters, in Twilio's names.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("To", self.to.clone())];
        let optional = [
            ("From", &self.from),
            ("MessagingServiceSid", &self.messaging_service_sid),
            ("Body", &self.body),
            ("ContentSid", &self.content_sid),
            ("ContentVariables", &self.content_variables),
            ("StatusCallback", &self.status_callback),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                f.push((k, v.clone()));
            }
        }
        f
    }
}

/// The accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    /// Message SID (`SM…`).
    pub sid: String,
    /// Its first status (`queued`, `accepted`).
    pub status: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

impl TwilioClient {
    /// A client of the account at `base` (`https://api.twilio.com`), each call bounded by
    /// `timeout`.
    pub fn new(
        base: &str,
        account_sid: &str,
        auth_token: SecretString,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token,
        })
    }

    /// Creates a message.
    pub async fn send(&self, m: &Outbound) -> Result<Accepted, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base, self.account_sid
        );
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(&m.form())
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SendError::Ambiguous(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice::<Accepted>(&bytes)
                .map_err(|e| SendError::Ambiguous(format!("unreadable answer: {e}")));
        }
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let code = body
            .as_ref()
            .and_then(|b| b.code)
            .map(|c| c.to_string())
            .unwrap_or_else(|| status.as_u16().to_string());
        let message = body
            .and_then(|b| b.message)
            .unwrap_or_else(|| status.to_string());
        if status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Transient {
                code,
                message,
                retry_after: wait,
            })
        } else {
            Err(SendError::Permanent { code, message })
        }
    }
}
