//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/openapi.json`. A test checks that it lists exactly the routes the router serves.

use axum::{Json, http::header, response::IntoResponse};
use serde_json::{Value, json};
use switchyard_catalog::Catalog;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use switchyard_proto::orchestrator as contract;

use crate::{
    api::{cards, dlq::MAX_SEQ, meetings, research},
    error::{FieldError, Problem},
    responses,
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Run AI workflows on NATS JetStream: start them, follow their progress, \
            manage their definitions. Every `/api/v1` route needs a bearer JWT; the tenant comes \
            from the token. Errors are `application/problem+json` (RFC 9457). Every request may \
            send `X-Correlation-ID` (returned on every response) and a W3C `traceparent` / \
            `tracestate`, which the request's trace continues across the bus.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::api::workflows::trigger,
        crate::api::workflows::execute,
        crate::api::workflows::status,
        crate::api::workflows::instance,
        crate::api::events::stream,
        crate::api::workflows::cancel,
        crate::api::workflows::rerun,
        crate::api::bulk::cancel,
        crate::api::bulk::rerun,
        crate::api::workflows::signal,
        crate::api::hooks::receive,
        crate::api::dlq::list,
        crate::api::dlq::show,
        crate::api::dlq::replay,
        crate::api::dlq::replay_bulk,
        crate::api::dlq::purge,
        crate::api::definitions::list_definitions,
        crate::api::definitions::validate_definition,
        crate::api::definitions::get_definition,
        crate::api::definitions::put_definition,
        crate::api::definitions::delete_definition,
        crate::api::operations::registry,
        crate::api::meetings::process,
        crate::api::meetings::context,
        crate::api::meetings::create_task,
        crate::api::meetings::update_task_status,
        crate::api::meetings::integrations_status,
        crate::api::research::research,
        crate::api::cards::create,
        crate::api::cards::batch,
        crate::api::cards::retrieve,
        crate::api::cards::list,
        crate::api::cards::get,
        crate::api::cards::update,
        crate::api::cards::delete,
        crate::api::cards::versions,
        crate::api::cards::register_type,
        crate::api::cards::onboarding,
        crate::api::ledger::usage,
        crate::api::ledger::instances,
        crate::api::ledger::stats,
        crate::api::ledger::audit_log,
        crate::api::operations::health,
        crate::api::operations::ready,
        crate::api::operations::metrics,
        serve,
    ),
    components(
        schemas(
            Problem, FieldError, responses::Accepted, responses::SignalAccepted, contract::InstanceView,
            contract::StepView, contract::InstanceStatus, contract::StepStatus,
            contract::InstanceError, contract::StepError, contract::ItemsView,
            contract::SignalView, contract::DefinitionList, contract::DefinitionSummary,
            contract::DefinitionDetail, contract::DefinitionStep, contract::DefinitionScope,
            contract::PutReply, contract::DeleteReply, contract::ValidateReply,
            contract::Problem, contract::RerunReply, contract::DlqPage, contract::DlqSummary,
            contract::DlqHandled, contract::DlqLetter, contract::DlqReplayReply,
            contract::DlqReplayed, contract::DlqRefused, contract::DlqPurgeReply
        )
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "workflows", description = "Start, follow, cancel, signal and re-run workflow instances"),
        (name = "definitions", description = "Register, read, validate and delete workflow definitions"),
        (name = "operations", description = "Health, readiness, metrics, the worker registry and this document"),
        (name = "meetings", description = "Turn meeting transcripts into summaries and tasks, and read the results"),
        (name = "research", description = "Research a topic over the document corpus, given URLs and a search API"),
        (name = "integrations", description = "Create and update ClickUp tasks, and check which integrations work"),
        (name = "dlq", description = "Dead letters: list, inspect, replay and purge the messages workers gave up on"),
        (name = "ledger", description = "Usage per meter, day or workflow; instance history and stats; the audit log"),
        (name = "cards", description = "Versioned content cards (company, audience, voice, insight, and a tenant's own types) and onboarding"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as JSON, each catalog-checked request body in its catalog schema.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    constrain_parameters(&mut doc);
    if let Some(meeting) = doc.pointer_mut("/components/schemas/ProcessMeeting") {
        refine_meeting(meeting);
    }
    // A type's schema: a JSON Schema that says something, about an object.
    if let Some(content) = doc.pointer_mut(&format!(
        "/paths/{}/put/requestBody/content",
        escape("/api/v1/cards/types/{type}")
    )) {
        content["application/json"]["schema"] = json!({
            "type": "object",
            "minProperties": 1,
            "properties": { "type": { "const": "object" } }
        });
    }
    refine_labels_and_bulk(&mut doc);
    retry_keys_on_server_errors(&mut doc);
    for body in CATALOG_BODIES {
        let schema = body.schema();
        if let Some(content) = doc.pointer_mut(&format!(
            "/paths/{}/{}/requestBody/content",
            escape(body.path),
            body.method
        )) {
            content["application/json"]["schema"] = schema;
        }
    }
    doc
}

