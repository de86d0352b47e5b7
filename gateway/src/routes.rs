//! The routes: `/api/v1/workflows/…`, `/api/v1/registry`, and the unauthenticated `/health`,
//! `/ready` and `/metrics`.

use std::{collections::BTreeMap, time::Duration};

use async_nats::{HeaderMap as NatsHeaders, connection::State as ConnState};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt as _;
use prometheus::{Encoder as _, TextEncoder};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use switchyard_orchestrator::service::{
    DefinitionRef, DefinitionSource, DefinitionsList, InstanceGet, endpoint,
};
use switchyard_proto::{
    CancelWorkflow, SignalWorkflow, StartWorkflow, encode_proto, event, header as bus_header,
    stream, subject,
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    AppState, Caller, Error, Permission,
    observe::{self, CorrelationId},
};

/// Namespace of the instance ids derived from a tenant and an `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x0b7c_43f4_5d0e_4a49_9c55_7f1e_2a6d_c3b1);
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The NATS micro-service discovery subject (part of the NATS protocol, not of Switchyard's).
const SERVICE_INFO_SUBJECT: &str = "$SRV.INFO";
/// How long `/registry` gathers `$SRV.INFO` answers.
const REGISTRY_GATHER: Duration = Duration::from_millis(250);

pub(crate) fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    let api = Router::new()
        .route("/workflows/trigger", post(trigger))
        .route("/workflows/status/{id}", get(status))
        .route("/workflows/instances/{id}", get(status))
        .route("/workflows/instances/{id}/cancel", post(cancel))
        .route("/workflows/instances/{id}/signal/{name}", post(signal))
        .route("/workflows/definitions", get(list_definitions))
        .route("/workflows/definitions/validate", post(validate_definition))
        .route(
            "/workflows/definitions/{name}",
            get(get_definition)
                .put(put_definition)
                .delete(delete_definition),
        )
        .route("/registry", get(registry))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ));
    // Waiting for the result is what execute is for: its own timeout leaves room for it.
    let execute = Router::new()
        .route("/workflows/execute", post(execute))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout + settings.max_wait,
        ));
    Router::new()
        .nest("/api/v1", api.merge(execute))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// The authenticated context of an API request.
pub(crate) struct Ctx {
    caller: Caller,
    correlation: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    idempotency_key: Option<String>,
    state: AppState,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let correlation = parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| CorrelationId::from_headers(&parts.headers))
            .0;
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let caller = state.auth().authenticate(authorization).inspect_err(|e| {
            if let Error::Unauthenticated { reason } = e {
                state
                    .metrics()
                    .auth_failures
                    .with_label_values(&[*reason])
                    .inc();
                warn!(reason, "authentication failed");
            }
        })?;
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // Trace context is passed through, not interpreted; only its size is bounded.
        let trace = |name: &str| text(name).filter(|v| !v.is_empty() && v.len() <= 512);
        let idempotency_key = match text("idempotency-key") {
            None => None,
            Some(k)
                if !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                    && k.chars().all(|c| c.is_ascii_graphic()) =>
            {
                Some(k)
            }
            Some(_) => {
                return Err(Error::field(
                    "Idempotency-Key",
                    format!("expected 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
                ));
            }
        };
        Ok(Ctx {
            caller,
            correlation,
            traceparent: trace(bus_header::TRACEPARENT),
            tracestate: trace(bus_header::TRACESTATE),
            idempotency_key,
            state: state.clone(),
        })
    }
}

impl Ctx {
    fn require(&self, permission: Permission) -> Result<(), Error> {
        if self.caller.has(permission) {
            return Ok(());
        }
        self.state
            .metrics()
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
        warn!(subject = %self.caller.subject, %permission, "permission denied");
        Err(Error::Forbidden { permission })
    }

    fn tenant(&self) -> &str {
        &self.caller.tenant
    }

    /// Headers for a query: correlation and trace context.
    fn query_headers(&self) -> NatsHeaders {
        let mut h = NatsHeaders::new();
        h.insert(bus_header::CORRELATION_ID, self.correlation.as_str());
        if let Some(t) = &self.traceparent {
            h.insert(bus_header::TRACEPARENT, t.as_str());
        }
        if let Some(t) = &self.tracestate {
            h.insert(bus_header::TRACESTATE, t.as_str());
        }
        h
    }

