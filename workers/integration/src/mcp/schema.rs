//! A tool's JSON Schema as the engine's schema subset (switchyard-catalog), so a definition
//! that uses the tool is checked at registration.
//!
//! What the subset has is kept (types, properties, required, items, enum, default, bounds,
//! descriptions); `["string", "null"]` and `anyOf: [X, {type: null}]` (how Pydantic spells an
//! optional value) become X; any other construct (`$ref`, `oneOf`, `pattern`, `format`…)
//! becomes "any value" at that place, and is left to the server to check. An object that
//! lists properties is closed unless the tool says `additionalProperties`, so a definition
//! cannot pass an argument the tool does not declare.

use serde_json::{Map, Value};
use switchyard_catalog::{Schema, Type};

/// How deep `$ref`s are followed; a deeper (or cyclic) one accepts any value.
const MAX_REF_DEPTH: usize = 8;

/// The schema of a tool's input or output. Local references (`#/$defs/…`, as Pydantic writes
/// nested models) are followed.
pub(crate) fn from_json_schema(value: &Value) -> Schema {
    let empty = Map::new();
    let defs = value
        .get("$defs")
        .or_else(|| value.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    convert(value, defs, 0)
}

fn convert(value: &Value, defs: &Map<String, Value>, depth: usize) -> Schema {
    let Value::Object(map) = value else {
        return Schema::default();
    };
    if let Some(Value::String(reference)) = map.get("$ref") {
        let target = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"))
            .and_then(|name| defs.get(name));
        return match target {
            Some(target) if depth < MAX_REF_DEPTH => convert(target, defs, depth + 1),
            _ => Schema::default(),
        };
    }
    let mut schema = Schema {
        ty: type_of(map),
        description: map
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        ..Schema::default()
    };
    if let Some(inner) = nullable_any_of(map) {
        let mut inner = convert(inner, defs, depth);
        if inner.description.is_empty() {
            inner.description = schema.description;
        }
        // A `null` default says no more than leaving the value out.
        inner.default = map
            .get("default")
            .filter(|d| !d.is_null())
            .cloned()
            .or(inner.default);
        return settle(inner);
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        schema.properties = properties
            .iter()
            .map(|(name, p)| (name.clone(), convert(p, defs, depth)))
            .collect();
    }
    if let Some(Value::Array(required)) = map.get("required") {
        schema.required = required
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| schema.properties.contains_key(*r))
            .map(str::to_owned)
            .collect();
    }
    schema.additional_properties = match map.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(*b),
        // A schema for the extra properties: they are allowed, the server checks them.
        Some(Value::Object(_)) => Some(true),
        _ => None,
    };
    if schema.ty == Type::Array
        && let Some(items) = map.get("items")
    {
        schema.items = Some(Box::new(convert(items, defs, depth)));
    }
    if let Some(Value::Array(values)) = map.get("enum") {
        schema.enum_values = Some(values.clone());
    }
    schema.default = map.get("default").cloned();
    let number = |key: &str| map.get(key).and_then(Value::as_f64);
    let count = |key: &str| map.get(key).and_then(Value::as_u64);
    if matches!(schema.ty, Type::Integer | Type::Number) {
        schema.minimum = number("minimum");
        schema.maximum = number("maximum");
    }
    if schema.ty == Type::String {
        schema.min_length = count("minLength");
        schema.max_length = count("maxLength");
    }
    if schema.ty == Type::Array {
        schema.min_items = count("minItems");
        schema.max_items = count("maxItems");
    }
    settle(schema)
}

/// What the subset cannot say must not make the schema refuse what the tool accepts: a
/// default or enum it does not accept is dropped, and a schema that still does not hold
/// together accepts any value.
fn settle(mut schema: Schema) -> Schema {
    if schema
        .default
        .as_ref()
        .is_some_and(|d| schema.validate(d).is_err())
    {
        schema.default = None;
    }
    if schema.check().is_err() {
        schema.enum_values = None;
    }
    if schema.check().is_err() {
        return Schema {
            description: schema.description,
            ..Schema::default()
        };
    }
    schema
}

