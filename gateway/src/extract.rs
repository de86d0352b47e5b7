//! What a handler takes from a request: the authenticated, rate-limited context ([`Ctx`])
//! and bodies (JSON, definition text) and query strings that fail as problems naming the
//! field.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Query, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use switchyard_proto::orchestrator::{Endpoint, GetInstance, InstanceGet, InstanceView};
use switchyard_proto::subject;
use tracing::warn;
use uuid::Uuid;

use crate::{
    Caller, Error, Permission, audit,
    call::CallMeta,
    limits::{Group, Limited},
    observe::{self, CorrelationId},
    state::AppState,
    workers::{self, WorkerError},
};

/// Namespace of the instance ids derived from a tenant and an `Idempotency-Key`.
pub(crate) const IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x0b7c_43f4_5d0e_4a49_9c55_7f1e_2a6d_c3b1);
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The authenticated context of an API request.
pub(crate) struct Ctx {
    pub(crate) caller: Caller,
    pub(crate) correlation: String,
    /// What the request's calls onto the bus carry.
    pub(crate) meta: CallMeta,
    /// The request's `Idempotency-Key`, or the one made up for it when it has none.
    idempotency_key: String,
    /// The fingerprint of the body of a request with an `Idempotency-Key`, once read.
    body_print: Arc<OnceLock<String>>,
    pub(crate) state: AppState,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let correlation = parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| CorrelationId::from_headers(&parts.headers))
            .0;
        // The TCP peer, when the server was started with connection info.
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let over_refusals = |limited: Limited| -> Error {
            state
                .metrics()
                .rate_limited
                .with_label_values(&[Group::Refused.as_str()])
                .inc();
            limited.into()
        };
        if let Some(address) = address {
            state
                .limits()
                .check_address(address)
                .map_err(over_refusals)?;
        }
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let caller = state.auth().authenticate(authorization).inspect_err(|e| {
            if let Error::Unauthenticated { reason } = e {
                state
                    .metrics()
                    .auth_failures
                    .with_label_values(&[*reason])
                    .inc();
                warn!(reason, "authentication failed");
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map_or("", MatchedPath::as_str);
                audit::refused(
                    state,
                    audit::Record {
                        tenant: switchyard_proto::audit::ANONYMOUS_TENANT,
                        actor: "",
                        action: switchyard_proto::audit::AUTH_FAILED,
                        target: route,
                        outcome: reason,
                        correlation_id: &correlation,
                        attributes: [("method".to_owned(), parts.method.to_string())].into(),
                    },
                );
            }
        });
        let caller = match caller {
            Ok(caller) => caller,
            // The refusal that takes an address over its rate is answered as the ones after it.
            Err(e @ Error::Unauthenticated { .. }) => {
                let over = address.and_then(|a| state.limits().refused(a));
                return Err(over.map_or(e, over_refusals));
            }
            Err(e) => return Err(e),
        };
        // Every route of the table carries its group; one without is a bug, not a reader.
        let group = parts.extensions.get::<Group>().copied().ok_or_else(|| {
            Error::internal(
                "rate limiting the request",
                format!("the route {} has no rate-limit group", parts.uri.path()),
            )
        })?;
        state.limits().check(group, &caller).inspect_err(|_| {
            state
                .metrics()
                .rate_limited
                .with_label_values(&[group.as_str()])
                .inc();
        })?;
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The request span's context (a child of the caller's), or the caller's as it came.
        let trace = observe::outgoing_trace(&parts.extensions, &parts.headers);
        let idempotency_key = match text("idempotency-key") {
            None => None,
            Some(k)
                if !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                    && k.chars().all(|c| c.is_ascii_graphic()) =>
            {
                Some(k)
            }
            Some(_) => {
                return Err(Error::field(
                    "Idempotency-Key",
                    format!("expected 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
                ));
            }
        };
        let body_print = Arc::new(OnceLock::new());
        let idempotency_key = match idempotency_key {
            Some(key) => {
                parts.extensions.insert(crate::idempotency::Claim {
                    tenant: caller.tenant.clone(),
                    key: key.clone(),
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    print: body_print.clone(),
                });
                key
            }
            None => {
                let key = format!(
                    "{}{}",
                    crate::idempotency::GENERATED_PREFIX,
                    Uuid::now_v7().simple()
                );
                if let Some(recorded) = parts.extensions.get::<crate::idempotency::Recorded>() {
                    let _ = recorded.generated.set(key.clone());
                }
                key
            }
        };
        Ok(Ctx {
            meta: CallMeta {
                tenant: caller.tenant.clone(),
                correlation_id: correlation.clone(),
                traceparent: trace.traceparent,
                tracestate: trace.tracestate,
            },
            caller,
            correlation,
            idempotency_key,
            body_print,
            state: state.clone(),
        })
    }
}