    /// Headers for a message on a stream.
    fn message_headers(&self, msg_id: &str) -> NatsHeaders {
        let mut h = self.query_headers();
        h.insert(bus_header::MSG_ID, msg_id);
        h.insert(bus_header::TENANT, self.tenant());
        h.insert(bus_header::CONTENT_TYPE, bus_header::PROTOBUF);
        h
    }

    async fn query(
        &self,
        endpoint_name: &str,
        body: &impl serde::Serialize,
    ) -> Result<Value, Error> {
        self.state
            .bus()
            .query(endpoint_name, body, self.query_headers())
            .await
    }

    /// A deterministic id from the tenant, `parts` and the `Idempotency-Key`, or a fresh one.
    fn derived_id(&self, parts: &[&str]) -> String {
        match &self.idempotency_key {
            Some(key) => {
                let mut name = self.tenant().to_owned();
                for p in parts.iter().chain([&key.as_str()]) {
                    name.push('\n');
                    name.push_str(p);
                }
                Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()).to_string()
            }
            None => Uuid::now_v7().to_string(),
        }
    }

    async fn instance(&self, id: &str) -> Result<Value, Error> {
        self.query(
            endpoint::INSTANCE_GET,
            &InstanceGet {
                tenant: self.tenant().to_owned(),
                instance_id: id.to_owned(),
            },
        )
        .await
    }
}

// ---- request bodies ----

/// A JSON body; malformed JSON is a 400 naming line and column, a wrong field a 400 naming
/// the field, a body over the limit a 413.
pub(crate) struct JsonBody<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            let mime = ct.split(';').next().unwrap_or_default().trim();
            if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
                return Err(Error::UnsupportedMediaType(ct.to_owned()));
            }
        }
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.settings().body_limit,
            }
        } else {
            Error::BadRequest(format!("cannot read the request body: {r}"))
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            json_error(e.into_inner(), Some(path))
        })
        .and_then(|v| de.end().map(|()| v).map_err(|e| json_error(e, None)))?;
    Ok(value)
}

fn json_error(e: serde_json::Error, path: Option<String>) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        },
        Category::Data => match path.filter(|p| p != ".") {
            Some(field) => Error::field(field, strip_position(&e)),
            None => Error::BadRequest(strip_position(&e)),
        },
    }
}

/// serde_json's message without its " at line L column C" tail (reported separately).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A definition's text: the body itself (`application/yaml`, `text/yaml`, `text/plain`, or no
/// content type) or JSON `{"source": "..."}`.
async fn definition_source(req: Request, state: &AppState) -> Result<String, Error> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mime = ct.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match mime.as_deref() {
        Some("application/json") => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Body {
                source: String,
            }
            let bytes = read_body(req, state).await?;
            let body: Body = parse_json(&bytes)?;
            Ok(body.source)
        }
        None
        | Some(
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "text/plain",
        ) => {
            let bytes = read_body(req, state).await?;
            String::from_utf8(bytes.to_vec())
                .map_err(|e| Error::field("body", format!("not UTF-8: {e}")))
        }
        Some(_) => Err(Error::UnsupportedMediaType(ct.unwrap_or_default())),
    }
}

fn check_token(field: &str, value: &str) -> Result<(), Error> {
    subject::check_token(value).map_err(|e| Error::field(field, e.to_string()))
}

// ---- starting workflows ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    workflow_name: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    version: Option<u32>,
}

/// A start checked and ready to publish.
struct PreparedStart {
    instance_id: String,
    workflow: String,
    message: StartWorkflow,
}

