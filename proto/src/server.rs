//! The NATS server versions the contract relies on.

/// The oldest nats-server Switchyard supports: schedules are run by the server's message
/// scheduler, whose intervals, cron patterns and time zones came in 2.14 (ADR 19). (2.9 also
/// silently ignores multiple consumer filter subjects.)
pub const MIN_SERVER_VERSION: Version = Version(2, 14, 0);

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `2.10.4`, `v2.11.0-beta.1` and the like; `None` when it has no major.minor.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text
            .trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(Version::parse("2.15.1"), Some(Version(2, 15, 1)));
        assert_eq!(Version::parse("v2.11.0-beta.1"), Some(Version(2, 11, 0)));
        assert_eq!(Version::parse("2.10"), Some(Version(2, 10, 0)));
        assert_eq!(Version::parse("garbage"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version::parse("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert!(Version::parse("2.12.1").unwrap() < MIN_SERVER_VERSION);
        assert!(Version::parse("2.14.0").unwrap() >= MIN_SERVER_VERSION);
    }
}
