//! The Anthropic Messages API (`POST {base_url}/v1/messages`, `x-api-key`,
//! `anthropic-version`), streamed as named SSE events. JSON output is asked for as a forced
//! tool call whose input schema is the operation's output schema.

use futures::{StreamExt as _, future::BoxFuture};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ChatApi, ChatRequest, ChatResponse, Deltas, check_status, read_json, sse, transport};
use crate::error::{Error, excerpt};

/// A client for one configured Anthropic endpoint.
#[derive(Debug, Clone)]
pub struct Anthropic {
    name: String,
    base_url: String,
    api_key: String,
    version: String,
    http: reqwest::Client,
}

impl Anthropic {
    /// `base_url` without the version path, e.g. `https://api.anthropic.com`.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        version: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        Anthropic {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            version: version.into(),
            http,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Malformed {
            provider: self.name.clone(),
            message: message.into(),
        }
    }

    async fn run(
        &self,
        request: &ChatRequest,
        deltas: Option<&Deltas>,
    ) -> Result<ChatResponse, Error> {
        let response = self
            .http
            .post(format!("{}/v1/messages", self.base_url))
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", &self.version)
            .timeout(request.timeout)
            .json(&body(request))
            .send()
            .await
            .map_err(|e| transport(&self.name, request.timeout, e))?;
        let response = check_status(&self.name, response).await?;
        if request.stream {
            return self.read_stream(request, response, deltas).await;
        }
        let reply: MessageReply =
            read_json(&self.name, request.timeout, response, "a message").await?;
        let mut out = String::new();
        for block in reply.content {
            match block {
                Block::Text { text } => out.push_str(&text),
                Block::ToolUse { input } => out = input.to_string(),
                Block::Other => {}
            }
        }
        Ok(ChatResponse {
            text: out,
            model: reply.model,
            input_tokens: reply.usage.input_tokens,
            output_tokens: reply.usage.output_tokens,
            stop_reason: reply.stop_reason,
        })
    }

    async fn read_stream(
        &self,
        request: &ChatRequest,
        response: reqwest::Response,
        deltas: Option<&Deltas>,
    ) -> Result<ChatResponse, Error> {
        let mut out = ChatResponse {
            model: request.model.clone(),
            ..ChatResponse::default()
        };
        let mut tool_json = String::new();
        let mut decoder = sse::Decoder::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transport(&self.name, request.timeout, e))?;
            for event in decoder.push(&chunk) {
                let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
                    self.malformed(format!(
                        "not a {:?} stream event ({e}): {}",
                        event.event,
                        excerpt(&event.data, 300)
                    ))
                })?;
                match parsed {
                    StreamEvent::MessageStart { message } => {
                        out.model = message.model;
                        out.input_tokens = message.usage.input_tokens;
                        out.output_tokens = message.usage.output_tokens;
                    }
                    StreamEvent::ContentBlockDelta { delta } => match delta {
                        Delta::Text { text } => {
                            if let Some(tx) = deltas {
                                let _ = tx.send(text.clone());
                            }
                            out.text.push_str(&text);
                        }
                        Delta::InputJson { partial_json } => tool_json.push_str(&partial_json),
                        Delta::Other => {}
                    },
                    StreamEvent::MessageDelta { delta, usage } => {
                        if let Some(reason) = delta.stop_reason {
                            out.stop_reason = Some(reason);
                        }
                        if let Some(usage) = usage {
                            out.output_tokens = usage.output_tokens;
                        }
                    }
                    StreamEvent::MessageStop => {
                        if !tool_json.is_empty() {
                            out.text = tool_json;
                        }
                        return Ok(out);
                    }
                    StreamEvent::Error { error } => {
                        let provider = self.name.clone();
                        return Err(
                            if error.kind == "overloaded_error" || error.kind == "api_error" {
                                Error::Server {
                                    provider,
                                    status: 529,
                                    body: error.message,
                                    retry_after: None,
                                }
                            } else {
                                Error::Refused {
                                    provider,
                                    status: 400,
                                    body: format!("{}: {}", error.kind, error.message),
                                }
                            },
                        );
                    }
                    StreamEvent::Other => {}
                }
            }
        }
        Err(Error::Connection {
            provider: self.name.clone(),
            message: "the stream ended before message_stop".into(),
        })
    }
}

impl ChatApi for Anthropic {
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<&'a Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(self.run(request, deltas))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

fn body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
        "stream": request.stream,
    });
    if let Some(system) = &request.system {
        body["system"] = json!(system);
    }
    if let Some(t) = request.temperature {
        // Anthropic accepts 0 to 1.
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if !request.stop.is_empty() {
        body["stop_sequences"] = json!(request.stop);
    }
    if let Some(out) = &request.json {
        body["tools"] = json!([{
            "name": out.name,
            "description": "Record the answer in this exact structure.",
            "input_schema": out.schema,
        }]);
        body["tool_choice"] = json!({ "type": "tool", "name": out.name });
    }
    body
}

#[derive(Debug, Deserialize)]
struct MessageReply {
    model: String,
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Usage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockDelta {
        delta: Delta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: Option<Usage>,
    },
    MessageStop,
    Error {
        error: ApiError,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    model: String,
    #[serde(default)]
    usage: Usage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}
