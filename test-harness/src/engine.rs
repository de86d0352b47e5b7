//! Talking to the workflow engine as any service would: its request/reply endpoints
//! (`svc.orchestrator.*`) and starts, cancels and signals published on the bus.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_proto::{
    CancelWorkflow, ContentType, SignalWorkflow, StartWorkflow, WorkflowEvent, decode,
    encode_proto,
    orchestrator::{ERROR_CODE_HEADER, endpoint, request_subject},
    subject,
};

use crate::Bus;

/// How long a query is retried while no orchestrator answers (one may be (re)starting).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Asks the engine's `endpoint_name` with `body`; the reply's JSON, or `Err` with the error
/// body when the engine refused (marked by the service error header, not by the body).
pub async fn try_query(
    client: &async_nats::Client,
    endpoint_name: &str,
    body: &Value,
) -> Result<Value, Value> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let reply = loop {
        match client
            .request(
                request_subject(endpoint_name),
                serde_json::to_vec(body).expect("a JSON body").into(),
            )
            .await
        {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the orchestrator does not answer {endpoint_name}: {e}"),
        }
    };
    let value: Value = serde_json::from_slice(&reply.payload).expect("a JSON reply");
    let failed = reply
        .headers
        .as_ref()
        .is_some_and(|h| h.get(ERROR_CODE_HEADER).is_some());
    if failed { Err(value) } else { Ok(value) }
}

/// [`try_query`], whose answer is returned as it is, a refusal included.
pub async fn query(client: &async_nats::Client, endpoint_name: &str, body: Value) -> Value {
    try_query(client, endpoint_name, &body)
        .await
        .unwrap_or_else(|refusal| refusal)
}

/// Returns once an orchestrator answers `definitions.list`; panics after `within`.
pub async fn wait_for_engine(client: &async_nats::Client, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let body = serde_json::to_vec(&json!({ "tenant": crate::TENANT })).expect("JSON");
    while client
        .request(
            request_subject(endpoint::DEFINITIONS_LIST),
            body.clone().into(),
        )
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no orchestrator answered within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers a definition for `tenant`; panics with the engine's reasons if it is refused.
pub async fn register(client: &async_nats::Client, tenant: &str, yaml: &str) {
    if let Err(refusal) = try_query(
        client,
        endpoint::DEFINITIONS_PUT,
        &json!({ "tenant": tenant, "source": yaml }),
    )
    .await
    {
        panic!("registration refused: {refusal:#}");
    }
}

/// A fresh instance id.
pub fn new_instance() -> String {
    format!("i-{}", uuid::Uuid::now_v7().simple())
}

/// Publishes the start of `workflow` for `tenant` as instance `instance`, correlation id
/// `corr-<instance>`.
pub async fn start_as(bus: &Bus, tenant: &str, workflow: &str, instance: &str, input: Value) {
    let start = StartWorkflow {
        tenant: tenant.into(),
        workflow: workflow.into(),
        instance_id: instance.into(),
        input: serde_json::to_vec(&input).expect("JSON input"),
        correlation_id: format!("corr-{instance}"),
        requested_at_ms: switchyard_proto::now_ms(),
        ..StartWorkflow::default()
    };
    bus.publish(
        &subject::start(tenant, workflow),
        instance,
        encode_proto(&start),
    )
    .await;
}

/// Subscribes to a new instance's events, then publishes its start.
pub async fn start(
    bus: &Bus,
    tenant: &str,
    workflow: &str,
    input: Value,
) -> (String, async_nats::Subscriber) {
    let instance = new_instance();
    let events = bus
        .client
        .subscribe(subject::events_of(tenant, &instance))
        .await
        .expect("subscribe");
    bus.client.flush().await.expect("flush");
    start_as(bus, tenant, workflow, &instance, input).await;
    (instance, events)
}

/// Publishes a cancel of `instance`.
pub async fn cancel(bus: &Bus, tenant: &str, instance: &str, reason: &str) {
    let c = CancelWorkflow {
        reason: reason.into(),
        requested_by: "test".into(),
        ..CancelWorkflow::default()
    };
    bus.publish(
        &subject::cancel(tenant, instance),
        &format!("cancel-{instance}"),
        encode_proto(&c),
    )
    .await;
}

/// Publishes the signal `name` to `instance`.
pub async fn signal(bus: &Bus, tenant: &str, instance: &str, name: &str, payload: Value) {
    let s = SignalWorkflow {
        signal_id: format!("sig-{instance}-{name}"),
        payload: serde_json::to_vec(&payload).expect("JSON payload"),
        sent_by: "test".into(),
        ..SignalWorkflow::default()
    };
    bus.publish(
        &subject::signal(tenant, instance, name),
        &format!("signal-{instance}-{name}"),
        encode_proto(&s),
    )
    .await;
}

/// The instance's status view (or the engine's refusal, e.g. not found).
pub async fn status(client: &async_nats::Client, tenant: &str, instance: &str) -> Value {
    query(
        client,
        endpoint::INSTANCE_GET,
        json!({ "tenant": tenant, "instance_id": instance }),
    )
    .await
}

/// Polls the instance's status until it has finished; panics after `within`.
pub async fn finished(
    client: &async_nats::Client,
    tenant: &str,
    instance: &str,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = status(client, tenant, instance).await;
        if status["status"]
            .as_str()
            .is_some_and(|s| ["completed", "failed", "cancelled"].contains(&s))
        {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance {instance} still not finished: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts `workflow` for `tenant` and waits up to `within` for it to finish; its status.
pub async fn run_workflow(
    bus: &Bus,
    tenant: &str,
    workflow: &str,
    input: Value,
    within: Duration,
) -> Value {
    let instance = new_instance();
    start_as(bus, tenant, workflow, &instance, input).await;
    finished(&bus.client, tenant, &instance, within).await
}

/// The step `id` of a status view.
pub fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {status:#}"))
}

/// Reads events until one of `event_type` arrives; returns it and those before it.
pub async fn until_event(
    sub: &mut async_nats::Subscriber,
    event_type: &str,
    within: Duration,
) -> (WorkflowEvent, Vec<WorkflowEvent>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {event_type} event in time; saw {:?}",
                    seen.iter()
                        .map(|e: &WorkflowEvent| format!("{}:{}", e.r#type, e.step_id))
                        .collect::<Vec<_>>()
                )
            })
            .expect("subscription open");
        let event: WorkflowEvent = decode(ContentType::Protobuf, &msg.payload).expect("an event");
        if event.r#type == event_type {
            return (event, seen);
        }
        seen.push(event);
    }
}

/// An event's `data` as JSON.
pub fn event_data(event: &WorkflowEvent) -> Value {
    serde_json::from_slice(&event.data).unwrap_or(Value::Null)
}
