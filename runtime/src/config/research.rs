//! The `[research]` section: where the research worker finds its local corpus, how it fetches
//! URLs (timeouts, size cap, redirects, which private addresses it may reach), the optional
//! SearXNG search API, and which AI provider writes the summaries.
//!
//! ```toml
//! [research]
//! corpus_dir = "workers/research/corpus"   # Markdown, text and HTML files
//! fetch_timeout = "10s"
//! max_bytes = 2097152                      # per fetched page
//! max_redirects = 5
//! allowed_addresses = ["10.20.0.0/16"]     # an intranet wiki; public addresses always pass
//! searxng_url = "http://searxng:8080"      # absent: no web search
//! shared_search = true                     # it serves tenants without their own
//!
//! [research.tenants.acme]
//! searxng_url = "https://search.acme.example"   # acme's queries go to its own instance
//! [research.tenants.globex]                  # no searxng_url: no web search for globex
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use figment::Figment;
use serde::{Deserialize, Serialize};

use super::{AiSettings, LOCAL_PROVIDER, Problem, duration_or, field};

/// Settings of the research worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResearchSettings {
    /// The directory of Markdown (`.md`), text (`.txt`) and HTML (`.html`, `.htm`) documents
    /// searched for every topic, subdirectories included; relative to the working directory.
    /// It must exist when the worker starts. The index is kept in memory and built at start.
    /// Env `SWITCHYARD_RESEARCH__CORPUS_DIR`.
    /// Default `workers/research/corpus` (the sample corpus shipped with the worker).
    pub corpus_dir: PathBuf,
    /// How often the corpus directory is checked for added, changed and removed files (path,
    /// size and modification time); only those are re-indexed. A job checks when the last
    /// check is older than this. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// How long fetching one URL may take, connection and body included. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// The largest body read from one URL, in bytes; a larger one fails that source.
    /// Default 2097152 (2 MiB).
    pub max_bytes: u64,
    /// Redirects followed per URL, each one checked against the address rules. Default 5.
    pub max_redirects: usize,
    /// Non-public addresses URLs may reach anyway, as networks or single addresses (e.g.
    /// `["10.20.0.0/16", "127.0.0.1"]`). Loopback, private, link-local and metadata addresses
    /// are refused otherwise. Env `SWITCHYARD_RESEARCH__ALLOWED_ADDRESSES` as a list.
    /// Default: none.
    pub allowed_addresses: Vec<String>,
    /// The base URL of a SearXNG instance with the JSON format enabled; its results are
    /// fetched like given URLs. Trusted configuration: not subject to the address rules. It
    /// serves tenants without a section in `tenants` only when `shared_search` is set.
    /// Env `SWITCHYARD_RESEARCH__SEARXNG_URL`. Default: absent, no web search.
    pub searxng_url: Option<String>,
    /// Search per tenant, by tenant id: a tenant's web searches go to its own SearXNG, and a
    /// section without `searxng_url` turns web search off for that tenant. Env e.g.
    /// `SWITCHYARD_RESEARCH__TENANTS__ACME__SEARXNG_URL`. Default: none.
    pub tenants: BTreeMap<String, TenantResearch>,
    /// Whether `searxng_url` serves tenants without a section of their own. Default `false`:
    /// a tenant's queries reach only a search service configured for it.
    pub shared_search: bool,
    /// Search results fetched per topic. Default 5.
    pub search_results: usize,
    /// The AI provider that writes the summary: `local` (extractive, shaped by difficulty) or
    /// a key of `ai.providers`. Default `local`.
    pub summary_provider: String,
}

/// One tenant's research settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantResearch {
    /// The tenant's SearXNG base URL; absent: no web search for this tenant.
    pub searxng_url: Option<String>,
}

impl ResearchSettings {
    /// The SearXNG base URL that serves `tenant`, if any: its own section's, else the
    /// deployment's when it is shared.
    pub fn searxng_for(&self, tenant: &str) -> Option<&str> {
        match self.tenants.get(tenant) {
            Some(own) => own.searxng_url.as_deref(),
            None if self.shared_search => self.searxng_url.as_deref(),
            None => None,
        }
    }
}

