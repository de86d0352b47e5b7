//! The meeting and task routes: process a meeting with the `meeting_to_tasks` workflow and read
//! what came of it, create and update ClickUp tasks, and report which integrations work.
//!
//! Meetings are workflow starts like `trigger`, with the instance id derived from the tenant
//! and the meeting id, so processing the same meeting again returns the same instance. Tasks
//! and the integration report are request/reply calls to the integration worker's service
//! endpoints (`svc.integration.<op>`): the body is checked against the operation's catalog
//! schema first, and a create carries a job id derived from the `Idempotency-Key`, so the
//! worker's effect record turns a retried request into the first request's answer instead of
//! a second task.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchyard_proto::orchestrator::InstanceView;
use switchyard_workflow::definition::{Definition, Scope};
use uuid::Uuid;

use axum::http::Method;

use crate::{
    Error, Permission,
    extract::{Ctx, IDEMPOTENCY_NAMESPACE, JsonBody},
    limits::Group,
    responses::status_url,
    route::{Deadline, RouteDef, route},
    start::{prepare_start, publish_start, resolve_definition},
    workers::WorkerError,
};

/// The workflow `POST /meetings/process` starts; a tenant's own definition of that name wins
/// over the shipped one, as for any start.
pub(crate) const MEETING_WORKFLOW: &str = "meeting_to_tasks";
/// Catalog names of the operations called here.
pub(crate) const CREATE_TASK: &str = "integration.clickup.create_task";
pub(crate) const UPDATE_STATUS: &str = "integration.clickup.update_status";
pub(crate) const STATUS: &str = "integration.status";
/// Longest meeting id, like an `Idempotency-Key`.
const MAX_MEETING_ID_LEN: usize = 255;

// ---- meetings ----

/// A meeting to process: a transcript (or a recording's URL) and where its tasks go.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessMeeting {
    /// Your id for the meeting: 1–255 letters, digits and `-_.:~@` (it goes into the context
    /// URL's path unescaped). Processing the same id again
    /// returns the same instance; the first request's input is the one processed. A new id
    /// is made when absent (from the `Idempotency-Key` when one is given).
    meeting_id: Option<String>,
    /// The meeting's title.
    title: Option<String>,
    /// The meeting's date (ISO 8601), to resolve relative due dates.
    date: Option<String>,
    /// The transcript: WebVTT, SRT, `Name: text` lines or JSON segments. Give this or `audio_url`.
    transcript: Option<String>,
    /// An http(s) URL of the recording to transcribe. Give this or `transcript`.
    audio_url: Option<String>,
    /// The transcript's format: `auto` (default), `vtt`, `srt`, `lines` or `json`.
    format: Option<String>,
    /// The spoken language (ISO 639-1), a hint for transcription.
    language: Option<String>,
    /// The Slack channel for the summary (the workflow's default when absent).
    channel: Option<String>,
    /// The ClickUp list to create the tasks in.
    list_id: Option<String>,
}

/// A meeting whose processing is stored on the bus.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MeetingAccepted {
    pub meeting_id: String,
    pub instance_id: String,
    /// The workflow instance's status.
    pub status_url: String,
    /// The meeting's summary, speakers and tasks as they become known.
    pub context_url: String,
}

/// The instance that processes `meeting_id` for `tenant`: the same uuid v5 scheme as an
/// `Idempotency-Key`, under its own prefix so a meeting id never collides with a key.
fn meeting_instance(tenant: &str, meeting_id: &str) -> String {
    let name = format!("{tenant}\nmeeting\n{meeting_id}");
    Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()).to_string()
}

fn context_url(meeting_id: &str) -> String {
    format!("/api/v1/meetings/{meeting_id}/context")
}

/// A meeting id is limited to characters that need no escaping in a URL path, so the
/// `context_url` built from it works as given.
fn check_meeting_id(field: &str, id: &str) -> Result<(), Error> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.:~@".contains(c);
    if !id.is_empty() && id.len() <= MAX_MEETING_ID_LEN && id.chars().all(safe) {
        Ok(())
    } else {
        Err(Error::field(
            field,
            format!("expected 1 to {MAX_MEETING_ID_LEN} letters, digits and `-_.:~@`"),
        ))
    }
}

