//! The one place where subjects are built and parsed.
//!
//! The tenant is a subject token (not only a header) so that NATS account permissions can
//! confine a direct publisher to its own `wf.start.<tenant>.>`.

use std::fmt;

/// Why a name cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {len}")]
    TooLong { len: usize, max: usize },
    #[error("contains {0:?}; allowed are letters, digits, '-' and '_'")]
    BadChar(char),
}

/// Longest accepted token (tenant, workflow, instance id, signal name…).
pub const MAX_TOKEN_LEN: usize = 128;

/// Checks that `token` can be one subject token: letters, digits, `-` and `_`.
///
/// Dots, wildcards and whitespace would let one value address another tenant's subjects.
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(TokenError::BadChar(c)),
        None => Ok(()),
    }
}

/// Checks an operation name `<kind>.<op>[.<op>…]`: dot-separated valid tokens.
pub fn check_operation(operation: &str) -> Result<(), TokenError> {
    let mut parts = operation.split('.');
    let kind = parts.next().unwrap_or_default();
    check_token(kind)?;
    let mut any = false;
    for part in parts {
        check_token(part)?;
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(TokenError::BadChar('.'))
    }
}

/// `wf.start.<tenant>.<workflow>`
pub fn start(tenant: &str, workflow: &str) -> String {
    format!("wf.start.{tenant}.{workflow}")
}

/// `wf.start.>` — every start message.
pub const ALL_STARTS: &str = "wf.start.>";
/// `wf.result.>` — every job result addressed to the orchestrator.
pub const ALL_RESULTS: &str = "wf.result.>";
/// `wf.cancel.>`
pub const ALL_CANCELS: &str = "wf.cancel.>";
/// `wf.rerun.>`
pub const ALL_RERUNS: &str = "wf.rerun.>";
/// `wf.signal.>`
pub const ALL_SIGNALS: &str = "wf.signal.>";
/// `wf.timer.>` — the orchestrator's own timers (step timeouts, SLA deadlines).
pub const ALL_TIMERS: &str = "wf.timer.>";
/// `wf.schedule.>` — the schedule messages the bus's scheduler fires (stream `WF_SCHEDULES`).
pub const ALL_SCHEDULES: &str = "wf.schedule.>";
/// `wf.tick.>` — what the scheduler publishes when a schedule fires, one subject per schedule.
pub const ALL_TICKS: &str = "wf.tick.>";
/// `evt.>` — tenants' own events, which start the workflows whose `triggers:` name them
/// (stream `WF_TRIGGERS`).
pub const ALL_TENANT_EVENTS: &str = "evt.>";
/// `wf.events.>`
pub const ALL_EVENTS: &str = "wf.events.>";
/// `usage.>`
pub const ALL_USAGE: &str = "usage.>";
/// `audit.>`
pub const ALL_AUDIT: &str = "audit.>";
/// `dlq.>`
pub const ALL_DLQ: &str = "dlq.>";
/// Instance-cancelled events of every tenant, which workers watch to stop running jobs.
pub const ALL_CANCELLED_EVENTS: &str = "wf.events.*.*.cancelled";
/// Instance-failed events of every tenant: the other running jobs of a failed instance are
/// stopped too, since nothing will use their results.
pub const ALL_FAILED_EVENTS: &str = "wf.events.*.*.failed";

/// `wf.result.<instance>`
pub fn result(instance: &str) -> String {
    format!("wf.result.{instance}")
}

/// `wf.cancel.<tenant>.<instance>`
pub fn cancel(tenant: &str, instance: &str) -> String {
    format!("wf.cancel.{tenant}.{instance}")
}

/// `wf.rerun.<tenant>.<instance>`
pub fn rerun(tenant: &str, instance: &str) -> String {
    format!("wf.rerun.{tenant}.{instance}")
}

/// `wf.signal.<tenant>.<instance>.<name>`
pub fn signal(tenant: &str, instance: &str, name: &str) -> String {
    format!("wf.signal.{tenant}.{instance}.{name}")
}

/// `wf.timer.<instance>`: a timer the orchestrator set for one of its instances.
pub fn timer(instance: &str) -> String {
    format!("wf.timer.{instance}")
}

/// `wf.schedule.<tenant>.<workflow>.<name>`: schedule `name` of a tenant's workflow, held by
/// the bus's message scheduler.
pub fn schedule(tenant: &str, workflow: &str, name: &str) -> String {
    format!("wf.schedule.{tenant}.{workflow}.{name}")
}

/// `wf.tick.<tenant>.<workflow>.<name>`: where schedule `name` fires.
pub fn tick(tenant: &str, workflow: &str, name: &str) -> String {
    format!("wf.tick.{tenant}.{workflow}.{name}")
}

