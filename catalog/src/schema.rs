//! A small, documented subset of JSON Schema, spelled the JSON-Schema way.
//!
//! Supported keywords: `type` (`string`, `integer`, `number`, `boolean`, `array`, `object`;
//! absent means any value), `description`, `properties`, `required`, `additionalProperties`
//! (a boolean only), `items`, `enum`, `default`, `minimum`, `maximum`, `minLength`,
//! `maxLength`, `minItems` and `maxItems`. Anything else is rejected when the schema is read,
//! so a typo cannot silently weaken a check.
//!
//! Two choices differ from plain JSON Schema, both made for values produced by templates:
//!
//! - An object schema that lists `properties` is closed (`additionalProperties: false`) unless
//!   it says otherwise; one without `properties` is open.
//! - `null` for an optional property means the same as leaving it out (a template that refers
//!   to a missing value renders `null`). [`Schema::apply_defaults`] replaces it with the
//!   property's default. A required property must be present and not `null`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The JSON type a schema accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    String,
    /// A JSON number without a fractional part (`3`, `3.0`).
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// Any JSON value, `null` included. The default when `type` is absent.
    #[default]
    Any,
}

impl Type {
    /// Whether this is [`Type::Any`].
    pub fn is_any(&self) -> bool {
        matches!(self, Type::Any)
    }

    /// The name used in schemas and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
            Type::Array => "array",
            Type::Object => "object",
            Type::Any => "any",
        }
    }

    /// Whether `value` is of this type (constraints such as `minimum` aside).
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Type::String => value.is_string(),
            Type::Integer => is_integer(value),
            Type::Number => value.is_number(),
            Type::Boolean => value.is_boolean(),
            Type::Array => value.is_array(),
            Type::Object => value.is_object(),
            Type::Any => true,
        }
    }
}

/// A bound as a JSON number: an integer when it is one (`1`, not `1.0`).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema for one JSON value. The subset it supports is described where it is defined
/// (`catalog/src/schema.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schema {
    /// The accepted type; `any` when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Type::is_any")]
    pub ty: Type,
    /// What the value means, for people and for generated documentation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Known properties of an object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Schema>,
    /// Properties that must be present (and not `null`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Whether an object may carry properties not listed in `properties`. When absent: closed
    /// if `properties` lists anything, open otherwise. Use [`Schema::allows_additional`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_properties: Option<bool>,
    /// The schema of every element of an array; any value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Schema>>,
    /// The only values accepted.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<Value>>,
    /// The value [`Schema::apply_defaults`] puts in place of an absent property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Smallest accepted number (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest accepted number (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Fewest characters in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Most characters in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Fewest elements in an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    /// Most elements in an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
}

/// One reason a value does not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct SchemaError {
    /// Where, like `topic` or `sources[2].url`; empty for the value itself.
    pub path: String,
    /// What is wrong, lowercase, e.g. `expected integer, got string "x"`.
    pub message: String,
}

/// What a schema says about a path below it (see [`Schema::lookup`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<'a> {
    /// The path is declared, with this schema.
    Declared(&'a Schema),
    /// The path goes through a value of any shape (an open object or `any`); nothing can be
    /// said about it.
    Open,
    /// A segment is not declared.
    Missing {
        /// The first segment that is not declared.
        at: String,
        /// The names that are declared where `at` was looked up (empty below a scalar).
        declared: Vec<String>,
        /// The type of the value `at` was looked up on.
        on: Type,
    },
}

impl Schema {
    /// A schema of the given type and nothing else.
    pub fn of(ty: Type) -> Schema {
        Schema {
            ty,
            ..Schema::default()
        }
    }

    /// An object schema with these properties, of which `required` must be present.
    pub fn object<I, S>(properties: I, required: &[&str]) -> Schema
    where
        I: IntoIterator<Item = (S, Schema)>,
        S: Into<String>,
    {
        Schema {
            ty: Type::Object,
            properties: properties.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            required: required.iter().map(|s| s.to_string()).collect(),
            ..Schema::default()
        }
    }

