//! `integration.status`: which integrations are configured and whether their credentials
//! work, for an operator's dashboard or a set-up check.
//!
//! Each configured API gets one read-only call that needs valid credentials and changes
//! nothing (Notion `GET /v1/users/me`, Slack `auth.test`, ClickUp `GET /api/v2/user`); the
//! Markdown sink gets a temporary file created and removed in its directory. Nothing is
//! recorded in the effect store: the operation has no effect to repeat.
//!
//! A report is reused for [`REUSE_FOR`], and concurrent callers share one check: ClickUp allows
//! 100 requests a minute per token, and a dashboard polling this must not eat the budget the
//! real work needs. Credentials only change with a restart, so a short reuse hides little.
//!
//! A report never contains a secret: details are the API's own refusal (which names no token)
//! or who the credentials authenticate as.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::Error;

/// How long a report is reused before the systems are asked again.
pub const REUSE_FOR: Duration = Duration::from_secs(15);

/// The longest one check may take; a status report must come back quickly even when a system
/// hangs (the configured request timeout is for real work and may be much longer).
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// `integration.status` input: nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusInput {}

/// The state of one integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `notion`, `slack`, `clickup`, `webhook` or `markdown`.
    pub name: &'static str,
    /// Whether the settings it needs are present.
    pub configured: bool,
    /// Whether its credentials work; `None` when that cannot be known without an effect
    /// (a Slack incoming webhook can only be checked by posting to it).
    pub ok: Option<bool>,
    /// What was found, for a person: who the credentials authenticate as, the API's reason
    /// for refusing them, or the setting to add.
    pub detail: String,
}

impl Check {
    /// An integration whose settings are missing; `key` is the setting to add.
    pub(crate) fn not_configured(name: &'static str, key: &str) -> Check {
        Check {
            name,
            configured: false,
            ok: Some(false),
            detail: format!("not configured: set {key}"),
        }
    }

    /// A configured integration, from the outcome of its check: `Ok(detail)` or the error
    /// the system answered with (its message carries the API's reason, never a credential).
    pub(crate) fn checked(name: &'static str, outcome: Result<String, Error>) -> Check {
        match outcome {
            Ok(detail) => Check {
                name,
                configured: true,
                ok: Some(true),
                detail,
            },
            Err(e) => Check {
                name,
                configured: true,
                ok: Some(false),
                detail: e.to_string(),
            },
        }
    }

    /// A configured integration that cannot be checked without an effect.
    pub(crate) fn unchecked(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            configured: true,
            ok: None,
            detail: detail.into(),
        }
    }
}

/// The operation's output: `{integrations: [...], checked_at_ms}`.
pub(crate) fn report(checks: &[Check], checked_at_ms: i64) -> Value {
    json!({ "integrations": checks, "checked_at_ms": checked_at_ms })
}

/// The last report and when it was made. The lock is held while a check runs, so callers
/// arriving meanwhile wait for that check instead of starting their own.
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    last: Mutex<Option<(Instant, Value)>>,
}

impl Reuse {
    /// The last report when it is younger than [`REUSE_FOR`], else a fresh one from `check`.
    pub(crate) async fn get<F, Fut>(&self, check: F) -> Value
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Value>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < REUSE_FOR
        {
            return report.clone();
        }
        let report = check().await;
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::System;

    #[test]
    fn a_refusal_is_reported_with_the_api_reason_and_not_configured_names_the_setting() {
        let refused = Check::checked(
            "clickup",
            Err(Error::Rejected {
                system: System::ClickUp,
                status: 401,
                message: "Token invalid (OAUTH_025)".into(),
            }),
        );
        assert_eq!(refused.ok, Some(false));
        assert!(refused.configured);
        assert!(refused.detail.contains("Token invalid (OAUTH_025)"));
        let missing = Check::not_configured("notion", "integration.notion.token");
        assert_eq!((missing.configured, missing.ok), (false, Some(false)));
        assert!(missing.detail.contains("integration.notion.token"));
    }

    #[tokio::test]
    async fn a_report_is_reused_until_it_is_old() {
        let reuse = Reuse::default();
        let first = reuse.get(|| async { json!({ "n": 1 }) }).await;
        let second = reuse.get(|| async { json!({ "n": 2 }) }).await;
        assert_eq!(
            (first["n"].as_i64(), second["n"].as_i64()),
            (Some(1), Some(1))
        );
        *reuse.last.lock().await = Some((
            Instant::now()
                .checked_sub(REUSE_FOR + Duration::from_secs(1))
                .expect("a process older than the reuse period"),
            json!({ "n": 1 }),
        ));
        let third = reuse.get(|| async { json!({ "n": 3 }) }).await;
        assert_eq!(third["n"], 3);
    }
}
