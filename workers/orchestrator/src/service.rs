//! Queries over NATS request/reply, registered as the micro service `switchyard-orchestrator`
//! (so `$SRV.PING/INFO/STATS` discover it): instance status and the definitions API. The
//! gateway turns these into HTTP routes; the `switchyard` CLI calls them directly.
//!
//! The contract (endpoints, requests, replies, error codes) is
//! [`switchyard_proto::orchestrator`]; this module only answers it.

use std::{collections::HashMap, sync::Arc};

use async_nats::{
    HeaderMap,
    service::{Service, ServiceExt as _},
};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Serialize, de::DeserializeOwned};
use switchyard_catalog::declare::{Declaration, DeclarationError};
use switchyard_proto::{
    ContentType, RerunWorkflow, encode_proto, header, now_ms,
    orchestrator::{DeclareReply, DeclaredVersion},
    stream,
};
use switchyard_proto::{
    orchestrator::{
        self as contract, DefinitionDetail, DefinitionList, DefinitionRef, DefinitionScope,
        DefinitionStep, DefinitionSummary, DeleteDefinition, DeleteReply, Endpoint, ErrorReply,
        GetDeadLetter, GetDefinition, GetInstance, GetRegistry, InstanceError, InstanceGet,
        InstanceRerun, InstanceView, ItemsView, ListDeadLetters, ListDefinitions, PurgeDeadLetters,
        PutDefinition, PutReply, RegistryGet, RegistryView, ReplayDeadLetters, RerunInstance,
        RerunReply, RetireKind, RetireReply, RetireRequest, RetiredVersion, ServiceError,
        ServiceErrorCode, SignalView, StepError, StepView, ValidateDefinition, ValidateReply,
    },
    subject,
};
use switchyard_workflow::{
    Definition,
    operations::DeclareError,
    store::{Entry, PutError, Scope},
};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::{
    Error, dlq,
    instance::{Instance, StepStatus},
    registry,
    shared::Shared,
    transition::{self, Ctx, Rerun},
};

pub use switchyard_proto::orchestrator::{
    ERROR_CODE_HEADER, ERROR_HEADER, GROUP, SERVICE_NAME, endpoint, request_subject,
};

type Reply<E> = Result<<E as Endpoint>::Reply, ServiceError>;

/// Registers the service and answers its endpoints until `shutdown`; the endpoint loops and
/// every request in flight are tracked by `tracker`.
pub(crate) async fn start(
    shared: Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Service, Error> {
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
    // Each endpoint by name and subject; a declaration's subject ends in the kind, so the
    // broker can confine a kind's credentials to their own.
    let declare = format!("{}.*", endpoint::OPERATIONS_DECLARE);
    let endpoints = contract::ENDPOINTS
        .iter()
        .map(|&name| (name, name.to_owned()))
        .chain([(endpoint::OPERATIONS_DECLARE, declare)]);
    for (name, subject_name) in endpoints {
        let mut ep = group
            .endpoint_builder()
            .name(name.replace('.', "-"))
            .add(subject_name)
            .await
            .map_err(|e| Error::bus("adding a service endpoint", e))?;
        let shared = shared.clone();
        let requests = tracker.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = ep.next() => match r { Some(r) => r, None => break },
                };
                let shared = shared.clone();
                requests.spawn(async move {
                    let message = &request.message;
                    let (body, headers) =
                        answer(&shared, name, &message.subject, &message.payload).await;
                    if let Err(e) = request
                        .respond_with_headers(Ok(Bytes::from(body)), headers)
                        .await
                    {
                        warn!(endpoint = name, error = %e, "cannot reply");
                    }
                });
            }
        });
    }
    Ok(service)
}

