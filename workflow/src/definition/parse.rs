//! From YAML text to typed structs, and from problem paths back to line numbers.
//!
//! The typed structs deny unknown keys. When the text does not fit them, each step and each
//! input field is read again on its own so that every structural problem is reported, not
//! only the first one serde stops at.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use switchyard_catalog::{Schema, Type};

use super::{OnError, Problem, Retry, WaitForSignal};

/// A workflow definition as written. Generic so that the top level can be read with steps,
/// input fields and schedules skipped (see [`structural_problems`]).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a workflow definition (a mapping with name, version and steps)"
)]
pub(super) struct RawDefinition<S = RawStep, I = RawInputField, C = RawSchedule> {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default = "BTreeMap::new")]
    pub input: BTreeMap<String, I>,
    pub steps: Vec<S>,
    #[serde(default)]
    pub output: Option<Value>,
    /// How long the whole instance may run.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// When to start instances by themselves.
    #[serde(default = "Vec::new")]
    pub schedules: Vec<C>,
    /// Subjects whose messages start instances.
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
    /// At most `limit` instances per key value at once.
    #[serde(default)]
    pub concurrency: Option<RawConcurrency>,
    /// At most `limit` starts per key value per `per`.
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

/// `rate_limit:` as written, on a definition or a step.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rate limit (a mapping with key, limit and per)"
)]
pub(super) struct RawRateLimit {
    pub key: Value,
    pub limit: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

/// `concurrency:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a concurrency limit (a mapping with key and limit)"
)]
pub(super) struct RawConcurrency {
    pub key: Value,
    pub limit: u32,
}

/// One entry of `triggers:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a trigger (a mapping with subject and input)"
)]
pub(super) struct RawTrigger {
    pub subject: String,
    #[serde(default)]
    pub input: Option<Value>,
}

/// One entry of `schedules:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a schedule (a mapping with cron or every, and input)"
)]
pub(super) struct RawSchedule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
}

/// One step as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a step (a mapping with id and operation)"
)]
pub(super) struct RawStep {
    pub id: String,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub capability: Option<String>,
    #[serde(default)]
    pub prefer: Vec<String>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub when: Option<Value>,
    #[serde(default)]
    pub for_each: Option<Value>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub wait_for_signal: Option<WaitForSignal>,
    #[serde(default, with = "humantime_serde")]
    pub sleep: Option<Duration>,
    #[serde(default)]
    pub sleep_until: Option<Value>,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

/// One field of the workflow's `input:` section: a schema, with `required` as a flag.
/// Nested `properties` and `items` use the catalog's JSON-Schema spelling.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "an input field (a mapping with type, required, default…)"
)]
pub(super) struct RawInputField {
    #[serde(rename = "type", default)]
    pub ty: Type,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(rename = "enum", default)]
    pub enum_values: Option<Vec<Value>>,
    #[serde(default)]
    pub items: Option<Box<Schema>>,
    #[serde(default)]
    pub properties: BTreeMap<String, Schema>,
    #[serde(default)]
    pub additional_properties: Option<bool>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    #[serde(default)]
    pub min_length: Option<u64>,
    #[serde(default)]
    pub max_length: Option<u64>,
    #[serde(default)]
    pub min_items: Option<u64>,
    #[serde(default)]
    pub max_items: Option<u64>,
}

impl RawInputField {
    pub fn into_schema(self) -> (Schema, bool) {
        let schema = Schema {
            ty: self.ty,
            description: self.description,
            properties: self.properties,
            required: Vec::new(),
            additional_properties: self.additional_properties,
            items: self.items,
            enum_values: self.enum_values,
            default: self.default,
            minimum: self.minimum,
            maximum: self.maximum,
            min_length: self.min_length,
            max_length: self.max_length,
            min_items: self.min_items,
            max_items: self.max_items,
        };
        (schema, self.required)
    }
}

