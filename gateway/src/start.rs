//! Starting a workflow: check the input against the definition, derive the instance id
//! and publish the start, acked by the bus before any 202.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_proto::orchestrator::{DefinitionRef, GetDefinition};
use switchyard_proto::{StartWorkflow, encode_proto, subject};
use tracing::info;

use crate::{
    Error,
    extract::{Ctx, check_token},
};

// ---- starting workflows ----

/// Starts a registered workflow.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerRequest {
    /// The workflow's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub(crate) workflow_name: String,
    /// The workflow's input, checked against its input schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(crate) input: Value,
    /// A registered version; the latest when absent.
    #[serde(default, deserialize_with = "version")]
    pub(crate) version: Option<u32>,
    /// Labels kept with the instance, to find it by (`label=` on the instance list): at most
    /// 16, keys of letters, digits, `_`, `-` and `.` (up to 63), values up to 256 characters.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// Run no earlier than this: RFC 3339, a date (its midnight UTC) or milliseconds since the
    /// epoch. Until then the instance is `scheduled`; a time already
    /// past starts it at once.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub(crate) not_before: Option<Value>,
}

/// Most labels one start may carry.
pub(crate) const MAX_LABELS: usize = 16;

/// `labels` checked (see [`TriggerRequest::labels`]), as the start message carries them.
pub(crate) fn labels(
    labels: BTreeMap<String, String>,
) -> Result<std::collections::HashMap<String, String>, Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::field(
            "labels",
            format!("{} labels; at most {MAX_LABELS}", labels.len()),
        ));
    }
    for (key, value) in &labels {
        let key_ok = (1..=63).contains(&key.len())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(Error::field(
                format!("labels.{key}"),
                "a label key is 1 to 63 letters, digits, '_', '-' and '.'",
            ));
        }
        if value.chars().count() > 256 {
            return Err(Error::field(
                format!("labels.{key}"),
                "a label value is at most 256 characters",
            ));
        }
    }
    Ok(labels.into_iter().collect())
}

/// `not_before` as milliseconds since the epoch (see [`TriggerRequest::not_before`]).
pub(crate) fn not_before(value: Option<Value>) -> Result<i64, Error> {
    const FIELD: &str = "not_before";
    let at = match value {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::String(text)) => crate::api::ledger::instant(FIELD, &text, false)?,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::field(FIELD, "expected whole milliseconds since the epoch"))?,
        Some(_) => {
            return Err(Error::field(
                FIELD,
                "expected RFC 3339 (2026-01-15T08:00:00Z), a date or milliseconds since the epoch",
            ));
        }
    };
    Ok(at)
}

/// A version number: a JSON integer, also when written with a zero fraction (`2.0`).
pub(crate) fn version_of(value: &Value) -> Option<u32> {
    value
        .as_u64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                .map(|f| f as u64)
        })
        .and_then(|v| u32::try_from(v).ok())
}

fn version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => version_of(&v).map(Some).ok_or_else(|| {
            serde::de::Error::custom("expected a whole number from 0 to 4294967295")
        }),
    }
}

/// Starts a workflow and, with `wait`, waits for its result.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // the body is read as a map; this documents its shape
pub(crate) struct ExecuteRequest {
    /// The workflow's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    workflow_type: String,
    /// The input; other top-level fields are added to it.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// Seconds to wait for the result (capped at `gateway.max_wait`); 0 or absent answers 202 at once.
    #[schema(minimum = 0)]
    wait: Option<f64>,
    /// A registered version; the latest when absent.
    version: Option<u32>,
    /// Labels kept with the instance (see the trigger's `labels`).
    labels: Option<BTreeMap<String, String>>,
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
        not_before_ms: 0,
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
pub(crate) async fn resolve_definition(
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
            ctx.meta.message_headers(&start.instance_id),
            encode_proto(&start.message),
        )
        .await
        .map_err(|e| match e {
            Error::Unavailable { action, reason } => Error::StartUnconfirmed {
                instance_id: start.instance_id.clone(),
                reason: format!("{action}: {reason}"),
            },
            other => other,
        })?;
    info!(
        instance_id = %start.instance_id,
        workflow = %start.workflow,
        duplicate = ack.duplicate,
        "workflow start accepted"
    );
    Ok(ack.duplicate)
}