impl Ctx {
    pub(crate) fn require(&self, permission: Permission) -> Result<(), Error> {
        if self.caller.has(permission) {
            return Ok(());
        }
        self.state
            .metrics()
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
        warn!(subject = %self.caller.subject, %permission, "permission denied");
        audit::refused(
            &self.state,
            audit::Record {
                tenant: self.tenant(),
                actor: &self.caller.subject,
                action: switchyard_proto::audit::AUTH_FAILED,
                target: &permission.to_string(),
                outcome: "forbidden",
                correlation_id: &self.correlation,
                attributes: HashMap::new(),
            },
        );
        Err(Error::Forbidden { permission })
    }

    /// Records an accepted action in the audit log (see [`audit`]).
    pub(crate) fn audit(
        &self,
        action: &'static str,
        target: &str,
        attributes: HashMap<String, String>,
    ) {
        audit::accepted(
            &self.state,
            audit::Record {
                tenant: self.tenant(),
                actor: &self.caller.subject,
                action,
                target,
                outcome: switchyard_proto::audit::OK,
                correlation_id: &self.correlation,
                attributes,
            },
        );
    }

    pub(crate) fn tenant(&self) -> &str {
        &self.caller.tenant
    }

    /// Asks the workflow engine's endpoint `E` on behalf of this request.
    pub(crate) async fn query<E: Endpoint>(&self, request: &E::Request) -> Result<E::Reply, Error> {
        self.state
            .bus()
            .query::<E>(request, self.meta.headers())
            .await
    }

    /// Runs `input` as job `job_id` of `operation` on a worker's service endpoint, within
    /// this request's deadline (see [`workers::call_worker`]).
    pub(crate) async fn call_worker(
        &self,
        operation: &'static str,
        job_id: String,
        input: Value,
    ) -> Result<Value, WorkerError> {
        workers::call_worker(
            self.state.bus(),
            &self.meta,
            self.state.settings().request_timeout,
            operation,
            job_id,
            input,
        )
        .await
    }

    /// A deterministic id from the tenant, `parts` and the `Idempotency-Key` (the client's,
    /// or the one made up for a request without one), with the body's fingerprint unless the
    /// key is one the gateway made up.
    pub(crate) fn derived_id(&self, parts: &[&str]) -> String {
        let key = self.idempotency_key.as_str();
        let print = self
            .body_print
            .get()
            .map(String::as_str)
            .filter(|_| !key.starts_with(crate::idempotency::GENERATED_PREFIX));
        let mut name = self.tenant().to_owned();
        for p in parts.iter().chain([&key]).chain(print.as_ref()) {
            name.push('\n');
            name.push_str(p);
        }
        Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()).to_string()
    }

    pub(crate) async fn instance(&self, id: &str) -> Result<InstanceView, Error> {
        self.query::<GetInstance>(&InstanceGet {
            tenant: self.tenant().to_owned(),
            instance_id: id.to_owned(),
        })
        .await
    }
}

// ---- request bodies ----

