//! `switchyard workflow …`: register and validate definitions, start an instance and follow it
//! to its end, query, cancel and signal — over the bus, through the orchestrator's service
//! endpoints, as any other service would.

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use futures::StreamExt as _;
use serde_json::Value;
use switchyard_proto::{
    CancelWorkflow, ContentType, SignalWorkflow, StartWorkflow, WorkflowEvent, decode,
    encode_proto, event, header,
    orchestrator::{
        self, DefinitionSource, Endpoint, ErrorReply, GetInstance, InstanceGet, InstanceView,
        PutDefinition, PutReply, ValidateDefinition, ValidateReply,
    },
    subject,
};

/// Asks the orchestrator's endpoint `E` and returns its reply, or the error it gave.
pub async fn query<E: Endpoint>(
    client: &async_nats::Client,
    request: &E::Request,
) -> anyhow::Result<E::Reply> {
    let payload = bytes::Bytes::from(serde_json::to_vec(request)?);
    // An orchestrator that is starting up answers within a few seconds.
    let mut waited = Duration::ZERO;
    let reply = loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(E::subject(), payload.clone()),
        )
        .await
        .context("the orchestrator did not answer in 10s")?;
        match reply {
            Ok(r) => break r,
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && waited < Duration::from_secs(15) =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                waited += Duration::from_millis(250);
            }
            Err(e) => {
                return Err(e).context(
                    "no orchestrator is running (start one with `switchyard orchestrator`)",
                );
            }
        }
    };
    // A failed request is marked by the service error header; its body is an `ErrorReply`.
    // (A successful reply may have an `error` field of its own: a failed instance's reason.)
    let failed = reply
        .headers
        .as_ref()
        .is_some_and(|h| h.get(orchestrator::ERROR_CODE_HEADER).is_some());
    if failed {
        let ErrorReply { error } =
            serde_json::from_slice(&reply.payload).context("an error reply that is not JSON")?;
        let mut text = error.message;
        for p in &error.problems {
            let _ = write!(text, "\n  - {}: {}", p.path, p.message);
        }
        bail!(text);
    }
    serde_json::from_slice(&reply.payload).context("a reply of the wrong shape")
}

/// Registers the definition in `file` for the tenant.
pub async fn register(
    client: &async_nats::Client,
    tenant: &str,
    file: &Path,
) -> anyhow::Result<PutReply> {
    query::<PutDefinition>(client, &source_of(tenant, file)?).await
}

/// Checks the definition in `file` without registering it.
pub async fn validate(
    client: &async_nats::Client,
    tenant: &str,
    file: &Path,
) -> anyhow::Result<ValidateReply> {
    query::<ValidateDefinition>(client, &source_of(tenant, file)?).await
}

fn source_of(tenant: &str, file: &Path) -> anyhow::Result<DefinitionSource> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(DefinitionSource {
        tenant: tenant.to_owned(),
        source,
    })
}

/// Publishes a start and prints each event until the instance ends; returns its final status.
pub async fn run(
    client: &async_nats::Client,
    tenant: &str,
    workflow: &str,
    input: Value,
    timeout: Duration,
) -> anyhow::Result<InstanceView> {
    if !input.is_object() {
        bail!("--input must be a JSON object");
    }
    let instance = uuid::Uuid::now_v7().to_string();
    let mut events = client
        .subscribe(subject::events_of(tenant, &instance))
        .await?;
    client.flush().await?;
    let start = StartWorkflow {
        tenant: tenant.to_owned(),
        workflow: workflow.to_owned(),
        instance_id: instance.clone(),
        input: serde_json::to_vec(&input)?,
        correlation_id: format!("cli-{instance}"),
        requested_at_ms: switchyard_proto::now_ms(),
        ..StartWorkflow::default()
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, instance.as_str());
    headers.insert(header::CORRELATION_ID, start.correlation_id.as_str());
    let js = async_nats::jetstream::new(client.clone());
    js.publish_with_headers(
        subject::start(tenant, workflow),
        headers,
        encode_proto(&start).into(),
    )
    .await?
    .await
    .context("the start was not accepted")?;
    println!("started {workflow} as instance {instance}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("event subscription closed"),
            Err(_) => bail!(
                "instance {instance} did not finish within {}s",
                timeout.as_secs()
            ),
        };
        let Ok(e) = decode::<WorkflowEvent>(ContentType::Protobuf, &msg.payload) else {
            continue;
        };
        println!("  {}", describe(&e));
        if event::TERMINAL.contains(&e.r#type.as_str()) {
            break;
        }
    }
    query::<GetInstance>(
        client,
        &InstanceGet {
            tenant: tenant.to_owned(),
            instance_id: instance,
        },
    )
    .await
}

/// One line per event, for people.
fn describe(e: &WorkflowEvent) -> String {
    let data: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
    let step = if e.step_id.is_empty() {
        String::new()
    } else {
        format!(" {}", e.step_id)
    };
    let detail = match e.r#type.as_str() {
        event::STEP_SCHEDULED => match data["items"].as_u64() {
            Some(n) => format!("{} × {n}", data["operation"].as_str().unwrap_or("")),
            None => data["operation"].as_str().unwrap_or("").to_owned(),
        },
        event::STEP_STARTED | event::STEP_RETRYING => format!("attempt {}", data["attempt"]),
        event::STEP_COMPLETED => format!("in {} ms", data["duration_ms"]),
        event::STEP_FAILED => format!(
            "{}: {}",
            data["code"].as_str().unwrap_or(""),
            data["message"].as_str().unwrap_or("")
        ),
        event::FAILED => data["message"].as_str().unwrap_or("").to_owned(),
        event::COMPLETED => format!("in {} ms", data["duration_ms"]),
        _ => String::new(),
    };
    format!("{:<15}{step} {detail}", e.r#type)
        .trim_end()
        .to_owned()
}

