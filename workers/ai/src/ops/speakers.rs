//! `ai.identify_speakers` (transcript parsing and statistics, the same for every provider:
//! it reads structure, it does not guess) and `ai.transcribe` (speech-to-text through an
//! OpenAI-compatible provider, or a transcript import).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Chosen, JobEnv, Ops, meter};
use crate::{
    error::Error,
    provider::TranscribeRequest,
    transcript::{self, Format, Segment},
};

/// The largest recording accepted, in bytes (OpenAI's limit for one upload).
const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct IdentifyInput {
    #[serde(default)]
    transcript: Option<String>,
    /// Segments as `ai.transcribe` gives them; timings survive, unlike in the text.
    #[serde(default)]
    segments: Option<Value>,
    #[serde(default)]
    format: Format,
}

pub(crate) fn identify(input: IdentifyInput) -> Result<Value, Error> {
    let segments: Vec<Segment> = match (input.segments, input.transcript) {
        (Some(segments), _) if !segments.is_null() => {
            serde_json::from_value(segments).map_err(|e| {
                Error::invalid_input("segments", format!("not a list of segments: {e}"))
            })?
        }
        (_, Some(text)) if !text.trim().is_empty() => transcript::parse(&text, input.format)
            .map_err(|e| Error::invalid_input("transcript", e.0))?,
        _ => {
            return Err(Error::invalid_input(
                "transcript",
                "missing; give the transcript or the segments of ai.transcribe",
            ));
        }
    };
    if segments.is_empty() {
        return Err(Error::invalid_input("segments", "no segments to attribute"));
    }
    Ok(json!({
        "speakers": transcript::speaker_stats(&segments),
        "segments": segments,
        "transcript": transcript::normalized(&segments),
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TranscribeInput {
    audio_url: Option<String>,
    transcript: Option<String>,
    #[serde(default)]
    format: Format,
    language: Option<String>,
    provider: Option<String>,
    model: Option<String>,
}

pub(crate) async fn transcribe<E: JobEnv>(
    ops: &Ops,
    env: &E,
    input: TranscribeInput,
) -> Result<Value, Error> {
    let url = input
        .audio_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let text = input.transcript.as_deref().filter(|t| !t.trim().is_empty());
    match (url, text) {
        (Some(_), Some(_)) | (None, None) => Err(Error::invalid_input(
            "audio_url",
            "give exactly one of audio_url and transcript",
        )),
        (None, Some(text)) => {
            let segments = transcript::parse(text, input.format)
                .map_err(|e| Error::invalid_input("transcript", e.0))?;
            Ok(output(
                &segments,
                transcript::duration(&segments),
                input.language,
            ))
        }
        (Some(url), None) => {
            // Before choosing a provider: a URL into the worker's own network is refused
            // whatever else the job says.
            ops.guard
                .check_url(url)
                .await
                .map_err(|e| Error::invalid_input("audio_url", e.to_string()))?;
            let Chosen::Remote(provider) = ops.choose(input.provider.as_deref())? else {
                return Err(Error::Unsupported {
                    provider: "local".into(),
                    what: "transcribe audio; name an OpenAI-compatible provider in `provider` or make one the default".into(),
                });
            };
            let audio = download(ops, url, env).await?;
            let file_name = url
                .rsplit('/')
                .next()
                .and_then(|n| n.split(['?', '#']).next())
                .filter(|n| n.contains('.'))
                .unwrap_or("audio.mp3")
                .to_owned();
            let model = input
                .model
                .clone()
                .unwrap_or_else(|| provider.transcription_model.clone());
            let request = TranscribeRequest {
                model: model.clone(),
                audio,
                file_name,
                language: input.language.clone(),
                timeout: provider.timeout,
            };
            let t = provider.transcribe(&request, env.cancel()).await?;
            let attributes = std::collections::HashMap::from([
                ("provider".to_owned(), provider.name().to_owned()),
                ("model".to_owned(), model),
            ]);
            env.usage(
                meter::AUDIO_SECONDS,
                t.duration_seconds,
                "seconds",
                attributes,
            )
            .await?;
            let segments: Vec<Segment> = if t.segments.is_empty() {
                vec![Segment {
                    speaker: None,
                    start_seconds: Some(0.0),
                    end_seconds: Some(t.duration_seconds),
                    text: t.text.clone(),
                }]
            } else {
                t.segments
                    .into_iter()
                    .map(|(start, end, text)| Segment {
                        speaker: None,
                        start_seconds: Some(start),
                        end_seconds: Some(end),
                        text,
                    })
                    .collect()
            };
            Ok(output(
                &segments,
                t.duration_seconds,
                t.language.or(input.language),
            ))
        }
    }
}

fn output(segments: &[Segment], duration: f64, language: Option<String>) -> Value {
    let mut out = json!({
        "transcript": transcript::normalized(segments),
        "segments": segments,
        "duration_seconds": duration,
    });
    if let Some(l) = language {
        out["language"] = json!(l);
    }
    out
}

/// Fetches the recording, refusing one larger than a single upload may be.
async fn download<E: JobEnv>(ops: &Ops, url: &str, env: &E) -> Result<bytes::Bytes, Error> {
    use futures::StreamExt as _;
    let fetch = async {
        let response = ops.http.get(url).send().await.map_err(|e| {
            match switchyard_runtime::net::refusal(&e) {
                // A redirect or DNS answer into a refused network: permanent.
                Some(refused) => Error::invalid_input("audio_url", refused.to_string()),
                None => Error::Connection {
                    provider: "audio_url".into(),
                    message: e.to_string(),
                },
            }
        })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let err = if status >= 500 || status == 429 {
                Error::Connection {
                    provider: "audio_url".into(),
                    message: format!("HTTP {status}"),
                }
            } else {
                Error::invalid_input(
                    "audio_url",
                    format!("the recording cannot be fetched: HTTP {status}"),
                )
            };
            return Err(err);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Connection {
                provider: "audio_url".into(),
                message: e.to_string(),
            })?;
            if body.len() + chunk.len() > MAX_AUDIO_BYTES {
                return Err(Error::invalid_input(
                    "audio_url",
                    format!("the recording is larger than {} MiB", MAX_AUDIO_BYTES >> 20),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(bytes::Bytes::from(body))
    };
    tokio::select! {
        r = fetch => r,
        () = env.cancel().cancelled() => Err(Error::Cancelled),
    }
}
