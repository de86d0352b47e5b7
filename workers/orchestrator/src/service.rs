//! Queries over NATS request/reply, registered as the micro service `switchyard-orchestrator`
//! (so `$SRV.PING/INFO/STATS` discover it): instance status and the definitions API. The
//! gateway turns these into HTTP routes; the `switchyard` CLI calls them directly.
//!
//! Requests and replies are JSON. A failed request still gets a JSON body, `{"error": {...}}`
//! (see [`ApiError`]), plus the `Nats-Service-Error` and `Nats-Service-Error-Code` headers.

use std::{collections::HashMap, sync::Arc};

use async_nats::{
    HeaderMap,
    service::{Service, ServiceExt as _},
};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use switchyard_proto::subject;
use tracing::warn;

use crate::{
    Error,
    definition::{Definition, Problem},
    engine::{Shared, definition_of},
    instance::{Instance, StepStatus},
    store::{Entry, PutError, Scope},
};

/// The service name under which every orchestrator replica registers.
pub const SERVICE_NAME: &str = "switchyard-orchestrator";
/// The header that marks a failed request, with an HTTP-like status (400, 404, 409, 500).
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
/// The header with a failed request's message.
pub const ERROR_HEADER: &str = "Nats-Service-Error";

/// The endpoint group: `svc.orchestrator.<endpoint>`.
pub const GROUP: &str = "orchestrator";

/// The endpoints, by their name under `svc.orchestrator.`.
pub mod endpoint {
    pub const INSTANCE_GET: &str = "instance.get";
    pub const DEFINITIONS_LIST: &str = "definitions.list";
    pub const DEFINITIONS_GET: &str = "definitions.get";
    pub const DEFINITIONS_PUT: &str = "definitions.put";
    pub const DEFINITIONS_DELETE: &str = "definitions.delete";
    pub const DEFINITIONS_VALIDATE: &str = "definitions.validate";
    pub const ALL: [&str; 6] = [
        INSTANCE_GET,
        DEFINITIONS_LIST,
        DEFINITIONS_GET,
        DEFINITIONS_PUT,
        DEFINITIONS_DELETE,
        DEFINITIONS_VALIDATE,
    ];
}

/// The request subject of an endpoint, e.g. `svc.orchestrator.instance.get`.
pub fn request_subject(endpoint: &str) -> String {
    format!("{}.{endpoint}", subject::service_group(GROUP))
}

/// `instance.get`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGet {
    pub tenant: String,
    pub instance_id: String,
}

/// `definitions.list`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsList {
    pub tenant: String,
    #[serde(default)]
    pub include_deleted: bool,
}

/// `definitions.get` and `definitions.delete`; version `None` is the latest (get) or every
/// version (delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRef {
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub version: Option<u32>,
}

/// `definitions.put` and `definitions.validate`: the YAML (or JSON) text of a definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSource {
    pub tenant: String,
    pub source: String,
}

/// The error body of a failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// `bad_request`, `invalid_definition`, `not_found`, `conflict`, `internal`.
    pub code: String,
    pub message: String,
    /// For `invalid_definition`: every problem with its path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ApiError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_owned(),
            message: message.into(),
            problems: Vec::new(),
        }
    }

    /// The HTTP-like status carried in `Nats-Service-Error-Code`.
    pub fn status(&self) -> u16 {
        match self.code.as_str() {
            "bad_request" | "invalid_definition" => 400,
            "not_found" => 404,
            "conflict" => 409,
            _ => 500,
        }
    }
}

type Reply = Result<Value, ApiError>;

