//! `ai.extract_tasks`: rule-based locally, or a model asked for `{tasks}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_catalog::Catalog;

use super::{
    Chosen, JobEnv, Ops, record_usage,
    structured::{self, Ask},
};
use crate::{error::Error, local, prompts, transcript};

#[derive(Debug, Deserialize)]
pub(crate) struct Input {
    text: Option<String>,
    transcript: Option<String>,
    meeting_date: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    timeout_seconds: Option<f64>,
}

pub(crate) async fn run<E: JobEnv>(ops: &Ops, env: &E, input: Input) -> Result<Value, Error> {
    let meeting = match input
        .meeting_date
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        None => None,
        Some(d) => Some(local::dates::parse_iso(d).ok_or_else(|| {
            Error::invalid_input(
                "meeting_date",
                format!("{d:?} is not a date; expected YYYY-MM-DD"),
            )
        })?),
    };
    let source = match (&input.transcript, &input.text) {
        (Some(t), _) if !t.trim().is_empty() => t.as_str(),
        (_, Some(t)) if !t.trim().is_empty() => t.as_str(),
        _ => {
            return Err(Error::invalid_input(
                "transcript",
                "give a transcript or a text",
            ));
        }
    };
    match ops.choose(input.provider.as_deref())? {
        Chosen::Local => {
            // A transcript in any supported format is read as segments first, so speakers
            // are known; plain prose goes straight to sentences.
            let lines = match &input.transcript {
                Some(t) => transcript::parse(t, transcript::Format::Auto)
                    .map(|segments| transcript::normalized(&segments))
                    .unwrap_or_else(|_| t.clone()),
                None => source.to_owned(),
            };
            let sentences = local::text::sentences(&lines);
            let mut speakers: Vec<String> =
                sentences.iter().filter_map(|s| s.speaker.clone()).collect();
            speakers.sort();
            speakers.dedup();
            let tasks = local::tasks::extract(&sentences, meeting, &speakers);
            let output = serde_json::to_string(&tasks).unwrap_or_default();
            record_usage(
                env,
                local::NAME,
                local::MODEL,
                local::text::estimate_tokens(source),
                local::text::estimate_tokens(&output),
            )
            .await?;
            Ok(json!({ "tasks": tasks }))
        }
        Chosen::Remote(provider) => {
            let spec =
                Catalog::builtin()
                    .get("ai.extract_tasks")
                    .ok_or_else(|| Error::Template {
                        name: "ai.extract_tasks".into(),
                        message: "not in the catalog".into(),
                    })?;
            let prompt = prompts::render(
                "extract_tasks",
                json!({
                    "text": input.text,
                    "transcript": input.transcript,
                    "meeting_date": meeting.map(|d| d.to_string()),
                }),
            )?;
            structured::call(
                env,
                &provider,
                Ask {
                    model: input.model.as_deref(),
                    system: None,
                    prompt,
                    max_tokens: 2048,
                    timeout: input.timeout_seconds.map(Duration::from_secs_f64),
                    operation: "ai.extract_tasks",
                    schema: &spec.output,
                },
            )
            .await
        }
    }
}