/// Checks a kind's declaration, creates its stream and consumer when they are missing, then
/// stores the operation versions that are new.
async fn operations_declare(
    shared: &Shared,
    kind: &str,
    payload: &[u8],
) -> Result<DeclareReply, ServiceError> {
    let declaration: Declaration = parse(payload)?;
    declaration
        .check(kind)
        .map_err(|e| invalid_declaration(&e))?;
    // Jobs may be published as soon as the operations are stored: the stream comes first,
    // with as many copies as the engine's own inbox.
    let replicas = match shared.js.get_stream(stream::WF_INBOX).await {
        Ok(mut inbox) => inbox
            .info()
            .await
            .map_or(1, |i| i.config.num_replicas.max(1)),
        Err(_) => 1,
    };
    switchyard_bus_config::ensure_kind(
        &shared.js,
        &switchyard_bus_config::BusConfig::default(),
        kind,
        replicas,
    )
    .await
    .map_err(|e| {
        warn!(kind, error = %e, "cannot create a declared kind's stream");
        ServiceError::new(
            ServiceErrorCode::Internal,
            format!("the stream of kind {kind:?} could not be created"),
        )
    })?;
    let declared = match shared.operations.declare(kind, &declaration).await {
        Ok(declared) => declared,
        Err(DeclareError::Invalid(e)) => return Err(invalid_declaration(&e)),
        Err(e @ (DeclareError::VersionChanged { .. } | DeclareError::Incompatible(_))) => {
            return Err(ServiceError::new(ServiceErrorCode::Conflict, e.to_string()));
        }
        Err(DeclareError::Bus(e)) => return Err(internal(&e.into())),
    };
    for d in declared.iter().filter(|d| d.created) {
        info!(kind, operation = %d.name, version = d.version, "operation declared");
    }
    Ok(DeclareReply {
        kind: kind.to_owned(),
        stream: stream::jobs(kind),
        consumer: stream::worker_consumer(kind),
        operations: declared
            .into_iter()
            .map(|d| DeclaredVersion {
                name: d.name,
                version: d.version,
                created: d.created,
            })
            .collect(),
    })
}

/// A bad request naming the field at fault.
pub(crate) fn field_error(field: &str, message: String) -> ServiceError {
    ServiceError {
        code: ServiceErrorCode::BadRequest,
        message: format!("{field}: {message}"),
        problems: vec![contract::Problem {
            path: field.to_owned(),
            line: None,
            message,
        }],
    }
}

fn invalid_declaration(e: &DeclarationError) -> ServiceError {
    ServiceError {
        code: ServiceErrorCode::BadRequest,
        message: e.to_string(),
        problems: vec![contract::Problem {
            path: e.field.clone(),
            line: None,
            message: e.reason.clone(),
        }],
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ServiceError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ServiceError::new(
            ServiceErrorCode::BadRequest,
            format!("request body at `{}`: {}", e.path(), e.inner()),
        )
    })
}

fn tenant_scope(tenant: &str) -> Result<Scope, ServiceError> {
    subject::check_token(tenant)
        .map_err(|e| ServiceError::new(ServiceErrorCode::BadRequest, format!("tenant: {e}")))?;
    Ok(Scope::Tenant(tenant.to_owned()))
}

/// A reply's body and headers: the endpoint's reply, or [`ErrorReply`] with the error headers.
fn encode<T: Serialize>(reply: Result<T, ServiceError>) -> (Vec<u8>, HeaderMap) {
    match reply {
        Ok(v) => (serde_json::to_vec(&v).unwrap_or_default(), HeaderMap::new()),
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(
                contract::ERROR_HEADER,
                e.message.replace(['\r', '\n'], " ").as_str(),
            );
            h.insert(
                contract::ERROR_CODE_HEADER,
                e.code.status().to_string().as_str(),
            );
            (
                serde_json::to_vec(&ErrorReply { error: e }).unwrap_or_default(),
                h,
            )
        }
    }
}

