//! Header names carried on every Switchyard message.

/// JetStream's deduplication key. Derived messages use deterministic ids so a republish after
/// a crash is dropped by the stream's duplicate window.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace context, vendor part.
pub const TRACESTATE: &str = "tracestate";
/// Follows one request across every process that touches it.
pub const CORRELATION_ID: &str = "X-Correlation-ID";
/// The tenant a message belongs to (also a subject token, so permissions can confine it).
pub const TENANT: &str = "Switchyard-Tenant";
/// `application/json` selects the JSON form of an envelope; anything else means protobuf.
pub const CONTENT_TYPE: &str = "Content-Type";

/// The value of [`CONTENT_TYPE`] for JSON payloads.
pub const JSON: &str = "application/json";
/// The value of [`CONTENT_TYPE`] for protobuf payloads.
pub const PROTOBUF: &str = "application/protobuf";
