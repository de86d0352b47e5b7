//! Signed outgoing webhooks.
//!
//! The body is the job's `payload` as JSON. Headers: `X-Switchyard-Timestamp` (Unix seconds),
//! `X-Switchyard-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under the signing
//! secret>`, and `X-Switchyard-Delivery` / `Idempotency-Key` carrying the job id, which is the
//! same on every delivery of one job, so a receiver can drop repeats. The timestamp is signed
//! too, so a receiver can refuse old captured requests. See the crate README for a
//! verification snippet.
//!
//! The URL comes from job input, so it is checked ([`crate::AddressGuard`]): http(s)
//! only, no non-public addresses unless configured, no redirects followed.

use hmac::{Hmac, Mac as _};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use switchyard_runtime::config::Secret;

use crate::{
    Error,
    http::{Http, body_text, status_error},
    metrics::System,
    status::Check,
};

pub const TIMESTAMP_HEADER: &str = "X-Switchyard-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Switchyard-Signature";
pub const DELIVERY_HEADER: &str = "X-Switchyard-Delivery";

/// `integration.webhook.post` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    pub url: String,
    pub payload: Value,
}

/// The webhook sender.
#[derive(Debug, Clone)]
pub struct Webhook {
    secret: Option<Secret>,
}

impl Webhook {
    pub fn new(secret: Option<Secret>) -> Self {
        Webhook { secret }
    }

    /// Whether webhooks can be signed. There is nothing remote to check: each job names its
    /// own receiver.
    pub(crate) fn check(&self) -> Check {
        const NAME: &str = "webhook";
        match self.secret {
            Some(_) => Check::checked(
                NAME,
                Ok("the signing secret is set; each job names its receiver".to_owned()),
            ),
            None => Check::not_configured(
                NAME,
                "integration.webhook.signing_secret (or signing_secret_file)",
            ),
        }
    }

    /// Posts the signed payload; returns `{status}`.
    pub(crate) async fn post(
        &self,
        http: &Http,
        job_id: &str,
        input: Post,
    ) -> Result<Value, Error> {
        let secret = self.secret.as_ref().ok_or(Error::NotConfigured {
            what: "Webhook signing",
            key: "integration.webhook.signing_secret (or signing_secret_file)",
        })?;
        let url = http.check_url("url", input.url.trim()).await?;
        let body = serde_json::to_vec(&input.payload)
            .map_err(|e| Error::invalid("payload", e.to_string()))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let signature = sign(secret.expose().as_bytes(), timestamp, &body);
        let request = http
            .guarded
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, job_id)
            .header("Idempotency-Key", job_id)
            .body(body);
        http.call(System::Webhook, request, |reply| {
            if reply.status.is_success() {
                Ok(json!({ "status": reply.status.as_u16() }))
            } else if reply.status.is_redirection() {
                Err(Error::Rejected {
                    system: System::Webhook,
                    status: reply.status.as_u16(),
                    message: "redirects are not followed; post to the final URL".into(),
                })
            } else {
                let message = body_text(&reply.body);
                Err(status_error(System::Webhook, &reply, message))
            }
        })
        .await
    }
}

/// `v1=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
