//! `meeting_to_tasks` end to end on a real nats-server with the orchestrator and an `ai`
//! worker using the local provider. The integration steps (ClickUp, Slack) belong to another
//! worker, so this registers the shipped workflow with those steps removed: every AI step
//! runs exactly as shipped.

use std::time::Duration;

use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_ai::AiWorker;
use switchyard_proto::{UsageEvent, subject};
use switchyard_test_harness::{
    Bus, Components, TENANT, bus, engine, engine::step, orchestrator_options, worker_config,
};

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

/// A nats-server with the bus applied, one `ai` worker on the local provider, an
/// orchestrator, and the AI part of `meeting_to_tasks` registered for [`TENANT`].
struct Env {
    bus: Bus,
    _components: Components,
}

impl std::ops::Deref for Env {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

async fn env() -> Env {
    let bus = bus().await;
    let mut components = Components::default();
    let config = worker_config(bus.url(), "ai-1");
    let registry = Registry::new();
    let handler = AiWorker::new(&config.ai, &registry).expect("ai worker");
    components.worker(&bus, &config, handler, &registry).await;
    let mut options = orchestrator_options("o1");
    options.concurrency = 8;
    components.orchestrator(&bus, options).await;
    engine::register(&bus.client, TENANT, &ai_part_of_meeting_to_tasks()).await;
    Env {
        bus,
        _components: components,
    }
}

impl Env {
    /// Starts the workflow on `instance` with `input` and waits for it to finish.
    async fn run(&self, instance: &str, input: Value) -> Value {
        engine::start_as(&self.bus, TENANT, "meeting_to_tasks_ai", instance, input).await;
        engine::finished(&self.client, TENANT, instance, Duration::from_secs(60)).await
    }
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
    switchyard_test_harness::round_trip(client).await;
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
