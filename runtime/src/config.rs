//! Layered configuration: defaults → optional TOML file → `SWITCHYARD_*` environment (`__`
//! separates nested keys, e.g. `SWITCHYARD_WORKER__CONCURRENCY`) → command-line overrides.
//!
//! Every key is checked at start-up and **all** problems are reported at once, each naming
//! where the value came from and what is expected. Tests pass the environment in as a map
//! ([`Sources::env`]); nothing here reads process-global state except [`Sources::from_process`].

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Error;

mod ai;
pub use ai::{AiProviderKind, AiProviderSettings, AiSettings, LOCAL_PROVIDER};
mod mcp;
mod research;
pub use mcp::{McpServer, McpSettings};
pub use research::{ResearchSettings, TenantResearch};
mod ledger;
pub use ledger::LedgerSettings;

/// Settings shared by every Switchyard process; each uses the part it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// NATS server URL. Env `SWITCHYARD_NATS_URL`. Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// How long to keep retrying the first connection to NATS. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub nats_connect_timeout: Duration,
    /// How this process proves who it is to NATS, and TLS.
    pub nats: NatsSettings,
    /// PostgreSQL URL for the processes that own a database. Env `DATABASE_URL` (or
    /// `SWITCHYARD_DATABASE_URL`). No default.
    pub database_url: Option<String>,
    /// Address the gateway serves HTTP on. Env `SWITCHYARD_HTTP_ADDR`. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Address of the small `/metrics` + `/healthz` server of worker processes. Port 0 picks a
    /// free port (logged at start). Env `SWITCHYARD_METRICS_ADDR`. Default `127.0.0.1:0`.
    pub metrics_addr: SocketAddr,
    /// `json` (one object per line) or `pretty`. Default `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `switchyard_runtime=debug,info`. Default `info`.
    pub log_level: String,
    /// How long in-flight work may take to finish after SIGTERM before it is handed back.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The worker loop's settings.
    pub worker: WorkerSettings,
    /// The orchestrator's settings.
    pub orchestrator: OrchestratorSettings,
    /// The HTTP gateway's settings.
    pub gateway: GatewaySettings,
    /// The AI worker's providers (see [`AiSettings`]).
    pub ai: AiSettings,
    /// The integration worker's settings.
    pub integration: IntegrationSettings,
    /// The research worker's settings (see [`ResearchSettings`]).
    pub research: ResearchSettings,
    /// The ledger worker's batching (see [`LedgerSettings`]).
    pub ledger: LedgerSettings,
    /// The `mcp` worker kind's servers (see [`McpSettings`]).
    pub mcp: McpSettings,
}

/// Credentials and TLS for the NATS connection. Give one way of authenticating: a creds
/// file (from `switchyard bus auth init` or `switchyard bus tenant-credentials`), an NKey
/// seed file, a user and password, or a token. Env e.g.
/// `SWITCHYARD_NATS__CREDENTIALS=/etc/switchyard/creds/gateway.creds`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// A `.creds` file: the user's JWT and NKey seed.
    pub credentials: Option<PathBuf>,
    /// A directory of `<role>.creds` files, as `switchyard bus auth-init` writes them: each
    /// `switchyard` process takes its own role's (`gateway`, `orchestrator`, `ledger`,
    /// `worker-<kind>`, and `operator` for the other commands). Ignored when `credentials`
    /// is set.
    pub credentials_dir: Option<PathBuf>,
    /// A file holding an NKey user seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<Secret>,
    /// An authentication token.
    pub token: Option<Secret>,
    /// The inbox prefix replies come back on; a tenant publisher's credentials allow only
    /// `_INBOX_<tenant>`. Default `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// CA certificates (PEM) to trust for the server's TLS certificate; setting it requires
    /// TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for servers that verify clients, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Require TLS even without a CA file (the system's roots are trusted). Default false.
    pub tls_required: bool,
    /// Connect to a server that does not ask for credentials. Only for development: on such
    /// a server anyone can read and write every tenant's data. Default false: the process
    /// refuses to start.
    pub allow_unauthenticated: bool,
}

impl NatsSettings {
    /// The ways of authenticating that are set, by their keys.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.credentials.is_some() || self.credentials_dir.is_some() {
            set.push("nats.credentials");
        }
        if self.nkey_seed_file.is_some() {
            set.push("nats.nkey_seed_file");
        }
        if self.user.is_some() || self.password.is_some() {
            set.push("nats.user/nats.password");
        }
        if self.token.is_some() {
            set.push("nats.token");
        }
        set
    }

    /// Takes `role`'s file from `credentials_dir` unless `credentials` names one.
    pub fn use_role(&mut self, role: &str) {
        if self.credentials.is_none()
            && let Some(dir) = &self.credentials_dir
        {
            self.credentials = Some(dir.join(format!("{role}.creds")));
        }
    }

    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        let methods = self.methods();
        if methods.len() > 1 {
            bad(
                "nats",
                format!(
                    "give one way of authenticating to NATS, not {}",
                    methods.join(" and ")
                ),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            bad(
                "nats.user",
                "nats.user and nats.password go together".to_owned(),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bad(
                "nats.tls_cert",
                "nats.tls_cert and nats.tls_key go together".to_owned(),
            );
        }
    }
}

/// Settings of the orchestrator (the workflow engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSettings {
    /// Messages one process handles at once (each instance's messages one at a time).
    /// Default 256.
    pub concurrency: usize,
    /// Names of environment variables that workflow templates may read as `env.NAME`; no other
    /// variable is visible to a template. Env `SWITCHYARD_ORCHESTRATOR__TEMPLATE_ENV` as a list,
    /// e.g. `[PUBLIC_BASE_URL, SLACK_CHANNEL]`. Default: none.
    pub template_env: Vec<String>,
    /// Deliveries of an inbox message (start, result, cancel, signal) the engine keeps failing
    /// on before it is dead-lettered to `dlq.orchestrator` with the reason; the wait between
    /// deliveries grows by a second each time, up to 30 s. Default 10 (about a minute).
    pub max_deliveries: i64,
    /// How large rendering a template may make things. The gateway reads these too, for the
    /// definitions it parses.
    pub template_limits: TemplateLimits,
    /// How often the engine asks every worker replica whether it is there (NATS's
    /// `$SRV.PING`). A step that names a capability skips kinds with no replica that answered
    /// one of the last two sweeps. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub replica_sweep: Duration,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        OrchestratorSettings {
            concurrency: 256,
            template_env: Vec::new(),
            max_deliveries: 10,
            template_limits: TemplateLimits::default(),
            replica_sweep: Duration::from_secs(1),
        }
    }
}

/// Limits of rendering, in bytes. A template that would exceed one fails to render: at
/// validation it is a problem of the definition, at run time its step fails with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateLimits {
    /// The largest value one operation (`~`, `+`, `*`, a filter) may produce. Default 1 MiB.
    pub value_bytes: usize,
    /// The most one template may write. Default 1 MiB.
    pub output_bytes: usize,
    /// The largest rendered input of a step (its JSON). Default 1 MiB.
    pub step_input_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            value_bytes: 1024 * 1024,
            output_bytes: 1024 * 1024,
            step_input_bytes: 1024 * 1024,
        }
    }
}

/// Settings of the HTTP gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// How bearer tokens are checked.
    pub auth: AuthSettings,
    /// Largest request body, in bytes; a larger one is answered 413. Default 1048576 (1 MiB).
    pub body_limit: usize,
    /// How long one request may take before it is answered 408. `POST /workflows/execute` gets
    /// its `wait` on top of this. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest `wait` `POST /workflows/execute` honours; a longer one is capped.
    /// Default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How long an MCP `tools/call` of a workflow waits for it to finish before it answers
    /// with the instance id and status URL instead. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub mcp_wait: Duration,
    /// Requests allowed per route group; a request over its group's rate is answered 429 with
    /// `Retry-After`.
    pub rate_limits: RateLimits,
    /// Event streams (`GET …/instances/{id}/events`) one tenant may hold open on this gateway
    /// at once; one more is answered 429. Each holds a consumer on the server. Default 20.
    pub event_streams_per_tenant: usize,
    /// Event streams this gateway holds open at once, over all tenants. Default 1000.
    pub event_streams: usize,
    /// Each tenant's key for signed inbound webhooks (`POST /api/v1/hooks/<tenant>/…`), by
    /// tenant, at least 32 bytes: HMAC-SHA256 of `"<timestamp>.<body>"`. A tenant without one
    /// receives no webhooks. Env e.g. `SWITCHYARD_GATEWAY__WEBHOOK_SECRETS__ACME`.
    pub webhook_secrets: BTreeMap<String, Secret>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            auth: AuthSettings::default(),
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(60),
            mcp_wait: Duration::from_secs(30),
            rate_limits: RateLimits::default(),
            event_streams_per_tenant: 20,
            event_streams: 1000,
            webhook_secrets: BTreeMap::new(),
        }
    }
}