/// An operation name, `<kind>.<op>[.<op>…]`, as `subject::check_operation` checks it.
const OPERATION: &str = "^[A-Za-z0-9_-]{1,128}(\\.[A-Za-z0-9_-]{1,128})+$";

/// A label key, as `crate::start::labels` checks it.
const LABEL_KEY: &str = "^[A-Za-z0-9_.-]{1,63}$";
/// A `label` filter, `key=value`.
const LABEL_FILTER: &str = "^[A-Za-z0-9_.-]{1,63}=[\\s\\S]{0,256}$";

/// What the gateway checks of labels on a start, and of a bulk action's filter.
fn refine_labels_and_bulk(doc: &mut Value) {
    let labels = json!({
        "description": "Labels kept with the instance, to find it by: at most 16",
        "type": "object",
        "maxProperties": crate::start::MAX_LABELS,
        "propertyNames": { "pattern": LABEL_KEY },
        "additionalProperties": { "type": "string", "maxLength": 256 }
    });
    if let Some(p) = doc.pointer_mut("/components/schemas/TriggerRequest/properties") {
        p["labels"] = labels.clone();
        p["not_before"] = json!({ "anyOf": [
            instant_schema(),
            { "type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_i64 },
            { "type": "null" }
        ]});
    }
    // Execute reads a null `labels` as none.
    if let Some(p) = doc.pointer_mut("/components/schemas/ExecuteRequest/properties") {
        p["labels"] = json!({ "anyOf": [labels, { "type": "null" }] });
    }
    let rules = parameter_rules();
    let rule = |name: &str| {
        rules
            .iter()
            .find(|(n, routes, _)| *n == name && routes.contains(&"/api/v1/workflows/instances"))
            .map_or(Value::Null, |(_, _, schema)| schema.clone())
    };
    // Each field may be null, which the gateway reads as absent.
    let or_null = |schema: Value| json!({ "anyOf": [schema, { "type": "null" }] });
    for name in ["BulkCancelRequest", "BulkRerunRequest"] {
        if let Some(bulk) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            let p = &mut bulk["properties"];
            p["workflow"] = or_null(rule("workflow"));
            p["label"] = or_null(json!({ "type": "string", "pattern": LABEL_FILTER }));
            p["from"] = or_null(rule("from"));
            p["to"] = or_null(rule("to"));
            p["limit"] = or_null(
                json!({ "type": "integer", "minimum": 1, "maximum": crate::api::bulk::MAX_BULK }),
            );
            bulk["anyOf"] = one_given(&["workflow", "label", "from", "to"]);
            if name == "BulkRerunRequest" {
                rerun_status(bulk);
            }
        }
    }
    refine_dlq_bodies(doc);
    if let Some(p) = doc.pointer_mut("/components/schemas/RerunRequest/properties") {
        p["from_step"] = or_null(rule("workflow"));
        p["version"] = or_null(json!({ "type": "integer", "minimum": 1, "maximum": u32::MAX }));
    }
}

/// A bulk re-run's `status`: which finished instances it selects.
fn rerun_status(bulk: &mut Value) {
    bulk["properties"]["status"] = json!({ "anyOf": [{ "type": "string", "enum": ["failed", "cancelled"] }, { "type": "null" }] });
}