/// A place in the definition: `steps[2].input.topic`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Path(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn root(key: &str) -> Path {
        Path(vec![Seg::Key(key.to_string())])
    }

    pub fn key(&self, key: &str) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_string()));
        path
    }

    pub fn index(&self, index: usize) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// Appends a catalog schema error path such as `sources[2].url`.
    pub fn schema_path(&self, sub: &str) -> Path {
        let mut path = self.clone();
        for part in sub.split('.').filter(|p| !p.is_empty()) {
            let (key, indexes) = match part.find('[') {
                Some(at) => part.split_at(at),
                None => (part, ""),
            };
            if !key.is_empty() {
                path.0.push(Seg::Key(key.to_string()));
            }
            for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
                match index.parse() {
                    Ok(i) => path.0.push(Seg::Index(i)),
                    Err(_) => path.0.push(Seg::Key(index.to_string())),
                }
            }
        }
        path
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Reads the whole definition, or reports every structural problem (YAML syntax, unknown or
/// missing keys, wrong types, bad durations) with its path and line.
pub(super) fn read(source: &str) -> Result<RawDefinition, Vec<Problem>> {
    match serde_yaml_ng::from_str::<RawDefinition>(source) {
        Ok(raw) => Ok(raw),
        Err(first) => {
            let tree = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(source) {
                Ok(tree) => tree,
                Err(syntax) => return Err(vec![syntax_problem(&syntax)]),
            };
            if tree.is_null() {
                return Err(vec![Problem {
                    path: String::new(),
                    line: None,
                    message:
                        "the definition is empty; expected a mapping with name, version and steps"
                            .into(),
                }]);
            }
            let mut problems = structural_problems(source, &tree);
            if problems.is_empty() {
                problems.push(data_problem(&first));
            }
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(problems)
        }
    }
}

fn structural_problems(source: &str, tree: &serde_yaml_ng::Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(err) =
        serde_yaml_ng::from_str::<RawDefinition<IgnoredAny, IgnoredAny, IgnoredAny>>(source)
    {
        problems.push(data_problem(&err));
    }
    if let Some(steps) = tree.get("steps").and_then(|s| s.as_sequence()) {
        for index in 0..steps.len() {
            let path = Path::root("steps").index(index);
            if let Err(err) = read_at::<RawStep>(source, &path) {
                problems.push(data_problem(&err));
            }
        }
    }
    if let Some(schedules) = tree.get("schedules").and_then(|s| s.as_sequence()) {
        for index in 0..schedules.len() {
            let path = Path::root("schedules").index(index);
            if let Err(err) = read_at::<RawSchedule>(source, &path) {
                problems.push(data_problem(&err));
            }
        }
    }
    if let Some(input) = tree.get("input").and_then(|s| s.as_mapping()) {
        for key in input.keys().filter_map(|k| k.as_str()) {
            let path = Path::root("input").key(key);
            if let Err(err) = read_at::<RawInputField>(source, &path) {
                problems.push(data_problem(&err));
            }
        }
    }
    problems.dedup();
    problems
}

/// Deserializes the node at `path` of `source` as a `T` (errors carry full paths and lines).
fn read_at<T: for<'de> Deserialize<'de>>(
    source: &str,
    path: &Path,
) -> Result<Option<T>, serde_yaml_ng::Error> {
    Nav::<T> {
        path: &path.0,
        target: PhantomData,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(source))
}

/// The line (1-based) where the node at `path` starts, or where its closest existing parent
/// does. Best effort: `None` when the text cannot be read.
pub(super) fn locate(source: &str, path: &Path) -> Option<usize> {
    let mut path = path.clone();
    loop {
        match read_at::<Pin>(source, &path) {
            Err(err) => return err.location().map(|l| l.line()),
            Ok(_) if path.0.is_empty() => return None,
            Ok(_) => {
                path.0.pop();
            }
        }
    }
}

/// A "type" that fails wherever it is read, so that the error carries the node's position.
struct Pin;

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pin, D::Error> {
        struct PinVisitor;
        impl<'de> Visitor<'de> for PinVisitor {
            type Value = Pin;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("nothing")
            }
        }
        deserializer.deserialize_any(PinVisitor)
    }
}

/// Walks to the node at `path`, deserializes it as `T`, and skips everything else.
struct Nav<'p, T> {
    path: &'p [Seg],
    target: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Nav<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        match self.path.split_first() {
            None => T::deserialize(deserializer).map(Some),
            Some((head, rest)) => deserializer.deserialize_any(NavVisitor::<T> {
                head,
                rest,
                target: PhantomData,
            }),
        }
    }
}

struct NavVisitor<'p, T> {
    head: &'p Seg,
    rest: &'p [Seg],
    target: PhantomData<T>,
}