/// The rate of each route group, counted per tenant (per user for `research`). Each is
/// `<n>/<s|m|h>` (e.g. `1000/s`, `10/h`), a burst of up to `n` allowed, or `off`. Env e.g.
/// `SWITCHYARD_GATEWAY__RATE_LIMITS__START=5000/s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Trigger and execute, per tenant. Default `1000/s`.
    pub start: RateLimit,
    /// Cancel and signal, per tenant. Default `100/s`.
    pub control: RateLimit,
    /// Status, instances, events, definitions and registry reads, per tenant. Default `500/s`.
    pub read: RateLimit,
    /// Registering, deleting and validating definitions, per tenant. Default `10/s`.
    pub definitions: RateLimit,
    /// Research requests, per user (the product asks for 10 an hour). Default `10/h`.
    pub research: RateLimit,
    /// Refused credentials (401) per client address. Over it, the address is answered 429
    /// before its token is checked until the rate allows again. The address is the TCP peer's:
    /// behind a proxy that is the proxy, so raise this or set `off` there. Default `30/m`.
    pub refused: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            start: RateLimit::per(1000, RatePeriod::Second),
            control: RateLimit::per(100, RatePeriod::Second),
            read: RateLimit::per(500, RatePeriod::Second),
            definitions: RateLimit::per(10, RatePeriod::Second),
            research: RateLimit::per(10, RatePeriod::Hour),
            refused: RateLimit::per(30, RatePeriod::Minute),
        }
    }
}

/// `<n>/<period>` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RateLimit {
    Off,
    Every { requests: u32, period: RatePeriod },
}

/// The period a [`RateLimit`] counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3600,
        })
    }
}

impl RateLimit {
    pub const fn per(requests: u32, period: RatePeriod) -> Self {
        RateLimit::Every { requests, period }
    }
}

impl TryFrom<String> for RateLimit {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let expected = "expected `<n>/s`, `<n>/m`, `<n>/h` (n from 1) or `off`";
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(RateLimit::Off);
        }
        let (n, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: {expected}"))?;
        let requests: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: {expected}"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => RatePeriod::Second,
            "m" | "min" | "minute" => RatePeriod::Minute,
            "h" | "hour" => RatePeriod::Hour,
            _ => return Err(format!("{text:?}: {expected}")),
        };
        Ok(RateLimit::Every { requests, period })
    }
}

impl From<RateLimit> for String {
    fn from(limit: RateLimit) -> String {
        match limit {
            RateLimit::Off => "off".into(),
            RateLimit::Every { requests, period } => format!(
                "{requests}/{}",
                match period {
                    RatePeriod::Second => "s",
                    RatePeriod::Minute => "m",
                    RatePeriod::Hour => "h",
                }
            ),
        }
    }
}

/// How the gateway checks `Authorization: Bearer <jwt>`: signature, issuer, audience, expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `hs256` (a shared secret) or `rs256` (a public key). Default `hs256`.
    pub algorithm: JwtAlgorithm,
    /// The HS256 key, at least 32 bytes. Env `SWITCHYARD_GATEWAY__AUTH__SECRET`. No default:
    /// the gateway refuses to start with `hs256` and no secret.
    pub secret: Option<Secret>,
    /// A PEM file with the RS256 public key; required with `rs256`. No default.
    pub public_key_file: Option<PathBuf>,
    /// The `iss` a token must carry. Default `switchyard`.
    pub issuer: String,
    /// The `aud` a token must carry. Default `switchyard-api`.
    pub audience: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            algorithm: JwtAlgorithm::Hs256,
            secret: None,
            public_key_file: None,
            issuer: "switchyard".into(),
            audience: "switchyard-api".into(),
        }
    }
}

/// The JWT signature algorithms the gateway accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JwtAlgorithm {
    #[default]
    Hs256,
    Rs256,
}

/// Settings of the integration worker: Notion, Slack, ClickUp, signed webhooks and the local
/// Markdown sink. Each secret can be given inline (`token`, from a file or the environment) or
/// as a file holding it (`token_file`, e.g. a mounted Kubernetes secret), not both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrationSettings {
    /// How long one call to an external API may take, connection included. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub markdown: MarkdownSinkSettings,
    pub notion: NotionSettings,
    pub slack: SlackSettings,
    pub clickup: ClickUpSettings,
    pub webhook: WebhookSettings,
    /// Credentials and settings per tenant, by tenant id: a tenant's Notion, Slack and ClickUp
    /// calls and its webhook signatures use its own. Env e.g.
    /// `SWITCHYARD_INTEGRATION__TENANTS__ACME__CLICKUP__TOKEN`.
    pub tenants: BTreeMap<String, TenantIntegrations>,
    /// Whether the deployment-wide credentials above serve tenants without a section of their
    /// own. Default `false`: such a tenant's calls fail as not configured, so one tenant never
    /// acts with credentials another relies on. Set it for a single-tenant deployment.
    pub shared_credentials: bool,
}

/// One tenant's integration credentials and settings; each system it leaves out is not
/// configured for it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantIntegrations {
    pub notion: NotionSettings,
    pub slack: SlackSettings,
    pub clickup: ClickUpSettings,
    pub webhook: TenantWebhookSettings,
}

/// A tenant's webhook signing key (where webhooks may go is the deployment's setting).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantWebhookSettings {
    /// The HMAC-SHA256 key, at least 32 bytes.
    pub signing_secret: Option<Secret>,
    /// A file holding it instead.
    pub signing_secret_file: Option<PathBuf>,
}

/// The local Markdown sink, the destination that works offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkdownSinkSettings {
    /// The directory documents are written under; nothing is ever written outside it.
    /// Created when missing. Env `SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR`.
    /// Default `./.switchyard/out`.
    pub output_dir: PathBuf,
}

/// The Notion API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotionSettings {
    /// An integration token (`ntn_…`/`secret_…`). Env `SWITCHYARD_INTEGRATION__NOTION__TOKEN`.
    /// No default: `integration.notion.create_page` fails without one.
    pub token: Option<Secret>,
    /// A file holding the token instead.
    pub token_file: Option<PathBuf>,
    /// The API's base URL. Default `https://api.notion.com`.
    pub base_url: String,
    /// The `Notion-Version` header sent with every call. Default `2022-06-28`.
    pub version: String,
}

/// The Slack Web API and incoming webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSettings {
    /// A bot token (`xoxb-…`) for `chat.postMessage`.
    /// Env `SWITCHYARD_INTEGRATION__SLACK__BOT_TOKEN`. No default.
    pub bot_token: Option<Secret>,
    /// A file holding the bot token instead.
    pub bot_token_file: Option<PathBuf>,
    /// An incoming-webhook URL, used when a job names no channel and no bot token is set
    /// (the URL is the credential). No default.
    pub webhook_url: Option<Secret>,
    /// A file holding the webhook URL instead.
    pub webhook_url_file: Option<PathBuf>,
    /// The Web API's base URL. Default `https://slack.com`.
    pub base_url: String,
    /// The channel for jobs that name none. No default.
    pub default_channel: Option<String>,
}

/// The ClickUp API (v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickUpSettings {
    /// A personal API token (`pk_…`). Env `SWITCHYARD_INTEGRATION__CLICKUP__TOKEN`. No default.
    pub token: Option<Secret>,
    /// A file holding the token instead.
    pub token_file: Option<PathBuf>,
    /// The API's base URL. Default `https://api.clickup.com`.
    pub base_url: String,
}

/// Signed outgoing webhooks (`integration.webhook.post`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// The HMAC-SHA256 key, at least 32 bytes. Env
    /// `SWITCHYARD_INTEGRATION__WEBHOOK__SIGNING_SECRET`. No default: webhooks are refused
    /// without one, never sent unsigned.
    pub signing_secret: Option<Secret>,
    /// A file holding the signing secret instead.
    pub signing_secret_file: Option<PathBuf>,
    /// Whether URLs may resolve to loopback, private, link-local or other non-public
    /// addresses. Default `false`: a workflow input cannot make the worker call into the
    /// network it runs in.
    pub allow_private_addresses: bool,
}