    /// An array schema whose elements match `items`.
    pub fn array(items: Schema) -> Schema {
        Schema {
            ty: Type::Array,
            items: Some(Box::new(items)),
            ..Schema::default()
        }
    }

    /// Whether an object may carry properties not listed in `properties`.
    pub fn allows_additional(&self) -> bool {
        self.additional_properties
            .unwrap_or(self.properties.is_empty())
    }

    /// Whether `name` is listed in `required`.
    pub fn is_required(&self, name: &str) -> bool {
        self.required.iter().any(|r| r == name)
    }

    /// This schema in standard JSON Schema (draft 2020-12), accepting exactly what
    /// [`Schema::validate`] accepts, for documents such as the gateway's OpenAPI: a closed
    /// object says `additionalProperties: false`, and an optional property also accepts `null`.
    pub fn to_json_schema(&self) -> Value {
        self.json_schema(false)
    }

    fn json_schema(&self, nullable: bool) -> Value {
        let mut out = serde_json::Map::new();
        if !self.ty.is_any() {
            let ty = Value::from(self.ty.as_str());
            out.insert(
                "type".into(),
                if nullable { json!([ty, "null"]) } else { ty },
            );
        }
        if !self.description.is_empty() {
            out.insert("description".into(), self.description.clone().into());
        }
        if let Some(values) = &self.enum_values {
            let mut values = values.clone();
            if nullable && !values.contains(&Value::Null) {
                values.push(Value::Null);
            }
            out.insert("enum".into(), values.into());
        }
        for (key, value) in [
            ("minimum", self.minimum.map(number)),
            ("maximum", self.maximum.map(number)),
            ("minLength", self.min_length.map(Value::from)),
            ("maxLength", self.max_length.map(Value::from)),
            ("minItems", self.min_items.map(Value::from)),
            ("maxItems", self.max_items.map(Value::from)),
            ("default", self.default.clone()),
        ] {
            if let Some(value) = value {
                out.insert(key.into(), value);
            }
        }
        if let Some(items) = &self.items {
            out.insert("items".into(), items.json_schema(false));
        }
        if self.ty == Type::Object || !self.properties.is_empty() {
            if !self.properties.is_empty() {
                let properties: serde_json::Map<String, Value> = self
                    .properties
                    .iter()
                    .map(|(name, schema)| {
                        let required = self.is_required(name);
                        let mut property = schema.json_schema(!required);
                        // A required property must not be null, whatever its type.
                        if required && schema.ty.is_any() {
                            property["not"] = json!({ "type": "null" });
                        }
                        (name.clone(), property)
                    })
                    .collect();
                out.insert("properties".into(), properties.into());
            }
            if !self.required.is_empty() {
                out.insert("required".into(), json!(self.required));
            }
            if !self.allows_additional() {
                out.insert("additionalProperties".into(), false.into());
            }
        }
        Value::Object(out)
    }