async fn answer(
    shared: &Shared,
    endpoint: &str,
    subject_name: &str,
    payload: &[u8],
) -> (Vec<u8>, HeaderMap) {
    match endpoint {
        endpoint::OPERATIONS_DECLARE => {
            let kind = subject_name.rsplit('.').next().unwrap_or_default();
            encode(operations_declare(shared, kind, payload).await)
        }
        GetInstance::NAME => encode(instance_get(shared, payload).await),
        RerunInstance::NAME => encode(instance_rerun(shared, payload).await),
        ListDefinitions::NAME => encode(definitions_list(shared, payload)),
        ListDeadLetters::NAME => encode(match parse(payload) {
            Ok(req) => dlq::list(shared, req).await,
            Err(e) => Err(e),
        }),
        GetDeadLetter::NAME => encode(match parse(payload) {
            Ok(req) => dlq::show(shared, req).await,
            Err(e) => Err(e),
        }),
        ReplayDeadLetters::NAME => encode(match parse(payload) {
            Ok(req) => dlq::replay(shared, req).await,
            Err(e) => Err(e),
        }),
        PurgeDeadLetters::NAME => encode(match parse(payload) {
            Ok(req) => dlq::purge(shared, req).await,
            Err(e) => Err(e),
        }),
        GetDefinition::NAME => encode(definitions_get(shared, payload)),
        PutDefinition::NAME => encode(definitions_put(shared, payload).await),
        DeleteDefinition::NAME => encode(definitions_delete(shared, payload).await),
        ValidateDefinition::NAME => encode(definitions_validate(shared, payload)),
        GetRegistry::NAME => encode(registry_get(shared, payload).await),
        RetireKind::NAME => encode(operations_retire(shared, payload).await),
        other => encode::<()>(Err(ServiceError::new(
            ServiceErrorCode::NotFound,
            format!("no endpoint {other}"),
        ))),
    }
}

/// What keeps a definition's instances waiting: a declared operation, or a capability, that
/// has no live replica to run it now.
fn unserved(shared: &Shared, def: &Definition) -> Vec<String> {
    let catalog = shared.operations.catalog();
    let mut warnings = Vec::new();
    for step in &def.steps {
        if let Some(op) = &step.operation {
            let kind = op.split('.').next().unwrap_or_default();
            if shared.operations.is_declared_kind(kind) && !shared.replicas.is_live(kind) {
                warnings.push(format!(
                    "step {:?}: no replica of kind {kind:?} is running; its jobs wait for one",
                    step.id
                ));
            }
        }
        if let Some(capability) = &step.capability
            && !catalog
                .providers(capability)
                .any(|op| shared.replicas.is_live(&op.kind))
        {
            warnings.push(format!(
                "step {:?}: no replica provides capability {capability:?} now; its jobs wait for one",
                step.id
            ));
        }
    }
    warnings
}

async fn registry_get(shared: &Shared, payload: &[u8]) -> Reply<GetRegistry> {
    let req: RegistryGet = parse(payload)?;
    Ok::<RegistryView, _>(registry::view(shared, req.tenant.as_deref()).await)
}

/// Removes the declarations of a kind no registered definition needs.
async fn operations_retire(shared: &Shared, payload: &[u8]) -> Reply<RetireKind> {
    let req: RetireRequest = parse(payload)?;
    let kind = req.kind.as_str();
    if switchyard_catalog::Catalog::builtin()
        .of_kind(kind)
        .next()
        .is_some()
    {
        return Err(ServiceError::new(
            ServiceErrorCode::BadRequest,
            format!("{kind:?} is a built-in kind; only kinds declared at run time can be retired"),
        ));
    }
    if !shared.operations.is_declared_kind(kind) {
        return Err(ServiceError::new(
            ServiceErrorCode::NotFound,
            format!("no operations of kind {kind:?} are declared"),
        ));
    }
    let users = registry::needed_by(shared, kind);
    if !users.is_empty() {
        let names: Vec<String> = users.iter().map(ToString::to_string).collect();
        return Err(ServiceError::new(
            ServiceErrorCode::Conflict,
            format!(
                "kind {kind:?} is used by {}; delete those definitions first",
                names.join(", ")
            ),
        ));
    }
    let retired = shared
        .operations
        .retire(kind)
        .await
        .map_err(|e| internal(&e.into()))?;
    info!(kind, operations = retired.len(), "kind retired");
    Ok(RetireReply {
        kind: kind.to_owned(),
        retired: retired
            .into_iter()
            .map(|(name, version)| RetiredVersion { name, version })
            .collect(),
    })
}

fn definitions_list(shared: &Shared, payload: &[u8]) -> Reply<ListDefinitions> {
    let req: contract::DefinitionsList = parse(payload)?;
    tenant_scope(&req.tenant)?;
    let definitions = shared
        .definitions
        .list(&req.tenant, req.include_deleted)
        .iter()
        .map(summary)
        .collect();
    Ok(DefinitionList { definitions })
}

