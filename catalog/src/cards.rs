//! The built-in card types and the JSON schemas of their content: data the cards worker checks
//! content against and the gateway documents, kept here so the two cannot disagree. The AI
//! worker's templates read these fields (company `name`, audience `description`, voice
//! `tone`, insight `text`).

use serde_json::{Value, json};

/// The built-in types.
pub const COMPANY: &str = "company";
pub const AUDIENCE: &str = "audience";
pub const VOICE: &str = "voice";
pub const INSIGHT: &str = "insight";
pub const BUILTIN: [&str; 4] = [COMPANY, AUDIENCE, VOICE, INSIGHT];

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

/// The JSON schema (draft 2020-12) of a built-in type's content; `None` for any other type.
pub fn builtin_schema(card_type: &str) -> Option<Value> {
    let text = || json!({ "type": "string", "minLength": 1 });
    let opt = || json!({ "type": "string" });
    let schema = match card_type {
        COMPANY => json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": text(), "description": opt(), "industry": opt(), "website": opt(),
                "products": strings()
            }
        }),
        AUDIENCE => json!({
            "type": "object",
            "required": ["description"],
            "properties": {
                "description": text(), "roles": strings(), "pains": strings(), "goals": strings()
            }
        }),
        VOICE => json!({
            "type": "object",
            "required": ["tone"],
            "properties": { "tone": text(), "style": opt(), "dos": strings(), "donts": strings() }
        }),
        INSIGHT => json!({
            "type": "object",
            "required": ["text"],
            "properties": { "text": text(), "evidence": opt(), "source": opt() }
        }),
        _ => return None,
    };
    Some(schema)
}

/// The onboarding questions by topic (company, audience, voice, insight): the question a card
/// of the topic cannot do without, then the others. Those marked in
/// [`ONBOARDING_LIST_QUESTIONS`] take lists.
pub const ONBOARDING_TOPICS: [(&str, &[&str]); 4] = [
    (
        "company_name",
        &["company_description", "industry", "website", "products"],
    ),
    ("audience", &["audience_roles", "pains", "goals"]),
    ("tone", &["style", "dos", "donts"]),
    ("insight", &["evidence", "source"]),
];

/// The onboarding questions whose answer is a list (a string answer is split on new lines,
/// `;` and `,`).
pub const ONBOARDING_LIST_QUESTIONS: [&str; 6] = [
    "products",
    "audience_roles",
    "pains",
    "goals",
    "dos",
    "donts",
];
