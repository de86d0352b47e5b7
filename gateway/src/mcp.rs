//! `/mcp`: the gateway as an MCP server (Streamable HTTP), through the official Rust SDK.
//!
//! Its tools are the caller's tenant's runnable workflows (the latest version of each, its
//! input schema from the definition) plus [`STATUS_TOOL`] and [`CANCEL_TOOL`]. A `tools/call`
//! of a workflow starts it and waits up to `gateway.mcp_wait` for it to finish, sending a
//! progress notification for each of its events when the client asked for progress; a
//! workflow still running then is answered with its instance id and status URL.
//!
//! Every HTTP request is authenticated like any API request (bearer JWT, the caller's tenant
//! and roles) and counts against the `read` rate; a call that starts a workflow counts against
//! `start` as well and a cancel against `control`. A session of the handshake-era protocol
//! (up to 2025-11-25) belongs to the tenant that opened it and is told
//! `notifications/tools/list_changed` when that tenant's definitions change; a 2026-07-28
//! client is told through `subscriptions/listen`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::{FromRequestParts as _, Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
    },
    service::{NotificationContext, RequestContext, SubscriptionContext},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use switchyard_proto::{
    ContentType, WorkflowEvent, decode, event, orchestrator::InstanceView, subject,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::{
    Error, Permission,
    api::workflows::{cancel_instance, start_and_wait},
    extract::Ctx,
    limits::Group,
    responses::status_url,
    start::prepare_start,
    state::AppState,
};

/// The tool that reads an instance's status.
pub(crate) const STATUS_TOOL: &str = "switchyard.instance_status";
/// The tool that cancels a running instance.
pub(crate) const CANCEL_TOOL: &str = "switchyard.cancel_instance";
/// Where the MCP endpoint is served.
pub(crate) const PATH: &str = "/mcp";

/// The MCP service, to be mounted at [`PATH`] behind [`authenticate`].
pub(crate) fn service(state: AppState) -> StreamableHttpService<McpHandler, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        // Every request carries a bearer token a browser never sends on its own, which is
        // what the Host check guards against; the gateway is reached by its own host names.
        .disable_allowed_hosts()
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    StreamableHttpService::new(
        move || Ok(McpHandler::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Authenticates and rate-limits (as a `read`) every request to `/mcp`, as any API request:
/// without a valid token the answer is 401 before the MCP layer sees it.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Group::Read);
    if let Err(e) = Ctx::from_request_parts(&mut parts, &state).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// One MCP session (or, for the stateless 2026-07-28 revision, one request).
#[derive(Debug, Clone)]
pub(crate) struct McpHandler {
    state: AppState,
    /// The tenant that opened the session; its other requests must be the same tenant's.
    tenant: Arc<std::sync::OnceLock<String>>,
}

impl McpHandler {
    fn new(state: AppState) -> Self {
        McpHandler {
            state,
            tenant: Arc::default(),
        }
    }

    /// The request's authenticated context, rebuilt from its HTTP parts (the middleware has
    /// counted it against its rate already: this adds nothing to any).
    async fn ctx(&self, extensions: &rmcp::model::Extensions) -> Result<Ctx, ErrorData> {
        let mut parts = extensions
            .get::<Parts>()
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the HTTP request is missing", None))?;
        parts.extensions.insert(Group::Open);
        let ctx = Ctx::from_request_parts(&mut parts, &self.state)
            .await
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let owner = self.tenant.get_or_init(|| ctx.tenant().to_owned());
        if owner != ctx.tenant() {
            return Err(ErrorData::invalid_request(
                "this MCP session belongs to another tenant; open a session of your own",
                None,
            ));
        }
        Ok(ctx)
    }

    /// The tools `tenant` sees: the latest version of each workflow it may start, then ours.
    fn tools(&self, tenant: &str) -> Vec<Tool> {
        let mut tools: Vec<Tool> = workflows(&self.state, tenant)
            .into_values()
            .map(|def| {
                let schema = object(def.input.to_json_schema());
                let description = if def.description.trim().is_empty() {
                    format!("Runs the workflow {} (version {}).", def.name, def.version)
                } else {
                    def.description.trim().to_owned()
                };
                Tool::new(def.name.clone(), description, schema)
            })
            .collect();
        let id_schema = |extra: Value| {
            let mut properties = json!({
                "instance_id": {"type": "string", "minLength": 1, "description": "The instance id a workflow tool answered with"}
            });
            if let (Some(p), Value::Object(more)) = (properties.as_object_mut(), extra) {
                p.extend(more);
            }
            object(json!({
                "type": "object",
                "properties": properties,
                "required": ["instance_id"],
                "additionalProperties": false,
            }))
        };
        tools.push(Tool::new(
            STATUS_TOOL,
            "The status of a workflow instance: its steps, output or error.",
            id_schema(json!({})),
        ));
        tools.push(Tool::new(
            CANCEL_TOOL,
            "Cancels a running workflow instance.",
            id_schema(
                json!({"reason": {"type": "string", "description": "Why, for the audit log"}}),
            ),
        ));
        tools
    }

    async fn run_workflow(
        &self,
        ctx: Ctx,
        name: &str,
        arguments: JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, Error> {
        ctx.require(Permission::WorkflowsRun)?;
        self.state
            .limits()
            .check(Group::Start, &ctx.caller)
            .inspect_err(|_| {
                self.state
                    .metrics()
                    .rate_limited
                    .with_label_values(&[Group::Start.as_str()])
                    .inc();
            })?;
        let start = prepare_start(&ctx, name, "name", None, Value::Object(arguments)).await?;
        let steps = start_steps(&self.state, ctx.tenant(), name);
        // Progress goes out from its own task, so the wait never blocks on a slow client.
        let (progress, mut seen) = mpsc::unbounded_channel::<String>();
        let forwarder = context.meta.get_progress_token().map(|token| {
            let peer = context.peer.clone();
            tokio::spawn(async move {
                let mut done = 0u32;
                while let Some(message) = seen.recv().await {
                    done += 1;
                    let mut note = ProgressNotificationParam::new(token.clone(), f64::from(done))
                        .with_message(message);
                    if let Some(total) = steps {
                        note = note.with_total(f64::from(total));
                        note.progress = note.progress.min(f64::from(total));
                    }
                    if peer.notify_progress(note).await.is_err() {
                        return;
                    }
                }
            })
        });
        let finished = start_and_wait(&ctx, &start, self.state.settings().mcp_wait, |msg| {
            if let Some(text) = progress_text(msg) {
                let _ = progress.send(text);
            }
        })
        .await;
        drop(progress);
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        Ok(match finished? {
            Some(instance) => finished_result(&instance),
            None => {
                let url = status_url(&start.instance_id);
                let value = json!({
                    "instance_id": start.instance_id,
                    "status": "running",
                    "status_url": url,
                });
                let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
                    "The workflow {name} is still running as instance {}; follow it with the \
                     {STATUS_TOOL} tool or at {url}.",
                    start.instance_id
                ))]);
                result.structured_content = Some(value);
                result
            }
        })
    }

    async fn status(&self, ctx: Ctx, arguments: &JsonObject) -> Result<CallToolResult, Error> {
        ctx.require(Permission::WorkflowsRead)?;
        let id = instance_id(arguments)?;
        let instance = ctx.instance(&id).await?;
        let value = serde_json::to_value(&instance)
            .map_err(|e| Error::internal("encoding an instance", e))?;
        let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
        result.structured_content = Some(value);
        Ok(result)
    }

    async fn cancel(&self, ctx: Ctx, arguments: &JsonObject) -> Result<CallToolResult, Error> {
        ctx.require(Permission::WorkflowsRun)?;
        self.state.limits().check(Group::Control, &ctx.caller)?;
        let id = instance_id(arguments)?;
        let reason = match arguments.get("reason") {
            None | Some(Value::Null) => "cancelled over MCP".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::field("reason", "expected a string")),
        };
        cancel_instance(&ctx, &id, reason).await?;
        let value = json!({"instance_id": id, "status_url": status_url(&id)});
        let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
            "Cancel of instance {id} requested."
        ))]);
        result.structured_content = Some(value);
        Ok(result)
    }

    /// Tells `notify` each time the tools `tenant` sees change, until it fails (the client is
    /// gone) or `stop` fires.
    async fn follow_tools<F, Fut>(&self, tenant: String, stop: impl Future<Output = ()>, notify: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let Some(mirror) = self.state.mirror() else {
            return;
        };
        let mut changes = mirror.changes();
        let mut seen = signature(&self.state, &tenant);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let now = signature(&self.state, &tenant);
            if now != seen {
                seen = now;
                debug!(%tenant, "the tenant's workflow tools changed");
                if !notify().await {
                    return;
                }
            }
        }
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each tool but the switchyard.* ones runs a workflow of your tenant with the \
             tool's arguments as its input.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let ctx = self.ctx(&context.extensions).await?;
        ctx.require(Permission::WorkflowsRead)
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        Ok(ListToolsResult::with_all_items(self.tools(ctx.tenant())))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let ctx = self.ctx(&context.extensions).await?;
        let correlation = ctx.correlation.clone();
        let arguments = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        let outcome = match name {
            STATUS_TOOL => self.status(ctx, &arguments).await,
            CANCEL_TOOL => self.cancel(ctx, &arguments).await,
            // A workflow the tenant cannot run answers as unknown (below).
            _ if subject::check_token(name).is_ok() => {
                self.run_workflow(ctx, name, arguments, &context).await
            }
            _ => return Err(ErrorData::invalid_params(format!("no tool {name:?}"), None)),
        };
        Ok(match outcome {
            Ok(result) => result,
            Err(Error::UnknownWorkflow { name }) => {
                return Err(ErrorData::invalid_params(format!("no tool {name:?}"), None));
            }
            Err(e) => error_result(e, &correlation),
        }
        .into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Ok(ctx) = self.ctx(&context.extensions).await else {
            return;
        };
        let tenant = ctx.tenant().to_owned();
        let handler = self.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            let closed = {
                let peer = peer.clone();
                async move {
                    while !peer.is_transport_closed() {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            };
            handler
                .follow_tools(tenant, closed, || async {
                    peer.notify_tool_list_changed().await.is_ok()
                })
                .await;
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let ctx = self.ctx(&context.request_context().extensions).await?;
        let sink = context.sink().clone();
        self.follow_tools(ctx.tenant().to_owned(), context.cancelled(), || async {
            sink.notify_tool_list_changed().await.is_ok()
        })
        .await;
        Ok(())
    }
}

/// The latest runnable version of each workflow `tenant` sees, by name.
fn workflows(
    state: &AppState,
    tenant: &str,
) -> BTreeMap<String, Arc<switchyard_workflow::Definition>> {
    let Some(mirror) = state.mirror() else {
        return BTreeMap::new();
    };
    let mut names: Vec<String> = mirror
        .list(tenant, false)
        .into_iter()
        .map(|e| e.definition.name.clone())
        .collect();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            mirror
                .resolve(tenant, &name, 0)
                .map(|e| (name, e.definition))
        })
        .collect()
}

