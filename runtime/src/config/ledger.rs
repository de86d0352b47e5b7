//! The `[ledger]` section: how the ledger worker batches what it reads from `USAGE`,
//! `WF_EVENTS` and `AUDIT` into Postgres.
//!
//! ```toml
//! [ledger]
//! batch_size = 500        # messages per transaction, at most
//! batch_wait = "200ms"    # a batch is written at most this long after its first message
//! lag_interval = "5s"     # how often the consumers' pending counts are sampled
//! ```

use std::time::Duration;

use figment::Figment;
use serde::{Deserialize, Serialize};

use super::{Problem, duration_or, field};

/// Settings of the ledger worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// The most messages written in one transaction. Env `SWITCHYARD_LEDGER__BATCH_SIZE`.
    /// Default 500.
    pub batch_size: usize,
    /// How long a batch waits for more messages after its first one before it is written.
    /// Env `SWITCHYARD_LEDGER__BATCH_WAIT`. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// How often the durable consumers' pending counts are read for
    /// `switchyard_ledger_lag_messages`. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            batch_size: 500,
            batch_wait: Duration::from_millis(200),
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// The section's keys, for the unknown-key check.
pub(super) const KEYS: &[&str] = &[
    "ledger",
    "ledger.batch_size",
    "ledger.batch_wait",
    "ledger.lag_interval",
];

impl LedgerSettings {
    pub(super) fn load(figment: &Figment, problems: &mut Vec<Problem>) -> Self {
        let d = LedgerSettings::default();
        let batch_wait = duration_or(figment, "ledger.batch_wait", d.batch_wait, problems);
        let lag_interval = duration_or(figment, "ledger.lag_interval", d.lag_interval, problems);
        LedgerSettings {
            batch_size: field(figment, "ledger.batch_size", d.batch_size, problems),
            batch_wait,
            lag_interval,
        }
    }

    pub(super) fn check(&self, bad: &mut impl FnMut(&str, String)) {
        if !(1..=10_000).contains(&self.batch_size) {
            bad(
                "ledger.batch_size",
                format!("{} is out of range; expected 1 to 10000", self.batch_size),
            );
        }
        if self.batch_wait < Duration::from_millis(1) || self.batch_wait > Duration::from_secs(60) {
            bad(
                "ledger.batch_wait",
                "out of range; expected 1ms to 60s".into(),
            );
        }
        if self.lag_interval < Duration::from_millis(100)
            || self.lag_interval > Duration::from_secs(3600)
        {
            bad(
                "ledger.lag_interval",
                "out of range; expected 100ms to 1h".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Config, Error,
        config::{Problem, Sources},
    };

    fn load(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        Config::load(&Sources {
            env: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Sources::default()
        })
    }

    #[test]
    fn ledger_settings_load_from_the_environment() {
        let config = load(&[
            ("SWITCHYARD_LEDGER__BATCH_SIZE", "1000"),
            ("SWITCHYARD_LEDGER__BATCH_WAIT", "50ms"),
        ])
        .expect("loads");
        assert_eq!(config.ledger.batch_size, 1000);
        assert_eq!(
            config.ledger.batch_wait,
            std::time::Duration::from_millis(50)
        );
        assert_eq!(
            config.ledger.lag_interval,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn every_ledger_problem_is_reported_at_once() {
        let Err(Error::Config(problems)) = load(&[
            ("SWITCHYARD_LEDGER__BATCH_SIZE", "0"),
            ("SWITCHYARD_LEDGER__BATCH_WAIT", "soon"),
            ("SWITCHYARD_LEDGER__LAG_INTERVAL", "1ms"),
            ("SWITCHYARD_LEDGER__BATCH_SIZ", "3"),
        ]) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(has("LEDGER__BATCH_SIZE: 0 is out of range"), "{text:#?}");
        assert!(
            has("SWITCHYARD_LEDGER__BATCH_WAIT:") && has("expected a duration"),
            "{text:#?}"
        );
        assert!(has("LEDGER__LAG_INTERVAL: out of range"), "{text:#?}");
        assert!(has("did you mean `ledger.batch_size`?"), "{text:#?}");
        assert_eq!(problems.len(), 4, "{text:#?}");
    }
}