/// A JSON body; malformed JSON is a 400 naming line and column, a wrong field a 400 naming
/// the field, a body over the limit a 413.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            let mime = ct.split(';').next().unwrap_or_default().trim();
            if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
                return Err(Error::UnsupportedMediaType(ct.to_owned()));
            }
        }
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        // Every body is an object (or `null`, read as none): serde would read a request
        // type from an array by position, so `[null, "x"]` would mean something.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Null) => return Ok(JsonBody(T::default())),
                Ok(_) => return Err(Error::BadRequest("the body must be a JSON object".into())),
                // Not JSON at all: the parse below says where.
                Err(_) => {}
            }
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body; for a request with an `Idempotency-Key`, checked to be the request the key was
/// first used for.
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Error> {
    let claim = req.extensions().get::<crate::idempotency::Claim>().cloned();
    let recorded = req
        .extensions()
        .get::<crate::idempotency::Recorded>()
        .cloned();
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge {
                limit: state.settings().body_limit,
            }
        } else {
            Error::BadRequest(format!("cannot read the request body: {r}"))
        }
    })?;
    if let Some(claim) = claim {
        let print = claim
            .print
            .get_or_init(|| crate::idempotency::fingerprint(&bytes));
        if let Some(store) = state.idempotency() {
            crate::idempotency::settle(store, &claim, print, recorded.as_ref()).await?;
        }
    }
    Ok(bytes)
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            json_error(e.into_inner(), Some(path))
        })
        .and_then(|v| de.end().map(|()| v).map_err(|e| json_error(e, None)))?;
    Ok(value)
}

fn json_error(e: serde_json::Error, path: Option<String>) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        },
        Category::Data => match path.filter(|p| p != ".") {
            Some(field) => Error::field(field, strip_position(&e)),
            None => Error::BadRequest(strip_position(&e)),
        },
    }
}

/// serde_json's message without its " at line L column C" tail (reported separately).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A definition's text: the body itself (`application/yaml`, `text/yaml`, `text/plain`, or no
/// content type) or JSON `{"source": "..."}`. No text (or only blanks) is a 400 naming `body`
/// or `source`: there is no definition to judge.
pub(crate) async fn definition_source(req: Request, state: &AppState) -> Result<String, Error> {
    let (field, source) = definition_text(req, state).await?;
    if source.trim().is_empty() {
        return Err(Error::field(
            field,
            "no definition: give its YAML as the body, or JSON {\"source\": \"…\"}",
        ));
    }
    // YAML that reads as something other than a mapping is no definition at all; a syntax
    // error is left to validation, which names its line.
    let not_a_mapping = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&source) {
        Ok(document) => !document.is_mapping(),
        Err(_) => starts_as_sequence(&source),
    };
    if not_a_mapping {
        return Err(Error::field(
            field,
            "not a definition: expected a YAML mapping with name, version and steps",
        ));
    }
    Ok(source)
}

/// Whether YAML that does not parse begins a sequence (`- …` or `[…`) at the top: no
/// definition, whatever else is wrong with it.
fn starts_as_sequence(source: &str) -> bool {
    let first = source.lines().map(str::trim_start).find(|l| {
        !(l.is_empty() || l.starts_with('#') || l.starts_with('%') || l.trim_end() == "---")
    });
    first.is_some_and(|l| l == "-" || l.starts_with("- ") || l.starts_with('['))
}

/// The text and the field it came from.
async fn definition_text(req: Request, state: &AppState) -> Result<(&'static str, String), Error> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mime = ct.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match mime.as_deref() {
        Some("application/json") => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Body {
                source: String,
            }
            let bytes = read_body(req, state).await?;
            let body: Body = parse_json(&bytes)?;
            Ok(("source", body.source))
        }
        None
        | Some(
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "text/plain",
        ) => {
            let bytes = read_body(req, state).await?;
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|e| Error::field("body", format!("not UTF-8: {e}")))?;
            Ok(("body", text))
        }
        Some(_) => Err(Error::UnsupportedMediaType(ct.unwrap_or_default())),
    }
}

pub(crate) fn check_token(field: &str, value: &str) -> Result<(), Error> {
    subject::check_token(value).map_err(|e| Error::field(field, e.to_string()))
}

pub(crate) fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Error> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Error::field("query", e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::start::TriggerRequest;

    #[test]
    fn malformed_json_names_line_and_column_and_data_errors_name_the_field() {
        let e =
            parse_json::<TriggerRequest>(b"{\n  \"workflow_name\": \"x\",\n  oops\n}").unwrap_err();
        assert!(
            matches!(
                e,
                Error::MalformedJson {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse_json::<TriggerRequest>(br#"{"workflow_name": 7}"#).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidField { field, .. } if field == "workflow_name"),
            "{e:?}"
        );
    }
}
