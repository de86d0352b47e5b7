//! What a call onto the bus carries on behalf of a request: the tenant, the correlation id
//! and the W3C trace context. Clients of the bus (the engine's queries, workers' services)
//! take this, not the HTTP request context.

use async_nats::HeaderMap;
use switchyard_proto::header;

/// The metadata of one request's calls onto the bus.
#[derive(Debug, Clone)]
pub(crate) struct CallMeta {
    pub(crate) tenant: String,
    pub(crate) correlation_id: String,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

impl CallMeta {
    /// Headers for a request/reply call: correlation and trace context.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CORRELATION_ID, self.correlation_id.as_str());
        if let Some(t) = &self.traceparent {
            h.insert(header::TRACEPARENT, t.as_str());
        }
        if let Some(t) = &self.tracestate {
            h.insert(header::TRACESTATE, t.as_str());
        }
        h
    }

    /// Headers for a message on a stream: the call's, the message id, the tenant and the
    /// content type.
    pub(crate) fn message_headers(&self, msg_id: &str) -> HeaderMap {
        let mut h = self.headers();
        h.insert(header::MSG_ID, msg_id);
        h.insert(header::TENANT, self.tenant.as_str());
        h.insert(header::CONTENT_TYPE, header::PROTOBUF);
        h
    }
}
