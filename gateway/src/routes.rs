//! The routes: `/api/v1/workflows/…`, `/api/v1/registry`, and the unauthenticated `/health`,
//! `/ready` and `/metrics`.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use async_nats::{HeaderMap as NatsHeaders, connection::State as ConnState};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
    },
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use futures::StreamExt as _;
use prometheus::{Encoder as _, TextEncoder};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use switchyard_proto::orchestrator::{
    DefinitionDetail, DefinitionList, DefinitionRef, DefinitionSource, DefinitionsList,
    DeleteDefinition, DeleteReply, Endpoint, GetDefinition, GetInstance, InstanceGet, InstanceView,
    ListDefinitions, PutDefinition, ValidateDefinition, ValidateReply,
};
use switchyard_proto::{
    CancelWorkflow, SignalWorkflow, StartWorkflow, encode_proto, event, header as bus_header,
    stream, subject,
};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    AppState, Caller, Error, Permission, audit, cards, events,
    limits::Group,
    meetings,
    observe::{self, CorrelationId},
    openapi, research,
};

/// Namespace of the instance ids derived from a tenant and an `Idempotency-Key`.
pub(crate) const IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x0b7c_43f4_5d0e_4a49_9c55_7f1e_2a6d_c3b1);
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The NATS micro-service discovery subject (part of the NATS protocol, not of Switchyard's).
const SERVICE_INFO_SUBJECT: &str = "$SRV.INFO";
/// How long `/registry` gathers `$SRV.INFO` answers.
const REGISTRY_GATHER: Duration = Duration::from_millis(250);

/// How long a route may take to produce its response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// `gateway.request_timeout`.
    Request,
    /// `gateway.request_timeout` plus `gateway.max_wait`: execute waits for the result.
    RequestAndWait,
    /// None: an event stream is open as long as the client wants it.
    Stream,
}

/// One route: the single list the router is built from and the OpenAPI document is checked
/// against.
pub(crate) struct RouteDef {
    pub method: Method,
    pub path: &'static str,
    pub group: Group,
    deadline: Deadline,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    group: Group,
    deadline: Deadline,
    handler: H,
) -> RouteDef
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("{method} is not a routable method"));
    RouteDef {
        method,
        path,
        group,
        deadline,
        handler: on(filter, handler),
    }
}

