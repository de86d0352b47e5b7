//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`), streamed over SSE,
//! and speech-to-text (`POST {base_url}/audio/transcriptions`, multipart). The same wire
//! format is served by OpenAI, Ollama, vLLM and the llama.cpp server.

use futures::{StreamExt as _, future::BoxFuture};
use reqwest::multipart;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChatApi, ChatRequest, ChatResponse, Deltas, TranscribeRequest, Transcription, check_status,
    read_json, sse, transport,
};
use crate::error::{Error, excerpt};

/// A client for one configured OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct OpenAi {
    name: String,
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl OpenAi {
    /// `base_url` includes the version path, e.g. `https://api.openai.com/v1`.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        OpenAi {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            http,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.post(format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
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
            .post("/chat/completions")
            .timeout(request.timeout)
            .json(&body(request))
            .send()
            .await
            .map_err(|e| transport(&self.name, request.timeout, e))?;
        let response = check_status(&self.name, response).await?;
        if request.stream {
            self.read_stream(request, response, deltas).await
        } else {
            let reply: Completion =
                read_json(&self.name, request.timeout, response, "a chat completion").await?;
            let choice = reply
                .choices
                .into_iter()
                .next()
                .ok_or_else(|| self.malformed("the completion has no choices"))?;
            let usage = reply.usage.unwrap_or_default();
            Ok(ChatResponse {
                text: choice.message.content.unwrap_or_default(),
                model: reply.model.unwrap_or_else(|| request.model.clone()),
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                stop_reason: choice.finish_reason,
            })
        }
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
        let mut decoder = sse::Decoder::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transport(&self.name, request.timeout, e))?;
            for event in decoder.push(&chunk) {
                if event.data == "[DONE]" {
                    return Ok(out);
                }
                let chunk: StreamChunk = serde_json::from_str(&event.data).map_err(|e| {
                    self.malformed(format!(
                        "not a chat completion chunk ({e}): {}",
                        excerpt(&event.data, 300)
                    ))
                })?;
                if let Some(model) = chunk.model {
                    out.model = model;
                }
                if let Some(usage) = chunk.usage {
                    out.input_tokens = usage.prompt_tokens;
                    out.output_tokens = usage.completion_tokens;
                }
                for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                    if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                        if let Some(tx) = deltas {
                            let _ = tx.send(text.clone());
                        }
                        out.text.push_str(&text);
                    }
                    if choice.finish_reason.is_some() {
                        out.stop_reason = choice.finish_reason;
                    }
                }
            }
        }
        Err(Error::Connection {
            provider: self.name.clone(),
            message: "the stream ended before [DONE]".into(),
        })
    }

    async fn run_transcription(&self, request: &TranscribeRequest) -> Result<Transcription, Error> {
        let part = multipart::Part::stream(request.audio.clone())
            .file_name(request.file_name.clone())
            .mime_str("application/octet-stream")
            .map_err(|e| Error::Request {
                provider: self.name.clone(),
                message: e.to_string(),
            })?;
        let mut form = multipart::Form::new()
            .part("file", part)
            .text("model", request.model.clone())
            .text("response_format", "verbose_json");
        if let Some(language) = &request.language {
            form = form.text("language", language.clone());
        }
        let response = self
            .post("/audio/transcriptions")
            .timeout(request.timeout)
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport(&self.name, request.timeout, e))?;
        let response = check_status(&self.name, response).await?;
        let text = response
            .text()
            .await
            .map_err(|e| transport(&self.name, request.timeout, e))?;
        let reply: VerboseTranscription = serde_json::from_str(&text).map_err(|e| {
            self.malformed(format!(
                "not a transcription ({e}): {}",
                excerpt(&text, 300)
            ))
        })?;
        let segments: Vec<(f64, f64, String)> = reply
            .segments
            .into_iter()
            .map(|s| (s.start, s.end, s.text.trim().to_owned()))
            .collect();
        let duration = reply
            .duration
            .or_else(|| segments.last().map(|s| s.1))
            .unwrap_or(0.0);
        Ok(Transcription {
            text: reply.text.trim().to_owned(),
            language: reply.language,
            duration_seconds: duration,
            segments,
        })
    }
}

impl ChatApi for OpenAi {
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<&'a Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(self.run(request, deltas))
    }

    fn transcribe<'a>(
        &'a self,
        request: &'a TranscribeRequest,
    ) -> BoxFuture<'a, Result<Transcription, Error>> {
        Box::pin(self.run_transcription(request))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The request body of `POST /chat/completions`.
fn body(request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for m in &request.messages {
        messages.push(json!({ "role": m.role, "content": m.content }));
    }
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": request.stream,
    });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.stop.is_empty() {
        body["stop"] = json!(request.stop);
    }
    if request.stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if let Some(out) = &request.json {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": out.name, "schema": out.schema, "strict": false },
        });
    }
    body
}

#[derive(Debug, Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct StreamChunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct StreamChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: StreamDelta,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamDelta {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VerboseTranscription {
    text: String,
    language: Option<String>,
    duration: Option<f64>,
    #[serde(default)]
    segments: Vec<TranscriptionSegment>,
}

#[derive(Debug, Deserialize)]
struct TranscriptionSegment {
    start: f64,
    end: f64,
    text: String,
}