/// What tells one tenant's tool list from another: each workflow's name and version.
fn signature(state: &AppState, tenant: &str) -> Vec<(String, u32)> {
    workflows(state, tenant)
        .into_iter()
        .map(|(name, def)| (name, def.version))
        .collect()
}

/// The steps of the workflow a start will run, for progress totals.
fn start_steps(state: &AppState, tenant: &str, name: &str) -> Option<u32> {
    let entry = state.mirror()?.resolve(tenant, name, 0)?;
    u32::try_from(entry.definition.steps.len()).ok()
}

/// A progress message for an event worth telling about: a step that finished, failed or
/// retries.
fn progress_text(msg: &async_nats::Message) -> Option<String> {
    let (_, _, ty) = subject::parse_event(&msg.subject)?;
    let content_type = ContentType::from_header(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(switchyard_proto::header::CONTENT_TYPE))
            .map(|v| v.as_str()),
    );
    let step = decode::<WorkflowEvent>(content_type, &msg.payload)
        .map(|e| e.step_id)
        .unwrap_or_default();
    match ty {
        event::STEP_COMPLETED => Some(format!("step {step} completed")),
        event::STEP_SKIPPED => Some(format!("step {step} skipped")),
        event::STEP_FAILED => Some(format!("step {step} failed")),
        _ => None,
    }
}