/// A subject token: a tenant, workflow, instance id or kind.
fn token_schema() -> Value {
    use switchyard_proto::subject::MAX_TOKEN_LEN;
    json!({ "type": "string", "pattern": format!("^[A-Za-z0-9_-]{{1,{MAX_TOKEN_LEN}}}$") })
}

/// RFC 3339 with any offset, a date (its midnight UTC) or milliseconds since the epoch.
fn instant_schema() -> Value {
    json!({ "anyOf": [
        { "type": "string", "format": "date-time" },
        { "type": "string", "format": "date" },
        { "type": "string", "pattern": "^[0-9]{1,15}$" }
    ]})
}

/// At least one of `fields` given, and not null.
fn one_given(fields: &[&str]) -> Value {
    fields
        .iter()
        .map(|f| {
            json!({
                "required": [f],
                "properties": { *f: { "not": { "type": "null" } } }
            })
        })
        .collect()
}

/// What the gateway checks of a bulk replay's and a purge's body.
fn refine_dlq_bodies(doc: &mut Value) {
    let or_null = |schema: Value| json!({ "anyOf": [schema, { "type": "null" }] });
    let (token, instant) = (token_schema(), instant_schema());
    let filters = ["kind", "operation", "reason", "instance_id", "from", "to"];
    for name in ["BulkReplayRequest", "PurgeRequest"] {
        let Some(body) = doc.pointer_mut(&format!("/components/schemas/{name}")) else {
            continue;
        };
        let p = &mut body["properties"];
        p["kind"] = or_null(token.clone());
        p["instance_id"] = or_null(token.clone());
        p["tenant"] = or_null(token.clone());
        p["operation"] = or_null(json!({ "type": "string", "pattern": OPERATION }));
        p["reason"] = or_null(json!({ "type": "string", "enum": crate::api::dlq::REASONS }));
        p["from"] = or_null(instant.clone());
        p["to"] = or_null(instant.clone());
        if name == "BulkReplayRequest" {
            p["limit"] = or_null(
                json!({ "type": "integer", "minimum": 1, "maximum": crate::api::dlq::MAX_BULK }),
            );
            body["anyOf"] = one_given(&filters);
        } else {
            p["seqs"] = or_null(json!({
                "type": "array",
                "maxItems": crate::api::dlq::MAX_BULK,
                "items": { "type": "integer", "minimum": 1, "maximum": MAX_SEQ }
            }));
        }
    }
}

/// Every operation that takes an `Idempotency-Key` answers a server error with the key to
/// retry with (the one the gateway made up when the request had none): say so on its `5xx`
/// responses.
fn retry_keys_on_server_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let keyed = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .filter(|_| keyed)
        else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            if status.starts_with('5') {
                response["headers"]["Idempotency-Key"] = json!({
                    "description": "The key to repeat the request with: the request may have been done, and a repeat with this key does it at most once",
                    "schema": { "type": "string" }
                });
            }
        }
    }
}

