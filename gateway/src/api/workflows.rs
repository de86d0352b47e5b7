//! `/api/v1/workflows/…`: trigger, execute (with wait), status, cancel and signal.

use std::time::Duration;

use axum::{
    Json,
    extract::Path,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_proto::orchestrator::{InstanceRerun, InstanceView, RerunInstance, RerunReply};
use switchyard_proto::{CancelWorkflow, SignalWorkflow, encode_proto, event, subject};

use crate::{
    Error, Permission,
    extract::{Ctx, JsonBody, check_token},
    limits::Group,
    responses::{accepted, status_url},
    route::{Deadline, RouteDef, route},
    start::{ExecuteRequest, PreparedStart, TriggerRequest, prepare_start, publish_start},
};

#[utoipa::path(
    post,
    path = "/api/v1/workflows/trigger",
    tag = "workflows",
    request_body = TriggerRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the same instance instead of starting another")),
    responses(
        (status = 202, description = "The start is stored on the bus", body = crate::responses::Accepted),
        crate::responses::StartErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn trigger(
    ctx: Ctx,
    JsonBody(req): JsonBody<TriggerRequest>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let labels = crate::start::labels(req.labels)?;
    let not_before = crate::start::not_before(req.not_before)?;
    let mut start = prepare_start(
        &ctx,
        &req.workflow_name,
        "workflow_name",
        req.version,
        req.input,
    )
    .await?;
    start.message.labels = labels;
    start.message.not_before_ms = not_before;
    publish_start(&ctx, &start).await?;
    Ok(accepted(&start.instance_id))
}

/// `{workflow_type, input?, wait?, version?, labels?, ...}`: other top-level fields join the
/// input.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/execute",
    tag = "workflows",
    request_body(content = ExecuteRequest, description = "`workflow_type`, optional `input`, `wait`, `version` and `labels`; any other top-level field (e.g. `card_ids`, `additional_context`) joins the input"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the same instance")),
    responses(
        (status = 200, description = "The instance finished within `wait`", body = InstanceView),
        (status = 202, description = "Started; still running after `wait`", body = crate::responses::Accepted),
        crate::responses::StartErrors
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
        Some(v) => Some(crate::start::version_of(&v).ok_or_else(|| {
            Error::field("version", "expected a whole number from 0 to 4294967295")
        })?),
    };
    let labels = match body.remove("labels") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => serde_json::from_value(v).map_err(|_| {
            Error::field(
                "labels",
                "expected an object of strings, e.g. {\"team\": \"growth\"}",
            )
        })?,
    };
    let labels = crate::start::labels(labels)?;
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
    let mut start = prepare_start(
        &ctx,
        &workflow,
        "workflow_type",
        version,
        Value::Object(input),
    )
    .await?;
    start.message.labels = labels;
    if wait.is_zero() {
        publish_start(&ctx, &start).await?;
        return Ok(accepted(&start.instance_id));
    }
    match start_and_wait(&ctx, &start, wait, |_| {}).await? {
        Some(status) => Ok((StatusCode::OK, Json(status)).into_response()),
        None => Ok(accepted(&start.instance_id)),
    }
}

/// Publishes `start` and waits up to `wait` for the instance to finish, handing each of its
/// events to `on_event` meanwhile: the finished instance, or `None` while it still runs.
pub(crate) async fn start_and_wait(
    ctx: &Ctx,
    start: &PreparedStart,
    wait: Duration,
    mut on_event: impl FnMut(&async_nats::Message) + Send,
) -> Result<Option<InstanceView>, Error> {
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
    let duplicate = publish_start(ctx, start).await?;
    if duplicate {
        let status = ctx.instance(&start.instance_id).await?;
        if is_terminal(&status) {
            return Ok(Some(status));
        }
    }
    let finished = tokio::time::timeout(wait, async {
        while let Some(msg) = events.next().await {
            on_event(&msg);
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
            return Ok(Some(status));
        }
    }
    Ok(None)
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
        crate::responses::ReadErrors
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
        crate::responses::ReadErrors
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
        (status = 202, description = "The cancel is stored on the bus", body = crate::responses::Accepted),
        crate::responses::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CancelRequest>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let reason = req.reason.unwrap_or_else(|| "cancelled over HTTP".into());
    cancel_instance(&ctx, &id, reason).await?;
    Ok(accepted(&id))
}

/// What a re-run changes; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RerunRequest {
    /// Also run this step, and every step downstream of it, again (needed to re-run a
    /// completed instance).
    #[serde(default)]
    from_step: Option<String>,
    /// Continue under this newer version of the instance's workflow; it must keep the
    /// completed steps' ids and accept their outputs.
    #[serde(default)]
    version: Option<u32>,
    /// Why, for the events and the audit log.
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/instances/{id}/rerun",
    tag = "workflows",
    params(("id" = String, Path, description = "The instance id")),
    request_body(content = Option<RerunRequest>, description = "Optional: a step to re-run from, a newer version, a reason"),
    responses(
        (status = 202, description = "The re-run is stored on the bus: the run it makes, the steps that run again and those kept", body = RerunReply),
        crate::responses::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rerun(
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RerunRequest>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    if let Some(step) = &req.from_step {
        check_token("from_step", step)?;
    }
    if req.version == Some(0) {
        return Err(Error::field("version", "expected a version, 1 or more"));
    }
    let reply = rerun_instance(&ctx, &id, req.from_step, req.version, req.reason).await?;
    let mut response = accepted(&id);
    *response.body_mut() = axum::body::Body::from(
        serde_json::to_vec(&reply).map_err(|e| Error::internal("encoding a reply", e))?,
    );
    Ok(response)
}

/// Asks the engine to re-run the caller's tenant's finished instance `id`; the engine checks
/// it, stores it on the bus and audits it.
pub(crate) async fn rerun_instance(
    ctx: &Ctx,
    id: &str,
    from_step: Option<String>,
    version: Option<u32>,
    reason: Option<String>,
) -> Result<RerunReply, Error> {
    ctx.query::<RerunInstance>(&InstanceRerun {
        tenant: ctx.tenant().to_owned(),
        instance_id: id.to_owned(),
        from_step,
        version,
        requested_by: ctx.caller.subject.clone(),
        reason,
        correlation_id: Some(ctx.correlation.clone()).filter(|c| !c.is_empty()),
    })
    .await
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
        (status = 202, description = "The signal is stored on the bus", body = crate::responses::SignalAccepted),
        crate::responses::ControlErrors
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
            ctx.meta.message_headers(&format!("signal-{signal_id}")),
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

/// Asks the engine to cancel `tenant`'s running instance `id`, audited.
pub(crate) async fn cancel_instance(ctx: &Ctx, id: &str, reason: String) -> Result<(), Error> {
    let status = ctx.instance(id).await?;
    if is_terminal(&status) {
        return Err(Error::Conflict(format!(
            "instance {id:?} already finished ({})",
            status.status.as_str()
        )));
    }
    publish_cancel(ctx, id, reason).await
}

/// Publishes the cancel of the caller's tenant's instance `id`, audited, without asking the
/// engine first (a finished instance ignores it).
pub(crate) async fn publish_cancel(ctx: &Ctx, id: &str, reason: String) -> Result<(), Error> {
    let message = CancelWorkflow {
        tenant: ctx.tenant().to_owned(),
        instance_id: id.to_owned(),
        reason,
        requested_by: ctx.caller.subject.clone(),
        correlation_id: ctx.correlation.clone(),
    };
    ctx.state
        .bus()
        .publish(
            subject::cancel(ctx.tenant(), id),
            ctx.meta.message_headers(&format!("cancel-{id}")),
            encode_proto(&message),
        )
        .await?;
    ctx.audit(
        switchyard_proto::audit::INSTANCE_CANCEL,
        id,
        [("reason".to_owned(), message.reason)].into(),
    );
    Ok(())
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::POST,
            "/api/v1/workflows/trigger",
            Group::Start,
            Deadline::Request,
            trigger,
        ),
        route(
            M::POST,
            "/api/v1/workflows/execute",
            Group::Start,
            Deadline::RequestAndWait,
            execute,
        ),
        route(
            M::GET,
            "/api/v1/workflows/status/{id}",
            Group::Read,
            Deadline::Request,
            status,
        ),
        route(
            M::GET,
            "/api/v1/workflows/instances/{id}",
            Group::Read,
            Deadline::Request,
            instance,
        ),
        route(
            M::POST,
            "/api/v1/workflows/instances/{id}/cancel",
            Group::Control,
            Deadline::Request,
            cancel,
        ),
        route(
            M::POST,
            "/api/v1/workflows/instances/{id}/rerun",
            Group::Control,
            Deadline::Request,
            rerun,
        ),
        route(
            M::POST,
            "/api/v1/workflows/instances/{id}/signal/{name}",
            Group::Control,
            Deadline::Request,
            signal,
        ),
    ]
}
