//! `ai.summarize`: TextRank locally, or a model asked for `{summary, key_points}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_catalog::Catalog;

use super::{
    Chosen, JobEnv, Ops, record_usage,
    structured::{self, Ask},
};
use crate::{error::Error, local, prompts};

#[derive(Debug, Deserialize)]
pub(crate) struct Input {
    text: String,
    max_sentences: Option<usize>,
    provider: Option<String>,
    model: Option<String>,
    timeout_seconds: Option<f64>,
}

pub(crate) async fn run<E: JobEnv>(ops: &Ops, env: &E, input: Input) -> Result<Value, Error> {
    let max_sentences = input.max_sentences.unwrap_or(5);
    match ops.choose(input.provider.as_deref())? {
        Chosen::Local => {
            let s = local::summarize::summarize(&input.text, max_sentences);
            let output = local::text::estimate_tokens(&s.summary)
                + s.key_points
                    .iter()
                    .map(|k| local::text::estimate_tokens(k))
                    .sum::<u64>();
            record_usage(
                env,
                local::NAME,
                local::MODEL,
                local::text::estimate_tokens(&input.text),
                output,
            )
            .await?;
            Ok(json!({ "summary": s.summary, "key_points": s.key_points }))
        }
        Chosen::Remote(provider) => {
            let spec = Catalog::builtin()
                .get("ai.summarize")
                .ok_or_else(|| Error::Template {
                    name: "ai.summarize".into(),
                    message: "not in the catalog".into(),
                })?;
            let prompt = prompts::render(
                "summarize",
                json!({ "text": input.text, "max_sentences": max_sentences }),
            )?;
            structured::call(
                env,
                &provider,
                Ask {
                    model: input.model.as_deref(),
                    system: None,
                    prompt,
                    max_tokens: 1024,
                    timeout: input.timeout_seconds.map(Duration::from_secs_f64),
                    operation: "ai.summarize",
                    schema: &spec.output,
                },
            )
            .await
        }
    }
}