fn definitions_get(shared: &Shared, payload: &[u8]) -> Reply<GetDefinition> {
    let req: DefinitionRef = parse(payload)?;
    tenant_scope(&req.tenant)?;
    let entry = shared
        .definitions
        .resolve(&req.tenant, &req.name, req.version.unwrap_or(0))
        .ok_or_else(|| not_found_definition(&req))?;
    Ok(detail(&entry))
}

async fn definitions_put(shared: &Shared, payload: &[u8]) -> Reply<PutDefinition> {
    let req: contract::DefinitionSource = parse(payload)?;
    let scope = tenant_scope(&req.tenant)?;
    match shared.definitions.put(&scope, &req.source).await {
        Ok((created, def)) => Ok(PutReply {
            name: def.name.clone(),
            version: def.version,
            created,
            warnings: unserved(shared, &def),
        }),
        Err(PutError::Invalid(problems)) => Err(ServiceError {
            code: ServiceErrorCode::InvalidDefinition,
            message: problems.to_string(),
            problems: problems.0,
        }),
        Err(e @ PutError::VersionExists { .. }) => {
            Err(ServiceError::new(ServiceErrorCode::Conflict, e.to_string()))
        }
        Err(PutError::Bus(e)) => Err(internal(&e.into())),
    }
}

async fn definitions_delete(shared: &Shared, payload: &[u8]) -> Reply<DeleteDefinition> {
    let req: DefinitionRef = parse(payload)?;
    let scope = tenant_scope(&req.tenant)?;
    let deleted = shared
        .definitions
        .delete(&scope, &req.name, req.version)
        .await
        .map_err(|e| internal(&e.into()))?;
    if deleted == 0 {
        return Err(not_found_definition(&req));
    }
    Ok(DeleteReply { deleted })
}

fn definitions_validate(shared: &Shared, payload: &[u8]) -> Reply<ValidateDefinition> {
    let req: contract::DefinitionSource = parse(payload)?;
    Ok(match shared.definitions.parse(&req.source) {
        Ok(def) => ValidateReply {
            valid: true,
            name: Some(def.name),
            version: Some(def.version),
            problems: Vec::new(),
        },
        Err(problems) => ValidateReply {
            valid: false,
            name: None,
            version: None,
            problems: problems.0,
        },
    })
}

fn internal(e: &Error) -> ServiceError {
    warn!(error = %e, "query failed");
    ServiceError::new(
        ServiceErrorCode::Internal,
        "the orchestrator could not complete the request",
    )
}

fn not_found_definition(req: &DefinitionRef) -> ServiceError {
    let what = match req.version {
        Some(v) => format!("workflow {:?} version {v}", req.name),
        None => format!("workflow {:?}", req.name),
    };
    ServiceError::new(
        ServiceErrorCode::NotFound,
        format!("{what} is not registered"),
    )
}

fn scope_of(entry: &Entry) -> DefinitionScope {
    match entry.scope {
        Scope::Shared => DefinitionScope::Shared,
        Scope::Tenant(_) => DefinitionScope::Tenant,
    }
}

fn summary(entry: &Entry) -> DefinitionSummary {
    let d = &entry.definition;
    DefinitionSummary {
        name: d.name.clone(),
        version: d.version,
        description: d.description.clone(),
        scope: scope_of(entry),
        registered_at_ms: entry.registered_at_ms,
        deleted: entry.deleted,
        steps: d.steps.len(),
    }
}

fn detail(entry: &Entry) -> DefinitionDetail {
    let d: &Definition = &entry.definition;
    DefinitionDetail {
        name: d.name.clone(),
        version: d.version,
        description: d.description.clone(),
        scope: scope_of(entry),
        registered_at_ms: entry.registered_at_ms,
        deleted: entry.deleted,
        input: serde_json::to_value(&d.input).unwrap_or_default(),
        steps: d
            .steps
            .iter()
            .map(|s| DefinitionStep {
                id: s.id.clone(),
                operation: s.operation.clone(),
                capability: s.capability.clone(),
                needs: s.needs.clone(),
                wait_for_signal: s.wait_for_signal.as_ref().map(|w| w.name.clone()),
            })
            .collect(),
        source: d.source.clone(),
    }
}