/// What the handlers check of each parameter, by name (and the routes it applies to: all
/// when empty), in JSON Schema: the macros above say what a parameter means, this says which
/// values the gateway accepts.
fn parameter_rules() -> Vec<(&'static str, &'static [&'static str], Value)> {
    let (token, instant) = (token_schema(), instant_schema());
    let text = json!({ "type": "string", "maxLength": 256 });
    // A ledger cursor: hex of `<ms>:<id>`.
    let ledger_cursor =
        json!({ "type": "string", "pattern": "^(3[0-9]){1,15}3a([2-7][0-9a-f])*$" });
    let ledger = &[
        "/api/v1/workflows/instances",
        "/api/v1/workflows/stats",
        "/api/v1/audit",
    ][..];
    let cards_list = &["/api/v1/cards"][..];
    let dlq = &["/api/v1/dlq"][..];
    let letter = &["/api/v1/dlq/{seq}", "/api/v1/dlq/{seq}/replay"][..];
    vec![
        ("kind", dlq, token.clone()),
        (
            "operation",
            dlq,
            json!({ "type": "string", "pattern": OPERATION }),
        ),
        (
            "reason",
            dlq,
            json!({ "type": "string", "enum": crate::api::dlq::REASONS }),
        ),
        ("instance_id", dlq, token.clone()),
        ("from", dlq, instant.clone()),
        ("to", dlq, instant.clone()),
        ("handled", dlq, json!({ "type": "boolean" })),
        (
            "limit",
            dlq,
            json!({ "type": "integer", "minimum": 1, "maximum": crate::api::dlq::MAX_PAGE }),
        ),
        (
            "cursor",
            dlq,
            json!({ "type": "integer", "minimum": 0, "maximum": MAX_SEQ }),
        ),
        (
            "seq",
            letter,
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_SEQ }),
        ),
        (
            "Idempotency-Key",
            &[][..],
            json!({ "type": "string", "pattern": "^[!-~]{1,255}$" }),
        ),
        (
            "Last-Event-ID",
            &[],
            json!({ "type": "integer", "minimum": 0 }),
        ),
        (
            "If-Match",
            &[],
            json!({ "type": "string", "pattern": "^(\\*|(W/)?\"0*[1-9][0-9]{0,8}\"|0*[1-9][0-9]{0,8})$" }),
        ),
        ("workflow", ledger, token.clone()),
        ("tenant", &[], token.clone()),
        (
            "status",
            &["/api/v1/workflows/instances"],
            json!({ "type": "string", "enum": crate::api::ledger::STATUSES }),
        ),
        ("from", ledger, instant.clone()),
        ("to", ledger, instant),
        (
            "from",
            &["/api/v1/usage"],
            json!({ "type": "string", "format": "date" }),
        ),
        (
            "to",
            &["/api/v1/usage"],
            json!({ "type": "string", "format": "date" }),
        ),
        (
            "group_by",
            &[],
            json!({ "type": "string", "enum": ["meter", "day", "workflow"] }),
        ),
        (
            "label",
            &["/api/v1/workflows/instances"],
            json!({ "type": "string", "pattern": LABEL_FILTER }),
        ),
        ("correlation_id", &[], text.clone()),
        ("action", &[], text.clone()),
        ("actor", &[], text),
        (
            "limit",
            ledger,
            json!({ "type": "integer", "minimum": 1, "maximum": 500 }),
        ),
        ("cursor", ledger, ledger_cursor),
        (
            "limit",
            cards_list,
            json!({ "type": "integer", "minimum": 1, "maximum": 200 }),
        ),
        (
            "cursor",
            cards_list,
            json!({ "type": "string", "format": "uuid" }),
        ),
        (
            "type",
            cards_list,
            json!({ "type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$" }),
        ),
        (
            "version",
            &["/api/v1/cards/{id}"],
            json!({ "type": "integer", "minimum": 1, "maximum": i32::MAX }),
        ),
        (
            "id",
            &["/api/v1/cards/{id}", "/api/v1/cards/{id}/versions"],
            json!({ "type": "string", "minLength": 1, "maxLength": 64 }),
        ),
        (
            "id",
            &["/api/v1/meetings/{id}/context"],
            json!({ "type": "string", "pattern": "^[A-Za-z0-9._:~@-]{1,255}$" }),
        ),
        (
            "name",
            &["/api/v1/workflows/instances/{id}/signal/{name}"],
            token,
        ),
        (
            "id",
            &["/api/v1/tasks/{id}/status"],
            json!({ "type": "string", "pattern": CLICKUP_ID }),
        ),
        (
            "type",
            &["/api/v1/cards/types/{type}"],
            json!({
                "type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$",
                "not": { "enum": switchyard_catalog::cards::BUILTIN }
            }),
        ),
    ]
}

/// Puts [`parameter_rules`] into the document.
fn constrain_parameters(doc: &mut Value) {
    let rules = parameter_rules();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default();
                if let Some((_, _, schema)) = rules.iter().find(|(n, routes, _)| {
                    *n == name && (routes.is_empty() || routes.contains(&path.as_str()))
                }) {
                    parameter["schema"] = schema.clone();
                }
            }
        }
    }
}

