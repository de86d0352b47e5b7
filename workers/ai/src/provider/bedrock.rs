//! AWS Bedrock's Converse API (`POST /model/{modelId}/converse`) and ConverseStream
//! (`/converse-stream`, AWS event-stream framing), each request signed with SigV4 by the
//! maintained `aws-sigv4` crate. JSON output is asked for as a forced tool call.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use futures::{StreamExt as _, future::BoxFuture};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChatApi, ChatRequest, ChatResponse, Deltas, check_status, eventstream, read_json, transport,
};
use crate::error::{Error, excerpt};

/// AWS credentials for signing.
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A client for Bedrock in one region.
#[derive(Debug, Clone)]
pub struct Bedrock {
    name: String,
    base_url: String,
    region: String,
    keys: AwsKeys,
    http: reqwest::Client,
}

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

impl Bedrock {
    /// `base_url` e.g. `https://bedrock-runtime.us-east-1.amazonaws.com`.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        region: impl Into<String>,
        keys: AwsKeys,
        http: reqwest::Client,
    ) -> Self {
        Bedrock {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            region: region.into(),
            keys,
            http,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Malformed {
            provider: self.name.clone(),
            message: message.into(),
        }
    }

    fn request_error(&self, message: impl std::fmt::Display) -> Error {
        Error::Request {
            provider: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// The signed headers for a POST of `body` to `url`.
    fn sign(&self, url: &reqwest::Url, body: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(self.request_error("the base URL has no host")),
        };
        let identity = Credentials::new(
            &self.keys.access_key_id,
            &self.keys.secret_access_key,
            self.keys.session_token.clone(),
            None,
            "switchyard-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| self.request_error(e))?
            .into();
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| self.request_error(e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| self.request_error(e))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    async fn run(
        &self,
        request: &ChatRequest,
        deltas: Option<&Deltas>,
    ) -> Result<ChatResponse, Error> {
        let action = if request.stream {
            "converse-stream"
        } else {
            "converse"
        };
        // AWS expects the model id (which has `:` in it) percent-encoded in the path.
        let url = format!(
            "{}/model/{}/{action}",
            self.base_url,
            encode_segment(&request.model)
        );
        let url = reqwest::Url::parse(&url).map_err(|e| self.request_error(e))?;
        let body = serde_json::to_vec(&body(request)).map_err(|e| self.request_error(e))?;
        let mut builder = self
            .http
            .post(url.clone())
            .timeout(request.timeout)
            .header("content-type", "application/json");
        for (name, value) in self.sign(&url, &body)? {
            builder = builder.header(name, value);
        }
        let response = builder
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&self.name, request.timeout, e))?;
        let response = check_status(&self.name, response).await?;
        if request.stream {
            return self.read_stream(request, response, deltas).await;
        }
        let reply: ConverseReply =
            read_json(&self.name, request.timeout, response, "a Converse response").await?;
        let mut out = String::new();
        for block in reply.output.message.content {
            if let Some(text) = block.text {
                out.push_str(&text);
            }
            if let Some(tool) = block.tool_use {
                out = tool.input.to_string();
            }
        }
        Ok(ChatResponse {
            text: out,
            model: request.model.clone(),
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
        let mut stopped = false;
        let mut decoder = eventstream::Decoder::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| transport(&self.name, request.timeout, e))?;
            let frames = decoder
                .push(&chunk)
                .map_err(|e| self.malformed(e.to_string()))?;
            for frame in frames {
                let header = |name: &str| frame.headers.get(name).map(String::as_str);
                if header(":message-type") == Some("exception") {
                    return Err(self.exception(
                        header(":exception-type").unwrap_or("unknown"),
                        &frame.payload,
                    ));
                }
                let payload: Value = serde_json::from_slice(&frame.payload).map_err(|e| {
                    self.malformed(format!(
                        "not a ConverseStream event ({e}): {}",
                        excerpt(&String::from_utf8_lossy(&frame.payload), 300)
                    ))
                })?;
                match header(":event-type").unwrap_or_default() {
                    "contentBlockDelta" => {
                        let delta = &payload["delta"];
                        if let Some(text) = delta["text"].as_str() {
                            if let Some(tx) = deltas {
                                let _ = tx.send(text.to_owned());
                            }
                            out.text.push_str(text);
                        }
                        if let Some(part) = delta["toolUse"]["input"].as_str() {
                            tool_json.push_str(part);
                        }
                    }
                    "messageStop" => {
                        stopped = true;
                        out.stop_reason = payload["stopReason"].as_str().map(str::to_owned);
                    }
                    "metadata" => {
                        let usage = &payload["usage"];
                        out.input_tokens = usage["inputTokens"].as_u64().unwrap_or(0);
                        out.output_tokens = usage["outputTokens"].as_u64().unwrap_or(0);
                    }
                    _ => {}
                }
            }
        }
        if !stopped {
            return Err(Error::Connection {
                provider: self.name.clone(),
                message: "the stream ended before messageStop".into(),
            });
        }
        if !tool_json.is_empty() {
            out.text = tool_json;
        }
        Ok(out)
    }

    /// An exception sent inside the stream, as the error it means.
    fn exception(&self, kind: &str, payload: &[u8]) -> Error {
        let message = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
        let provider = self.name.clone();
        match kind {
            "throttlingException" => Error::RateLimited {
                provider,
                retry_after: None,
            },
            "internalServerException"
            | "serviceUnavailableException"
            | "modelStreamErrorException" => Error::Server {
                provider,
                status: 500,
                body: format!("{kind}: {message}"),
                retry_after: None,
            },
            _ => Error::Refused {
                provider,
                status: 400,
                body: format!("{kind}: {message}"),
            },
        }
    }
}

impl ChatApi for Bedrock {
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

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": [{ "text": m.content }] }))
        .collect();
    let mut inference = json!({ "maxTokens": request.max_tokens });
    if let Some(t) = request.temperature {
        inference["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if !request.stop.is_empty() {
        inference["stopSequences"] = json!(request.stop);
    }
    let mut body = json!({ "messages": messages, "inferenceConfig": inference });
    if let Some(system) = &request.system {
        body["system"] = json!([{ "text": system }]);
    }
    if let Some(out) = &request.json {
        body["toolConfig"] = json!({
            "tools": [{ "toolSpec": {
                "name": out.name,
                "description": "Record the answer in this exact structure.",
                "inputSchema": { "json": out.schema },
            }}],
            "toolChoice": { "tool": { "name": out.name } },
        });
    }
    body
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseReply {
    output: Output,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Debug, Deserialize)]
struct Output {
    message: OutputMessage,
}

#[derive(Debug, Deserialize)]
struct OutputMessage {
    content: Vec<ContentBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContentBlock {
    text: Option<String>,
    tool_use: Option<ToolUse>,
}

#[derive(Debug, Deserialize)]
struct ToolUse {
    input: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}