/// Every route the gateway serves.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Deadline::*;
    use Group::*;
    use Method as M;
    vec![
        route(
            M::POST,
            "/api/v1/workflows/trigger",
            Start,
            Request,
            trigger,
        ),
        route(
            M::POST,
            "/api/v1/workflows/execute",
            Start,
            RequestAndWait,
            execute,
        ),
        route(
            M::GET,
            "/api/v1/workflows/status/{id}",
            Read,
            Request,
            status,
        ),
        route(
            M::GET,
            "/api/v1/workflows/instances/{id}",
            Read,
            Request,
            instance,
        ),
        route(
            M::GET,
            "/api/v1/workflows/instances/{id}/events",
            Read,
            Stream,
            events::stream,
        ),
        route(
            M::POST,
            "/api/v1/workflows/instances/{id}/cancel",
            Control,
            Request,
            cancel,
        ),
        route(
            M::POST,
            "/api/v1/workflows/instances/{id}/signal/{name}",
            Control,
            Request,
            signal,
        ),
        route(
            M::GET,
            "/api/v1/workflows/definitions",
            Read,
            Request,
            list_definitions,
        ),
        route(
            M::POST,
            "/api/v1/workflows/definitions/validate",
            Definitions,
            Request,
            validate_definition,
        ),
        route(
            M::GET,
            "/api/v1/workflows/definitions/{name}",
            Read,
            Request,
            get_definition,
        ),
        route(
            M::PUT,
            "/api/v1/workflows/definitions/{name}",
            Definitions,
            Request,
            put_definition,
        ),
        route(
            M::DELETE,
            "/api/v1/workflows/definitions/{name}",
            Definitions,
            Request,
            delete_definition,
        ),
        route(M::GET, "/api/v1/registry", Read, Request, registry),
        route(
            M::POST,
            "/api/v1/meetings/process",
            Start,
            Request,
            meetings::process,
        ),
        route(
            M::GET,
            "/api/v1/meetings/{id}/context",
            Read,
            Request,
            meetings::context,
        ),
        route(
            M::POST,
            "/api/v1/tasks",
            Control,
            Request,
            meetings::create_task,
        ),
        route(
            M::PUT,
            "/api/v1/tasks/{id}/status",
            Control,
            Request,
            meetings::update_task_status,
        ),
        route(
            M::GET,
            "/api/v1/integrations/status",
            Read,
            Request,
            meetings::integrations_status,
        ),
        route(
            M::POST,
            "/api/v1/research",
            Research,
            Request,
            research::research,
        ),
        route(M::POST, "/api/v1/cards", Control, Request, cards::create),
        route(
            M::POST,
            "/api/v1/cards/batch",
            Control,
            Request,
            cards::batch,
        ),
        route(
            M::POST,
            "/api/v1/cards/retrieve",
            Read,
            Request,
            cards::retrieve,
        ),
        route(M::GET, "/api/v1/cards", Read, Request, cards::list),
        route(M::GET, "/api/v1/cards/{id}", Read, Request, cards::get),
        route(
            M::PATCH,
            "/api/v1/cards/{id}",
            Control,
            Request,
            cards::update,
        ),
        route(
            M::DELETE,
            "/api/v1/cards/{id}",
            Control,
            Request,
            cards::delete,
        ),
        route(
            M::GET,
            "/api/v1/cards/{id}/versions",
            Read,
            Request,
            cards::versions,
        ),
        route(
            M::PUT,
            "/api/v1/cards/types/{type}",
            Definitions,
            Request,
            cards::register_type,
        ),
        route(
            M::POST,
            "/api/v1/onboarding",
            Start,
            Request,
            cards::onboarding,
        ),
        route(M::GET, "/api/v1/usage", Read, Request, crate::ledger::usage),
        route(
            M::GET,
            "/api/v1/workflows/instances",
            Read,
            Request,
            crate::ledger::instances,
        ),
        route(
            M::GET,
            "/api/v1/workflows/stats",
            Read,
            Request,
            crate::ledger::stats,
        ),
        route(
            M::GET,
            "/api/v1/audit",
            Read,
            Request,
            crate::ledger::audit_log,
        ),
        route(M::GET, "/health", Open, Request, health),
        route(M::GET, "/ready", Open, Request, ready),
        route(M::GET, "/metrics", Open, Request, metrics),
        route(M::GET, "/openapi.json", Open, Request, openapi::serve),
    ]
}

pub(crate) fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    let mut router = Router::new();
    for r in routes() {
        let timeout = match r.deadline {
            Deadline::Request => Some(settings.request_timeout),
            Deadline::RequestAndWait => Some(settings.request_timeout + settings.max_wait),
            Deadline::Stream => None,
        };
        let mut handler = r.handler.layer(Extension(r.group));
        if let Some(t) = timeout {
            handler = handler.layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                t,
            ));
        }
        router = router.route(r.path, handler);
    }
    router
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
    pub(crate) caller: Caller,
    pub(crate) correlation: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    idempotency_key: Option<String>,
    pub(crate) state: AppState,
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
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map_or("", MatchedPath::as_str);
                audit::refused(
                    state,
                    audit::Record {
                        tenant: switchyard_proto::audit::ANONYMOUS_TENANT,
                        actor: "",
                        action: switchyard_proto::audit::AUTH_FAILED,
                        target: route,
                        outcome: reason,
                        correlation_id: &correlation,
                        attributes: [("method".to_owned(), parts.method.to_string())].into(),
                    },
                );
            }
        })?;
        let group = parts
            .extensions
            .get::<Group>()
            .copied()
            .unwrap_or(Group::Read);
        state.limits().check(group, &caller).inspect_err(|_| {
            state
                .metrics()
                .rate_limited
                .with_label_values(&[group.as_str()])
                .inc();
        })?;
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The request span's context (a child of the caller's), or the caller's as it came.
        let trace = observe::outgoing_trace(&parts.extensions, &parts.headers);
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
            traceparent: trace.traceparent,
            tracestate: trace.tracestate,
            idempotency_key,
            state: state.clone(),
        })
    }
}

