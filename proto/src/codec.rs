//! Encoding and decoding of envelopes in either of their two forms.
//!
//! Protobuf is the default; a message whose `Content-Type` header is `application/json` is
//! read as JSON, so a shell with the `nats` CLI can start a workflow.

use serde::{Serialize, de::DeserializeOwned};

use crate::{header, subject, v1::StartWorkflow};

/// The form of a payload, chosen by the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Protobuf,
    Json,
}

impl ContentType {
    /// Reads the value of a `Content-Type` header; a missing header means protobuf.
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(v)
                if v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case(header::JSON)) =>
            {
                ContentType::Json
            }
            _ => ContentType::Protobuf,
        }
    }

    /// The header value to send with a payload of this form.
    pub fn header_value(self) -> &'static str {
        match self {
            ContentType::Protobuf => header::PROTOBUF,
            ContentType::Json => header::JSON,
        }
    }
}

/// Why a payload could not be read as the envelope it should be.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid protobuf {message}: {source}")]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("not a valid JSON {message}: at `{path}`: {reason}")]
    Json {
        message: &'static str,
        path: String,
        reason: String,
    },
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

/// Decodes `payload` as `T` in the given form.
pub fn decode<T>(content_type: ContentType, payload: &[u8]) -> Result<T, DecodeError>
where
    T: prost::Message + DeserializeOwned + Default,
{
    let message = short_type_name::<T>();
    match content_type {
        ContentType::Protobuf => {
            T::decode(payload).map_err(|source| DecodeError::Protobuf { message, source })
        }
        ContentType::Json => {
            let mut de = serde_json::Deserializer::from_slice(payload);
            let value: T =
                serde_path_to_error::deserialize(&mut de).map_err(|e| DecodeError::Json {
                    message,
                    path: e.path().to_string(),
                    reason: e.inner().to_string(),
                })?;
            de.end().map_err(|e| DecodeError::Json {
                message,
                path: ".".into(),
                reason: e.to_string(),
            })?;
            Ok(value)
        }
    }
}

/// Protobuf bytes of `message`.
pub fn encode_proto<T: prost::Message>(message: &T) -> Vec<u8> {
    message.encode_to_vec()
}