impl Default for IntegrationSettings {
    fn default() -> Self {
        IntegrationSettings {
            request_timeout: Duration::from_secs(30),
            markdown: MarkdownSinkSettings {
                output_dir: PathBuf::from("./.switchyard/out"),
            },
            notion: NotionSettings::default(),
            slack: SlackSettings::default(),
            clickup: ClickUpSettings::default(),
            webhook: WebhookSettings::default(),
            tenants: BTreeMap::new(),
            shared_credentials: false,
        }
    }
}

impl Default for MarkdownSinkSettings {
    fn default() -> Self {
        IntegrationSettings::default().markdown
    }
}

impl Default for NotionSettings {
    fn default() -> Self {
        NotionSettings {
            token: None,
            token_file: None,
            base_url: "https://api.notion.com".into(),
            version: "2022-06-28".into(),
        }
    }
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            bot_token: None,
            bot_token_file: None,
            webhook_url: None,
            webhook_url_file: None,
            base_url: "https://slack.com".into(),
            default_channel: None,
        }
    }
}

impl Default for ClickUpSettings {
    fn default() -> Self {
        ClickUpSettings {
            token: None,
            token_file: None,
            base_url: "https://api.clickup.com".into(),
        }
    }
}

impl IntegrationSettings {
    fn load(figment: &Figment, problems: &mut Vec<Problem>) -> Self {
        let d = IntegrationSettings::default();
        let f = |key: &str| format!("integration.{key}");
        // A bad duration is reported once, not again as out of range.
        let reported = problems.len();
        let request_timeout = duration(figment, &f("request_timeout"), problems);
        let request_timeout = if problems.len() > reported {
            d.request_timeout
        } else {
            request_timeout
        };
        IntegrationSettings {
            request_timeout,
            markdown: MarkdownSinkSettings {
                output_dir: field(
                    figment,
                    &f("markdown.output_dir"),
                    d.markdown.output_dir,
                    problems,
                ),
            },
            notion: NotionSettings {
                token: field(figment, &f("notion.token"), None, problems),
                token_file: field(figment, &f("notion.token_file"), None, problems),
                base_url: field(figment, &f("notion.base_url"), d.notion.base_url, problems),
                version: field(figment, &f("notion.version"), d.notion.version, problems),
            },
            slack: SlackSettings {
                bot_token: field(figment, &f("slack.bot_token"), None, problems),
                bot_token_file: field(figment, &f("slack.bot_token_file"), None, problems),
                webhook_url: field(figment, &f("slack.webhook_url"), None, problems),
                webhook_url_file: field(figment, &f("slack.webhook_url_file"), None, problems),
                base_url: field(figment, &f("slack.base_url"), d.slack.base_url, problems),
                default_channel: field(figment, &f("slack.default_channel"), None, problems),
            },
            clickup: ClickUpSettings {
                token: field(figment, &f("clickup.token"), None, problems),
                token_file: field(figment, &f("clickup.token_file"), None, problems),
                base_url: field(
                    figment,
                    &f("clickup.base_url"),
                    d.clickup.base_url,
                    problems,
                ),
            },
            webhook: WebhookSettings {
                signing_secret: field(figment, &f("webhook.signing_secret"), None, problems),
                signing_secret_file: field(
                    figment,
                    &f("webhook.signing_secret_file"),
                    None,
                    problems,
                ),
                allow_private_addresses: field(
                    figment,
                    &f("webhook.allow_private_addresses"),
                    false,
                    problems,
                ),
            },
            tenants: field(figment, &f("tenants"), BTreeMap::new(), problems),
            shared_credentials: field(figment, &f("shared_credentials"), false, problems),
        }
    }

    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        if self.request_timeout < Duration::from_millis(100) {
            bad(
                "integration.request_timeout",
                "must be at least 100ms".into(),
            );
        }
        if self.markdown.output_dir.as_os_str().is_empty() {
            bad(
                "integration.markdown.output_dir",
                "must not be empty; expected a directory such as `./.switchyard/out`".into(),
            );
        }
        for (key, url) in [
            ("integration.notion.base_url", &self.notion.base_url),
            ("integration.slack.base_url", &self.slack.base_url),
            ("integration.clickup.base_url", &self.clickup.base_url),
        ] {
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                bad(
                    key,
                    format!("not an http(s) URL ({url:?}); expected e.g. https://host"),
                );
            }
        }
        if self.notion.version.trim().is_empty() {
            bad(
                "integration.notion.version",
                "must not be empty; expected a Notion API version such as `2022-06-28`".into(),
            );
        }
        let pairs = [
            (
                "notion.token",
                self.notion.token.is_some(),
                self.notion.token_file.is_some(),
            ),
            (
                "slack.bot_token",
                self.slack.bot_token.is_some(),
                self.slack.bot_token_file.is_some(),
            ),
            (
                "slack.webhook_url",
                self.slack.webhook_url.is_some(),
                self.slack.webhook_url_file.is_some(),
            ),
            (
                "clickup.token",
                self.clickup.token.is_some(),
                self.clickup.token_file.is_some(),
            ),
            (
                "webhook.signing_secret",
                self.webhook.signing_secret.is_some(),
                self.webhook.signing_secret_file.is_some(),
            ),
        ];
        for (key, inline, file) in pairs {
            if inline && file {
                bad(
                    &format!("integration.{key}_file"),
                    format!("set either integration.{key} or integration.{key}_file, not both"),
                );
            }
        }
        if let Some(secret) = &self.webhook.signing_secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            bad(
                "integration.webhook.signing_secret",
                format!(
                    "too short ({} bytes); an HMAC-SHA256 key needs at least {MIN_SECRET_LEN} random bytes, e.g. `openssl rand -hex 32`",
                    secret.expose().len()
                ),
            );
        }
    }

    /// Replaces every secret with `****`.
    fn redact(&mut self) {
        let tenants = self.tenants.values_mut().flat_map(|t| {
            [
                &mut t.notion.token,
                &mut t.slack.bot_token,
                &mut t.slack.webhook_url,
                &mut t.clickup.token,
                &mut t.webhook.signing_secret,
            ]
        });
        for secret in [
            &mut self.notion.token,
            &mut self.slack.bot_token,
            &mut self.slack.webhook_url,
            &mut self.clickup.token,
            &mut self.webhook.signing_secret,
        ]
        .into_iter()
        .chain(tenants)
        {
            if secret.is_some() {
                *secret = Some(Secret::new("****"));
            }
        }
    }
}

/// A secret value: shown as `****` by `Debug` and by [`Config::redacted_toml`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the code that needs it (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Settings of the worker loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Jobs handled at once by one process. Default 64.
    pub concurrency: usize,
    /// Attempts for a job whose retry policy does not say. Default 5.
    pub max_attempts: u32,
    /// First retry delay for a job whose retry policy does not say. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Longest retry delay. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth of the retry delay per attempt. Default 2.0.
    pub multiplier: f32,
    /// How long one pull request waits for jobs before asking again. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub pull_expiry: Duration,
    /// How long a job may keep being handed back because infrastructure it needs (the bus,
    /// the database, the object store) is unavailable before it is dead-lettered as
    /// `unavailable`. Such deliveries do not use up attempts (ADR 14). Default `10m`.
    #[serde(with = "humantime_serde")]
    pub fault_patience: Duration,
    /// Deliveries of one job after which it is dead-lettered whatever they ended in: the
    /// bound that keeps a poison message from circling forever. Default 100.
    pub max_deliveries: u32,
    /// A name for this replica in results, logs and the service registry. Default: a random id.
    pub worker_id: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_connect_timeout: Duration::from_secs(30),
            nats: NatsSettings::default(),
            database_url: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_format: LogFormat::Json,
            log_level: "info".into(),
            shutdown_grace: Duration::from_secs(30),
            worker: WorkerSettings::default(),
            orchestrator: OrchestratorSettings::default(),
            gateway: GatewaySettings::default(),
            ai: AiSettings::default(),
            integration: IntegrationSettings::default(),
            research: ResearchSettings::default(),
            mcp: McpSettings::default(),
            ledger: LedgerSettings::default(),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 64,
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            multiplier: 2.0,
            pull_expiry: Duration::from_secs(5),
            fault_patience: Duration::from_secs(600),
            max_deliveries: 100,
            worker_id: None,
        }
    }
}