async fn prepare_start(
    ctx: &Ctx,
    workflow: &str,
    workflow_field: &str,
    version: Option<u32>,
    input: Value,
) -> Result<PreparedStart, Error> {
    check_token(workflow_field, workflow)?;
    let input = match input {
        Value::Null => Value::Object(Map::new()),
        Value::Object(m) => Value::Object(m),
        other => {
            return Err(Error::field(
                "input",
                format!(
                    "expected an object, got {}",
                    switchyard_catalog::describe(&other)
                ),
            ));
        }
    };
    let reply = ctx
        .query(
            endpoint::DEFINITIONS_GET,
            &DefinitionRef {
                tenant: ctx.tenant().to_owned(),
                name: workflow.to_owned(),
                version,
            },
        )
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::UnknownWorkflow {
                name: workflow.to_owned(),
            },
            other => other,
        })?;
    let resolved = reply["version"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| Error::internal("reading a definition", "the reply has no version"))?;
    let source = reply["source"].as_str().unwrap_or_default();
    if let Some(def) = ctx
        .state
        .definitions()
        .get(ctx.tenant(), workflow, resolved, source)
    {
        def.prepare_input(input.clone())
            .map_err(|problems| Error::InvalidInput {
                workflow: workflow.to_owned(),
                problems: problems.0,
            })?;
    }
    let instance_id = ctx.derived_id(&["start"]);
    let message = StartWorkflow {
        tenant: ctx.tenant().to_owned(),
        workflow: workflow.to_owned(),
        instance_id: instance_id.clone(),
        // Pinned to the version the input was checked against.
        version: resolved,
        input: serde_json::to_vec(&input).map_err(|e| Error::internal("encoding input", e))?,
        correlation_id: ctx.correlation.clone(),
        requested_at_ms: switchyard_proto::now_ms(),
        labels: Default::default(),
    };
    Ok(PreparedStart {
        instance_id,
        workflow: workflow.to_owned(),
        message,
    })
}

/// Publishes the start; `true` when the stream dropped it as a duplicate (same key again).
async fn publish_start(ctx: &Ctx, start: &PreparedStart) -> Result<bool, Error> {
    let ack = ctx
        .state
        .bus()
        .publish(
            subject::start(ctx.tenant(), &start.workflow),
            ctx.message_headers(&start.instance_id),
            encode_proto(&start.message),
        )
        .await?;
    info!(
        instance_id = %start.instance_id,
        workflow = %start.workflow,
        duplicate = ack.duplicate,
        "workflow start accepted"
    );
    Ok(ack.duplicate)
}

fn status_url(instance_id: &str) -> String {
    format!("/api/v1/workflows/status/{instance_id}")
}

fn accepted(instance_id: &str) -> Response {
    let url = status_url(instance_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "instance_id": instance_id, "status_url": url })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn trigger(ctx: Ctx, JsonBody(req): JsonBody<TriggerRequest>) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let start = prepare_start(
        &ctx,
        &req.workflow_name,
        "workflow_name",
        req.version,
        req.input,
    )
    .await?;
    publish_start(&ctx, &start).await?;
    Ok(accepted(&start.instance_id))
}

