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

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::config::Secret;
pub use switchyard_runtime::signature::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
};

use crate::{
    Error,
    http::{Http, body_text, status_error},
    metrics::System,
    status::Check,
};

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
