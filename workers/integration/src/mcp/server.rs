//! One configured MCP server: its endpoints (the URLs of one logical server, or a command
//! spoken to over stdio), the one session this replica keeps with it and shares between
//! concurrent calls, its circuit breaker, and failover to its next URL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use prometheus::IntGaugeVec;
use rmcp::{
    ClientHandler, RoleClient, ServiceError, ServiceExt as _,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        JsonObject, ProtocolVersion, Tool,
    },
    service::{ClientCacheConfig, NotificationContext, RunningService},
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        common::client_side_sse::ExponentialBackoff,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use switchyard_runtime::{
    breaker::{Breaker, Permit},
    config::{McpServer, McpSettings},
};
use tokio::sync::{Mutex, mpsc};
use tracing::{info, warn};

use super::http::McpHttp;
use crate::Error;

/// Where one logical server is reached.
#[derive(Debug, Clone)]
enum Endpoint {
    Http(String),
    Stdio(Vec<String>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Http(url) => f.write_str(url),
            Endpoint::Stdio(command) => write!(f, "stdio `{}`", command.join(" ")),
        }
    }
}

/// Hears what a server announces: a changed tool list is re-read.
#[derive(Debug, Clone)]
struct Listener {
    server: Arc<str>,
    changed: mpsc::UnboundedSender<Arc<str>>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changed.send(self.server.clone());
    }

    fn get_info(&self) -> ClientConfig {
        // The newest revision with a handshake: a server answers with the one it speaks, down
        // to 2024-11-05, and the session keeps to it.
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("switchyard", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

type Session = RunningService<RoleClient, Listener>;

/// The session in use and the endpoint it was opened on.
#[derive(Clone)]
struct Connection {
    session: Arc<Session>,
    endpoint: usize,
}

/// One MCP server of the configuration.
pub(crate) struct Server {
    pub(crate) name: Arc<str>,
    pub(crate) config: McpServer,
    endpoints: Vec<Endpoint>,
    token: Option<String>,
    http: McpHttp,
    settings: Arc<McpSettings>,
    breaker: Breaker,
    breaker_gauge: IntGaugeVec,
    /// The open session; locked while one is being opened, so concurrent calls share it.
    connection: Mutex<Option<Connection>>,
    /// The endpoint the next session is opened on.
    next: AtomicUsize,
    changed: mpsc::UnboundedSender<Arc<str>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Why one try did not get an answer: a transport fault, worth the next endpoint.
struct Fault(String);

impl Server {
    pub(crate) fn new(
        name: &str,
        config: McpServer,
        token: Option<String>,
        http: McpHttp,
        settings: Arc<McpSettings>,
        breaker_gauge: IntGaugeVec,
        changed: mpsc::UnboundedSender<Arc<str>>,
    ) -> Self {
        let endpoints = if config.command.is_empty() {
            config.urls.iter().cloned().map(Endpoint::Http).collect()
        } else {
            vec![Endpoint::Stdio(config.command.clone())]
        };
        breaker_gauge.with_label_values(&[name]).set(0);
        Server {
            name: Arc::from(name),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            config,
            endpoints,
            token,
            http,
            settings,
            breaker_gauge,
            connection: Mutex::new(None),
            next: AtomicUsize::new(0),
            changed,
        }
    }

    /// Calls `tool` with `arguments`.
    pub(crate) async fn call_tool(
        &self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<CallToolResult, Error> {
        let timeout = self.settings.call_timeout;
        self.with_session(|session| {
            let params =
                CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone());
            async move { answer(timeout, session.call_tool(params)).await }
        })
        .await
    }

    /// Every tool the server lists, and the protocol revision its session speaks.
    pub(crate) async fn list_tools(&self) -> Result<(Vec<Tool>, String), Error> {
        let timeout = self.settings.call_timeout;
        self.with_session(|session| async move {
            let tools = answer(timeout, session.list_all_tools()).await?;
            let version = session
                .peer_info()
                .map(|info| info.protocol_version.to_string())
                .unwrap_or_default();
            Ok((tools, version))
        })
        .await
    }

    /// Runs `request` on the session, through the breaker: a transport fault closes the
    /// session and tries again (on the next endpoint) up to `mcp.retries` more times, with a
    /// backoff from 100 ms; a JSON-RPC error is the server's answer.
    async fn with_session<T, F, Fut>(&self, request: F) -> Result<T, Error>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, Answer>>,
    {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .build();
        let mut last = String::from("no try was made");
        for try_number in 0..=self.settings.retries {
            let permit = self.permit(&last)?;
            let outcome = match self.session().await {
                Ok(connection) => {
                    let outcome = request(connection.session.clone()).await;
                    if matches!(outcome, Err(Answer::Fault(_))) {
                        self.forget(&connection).await;
                    }
                    outcome
                }
                Err(Fault(why)) => Err(Answer::Fault(why)),
            };
            match outcome {
                Ok(value) => {
                    self.record(permit, false);
                    return Ok(value);
                }
                Err(Answer::Refused { code, message }) => {
                    self.record(permit, false);
                    return Err(Error::McpRefused {
                        server: self.name.to_string(),
                        code,
                        message,
                    });
                }
                Err(Answer::Fault(why)) => {
                    self.record(permit, true);
                    warn!(server = %self.name, try_number, error = %why, "MCP call failed in transport");
                    last = why;
                }
            }
            if try_number < self.settings.retries
                && let Some(delay) = delays.next()
            {
                tokio::time::sleep(delay).await;
            }
        }
        Err(Error::Unavailable {
            system: crate::metrics::System::Mcp,
            message: format!("server {}: {last}", self.name),
            maybe_applied: true,
        })
    }

    fn permit(&self, last: &str) -> Result<Permit, Error> {
        let permit = self
            .breaker
            .acquire(Instant::now())
            .map_err(|retry_in| Error::CircuitOpen {
                server: self.name.to_string(),
                retry_in,
                last: last.to_owned(),
            });
        self.show_breaker();
        permit
    }

    fn record(&self, permit: Permit, fault: bool) {
        self.breaker.record(permit, fault, Instant::now());
        self.show_breaker();
    }

    fn show_breaker(&self) {
        self.breaker_gauge
            .with_label_values(&[&*self.name])
            .set(self.breaker.state().as_gauge());
    }

    /// The open session, or one opened now on the current endpoint.
    async fn session(&self) -> Result<Connection, Fault> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref()
            && !connection.session.is_transport_closed()
        {
            return Ok(connection.clone());
        }
        *held = None;
        let at = self.next.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        let endpoint = self
            .endpoints
            .get(at)
            .ok_or_else(|| Fault("no endpoint is configured".into()))?;
        match tokio::time::timeout(self.settings.connect_timeout, self.open(endpoint)).await {
            Ok(Ok(session)) => {
                let version = session
                    .peer_info()
                    .map(|i| i.protocol_version.to_string())
                    .unwrap_or_default();
                info!(server = %self.name, %endpoint, protocol = %version, "MCP session opened");
                let connection = Connection {
                    session: Arc::new(session),
                    endpoint: at,
                };
                *held = Some(connection.clone());
                Ok(connection)
            }
            Ok(Err(why)) => {
                self.next.store(at + 1, Ordering::Relaxed);
                Err(Fault(format!("{endpoint}: {why}")))
            }
            Err(_) => {
                self.next.store(at + 1, Ordering::Relaxed);
                Err(Fault(format!(
                    "{endpoint}: no session within {:?}",
                    self.settings.connect_timeout
                )))
            }
        }
    }

    /// Drops a session that failed in transport; the next one is opened on the next endpoint.
    async fn forget(&self, failed: &Connection) {
        let mut held = self.connection.lock().await;
        if held
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.session, &failed.session))
        {
            *held = None;
            self.next.store(failed.endpoint + 1, Ordering::Relaxed);
        }
    }

    async fn open(&self, endpoint: &Endpoint) -> Result<Session, String> {
        let listener = Listener {
            server: self.name.clone(),
            changed: self.changed.clone(),
        };
        let session = match endpoint {
            Endpoint::Http(url) => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(token) = &self.token {
                    config = config.auth_header(token.clone());
                }
                // The server's stream reconnects a few times, not forever: a dead server is
                // the breaker's and the failover's business.
                let mut retry = ExponentialBackoff::default();
                retry.max_times = Some(3);
                config.retry_config = Arc::new(retry);
                let transport =
                    StreamableHttpClientTransport::with_client(self.http.clone(), config);
                listener.serve(transport).await.map_err(|e| e.to_string())?
            }
            Endpoint::Stdio(command) => {
                let (program, args) = command
                    .split_first()
                    .ok_or_else(|| "the command is empty".to_owned())?;
                let mut child = tokio::process::Command::new(program);
                child.args(args).kill_on_drop(true);
                let transport = TokioChildProcess::new(child).map_err(|e| e.to_string())?;
                listener.serve(transport).await.map_err(|e| e.to_string())?
            }
        };
        // Every answer is read from the server: a cached tool list must not hide an outage.
        session
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        Ok(session)
    }
}

/// What one request got, short of a value.
pub(crate) enum Answer {
    /// The server answered with a JSON-RPC error.
    Refused { code: i32, message: String },
    /// No answer: the transport failed or the server took too long.
    Fault(String),
}

async fn answer<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, Answer> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(ServiceError::McpError(e))) => Err(Answer::Refused {
            code: e.code.0,
            message: e.message.to_string(),
        }),
        Ok(Err(e)) => Err(Answer::Fault(e.to_string())),
        Err(_) => Err(Answer::Fault(format!("no answer within {timeout:?}"))),
    }
}
