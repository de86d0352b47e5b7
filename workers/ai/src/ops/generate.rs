//! `ai.generate`: text from a prompt or a named template, streamed as deltas.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Chosen, JobEnv, Ops, base_request, chat_streaming, record_usage};
use crate::{
    error::Error,
    local,
    prompts::{self, GENERATE_TEMPLATES},
    provider::Message,
};

#[derive(Debug, Deserialize)]
pub(crate) struct Input {
    prompt: Option<String>,
    template: Option<String>,
    context: Option<Value>,
    system: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    #[serde(default)]
    stop: Vec<String>,
    timeout_seconds: Option<f64>,
    stream: Option<bool>,
}

pub(crate) async fn run<E: JobEnv>(ops: &Ops, env: &E, input: Input) -> Result<Value, Error> {
    let prompt = input
        .prompt
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    if prompt.is_none() && input.template.is_none() {
        return Err(Error::invalid_input(
            "prompt",
            "give a prompt, a template, or both",
        ));
    }
    if let Some(t) = &input.template
        && !GENERATE_TEMPLATES.contains(&t.as_str())
    {
        return Err(Error::invalid_input(
            "template",
            format!(
                "unknown template {t:?}; expected one of: {}",
                GENERATE_TEMPLATES.join(", ")
            ),
        ));
    }
    let context = input.context.clone().unwrap_or(Value::Null);
    match ops.choose(input.provider.as_deref())? {
        Chosen::Local => {
            let text = local::generate::generate(input.template.as_deref(), prompt, &context)?;
            let input_tokens =
                local::text::estimate_tokens(&format!("{}{}", prompt.unwrap_or_default(), context));
            let output_tokens = local::text::estimate_tokens(&text);
            record_usage(env, local::NAME, local::MODEL, input_tokens, output_tokens).await?;
            Ok(json!({
                "text": text,
                "model": local::MODEL,
                "provider": local::NAME,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }))
        }
        Chosen::Remote(provider) => {
            let user = match &input.template {
                Some(template) => {
                    let mut text = prompts::render(template, &context)?;
                    if let Some(p) = prompt {
                        text.push_str("\n\n");
                        text.push_str(p);
                    }
                    text
                }
                None => prompts::render(
                    "generate",
                    json!({ "prompt": prompt, "context": input.context }),
                )?,
            };
            let mut request = base_request(&provider, input.model.as_deref());
            request.system = Some(match input.system {
                Some(s) => s,
                None => prompts::render("system", json!({}))?,
            });
            request.messages.push(Message::user(user));
            request.temperature = input.temperature;
            request.max_tokens = input.max_tokens.unwrap_or(1024);
            request.stop = input.stop;
            request.stream = input.stream.unwrap_or(true);
            if let Some(secs) = input.timeout_seconds {
                request.timeout = Duration::from_secs_f64(secs);
            }
            let reply = if request.stream {
                chat_streaming(env, &provider, &request).await?
            } else {
                provider.chat(&request, None, env.cancel()).await?
            };
            record_usage(
                env,
                provider.name(),
                &reply.model,
                reply.input_tokens,
                reply.output_tokens,
            )
            .await?;
            Ok(json!({
                "text": reply.text,
                "model": reply.model,
                "provider": provider.name(),
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
            }))
        }
    }
}