async fn instance_get(shared: &Shared, payload: &[u8]) -> Reply<GetInstance> {
    let req: InstanceGet = parse(payload)?;
    let state = tenants_instance(shared, &req.tenant, &req.instance_id).await?;
    let def = shared.definition_of(&state).await;
    Ok(status_view(&state, def.as_deref()))
}

/// `tenant`'s instance `id`; another tenant's is indistinguishable from a missing one.
pub(crate) async fn tenants_instance(
    shared: &Shared,
    tenant: &str,
    id: &str,
) -> Result<Instance, ServiceError> {
    let not_found = || {
        ServiceError::new(
            ServiceErrorCode::NotFound,
            format!("instance {id:?} not found"),
        )
    };
    if subject::check_token(id).is_err() {
        return Err(not_found());
    }
    let entry = shared
        .state
        .get(id)
        .await
        .map_err(|e| internal(&Error::bus("reading instance state", e)))?
        .ok_or_else(not_found)?;
    let state: Instance = serde_json::from_slice(&entry)
        .map_err(|e| internal(&Error::bus("decoding instance state", e)))?;
    if state.tenant != tenant {
        return Err(not_found());
    }
    Ok(state)
}

/// Checks a re-run against the instance as stored now (the same check the engine makes when
/// it applies it), then stores it on the bus for the engine and audits it.
pub(crate) async fn instance_rerun(shared: &Shared, payload: &[u8]) -> Reply<RerunInstance> {
    let req: InstanceRerun = parse(payload)?;
    let state = tenants_instance(shared, &req.tenant, &req.instance_id).await?;
    let ask = RerunAsk {
        version: req.version,
        from_step: req.from_step,
        requested_by: req.requested_by,
        reason: req.reason,
        correlation_id: req.correlation_id,
    };
    rerun(shared, state, ask).await
}

/// What a re-run asks for, besides the instance.
#[derive(Debug, Clone)]
pub(crate) struct RerunAsk {
    pub version: Option<u32>,
    pub from_step: Option<String>,
    pub requested_by: String,
    pub reason: Option<String>,
    pub correlation_id: Option<String>,
}

/// Re-runs `state`, checked as the engine will check it when it applies it; audited.
pub(crate) async fn rerun(shared: &Shared, state: Instance, req: RerunAsk) -> Reply<RerunInstance> {
    let version = req.version.unwrap_or(state.version);
    let def = shared
        .definitions
        .exact(&state.tenant, &state.workflow, version)
        .await
        .map_err(|e| internal(&e.into()))?
        .ok_or_else(|| {
            field_error(
                "version",
                format!("workflow {:?} has no version {version}", state.workflow),
            )
        })?;
    if version < state.version {
        return Err(field_error(
            "version",
            format!(
                "the instance runs version {}; a re-run may move it to a newer one, not back",
                state.version
            ),
        ));
    }
    let message = RerunWorkflow {
        tenant: state.tenant.clone(),
        instance_id: state.id.clone(),
        run: state.run + 1,
        from_step: req.from_step.clone().unwrap_or_default(),
        version: if version == state.version { 0 } else { version },
        requested_by: req.requested_by.clone(),
        reason: req.reason.clone().unwrap_or_default(),
        correlation_id: req
            .correlation_id
            .clone()
            .unwrap_or_else(|| state.correlation_id.clone()),
    };
    let ctx = Ctx {
        now_ms: now_ms(),
        env: &shared.env,
        routes: &shared.routes,
    };
    let planned =
        transition::rerun(&def, &state, &message, ctx).map_err(|refusal| match refusal.field {
            Some(field) => field_error(field, refusal.message),
            None => ServiceError::new(ServiceErrorCode::Conflict, refusal.message),
        })?;
    let mut headers = HeaderMap::new();
    // The same re-run asked twice is stored once.
    headers.insert(
        header::MSG_ID,
        format!("rerun.{}.{}", state.id, message.run).as_str(),
    );
    headers.insert(header::TENANT, state.tenant.as_str());
    headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
    if !message.correlation_id.is_empty() {
        headers.insert(header::CORRELATION_ID, message.correlation_id.as_str());
    }
    shared
        .js
        .publish_with_headers(
            subject::rerun(&state.tenant, &state.id),
            headers,
            encode_proto(&message).into(),
        )
        .await
        .map_err(|e| internal(&Error::bus("storing a re-run", e)))?
        .await
        .map_err(|e| internal(&Error::bus("storing a re-run", e)))?;
    let Rerun { steps, kept, .. } = planned;
    audit(
        shared,
        &switchyard_runtime::audit::Record {
            tenant: &state.tenant,
            actor: &req.requested_by,
            action: switchyard_proto::audit::INSTANCE_RERUN,
            target: &state.id,
            outcome: switchyard_proto::audit::OK,
            correlation_id: &message.correlation_id,
            attributes: [
                ("run".to_owned(), message.run.to_string()),
                ("version".to_owned(), def.version.to_string()),
                ("from_step".to_owned(), message.from_step.clone()),
                ("steps".to_owned(), steps.join(",")),
                ("reason".to_owned(), message.reason.clone()),
            ]
            .into(),
        },
    )
    .await;
    info!(instance = %state.id, run = message.run, requested_by = %req.requested_by, "re-run accepted");
    Ok(RerunReply {
        instance_id: state.id,
        run: message.run,
        version: def.version,
        steps,
        kept,
    })
}

