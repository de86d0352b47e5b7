//! The local provider on the shipped sample meetings and documents, against hand-labelled
//! expectations (`samples/**/*.expected.json`).

mod common;

use std::path::PathBuf;

use common::Recorder;
use serde_json::{Value, json};
use switchyard_ai::{
    Ops,
    client::Providers,
    transcript::{self, Format},
};

fn sample(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn expected(path: &str) -> Value {
    serde_json::from_str(&sample(path)).expect("expected JSON")
}

fn ops() -> Ops {
    Ops::new(Providers::default(), "local")
}

async fn check_meeting(name: &str, file: &str) {
    let text = sample(&format!("meetings/{file}"));
    let want = expected(&format!("meetings/{name}.expected.json"));
    let format = match transcript::detect(&text) {
        Format::Vtt => "vtt",
        Format::Srt => "srt",
        Format::Lines => "lines",
        Format::Json => "json",
        Format::Auto => "auto",
    };
    assert_eq!(format, want["format"], "{name}: detected format");

    let env = Recorder::default();
    let speakers = ops()
        .run(
            &env,
            "ai.identify_speakers",
            json!({ "transcript": text, "format": "auto" }),
        )
        .await
        .expect("speakers");
    assert_eq!(speakers["speakers"], want["speakers"], "{name}: speakers");

    let tasks = ops()
        .run(
            &env,
            "ai.extract_tasks",
            json!({ "transcript": speakers["transcript"], "meeting_date": want["meeting_date"] }),
        )
        .await
        .expect("tasks");
    let got: Vec<Value> = tasks["tasks"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            let mut t = t.clone();
            let quote = t
                .as_object_mut()
                .and_then(|o| o.remove("source_quote"))
                .expect("a source quote");
            // The quote is a sentence of the transcript, with its speaker.
            let quote = quote.as_str().unwrap_or_default();
            let said = quote.split_once(": ").map_or(quote, |(_, s)| s);
            assert!(
                text.contains(said),
                "{name}: {quote:?} is not from the transcript"
            );
            t
        })
        .collect();
    assert_eq!(Value::Array(got), want["tasks"], "{name}: tasks");
}

#[tokio::test]
async fn product_sync_in_webvtt_with_voice_tags() {
    check_meeting("product_sync", "product_sync.vtt").await;
}

#[tokio::test]
async fn incident_review_in_srt_with_name_prefixes() {
    check_meeting("incident_review", "incident_review.srt").await;
}

#[tokio::test]
async fn migration_planning_as_name_lines() {
    check_meeting("migration_planning", "migration_planning.txt").await;
}

#[tokio::test]
async fn the_summary_is_sentences_of_the_document_in_order_with_the_key_one_first() {
    let text = sample("documents/payments_outage.md");
    let want = expected("documents/payments_outage.expected.json");
    let k = want["max_sentences"].as_u64().unwrap() as usize;
    let out = ops()
        .run(
            &Recorder::default(),
            "ai.summarize",
            json!({ "text": text, "max_sentences": k }),
        )
        .await
        .expect("summary");
    let summary = out["summary"].as_str().unwrap();

    // The sample has one sentence per line: the summary must be `k` of them, verbatim, in
    // the document's order.
    let sentences: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let chosen: Vec<&str> = sentences
        .iter()
        .copied()
        .filter(|s| summary.contains(s))
        .collect();
    assert_eq!(chosen.len(), k, "{summary}");
    assert_eq!(summary, chosen.join(" "), "document order");

    for s in want["in_summary"].as_array().unwrap() {
        assert!(
            summary.contains(s.as_str().unwrap()),
            "missing {s} in {summary}"
        );
    }
    for s in want["not_in_summary"].as_array().unwrap() {
        assert!(
            !summary.contains(s.as_str().unwrap()),
            "{s} should not be in {summary}"
        );
    }
    // The key points are the same sentences, best first: the hand-labelled one leads.
    let points: Vec<&str> = out["key_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let mut sorted = points.clone();
    sorted.sort_unstable();
    let mut chosen_sorted = chosen.clone();
    chosen_sorted.sort_unstable();
    assert_eq!(sorted, chosen_sorted);
    assert_eq!(points[0], want["best"].as_str().unwrap(), "best first");
}