/// `type`, with `null` dropped from a list of types; several other types mean any value.
fn type_of(map: &Map<String, Value>) -> Type {
    let one = |name: &str| match name {
        "string" => Some(Type::String),
        "integer" => Some(Type::Integer),
        "number" => Some(Type::Number),
        "boolean" => Some(Type::Boolean),
        "array" => Some(Type::Array),
        "object" => Some(Type::Object),
        _ => None,
    };
    match map.get("type") {
        Some(Value::String(name)) => one(name).unwrap_or(Type::Any),
        Some(Value::Array(names)) => {
            let types: Vec<Type> = names
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| *n != "null")
                .filter_map(one)
                .collect();
            match types.as_slice() {
                [only] => *only,
                _ => Type::Any,
            }
        }
        _ if map.contains_key("properties") => Type::Object,
        _ => Type::Any,
    }
}

/// The one non-null branch of `anyOf: [X, {type: null}]`.
fn nullable_any_of(map: &Map<String, Value>) -> Option<&Value> {
    let Some(Value::Array(branches)) = map.get("anyOf") else {
        return None;
    };
    let mut others = branches
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"));
    let first = others.next()?;
    others.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pydantic_tool_schema_keeps_its_parameters_and_closes_the_object() {
        let schema = from_json_schema(&json!({
            "properties": {
                "a": {"title": "A", "type": "integer"},
                "b": {"default": 2, "title": "B", "type": "integer"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
            },
            "required": ["a"],
            "title": "addArguments",
            "type": "object"
        }));
        assert_eq!(schema.ty, Type::Object);
        assert_eq!(schema.required, vec!["a".to_owned()]);
        assert!(!schema.allows_additional());
        assert_eq!(schema.properties["a"].ty, Type::Integer);
        assert_eq!(schema.properties["b"].default, Some(json!(2)));
        assert_eq!(schema.properties["note"].ty, Type::String);
        assert_eq!(schema.properties["tags"].max_items, Some(3));
        assert!(schema.validate(&json!({"a": 1})).is_ok());
        let errors = schema.validate(&json!({"a": 1, "c": 2})).unwrap_err();
        assert!(errors[0].to_string().contains('c'), "{errors:?}");
    }

    #[test]
    fn local_references_are_followed_and_cycles_end_in_any_value() {
        let schema = from_json_schema(&json!({
            "type": "object",
            "properties": {
                "result": {"type": "array", "items": {"$ref": "#/$defs/Match"}},
                "tree": {"$ref": "#/$defs/Node"}
            },
            "$defs": {
                "Match": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}, "score": {"type": "number"}},
                    "required": ["title", "score"]
                },
                "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}
            }
        }));
        let item = schema.properties["result"].items.as_deref().expect("items");
        assert_eq!(item.ty, Type::Object);
        assert_eq!(item.properties["score"].ty, Type::Number);
        assert_eq!(item.required, vec!["title".to_owned(), "score".to_owned()]);
        let mut node = &schema.properties["tree"];
        for _ in 0..MAX_REF_DEPTH {
            node = &node.properties["child"];
        }
        assert_eq!(node.ty, Type::Any);
    }

    #[test]
    fn what_the_subset_cannot_say_becomes_any_value() {
        let schema = from_json_schema(&json!({
            "type": "object",
            "properties": {
                "choice": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "link": {"$ref": "https://example.com/link.json"},
                "mixed": {"type": ["string", "integer"]}
            },
            "additionalProperties": {"type": "string"}
        }));
        for name in ["choice", "link", "mixed"] {
            assert_eq!(schema.properties[name].ty, Type::Any, "{name}");
        }
        assert!(schema.allows_additional());
        assert!(schema.validate(&json!({"choice": 3, "extra": "x"})).is_ok());
    }
}