/// A meeting to process: a title, and a transcript or a recording's URL (one of them).
fn refine_meeting(schema: &mut Value) {
    let text = json!({ "type": "string", "pattern": NOT_BLANK });
    let p = &mut schema["properties"];
    p["meeting_id"]["pattern"] = json!("^[A-Za-z0-9._:~@-]{1,255}$");
    p["title"] = json!({ "description": p["title"]["description"].clone(), "type": "string", "pattern": NOT_BLANK });
    p["format"]["enum"] = json!(["auto", "vtt", "srt", "lines", "json", null]);
    schema["required"] = json!(["title"]);
    schema["oneOf"] = json!([
        { "required": ["transcript"], "properties": { "transcript": text } },
        { "required": ["audio_url"], "properties": { "audio_url": text } }
    ]);
}

/// `path` as one JSON Pointer segment.
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

/// A route whose JSON body is a worker operation's input, less the fields the gateway fills in
/// itself: the document shows the catalog schema the gateway checks the body against, so the
/// two cannot drift apart.
struct CatalogBody {
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    /// Input fields the gateway fills in (from the token or the path); a body naming one is
    /// refused.
    filled: &'static [&'static str],
    /// What the worker checks beyond the catalog schema, in JSON Schema.
    refine: fn(&mut Value),
}

impl CatalogBody {
    fn schema(&self) -> Value {
        let Some(spec) = Catalog::builtin().get(self.operation) else {
            return json!({ "type": "object" });
        };
        let mut schema = spec.input.to_json_schema();
        for field in self.filled {
            if let Some(properties) = schema["properties"].as_object_mut() {
                properties.remove(*field);
            }
            if let Some(required) = schema["required"].as_array_mut() {
                required.retain(|r| r != field);
            }
        }
        (self.refine)(&mut schema);
        schema
    }
}

