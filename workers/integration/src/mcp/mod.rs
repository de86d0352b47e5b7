//! The `mcp` worker kind: tools of MCP servers as workflow steps.
//!
//! - `mcp.call {server, tool, arguments}` calls any tool of a configured server and answers
//!   with its content (`text`, `content`, `structured`);
//! - `mcp.list_tools {server}` lists a server's tools with their schemas;
//! - `mcp.<server>.<tool>` is each tool a server lists, declared to the engine with the tool's
//!   input schema (and its output schema, or the content shape), so a definition that uses it
//!   is type-checked at registration. The tools are listed at start, when a server announces
//!   `notifications/tools/list_changed`, and at every health check; a change is declared
//!   again.
//!
//! Every call goes through the server's circuit breaker, retries transport faults on the
//! server's next URL, and is recorded by job id in `integration.effects` like any external
//! effect: a redelivered job whose call is recorded gets the recorded result, and the tool is
//! not called again. A tool's `isError` answer is the step's (retryable) failure with the
//! tool's text.

pub(crate) mod http;
mod schema;
mod server;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use rmcp::model::{CallToolResult, JsonObject, Tool};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use switchyard_catalog::{
    Schema, Type,
    declare::{Declaration, DeclaredOperation, PROTOCOL},
    is_name_part,
};
use switchyard_proto::Job;
use switchyard_runtime::{
    Config, Handler, JobContext, JobFailure, JobInput as _, OperationInfo, config::McpSettings,
    database, process,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Error,
    effects::{EffectKey, Effects},
    metrics::System,
};
use server::Server;

/// The worker kind.
pub const KIND: &str = "mcp";

/// The configuration sections this kind reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 3] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Mcp, Section::Database]
};

/// The operations every `mcp` replica serves besides its servers' tools.
pub mod op {
    pub const CALL: &str = "mcp.call";
    pub const LIST_TOOLS: &str = "mcp.list_tools";
}

/// The metrics label of every `mcp.<server>.<tool>` operation (a bounded set).
const TOOL_LABEL: &str = "mcp.tool";

/// The `mcp` kind's handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct McpWorker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    servers: BTreeMap<String, Arc<Server>>,
    effects: Effects,
    metrics: McpMetrics,
    /// What each server listed last.
    tools: RwLock<BTreeMap<String, Vec<Tool>>>,
    /// Counts the changes of `tools`, so the replica declares again.
    changes: watch::Sender<u64>,
}

/// `cross_system_calls_total{system="mcp", server, outcome}`,
/// `cross_system_call_duration_seconds{system="mcp", server}`,
/// `mcp_circuit_breaker_state{server}` and `mcp_tools{server}`.
#[derive(Debug, Clone)]
struct McpMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
    breaker: IntGaugeVec,
    tools: IntGaugeVec,
}

impl McpMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = McpMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "cross_system_calls_total",
                    "Calls to external systems (MCP servers' tools), by outcome",
                ),
                &["system", "server", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cross_system_call_duration_seconds",
                    "Time one call to an external system (an MCP tool) took, answer or error",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["system", "server"],
            )?,
            breaker: IntGaugeVec::new(
                Opts::new(
                    "mcp_circuit_breaker_state",
                    "Each MCP server's circuit breaker: 0 closed, 1 open, 2 half-open",
                ),
                &["server"],
            )?,
            tools: IntGaugeVec::new(
                Opts::new("mcp_tools", "The tools each MCP server listed last"),
                &["server"],
            )?,
        };
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.breaker.clone()))?;
        registry.register(Box::new(metrics.tools.clone()))?;
        Ok(metrics)
    }

    fn observe(&self, server: &str, outcome: &str, seconds: f64) {
        let system = System::Mcp.as_str();
        self.calls
            .with_label_values(&[system, server, outcome])
            .inc();
        self.duration
            .with_label_values(&[system, server])
            .observe(seconds);
    }
}

/// `mcp.call`'s input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallInput {
    server: String,
    tool: String,
    #[serde(default)]
    arguments: JsonObject,
}

/// `mcp.list_tools`'s input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    server: String,
}