/// JSON bytes of `message`. Fails only when a JSON-carrying `bytes` field holds invalid JSON.
pub fn encode_json<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(message)
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Decodes a start message received on `subject` and checks it against the subject.
///
/// The tenant and workflow come from the subject (where NATS permissions apply); a body that
/// names a different one is refused, and so is a JSON field the message does not have. An
/// empty input becomes `{}`; any other input is the engine's to check (a bad one fails the
/// instance).
pub fn decode_start(
    subject_name: &str,
    content_type: ContentType,
    payload: &[u8],
) -> Result<StartWorkflow, DecodeError> {
    let Some(subject::Inbox::Start { tenant, workflow }) = subject::parse_inbox(subject_name)
    else {
        return Err(DecodeError::Field {
            field: "subject",
            reason: format!("{subject_name:?} is not wf.start.<tenant>.<workflow>"),
        });
    };
    let mut start: StartWorkflow = decode(content_type, payload)?;
    for (field, from_body, from_subject) in [
        ("tenant", &mut start.tenant, tenant),
        ("workflow", &mut start.workflow, workflow),
    ] {
        if from_body.is_empty() {
            *from_body = from_subject.to_owned();
        } else if from_body != from_subject {
            return Err(DecodeError::Field {
                field,
                reason: format!("{from_body:?} does not match the subject's {from_subject:?}"),
            });
        }
        subject::check_token(from_body).map_err(|e| DecodeError::Field {
            field,
            reason: e.to_string(),
        })?;
    }
    if !start.instance_id.is_empty() {
        subject::check_token(&start.instance_id).map_err(|e| DecodeError::Field {
            field: "instance_id",
            reason: e.to_string(),
        })?;
    }
    // An input that is not a JSON object is not refused here: the engine creates the instance,
    // failed with `invalid_input` naming `input`, so whoever follows its id sees why.
    if start.input.is_empty() {
        start.input = b"{}".to_vec();
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::*;
    use proptest::prelude::*;

    fn json_doc() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        // Null is how an empty field is written, so it is covered by the empty case.
        prop_oneof![
            Just(Vec::new()),
            value
                .prop_filter("null is the empty field", |v| !v.is_null())
                .prop_map(|v| serde_json::to_vec(&v).expect("serializes")),
        ]
    }

    fn retry() -> impl Strategy<Value = Option<RetryPolicy>> {
        prop::option::of(
            (any::<u32>(), any::<u64>(), any::<u64>(), -1e6f64..1e6).prop_map(
                |(max_attempts, initial_delay_ms, max_delay_ms, multiplier)| RetryPolicy {
                    max_attempts,
                    initial_delay_ms,
                    max_delay_ms,
                    multiplier,
                },
            ),
        )
    }

    fn job() -> impl Strategy<Value = Job> {
        (
            ".{0,20}",
            ".{0,20}",
            ".{0,20}",
            "[a-z]{1,8}\\.[a-z_]{1,12}",
            json_doc(),
            retry(),
            any::<i64>(),
            ".{0,20}",
        )
            .prop_map(
                |(
                    job_id,
                    tenant,
                    instance_id,
                    operation,
                    input,
                    retry,
                    deadline_ms,
                    correlation_id,
                )| Job {
                    job_id,
                    tenant,
                    instance_id,
                    step_id: "step".into(),
                    operation,
                    input,
                    retry,
                    deadline_ms,
                    correlation_id,
                    reply_subject: String::new(),
                    created_at_ms: deadline_ms / 2,
                },
            )
    }

    fn job_result() -> impl Strategy<Value = JobResult> {
        (
            ".{0,20}",
            json_doc(),
            0i32..4,
            0i32..10,
            ".{0,40}",
            any::<u32>(),
            any::<u64>(),
            "[a-z.]{0,12}",
        )
            .prop_map(
                |(job_id, output, status, code, message, attempts, retry_after_ms, field)| {
                    JobResult {
                        job_id,
                        output,
                        status,
                        error: Some(JobError {
                            code,
                            message,
                            retry_after_ms,
                            field,
                        }),
                        attempts,
                        ..Default::default()
                    }
                },
            )
    }

    fn dead_letter() -> impl Strategy<Value = DeadLetter> {
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::hash_map("[A-Za-z-]{1,10}", ".{0,10}", 0..4),
            0i32..6,
            any::<u64>(),
        )
            .prop_map(|(payload, headers, reason, stream_sequence)| DeadLetter {
                kind: "test".into(),
                subject: "jobs.test.echo".into(),
                payload,
                headers,
                reason,
                error: "boom".into(),
                attempts: 3,
                stream_sequence,
                ..Default::default()
            })
    }

    fn both_forms<T>(message: &T) -> Result<(), TestCaseError>
    where
        T: prost::Message + Serialize + DeserializeOwned + Default + PartialEq + std::fmt::Debug,
    {
        let from_proto: T = decode(ContentType::Protobuf, &encode_proto(message))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&from_proto, message);
        let json = encode_json(message).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let from_json: T =
            decode(ContentType::Json, &json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&from_json, message);
        Ok(())
    }

    proptest! {
        #[test]
        fn jobs_round_trip(job in job()) { both_forms(&job)?; }

        #[test]
        fn results_round_trip(result in job_result()) { both_forms(&result)?; }

        #[test]
        fn dead_letters_round_trip(dl in dead_letter()) { both_forms(&dl)?; }

        #[test]
        fn events_and_usage_round_trip(data in json_doc(), quantity in -1e9f64..1e9, attrs in prop::collection::hash_map("[a-z]{1,5}", ".{0,5}", 0..3)) {
            both_forms(&WorkflowEvent { event_id: "e1".into(), r#type: "token".into(), data: data.clone(), at_ms: 5, ..Default::default() })?;
            both_forms(&UsageEvent { event_id: "u1".into(), meter: "tokens".into(), quantity, attributes: attrs, ..Default::default() })?;
            both_forms(&SignalWorkflow { name: "approve".into(), payload: data, ..Default::default() })?;
            both_forms(&CancelWorkflow { reason: "user".into(), ..Default::default() })?;
        }

        #[test]
        fn starts_round_trip(input in json_doc(), labels in prop::collection::hash_map("[a-z]{1,5}", ".{0,5}", 0..3)) {
            both_forms(&StartWorkflow { tenant: "acme".into(), workflow: "w".into(), input, labels, version: 3, ..Default::default() })?;
        }
    }

    #[test]
    fn json_start_from_a_shell() {
        let body = br#"{"instance_id": "i-1", "input": {"topic": "rust"}}"#;
        let start = decode_start("wf.start.acme.research_to_docs", ContentType::Json, body)
            .expect("decodes");
        assert_eq!(start.tenant, "acme");
        assert_eq!(start.workflow, "research_to_docs");
        assert_eq!(start.instance_id, "i-1");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&start.input).unwrap()["topic"],
            "rust"
        );
    }

    #[test]
    fn protobuf_start_gets_empty_input_as_object() {
        let bytes = encode_proto(&StartWorkflow::default());
        let start =
            decode_start("wf.start.acme.w", ContentType::Protobuf, &bytes).expect("decodes");
        assert_eq!(start.input, b"{}");
    }

    #[test]
    fn start_errors_name_the_field() {
        let err = decode_start(
            "wf.start.acme.w",
            ContentType::Json,
            br#"{"tenant": "other"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"field `tenant`: "other" does not match the subject's "acme""#
        );
        let err =
            decode_start("wf.start.acme.w", ContentType::Json, br#"{"foo": "bar"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `foo`"), "{err}");
        // Input that is not an object decodes; the engine fails the instance over it.
        let start = decode_start("wf.start.acme.w", ContentType::Json, br#"{"input": [1]}"#)
            .expect("decodes");
        assert_eq!(start.input, b"[1]");
        let err =
            decode_start("wf.start.acme.w", ContentType::Json, br#"{"version": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("at `version`"), "{err}");
        let err = decode_start(
            "wf.start.acme.w",
            ContentType::Json,
            br#"{"instance_id": "a.b"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("field `instance_id`"), "{err}");
        let err =
            decode_start("wf.start.acme.w", ContentType::Protobuf, b"\xff\xff\xff").unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf { .. }), "{err}");
    }

    #[test]
    fn content_type_header() {
        assert_eq!(
            ContentType::from_header(Some("application/json; charset=utf-8")),
            ContentType::Json
        );
        assert_eq!(
            ContentType::from_header(Some("application/protobuf")),
            ContentType::Protobuf
        );
        assert_eq!(ContentType::from_header(None), ContentType::Protobuf);
    }
}