/// The workflow input for a request: the body's names mapped onto `meeting_to_tasks`' input,
/// absent fields left out so the workflow's defaults apply.
fn workflow_input(req: ProcessMeeting) -> Result<Value, Error> {
    let title = req
        .title
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Error::field("title", "missing; give the meeting's title"))?;
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    match (has(&req.transcript), has(&req.audio_url)) {
        (true, true) => {
            return Err(Error::field(
                "audio_url",
                "give `transcript` or `audio_url`, not both",
            ));
        }
        (false, false) => {
            return Err(Error::field(
                "transcript",
                "missing; give the transcript, or a recording's URL in `audio_url`",
            ));
        }
        _ => {}
    }
    let mut input = Map::new();
    for (name, value) in [
        ("meeting_title", Some(title)),
        ("meeting_date", req.date),
        ("transcript", req.transcript),
        ("audio_url", req.audio_url),
        ("format", req.format),
        ("language", req.language),
        ("channel", req.channel),
        ("clickup_list_id", req.list_id),
    ] {
        if let Some(v) = value {
            input.insert(name.to_owned(), Value::String(v));
        }
    }
    Ok(Value::Object(input))
}

/// The workflow input's names, as the request body spells them.
const BODY_NAMES: [(&str, &str); 8] = [
    ("meeting_title", "title"),
    ("meeting_date", "date"),
    ("transcript", "transcript"),
    ("audio_url", "audio_url"),
    ("format", "format"),
    ("language", "language"),
    ("channel", "channel"),
    ("clickup_list_id", "list_id"),
];