macro_rules! not_found {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> { Ok(None) })*
    };
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for NavVisitor<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    not_found!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            let wanted = match (self.head, &key) {
                (Seg::Key(want), serde_yaml_ng::Value::String(have)) => want == have,
                _ => false,
            };
            if wanted && found.is_none() {
                found = map.next_value_seed(Nav::<T> {
                    path: self.rest,
                    target: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Seg::Index(wanted) = self.head else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        let mut index = 0;
        loop {
            if index == *wanted {
                match seq.next_element_seed(Nav::<T> {
                    path: self.rest,
                    target: PhantomData,
                })? {
                    Some(value) => found = value,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }
}

fn syntax_problem(err: &serde_yaml_ng::Error) -> Problem {
    let line = err.location().map(|l| l.line());
    let mut text = err.to_string();
    if let Some(l) = err.location() {
        text = text.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    Problem {
        path: String::new(),
        line,
        message: format!("invalid YAML: {text}"),
    }
}

/// Turns a serde_yaml_ng data error ("steps[1]: unknown field `x`, expected one of … at line
/// 5 column 5") into a problem with a path and a plainer message.
fn data_problem(err: &serde_yaml_ng::Error) -> Problem {
    let line = err.location().map(|l| l.line());
    let mut text = err.to_string();
    if let Some(l) = err.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_string();
        }
    }
    // serde_yaml_ng writes "<path>: <message>", without the path at the root. Paths have no
    // spaces; serde's messages ("invalid type: …") do before their first colon.
    let (path, message) = match text.split_once(": ") {
        Some((path, message)) if !path.contains(' ') && !path.is_empty() => {
            (path.to_string(), message.to_string())
        }
        _ => (String::new(), text),
    };
    let (path, message) = refine(path, message);
    Problem {
        path,
        line,
        message,
    }
}

/// Rewrites serde's messages about keys and enum values: the key goes into the path, and the
/// closest expected name is suggested.
fn refine(path: String, message: String) -> (String, String) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    // "unknown field `x`, expected one of `a`, `b`" / "unknown variant `x`, expected `a` or `b`"
    let unknown = |rest: &str| -> Option<(String, Vec<String>, String)> {
        let (name, expected) = rest.split_once('`')?;
        let names: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let hint = match switchyard_catalog::closest(name, names.iter().map(String::as_str)) {
            Some(close) => format!(" (did you mean {close:?}?)"),
            None => String::new(),
        };
        Some((name.to_string(), names, hint))
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, names, hint)) = unknown(rest)
    {
        let message = if names.is_empty() {
            format!("unknown key{hint}; no keys are accepted here")
        } else {
            format!("unknown key{hint}; expected one of: {}", names.join(", "))
        };
        return (join(&key), message);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, names, hint)) = unknown(rest)
    {
        let message = format!(
            "unknown value {value:?}{hint}; expected one of: {}",
            names.join(", ")
        );
        return (path, message);
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((key, _)) = rest.split_once('`')
    {
        return (join(key), "missing required key".to_string());
    }
    (path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
name: x
version: 1
steps:
  - id: a
    operation: test.echo
    input:
      topic: hello
      list: [1, 2]
  - id: b
    needs: [a]
";

    #[test]
    fn locate_finds_nested_nodes_and_falls_back_to_parents() {
        let steps = Path::root("steps");
        assert_eq!(locate(SOURCE, &Path::root("name")), Some(1));
        assert_eq!(locate(SOURCE, &steps.index(0).key("operation")), Some(5));
        assert_eq!(
            locate(SOURCE, &steps.index(0).key("input").key("topic")),
            Some(7)
        );
        assert_eq!(
            locate(SOURCE, &steps.index(0).key("input").key("list").index(1)),
            Some(8)
        );
        assert_eq!(
            locate(SOURCE, &steps.index(1).key("needs").index(0)),
            Some(10)
        );
        // absent: the closest parent that exists
        assert_eq!(
            locate(SOURCE, &steps.index(1).key("input").key("x")),
            Some(9)
        );
    }

    #[test]
    fn paths_display_like_serde_yaml() {
        let path = Path::root("steps").index(2).key("input").key("topic");
        assert_eq!(path.to_string(), "steps[2].input.topic");
        assert_eq!(
            Path::root("input")
                .schema_path("sources[2].url")
                .to_string(),
            "input.sources[2].url"
        );
        assert_eq!(Path::root("input").schema_path("").to_string(), "input");
    }
}
