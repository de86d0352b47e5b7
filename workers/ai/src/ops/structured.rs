//! JSON output from a model: ask for it (OpenAI `response_format`, Anthropic/Bedrock tool
//! use), validate it against the operation's output schema, show the model the problems once,
//! then give up permanently with the raw text in the error (it lands in the dead letter).

use serde_json::{Value, json};
use switchyard_catalog::Schema;

use super::{JobEnv, base_request, record_usage};
use crate::{
    client::Provider,
    error::{Error, excerpt},
    prompts,
    provider::{JsonOutput, Message},
};

/// What a structured call needs beyond the prompt.
pub(crate) struct Ask<'a> {
    pub model: Option<&'a str>,
    pub system: Option<String>,
    pub prompt: String,
    pub max_tokens: u32,
    pub timeout: Option<std::time::Duration>,
    /// The operation, e.g. `ai.summarize` (names the schema for the provider).
    pub operation: &'a str,
    pub schema: &'a Schema,
}

pub(crate) async fn call<E: JobEnv>(
    env: &E,
    provider: &Provider,
    ask: Ask<'_>,
) -> Result<Value, Error> {
    let schema_json = serde_json::to_value(ask.schema).map_err(|e| Error::Template {
        name: ask.operation.to_owned(),
        message: e.to_string(),
    })?;
    let mut request = base_request(provider, ask.model);
    request.system = ask.system;
    request.max_tokens = ask.max_tokens;
    request.temperature = Some(0.0);
    if let Some(t) = ask.timeout {
        request.timeout = t;
    }
    request.messages.push(Message::user(ask.prompt));
    request.json = Some(JsonOutput {
        name: ask.operation.replace('.', "_"),
        schema: schema_json.clone(),
    });
    let first = provider.chat(&request, None, env.cancel()).await?;
    record_usage(
        env,
        provider.name(),
        &first.model,
        first.input_tokens,
        first.output_tokens,
    )
    .await?;
    let problems = match check(&first.text, ask.schema) {
        Ok(value) => return Ok(value),
        Err(problems) => problems,
    };
    provider.record_invalid_output();
    request.messages.push(Message::assistant(first.text));
    request.messages.push(Message::user(prompts::render(
        "fix_json",
        json!({ "problems": problems, "schema": schema_json }),
    )?));
    let second = provider.chat(&request, None, env.cancel()).await?;
    record_usage(
        env,
        provider.name(),
        &second.model,
        second.input_tokens,
        second.output_tokens,
    )
    .await?;
    check(&second.text, ask.schema).map_err(|problems| {
        provider.record_invalid_output();
        Error::InvalidOutput {
            problems: problems.join("; "),
            raw: excerpt(&second.text, 4000),
        }
    })
}

/// Parses the model's text as JSON (tolerating a Markdown code fence or prose around the
/// object) and validates it; the problems as sentences otherwise.
pub(crate) fn check(text: &str, schema: &Schema) -> Result<Value, Vec<String>> {
    let trimmed = text.trim();
    let candidate = match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(a), Some(b)) if a < b => &trimmed[a..=b],
        _ => trimmed,
    };
    let value: Value =
        serde_json::from_str(candidate).map_err(|e| vec![format!("not a JSON object: {e}")])?;
    schema
        .validate(&value)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_json_is_accepted_and_problems_are_named() {
        let schema = &switchyard_catalog::Catalog::builtin()
            .get("ai.summarize")
            .expect("declared")
            .output;
        let ok = check(
            "```json\n{\"summary\": \"s\", \"key_points\": [\"a\"]}\n```",
            schema,
        );
        assert_eq!(ok, Ok(json!({ "summary": "s", "key_points": ["a"] })));
        let bad = check("{\"summary\": 3}", schema).expect_err("invalid");
        assert!(bad.iter().any(|p| p.contains("key_points")), "{bad:?}");
        assert!(bad.iter().any(|p| p.contains("summary")), "{bad:?}");
        assert!(check("sorry, I cannot", schema).is_err());
    }
}