pub(crate) async fn start(shared: Arc<Shared>) -> Result<Service, Error> {
    let service = shared
        .client
        .service_builder()
        .description("Switchyard workflow engine: instance status and workflow definitions")
        .metadata(HashMap::from([
            ("kind".to_owned(), GROUP.to_owned()),
            ("replica_id".to_owned(), shared.replica_id.clone()),
        ]))
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| Error::bus("registering the service", e))?;
    let group = service.group(subject::service_group(GROUP));
    for name in endpoint::ALL {
        let mut ep = group
            .endpoint_builder()
            .name(name.replace('.', "-"))
            .add(name)
            .await
            .map_err(|e| Error::bus("adding a service endpoint", e))?;
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(request) = ep.next().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let reply = answer(&shared, name, &request.message.payload).await;
                    let (body, headers) = match reply {
                        Ok(v) => (v, HeaderMap::new()),
                        Err(e) => {
                            let mut h = HeaderMap::new();
                            h.insert(ERROR_HEADER, e.message.replace(['\r', '\n'], " ").as_str());
                            h.insert(ERROR_CODE_HEADER, e.status().to_string().as_str());
                            (json!({ "error": e }), h)
                        }
                    };
                    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
                    if let Err(e) = request.respond_with_headers(Ok(bytes), headers).await {
                        warn!(endpoint = name, error = %e, "cannot reply");
                    }
                });
            }
        });
    }
    Ok(service)
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            "bad_request",
            format!("request body at `{}`: {}", e.path(), e.inner()),
        )
    })
}

fn tenant_scope(tenant: &str) -> Result<Scope, ApiError> {
    subject::check_token(tenant)
        .map_err(|e| ApiError::new("bad_request", format!("tenant: {e}")))?;
    Ok(Scope::Tenant(tenant.to_owned()))
}

async fn answer(shared: &Shared, endpoint: &str, payload: &[u8]) -> Reply {
    match endpoint {
        endpoint::INSTANCE_GET => {
            let req: InstanceGet = parse(payload)?;
            instance_get(shared, &req).await
        }
        endpoint::DEFINITIONS_LIST => {
            let req: DefinitionsList = parse(payload)?;
            tenant_scope(&req.tenant)?;
            let list: Vec<Value> = shared
                .definitions
                .list(&req.tenant, req.include_deleted)
                .iter()
                .map(summary)
                .collect();
            Ok(json!({ "definitions": list }))
        }
        endpoint::DEFINITIONS_GET => {
            let req: DefinitionRef = parse(payload)?;
            tenant_scope(&req.tenant)?;
            let entry = shared
                .definitions
                .resolve(&req.tenant, &req.name, req.version.unwrap_or(0))
                .ok_or_else(|| not_found_definition(&req))?;
            Ok(detail(&entry))
        }
        endpoint::DEFINITIONS_PUT => {
            let req: DefinitionSource = parse(payload)?;
            let scope = tenant_scope(&req.tenant)?;
            match shared.definitions.put(&scope, &req.source).await {
                Ok((created, def)) => Ok(json!({
                    "name": def.name,
                    "version": def.version,
                    "created": created,
                })),
                Err(PutError::Invalid(problems)) => Err(ApiError {
                    code: "invalid_definition".into(),
                    message: problems.to_string(),
                    problems: problems.0,
                }),
                Err(e @ PutError::VersionExists { .. }) => {
                    Err(ApiError::new("conflict", e.to_string()))
                }
                Err(PutError::Bus(e)) => Err(internal(&e)),
            }
        }
        endpoint::DEFINITIONS_DELETE => {
            let req: DefinitionRef = parse(payload)?;
            let scope = tenant_scope(&req.tenant)?;
            let n = shared
                .definitions
                .delete(&scope, &req.name, req.version)
                .await
                .map_err(|e| internal(&e))?;
            if n == 0 {
                return Err(not_found_definition(&req));
            }
            Ok(json!({ "deleted": n }))
        }
        endpoint::DEFINITIONS_VALIDATE => {
            let req: DefinitionSource = parse(payload)?;
            match shared.definitions.parse(&req.source) {
                Ok(def) => Ok(json!({ "valid": true, "name": def.name, "version": def.version })),
                Err(problems) => Ok(json!({ "valid": false, "problems": problems.0 })),
            }
        }
        other => Err(ApiError::new("not_found", format!("no endpoint {other}"))),
    }
}

fn internal(e: &Error) -> ApiError {
    warn!(error = %e, "query failed");
    ApiError::new(
        "internal",
        "the orchestrator could not complete the request",
    )
}

fn not_found_definition(req: &DefinitionRef) -> ApiError {
    let what = match req.version {
        Some(v) => format!("workflow {:?} version {v}", req.name),
        None => format!("workflow {:?}", req.name),
    };
    ApiError::new("not_found", format!("{what} is not registered"))
}

