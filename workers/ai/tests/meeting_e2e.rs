//! `meeting_to_tasks` end to end on a real nats-server with the orchestrator and an `ai`
//! worker using the local provider. The integration steps (ClickUp, Slack) belong to another
//! worker, so this registers the shipped workflow with those steps removed: every AI step
//! runs exactly as shipped.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_ai::AiWorker;
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_orchestrator::{
    Options, Orchestrator,
    service::{self, endpoint},
};
use switchyard_proto::{StartWorkflow, UsageEvent, encode_proto, header, subject};
use switchyard_runtime::{Config, Worker, config::WorkerSettings};
use switchyard_test_support::NatsServer;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";

/// The shipped `meeting_to_tasks` without its integration steps and inputs.
fn ai_part_of_meeting_to_tasks() -> String {
    let shipped = include_str!("../../../workflows/meeting_to_tasks.yaml");
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(shipped).expect("yaml");
    doc["name"] = "meeting_to_tasks_ai".into();
    if let Some(input) = doc["input"].as_mapping_mut() {
        input.remove("clickup_list_id");
        input.remove("channel");
    }
    if let Some(steps) = doc["steps"].as_sequence_mut() {
        steps.retain(|s| {
            !s["operation"]
                .as_str()
                .is_some_and(|op| op.starts_with("integration."))
        });
        assert_eq!(steps.len(), 4, "transcribe, speakers, summarize, extract");
    }
    doc["output"] = serde_yaml_ng::from_str(
        r#"
summary: "{{ steps.summarize.output.summary }}"
key_points: "{{ steps.summarize.output.key_points }}"
speakers: "{{ steps.speakers.output.speakers | map(attribute='name') | list }}"
tasks: "{{ steps.extract.output.tasks }}"
"#,
    )
    .expect("output");
    serde_yaml_ng::to_string(&doc).expect("yaml")
}