/// Unicode's white space (`White_Space`, what Rust's `trim` removes), spelled out: `\s` means
/// other sets in other regex dialects (ECMA-262 leaves out U+0085 and adds U+FEFF).
macro_rules! white_space {
    () => {
        "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    };
}

/// Text that is not only white space, as the workers check it (`trim().is_empty()`).
const NOT_BLANK: &str = concat!("[^", white_space!(), "]");

/// A list given as one string that holds an item: something besides separators (new lines,
/// `;`, `,`), bullet marks and white space.
const LIST_ITEM: &str = concat!("[^", white_space!(), ",;*\\u2022-]");

/// A ClickUp id as the integration worker accepts it.
const CLICKUP_ID: &str = "^[A-Za-z0-9_-]{1,100}$";

const CATALOG_BODIES: &[CatalogBody] = &[
    CatalogBody {
        method: "post",
        path: "/api/v1/cards",
        operation: cards::CREATE,
        filled: &["actor"],
        refine: refine_new_card,
    },
    CatalogBody {
        method: "post",
        path: "/api/v1/cards/batch",
        operation: cards::BATCH_CREATE,
        filled: &["actor"],
        refine: |schema| {
            let card = &mut schema["properties"]["cards"]["items"];
            if let Some(properties) = card["properties"].as_object_mut() {
                properties.remove("actor");
            }
            refine_new_card(card)
        },
    },
    CatalogBody {
        method: "post",
        path: "/api/v1/cards/retrieve",
        operation: cards::RETRIEVE,
        filled: &["workflow"],
        refine: |_| {},
    },
    CatalogBody {
        method: "patch",
        path: "/api/v1/cards/{id}",
        operation: cards::UPDATE,
        filled: &["card_id", "expected_version", "actor"],
        refine: |schema| {
            schema["properties"]["title"]["pattern"] = json!(NOT_BLANK);
            // Something must change.
            schema["anyOf"] = json!([
                { "required": ["title"], "properties": { "title": { "type": "string" } } },
                { "required": ["content"], "properties": { "content": { "type": "object" } } }
            ]);
        },
    },
    CatalogBody {
        method: "post",
        path: "/api/v1/onboarding",
        operation: cards::ONBOARD,
        filled: &["actor"],
        refine: |schema| schema["properties"]["answers"] = onboarding_answers(),
    },
    CatalogBody {
        method: "post",
        path: "/api/v1/research",
        operation: research::TOPIC,
        filled: &[],
        refine: |schema| {
            let p = &mut schema["properties"];
            p["topic"]["pattern"] = json!(NOT_BLANK);
            p["sources"]["items"]["format"] = json!("uri");
            p["allow_unread"]["default"] = json!(true);
        },
    },
    CatalogBody {
        method: "post",
        path: "/api/v1/tasks",
        operation: meetings::CREATE_TASK,
        filled: &[],
        refine: |schema| {
            let p = &mut schema["properties"];
            p["list_id"]["pattern"] = json!(CLICKUP_ID);
            p["name"]["pattern"] = json!(NOT_BLANK);
            p["assignees"]["items"]["pattern"] = json!("^[0-9]{1,19}$");
            p["due_date"] = json!({
                "description": p["due_date"]["description"].clone(),
                "anyOf": [
                    { "type": "string", "format": "date" },
                    { "type": "string", "format": "date-time" },
                    { "type": "null" }
                ]
            });
        },
    },
    CatalogBody {
        method: "put",
        path: "/api/v1/tasks/{id}/status",
        operation: meetings::UPDATE_STATUS,
        filled: &["task_id"],
        refine: |schema| schema["properties"]["status"]["pattern"] = json!(NOT_BLANK),
    },
];

/// A new card: a built-in type, its content in that type's schema. A type a tenant registered
/// is accepted too (checked against its registered schema), which a document shared by all
/// tenants cannot list.
fn refine_new_card(schema: &mut Value) {
    use switchyard_catalog::cards::{BUILTIN, builtin_schema};
    schema["properties"]["type"]["description"] = json!(format!(
        "The card type: {}, or a type registered with `PUT /api/v1/cards/types/{{type}}`",
        BUILTIN.join(", ")
    ));
    schema["properties"]["type"]["enum"] = json!(BUILTIN);
    // Not only white space.
    schema["properties"]["title"]["pattern"] = json!(NOT_BLANK);
    let by_type: Vec<Value> = BUILTIN
        .iter()
        .filter_map(|t| {
            Some(json!({
                "if": { "properties": { "type": { "const": t } }, "required": ["type"] },
                "then": { "properties": { "content": builtin_schema(t)? } }
            }))
        })
        .collect();
    schema["allOf"] = Value::Array(by_type);
}

/// The onboarding answers: each a string or a list of strings that says something; a card is
/// made for each topic whose first question is answered, and a topic's other answers need that
/// first one.
fn onboarding_answers() -> Value {
    use switchyard_catalog::cards::{ONBOARDING_LIST_QUESTIONS, ONBOARDING_TOPICS};
    let items = json!({ "type": "array", "minItems": 1, "items": { "type": "string", "pattern": NOT_BLANK } });
    let answer = |question: &str| {
        // A list given as one string is split on new lines, `;` and `,`, bullet marks dropped.
        let pattern = if ONBOARDING_LIST_QUESTIONS.contains(&question) {
            LIST_ITEM
        } else {
            NOT_BLANK
        };
        json!({ "anyOf": [{ "type": "string", "pattern": pattern }, items] })
    };
    let mut properties = serde_json::Map::new();
    let mut needs = serde_json::Map::new();
    let mut any_of = Vec::new();
    for (first, others) in ONBOARDING_TOPICS {
        properties.insert(first.into(), answer(first));
        any_of.push(json!({ "required": [first] }));
        for other in others {
            properties.insert((*other).into(), answer(other));
            needs.insert((*other).into(), json!([first]));
        }
    }
    json!({
        "type": "object",
        "description": "Answers by question id, each a string or a list of strings. A card is made for each topic whose first question is answered: company (`company_name`; `company_description`, `industry`, `website`, `products`), audience (`audience`; `audience_roles`, `pains`, `goals`), voice (`tone`; `style`, `dos`, `donts`) and insight (`insight`; `evidence`, `source`). Long answers are summarized. An empty answer is refused: leave the question out.",
        "properties": properties,
        "additionalProperties": false,
        "dependentRequired": needs,
        "anyOf": any_of
    })
}
/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(document()),
    )
}
