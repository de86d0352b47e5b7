//! The `[ai]` section: which provider serves AI jobs by default, and the named providers the
//! AI worker may call (OpenAI-compatible, Anthropic, AWS Bedrock), each with its key, model,
//! timeout, in-call retries and circuit breaker.
//!
//! ```toml
//! [ai]
//! default_provider = "local"            # no network, deterministic
//!
//! [ai.providers.openai]
//! kind = "openai"                       # also Ollama, vLLM, llama.cpp server
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"        # or api_key = "…", or api_key_file = "/run/secrets/…"
//! model = "gpt-4o-mini"
//!
//! [ai.providers.claude]
//! kind = "anthropic"
//! api_key_file = "/run/secrets/anthropic"
//! model = "claude-sonnet-4-5"
//!
//! [ai.providers.bedrock]
//! kind = "bedrock"
//! region = "eu-west-1"
//! access_key_id = "AKIA…"
//! secret_access_key_env = "AWS_SECRET_ACCESS_KEY"
//! model = "anthropic.claude-3-haiku-20240307-v1:0"
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use figment::{Figment, value::Value};
use serde::{Deserialize, Serialize};

use serde::de::DeserializeOwned;

use super::{Problem, Secret, duration_or, field, source_name};

/// A provider key: its value, or `fallback` when it is not set (a provider's defaults are
/// not in the figment, since the map starts empty).
fn get<T: DeserializeOwned>(
    figment: &Figment,
    key: &str,
    fallback: T,
    problems: &mut Vec<Problem>,
) -> T {
    if figment.find_value(key).is_err() {
        return fallback;
    }
    field(figment, key, fallback, problems)
}

/// A provider duration: its value, or `fallback` when it is not set.
fn dur(figment: &Figment, key: &str, fallback: Duration, problems: &mut Vec<Problem>) -> Duration {
    if figment.find_value(key).is_err() {
        return fallback;
    }
    duration_or(figment, key, fallback, problems)
}

/// The provider that needs no configuration: extractive and rule-based, in process.
pub const LOCAL_PROVIDER: &str = "local";

/// Settings of the AI worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiSettings {
    /// The provider for jobs that name none: `local` or a key of `providers`.
    /// Env `SWITCHYARD_AI__DEFAULT_PROVIDER`. Default `local`.
    pub default_provider: String,
    /// Named providers, e.g. `[ai.providers.openai]`; a job picks one with `provider`.
    /// Env e.g. `SWITCHYARD_AI__PROVIDERS__OPENAI__MODEL`. Default: none.
    pub providers: BTreeMap<String, AiProviderSettings>,
    /// Non-public networks (`10.20.0.0/16`) or addresses (`127.0.0.1`) that an `audio_url`
    /// may point at; public addresses always may. Loopback, private, link-local and metadata
    /// addresses are refused otherwise, after DNS and on every redirect.
    /// Env `SWITCHYARD_AI__AUDIO_ALLOWED_ADDRESSES` (a list). Default: none.
    pub audio_allowed_addresses: Vec<String>,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings {
            default_provider: LOCAL_PROVIDER.into(),
            providers: BTreeMap::new(),
            audio_allowed_addresses: Vec::new(),
        }
    }
}