/// `{workflow_type, input?, wait?, version?, ...}`: other top-level fields join the input.
async fn execute(
    ctx: Ctx,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let workflow = match body.remove("workflow_type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::field("workflow_type", "expected a string")),
        None => return Err(Error::field("workflow_type", "missing")),
    };
    let wait = match body.remove("wait") {
        None | Some(Value::Null) => Duration::ZERO,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s.min(86_400.0)),
            _ => return Err(Error::field("wait", "expected seconds, 0 or more")),
        },
        Some(_) => return Err(Error::field("wait", "expected seconds, 0 or more")),
    }
    .min(ctx.state.settings().max_wait);
    let version = match body.remove("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| Error::field("version", "expected a positive integer"))?,
        ),
    };
    let mut input = match body.remove("input") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(Error::field("input", "expected an object")),
    };
    for (key, value) in body {
        if input.contains_key(&key) {
            return Err(Error::field(
                key,
                "given both at the top level and in `input`; give it once",
            ));
        }
        input.insert(key, value);
    }
    let start = prepare_start(
        &ctx,
        &workflow,
        "workflow_type",
        version,
        Value::Object(input),
    )
    .await?;
    if wait.is_zero() {
        publish_start(&ctx, &start).await?;
        return Ok(accepted(&start.instance_id));
    }
    // Subscribe before publishing, so the terminal event cannot slip past.
    let client = &ctx.state.bus().client;
    let mut events = client
        .subscribe(subject::events_of(ctx.tenant(), &start.instance_id))
        .await
        .map_err(|e| Error::unavailable("following the instance's events", e))?;
    client
        .flush()
        .await
        .map_err(|e| Error::unavailable("following the instance's events", e))?;
    let duplicate = publish_start(&ctx, &start).await?;
    let finished_already = duplicate && {
        let status = ctx.instance(&start.instance_id).await?;
        if is_terminal(&status) {
            return Ok((StatusCode::OK, Json(status)).into_response());
        }
        false
    };
    let finished = finished_already
        || tokio::time::timeout(wait, async {
            while let Some(msg) = events.next().await {
                if let Some((_, _, ty)) = subject::parse_event(&msg.subject)
                    && event::TERMINAL.contains(&ty)
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
    drop(events);
    if finished {
        let status = ctx.instance(&start.instance_id).await?;
        if is_terminal(&status) {
            return Ok((StatusCode::OK, Json(status)).into_response());
        }
    }
    Ok(accepted(&start.instance_id))
}

fn is_terminal(status: &Value) -> bool {
    status["status"]
        .as_str()
        .is_some_and(|s| event::TERMINAL.contains(&s))
}

// ---- instances ----

async fn status(ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    ctx.instance(&id).await.map(Json)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel(
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CancelRequest>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let status = ctx.instance(&id).await?;
    if is_terminal(&status) {
        return Err(Error::Conflict(format!(
            "instance {id:?} already finished ({})",
            status["status"].as_str().unwrap_or_default()
        )));
    }
    let message = CancelWorkflow {
        tenant: ctx.tenant().to_owned(),
        instance_id: id.clone(),
        reason: req.reason.unwrap_or_else(|| "cancelled over HTTP".into()),
        requested_by: ctx.caller.subject.clone(),
        correlation_id: ctx.correlation.clone(),
    };
    ctx.state
        .bus()
        .publish(
            subject::cancel(ctx.tenant(), &id),
            ctx.message_headers(&format!("cancel-{id}")),
            encode_proto(&message),
        )
        .await?;
    Ok(accepted(&id))
}

async fn signal(
    ctx: Ctx,
    Path((id, name)): Path<(String, String)>,
    JsonBody(payload): JsonBody<Value>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    check_token("name", &name)?;
    let status = ctx.instance(&id).await?;
    if is_terminal(&status) {
        return Err(Error::Conflict(format!("instance {id:?} already finished")));
    }
    let payload = if payload.is_null() {
        json!({})
    } else {
        payload
    };
    let signal_id = ctx.derived_id(&["signal", &id, &name]);
    let message = SignalWorkflow {
        tenant: ctx.tenant().to_owned(),
        instance_id: id.clone(),
        name: name.clone(),
        signal_id: signal_id.clone(),
        payload: serde_json::to_vec(&payload)
            .map_err(|e| Error::internal("encoding a signal", e))?,
        sent_by: ctx.caller.subject.clone(),
        correlation_id: ctx.correlation.clone(),
    };
    ctx.state
        .bus()
        .publish(
            subject::signal(ctx.tenant(), &id, &name),
            ctx.message_headers(&format!("signal-{signal_id}")),
            encode_proto(&message),
        )
        .await?;
    let mut response = accepted(&id);
    *response.body_mut() = axum::body::Body::from(
        json!({ "instance_id": id, "signal_id": signal_id, "status_url": status_url(&id) })
            .to_string(),
    );
    Ok(response)
}

// ---- definitions ----

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    include_deleted: bool,
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: Option<u32>,
}

fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Error> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Error::field("query", e.body_text()))
}

async fn list_definitions(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: ListQuery = query_of(&uri)?;
    ctx.query(
        endpoint::DEFINITIONS_LIST,
        &DefinitionsList {
            tenant: ctx.tenant().to_owned(),
            include_deleted: q.include_deleted,
        },
    )
    .await
    .map(Json)
}

async fn get_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<Value>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: VersionQuery = query_of(&uri)?;
    ctx.query(
        endpoint::DEFINITIONS_GET,
        &DefinitionRef {
            tenant: ctx.tenant().to_owned(),
            name,
            version: q.version,
        },
    )
    .await
    .map(Json)
}