impl Ctx {
    pub(crate) fn require(&self, permission: Permission) -> Result<(), Error> {
        if self.caller.has(permission) {
            return Ok(());
        }
        self.state
            .metrics()
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
        warn!(subject = %self.caller.subject, %permission, "permission denied");
        audit::refused(
            &self.state,
            audit::Record {
                tenant: self.tenant(),
                actor: &self.caller.subject,
                action: switchyard_proto::audit::AUTH_FAILED,
                target: &permission.to_string(),
                outcome: "forbidden",
                correlation_id: &self.correlation,
                attributes: HashMap::new(),
            },
        );
        Err(Error::Forbidden { permission })
    }

    /// Records an accepted action in the audit log (see [`audit`]).
    pub(crate) fn audit(
        &self,
        action: &'static str,
        target: &str,
        attributes: HashMap<String, String>,
    ) {
        audit::accepted(
            &self.state,
            audit::Record {
                tenant: self.tenant(),
                actor: &self.caller.subject,
                action,
                target,
                outcome: switchyard_proto::audit::OK,
                correlation_id: &self.correlation,
                attributes,
            },
        );
    }

    pub(crate) fn tenant(&self) -> &str {
        &self.caller.tenant
    }

    /// Headers for a query: correlation and trace context.
    pub(crate) fn query_headers(&self) -> NatsHeaders {
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

    async fn query<E: Endpoint>(&self, request: &E::Request) -> Result<E::Reply, Error> {
        self.state
            .bus()
            .query::<E>(request, self.query_headers())
            .await
    }

    /// A deterministic id from the tenant, `parts` and the `Idempotency-Key`, or a fresh one.
    pub(crate) fn derived_id(&self, parts: &[&str]) -> String {
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

    pub(crate) async fn instance(&self, id: &str) -> Result<InstanceView, Error> {
        self.query::<GetInstance>(&InstanceGet {
            tenant: self.tenant().to_owned(),
            instance_id: id.to_owned(),
        })
        .await
    }
}

// ---- request bodies ----

/// A JSON body; malformed JSON is a 400 naming line and column, a wrong field a 400 naming
/// the field, a body over the limit a 413.
pub(crate) struct JsonBody<T>(pub(crate) T);

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

/// Starts a registered workflow.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerRequest {
    /// The workflow's name.
    workflow_name: String,
    /// The workflow's input, checked against its input schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// A registered version; the latest when absent.
    #[serde(default)]
    version: Option<u32>,
}

/// Starts a workflow and, with `wait`, waits for its result.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // the body is read as a map; this documents its shape
pub(crate) struct ExecuteRequest {
    /// The workflow's name.
    workflow_type: String,
    /// The input; other top-level fields are added to it.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// Seconds to wait for the result (capped at `gateway.max_wait`); 0 or absent answers 202 at once.
    wait: Option<f64>,
    /// A registered version; the latest when absent.
    version: Option<u32>,
}

/// A start checked and ready to publish.
pub(crate) struct PreparedStart {
    pub(crate) instance_id: String,
    workflow: String,
    pub(crate) message: StartWorkflow,
}

pub(crate) async fn prepare_start(
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
    let (resolved, def) = resolve_definition(ctx, workflow, version).await?;
    // The checked input, defaults filled in as the orchestrator would fill them.
    let input = match def {
        Some(def) => def
            .prepare_input(input)
            .map_err(|problems| Error::InvalidInput {
                workflow: workflow.to_owned(),
                problems: problems.0,
            })?,
        None => input,
    };
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

/// The version a start runs and its parsed definition: from the gateway's mirror of the
/// definitions when it has the workflow, else from the orchestrator (a definition registered a
/// moment ago may not have reached the mirror yet; the orchestrator also tells an unknown
/// workflow apart). The definition is `None` when it does not parse here.
async fn resolve_definition(
    ctx: &Ctx,
    workflow: &str,
    version: Option<u32>,
) -> Result<(u32, Option<std::sync::Arc<switchyard_workflow::Definition>>), Error> {
    if let Some(entry) = ctx
        .state
        .mirror()
        .and_then(|m| m.resolve(ctx.tenant(), workflow, version.unwrap_or(0)))
    {
        return Ok((entry.definition.version, Some(entry.definition)));
    }
    let reply = ctx
        .query::<GetDefinition>(&DefinitionRef {
            tenant: ctx.tenant().to_owned(),
            name: workflow.to_owned(),
            version,
        })
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::UnknownWorkflow {
                name: workflow.to_owned(),
            },
            other => other,
        })?;
    let resolved = reply.version;
    let def = ctx
        .state
        .definitions()
        .get(ctx.tenant(), workflow, resolved, &reply.source);
    Ok((resolved, def))
}