async fn request(client: &async_nats::Client, name: &str, body: Value) -> Value {
    for _ in 0..200 {
        if let Ok(reply) = client
            .request(
                service::request_subject(name),
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
        {
            return serde_json::from_slice(&reply.payload).expect("json reply");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the orchestrator does not answer {name}");
}

/// A nats-server with the bus applied, one `ai` worker on the local provider, an
/// orchestrator, and the AI part of `meeting_to_tasks` registered for [`TENANT`].
struct Env {
    _server: NatsServer,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    _stop: tokio_util::sync::DropGuard,
}

async fn env() -> Env {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    apply(&js, &BusConfig::default(), ApplyOptions::default())
        .await
        .expect("bus apply");

    let stop = CancellationToken::new();
    let config = Config {
        nats_url: server.url(),
        worker: WorkerSettings {
            pull_expiry: Duration::from_millis(500),
            worker_id: Some("ai-1".into()),
            ..WorkerSettings::default()
        },
        ..Config::default()
    };
    let registry = Registry::new();
    let handler = AiWorker::new(&config.ai, &registry).expect("ai worker");
    let worker = Worker::new(server.client().await, &config, handler, &registry).expect("worker");
    tokio::spawn(worker.run(stop.clone()));
    let orchestrator = Orchestrator::new(
        server.client().await,
        Options {
            concurrency: 8,
            env: BTreeMap::new(),
            replica_id: "o1".into(),
            grace: Duration::from_secs(2),
        },
        &Registry::new(),
    )
    .await
    .expect("orchestrator");
    tokio::spawn(orchestrator.run(stop.clone()));

    let reply = request(
        &client,
        endpoint::DEFINITIONS_PUT,
        json!({ "tenant": TENANT, "source": ai_part_of_meeting_to_tasks() }),
    )
    .await;
    assert!(
        reply.get("error").is_none(),
        "registration refused: {reply}"
    );
    Env {
        _server: server,
        client,
        js,
        _stop: stop.drop_guard(),
    }
}

impl Env {
    /// Starts the workflow on `instance` with `input` and waits for it to finish.
    async fn run(&self, instance: &str, input: Value) -> Value {
        let start = StartWorkflow {
            tenant: TENANT.into(),
            workflow: "meeting_to_tasks_ai".into(),
            instance_id: instance.to_owned(),
            input: serde_json::to_vec(&input).unwrap(),
            correlation_id: format!("corr-{instance}"),
            requested_at_ms: switchyard_proto::now_ms(),
            ..StartWorkflow::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, instance);
        self.js
            .publish_with_headers(
                subject::start(TENANT, "meeting_to_tasks_ai"),
                headers,
                encode_proto(&start).into(),
            )
            .await
            .expect("publish")
            .await
            .expect("puback");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = request(
                &self.client,
                endpoint::INSTANCE_GET,
                json!({ "tenant": TENANT, "instance_id": instance }),
            )
            .await;
            if status["status"].as_str().is_some_and(|s| s != "running") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One step of an instance's status.
fn step<'s>(status: &'s Value, id: &str) -> &'s Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {status:#}"))
}

#[tokio::test]
async fn meeting_to_tasks_runs_its_ai_steps_end_to_end_with_the_local_provider() {
    let env = env().await;
    let client = &env.client;
    let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
    let mut events = client
        .subscribe(subject::events_of(TENANT, &instance))
        .await
        .expect("events");
    let mut usage = client.subscribe("usage.acme.>").await.expect("usage");
    client.flush().await.expect("flush");
    let transcript = include_str!("../samples/meetings/product_sync.vtt");
    let status = env
        .run(
            &instance,
            json!({
                "transcript": transcript,
                "meeting_title": "Product sync",
                "meeting_date": "2025-03-12",
            }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let output = &status["output"];
    assert_eq!(
        output["speakers"],
        json!(["Priya Shah", "Tom Becker", "Maria Lopez"])
    );
    let titles: Vec<&str> = output["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Update the onboarding copy",
            "Ask legal to review the privacy text",
            "Redo the screenshots",
            "Fix the payment retry bug",
            "Schedule the beta announcement email",
            "Send the go/no-go summary"
        ]
    );
    assert_eq!(output["tasks"][0]["due"], "2025-03-14");
    assert!(
        output["summary"].as_str().is_some_and(
            |s| !s.is_empty() && transcript.contains(s.split(". ").next().unwrap_or("-"))
        ),
        "{output:#}"
    );

    // The three text operations published token usage for the tenant, by provider and model.
    let mut meters = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), usage.next()).await {
        let event: UsageEvent =
            switchyard_proto::decode(switchyard_proto::ContentType::Protobuf, &msg.payload)
                .expect("usage event");
        assert_eq!(event.attributes["provider"], "local");
        meters.push((event.step_id, event.meter));
    }
    for step in ["summarize", "extract"] {
        assert!(
            meters.contains(&(step.to_owned(), "ai_input_tokens".to_owned())),
            "{meters:?}"
        );
    }
    // Every step reported its start to the instance's followers.
    let mut started = 0;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        if msg.subject.ends_with(".step_started") {
            started += 1;
        }
    }
    assert_eq!(started, 4);
}

/// A transcript over the inline limit goes into the object store after `ai.transcribe`; the
/// later steps get references and read it back, so the speakers, summary and tasks are those
/// of the whole transcript while no message carries it again.
#[tokio::test]
async fn a_long_transcript_travels_between_steps_by_reference() {
    let env = env().await;
    let one = include_str!("../samples/meetings/migration_planning.txt");
    let copies = 120;
    let long = vec![one.trim_end(); copies].join("\n");
    assert!(long.len() > switchyard_ai::OFFLOAD_OVER_BYTES);
    let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
    let status = env
        .run(
            &instance,
            json!({ "transcript": long, "meeting_title": "Planning marathon", "meeting_date": "2025-03-12" }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");

    let is_reference = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.starts_with(switchyard_proto::stream::OBJECT_REF_PREFIX))
    };
    for (id, field) in [
        ("transcribe", "transcript"),
        ("transcribe", "segments"),
        ("speakers", "segments"),
        ("speakers", "transcript"),
    ] {
        let value = &step(&status, id)["output"][field];
        assert!(
            is_reference(value),
            "{id}.{field} is inline: {:.200}",
            value.to_string()
        );
    }
    // The statistics are those of the whole transcript, not of a part or a preview.
    let whole = switchyard_ai::transcript::speaker_stats(
        &switchyard_ai::transcript::parse(&long, Default::default()).expect("parses"),
    );
    assert_eq!(
        step(&status, "speakers")["output"]["speakers"],
        serde_json::to_value(&whole).unwrap()
    );
    assert!(whole.iter().map(|s| s.turns).sum::<u32>() > 3 * copies as u32);
    assert!(
        !status["output"]["tasks"]
            .as_array()
            .expect("tasks")
            .is_empty(),
        "{:#}",
        status["output"]
    );
    // The stored state holds the input once and references for the rest.
    let state = env
        .js
        .get_key_value(switchyard_proto::stream::WF_STATE_BUCKET)
        .await
        .expect("state bucket")
        .get(&instance)
        .await
        .expect("read state")
        .expect("state");
    assert!(
        state.len() < long.len() + 32 * 1024,
        "state is {} bytes for a {}-byte transcript",
        state.len(),
        long.len()
    );
}

/// References are tenant-scoped and content-addressed.
#[tokio::test]
async fn stored_objects_resolve_only_for_their_tenant() {
    use switchyard_runtime::objects::{ObjectError, Objects};
    let env = env().await;
    let objects = Objects::new(env.js.clone());
    let text = Value::String("Ann: hello\n".repeat(10));
    let reference = objects.put("acme", &text).await.expect("put");
    assert_eq!(
        objects.put("acme", &text).await.expect("put again"),
        reference,
        "the same content gets the same name"
    );
    assert_eq!(
        objects.get("acme", &reference, 1 << 20).await.unwrap(),
        text
    );
    assert!(matches!(
        objects.get("globex", &reference, 1 << 20).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert!(matches!(
        objects.get("acme", &reference, 10).await,
        Err(ObjectError::TooLarge { .. })
    ));
    let segments = json!([{ "speaker": "Ann", "text": "hello" }]);
    let mut doc = json!({ "a": { "b": [reference.clone()] }, "big": segments.clone(), "small": 1 });
    assert_eq!(objects.offload("acme", &mut doc, 20).await.unwrap(), 2);
    assert!(
        doc["big"]
            .as_str()
            .is_some_and(|s| s.starts_with("nats-object://"))
    );
    assert_eq!(doc["small"], 1);
    // `a` came back holding a reference, which is read too.
    assert_eq!(objects.resolve("acme", &mut doc, 1 << 20).await.unwrap(), 3);
    assert_eq!(
        doc,
        json!({ "a": { "b": [text] }, "big": segments, "small": 1 })
    );
}

/// A reference that names nothing (expired, mistyped, or another tenant's) fails the step
/// permanently with the reference named, instead of being retried or read as text.
#[tokio::test]
async fn a_reference_to_a_missing_object_fails_the_step_naming_it() {
    let env = env().await;
    let missing = format!(
        "{}globex/{}",
        switchyard_proto::stream::OBJECT_REF_PREFIX,
        "0".repeat(64)
    );
    let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
    let status = env
        .run(
            &instance,
            json!({ "transcript": missing, "meeting_title": "Nothing", "meeting_date": "2025-03-12" }),
        )
        .await;
    assert_eq!(status["status"], "failed", "{status:#}");
    let transcribe = step(&status, "transcribe");
    assert_eq!(transcribe["attempts"], 1, "not retried: {transcribe:#}");
    let error = transcribe["error"].to_string();
    assert!(
        error.contains("no such object for this tenant") && error.contains("globex/000"),
        "{error}"
    );
}