/// One configuration problem: the key as the user wrote it, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the value came from, e.g. `SWITCHYARD_NATS_URL` or `nats_url in switchyard.toml`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Where configuration comes from, in increasing precedence.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file (optional; a missing file named here is an error).
    pub file: Option<PathBuf>,
    /// Environment variables; only `SWITCHYARD_*` and `DATABASE_URL` are read.
    pub env: BTreeMap<String, String>,
    /// Overrides from command-line flags, as `(key, value)` with dotted keys.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The process's environment and an optional file.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }

    /// Adds a command-line override such as `("nats_url", "nats://host:4222")`.
    pub fn with_override(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }
}

const ENV_PREFIX: &str = "SWITCHYARD_";

/// Environment variables as a figment provider, so that values parse the way figment parses
/// them (`64` is a number, `true` a boolean) and errors name the variable.
struct EnvVars<'a>(&'a BTreeMap<String, String>);

impl Provider for EnvVars<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_, keys| {
            let key = keys.join("__").to_ascii_uppercase();
            if key == "DATABASE_URL" {
                key
            } else {
                format!("{ENV_PREFIX}{key}")
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (name, value) in self.0 {
            let key = if name == "DATABASE_URL" {
                "database_url".to_owned()
            } else if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                rest.to_ascii_lowercase().replace("__", ".")
            } else {
                continue;
            };
            if key.is_empty() || key.split('.').any(str::is_empty) {
                continue;
            }
            let value: Value = value
                .parse()
                .unwrap_or_else(|never: std::convert::Infallible| match never {});
            merge(
                &mut dict,
                figment::util::nest(&key, value)
                    .into_dict()
                    .unwrap_or_default(),
            );
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => merge(existing, incoming),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

struct Overrides<'a>(&'a [(String, String)]);

impl Provider for Overrides<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("command line")
            .interpolater(|_, keys| format!("--{}", keys.join(".").replace('_', "-")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in self.0 {
            let value: Value = value
                .parse()
                .unwrap_or_else(|never: std::convert::Infallible| match never {});
            merge(
                &mut dict,
                figment::util::nest(key, value)
                    .into_dict()
                    .unwrap_or_default(),
            );
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// A part of the configuration that only some processes use. The common settings (`nats_url`,
/// `nats_connect_timeout`, `http_addr`, `metrics_addr`, logs, `shutdown_grace`) are always
/// loaded; each component names the sections it needs (e.g. the gateway's `CONFIG_SECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[worker]`: the worker loop, and the replica id of every process.
    Worker,
    /// `[orchestrator]`
    Orchestrator,
    /// `[gateway]`, with its JWT secret.
    Gateway,
    /// `[ai]`: providers, with their API keys (read from files or the environment).
    Ai,
    /// `[integration]`, with the integrations' tokens.
    Integration,
    /// `[research]`
    Research,
    /// `[ledger]`
    Ledger,
    /// `[mcp]`: the MCP servers the `mcp` worker kind calls.
    Mcp,
    /// `database_url` (`DATABASE_URL`), for the processes that own a database.
    Database,
}

impl Section {
    /// Every section: the whole configuration.
    pub const ALL: [Section; 9] = [
        Section::Worker,
        Section::Orchestrator,
        Section::Gateway,
        Section::Ai,
        Section::Integration,
        Section::Research,
        Section::Ledger,
        Section::Mcp,
        Section::Database,
    ];
}

/// A section's settings when it is asked for, else its defaults (and no problems).
fn section<T: Default>(
    wanted: bool,
    problems: &mut Vec<Problem>,
    load: impl FnOnce(&mut Vec<Problem>) -> T,
) -> T {
    if wanted { load(problems) } else { T::default() }
}

impl Config {
    /// Loads and validates the whole configuration, reporting every problem at once: for
    /// tools that show or use all of it. A process loads its own sections with
    /// [`Config::load_sections`].
    pub fn load(sources: &Sources) -> Result<Config, Error> {
        Config::load_sections(sources, &Section::ALL)
    }

    /// Loads and validates the common settings and `sections`, reporting every problem at
    /// once. The other sections keep their defaults: they are neither read nor checked, and
    /// their secrets (AI key files, say) are not resolved, so a process never fails over
    /// another's settings. Unknown keys are reported in every section.
    pub fn load_sections(sources: &Sources, sections: &[Section]) -> Result<Config, Error> {
        let wants = |s: Section| sections.contains(&s);
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let mut problems = Vec::new();
        if let Some(file) = &sources.file {
            if file.is_file() {
                figment = figment.merge(Toml::file_exact(file));
            } else {
                problems.push(Problem {
                    key: "config file".into(),
                    message: format!(
                        "{} does not exist; pass an existing TOML file or none",
                        file.display()
                    ),
                });
            }
        }
        let figment = figment
            .merge(EnvVars(&sources.env))
            .merge(Overrides(&sources.overrides));

        problems.extend(unknown_keys(&figment));
        let d = Config::default();
        let config = Config {
            nats_url: field(&figment, "nats_url", d.nats_url, &mut problems),
            nats_connect_timeout: duration(&figment, "nats_connect_timeout", &mut problems),
            nats: field(&figment, "nats", d.nats.clone(), &mut problems),
            database_url: section(wants(Section::Database), &mut problems, |problems| {
                field(&figment, "database_url", d.database_url.clone(), problems)
            }),
            http_addr: field(&figment, "http_addr", d.http_addr, &mut problems),
            metrics_addr: field(&figment, "metrics_addr", d.metrics_addr, &mut problems),
            log_format: field(&figment, "log_format", d.log_format, &mut problems),
            log_level: field(&figment, "log_level", d.log_level, &mut problems),
            shutdown_grace: duration(&figment, "shutdown_grace", &mut problems),
            worker: section(wants(Section::Worker), &mut problems, |problems| {
                WorkerSettings {
                    concurrency: field(
                        &figment,
                        "worker.concurrency",
                        d.worker.concurrency,
                        problems,
                    ),
                    max_attempts: field(
                        &figment,
                        "worker.max_attempts",
                        d.worker.max_attempts,
                        problems,
                    ),
                    initial_delay: duration(&figment, "worker.initial_delay", problems),
                    max_delay: duration(&figment, "worker.max_delay", problems),
                    multiplier: field(&figment, "worker.multiplier", d.worker.multiplier, problems),
                    pull_expiry: duration(&figment, "worker.pull_expiry", problems),
                    fault_patience: duration(&figment, "worker.fault_patience", problems),
                    max_deliveries: field(
                        &figment,
                        "worker.max_deliveries",
                        d.worker.max_deliveries,
                        problems,
                    ),
                    worker_id: field(&figment, "worker.worker_id", d.worker.worker_id, problems),
                }
            }),
            orchestrator: section(wants(Section::Orchestrator), &mut problems, |problems| {
                OrchestratorSettings {
                    concurrency: field(
                        &figment,
                        "orchestrator.concurrency",
                        d.orchestrator.concurrency,
                        problems,
                    ),
                    template_env: field(
                        &figment,
                        "orchestrator.template_env",
                        d.orchestrator.template_env,
                        problems,
                    ),
                    max_deliveries: field(
                        &figment,
                        "orchestrator.max_deliveries",
                        d.orchestrator.max_deliveries,
                        problems,
                    ),
                    template_limits: field(
                        &figment,
                        "orchestrator.template_limits",
                        d.orchestrator.template_limits,
                        problems,
                    ),
                    replica_sweep: duration(&figment, "orchestrator.replica_sweep", problems),
                }
            }),
            gateway: section(wants(Section::Gateway), &mut problems, |problems| {
                GatewaySettings {
                    auth: AuthSettings {
                        algorithm: field(
                            &figment,
                            "gateway.auth.algorithm",
                            d.gateway.auth.algorithm,
                            problems,
                        ),
                        secret: field(
                            &figment,
                            "gateway.auth.secret",
                            d.gateway.auth.secret,
                            problems,
                        ),
                        public_key_file: field(
                            &figment,
                            "gateway.auth.public_key_file",
                            d.gateway.auth.public_key_file,
                            problems,
                        ),
                        issuer: field(
                            &figment,
                            "gateway.auth.issuer",
                            d.gateway.auth.issuer,
                            problems,
                        ),
                        audience: field(
                            &figment,
                            "gateway.auth.audience",
                            d.gateway.auth.audience,
                            problems,
                        ),
                    },
                    body_limit: field(
                        &figment,
                        "gateway.body_limit",
                        d.gateway.body_limit,
                        problems,
                    ),
                    request_timeout: duration(&figment, "gateway.request_timeout", problems),
                    max_wait: duration(&figment, "gateway.max_wait", problems),
                    mcp_wait: duration(&figment, "gateway.mcp_wait", problems),
                    rate_limits: RateLimits {
                        start: rate(&figment, "start", d.gateway.rate_limits.start, problems),
                        control: rate(&figment, "control", d.gateway.rate_limits.control, problems),
                        read: rate(&figment, "read", d.gateway.rate_limits.read, problems),
                        definitions: rate(
                            &figment,
                            "definitions",
                            d.gateway.rate_limits.definitions,
                            problems,
                        ),
                        research: rate(
                            &figment,
                            "research",
                            d.gateway.rate_limits.research,
                            problems,
                        ),
                        refused: rate(&figment, "refused", d.gateway.rate_limits.refused, problems),
                    },
                    event_streams_per_tenant: field(
                        &figment,
                        "gateway.event_streams_per_tenant",
                        d.gateway.event_streams_per_tenant,
                        problems,
                    ),
                    event_streams: field(
                        &figment,
                        "gateway.event_streams",
                        d.gateway.event_streams,
                        problems,
                    ),
                    webhook_secrets: field(
                        &figment,
                        "gateway.webhook_secrets",
                        d.gateway.webhook_secrets,
                        problems,
                    ),
                }
            }),
            integration: section(wants(Section::Integration), &mut problems, |problems| {
                IntegrationSettings::load(&figment, problems)
            }),
            // The key files of AI providers are read here, so only a process that asks for
            // this section (the AI and research workers) reads them.
            ai: section(wants(Section::Ai), &mut problems, |problems| {
                AiSettings::load(&figment, &sources.env, problems)
            }),
            research: section(wants(Section::Research), &mut problems, |problems| {
                ResearchSettings::load(&figment, problems)
            }),
            ledger: section(wants(Section::Ledger), &mut problems, |problems| {
                LedgerSettings::load(&figment, problems)
            }),
            mcp: section(wants(Section::Mcp), &mut problems, |problems| {
                McpSettings::load(&figment, problems)
            }),
        };
        // Sections not asked for hold their defaults, which pass these checks.
        config.check(&figment, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config(problems))
        }
    }

    fn check(&self, figment: &Figment, problems: &mut Vec<Problem>) {
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: source_name(figment, key),
                message,
            });
        };
        if let Err(reason) = check_nats_url(&self.nats_url) {
            bad(
                "nats_url",
                format!("{reason} ({:?}); expected nats://host:port", self.nats_url),
            );
        }
        self.nats.check(&mut bad);
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bad(
                "database_url",
                "expected postgres://user@host:port/database".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            bad(
                "log_level",
                format!("{e}; expected a filter such as `info` or `switchyard=debug,info`"),
            );
        }
        let w = &self.worker;
        if !(1..=10_000).contains(&w.concurrency) {
            bad(
                "worker.concurrency",
                format!("{} is out of range; expected 1 to 10000", w.concurrency),
            );
        }
        let t = &self.orchestrator.template_limits;
        for (key, value) in [
            ("orchestrator.template_limits.value_bytes", t.value_bytes),
            ("orchestrator.template_limits.output_bytes", t.output_bytes),
            (
                "orchestrator.template_limits.step_input_bytes",
                t.step_input_bytes,
            ),
        ] {
            if value < 1024 {
                bad(
                    key,
                    format!("{value} is out of range; expected 1024 or more"),
                );
            }
        }
        if self.orchestrator.max_deliveries < 1 {
            bad(
                "orchestrator.max_deliveries",
                format!(
                    "{} is out of range; expected 1 or more",
                    self.orchestrator.max_deliveries
                ),
            );
        }
        if w.max_attempts == 0 {
            bad("worker.max_attempts", "must be at least 1".into());
        }
        if !(w.multiplier >= 1.0 && w.multiplier.is_finite()) {
            bad(
                "worker.multiplier",
                format!("{} is out of range; expected 1.0 or more", w.multiplier),
            );
        }
        if w.initial_delay > w.max_delay {
            bad(
                "worker.initial_delay",
                "must not exceed worker.max_delay".into(),
            );
        }
        if w.pull_expiry < Duration::from_millis(100) {
            bad("worker.pull_expiry", "must be at least 100ms".into());
        }
        if w.fault_patience < Duration::from_secs(1) {
            bad("worker.fault_patience", "must be at least 1s".into());
        }
        if w.max_deliveries <= w.max_attempts {
            bad(
                "worker.max_deliveries",
                format!(
                    "{} is out of range; expected more than worker.max_attempts ({})",
                    w.max_deliveries, w.max_attempts
                ),
            );
        }
        let o = &self.orchestrator;
        if !(1..=10_000).contains(&o.concurrency) {
            bad(
                "orchestrator.concurrency",
                format!("{} is out of range; expected 1 to 10000", o.concurrency),
            );
        }
        if o.replica_sweep < Duration::from_millis(100) {
            bad(
                "orchestrator.replica_sweep",
                "must be at least 100ms".into(),
            );
        }
        for name in &o.template_env {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bad(
                    "orchestrator.template_env",
                    format!(
                        "{name:?} is not an environment variable name; expected letters, digits and _"
                    ),
                );
            }
        }
        self.integration.check(&mut bad);
        self.ai.check(&mut bad);
        self.research.check(&self.ai, &mut bad);
        self.mcp.check(&mut bad);
        self.ledger.check(&mut bad);
        let g = &self.gateway;
        if !(1..=1 << 30).contains(&g.body_limit) {
            bad(
                "gateway.body_limit",
                format!(
                    "{} is out of range; expected 1 to 1073741824 bytes",
                    g.body_limit
                ),
            );
        }
        if g.request_timeout < Duration::from_millis(100) {
            bad("gateway.request_timeout", "must be at least 100ms".into());
        }
        if g.max_wait > Duration::from_secs(3600) {
            bad("gateway.max_wait", "must be at most 1h".into());
        }
        if g.mcp_wait > Duration::from_secs(3600) {
            bad("gateway.mcp_wait", "must be at most 1h".into());
        }
        if g.event_streams == 0 {
            bad("gateway.event_streams", "must be at least 1".into());
        }
        if !(1..=g.event_streams.max(1)).contains(&g.event_streams_per_tenant) {
            bad(
                "gateway.event_streams_per_tenant",
                format!(
                    "{} is out of range; expected 1 to gateway.event_streams ({})",
                    g.event_streams_per_tenant, g.event_streams
                ),
            );
        }
        for (tenant, secret) in &g.webhook_secrets {
            let key = format!("gateway.webhook_secrets.{tenant}");
            if switchyard_proto::subject::check_token(tenant).is_err() {
                bad(
                    &key,
                    "not a tenant name (letters, digits, '-' and '_')".into(),
                );
            } else if secret.expose().len() < MIN_SECRET_LEN {
                bad(
                    &key,
                    format!(
                        "too short ({} bytes); an HMAC-SHA256 key needs at least {MIN_SECRET_LEN} random bytes, e.g. `openssl rand -hex 32`",
                        secret.expose().len()
                    ),
                );
            }
        }
        let a = &g.auth;
        if let Some(secret) = &a.secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            bad(
                "gateway.auth.secret",
                format!(
                    "too short ({} bytes); an HS256 key needs at least {MIN_SECRET_LEN} random bytes, e.g. `openssl rand -hex 32`",
                    secret.expose().len()
                ),
            );
        }
        if a.algorithm == JwtAlgorithm::Rs256 && a.public_key_file.is_none() {
            bad(
                "gateway.auth.public_key_file",
                "required when gateway.auth.algorithm is rs256; expected a PEM file with the public key".into(),
            );
        }
        for (key, value) in [
            ("gateway.auth.issuer", &a.issuer),
            ("gateway.auth.audience", &a.audience),
        ] {
            if value.is_empty() {
                bad(key, "must not be empty".into());
            }
        }
    }

    /// The configuration as TOML with secrets (passwords in URLs) redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact_url);
        shown.nats_url = redact_url(&shown.nats_url);
        for secret in [&mut shown.nats.password, &mut shown.nats.token] {
            if secret.is_some() {
                *secret = Some(Secret::new("****"));
            }
        }
        if shown.gateway.auth.secret.is_some() {
            shown.gateway.auth.secret = Some(Secret::new("****"));
        }
        for secret in shown.gateway.webhook_secrets.values_mut() {
            *secret = Secret::new("****");
        }
        shown.integration.redact();
        shown.ai.redact();
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// This replica's id: the configured one or a fresh random one.
    pub fn worker_id(&self) -> String {
        self.worker
            .worker_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned())
    }
}