/// An input-schema failure with its paths renamed from the workflow's input
/// (`input.clickup_list_id`) to the body field the client sent (`list_id`).
fn body_names(e: Error) -> Error {
    match e {
        Error::InvalidInput {
            workflow,
            mut problems,
        } => {
            for p in &mut problems {
                let Some(rest) = p.path.strip_prefix("input.") else {
                    continue;
                };
                let (head, tail) = rest.split_at(rest.find(['.', '[']).unwrap_or(rest.len()));
                if let Some((_, body)) = BODY_NAMES.iter().find(|(input, _)| *input == head) {
                    p.path = format!("{body}{tail}");
                }
            }
            Error::InvalidInput { workflow, problems }
        }
        other => other,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/meetings/process",
    tag = "meetings",
    request_body = ProcessMeeting,
    params(("Idempotency-Key" = Option<String>, Header, description = "Without a `meeting_id`, the same key again returns the same meeting")),
    responses(
        (status = 202, description = "The processing is stored on the bus; follow `context_url`", body = MeetingAccepted),
        crate::responses::StartErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn process(
    ctx: Ctx,
    JsonBody(req): JsonBody<ProcessMeeting>,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let meeting_id = match &req.meeting_id {
        Some(id) => {
            check_meeting_id("meeting_id", id)?;
            id.clone()
        }
        None => ctx.derived_id(&["meeting"]),
    };
    let mut input = workflow_input(req)?;
    // A long transcript goes to the object store once; the workflow passes its reference.
    ctx.state
        .bus()
        .objects
        .offload(
            ctx.tenant(),
            &mut input,
            switchyard_runtime::objects::INLINE_LIMIT,
        )
        .await
        .map_err(|e| Error::unavailable("storing the transcript", e))?;
    let mut start = prepare_start(&ctx, MEETING_WORKFLOW, "workflow", None, input)
        .await
        .map_err(body_names)?;
    // The meeting decides the instance, so the start's message id (the instance id) makes a
    // repeat within the duplicate window a no-op, and the orchestrator ignores a start for an
    // instance it already has after that.
    let instance_id = meeting_instance(ctx.tenant(), &meeting_id);
    start.instance_id.clone_from(&instance_id);
    start.message.instance_id.clone_from(&instance_id);
    publish_start(&ctx, &start).await?;
    let accepted = MeetingAccepted {
        context_url: context_url(&meeting_id),
        status_url: status_url(&instance_id),
        meeting_id,
        instance_id,
    };
    let mut response = (StatusCode::ACCEPTED, Json(&accepted)).into_response();
    if let Ok(v) = HeaderValue::from_str(&accepted.context_url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/meetings/{id}/context",
    tag = "meetings",
    params(("id" = String, Path, description = "The meeting id")),
    responses(
        (status = 200, description = "`{meeting_id, instance_id, status, title, date, steps, error, output, …}` and every field of the workflow's declared output (`summary, key_points, speakers, speaker_stats, tasks, created_tasks, notes, task_ids` for the shipped one): what the processing has produced so far", body = Object),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn context(ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    check_meeting_id("id", &id)?;
    let instance_id = meeting_instance(ctx.tenant(), &id);
    let status = ctx.instance(&instance_id).await?;
    // An instance id is only derived for meetings, but a tenant definition could be renamed:
    // whatever is not a meeting's instance is not a meeting.
    if status.workflow != MEETING_WORKFLOW {
        return Err(Error::NotFound(format!("no meeting {id:?}")));
    }
    // The version the instance runs, for its declared output; without it (a definition that
    // does not parse here) the context has what the instance stored.
    let def = resolve_definition(&ctx, &status.workflow, Some(status.version))
        .await
        .ok()
        .and_then(|(_, def)| def);
    Ok(Json(meeting_context(&id, &status, def.as_deref())))
}

/// A meeting's context: every field of the workflow's declared output — the stored output
/// once the instance has completed, before that the output rendered from the steps finished so
/// far (so a client sees the summary before the Slack post is done) — with the instance's
/// status, error and steps. Nothing here knows the workflow's step ids: a tenant's own
/// `meeting_to_tasks` shapes its context by what it declares.
fn meeting_context(meeting_id: &str, status: &InstanceView, def: Option<&Definition>) -> Value {
    let context = match (&status.output, def) {
        (Some(output), _) => output.clone(),
        (None, Some(def)) => output_so_far(def, status),
        (None, None) => Value::Null,
    };
    let steps: Vec<Value> = status
        .steps
        .iter()
        .map(|s| json!({ "id": s.id, "status": s.status }))
        .collect();
    let instance_id = status.instance_id.as_str();
    let about = json!({
        "meeting_id": meeting_id,
        "instance_id": instance_id,
        "status": status.status,
        "title": status.input["meeting_title"],
        "date": status.input["meeting_date"],
        "output": status.output,
        "error": status.error,
        "steps": steps,
        "started_at_ms": status.started_at_ms,
        "finished_at_ms": status.finished_at_ms,
        "status_url": status_url(instance_id),
    });
    let mut fields = match context {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    // The instance's own fields win over an output field of the same name.
    if let Value::Object(about) = about {
        fields.extend(about);
    }
    Value::Object(fields)
}

/// `def`'s declared output rendered against the steps of `status` that have an output.
fn output_so_far(def: &Definition, status: &InstanceView) -> Value {
    let steps: Map<String, Value> = status
        .steps
        .iter()
        .map(|s| {
            let result = json!({
                "status": s.status,
                "output": s.output,
                "error": s.error.as_ref().map(|e| &e.message),
            });
            (s.id.clone(), result)
        })
        .collect();
    let steps = Value::Object(steps);
    let env = BTreeMap::new();
    def.render_output_so_far(&Scope {
        input: &status.input,
        steps: &steps,
        item: None,
        signal: None,
        env: &env,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "integrations",
    request_body(content = Object, description = "A ClickUp task to create; the schema is the one the body is checked against"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first task instead of creating another")),
    responses(
        (status = 201, description = "`{task_id, url}` of the new ClickUp task", body = Object),
        crate::responses::TaskErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_task(
    ctx: Ctx,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let job_id = ctx.derived_id(&["job", CREATE_TASK]);
    let output = ctx
        .call_worker(CREATE_TASK, job_id, Value::Object(body))
        .await?;
    Ok((StatusCode::CREATED, Json(output)).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/tasks/{id}/status",
    tag = "integrations",
    params(
        ("id" = String, Path, description = "The ClickUp task id"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first answer")
    ),
    request_body(content = Object, description = "The task's new status; the schema is the one the body is checked against"),
    responses(
        (status = 200, description = "`{task_id, status}` as ClickUp reports them", body = Object),
        crate::responses::TaskErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_task_status(
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    if body.contains_key("task_id") {
        return Err(
            Error::field("task_id", "the task id comes from the path; leave it out").into(),
        );
    }
    body.insert("task_id".into(), Value::String(id.clone()));
    let job_id = ctx.derived_id(&["job", UPDATE_STATUS, &id]);
    let output = ctx
        .call_worker(UPDATE_STATUS, job_id, Value::Object(body))
        .await
        .map_err(|e| match e {
            // The id is the path's; name it as the client wrote it.
            WorkerError::InvalidInput {
                operation,
                mut problems,
            } => {
                for p in &mut problems {
                    if p.path == "task_id" {
                        p.path = "id".into();
                    }
                }
                WorkerError::InvalidInput {
                    operation,
                    problems,
                }
            }
            other => other,
        })?;
    Ok((StatusCode::OK, Json(output)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/integrations/status",
    tag = "integrations",
    responses(
        (status = 200, description = "`{integrations: [{name, configured, ok, detail}], checked_at_ms}` for notion, slack, clickup, webhook and markdown; `ok` is null when it cannot be checked without an effect. Never contains a secret", body = Object),
        crate::responses::AuthErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn integrations_status(ctx: Ctx) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    // Read-only: a fresh job id each time, since there is no effect to deduplicate.
    let job_id = Uuid::now_v7().to_string();
    ctx.call_worker(STATUS, job_id, json!({})).await.map(Json)
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::POST,
            "/api/v1/meetings/process",
            Group::Start,
            Deadline::Request,
            process,
        ),
        route(
            M::GET,
            "/api/v1/meetings/{id}/context",
            Group::Read,
            Deadline::Request,
            context,
        ),
        route(
            M::POST,
            "/api/v1/tasks",
            Group::Control,
            Deadline::Request,
            create_task,
        ),
        route(
            M::PUT,
            "/api/v1/tasks/{id}/status",
            Group::Control,
            Deadline::Request,
            update_task_status,
        ),
        route(
            M::GET,
            "/api/v1/integrations/status",
            Group::Read,
            Deadline::Request,
            integrations_status,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_catalog::Catalog;

    #[test]
    fn the_called_operations_are_in_the_catalog() {
        for op in [CREATE_TASK, UPDATE_STATUS, STATUS] {
            assert!(Catalog::builtin().get(op).is_some(), "{op}");
        }
    }

    #[test]
    fn a_meeting_maps_onto_the_workflow_input_and_needs_a_title_and_one_source() {
        let req = ProcessMeeting {
            title: Some("Weekly".into()),
            transcript: Some("Ann: hi".into()),
            list_id: Some("L1".into()),
            date: Some("2025-03-14".into()),
            ..ProcessMeeting::default()
        };
        assert_eq!(
            workflow_input(req).unwrap(),
            json!({"meeting_title": "Weekly", "transcript": "Ann: hi", "clickup_list_id": "L1", "meeting_date": "2025-03-14"})
        );
        let missing_title = ProcessMeeting {
            transcript: Some("x".into()),
            ..ProcessMeeting::default()
        };
        assert!(
            matches!(workflow_input(missing_title), Err(Error::InvalidField { field, .. }) if field == "title")
        );
        let both = ProcessMeeting {
            title: Some("t".into()),
            transcript: Some("x".into()),
            audio_url: Some("https://example.com/a.mp3".into()),
            ..ProcessMeeting::default()
        };
        assert!(
            matches!(workflow_input(both), Err(Error::InvalidField { field, .. }) if field == "audio_url")
        );
        assert!(check_meeting_id("meeting_id", "weekly-2025-03-14").is_ok());
        for bad in ["", "a/b", "a b", "x?y"] {
            assert!(check_meeting_id("meeting_id", bad).is_err(), "{bad:?}");
        }
        // The same meeting of the same tenant is the same instance; another tenant's is not.
        assert_eq!(
            meeting_instance("acme", "m-1"),
            meeting_instance("acme", "m-1")
        );
        assert_ne!(
            meeting_instance("acme", "m-1"),
            meeting_instance("globex", "m-1")
        );
    }
}