/// A readable summary of an instance status.
pub fn summary(status: &InstanceView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "instance {} ({} v{}): {}",
        status.instance_id,
        status.workflow,
        status.version,
        status.status.as_str()
    );
    for s in &status.steps {
        // What ran it: the operation and its version, the capability it was chosen for and
        // the replica.
        let operation = match (&s.operation, &s.capability) {
            (Some(op), _) => match s.version {
                Some(v) => format!("{op} v{v}"),
                None => op.clone(),
            },
            (None, Some(c)) => format!("(capability {c})"),
            (None, None) => "(signal)".to_owned(),
        };
        let ran_by = [
            s.capability.as_ref().map(|c| format!("for {c}")),
            s.worker_id.as_ref().map(|w| format!("on {w}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let _ = writeln!(
            out,
            "  {:<14} {:<10} {:<28} attempts {}{}{}",
            s.id,
            s.status.as_str(),
            operation,
            s.attempts,
            s.duration_ms
                .map(|d| format!(", {d} ms"))
                .unwrap_or_default(),
            if ran_by.is_empty() {
                String::new()
            } else {
                format!(", {ran_by}")
            }
        );
    }
    if let Some(e) = &status.error {
        let _ = writeln!(
            out,
            "error: {}",
            serde_json::to_string(e).unwrap_or_default()
        );
    }
    if let Some(o) = status.output.as_ref().filter(|o| !o.is_null()) {
        let _ = writeln!(
            out,
            "output:\n{}",
            serde_json::to_string_pretty(o).unwrap_or_default()
        );
    }
    out
}

/// Who a change made from the command line is recorded as: `cli:<user>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn cancel(
    client: &async_nats::Client,
    tenant: &str,
    instance: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let c = CancelWorkflow {
        reason: reason.to_owned(),
        requested_by: "cli".into(),
        ..CancelWorkflow::default()
    };
    let js = async_nats::jetstream::new(client.clone());
    js.publish(subject::cancel(tenant, instance), encode_proto(&c).into())
        .await?
        .await?;
    Ok(())
}

pub async fn signal(
    client: &async_nats::Client,
    tenant: &str,
    instance: &str,
    name: &str,
    payload: Value,
) -> anyhow::Result<()> {
    let s = SignalWorkflow {
        signal_id: uuid::Uuid::now_v7().to_string(),
        payload: serde_json::to_vec(&payload)?,
        sent_by: "cli".into(),
        ..SignalWorkflow::default()
    };
    let js = async_nats::jetstream::new(client.clone());
    js.publish(
        subject::signal(tenant, instance, name),
        encode_proto(&s).into(),
    )
    .await?
    .await?;
    Ok(())
}

/// What a bulk action selects, as the ledger lists instances.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub workflow: Option<String>,
    /// `key=value`.
    pub label: Option<String>,
    /// Only instances created within this long.
    pub since: Option<Duration>,
    pub status: &'static str,
    pub limit: usize,
}

/// The ids of at most `limit` of `tenant`'s instances the ledger lists for `select`, newest
/// first, and whether more matched.
pub async fn listed(
    client: &async_nats::Client,
    tenant: &str,
    select: &Selection,
) -> anyhow::Result<(Vec<String>, bool)> {
    let mut filter = serde_json::json!({ "status": select.status, "limit": 500 });
    if let Some(w) = &select.workflow {
        filter["workflow"] = w.clone().into();
    }
    if let Some(label) = &select.label {
        let (k, v) = label
            .split_once('=')
            .context("--label: expected key=value")?;
        filter["labels"] = serde_json::json!({ k: v });
    }
    if let Some(since) = select.since {
        filter["from_ms"] = (switchyard_proto::now_ms()
            - i64::try_from(since.as_millis()).unwrap_or(i64::MAX / 2))
        .into();
    }
    let mut ids = Vec::new();
    loop {
        let page = ledger(client, tenant, "ledger.instances", &filter).await?;
        for id in page["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["instance_id"].as_str())
        {
            if ids.len() == select.limit {
                return Ok((ids, true));
            }
            ids.push(id.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) if ids.len() < select.limit => filter["cursor"] = cursor.into(),
            Some(_) => return Ok((ids, true)),
            None => return Ok((ids, false)),
        }
    }
}

/// Asks the ledger's `operation` for `tenant`, as the gateway does.
async fn ledger(
    client: &async_nats::Client,
    tenant: &str,
    operation: &str,
    input: &Value,
) -> anyhow::Result<Value> {
    let (kind, op) = operation.split_once('.').unwrap_or((operation, ""));
    let job = switchyard_proto::Job {
        job_id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        operation: operation.to_owned(),
        input: serde_json::to_vec(input)?,
        created_at_ms: switchyard_proto::now_ms(),
        ..switchyard_proto::Job::default()
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(
            format!("{}.{op}", subject::service_group(kind)),
            encode_proto(&job).into(),
        ),
    )
    .await
    .context("the ledger did not answer in 30s")?
    .context("no ledger is running (start one with `switchyard ledger`)")?;
    let result: switchyard_proto::JobResult = decode(ContentType::Protobuf, &reply.payload)?;
    if result.status != switchyard_proto::JobStatus::Succeeded as i32 {
        bail!(
            "the ledger refused: {}",
            result.error.map(|e| e.message).unwrap_or_default()
        );
    }
    Ok(serde_json::from_slice(&result.output)?)
}