/// Tenant, workflow and schedule name of a [`schedule`] or [`tick`] subject.
pub fn parse_schedule(subject: &str) -> Option<(&str, &str, &str)> {
    let mut parts = subject.split('.');
    let (Some("wf"), Some("schedule" | "tick"), Some(tenant), Some(workflow), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((tenant, workflow, name))
}

/// `evt.<tenant>.<subject>`: an event of a tenant's own, on `subject` (tokens of its choosing).
pub fn tenant_event(tenant: &str, subject: &str) -> String {
    format!("evt.{tenant}.{subject}")
}

/// Tenant and subject of a [`tenant_event`] subject.
pub fn parse_tenant_event(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("evt.")?;
    let (tenant, subject) = rest.split_once('.')?;
    (!tenant.is_empty() && !subject.is_empty()).then_some((tenant, subject))
}

/// `wf.events.<tenant>.<instance>.<type>`
pub fn event(tenant: &str, instance: &str, event_type: &str) -> String {
    format!("wf.events.{tenant}.{instance}.{event_type}")
}

/// The event type that tells workers an instance was cancelled.
pub const CANCELLED_EVENT: &str = crate::event::CANCELLED;

/// `wf.events.<tenant>.<instance>.>` — everything that happens to one instance.
pub fn events_of(tenant: &str, instance: &str) -> String {
    format!("wf.events.{tenant}.{instance}.>")
}

/// `jobs.<kind>.<op>` for an operation named `<kind>.<op>`.
pub fn job(operation: &str) -> String {
    format!("jobs.{operation}")
}

/// `jobs.<kind>.>` — every job of one kind.
pub fn jobs_of(kind: &str) -> String {
    format!("jobs.{kind}.>")
}

/// `usage.<tenant>.<meter>`
pub fn usage(tenant: &str, meter: &str) -> String {
    format!("usage.{tenant}.{meter}")
}

/// `audit.<tenant>.<action>`; an action such as `definition.put` spans two tokens.
pub fn audit(tenant: &str, action: &str) -> String {
    format!("audit.{tenant}.{action}")
}

/// `dlq.<kind>`
pub fn dlq(kind: &str) -> String {
    format!("dlq.{kind}")
}

/// The request/reply endpoint group under which a worker kind's micro service answers.
pub fn service_group(kind: &str) -> String {
    format!("svc.{kind}")
}

/// A parsed subject of the `WF_INBOX` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbox<'a> {
    Start {
        tenant: &'a str,
        workflow: &'a str,
    },
    Result {
        instance: &'a str,
    },
    Cancel {
        tenant: &'a str,
        instance: &'a str,
    },
    Rerun {
        tenant: &'a str,
        instance: &'a str,
    },
    Signal {
        tenant: &'a str,
        instance: &'a str,
        name: &'a str,
    },
    Timer {
        instance: &'a str,
    },
}

impl fmt::Display for Inbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inbox::Start { tenant, workflow } => f.write_str(&start(tenant, workflow)),
            Inbox::Result { instance } => f.write_str(&result(instance)),
            Inbox::Cancel { tenant, instance } => f.write_str(&cancel(tenant, instance)),
            Inbox::Rerun { tenant, instance } => f.write_str(&rerun(tenant, instance)),
            Inbox::Signal {
                tenant,
                instance,
                name,
            } => f.write_str(&signal(tenant, instance, name)),
            Inbox::Timer { instance } => f.write_str(&timer(instance)),
        }
    }
}

/// Parses a `WF_INBOX` subject; `None` when it is not one.
pub fn parse_inbox(subject: &str) -> Option<Inbox<'_>> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["wf", "start", tenant, workflow] => Some(Inbox::Start { tenant, workflow }),
        ["wf", "result", instance] => Some(Inbox::Result { instance }),
        ["wf", "cancel", tenant, instance] => Some(Inbox::Cancel { tenant, instance }),
        ["wf", "rerun", tenant, instance] => Some(Inbox::Rerun { tenant, instance }),
        ["wf", "signal", tenant, instance, name] => Some(Inbox::Signal {
            tenant,
            instance,
            name,
        }),
        ["wf", "timer", instance] => Some(Inbox::Timer { instance }),
        _ => None,
    }
}

/// The operation `<kind>.<op>` a `jobs.<kind>.<op>` subject addresses.
pub fn operation_of_job(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("jobs.")
        .filter(|op| check_operation(op).is_ok())
}

/// `(tenant, instance, type)` of a `wf.events.<tenant>.<instance>.<type>` subject.
pub fn parse_event(subject: &str) -> Option<(&str, &str, &str)> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["wf", "events", tenant, instance, ty] => Some((tenant, instance, ty)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_reject_what_would_escape_a_tenant() {
        assert!(check_token("acme-01_x").is_ok());
        assert_eq!(check_token(""), Err(TokenError::Empty));
        assert_eq!(check_token("a.b"), Err(TokenError::BadChar('.')));
        assert_eq!(check_token("*"), Err(TokenError::BadChar('*')));
        assert_eq!(check_token(">"), Err(TokenError::BadChar('>')));
        assert_eq!(check_token("a b"), Err(TokenError::BadChar(' ')));
        assert!(matches!(
            check_token(&"x".repeat(129)),
            Err(TokenError::TooLong { .. })
        ));
    }

    #[test]
    fn operations_have_a_kind_and_an_op() {
        assert!(check_operation("test.echo").is_ok());
        assert!(check_operation("integration.notion.create_page").is_ok());
        assert!(check_operation("test").is_err());
        assert!(check_operation("test.").is_err());
        assert!(check_operation("test.*").is_err());
        assert_eq!(operation_of_job("jobs.test.echo"), Some("test.echo"));
        assert_eq!(operation_of_job("jobs.test"), None);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,40}"
    }

    proptest! {
        #[test]
        fn inbox_subjects_round_trip(t in token(), w in token(), i in token(), n in token()) {
            let cases = [
                start(&t, &w), result(&i), cancel(&t, &i), rerun(&t, &i), signal(&t, &i, &n), timer(&i),
            ];
            for subject in cases {
                let parsed = parse_inbox(&subject).expect("parses");
                prop_assert_eq!(parsed.to_string(), subject);
            }
            let ev = event(&t, &i, &n);
            prop_assert_eq!(parse_event(&ev), Some((t.as_str(), i.as_str(), n.as_str())));
        }
    }
}
