//! The `[mcp]` section: the MCP servers whose tools the `mcp` worker kind calls as workflow
//! steps, and how it calls them (timeouts, retries, the circuit breaker, health checks).
//!
//! ```toml
//! [mcp]
//! call_timeout = "60s"           # one tools/call
//! retries = 2                    # more tries of a call that failed in transport, per attempt
//! breaker_failures = 3           # failures in a row that open a server's breaker
//! breaker_cooldown = "30s"       # how long it stays open before one trial call
//! health_interval = "15s"        # a ping to each server
//!
//! [mcp.servers.docs]             # Streamable HTTP; the URLs are one server, tried in order
//! urls = ["http://docs-a:8000/mcp", "http://docs-b:8000/mcp"]
//! bearer_token_file = "/run/secrets/docs-mcp"
//! tenants = ["acme"]             # who may call it; absent or empty: every tenant
//!
//! [mcp.servers.files]            # stdio: a child process per replica
//! command = ["python3", "files_server.py"]
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use figment::Figment;
use serde::{Deserialize, Serialize};

use super::{Problem, Secret, duration_or, field};

/// Settings of the `mcp` worker kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// The servers by name; a name is one subject token (letters, digits, `_`, `-`) and
    /// becomes part of the operations of its tools, `mcp.<server>.<tool>`. Default: none.
    pub servers: BTreeMap<String, McpServer>,
    /// How long one `tools/call` may take. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long connecting and the protocol handshake may take. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// More tries of a call that failed in transport (connection refused or lost, a 5xx, a
    /// timeout), with a backoff from 100 ms, within one attempt of the job; each moves on to
    /// the server's next URL. Default 2.
    pub retries: u32,
    /// Transport failures in a row that open a server's circuit breaker: while it is open,
    /// calls to the server fail at once. Default 3.
    pub breaker_failures: u32,
    /// How long a breaker stays open before one trial call may close it. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// How often each server is pinged (an answer closes its breaker; no answer counts as a
    /// failure). Default `15s`.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

/// One MCP server: Streamable HTTP at one or more URLs, or a command spoken to over stdio.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServer {
    /// The Streamable HTTP endpoints of this one logical server, tried in order: a call that
    /// fails in transport moves to the next.
    pub urls: Vec<String>,
    /// A command and its arguments, started as a child process spoken to over stdio,
    /// instead of `urls`.
    pub command: Vec<String>,
    /// A bearer token sent with every HTTP request to the server.
    pub bearer_token: Option<Secret>,
    /// A file holding it instead.
    pub bearer_token_file: Option<PathBuf>,
    /// The tenants whose workflows may call the server. Empty: every tenant.
    pub tenants: Vec<String>,
}

impl McpServer {
    /// Whether `tenant`'s workflows may call this server.
    pub fn serves(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            servers: BTreeMap::new(),
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retries: 2,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(30),
            health_interval: Duration::from_secs(15),
        }
    }
}

/// The section's keys, for the unknown-key check (`*` is a server name).
pub(super) const KEYS: &[&str] = &[
    "mcp",
    "mcp.servers",
    "mcp.servers.*",
    "mcp.servers.*.urls",
    "mcp.servers.*.command",
    "mcp.servers.*.bearer_token",
    "mcp.servers.*.bearer_token_file",
    "mcp.servers.*.tenants",
    "mcp.call_timeout",
    "mcp.connect_timeout",
    "mcp.retries",
    "mcp.breaker_failures",
    "mcp.breaker_cooldown",
    "mcp.health_interval",
];

impl McpSettings {
    pub(super) fn load(figment: &Figment, problems: &mut Vec<Problem>) -> Self {
        let d = McpSettings::default();
        let call_timeout = duration_or(figment, "mcp.call_timeout", d.call_timeout, problems);
        let connect_timeout =
            duration_or(figment, "mcp.connect_timeout", d.connect_timeout, problems);
        let breaker_cooldown = duration_or(
            figment,
            "mcp.breaker_cooldown",
            d.breaker_cooldown,
            problems,
        );
        let health_interval =
            duration_or(figment, "mcp.health_interval", d.health_interval, problems);
        McpSettings {
            servers: field(figment, "mcp.servers", BTreeMap::new(), problems),
            call_timeout,
            connect_timeout,
            retries: field(figment, "mcp.retries", d.retries, problems),
            breaker_failures: field(
                figment,
                "mcp.breaker_failures",
                d.breaker_failures,
                problems,
            ),
            breaker_cooldown,
            health_interval,
        }
    }

    pub(super) fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for (name, server) in &self.servers {
            let at = |k: &str| format!("mcp.servers.{name}.{k}");
            let token_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !token_ok {
                bad(
                    &format!("mcp.servers.{name}"),
                    "a server name must be letters, digits, '_' and '-'".into(),
                );
            }
            match (server.urls.is_empty(), server.command.is_empty()) {
                (true, true) => bad(&at("urls"), "give `urls` or `command`".into()),
                (false, false) => bad(&at("command"), "give `urls` or `command`, not both".into()),
                _ => {}
            }
            for url in &server.urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bad(
                        &at("urls"),
                        format!("{url:?} is not an http:// or https:// URL"),
                    );
                }
            }
            if server.bearer_token.is_some() && server.bearer_token_file.is_some() {
                bad(
                    &at("bearer_token_file"),
                    "give `bearer_token` or `bearer_token_file`, not both".into(),
                );
            }
        }
        if self.call_timeout < Duration::from_millis(100) {
            bad("mcp.call_timeout", "must be at least 100ms".into());
        }
        if self.connect_timeout < Duration::from_millis(100) {
            bad("mcp.connect_timeout", "must be at least 100ms".into());
        }
        if self.retries > 10 {
            bad(
                "mcp.retries",
                format!("{} is out of range; expected 0 to 10", self.retries),
            );
        }
        if self.breaker_failures == 0 {
            bad("mcp.breaker_failures", "must be 1 or more".into());
        }
        if self.health_interval < Duration::from_millis(100) {
            bad("mcp.health_interval", "must be at least 100ms".into());
        }
    }
}