fn summary(entry: &Entry) -> Value {
    let d = &entry.definition;
    json!({
        "name": d.name,
        "version": d.version,
        "description": d.description,
        "scope": entry.scope.as_str(),
        "registered_at_ms": entry.registered_at_ms,
        "deleted": entry.deleted,
        "steps": d.steps.len(),
    })
}

fn detail(entry: &Entry) -> Value {
    let d: &Definition = &entry.definition;
    let mut v = summary(entry);
    v["input"] = serde_json::to_value(&d.input).unwrap_or(Value::Null);
    v["steps"] = d
        .steps
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "operation": s.operation,
                "needs": s.needs,
                "wait_for_signal": s.wait_for_signal.as_ref().map(|w| &w.name),
            })
        })
        .collect();
    v["source"] = Value::String(d.source.clone());
    v
}

async fn instance_get(shared: &Shared, req: &InstanceGet) -> Reply {
    let not_found = || {
        ApiError::new(
            "not_found",
            format!("instance {:?} not found", req.instance_id),
        )
    };
    if subject::check_token(&req.instance_id).is_err() {
        return Err(not_found());
    }
    let entry = shared
        .state
        .get(&req.instance_id)
        .await
        .map_err(|e| internal(&Error::bus("reading instance state", e)))?
        .ok_or_else(not_found)?;
    let state: Instance = serde_json::from_slice(&entry)
        .map_err(|e| internal(&Error::bus("decoding instance state", e)))?;
    // Another tenant's instance is indistinguishable from a missing one.
    if state.tenant != req.tenant {
        return Err(not_found());
    }
    let def = definition_of(shared, &state).await;
    Ok(status_view(&state, def.as_deref()))
}

/// What a user sees of an instance: where each step is, its attempts, timings, output or error.
pub fn status_view(state: &Instance, def: Option<&Definition>) -> Value {
    let steps: Vec<Value> = state
        .steps
        .iter()
        .map(|s| {
            let spec = def.and_then(|d| d.step(&s.id));
            let mut v = json!({
                "id": s.id,
                "operation": s.operation,
                "status": s.status.as_str(),
                "attempts": s.attempts,
                "scheduled_at_ms": s.scheduled_at_ms,
                "started_at_ms": s.started_at_ms,
                "finished_at_ms": s.finished_at_ms,
                "duration_ms": s.scheduled_at_ms.zip(s.finished_at_ms).map(|(a, b)| b - a),
                "needs": spec.map(|p| p.needs.clone()).unwrap_or_default(),
            });
            if let Some(o) = &s.output {
                v["output"] = o.clone();
            }
            if let Some(e) = &s.error {
                v["error"] = json!({ "code": e.code, "message": e.message });
            }
            if !s.items.is_empty() {
                let done = s.items.iter().filter(|i| i.status.is_terminal()).count();
                v["items"] = json!({
                    "total": s.items.len(),
                    "finished": done,
                    "failed": s.items.iter().filter(|i| i.status == StepStatus::Failed).count(),
                });
            }
            if let Some(w) = spec.and_then(|p| p.wait_for_signal.as_ref()) {
                v["signal"] = json!({
                    "name": w.name,
                    "received": s.signal.is_some(),
                    "sla_ms": w.sla.map(|d| d.as_millis() as u64),
                    "sla_breached": s.sla_breached,
                });
            }
            if !s.worker_id.is_empty() {
                v["worker_id"] = Value::String(s.worker_id.clone());
            }
            v
        })
        .collect();
    json!({
        "instance_id": state.id,
        "tenant": state.tenant,
        "workflow": state.workflow,
        "version": state.version,
        "status": state.status.as_str(),
        "correlation_id": state.correlation_id,
        "input": state.input,
        "output": state.output,
        "error": state.error.as_ref().map(|e| json!({ "step": e.step, "code": e.code, "message": e.message })),
        "labels": state.labels,
        "started_at_ms": state.started_at_ms,
        "finished_at_ms": state.finished_at_ms,
        "duration_ms": state.finished_at_ms.map(|f| f - state.started_at_ms),
        "steps": steps,
    })
}