/// Writes an audit record; an action already carried out is not undone when this fails.
pub(crate) async fn audit(shared: &Shared, record: &switchyard_runtime::audit::Record<'_>) {
    if let Err(e) = record.publish(&shared.js).await {
        warn!(action = record.action, error = %e, "audit event not stored");
    }
}

/// What a user sees of an instance: where each step is, its attempts, timings, output or error.
pub fn status_view(state: &Instance, def: Option<&Definition>) -> InstanceView {
    let steps = state
        .steps
        .iter()
        .map(|s| {
            let spec = def.and_then(|d| d.step(&s.id));
            StepView {
                id: s.id.clone(),
                operation: s.operation.clone(),
                version: s.version,
                capability: spec.and_then(|p| p.capability.clone()),
                status: s.status,
                attempts: s.attempts,
                scheduled_at_ms: s.scheduled_at_ms,
                started_at_ms: s.started_at_ms,
                finished_at_ms: s.finished_at_ms,
                duration_ms: s.scheduled_at_ms.zip(s.finished_at_ms).map(|(a, b)| b - a),
                needs: spec.map(|p| p.needs.clone()).unwrap_or_default(),
                output: s.output.clone(),
                error: s.error.as_ref().map(|e| StepError {
                    code: e.code.clone(),
                    message: e.message.clone(),
                }),
                items: (!s.items.is_empty()).then(|| ItemsView {
                    total: s.items.len(),
                    finished: s.items.iter().filter(|i| i.status.is_terminal()).count(),
                    failed: s
                        .items
                        .iter()
                        .filter(|i| i.status == StepStatus::Failed)
                        .count(),
                }),
                signal: spec
                    .and_then(|p| p.wait_for_signal.as_ref())
                    .map(|w| SignalView {
                        name: w.name.clone(),
                        received: s.signal.is_some(),
                        sla_ms: w.sla.map(|d| d.as_millis() as u64),
                        sla_breached: s.sla_breached,
                    }),
                wake_at_ms: s.wake_at_ms,
                worker_id: (!s.worker_id.is_empty()).then(|| s.worker_id.clone()),
            }
        })
        .collect();
    InstanceView {
        instance_id: state.id.clone(),
        tenant: state.tenant.clone(),
        workflow: state.workflow.clone(),
        version: state.version,
        status: state.status,
        correlation_id: state.correlation_id.clone(),
        input: state.input.clone(),
        output: state.output.clone(),
        error: state.error.as_ref().map(|e| InstanceError {
            step: e.step.clone(),
            code: e.code.clone(),
            message: e.message.clone(),
        }),
        labels: state.labels.clone(),
        run: state.run,
        not_before_ms: state.not_before_ms,
        started_at_ms: state.started_at_ms,
        finished_at_ms: state.finished_at_ms,
        duration_ms: state.finished_at_ms.map(|f| f - state.started_at_ms),
        steps,
    }
}