impl McpWorker {
    /// Builds the handler over the configured servers; `pool` must be migrated
    /// ([`crate::effects::migrate`]). Returns, beside it, where servers' announcements of
    /// changed tool lists arrive, for [`McpWorker::follow`].
    pub fn build(
        settings: &McpSettings,
        pool: PgPool,
        registry: &Registry,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Arc<str>>), Error> {
        let metrics = McpMetrics::register(registry)?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(Error::Client)?;
        let http = http::McpHttp(client);
        let shared = Arc::new(settings.clone());
        let (changed, announcements) = mpsc::unbounded_channel();
        let mut servers = BTreeMap::new();
        for (name, config) in &settings.servers {
            let token = crate::secret(
                "mcp.servers.*.bearer_token_file",
                &config.bearer_token,
                &config.bearer_token_file,
            )?
            .map(|s| s.expose().to_owned());
            servers.insert(
                name.clone(),
                Arc::new(Server::new(
                    name,
                    config.clone(),
                    token,
                    http.clone(),
                    shared.clone(),
                    metrics.breaker.clone(),
                    changed.clone(),
                )),
            );
        }
        let worker = McpWorker {
            inner: Arc::new(Inner {
                servers,
                // Like the integration worker's: a claim outlives one call with margin.
                effects: Effects::new(pool, settings.call_timeout * 2 + Duration::from_secs(30)),
                metrics,
                tools: RwLock::default(),
                changes: watch::Sender::new(0),
            }),
        };
        Ok((worker, announcements))
    }

    /// Lists every server's tools once (a server that does not answer within the connect
    /// timeout is listed later, by the health checks).
    pub async fn discover(&self) {
        let refreshes = self
            .inner
            .servers
            .values()
            .map(|server| self.inner.refresh(server));
        futures::future::join_all(refreshes).await;
    }

    /// Re-lists a server's tools when it announces a change, and every server's at each
    /// health check (`mcp.health_interval`), until `shutdown`.
    pub async fn follow(
        self,
        mut announcements: mpsc::UnboundedReceiver<Arc<str>>,
        health_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(name) = announcements.recv() => {
                    if let Some(server) = self.inner.servers.get(&*name) {
                        info!(server = %name, "the MCP server's tools changed");
                        self.inner.refresh(server).await;
                    }
                }
                _ = tick.tick() => self.discover().await,
            }
        }
    }

    /// Runs one job as the worker loop would, effect record included, outside the loop (for
    /// tests and tools).
    pub async fn run_job(&self, ctx: &JobContext, job: &Job) -> Result<Value, Error> {
        self.inner.handle(ctx, job).await
    }
}

impl Inner {
    /// Lists `server`'s tools; a change from what it listed before is declared again.
    async fn refresh(&self, server: &Server) {
        match server.list_tools().await {
            Ok((tools, _)) => {
                self.metrics
                    .tools
                    .with_label_values(&[&*server.name])
                    .set(i64::try_from(tools.len()).unwrap_or(i64::MAX));
                let mut known = self.tools.write().unwrap_or_else(|p| p.into_inner());
                if known.get(&*server.name) != Some(&tools) {
                    known.insert(server.name.to_string(), tools);
                    drop(known);
                    self.changes.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            Err(e) => {
                warn!(server = %server.name, error = %e, "cannot list the MCP server's tools")
            }
        }
    }

    /// `name` when it serves `tenant`; otherwise not found, whether it exists or not.
    fn server(&self, name: &str, tenant: &str) -> Result<&Arc<Server>, Error> {
        self.servers
            .get(name)
            .filter(|s| s.config.serves(tenant))
            .ok_or_else(|| Error::NotFound {
                what: format!("MCP server {name:?}"),
            })
    }

    /// The tool `tool` of `server` as last listed.
    fn tool(&self, server: &str, tool: &str) -> Option<Tool> {
        let known = self.tools.read().unwrap_or_else(|p| p.into_inner());
        known.get(server)?.iter().find(|t| t.name == tool).cloned()
    }

    async fn handle(&self, ctx: &JobContext, job: &Job) -> Result<Value, Error> {
        match job.operation.as_str() {
            op::CALL => {
                let input: CallInput = job.input()?;
                let server = self.server(&input.server, &job.tenant)?;
                self.call(ctx, job, server, &input.tool, input.arguments, false)
                    .await
            }
            op::LIST_TOOLS => {
                let input: ListInput = job.input()?;
                let server = self.server(&input.server, &job.tenant)?;
                let (tools, protocol) = server.list_tools().await?;
                let listed: Vec<Value> = tools
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "description": t.description,
                            "input_schema": Value::Object((*t.input_schema).clone()),
                            "output_schema": t.output_schema.as_ref().map(|s| Value::Object((**s).clone())),
                            "operation": declared_name(&server.name, &t.name),
                        })
                    })
                    .collect();
                Ok(json!({
                    "server": input.server,
                    "protocol_version": protocol,
                    "tools": listed,
                }))
            }
            operation => {
                let Some((server_name, tool)) = tool_operation(operation) else {
                    return Err(Error::NotFound {
                        what: format!("operation {operation:?}"),
                    });
                };
                let server = self.server(server_name, &job.tenant)?;
                let declared = self
                    .tool(server_name, tool)
                    .ok_or_else(|| Error::NotFound {
                        what: format!("tool {tool:?} of MCP server {server_name:?}"),
                    })?;
                let arguments: JsonObject = job.input()?;
                self.call(
                    ctx,
                    job,
                    server,
                    tool,
                    arguments,
                    declared.output_schema.is_some(),
                )
                .await
            }
        }
    }

    /// Calls `tool` once per job as far as the effect record can tell, metered.
    async fn call(
        &self,
        ctx: &JobContext,
        job: &Job,
        server: &Server,
        tool: &str,
        arguments: JsonObject,
        structured: bool,
    ) -> Result<Value, Error> {
        let key = EffectKey::of(job, System::Mcp, &ctx.worker_id);
        self.effects
            .perform(&key, ctx.attempt, |_| async {
                let started = Instant::now();
                let answer = server.call_tool(tool, arguments).await;
                let seconds = started.elapsed().as_secs_f64();
                let outcome =
                    answer.and_then(|result| output(&server.name, tool, result, structured));
                let label = match &outcome {
                    Ok(_) => "ok",
                    Err(e) => e.outcome(),
                };
                self.metrics.observe(&server.name, label, seconds);
                if outcome.is_ok() {
                    meter(ctx, &server.name, tool, seconds).await;
                }
                outcome
            })
            .await
    }
}