/// Shortest accepted HS256 key, in bytes (RFC 7518 §3.2: a key as long as the hash).
pub const MIN_SECRET_LEN: usize = 32;

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{}{user}:****{}", &url[..scheme_end + 3], &url[at..])
            } else {
                url.to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

fn check_nats_url(url: &str) -> Result<(), &'static str> {
    for server in url.split(',') {
        let rest = server
            .trim()
            .split_once("://")
            .filter(|(scheme, _)| ["nats", "tls", "ws", "wss"].contains(scheme))
            .ok_or("not a URL")?
            .1;
        let host_port = rest.rsplit('@').next().unwrap_or_default();
        let host_port = host_port.split('/').next().unwrap_or_default();
        if host_port.is_empty() {
            return Err("no host");
        }
        if let Some((_, port)) = host_port.rsplit_once(':')
            && port.parse::<u16>().is_err()
        {
            return Err("bad port");
        }
    }
    Ok(())
}

const KNOWN_KEYS: &[&str] = &[
    "nats_url",
    "nats_connect_timeout",
    "nats",
    "nats.credentials",
    "nats.credentials_dir",
    "nats.nkey_seed_file",
    "nats.user",
    "nats.password",
    "nats.token",
    "nats.inbox_prefix",
    "nats.tls_ca",
    "nats.tls_cert",
    "nats.tls_key",
    "nats.tls_required",
    "nats.allow_unauthenticated",
    "database_url",
    "http_addr",
    "metrics_addr",
    "log_format",
    "log_level",
    "shutdown_grace",
    "worker",
    "worker.concurrency",
    "worker.max_attempts",
    "worker.initial_delay",
    "worker.max_delay",
    "worker.multiplier",
    "worker.pull_expiry",
    "worker.fault_patience",
    "worker.max_deliveries",
    "worker.worker_id",
    "orchestrator",
    "orchestrator.concurrency",
    "orchestrator.template_env",
    "orchestrator.max_deliveries",
    "orchestrator.template_limits",
    "orchestrator.replica_sweep",
    "orchestrator.template_limits.value_bytes",
    "orchestrator.template_limits.output_bytes",
    "orchestrator.template_limits.step_input_bytes",
    "integration",
    "integration.request_timeout",
    "integration.markdown",
    "integration.markdown.output_dir",
    "integration.notion",
    "integration.notion.token",
    "integration.notion.token_file",
    "integration.notion.base_url",
    "integration.notion.version",
    "integration.slack",
    "integration.slack.bot_token",
    "integration.slack.bot_token_file",
    "integration.slack.webhook_url",
    "integration.slack.webhook_url_file",
    "integration.slack.base_url",
    "integration.slack.default_channel",
    "integration.clickup",
    "integration.clickup.token",
    "integration.clickup.token_file",
    "integration.clickup.base_url",
    "integration.webhook",
    "integration.webhook.signing_secret",
    "integration.webhook.signing_secret_file",
    "integration.webhook.allow_private_addresses",
    "integration.tenants",
    "integration.shared_credentials",
    "integration.tenants.*",
    "integration.tenants.*.notion",
    "integration.tenants.*.notion.token",
    "integration.tenants.*.notion.token_file",
    "integration.tenants.*.notion.base_url",
    "integration.tenants.*.notion.version",
    "integration.tenants.*.slack",
    "integration.tenants.*.slack.bot_token",
    "integration.tenants.*.slack.bot_token_file",
    "integration.tenants.*.slack.webhook_url",
    "integration.tenants.*.slack.webhook_url_file",
    "integration.tenants.*.slack.base_url",
    "integration.tenants.*.slack.default_channel",
    "integration.tenants.*.clickup",
    "integration.tenants.*.clickup.token",
    "integration.tenants.*.clickup.token_file",
    "integration.tenants.*.clickup.base_url",
    "integration.tenants.*.webhook",
    "integration.tenants.*.webhook.signing_secret",
    "integration.tenants.*.webhook.signing_secret_file",
    "ai",
    "ai.default_provider",
    "ai.audio_allowed_addresses",
    "ai.providers",
    "ai.providers.*",
    "gateway",
    "gateway.auth",
    "gateway.auth.algorithm",
    "gateway.auth.secret",
    "gateway.auth.public_key_file",
    "gateway.auth.issuer",
    "gateway.auth.audience",
    "gateway.body_limit",
    "gateway.request_timeout",
    "gateway.max_wait",
    "gateway.mcp_wait",
    "gateway.webhook_secrets",
    "gateway.webhook_secrets.*",
    "gateway.rate_limits",
    "gateway.rate_limits.start",
    "gateway.rate_limits.control",
    "gateway.rate_limits.read",
    "gateway.rate_limits.definitions",
    "gateway.rate_limits.research",
    "gateway.rate_limits.refused",
    "gateway.event_streams_per_tenant",
    "gateway.event_streams",
];

