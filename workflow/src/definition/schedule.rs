//! `schedules:` — when a definition starts instances by itself — and `sleep_until:` times.
//!
//! The engine hands each schedule to the bus's message scheduler (nats-server 2.14 or later,
//! ADR 19), so the patterns accepted here are exactly the ones the server takes: cron with five
//! fields (minute first) or six (second first), numbers, ranges, steps, lists, `*`, `?` and
//! month and weekday names, weekdays 0–6 with 0 for Sunday; the shorthands `@hourly`,
//! `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly` and `@annually`; and `every:` in
//! whole seconds, at least one.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

/// One entry of a definition's `schedules:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Names the schedule within its definition (a subject token); the entry's index when the
    /// definition gives none.
    pub name: String,
    pub when: When,
    /// The input each instance it starts gets, checked against the definition's input at
    /// registration (defaults applied).
    pub input: Value,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// A six-field cron pattern (second first) or a shorthand such as `@daily`, in a time zone
    /// (UTC when `None`).
    Cron {
        pattern: String,
        time_zone: Option<String>,
    },
    /// A fixed interval, in whole seconds.
    Every(Duration),
}

impl Schedule {
    /// The `Nats-Schedule` header value.
    pub fn pattern(&self) -> String {
        match &self.when {
            When::Cron { pattern, .. } => pattern.clone(),
            When::Every(every) => format!("@every {}s", every.as_secs()),
        }
    }

    /// The `Nats-Schedule-Time-Zone` header value, for a cron pattern in a named zone.
    pub fn time_zone(&self) -> Option<&str> {
        match &self.when {
            When::Cron { time_zone, .. } => time_zone.as_deref(),
            When::Every(_) => None,
        }
    }
}

/// Most schedules one definition may have.
pub const MAX_SCHEDULES: usize = 20;

const SHORTHANDS: [&str; 7] = [
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// `cron` as the server takes it: five fields get a leading `0` seconds field; or why it is
/// not a pattern the server accepts.
pub(super) fn cron_pattern(cron: &str) -> Result<String, String> {
    let cron = cron.trim();
    if cron.starts_with('@') {
        if cron.starts_with("@every") {
            return Err("write an interval as `every: 10m`, not in cron".into());
        }
        return if SHORTHANDS.contains(&cron) {
            Ok(cron.to_owned())
        } else {
            Err(format!(
                "unknown shorthand {cron:?}; known: {}",
                SHORTHANDS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let fields = match fields.len() {
        5 => std::iter::once("0").chain(fields).collect::<Vec<_>>(),
        6 => fields,
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with \
                 seconds first), got {n}"
            ));
        }
    };
    const NAMES: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day of month",
        "month",
        "day of week",
    ];
    const RANGES: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
    for (i, field) in fields.iter().enumerate() {
        let names: &[&str] = match i {
            4 => &MONTHS,
            5 => &WEEKDAYS,
            _ => &[],
        };
        let (low, high) = RANGES[i];
        for atom in field.split([',', '-', '/']) {
            let upper = atom.to_ascii_uppercase();
            let fine = match atom {
                "*" => true,
                "?" => i == 3 || i == 5,
                _ => match atom.parse::<u32>() {
                    // A step may be larger than the field's range (`*/90` in seconds is odd
                    // but the server takes it); it is checked as a whole below.
                    Ok(n) => (low..=high).contains(&n) || field.contains('/'),
                    Err(_) => names.contains(&upper.as_str()),
                },
            };
            if !fine {
                return Err(format!(
                    "{:?} is not valid in the {} field ({low}–{high}{}, ranges, steps and \
                     lists)",
                    atom,
                    NAMES[i],
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" or {}…{}", names[0], names[names.len() - 1])
                    }
                ));
            }
        }
    }
    let pattern = fields.join(" ");
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&pattern)
        .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    if parsed.find_next_occurrence(&now, false).is_err() {
        return Err("the pattern never matches a date".into());
    }
    Ok(pattern)
}

/// Whether `zone` is an IANA time zone name.
pub(super) fn time_zone_problem(zone: &str) -> Option<String> {
    match chrono_tz::Tz::from_str(zone) {
        Ok(_) => None,
        Err(_) => Some(format!(
            "{zone:?} is not an IANA time zone name (like Europe/Berlin or America/New_York)"
        )),
    }
}

/// A `sleep_until:` value as milliseconds since the epoch: an RFC 3339 time with an offset
/// (`2026-12-24T18:00:00+01:00`), or milliseconds as a number.
pub(super) fn instant_ms(value: &Value) -> Result<i64, String> {
    match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("{text:?} is not an RFC 3339 time with an offset: {e}")),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a whole number of milliseconds")),
        other => Err(format!(
            "expected an RFC 3339 time or milliseconds since the epoch, got {}",
            switchyard_catalog::describe(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_patterns_are_the_ones_the_server_takes() {
        assert_eq!(
            cron_pattern("0 9 * * MON-FRI").unwrap(),
            "0 0 9 * * MON-FRI"
        );
        assert_eq!(cron_pattern("*/2 * * * * *").unwrap(), "*/2 * * * * *");
        assert_eq!(cron_pattern(" @daily ").unwrap(), "@daily");
        assert_eq!(
            cron_pattern("0 */5 9-17 ? jan,jul 1,3,5").unwrap(),
            "0 */5 9-17 ? jan,jul 1,3,5"
        );
        for bad in [
            "0 9 * *",
            "0 0 9 L * *",
            "0 0 9 * * 7",
            "60 0 9 * * *",
            "0 0 9 31 2 *",
            "0 0 9 * * 5#2",
            "@every 5s",
            "@fortnightly",
            "0 9 * * FOO",
        ] {
            assert!(cron_pattern(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn sleep_until_takes_rfc3339_or_milliseconds() {
        assert_eq!(
            instant_ms(&Value::from("1970-01-01T00:00:01+00:00")).unwrap(),
            1000
        );
        assert_eq!(instant_ms(&Value::from(1234)).unwrap(), 1234);
        assert!(instant_ms(&Value::from("tomorrow")).is_err());
        assert!(instant_ms(&Value::from(1.5)).is_err());
        assert!(instant_ms(&Value::Null).is_err());
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!(time_zone_problem("Europe/Berlin").is_none());
        assert!(time_zone_problem("UTC").is_none());
        assert!(time_zone_problem("Mars/Base").is_some());
    }
}