impl AiSettings {
    /// The guard for `audio_url`: public addresses and the allowed networks (entries that do
    /// not parse were reported at start-up and are left out).
    pub fn audio_guard(&self) -> crate::net::AddressGuard {
        crate::net::AddressGuard::with_allowed(
            self.audio_allowed_addresses
                .iter()
                .filter_map(|e| crate::net::AddressGuard::parse_network(e).ok()),
        )
    }
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AiProviderKind {
    /// OpenAI chat completions and `/audio/transcriptions` (OpenAI, Ollama, vLLM,
    /// llama.cpp server…).
    #[default]
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// The AWS Bedrock Converse API, signed with SigV4.
    Bedrock,
}

/// One named provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiProviderSettings {
    /// `openai`, `anthropic` or `bedrock`. Default `openai`.
    pub kind: AiProviderKind,
    /// The API's base URL. Default by kind: `https://api.openai.com/v1`,
    /// `https://api.anthropic.com`, `https://bedrock-runtime.<region>.amazonaws.com`.
    pub base_url: Option<String>,
    /// The API key (`Authorization: Bearer` for openai, `x-api-key` for anthropic). Optional for
    /// openai (a local Ollama needs none), required for anthropic.
    pub api_key: Option<Secret>,
    /// The name of an environment variable holding the API key instead, e.g. `OPENAI_API_KEY`.
    pub api_key_env: Option<String>,
    /// A file holding the API key instead (trailing whitespace is ignored).
    pub api_key_file: Option<PathBuf>,
    /// The model used when a job names none. Required.
    pub model: String,
    /// The speech-to-text model for `ai.transcribe` (openai only). Default `whisper-1`.
    pub transcription_model: String,
    /// How long one HTTP call may take, streaming included. Default `120s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries within one job after a 429, a 5xx or a timeout, before the job is handed back
    /// to the worker loop (which retries it later). Default 2.
    pub max_retries: u32,
    /// The first in-call retry delay (doubled each time, with jitter). Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub retry_initial_delay: Duration,
    /// The longest in-call wait; a `Retry-After` beyond it hands the job back at once with
    /// that delay. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Consecutive failed calls that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before letting one probe through.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// The `anthropic-version` header. Default `2023-06-01`.
    pub anthropic_version: String,
    /// The AWS region (bedrock only).
    pub region: Option<String>,
    /// The AWS access key id (bedrock only).
    pub access_key_id: Option<String>,
    /// The AWS secret access key (bedrock only).
    pub secret_access_key: Option<Secret>,
    /// The name of an environment variable holding the secret access key instead.
    pub secret_access_key_env: Option<String>,
    /// An AWS session token for temporary credentials (bedrock only).
    pub session_token: Option<Secret>,
}

impl Default for AiProviderSettings {
    fn default() -> Self {
        AiProviderSettings {
            kind: AiProviderKind::Openai,
            base_url: None,
            api_key: None,
            api_key_env: None,
            api_key_file: None,
            model: String::new(),
            transcription_model: "whisper-1".into(),
            timeout: Duration::from_secs(120),
            max_retries: 2,
            retry_initial_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            anthropic_version: "2023-06-01".into(),
            region: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_env: None,
            session_token: None,
        }
    }
}

impl AiProviderSettings {
    /// The base URL: the configured one or the kind's default, without a trailing `/`.
    pub fn base_url(&self) -> String {
        let url = match (&self.base_url, self.kind) {
            (Some(url), _) => url.clone(),
            (None, AiProviderKind::Openai) => "https://api.openai.com/v1".into(),
            (None, AiProviderKind::Anthropic) => "https://api.anthropic.com".into(),
            (None, AiProviderKind::Bedrock) => format!(
                "https://bedrock-runtime.{}.amazonaws.com",
                self.region.as_deref().unwrap_or("us-east-1")
            ),
        };
        url.trim_end_matches('/').to_owned()
    }
}

/// The keys of a provider as `ai.providers.*.<key>`, for the unknown-key check.
pub(super) fn provider_keys() -> impl Iterator<Item = String> {
    PROVIDER_KEYS.iter().map(|k| format!("ai.providers.*.{k}"))
}

/// Keys under `ai.providers.<name>` (the name is free).
const PROVIDER_KEYS: &[&str] = &[
    "kind",
    "base_url",
    "api_key",
    "api_key_env",
    "api_key_file",
    "model",
    "transcription_model",
    "timeout",
    "max_retries",
    "retry_initial_delay",
    "retry_max_delay",
    "breaker_failures",
    "breaker_open_for",
    "anthropic_version",
    "region",
    "access_key_id",
    "secret_access_key",
    "secret_access_key_env",
    "session_token",
];

/// `key` with a provider's name replaced by `*` (`ai.providers.openai.model` →
/// `ai.providers.*.model`), so that the unknown-key check can match it.
pub(super) fn key_pattern(key: &str) -> String {
    match key.strip_prefix("ai.providers.") {
        Some(rest) => match rest.split_once('.') {
            Some((_, field)) => format!("ai.providers.*.{field}"),
            None => "ai.providers.*".into(),
        },
        None => key.to_owned(),
    }
}