    /// Checks `value`, reporting every problem found, each with its path.
    pub fn validate(&self, value: &Value) -> Result<(), Vec<SchemaError>> {
        let mut errors = Vec::new();
        self.validate_at(value, &mut String::new(), &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validate_at(&self, value: &Value, path: &mut String, errors: &mut Vec<SchemaError>) {
        let error = |errors: &mut Vec<SchemaError>, path: &str, message: String| {
            errors.push(SchemaError {
                path: path.to_string(),
                message,
            })
        };
        if !self.ty.accepts(value) {
            error(
                errors,
                path,
                format!("expected {}, got {}", self.ty, describe(value)),
            );
            return;
        }
        if let Some(allowed) = &self.enum_values
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            error(errors, path, format!("must be one of: {}", list.join(", ")));
        }
        match value {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = self.minimum
                    && x < min
                {
                    error(errors, path, format!("must be at least {min}, got {n}"));
                }
                if let Some(max) = self.maximum
                    && x > max
                {
                    error(errors, path, format!("must be at most {max}, got {n}"));
                }
            }
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if let Some(min) = self.min_length
                    && len < min
                {
                    error(
                        errors,
                        path,
                        format!("must be at least {min} characters long, got {len}"),
                    );
                }
                if let Some(max) = self.max_length
                    && len > max
                {
                    error(
                        errors,
                        path,
                        format!("must be at most {max} characters long, got {len}"),
                    );
                }
            }
            Value::Array(elements) => {
                let len = elements.len() as u64;
                if let Some(min) = self.min_items
                    && len < min
                {
                    error(
                        errors,
                        path,
                        format!("must have at least {min} items, got {len}"),
                    );
                }
                if let Some(max) = self.max_items
                    && len > max
                {
                    error(
                        errors,
                        path,
                        format!("must have at most {max} items, got {len}"),
                    );
                }
                if let Some(items) = &self.items {
                    for (i, element) in elements.iter().enumerate() {
                        let len = path.len();
                        let _ = write!(path, "[{i}]");
                        items.validate_at(element, path, errors);
                        path.truncate(len);
                    }
                }
            }
            Value::Object(map) => {
                for name in &self.required {
                    if map.get(name).is_none_or(Value::is_null) {
                        error(errors, &join(path, name), "missing required field".into());
                    }
                }
                for (name, field) in map {
                    let len = path.len();
                    push_key(path, name);
                    match self.properties.get(name) {
                        // null is either absent (optional) or already reported (required)
                        Some(_) if field.is_null() => {}
                        Some(schema) => schema.validate_at(field, path, errors),
                        None if self.allows_additional() => {}
                        None => error(errors, path, self.unknown_field_message()),
                    }
                    path.truncate(len);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn unknown_field_message(&self) -> String {
        if self.properties.is_empty() {
            "unknown field; no fields are accepted here".into()
        } else {
            let names: Vec<&str> = self.properties.keys().map(String::as_str).collect();
            format!("unknown field; expected one of: {}", names.join(", "))
        }
    }

    /// Fills every absent (or `null`) object property that has a default, removes an
    /// optional property that is `null` without one (it means absent), and writes an integer
    /// given with a fraction of zero (`3.0`) as one, recursively through properties and array
    /// items. Values of the wrong type are left alone for
    /// [`Schema::validate`] to report.
    pub fn apply_defaults(&self, value: &mut Value) {
        // `3.0` is an integer to the schema; a typed reader wants it as one.
        if self.ty == Type::Integer
            && let Some(x) = value.as_f64().filter(|_| value.is_f64())
            && x.fract() == 0.0
            && x.abs() < 9.0e15
        {
            *value = Value::from(x as i64);
        }
        match value {
            Value::Object(map) => {
                for (name, schema) in &self.properties {
                    match map.get_mut(name) {
                        Some(field) if !field.is_null() => schema.apply_defaults(field),
                        _ => {
                            if let Some(default) = &schema.default {
                                let mut default = default.clone();
                                schema.apply_defaults(&mut default);
                                map.insert(name.clone(), default);
                            } else if !self.is_required(name) {
                                // `null` for an optional property is its absence.
                                map.remove(name);
                            }
                        }
                    }
                }
            }
            Value::Array(elements) => {
                if let Some(items) = &self.items {
                    for element in elements {
                        items.apply_defaults(element);
                    }
                }
            }
            _ => {}
        }
    }

    /// Walks `path` through `properties` (and through `items` for numeric segments), for
    /// checking references such as `steps.research.output.sources`.
    pub fn lookup(&self, path: &[&str]) -> Lookup<'_> {
        let mut schema = self;
        for segment in path {
            match schema.ty {
                Type::Any => return Lookup::Open,
                Type::Object => match schema.properties.get(*segment) {
                    Some(next) => schema = next,
                    None if schema.allows_additional() => return Lookup::Open,
                    None => {
                        return Lookup::Missing {
                            at: segment.to_string(),
                            declared: schema.properties.keys().cloned().collect(),
                            on: Type::Object,
                        };
                    }
                },
                Type::Array if segment.parse::<usize>().is_ok() => match &schema.items {
                    Some(items) => schema = items,
                    None => return Lookup::Open,
                },
                ty => {
                    return Lookup::Missing {
                        at: segment.to_string(),
                        declared: Vec::new(),
                        on: ty,
                    };
                }
            }
        }
        Lookup::Declared(schema)
    }

    /// Checks the schema itself: keywords used on the right types, `required` naming listed
    /// properties, and `enum` values and defaults that the schema accepts. Paths are
    /// JSON-Schema style (`properties.topic.default`).
    pub fn check(&self) -> Result<(), Vec<SchemaError>> {
        let mut errors = Vec::new();
        self.check_at("", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn check_at(&self, path: &str, errors: &mut Vec<SchemaError>) {
        let mut error = |at: &str, message: String| {
            errors.push(SchemaError {
                path: join(path, at).trim_end_matches('.').to_string(),
                message,
            })
        };
        let object_keywords = !self.properties.is_empty()
            || !self.required.is_empty()
            || self.additional_properties.is_some();
        if object_keywords && self.ty != Type::Object {
            error(
                "",
                format!(
                    "properties, required and additionalProperties need type object, not {}",
                    self.ty
                ),
            );
        }
        if self.items.is_some() && self.ty != Type::Array {
            error("", format!("items needs type array, not {}", self.ty));
        }
        let numeric = matches!(self.ty, Type::Integer | Type::Number);
        if (self.minimum.is_some() || self.maximum.is_some()) && !numeric {
            error(
                "",
                format!("minimum and maximum need a numeric type, not {}", self.ty),
            );
        }
        if (self.min_length.is_some() || self.max_length.is_some()) && self.ty != Type::String {
            error(
                "",
                format!("minLength and maxLength need type string, not {}", self.ty),
            );
        }
        if (self.min_items.is_some() || self.max_items.is_some()) && self.ty != Type::Array {
            error(
                "",
                format!("minItems and maxItems need type array, not {}", self.ty),
            );
        }
        for name in &self.required {
            if !self.properties.contains_key(name) {
                error(
                    "required",
                    format!("{name:?} is required but not listed in properties"),
                );
            }
        }
        if let Some(values) = &self.enum_values {
            if values.is_empty() {
                error("enum", "must list at least one value".into());
            }
            for (i, value) in values.iter().enumerate() {
                let plain = Schema {
                    enum_values: None,
                    ..self.clone()
                };
                if let Err(problems) = plain.validate(value) {
                    for problem in problems {
                        error(&format!("enum[{i}]"), problem.message);
                    }
                }
            }
        }
        if let Some(default) = &self.default
            && let Err(problems) = self.validate(default)
        {
            for problem in problems {
                let at = if problem.path.is_empty() {
                    "default".to_string()
                } else {
                    format!("default.{}", problem.path)
                };
                error(&at, problem.message);
            }
        }
        for (name, property) in &self.properties {
            property.check_at(&join(path, &format!("properties.{name}")), errors);
        }
        if let Some(items) = &self.items {
            items.check_at(&join(path, "items"), errors);
        }
    }
}

/// Whether `value` is a JSON number without a fractional part.
pub fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => false,
    }
}

/// A short description of a value for messages: `string "x"`, `integer 3`, `object`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if is_integer(value) => format!("integer {n}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            const MAX: usize = 40;
            if s.chars().count() > MAX {
                let cut: String = s.chars().take(MAX).collect();
                format!("string {:?}…", cut)
            } else {
                format!("string {s:?}")
            }
        }
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn join(path: &str, name: &str) -> String {
    let mut out = path.to_string();
    push_key(&mut out, name);
    out
}

fn push_key(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(yaml: &str) -> Schema {
        serde_yaml_ng::from_str(yaml).expect("test schema parses")
    }

    fn errors(schema: &Schema, value: Value) -> Vec<String> {
        match schema.validate(&value) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_type_accepts_its_values_and_rejects_others() {
        let cases = [
            (Type::String, json!("x"), json!(1)),
            (Type::Integer, json!(3), json!(3.5)),
            (Type::Integer, json!(-3), json!("3")),
            (Type::Integer, json!(3.0), json!(true)),
            (Type::Number, json!(3.5), json!("3.5")),
            (Type::Boolean, json!(false), json!(0)),
            (Type::Array, json!([1]), json!({})),
            (Type::Object, json!({}), json!([])),
        ];
        for (ty, good, bad) in cases {
            let schema = Schema::of(ty);
            assert_eq!(schema.validate(&good), Ok(()), "{ty} accepts {good}");
            assert!(schema.validate(&bad).is_err(), "{ty} rejects {bad}");
        }
        for value in [json!(null), json!(1), json!("x"), json!([]), json!({})] {
            assert_eq!(Schema::of(Type::Any).validate(&value), Ok(()));
        }
    }

    #[test]
    fn type_errors_describe_the_value() {
        assert_eq!(
            errors(&Schema::of(Type::Integer), json!("x")),
            vec![r#"expected integer, got string "x""#]
        );
        assert_eq!(
            errors(&Schema::of(Type::String), json!(2.5)),
            vec!["expected string, got number 2.5"]
        );
    }

    #[test]
    fn errors_carry_nested_paths_and_all_are_reported() {
        let s = schema(
            r#"
type: object
required: [topic]
properties:
  topic: { type: string }
  sources:
    type: array
    items:
      type: object
      required: [url]
      properties:
        url: { type: string }
        weight: { type: number }
"#,
        );
        let got = errors(
            &s,
            json!({"sources": [{"url": "a"}, {"url": "b"}, {"url": 3, "weight": "x", "extra": 1}]}),
        );
        assert_eq!(
            got,
            vec![
                "topic: missing required field",
                "sources[2].extra: unknown field; expected one of: url, weight",
                "sources[2].url: expected string, got integer 3",
                r#"sources[2].weight: expected number, got string "x""#,
            ]
        );
    }

    #[test]
    fn enums_list_the_allowed_values() {
        let s = schema("{ type: string, enum: [beginner, advanced] }");
        assert_eq!(s.validate(&json!("advanced")), Ok(()));
        assert_eq!(
            errors(&s, json!("expert")),
            vec![r#"must be one of: "beginner", "advanced""#]
        );
    }

    #[test]
    fn bounds_are_checked() {
        let s = schema(
            "{ type: object, properties: { n: { type: integer, minimum: 1, maximum: 4 }, \
             s: { type: string, minLength: 2 }, a: { type: array, maxItems: 1 } } }",
        );
        assert_eq!(
            errors(&s, json!({"n": 5, "s": "x", "a": [1, 2]})),
            vec![
                "a: must have at most 1 items, got 2",
                "n: must be at most 4, got 5",
                "s: must be at least 2 characters long, got 1",
            ]
        );
        assert_eq!(
            errors(&s, json!({"n": 1, "s": "xy", "a": []})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn additional_properties_default_depends_on_properties() {
        let open = schema("{ type: object }");
        assert_eq!(open.validate(&json!({"anything": 1})), Ok(()));
        let closed = schema("{ type: object, properties: { a: { type: string } } }");
        assert_eq!(
            errors(&closed, json!({"b": 1})),
            vec!["b: unknown field; expected one of: a"]
        );
        let reopened = schema(
            "{ type: object, properties: { a: { type: string } }, additionalProperties: true }",
        );
        assert_eq!(reopened.validate(&json!({"b": 1})), Ok(()));
        let empty_closed = schema("{ type: object, additionalProperties: false }");
        assert_eq!(
            errors(&empty_closed, json!({"b": 1})),
            vec!["b: unknown field; no fields are accepted here"]
        );
    }

    #[test]
    fn null_means_absent_for_optional_properties_only() {
        let s = schema(
            "{ type: object, required: [a], properties: { a: { type: string }, b: { type: string } } }",
        );
        assert_eq!(s.validate(&json!({"a": "x", "b": null})), Ok(()));
        assert_eq!(
            errors(&s, json!({"a": null})),
            vec!["a: missing required field"]
        );
    }

    #[test]
    fn defaults_fill_absent_and_null_properties_recursively() {
        let s = schema(
            r#"
type: object
properties:
  difficulty: { type: string, default: intermediate }
  max_sources: { type: integer, default: 5 }
  keep: { type: string, default: unused }
  nested:
    type: object
    properties:
      flag: { type: boolean, default: true }
  list:
    type: array
    items: { type: object, properties: { n: { type: integer, default: 1 } } }
"#,
        );
        let mut value =
            json!({"max_sources": null, "keep": "mine", "nested": {}, "list": [{}, {"n": 7}]});
        s.apply_defaults(&mut value);
        assert_eq!(
            value,
            json!({
                "difficulty": "intermediate",
                "max_sources": 5,
                "keep": "mine",
                "nested": {"flag": true},
                "list": [{"n": 1}, {"n": 7}],
            })
        );
    }

    #[test]
    fn lookup_walks_properties_and_items() {
        let s = schema(
            r#"
type: object
properties:
  summary: { type: string }
  sources:
    type: array
    items: { type: object, properties: { title: { type: string } } }
  extra: { type: object }
  anything: {}
"#,
        );
        assert!(matches!(s.lookup(&["summary"]), Lookup::Declared(x) if x.ty == Type::String));
        assert!(matches!(
            s.lookup(&["sources", "0", "title"]),
            Lookup::Declared(_)
        ));
        assert_eq!(s.lookup(&["extra", "whatever", "deep"]), Lookup::Open);
        assert_eq!(s.lookup(&["anything", "x"]), Lookup::Open);
        assert_eq!(
            s.lookup(&["summry"]),
            Lookup::Missing {
                at: "summry".into(),
                declared: vec![
                    "anything".into(),
                    "extra".into(),
                    "sources".into(),
                    "summary".into()
                ],
                on: Type::Object,
            }
        );
        assert_eq!(
            s.lookup(&["sources", "title"]),
            Lookup::Missing {
                at: "title".into(),
                declared: vec![],
                on: Type::Array
            }
        );
        assert!(matches!(
            s.lookup(&["summary", "length"]),
            Lookup::Missing {
                on: Type::String,
                ..
            }
        ));
        assert!(matches!(s.lookup(&[]), Lookup::Declared(_)));
    }

    #[test]
    fn unknown_keywords_are_rejected() {
        let err = serde_yaml_ng::from_str::<Schema>("{ type: string, format: uri }").unwrap_err();
        assert!(err.to_string().contains("unknown field `format`"), "{err}");
    }

    #[test]
    fn check_finds_inconsistent_schemas() {
        let s = schema(
            r#"
type: object
required: [a, missing]
properties:
  a: { type: string, enum: [x, 1], default: y }
  b: { type: string, items: { type: string } }
"#,
        );
        let got: Vec<String> = s
            .check()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            vec![
                r#"required: "missing" is required but not listed in properties"#,
                "properties.a.enum[1]: expected string, got integer 1",
                r#"properties.a.default: must be one of: "x", 1"#,
                "properties.b: items needs type array, not string",
            ]
        );
    }

    #[test]
    fn serializes_in_json_schema_spelling() {
        let s = schema(
            "{ type: object, properties: { n: { type: integer, minLength: 1 } }, additionalProperties: false }",
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            json!({"type": "object", "properties": {"n": {"type": "integer", "minLength": 1}}, "additionalProperties": false})
        );
    }

    /// `to_json_schema` accepts exactly what `validate` accepts: checked with a standard JSON
    /// Schema validator on every keyword's edges, and on every built-in operation's input.
    #[test]
    fn the_standard_json_schema_accepts_exactly_what_validate_accepts() {
        let agree = |schema: &Schema, value: &Value| {
            let standard =
                jsonschema::validator_for(&schema.to_json_schema()).expect("a valid JSON Schema");
            assert_eq!(
                standard.is_valid(value),
                schema.validate(value).is_ok(),
                "{value} against {:#}",
                schema.to_json_schema()
            );
        };
        let s = schema(
            "{ type: object, required: [name, any], properties: {
                name: { type: string, minLength: 1, maxLength: 3 },
                any: {},
                n: { type: integer, minimum: 1, maximum: 4 },
                x: { type: number, minimum: 0.5 },
                level: { type: string, enum: [low, high] },
                tags: { type: array, minItems: 1, maxItems: 2, items: { type: string } },
                open: { type: object },
                closed: { type: object, properties: { a: { type: boolean } } } } }",
        );
        for value in [
            json!({"name": "ab", "any": 1}),
            json!({"name": "ab", "any": null}),
            json!({"name": "", "any": 1}),
            json!({"name": "abcd", "any": 1}),
            json!({"name": null, "any": 1}),
            json!({"any": 1}),
            json!({"name": "a", "any": [], "n": null, "x": null, "level": null, "tags": null}),
            json!({"name": "a", "any": {}, "n": 0}),
            json!({"name": "a", "any": {}, "n": 2.0}),
            json!({"name": "a", "any": {}, "n": 2.5}),
            json!({"name": "a", "any": {}, "n": 5}),
            json!({"name": "a", "any": {}, "x": 0.25}),
            json!({"name": "a", "any": {}, "level": "mid"}),
            json!({"name": "a", "any": {}, "level": "low"}),
            json!({"name": "a", "any": {}, "tags": []}),
            json!({"name": "a", "any": {}, "tags": ["a", null]}),
            json!({"name": "a", "any": {}, "tags": ["a", "b", "c"]}),
            json!({"name": "a", "any": {}, "open": {"anything": [1]}}),
            json!({"name": "a", "any": {}, "closed": {"a": true}}),
            json!({"name": "a", "any": {}, "closed": {"b": true}}),
            json!({"name": "a", "any": {}, "closed": {"a": null}}),
            json!({"name": "a", "any": {}, "unknown": 1}),
            json!([]),
            json!(null),
        ] {
            agree(&s, &value);
        }
        for op in crate::Catalog::builtin().operations() {
            let mut values = vec![json!({}), json!(null), json!({"not_a_field": 1})];
            for (name, property) in &op.input.properties {
                for v in [json!(null), json!(""), json!(0), json!([]), json!({})] {
                    values.push(json!({ name: v }));
                }
                if let Some(d) = &property.default {
                    values.push(json!({ name: d }));
                }
            }
            for value in &values {
                agree(&op.input, value);
            }
        }
    }

    #[test]
    fn integers_written_with_a_zero_fraction_become_integers() {
        let s = schema(
            "{ type: object, properties: { n: { type: integer }, x: { type: number }, l: { type: array, items: { type: integer } } } }",
        );
        let mut v = json!({"n": 3.0, "x": 2.0, "l": [1.0, 2]});
        s.apply_defaults(&mut v);
        assert!(v["n"].is_i64(), "{v}");
        assert!(v["x"].is_f64(), "numbers stay as given: {v}");
        assert!(v["l"][0].is_i64(), "{v}");
        let mut v = json!({"n": 3.5});
        s.apply_defaults(&mut v);
        assert!(
            v["n"].is_f64(),
            "a real fraction is left for validate to refuse: {v}"
        );
    }
}