impl Default for ResearchSettings {
    fn default() -> Self {
        ResearchSettings {
            corpus_dir: PathBuf::from("workers/research/corpus"),
            rescan_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
            max_bytes: 2 * 1024 * 1024,
            max_redirects: 5,
            allowed_addresses: Vec::new(),
            searxng_url: None,
            tenants: BTreeMap::new(),
            shared_search: false,
            search_results: 5,
            summary_provider: LOCAL_PROVIDER.into(),
        }
    }
}

/// The section's keys, for the unknown-key check.
pub(super) const KEYS: &[&str] = &[
    "research",
    "research.corpus_dir",
    "research.rescan_interval",
    "research.fetch_timeout",
    "research.max_bytes",
    "research.max_redirects",
    "research.allowed_addresses",
    "research.searxng_url",
    "research.tenants",
    "research.tenants.*",
    "research.tenants.*.searxng_url",
    "research.shared_search",
    "research.search_results",
    "research.summary_provider",
];

impl ResearchSettings {
    pub(super) fn load(figment: &Figment, problems: &mut Vec<Problem>) -> Self {
        let d = ResearchSettings::default();
        let rescan_interval = duration_or(
            figment,
            "research.rescan_interval",
            d.rescan_interval,
            problems,
        );
        let fetch_timeout =
            duration_or(figment, "research.fetch_timeout", d.fetch_timeout, problems);
        ResearchSettings {
            corpus_dir: field(figment, "research.corpus_dir", d.corpus_dir, problems),
            rescan_interval,
            fetch_timeout,
            max_bytes: field(figment, "research.max_bytes", d.max_bytes, problems),
            max_redirects: field(figment, "research.max_redirects", d.max_redirects, problems),
            allowed_addresses: field(figment, "research.allowed_addresses", Vec::new(), problems),
            searxng_url: field(figment, "research.searxng_url", None, problems),
            tenants: field(figment, "research.tenants", BTreeMap::new(), problems),
            shared_search: field(figment, "research.shared_search", false, problems),
            search_results: field(
                figment,
                "research.search_results",
                d.search_results,
                problems,
            ),
            summary_provider: field(
                figment,
                "research.summary_provider",
                d.summary_provider,
                problems,
            ),
        }
    }