/// Publishes the start; `true` when the stream dropped it as a duplicate (same key again).
pub(crate) async fn publish_start(ctx: &Ctx, start: &PreparedStart) -> Result<bool, Error> {
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

pub(crate) fn status_url(instance_id: &str) -> String {
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

#[utoipa::path(
    post,
    path = "/api/v1/workflows/trigger",
    tag = "workflows",
    request_body = TriggerRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the same instance instead of starting another")),
    responses(
        (status = 202, description = "The start is stored on the bus", body = crate::openapi::Accepted),
        crate::openapi::StartErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn trigger(
    ctx: Ctx,
    JsonBody(req): JsonBody<TriggerRequest>,
) -> Result<Response, Error> {
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
#[utoipa::path(
    post,
    path = "/api/v1/workflows/execute",
    tag = "workflows",
    request_body(content = ExecuteRequest, description = "`workflow_type`, optional `input`, `wait` and `version`; any other top-level field (e.g. `card_ids`, `additional_context`) joins the input"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the same instance")),
    responses(
        (status = 200, description = "The instance finished within `wait`", body = InstanceView),
        (status = 202, description = "Started; still running after `wait`", body = crate::openapi::Accepted),
        crate::openapi::StartErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn execute(
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

fn is_terminal(status: &InstanceView) -> bool {
    status.status.is_finished()
}

// ---- instances ----

#[utoipa::path(
    get,
    path = "/api/v1/workflows/status/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "The instance id")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        crate::openapi::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn status(ctx: Ctx, Path(id): Path<String>) -> Result<Json<InstanceView>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    ctx.instance(&id).await.map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/instances/{id}",
    tag = "workflows",
    params(("id" = String, Path, description = "The instance id")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        crate::openapi::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn instance(
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    ctx.instance(&id).await.map(Json)
}

/// Why an instance is cancelled.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/instances/{id}/cancel",
    tag = "workflows",
    params(("id" = String, Path, description = "The instance id")),
    request_body(content = Option<CancelRequest>, description = "An optional reason"),
    responses(
        (status = 202, description = "The cancel is stored on the bus", body = crate::openapi::Accepted),
        crate::openapi::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CancelRequest>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let status = ctx.instance(&id).await?;
    if is_terminal(&status) {
        return Err(Error::Conflict(format!(
            "instance {id:?} already finished ({})",
            status.status.as_str()
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
    ctx.audit(
        switchyard_proto::audit::INSTANCE_CANCEL,
        &id,
        [("reason".to_owned(), message.reason)].into(),
    );
    Ok(accepted(&id))
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/instances/{id}/signal/{name}",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "The instance id"),
        ("name" = String, Path, description = "The signal a step waits for"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key again delivers the signal once")
    ),
    request_body(content = Option<Object>, description = "The signal's payload, any JSON object"),
    responses(
        (status = 202, description = "The signal is stored on the bus", body = crate::openapi::SignalAccepted),
        crate::openapi::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn signal(
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
    ctx.audit(
        switchyard_proto::audit::INSTANCE_SIGNAL,
        &id,
        [
            ("signal".to_owned(), name.clone()),
            ("signal_id".to_owned(), signal_id.clone()),
        ]
        .into(),
    );
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

pub(crate) fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Error> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Error::field("query", e.body_text()))
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions",
    tag = "definitions",
    params(("include_deleted" = Option<bool>, Query, description = "Also list deleted versions")),
    responses(
        (status = 200, description = "Every definition version the tenant sees", body = DefinitionList),
        crate::openapi::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_definitions(
    ctx: Ctx,
    uri: axum::http::Uri,
) -> Result<Json<DefinitionList>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: ListQuery = query_of(&uri)?;
    ctx.query::<ListDefinitions>(&DefinitionsList {
        tenant: ctx.tenant().to_owned(),
        include_deleted: q.include_deleted,
    })
    .await
    .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "The workflow name"),
        ("version" = Option<u32>, Query, description = "A version; the latest when absent")
    ),
    responses(
        (status = 200, description = "The definition with its text", body = DefinitionDetail),
        crate::openapi::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DefinitionDetail>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    definition_query::<GetDefinition>(&ctx, name, &uri).await
}

/// Asks the engine's endpoint `E` about the definition `name` (`?version=N` optional).
async fn definition_query<E: Endpoint<Request = DefinitionRef>>(
    ctx: &Ctx,
    name: String,
    uri: &axum::http::Uri,
) -> Result<Json<E::Reply>, Error> {
    let q: VersionQuery = query_of(uri)?;
    ctx.query::<E>(&DefinitionRef {
        tenant: ctx.tenant().to_owned(),
        name,
        version: q.version,
    })
    .await
    .map(Json)
}

#[utoipa::path(
    delete,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "The workflow name"),
        ("version" = Option<u32>, Query, description = "One version; every version when absent")
    ),
    responses(
        (status = 200, description = "What was deleted; running instances keep their version", body = DeleteReply),
        crate::openapi::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DeleteReply>, Error> {
    ctx.require(Permission::DefinitionsWrite)?;
    let reply = definition_query::<DeleteDefinition>(&ctx, name.clone(), &uri).await?;
    let version = query_of::<VersionQuery>(&uri)?
        .version
        .map_or_else(|| "all".to_owned(), |v| v.to_string());
    ctx.audit(
        switchyard_proto::audit::DEFINITION_DELETE,
        &name,
        [
            ("version".to_owned(), version),
            ("deleted".to_owned(), reply.0.deleted.to_string()),
        ]
        .into(),
    );
    Ok(reply)
}

#[utoipa::path(
    put,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(("name" = String, Path, description = "The workflow name; must match `name` in the definition")),
    request_body(content = String, description = "The definition as YAML (`application/yaml`, `text/yaml`, `text/plain`), or JSON `{\"source\": \"…\"}`", content_type = "application/yaml"),
    responses(
        (status = 201, description = "A new version was registered", body = switchyard_proto::orchestrator::PutReply),
        (status = 200, description = "The same version with the same text was registered already", body = switchyard_proto::orchestrator::PutReply),
        crate::openapi::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_definition(
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
        .query::<PutDefinition>(&DefinitionSource {
            tenant: ctx.tenant().to_owned(),
            source,
        })
        .await?;
    ctx.audit(
        switchyard_proto::audit::DEFINITION_PUT,
        &name,
        [
            ("version".to_owned(), reply.version.to_string()),
            ("created".to_owned(), reply.created.to_string()),
        ]
        .into(),
    );
    if reply.created {
        let location = format!(
            "/api/v1/workflows/definitions/{name}?version={}",
            reply.version
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

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/validate",
    tag = "definitions",
    request_body(content = String, description = "The definition as YAML, or JSON `{\"source\": \"…\"}`", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Whether it is valid, and every problem with its path", body = ValidateReply),
        crate::openapi::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate_definition(
    ctx: Ctx,
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<ValidateReply>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let source = definition_source(req, &state).await?;
    ctx.query::<ValidateDefinition>(&DefinitionSource {
        tenant: ctx.tenant().to_owned(),
        source,
    })
    .await
    .map(Json)
}

// ---- registry ----

#[utoipa::path(
    get,
    path = "/api/v1/registry",
    tag = "operations",
    responses(
        (status = 200, description = "Live services from `$SRV.INFO`: `{services: [{name, id, version, description, metadata, endpoints}]}`", body = Object),
        crate::openapi::AuthErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn registry(ctx: Ctx) -> Result<Json<Value>, Error> {
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

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Object))
)]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Connected to NATS and the streams exist", body = Object),
        (status = 503, description = "Not ready, and why", body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Error> {
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, Error> {
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