/// The answer for a workflow that finished: its output, or why it failed, as a tool error.
fn finished_result(instance: &InstanceView) -> CallToolResult {
    let view = serde_json::to_value(instance).unwrap_or(Value::Null);
    match (&instance.output, &instance.error) {
        (Some(output), None) if instance.status.as_str() == "completed" => {
            let text = match output {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(match output {
                Value::Object(_) => output.clone(),
                other => json!({ "output": other }),
            });
            result
        }
        _ => {
            let why = instance.error.as_ref().map_or_else(
                || format!("the instance ended {}", instance.status.as_str()),
                |e| match &e.step {
                    Some(step) => format!("step {step} failed ({}): {}", e.code, e.message),
                    None => format!("{}: {}", e.code, e.message),
                },
            );
            let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
                "The workflow {} {}: {why}",
                instance.workflow,
                instance.status.as_str()
            ))]);
            result.structured_content = Some(view);
            result
        }
    }
}

/// A refusal as the tool's error, its text naming the field, with the problem document as
/// its structured content.
fn error_result(error: Error, correlation: &str) -> CallToolResult {
    let mut problem = error.problem();
    problem.correlation_id = correlation.to_owned();
    let mut text = problem.detail.clone();
    for e in &problem.errors {
        text.push_str(&format!("\n- {}: {}", e.path, e.message));
    }
    if let Some(field) = &problem.field
        && !text.contains(field.as_str())
    {
        text = format!("{field}: {text}");
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = serde_json::to_value(&problem).ok();
    result
}

/// The `instance_id` argument.
fn instance_id(arguments: &JsonObject) -> Result<String, Error> {
    match arguments.get("instance_id") {
        Some(Value::String(s)) if !s.is_empty() => {
            crate::extract::check_token("instance_id", s)?;
            Ok(s.clone())
        }
        Some(_) => Err(Error::field(
            "instance_id",
            "expected the instance id, a string",
        )),
        None => Err(Error::field("instance_id", "missing")),
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}
