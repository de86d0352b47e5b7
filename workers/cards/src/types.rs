//! Card types and the shape of their content. The built-in types have fixed JSON schemas that
//! the AI worker's templates read (company `name`, audience `description`, voice `tone`,
//! insight `text`); a tenant adds its own types by registering a JSON schema for each. Content
//! is always a JSON object; properties beyond a schema's are allowed unless the schema says
//! otherwise.

use std::sync::LazyLock;

use serde_json::Value;

use crate::Error;

pub use switchyard_catalog::cards::{AUDIENCE, BUILTIN, COMPANY, INSIGHT, VOICE, builtin_schema};

/// Longest type name.
pub const MAX_TYPE_LEN: usize = 64;

static BUILTIN_VALIDATORS: LazyLock<Vec<(&'static str, jsonschema::Validator)>> =
    LazyLock::new(|| {
        BUILTIN
            .iter()
            .map(|t| {
                let schema = builtin_schema(t).unwrap_or_default();
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|e| panic!("the built-in schema of {t} does not compile: {e}"));
                (*t, validator)
            })
            .collect()
    });

/// Checks a type name: 1–64 lowercase letters, digits and `_`, starting with a letter.
pub fn check_type_name(field: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TYPE_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{name:?} is not a type name: expected 1 to {MAX_TYPE_LEN} lowercase letters, \
                 digits and `_`, starting with a letter"
            ),
        ))
    }
}

/// Compiles a schema a tenant registers for its own type; it must describe an object.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, Error> {
    if !schema.is_object() {
        return Err(Error::invalid("schema", "expected a JSON schema object"));
    }
    if schema.get("type").is_some_and(|t| t != "object") {
        return Err(Error::invalid(
            "schema.type",
            "card content is a JSON object: the schema's type must be \"object\"",
        ));
    }
    jsonschema::validator_for(schema)
        .map_err(|e| Error::invalid("schema", format!("not a valid JSON schema: {e}")))
}

/// Checks `content` against the built-in schema of `card_type`, or `custom` (the tenant's
/// registered schema). A type that is neither is refused. Errors name the first failing path
/// under `field` (e.g. `content.name`).
pub fn check_content(
    field: &str,
    card_type: &str,
    content: &Value,
    custom: Option<&Value>,
) -> Result<(), Error> {
    if !content.is_object() {
        return Err(Error::invalid(field, "expected a JSON object"));
    }
    let compiled;
    let validator = match BUILTIN_VALIDATORS.iter().find(|(t, _)| *t == card_type) {
        Some((_, v)) => v,
        None => match custom {
            Some(schema) => {
                compiled = compile(schema)?;
                &compiled
            }
            None => {
                return Err(Error::invalid(
                    "type",
                    format!(
                        "unknown card type {card_type:?}: use {} or register a schema for it \
                         (PUT /api/v1/cards/types/{card_type})",
                        BUILTIN.join(", ")
                    ),
                ));
            }
        },
    };
    let first = validator.iter_errors(content).next();
    match first {
        None => Ok(()),
        Some(e) => Err(Error::invalid(
            path(field, e.instance_path().as_str()),
            e.to_string(),
        )),
    }
}

/// `content` + a JSON pointer (`/products/0`) as a field path (`content.products[0]`).
fn path(field: &str, pointer: &str) -> String {
    let mut out = field.to_owned();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            out.push('.');
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_content_is_checked_and_extra_properties_are_allowed() {
        let ok = json!({"name": "Acme", "products": ["a"], "founded": 2009});
        assert!(check_content("content", COMPANY, &ok, None).is_ok());
        let Err(Error::InvalidInput { field, message }) =
            check_content("content", COMPANY, &json!({"description": "x"}), None)
        else {
            panic!("a company without a name is refused");
        };
        assert_eq!(field, "content");
        assert!(message.contains("name"), "{message}");
        let Err(Error::InvalidInput { field, .. }) = check_content(
            "content",
            AUDIENCE,
            &json!({"description": "d", "roles": ["a", 3]}),
            None,
        ) else {
            panic!("a non-string role is refused");
        };
        assert_eq!(field, "content.roles[1]");
        assert!(check_content("content", VOICE, &json!("casual"), None).is_err());
    }

    #[test]
    fn custom_types_need_a_schema_and_are_checked_against_it() {
        let schema = json!({"type": "object", "required": ["quote"], "properties": {"quote": {"type": "string"}}});
        assert!(
            check_content(
                "content",
                "testimonial",
                &json!({"quote": "great"}),
                Some(&schema)
            )
            .is_ok()
        );
        assert!(
            check_content(
                "content",
                "testimonial",
                &json!({"quote": 1}),
                Some(&schema)
            )
            .is_err()
        );
        let Err(Error::InvalidInput { field, .. }) =
            check_content("content", "testimonial", &json!({}), None)
        else {
            panic!("an unregistered type is refused");
        };
        assert_eq!(field, "type");
        assert!(compile(&json!({"type": "string"})).is_err());
        assert!(compile(&json!({"type": "object", "minProperties": "x"})).is_err());
        assert!(check_type_name("type", "case_study2").is_ok());
        for bad in ["", "Case", "2x", "a-b", &"x".repeat(65)] {
            assert!(check_type_name("type", bad).is_err(), "{bad:?}");
        }
    }
}