/// `<section>.tenants.<id>…` as `<section>.tenants.*…`, for the sections with settings per
/// tenant (`integration`, `research`).
fn tenant_key_pattern(key: &str) -> String {
    for (section, free) in [
        ("integration", "tenants"),
        ("research", "tenants"),
        ("mcp", "servers"),
    ] {
        let prefix = format!("{section}.{free}.");
        if let Some(rest) = key.strip_prefix(&prefix) {
            return match rest.split_once('.') {
                Some((_, field)) => format!("{prefix}*.{field}"),
                None => format!("{prefix}*"),
            };
        }
    }
    key.to_owned()
}

fn unknown_keys(figment: &Figment) -> Vec<Problem> {
    let Ok(data) = figment.data() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for dict in data.values() {
        collect_unknown(figment, "", dict, &mut problems);
    }
    problems
}

fn collect_unknown(figment: &Figment, prefix: &str, dict: &Dict, problems: &mut Vec<Problem>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        // Provider names under `ai.providers` and tenant ids under `integration.tenants` and
        // `research.tenants` are free: match them as `*`.
        let pattern = tenant_key_pattern(&ai::key_pattern(&path));
        let known = || {
            KNOWN_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .chain(ai::provider_keys())
                .chain(research::KEYS.iter().map(|k| (*k).to_owned()))
                .chain(mcp::KEYS.iter().map(|k| (*k).to_owned()))
                .chain(ledger::KEYS.iter().map(|k| (*k).to_owned()))
        };
        if known().any(|k| k == pattern) {
            if let Value::Dict(_, inner) = value {
                collect_unknown(figment, &path, inner, problems);
            }
            continue;
        }
        let closest = known()
            .map(|k| (strsim::levenshtein(&k, &pattern), k))
            .min()
            .filter(|(distance, _)| *distance <= 2)
            .map(|(_, k)| k);
        // The environment is shared with scripts and tools that use the same prefix
        // (SWITCHYARD_CONFIG, SWITCHYARD_HOME…): only a near miss of a real key is an error
        // there. In a file or on the command line every unknown key is.
        if from_environment(figment, &path) && closest.is_none() {
            continue;
        }
        let hint = closest
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        problems.push(Problem {
            key: source_name(figment, &path),
            message: format!("unknown setting{hint}"),
        });
    }
}

fn from_environment(figment: &Figment, key: &str) -> bool {
    figment
        .find_value(key)
        .ok()
        .and_then(|v| figment.get_metadata(v.tag()))
        .is_some_and(|meta| meta.name == "environment")
}

/// How the user wrote `key`: the environment variable, flag, or file key it came from.
fn source_name(figment: &Figment, key: &str) -> String {
    let Ok(value) = figment.find_value(key) else {
        return key.to_owned();
    };
    match figment.get_metadata(value.tag()) {
        Some(meta) if meta.name == "default" || meta.name.contains("Serialized") => key.to_owned(),
        Some(meta) => match &meta.source {
            Some(figment::Source::File(path)) => format!("{key} in {}", path.display()),
            _ => {
                let keys: Vec<&str> = key.split('.').collect();
                meta.interpolate(&Profile::Default, &keys)
            }
        },
        None => key.to_owned(),
    }
}

fn field<T: DeserializeOwned>(
    figment: &Figment,
    key: &str,
    fallback: T,
    problems: &mut Vec<Problem>,
) -> T {
    match figment.extract_inner::<T>(key) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem {
                key: source_name(figment, key),
                message: e.kind.to_string(),
            });
            fallback
        }
    }
}