/// The usage of one call: `mcp_calls` (1 call) and `mcp_call_seconds`, by server and tool.
async fn meter(ctx: &JobContext, server: &str, tool: &str, seconds: f64) {
    let attributes = HashMap::from([
        ("server".to_owned(), server.to_owned()),
        ("tool".to_owned(), tool.to_owned()),
    ]);
    for (meter, quantity, unit) in [
        ("mcp_calls", 1.0, "call"),
        ("mcp_call_seconds", seconds, "second"),
    ] {
        if let Err(e) = ctx
            .usage_with(meter, quantity, unit, attributes.clone())
            .await
        {
            warn!(error = %e, meter, "cannot publish a usage event");
        }
    }
}

/// A tool's answer as the step's output: its structured content for a tool that declares an
/// output schema; otherwise the content shape. `isError` is the step's failure.
fn output(
    server: &str,
    tool: &str,
    result: CallToolResult,
    structured: bool,
) -> Result<Value, Error> {
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    if result.is_error == Some(true) {
        return Err(Error::ToolFailed {
            server: server.to_owned(),
            tool: tool.to_owned(),
            message: if text.is_empty() {
                "the tool reported an error without text".to_owned()
            } else {
                text
            },
        });
    }
    if structured {
        return match result.structured_content {
            Some(value @ Value::Object(_)) => Ok(value),
            _ => Err(Error::BadResponse {
                system: System::Mcp,
                message: format!(
                    "tool {tool} of server {server} declares an output schema but answered without structured content"
                ),
            }),
        };
    }
    Ok(json!({
        "text": text,
        "content": serde_json::to_value(&result.content).unwrap_or(Value::Null),
        "structured": result.structured_content,
    }))
}

/// `mcp.<server>.<tool>` as its server and tool.
fn tool_operation(operation: &str) -> Option<(&str, &str)> {
    operation
        .strip_prefix("mcp.")
        .and_then(|rest| rest.split_once('.'))
}

/// The operation a tool is declared as; `None` when its name cannot be one subject token.
fn declared_name(server: &str, tool: &str) -> Option<String> {
    is_name_part(tool).then(|| format!("{KIND}.{server}.{tool}"))
}

/// The output of `mcp.call` and of a tool without an output schema.
fn content_shape() -> Schema {
    let mut schema = Schema::object(
        [
            (
                "text",
                described(Schema::of(Type::String), "The tool's text content, joined"),
            ),
            (
                "content",
                described(
                    Schema::array(Schema::of(Type::Object)),
                    "The tool's content blocks as MCP gives them",
                ),
            ),
            (
                "structured",
                described(Schema::default(), "The tool's structured content, if any"),
            ),
        ],
        &["text", "content"],
    );
    schema.description = "What the MCP tool answered".into();
    schema
}