    pub(super) fn check(&self, ai: &AiSettings, bad: &mut impl FnMut(&str, String)) {
        if self.corpus_dir.as_os_str().is_empty() {
            bad(
                "research.corpus_dir",
                "must not be empty; expected a directory such as `workers/research/corpus`".into(),
            );
        }
        if self.rescan_interval > Duration::from_secs(24 * 3600) {
            bad("research.rescan_interval", "must be at most 24h".into());
        }
        if self.fetch_timeout < Duration::from_millis(100) {
            bad("research.fetch_timeout", "must be at least 100ms".into());
        }
        if !(1024..=100 * 1024 * 1024).contains(&self.max_bytes) {
            bad(
                "research.max_bytes",
                format!(
                    "{} is out of range; expected 1024 to 104857600 bytes",
                    self.max_bytes
                ),
            );
        }
        if self.max_redirects > 20 {
            bad(
                "research.max_redirects",
                format!("{} is out of range; expected 0 to 20", self.max_redirects),
            );
        }
        if self.search_results > 50 {
            bad(
                "research.search_results",
                format!("{} is out of range; expected 0 to 50", self.search_results),
            );
        }
        for entry in &self.allowed_addresses {
            if let Err(message) = crate::net::AddressGuard::parse_network(entry) {
                bad("research.allowed_addresses", message);
            }
        }
        let urls = self
            .searxng_url
            .iter()
            .map(|url| ("research.searxng_url".to_owned(), url))
            .chain(self.tenants.iter().filter_map(|(tenant, t)| {
                let url = t.searxng_url.as_ref()?;
                Some((format!("research.tenants.{tenant}.searxng_url"), url))
            }));
        for (key, url) in urls {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                bad(
                    &key,
                    format!("not an http(s) URL ({url:?}); expected e.g. http://searxng:8080"),
                );
            }
        }
        if self.summary_provider != LOCAL_PROVIDER
            && !ai.providers.contains_key(&self.summary_provider)
        {
            let mut known: Vec<&str> = vec![LOCAL_PROVIDER];
            known.extend(ai.providers.keys().map(String::as_str));
            bad(
                "research.summary_provider",
                format!(
                    "{:?} is not a configured provider; expected one of: {}",
                    self.summary_provider,
                    known.join(", ")
                ),
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
    fn research_settings_load_from_the_environment() {
        let config = load(&[
            ("SWITCHYARD_RESEARCH__CORPUS_DIR", "docs/corpus"),
            ("SWITCHYARD_RESEARCH__FETCH_TIMEOUT", "3s"),
            (
                "SWITCHYARD_RESEARCH__ALLOWED_ADDRESSES",
                "[\"127.0.0.1\", \"10.20.0.0/16\"]",
            ),
            ("SWITCHYARD_RESEARCH__SEARXNG_URL", "http://searxng:8080"),
        ])
        .expect("loads");
        let r = &config.research;
        assert_eq!(r.corpus_dir, std::path::PathBuf::from("docs/corpus"));
        assert_eq!(r.fetch_timeout, std::time::Duration::from_secs(3));
        assert_eq!(r.allowed_addresses, ["127.0.0.1", "10.20.0.0/16"]);
        assert_eq!(r.searxng_url.as_deref(), Some("http://searxng:8080"));
        assert_eq!(r.max_redirects, 5);
    }

    #[test]
    fn each_tenant_searches_its_own_instance_and_the_shared_one_only_when_shared() {
        let env = [
            ("SWITCHYARD_RESEARCH__SEARXNG_URL", "http://shared:8080"),
            (
                "SWITCHYARD_RESEARCH__TENANTS__ACME__SEARXNG_URL",
                "https://search.acme.example",
            ),
            ("SWITCHYARD_RESEARCH__TENANTS__GLOBEX", "{}"),
        ];
        let r = load(&env).expect("loads").research;
        assert_eq!(r.searxng_for("acme"), Some("https://search.acme.example"));
        assert_eq!(r.searxng_for("globex"), None, "its section has no search");
        assert_eq!(r.searxng_for("initech"), None, "not shared by default");
        let mut shared = env.to_vec();
        shared.push(("SWITCHYARD_RESEARCH__SHARED_SEARCH", "true"));
        let r = load(&shared).expect("loads").research;
        assert_eq!(r.searxng_for("initech"), Some("http://shared:8080"));
        assert_eq!(r.searxng_for("globex"), None, "its own section still rules");
        assert_eq!(r.searxng_for("acme"), Some("https://search.acme.example"));

        for (key, value, says) in [
            (
                "SWITCHYARD_RESEARCH__TENANTS__ACME__SEARXNG_URL",
                "acme:8080",
                "not an http(s) URL",
            ),
            (
                "SWITCHYARD_RESEARCH__TENANTS__ACME__SEARXNG_URI",
                "http://x",
                "did you mean `research.tenants.*.searxng_url`",
            ),
        ] {
            let Err(Error::Config(problems)) = load(&[(key, value)]) else {
                panic!("{key} accepted")
            };
            let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
            assert!(
                text.iter().any(|p| p.starts_with(key) && p.contains(says)),
                "{text:#?}"
            );
        }
    }

    #[test]
    fn every_research_problem_is_reported_at_once() {
        let Err(Error::Config(problems)) = load(&[
            ("SWITCHYARD_RESEARCH__FETCH_TIMEOUT", "soon"),
            ("SWITCHYARD_RESEARCH__MAX_BYTES", "12"),
            ("SWITCHYARD_RESEARCH__ALLOWED_ADDRESSES", "[\"intranet\"]"),
            ("SWITCHYARD_RESEARCH__SEARXNG_URL", "searxng:8080"),
            ("SWITCHYARD_RESEARCH__SUMMARY_PROVIDER", "gpt"),
            ("SWITCHYARD_RESEARCH__CORPUS_DIRR", "x"),
        ]) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(
            has("SWITCHYARD_RESEARCH__FETCH_TIMEOUT:") && has("expected a duration"),
            "{text:#?}"
        );
        assert!(has("RESEARCH__MAX_BYTES: 12 is out of range"), "{text:#?}");
        assert!(
            has("RESEARCH__ALLOWED_ADDRESSES: \"intranet\" is not an address"),
            "{text:#?}"
        );
        assert!(
            has("RESEARCH__SEARXNG_URL: not an http(s) URL"),
            "{text:#?}"
        );
        assert!(
            has("RESEARCH__SUMMARY_PROVIDER: \"gpt\" is not a configured provider"),
            "{text:#?}"
        );
        assert!(has("did you mean `research.corpus_dir`?"), "{text:#?}");
        assert_eq!(problems.len(), 6, "{text:#?}");
    }
}