impl AiSettings {
    /// Reads the section key by key (so a problem names the exact variable or file key), and
    /// resolves keys given by environment variable or file.
    pub(super) fn load(
        figment: &Figment,
        env: &BTreeMap<String, String>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let d = AiSettings::default();
        let names: Vec<String> = match figment.find_value("ai.providers") {
            Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut providers = BTreeMap::new();
        for name in names {
            let p = AiProviderSettings::default();
            let f = |key: &str| format!("ai.providers.{name}.{key}");
            let mut settings = AiProviderSettings {
                kind: get(figment, &f("kind"), p.kind, problems),
                base_url: get(figment, &f("base_url"), None, problems),
                api_key: get(figment, &f("api_key"), None, problems),
                api_key_env: get(figment, &f("api_key_env"), None, problems),
                api_key_file: get(figment, &f("api_key_file"), None, problems),
                model: get(figment, &f("model"), p.model, problems),
                transcription_model: get(
                    figment,
                    &f("transcription_model"),
                    p.transcription_model,
                    problems,
                ),
                timeout: dur(figment, &f("timeout"), p.timeout, problems),
                max_retries: get(figment, &f("max_retries"), p.max_retries, problems),
                retry_initial_delay: dur(
                    figment,
                    &f("retry_initial_delay"),
                    p.retry_initial_delay,
                    problems,
                ),
                retry_max_delay: dur(figment, &f("retry_max_delay"), p.retry_max_delay, problems),
                breaker_failures: get(
                    figment,
                    &f("breaker_failures"),
                    p.breaker_failures,
                    problems,
                ),
                breaker_open_for: dur(
                    figment,
                    &f("breaker_open_for"),
                    p.breaker_open_for,
                    problems,
                ),
                anthropic_version: get(
                    figment,
                    &f("anthropic_version"),
                    p.anthropic_version,
                    problems,
                ),
                region: get(figment, &f("region"), None, problems),
                access_key_id: get(figment, &f("access_key_id"), None, problems),
                secret_access_key: get(figment, &f("secret_access_key"), None, problems),
                secret_access_key_env: get(figment, &f("secret_access_key_env"), None, problems),
                session_token: get(figment, &f("session_token"), None, problems),
            };
            let mut bad = |key: &str, message: String| {
                problems.push(Problem {
                    key: source_name(figment, &f(key)),
                    message,
                })
            };
            let given = settings.api_key.is_some() as u8
                + settings.api_key_env.is_some() as u8
                + settings.api_key_file.is_some() as u8;
            if given > 1 {
                bad(
                    "api_key",
                    "set one of api_key, api_key_env and api_key_file".into(),
                );
            }
            resolve(
                &mut settings.api_key,
                settings.api_key_env.as_deref(),
                settings.api_key_file.as_ref(),
                env,
                "api_key",
                &mut bad,
            );
            resolve(
                &mut settings.secret_access_key,
                settings.secret_access_key_env.as_deref(),
                None,
                env,
                "secret_access_key",
                &mut bad,
            );
            providers.insert(name, settings);
        }
        AiSettings {
            default_provider: field(figment, "ai.default_provider", d.default_provider, problems),
            providers,
            audio_allowed_addresses: field(
                figment,
                "ai.audio_allowed_addresses",
                d.audio_allowed_addresses,
                problems,
            ),
        }
    }

    pub(super) fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for entry in &self.audio_allowed_addresses {
            if let Err(message) = crate::net::AddressGuard::parse_network(entry) {
                bad("ai.audio_allowed_addresses", message);
            }
        }
        if self.default_provider != LOCAL_PROVIDER
            && !self.providers.contains_key(&self.default_provider)
        {
            let mut known: Vec<&str> = vec![LOCAL_PROVIDER];
            known.extend(self.providers.keys().map(String::as_str));
            bad(
                "ai.default_provider",
                format!(
                    "{:?} is not a configured provider; expected one of: {}",
                    self.default_provider,
                    known.join(", ")
                ),
            );
        }
        for (name, p) in &self.providers {
            let key = |k: &str| format!("ai.providers.{name}.{k}");
            let valid_name = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if name == LOCAL_PROVIDER || !valid_name {
                bad(
                    &format!("ai.providers.{name}"),
                    "not a usable provider name; expected letters, digits, '_' and '-', other than `local`".into(),
                );
            }
            if p.model.trim().is_empty() {
                bad(
                    &key("model"),
                    "required; expected the default model name at this provider".into(),
                );
            }
            if let Some(url) = &p.base_url {
                let host = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                    bad(
                        &key("base_url"),
                        format!("not an http(s) URL ({url:?}); expected e.g. https://host/v1"),
                    );
                }
            }
            if p.timeout < Duration::from_millis(100) {
                bad(&key("timeout"), "must be at least 100ms".into());
            }
            if p.max_retries > 10 {
                bad(
                    &key("max_retries"),
                    format!(
                        "{} is out of range; expected 0 to 10 (the worker loop retries jobs too)",
                        p.max_retries
                    ),
                );
            }
            if p.retry_initial_delay > p.retry_max_delay {
                bad(
                    &key("retry_initial_delay"),
                    format!("must not exceed ai.providers.{name}.retry_max_delay"),
                );
            }
            if p.breaker_failures == 0 {
                bad(&key("breaker_failures"), "must be at least 1".into());
            }
            if p.breaker_open_for < Duration::from_millis(100) {
                bad(&key("breaker_open_for"), "must be at least 100ms".into());
            }
            match p.kind {
                AiProviderKind::Openai => {}
                AiProviderKind::Anthropic => {
                    if p.api_key.is_none() {
                        bad(
                            &key("api_key"),
                            "required for kind anthropic; set api_key, api_key_env or api_key_file"
                                .into(),
                        );
                    }
                }
                AiProviderKind::Bedrock => {
                    if p.region.as_deref().is_none_or(str::is_empty) {
                        bad(
                            &key("region"),
                            "required for kind bedrock; expected an AWS region such as `us-east-1`"
                                .into(),
                        );
                    }
                    if p.access_key_id.as_deref().is_none_or(str::is_empty) {
                        bad(&key("access_key_id"), "required for kind bedrock".into());
                    }
                    if p.secret_access_key.is_none() {
                        bad(
                            &key("secret_access_key"),
                            "required for kind bedrock; set secret_access_key or secret_access_key_env".into(),
                        );
                    }
                }
            }
        }
    }

    /// Replaces every secret with `****`.
    pub(super) fn redact(&mut self) {
        for p in self.providers.values_mut() {
            for secret in [
                &mut p.api_key,
                &mut p.secret_access_key,
                &mut p.session_token,
            ] {
                if secret.is_some() {
                    *secret = Some(Secret::new("****"));
                }
            }
        }
    }
}