async fn delete_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<Value>, Error> {
    ctx.require(Permission::DefinitionsWrite)?;
    let q: VersionQuery = query_of(&uri)?;
    ctx.query(
        endpoint::DEFINITIONS_DELETE,
        &DefinitionRef {
            tenant: ctx.tenant().to_owned(),
            name,
            version: q.version,
        },
    )
    .await
    .map(Json)
}

async fn put_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, Error> {
    ctx.require(Permission::DefinitionsWrite)?;
    check_token("name", &name)?;
    let source = definition_source(req, &state).await?;
    // The name in the path must be the one in the text; when the text does not parse here,
    // the orchestrator reports why.
    if let Some(def) = state.definitions().parse(&source)
        && def.name != name
    {
        return Err(Error::field(
            "name",
            format!(
                "the path names {name:?} but the definition is {:?}",
                def.name
            ),
        ));
    }
    let reply = ctx
        .query(
            endpoint::DEFINITIONS_PUT,
            &DefinitionSource {
                tenant: ctx.tenant().to_owned(),
                source,
            },
        )
        .await?;
    if reply["created"] == true {
        let location = format!(
            "/api/v1/workflows/definitions/{name}?version={}",
            reply["version"]
        );
        let mut response = (StatusCode::CREATED, Json(reply)).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        Ok(response)
    } else {
        Ok((StatusCode::OK, Json(reply)).into_response())
    }
}

async fn validate_definition(
    ctx: Ctx,
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let source = definition_source(req, &state).await?;
    let mut reply = ctx
        .query(
            endpoint::DEFINITIONS_VALIDATE,
            &DefinitionSource {
                tenant: ctx.tenant().to_owned(),
                source,
            },
        )
        .await?;
    if reply.get("problems").is_none() {
        reply["problems"] = json!([]);
    }
    Ok(Json(reply))
}

// ---- registry ----

async fn registry(ctx: Ctx) -> Result<Json<Value>, Error> {
    ctx.require(Permission::RegistryRead)?;
    let client = &ctx.state.bus().client;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    client
        .publish_with_reply(SERVICE_INFO_SUBJECT, inbox, Bytes::new())
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    client
        .flush()
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    let deadline = tokio::time::Instant::now() + REGISTRY_GATHER;
    let mut services = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        // "No responders" comes back as an empty message.
        if msg.payload.is_empty() {
            continue;
        }
        match serde_json::from_slice::<async_nats::service::Info>(&msg.payload) {
            Ok(info) => services.push(json!({
                "name": info.name,
                "id": info.id,
                "version": info.version,
                "description": info.description,
                "metadata": info.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                "endpoints": info.endpoints.into_iter().map(|e| json!({
                    "name": e.name,
                    "subject": e.subject,
                    "metadata": e.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            })),
            Err(e) => warn!(error = %e, "ignoring a $SRV.INFO answer that does not parse"),
        }
    }
    services.sort_by(|a, b| {
        (a["name"].as_str(), a["id"].as_str()).cmp(&(b["name"].as_str(), b["id"].as_str()))
    });
    Ok(Json(json!({ "services": services })))
}

// ---- operations ----

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let bus = state.bus();
    if bus.client.connection_state() != ConnState::Connected {
        return Err(Error::NotReady("not connected to NATS".into()));
    }
    match tokio::time::timeout(Duration::from_secs(2), bus.js.get_stream(stream::WF_INBOX)).await {
        Ok(Ok(_)) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(Error::NotReady(format!(
            "stream {} is not available ({e}); run `switchyard bus apply`",
            stream::WF_INBOX
        ))),
        Err(_) => Err(Error::NotReady("JetStream did not answer in time".into())),
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, Error> {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&state.registry().gather(), &mut body)
        .map_err(|e| Error::internal("encoding metrics", e))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_names_line_and_column_and_data_errors_name_the_field() {
        let e =
            parse_json::<TriggerRequest>(b"{\n  \"workflow_name\": \"x\",\n  oops\n}").unwrap_err();
        assert!(
            matches!(
                e,
                Error::MalformedJson {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse_json::<TriggerRequest>(br#"{"workflow_name": 7}"#).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidField { field, .. } if field == "workflow_name"),
            "{e:?}"
        );
    }
}