fn described(mut schema: Schema, description: &str) -> Schema {
    schema.description = description.to_owned();
    schema
}

fn string(description: &str) -> Schema {
    let mut schema = described(Schema::of(Type::String), description);
    schema.min_length = Some(1);
    schema
}

impl Handler for McpWorker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn operations(&self) -> Vec<OperationInfo> {
        vec![
            OperationInfo {
                name: op::CALL,
                description: "Calls a tool of a configured MCP server",
            },
            OperationInfo {
                name: op::LIST_TOOLS,
                description: "Lists the tools of a configured MCP server",
            },
        ]
    }

    fn declaration(&self) -> Declaration {
        let mut operations = vec![
            DeclaredOperation {
                name: op::CALL.to_owned(),
                version: 1,
                description: "Calls a tool of a configured MCP server".to_owned(),
                input: Schema::object(
                    [
                        ("server", string("The server's name in the configuration")),
                        ("tool", string("The tool's name")),
                        (
                            "arguments",
                            described(Schema::of(Type::Object), "The tool's arguments"),
                        ),
                    ],
                    &["server", "tool"],
                ),
                output: content_shape(),
                capabilities: Vec::new(),
            },
            DeclaredOperation {
                name: op::LIST_TOOLS.to_owned(),
                version: 1,
                description: "Lists the tools of a configured MCP server".to_owned(),
                input: Schema::object(
                    [("server", string("The server's name in the configuration"))],
                    &["server"],
                ),
                output: Schema::object(
                    [
                        ("server", Schema::of(Type::String)),
                        ("protocol_version", Schema::of(Type::String)),
                        ("tools", Schema::array(Schema::of(Type::Object))),
                    ],
                    &["server", "tools"],
                ),
                capabilities: Vec::new(),
            },
        ];
        let known = self.inner.tools.read().unwrap_or_else(|p| p.into_inner());
        for (server, tools) in known.iter() {
            for tool in tools {
                let Some(name) = declared_name(server, &tool.name) else {
                    warn!(server, tool = %tool.name, "a tool whose name is not one subject token is not declared; call it with mcp.call");
                    continue;
                };
                operations.push(DeclaredOperation {
                    name,
                    version: 1,
                    description: tool
                        .description
                        .as_deref()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                    input: schema::from_json_schema(&Value::Object((*tool.input_schema).clone())),
                    output: tool.output_schema.as_ref().map_or_else(content_shape, |s| {
                        schema::from_json_schema(&Value::Object((**s).clone()))
                    }),
                    capabilities: Vec::new(),
                });
            }
        }
        Declaration {
            protocol: PROTOCOL,
            kind: KIND.to_owned(),
            operations,
        }
    }

    fn redeclarations(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    fn discovered(&self, operation: &str) -> Option<&'static str> {
        tool_operation(operation)
            .filter(|(server, _)| self.inner.servers.contains_key(*server))
            .map(|_| TOOL_LABEL)
    }

    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        self.inner.handle(&ctx, job).await.map_err(|e| {
            warn!(job_id = %job.job_id, operation = %job.operation, error = %e, "MCP call failed");
            e.failure()
        })
    }

    async fn recorded(&self, job: &Job) -> Option<Value> {
        self.inner.effects.recorded_for(job).await
    }
}

/// Runs one replica of the `mcp` worker kind until `shutdown` is cancelled: connects to
/// Postgres (`database_url`, required: calls are recorded) and migrates, lists the servers'
/// tools, then consumes `mcp` jobs.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let url = database::url(&config, "the mcp worker (it records every call)")?;
    let pool = crate::connect(&url, database::pool_size(&config)).await?;
    let settings = config.mcp.clone();
    let stop = shutdown.clone();
    let build = |registry: Registry| async move {
        let (worker, announcements) = McpWorker::build(&settings, pool, &registry)?;
        worker.discover().await;
        tokio::spawn(
            worker
                .clone()
                .follow(announcements, settings.health_interval, stop),
        );
        info!(servers = settings.servers.len(), "mcp worker ready");
        Ok::<_, Error>(worker)
    };
    process::run_worker(&config, "switchyard-mcp", build, shutdown).await
}