/// Fills `secret` from the named environment variable or file, reporting a missing one.
fn resolve(
    secret: &mut Option<Secret>,
    env_name: Option<&str>,
    file: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    key: &str,
    bad: &mut impl FnMut(&str, String),
) {
    if secret.is_some() {
        return;
    }
    if let Some(name) = env_name {
        match env.get(name).filter(|v| !v.trim().is_empty()) {
            Some(value) => *secret = Some(Secret::new(value.trim())),
            None => bad(
                &format!("{key}_env"),
                format!("the environment variable {name} is not set"),
            ),
        }
    } else if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => *secret = Some(Secret::new(text.trim())),
            Ok(_) => bad(
                &format!("{key}_file"),
                format!("{} is empty", path.display()),
            ),
            Err(e) => bad(
                &format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Error,
        config::{Config, Sources},
    };

    use super::*;

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
    fn defaults_to_the_local_provider_and_nothing_else() {
        let ai = load(&[]).expect("defaults").ai;
        assert_eq!(ai.default_provider, "local");
        assert!(ai.providers.is_empty());
        assert!(!ai.audio_guard().allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn audio_urls_may_reach_the_allowed_networks_and_bad_entries_are_named() {
        let ai = load(&[(
            "SWITCHYARD_AI__AUDIO_ALLOWED_ADDRESSES",
            "[10.20.0.0/16, 127.0.0.1]",
        )])
        .expect("loads")
        .ai;
        let guard = ai.audio_guard();
        assert!(guard.allows("10.20.3.4".parse().unwrap()));
        assert!(guard.allows("127.0.0.1".parse().unwrap()));
        assert!(!guard.allows("169.254.169.254".parse().unwrap()));
        let err = load(&[("SWITCHYARD_AI__AUDIO_ALLOWED_ADDRESSES", "[intranet]")])
            .expect_err("not a network")
            .to_string();
        assert!(err.contains("AUDIO_ALLOWED_ADDRESSES"), "{err}");
        assert!(err.contains("intranet"), "{err}");
    }

    #[test]
    fn providers_come_from_a_file_and_the_environment_with_keys_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("claude.key");
        std::fs::write(&key_file, "sk-ant-from-file\n").expect("write");
        let file = dir.path().join("switchyard.toml");
        std::fs::write(
            &file,
            format!(
                r#"
[ai]
default_provider = "openai"
[ai.providers.openai]
base_url = "http://127.0.0.1:11434/v1/"
api_key_env = "OPENAI_API_KEY"
model = "llama3.1"
timeout = "10s"
[ai.providers.claude]
kind = "anthropic"
api_key_file = "{}"
model = "claude-sonnet-4-5"
breaker_failures = 3
"#,
                key_file.display()
            ),
        )
        .expect("write");
        let sources = Sources {
            file: Some(file),
            env: [
                ("OPENAI_API_KEY", "sk-openai-from-env"),
                ("SWITCHYARD_AI__PROVIDERS__BEDROCK__KIND", "bedrock"),
                ("SWITCHYARD_AI__PROVIDERS__BEDROCK__REGION", "eu-west-1"),
                (
                    "SWITCHYARD_AI__PROVIDERS__BEDROCK__ACCESS_KEY_ID",
                    "AKIDEXAMPLE",
                ),
                (
                    "SWITCHYARD_AI__PROVIDERS__BEDROCK__SECRET_ACCESS_KEY",
                    "aws-secret",
                ),
                (
                    "SWITCHYARD_AI__PROVIDERS__BEDROCK__MODEL",
                    "amazon.nova-lite-v1:0",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Sources::default()
        };
        let config = Config::load(&sources).expect("loads");
        let ai = &config.ai;
        assert_eq!(ai.default_provider, "openai");
        let openai = &ai.providers["openai"];
        assert_eq!(openai.kind, AiProviderKind::Openai);
        assert_eq!(openai.base_url(), "http://127.0.0.1:11434/v1");
        assert_eq!(
            openai.api_key.as_ref().map(Secret::expose),
            Some("sk-openai-from-env")
        );
        assert_eq!(openai.timeout, Duration::from_secs(10));
        assert_eq!(openai.max_retries, 2);
        let claude = &ai.providers["claude"];
        assert_eq!(
            claude.api_key.as_ref().map(Secret::expose),
            Some("sk-ant-from-file")
        );
        assert_eq!(claude.breaker_failures, 3);
        assert_eq!(claude.base_url(), "https://api.anthropic.com");
        let bedrock = &ai.providers["bedrock"];
        assert_eq!(bedrock.kind, AiProviderKind::Bedrock);
        assert_eq!(
            bedrock.base_url(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );

        let shown = config.redacted_toml();
        let debug = format!("{config:?}");
        for secret in ["sk-openai-from-env", "sk-ant-from-file", "aws-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn every_provider_problem_is_reported_with_its_key() {
        let Err(Error::Config(problems)) = load(&[
            ("SWITCHYARD_AI__DEFAULT_PROVIDER", "gpt"),
            ("SWITCHYARD_AI__PROVIDERS__CLAUDE__KIND", "anthropic"),
            ("SWITCHYARD_AI__PROVIDERS__CLAUDE__MODEL", "claude"),
            (
                "SWITCHYARD_AI__PROVIDERS__OLLAMA__BASE_URL",
                "localhost:11434",
            ),
            (
                "SWITCHYARD_AI__PROVIDERS__OLLAMA__API_KEY_ENV",
                "OLLAMA_KEY",
            ),
            ("SWITCHYARD_AI__PROVIDERS__OLLAMA__TIMEOUT", "soon"),
            ("SWITCHYARD_AI__PROVIDERS__OLLAMA__BREAKER_FAILURES", "0"),
            ("SWITCHYARD_AI__PROVIDERS__AWS__KIND", "bedrock"),
            ("SWITCHYARD_AI__PROVIDERS__AWS__MODEL", "m"),
            ("SWITCHYARD_AI__PROVIDERS__AWS__MODLE", "m"),
        ]) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(
            has(
                "SWITCHYARD_AI__DEFAULT_PROVIDER: \"gpt\" is not a configured provider; expected one of: local, aws, claude, ollama"
            ),
            "{text:#?}"
        );
        assert!(
            has("ai.providers.claude.api_key: required for kind anthropic"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_AI__PROVIDERS__OLLAMA__BASE_URL: not an http(s) URL"),
            "{text:#?}"
        );
        assert!(
            has(
                "SWITCHYARD_AI__PROVIDERS__OLLAMA__API_KEY_ENV: the environment variable OLLAMA_KEY is not set"
            ),
            "{text:#?}"
        );
        assert!(has("ai.providers.ollama.model: required"), "{text:#?}");
        assert!(
            has("SWITCHYARD_AI__PROVIDERS__OLLAMA__TIMEOUT:") && has("expected a duration"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_AI__PROVIDERS__OLLAMA__BREAKER_FAILURES: must be at least 1"),
            "{text:#?}"
        );
        assert!(has("ai.providers.aws.region: required"), "{text:#?}");
        assert!(has("ai.providers.aws.access_key_id: required"), "{text:#?}");
        assert!(
            has("ai.providers.aws.secret_access_key: required"),
            "{text:#?}"
        );
        assert!(
            has(
                "SWITCHYARD_AI__PROVIDERS__AWS__MODLE: unknown setting; did you mean `ai.providers.*.model`?"
            ),
            "{text:#?}"
        );
        assert_eq!(problems.len(), 11, "{text:#?}");
    }

    #[test]
    fn provider_names_are_free_but_their_keys_are_checked() {
        assert_eq!(
            key_pattern("ai.providers.my-llm.model"),
            "ai.providers.*.model"
        );
        assert_eq!(key_pattern("ai.providers.my-llm"), "ai.providers.*");
        assert_eq!(key_pattern("ai.default_provider"), "ai.default_provider");
    }

    #[test]
    fn a_process_that_does_not_load_the_ai_section_never_reads_its_key_files() {
        use crate::config::Section;
        let sources = Sources {
            env: [
                ("SWITCHYARD_AI__PROVIDERS__CLAUDE__KIND", "anthropic"),
                ("SWITCHYARD_AI__PROVIDERS__CLAUDE__MODEL", "claude-x"),
                (
                    "SWITCHYARD_AI__PROVIDERS__CLAUDE__API_KEY_FILE",
                    "/nonexistent/claude.key",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Sources::default()
        };
        let gateway = Config::load_sections(&sources, &[Section::Gateway, Section::Orchestrator])
            .expect("the gateway does not read AI settings");
        assert!(
            gateway.ai.providers.len() <= 1,
            "defaults only: {:?}",
            gateway.ai
        );

        let err = Config::load_sections(&sources, &[Section::Worker, Section::Ai])
            .expect_err("the AI worker resolves its keys");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/claude.key") && text.contains("ai.providers.claude"),
            "{text}"
        );
        // A misspelt key is reported to every process, whichever sections it loads.
        let mut typo = sources.clone();
        typo.env
            .insert("SWITCHYARD_AI__DEFAULT_PROVIDOR".into(), "claude".into());
        let err = Config::load_sections(&typo, &[Section::Gateway]).expect_err("unknown key");
        assert!(err.to_string().contains("DEFAULT_PROVIDOR"), "{err}");
    }
}