/// `gateway.rate_limits.<group>`.
fn rate(
    figment: &Figment,
    group: &str,
    fallback: RateLimit,
    problems: &mut Vec<Problem>,
) -> RateLimit {
    field(
        figment,
        &format!("gateway.rate_limits.{group}"),
        fallback,
        problems,
    )
}

/// [`duration`], or `fallback` when the value is bad: a bad value is reported once, and the
/// fallback keeps range checks from reporting it again.
fn duration_or(
    figment: &Figment,
    key: &str,
    fallback: Duration,
    problems: &mut Vec<Problem>,
) -> Duration {
    let before = problems.len();
    let value = duration(figment, key, problems);
    if problems.len() > before {
        fallback
    } else {
        value
    }
}

fn duration(figment: &Figment, key: &str, problems: &mut Vec<Problem>) -> Duration {
    #[derive(Deserialize)]
    struct D(#[serde(with = "humantime_serde")] Duration);
    match figment.extract_inner::<D>(key) {
        Ok(D(d)) => d,
        Err(e) => {
            problems.push(Problem {
                key: source_name(figment, key),
                message: format!(
                    "{}; expected a duration such as `30s`, `500ms` or `2m`",
                    e.kind
                ),
            });
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Sources::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(&Sources::default()).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
    }

    #[test]
    fn environment_overrides_defaults_and_nests_with_double_underscore() {
        let config = Config::load(&env(&[
            ("SWITCHYARD_NATS_URL", "nats://10.1.2.3:4333"),
            ("SWITCHYARD_WORKER__CONCURRENCY", "8"),
            ("SWITCHYARD_SHUTDOWN_GRACE", "5s"),
            ("DATABASE_URL", "postgres://app@db/app"),
            ("HOME", "/ignored"),
        ]))
        .expect("loads");
        assert_eq!(config.nats_url, "nats://10.1.2.3:4333");
        assert_eq!(config.worker.concurrency, 8);
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://app@db/app")
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("switchyard.toml");
        std::fs::write(
            &file,
            "nats_url = \"nats://from-file:1\"\nlog_level = \"debug\"\n[worker]\nconcurrency = 3\n",
        )
        .expect("write");
        let mut sources = env(&[("SWITCHYARD_NATS_URL", "nats://from-env:2")]);
        sources.file = Some(file);
        let sources = sources.with_override("worker.concurrency", "7");
        let config = Config::load(&sources).expect("loads");
        assert_eq!(config.nats_url, "nats://from-env:2");
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.worker.concurrency, 7);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_source_and_fix() {
        let err = Config::load(&env(&[
            ("SWITCHYARD_NATS_URL", "nats//x"),
            ("SWITCHYARD_HTTP_ADDR", "localhost"),
            ("SWITCHYARD_WORKER__CONCURRENCY", "many"),
            ("SWITCHYARD_SHUTDOWN_GRACE", "soon"),
            ("SWITCHYARD_NATS_URLL", "nats://a:1"),
            ("DATABASE_URL", "mysql://x"),
            // Scripts share the prefix; what is not a near miss of a setting is theirs.
            ("SWITCHYARD_HOME", "/srv/switchyard"),
            ("SWITCHYARD_CONFIG", "switchyard.toml"),
        ]))
        .expect_err("invalid");
        let Error::Config(problems) = err else {
            panic!("not a config error: {err}")
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(
            has("SWITCHYARD_NATS_URL: not a URL (\"nats//x\"); expected nats://host:port"),
            "{text:#?}"
        );
        assert!(has("SWITCHYARD_HTTP_ADDR:"), "{text:#?}");
        assert!(has("SWITCHYARD_WORKER__CONCURRENCY:"), "{text:#?}");
        assert!(
            has("SWITCHYARD_SHUTDOWN_GRACE:") && has("expected a duration"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_NATS_URLL: unknown setting; did you mean `nats_url`?"),
            "{text:#?}"
        );
        assert!(has("DATABASE_URL: expected postgres://"), "{text:#?}");
        assert_eq!(problems.len(), 6, "{text:#?}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_errors_even_when_far_from_any_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "colour = \"blue\"\n[worker]\nconcurrancy = 3\n").expect("write");
        let sources = Sources {
            file: Some(file),
            ..Sources::default()
        };
        let Err(Error::Config(problems)) = Config::load(&sources) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{text:#?}");
        assert!(
            text.iter()
                .any(|p| p.starts_with("colour in ") && p.ends_with("unknown setting")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("did you mean `worker.concurrency`?")),
            "{text:#?}"
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let sources = Sources {
            file: Some("/nonexistent/switchyard.toml".into()),
            ..Sources::default()
        };
        assert!(
            matches!(Config::load(&sources), Err(Error::Config(p)) if p[0].message.contains("does not exist"))
        );
    }

    #[test]
    fn bus_credentials_and_engine_limits_are_checked_and_secrets_redacted() {
        let problems = |pairs: &[(&str, &str)]| match Config::load(&env(pairs)) {
            Err(Error::Config(p)) => p.iter().map(ToString::to_string).collect::<Vec<_>>(),
            Ok(_) => Vec::new(),
            Err(e) => panic!("{e}"),
        };
        let two = problems(&[
            ("SWITCHYARD_NATS__CREDENTIALS", "/x.creds"),
            ("SWITCHYARD_NATS__TOKEN", "t"),
            ("SWITCHYARD_NATS__USER", "u"),
            ("SWITCHYARD_NATS__TLS_CERT", "/c.pem"),
        ]);
        assert!(
            two.iter()
                .any(|p| p.contains("give one way of authenticating")),
            "{two:?}"
        );
        assert!(
            two.iter()
                .any(|p| p.contains("nats.user and nats.password")),
            "{two:?}"
        );
        assert!(
            two.iter()
                .any(|p| p.contains("nats.tls_cert and nats.tls_key")),
            "{two:?}"
        );
        let limits = problems(&[
            ("SWITCHYARD_ORCHESTRATOR__MAX_DELIVERIES", "0"),
            (
                "SWITCHYARD_ORCHESTRATOR__TEMPLATE_LIMITS__VALUE_BYTES",
                "10",
            ),
            ("SWITCHYARD_INTEGRATION__TENANTS__ACME__CLICKUP__TOKNE", "x"),
        ]);
        assert!(
            limits.iter().any(|p| p.contains("MAX_DELIVERIES")),
            "{limits:?}"
        );
        assert!(
            limits.iter().any(|p| p.contains("VALUE_BYTES")),
            "{limits:?}"
        );
        assert!(limits.iter().any(|p| p.contains("TOKNE")), "{limits:?}");

        let config = Config::load(&env(&[
            ("SWITCHYARD_NATS__USER", "u"),
            ("SWITCHYARD_NATS__PASSWORD", "bus-password"),
            (
                "SWITCHYARD_INTEGRATION__TENANTS__ACME__CLICKUP__TOKEN",
                "pk_acme_secret",
            ),
        ]))
        .expect("loads");
        assert_eq!(
            config.integration.tenants["acme"]
                .clickup
                .token
                .as_ref()
                .map(Secret::expose),
            Some("pk_acme_secret")
        );
        let shown = config.redacted_toml();
        assert!(
            !shown.contains("bus-password") && !shown.contains("pk_acme_secret"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let config = Config {
            database_url: Some("postgres://app:hunter2@db:5432/app".into()),
            nats_url: "nats://u:pw@host:4222".into(),
            ..Config::default()
        };
        let shown = config.redacted_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains(":pw@"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:****@db:5432/app"), "{shown}");
    }

    #[test]
    fn the_gateway_secret_is_redacted_and_hidden_from_debug() {
        let key = "k".repeat(40);
        let config = Config::load(&env(&[("SWITCHYARD_GATEWAY__AUTH__SECRET", key.as_str())]))
            .expect("loads");
        assert_eq!(
            config.gateway.auth.secret.as_ref().map(Secret::expose),
            Some(key.as_str())
        );
        let shown = config.redacted_toml();
        assert!(!shown.contains(&key) && shown.contains("****"), "{shown}");
        assert!(!format!("{config:?}").contains(&key));
    }

    #[test]
    fn webhook_secrets_are_read_per_tenant_checked_and_redacted() {
        let key = "h".repeat(40);
        let config = Config::load(&env(&[(
            "SWITCHYARD_GATEWAY__WEBHOOK_SECRETS__ACME",
            key.as_str(),
        )]))
        .expect("loads");
        assert_eq!(
            config
                .gateway
                .webhook_secrets
                .get("acme")
                .map(Secret::expose),
            Some(key.as_str())
        );
        let shown = config.redacted_toml();
        assert!(!shown.contains(&key) && shown.contains("****"), "{shown}");
        let short = Config::load(&env(&[(
            "SWITCHYARD_GATEWAY__WEBHOOK_SECRETS__ACME",
            "short",
        )]))
        .expect_err("a short key is refused");
        assert!(
            short
                .to_string()
                .contains("WEBHOOK_SECRETS__ACME: too short"),
            "{short}"
        );
    }

    #[test]
    fn integration_settings_have_defaults_are_checked_and_secrets_redacted() {
        let i = Config::load(&Sources::default())
            .expect("defaults")
            .integration;
        assert_eq!(i.markdown.output_dir, PathBuf::from("./.switchyard/out"));
        assert_eq!(i.notion.base_url, "https://api.notion.com");
        assert_eq!(i.notion.version, "2022-06-28");
        assert_eq!(i.slack.base_url, "https://slack.com");
        assert_eq!(i.clickup.base_url, "https://api.clickup.com");
        assert_eq!(i.request_timeout, Duration::from_secs(30));
        assert!(!i.webhook.allow_private_addresses);
        assert!(i.notion.token.is_none() && i.webhook.signing_secret.is_none());

        let key = "w".repeat(40);
        let config = Config::load(&env(&[
            ("SWITCHYARD_INTEGRATION__NOTION__TOKEN", "ntn_notion_secret"),
            (
                "SWITCHYARD_INTEGRATION__SLACK__BOT_TOKEN",
                "xoxb-slack-secret",
            ),
            (
                "SWITCHYARD_INTEGRATION__SLACK__WEBHOOK_URL",
                "https://hooks.example/T1/B2/hooksecret",
            ),
            (
                "SWITCHYARD_INTEGRATION__CLICKUP__TOKEN_FILE",
                "/run/clickup",
            ),
            (
                "SWITCHYARD_INTEGRATION__WEBHOOK__SIGNING_SECRET",
                key.as_str(),
            ),
            (
                "SWITCHYARD_INTEGRATION__WEBHOOK__ALLOW_PRIVATE_ADDRESSES",
                "true",
            ),
            ("SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR", "/srv/docs"),
            (
                "SWITCHYARD_INTEGRATION__SLACK__BASE_URL",
                "http://127.0.0.1:9",
            ),
        ]))
        .expect("loads");
        let i = &config.integration;
        assert_eq!(
            i.notion.token.as_ref().map(Secret::expose),
            Some("ntn_notion_secret")
        );
        assert_eq!(i.clickup.token_file, Some(PathBuf::from("/run/clickup")));
        assert!(i.webhook.allow_private_addresses);
        assert_eq!(i.markdown.output_dir, PathBuf::from("/srv/docs"));
        assert_eq!(i.slack.base_url, "http://127.0.0.1:9");
        let shown = config.redacted_toml();
        let debug = format!("{config:?}");
        for secret in [
            "ntn_notion_secret",
            "xoxb-slack-secret",
            "hooksecret",
            key.as_str(),
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }

        let Err(Error::Config(problems)) = Config::load(&env(&[
            ("SWITCHYARD_INTEGRATION__WEBHOOK__SIGNING_SECRET", "short"),
            ("SWITCHYARD_INTEGRATION__NOTION__BASE_URL", "api.notion.com"),
            ("SWITCHYARD_INTEGRATION__NOTION__VERSION", " "),
            ("SWITCHYARD_INTEGRATION__CLICKUP__TOKEN", "pk_1"),
            (
                "SWITCHYARD_INTEGRATION__CLICKUP__TOKEN_FILE",
                "/run/clickup",
            ),
            ("SWITCHYARD_INTEGRATION__REQUEST_TIMEOUT", "soon"),
            ("SWITCHYARD_INTEGRATION__SLACK__BOT_TOKN", "x"),
        ])) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(
            has("SWITCHYARD_INTEGRATION__WEBHOOK__SIGNING_SECRET: too short"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_INTEGRATION__NOTION__BASE_URL: not an http(s) URL"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_INTEGRATION__NOTION__VERSION: must not be empty"),
            "{text:#?}"
        );
        assert!(
            has("set either integration.clickup.token or integration.clickup.token_file"),
            "{text:#?}"
        );
        assert!(has("SWITCHYARD_INTEGRATION__REQUEST_TIMEOUT:"), "{text:#?}");
        assert!(
            has("did you mean `integration.slack.bot_token`?"),
            "{text:#?}"
        );
        assert!(!text.iter().any(|p| p.contains("short\"")), "{text:#?}");
        assert_eq!(problems.len(), 6, "{text:#?}");
    }

    #[test]
    fn gateway_settings_have_defaults_and_are_checked() {
        let g = Config::load(&Sources::default()).expect("defaults").gateway;
        assert_eq!(g.auth.algorithm, JwtAlgorithm::Hs256);
        assert_eq!(g.auth.issuer, "switchyard");
        assert_eq!(g.auth.audience, "switchyard-api");
        assert_eq!(g.body_limit, 1 << 20);
        assert_eq!(g.request_timeout, Duration::from_secs(30));
        assert_eq!(g.max_wait, Duration::from_secs(60));

        let config = Config::load(&env(&[
            ("SWITCHYARD_GATEWAY__BODY_LIMIT", "4096"),
            ("SWITCHYARD_GATEWAY__MAX_WAIT", "5s"),
            ("SWITCHYARD_GATEWAY__AUTH__ALGORITHM", "rs256"),
            ("SWITCHYARD_GATEWAY__AUTH__PUBLIC_KEY_FILE", "/etc/jwt.pem"),
            ("SWITCHYARD_GATEWAY__RATE_LIMITS__START", "off"),
            ("SWITCHYARD_GATEWAY__RATE_LIMITS__READ", "30/m"),
        ]))
        .expect("loads");
        assert_eq!(config.gateway.rate_limits.start, RateLimit::Off);
        assert_eq!(
            config.gateway.rate_limits.read,
            RateLimit::per(30, RatePeriod::Minute)
        );
        assert_eq!(g.rate_limits.research, RateLimit::per(10, RatePeriod::Hour));
        assert_eq!(
            g.rate_limits.refused,
            RateLimit::per(30, RatePeriod::Minute)
        );
        assert_eq!((g.event_streams_per_tenant, g.event_streams), (20, 1000));
        assert_eq!(config.gateway.body_limit, 4096);
        assert_eq!(config.gateway.max_wait, Duration::from_secs(5));
        assert_eq!(config.gateway.auth.algorithm, JwtAlgorithm::Rs256);

        let Err(Error::Config(problems)) = Config::load(&env(&[
            ("SWITCHYARD_GATEWAY__AUTH__SECRET", "short"),
            ("SWITCHYARD_GATEWAY__AUTH__ALGORITHM", "rs256"),
            ("SWITCHYARD_GATEWAY__BODY_LIMIT", "0"),
            ("SWITCHYARD_GATEWAY__REQUEST_TIMEOUT", "soon"),
            ("SWITCHYARD_GATEWAY__BODY_LIMT", "1"),
            ("SWITCHYARD_GATEWAY__RATE_LIMITS__CONTROL", "0/s"),
            ("SWITCHYARD_GATEWAY__EVENT_STREAMS", "10"),
            ("SWITCHYARD_GATEWAY__EVENT_STREAMS_PER_TENANT", "11"),
        ])) else {
            panic!("accepted")
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|p| p.contains(needle));
        assert!(
            has("SWITCHYARD_GATEWAY__AUTH__SECRET: too short"),
            "{text:#?}"
        );
        assert!(has("gateway.auth.public_key_file: required"), "{text:#?}");
        assert!(
            has("11 is out of range; expected 1 to gateway.event_streams (10)"),
            "{text:#?}"
        );
        assert!(
            has("SWITCHYARD_GATEWAY__BODY_LIMIT: 0 is out of range"),
            "{text:#?}"
        );
        assert!(has("SWITCHYARD_GATEWAY__REQUEST_TIMEOUT:"), "{text:#?}");
        assert!(has("did you mean `gateway.body_limit`?"), "{text:#?}");
        assert!(
            has("SWITCHYARD_GATEWAY__RATE_LIMITS__CONTROL: \"0/s\": expected"),
            "{text:#?}"
        );
        assert!(!text.iter().any(|p| p.contains("short\"")), "{text:#?}");
    }
}
