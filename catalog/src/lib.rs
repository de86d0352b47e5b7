//! The operation catalog: every operation a worker offers (`research.topic`, `ai.generate`,
//! `cards.retrieve`…) with the schema of its input and of its output, declared once in
//! `catalog/operations/<kind>.yaml` and shared by the workflow engine (which checks step
//! inputs and references to step outputs when a workflow is registered) and by the workers
//! (which validate and default their input with the same schema).
//!
//! This crate is pure data and checks: it must not do I/O, talk to the bus, or know how an
//! operation is carried out. The built-in catalog is compiled into the binary.

pub mod capability;
pub mod cards;
pub mod declare;
mod schema;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

pub use schema::{Lookup, Schema, SchemaError, Type, describe, is_integer};

/// Why a catalog could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A catalog file is not valid YAML of the expected shape, or declares an inconsistent
    /// schema.
    #[error("{file}: {reason}")]
    BadFile { file: String, reason: String },
    /// Two files (or one, twice) declare the same operation.
    #[error("{file}: operation {name:?} is already declared in {first}")]
    Duplicate {
        file: String,
        name: String,
        first: String,
    },
    /// An operation name is not `<kind>.<op>` for the kind the file declares.
    #[error(
        "{file}: operation {name:?} must be named \"{kind}.<op>\" (letters, digits, '_' and '-' between dots)"
    )]
    BadName {
        file: String,
        name: String,
        kind: String,
    },
}

/// One operation: its name and the schemas of what it takes and returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationSpec {
    /// `<kind>.<op>`, e.g. `integration.slack.post_message`.
    pub name: String,
    /// The worker kind that serves it, e.g. `integration`.
    pub kind: String,
    pub description: String,
    /// What a job of this operation carries; workers apply its defaults, then validate.
    pub input: Schema,
    /// What a successful job returns; workflows may refer to the fields it declares.
    pub output: Schema,
    /// The version of these schemas: 1 for the built-in operations, the declared one for
    /// operations declared at run time.
    pub version: u32,
    /// What the operation can stand for (see [`capability`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// All known operations, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    operations: BTreeMap<String, OperationSpec>,
    /// Each capability and the operation whose schemas define it.
    capabilities: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    kind: String,
    operations: BTreeMap<String, FileOperation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    description: String,
    input: Schema,
    output: Schema,
    #[serde(default)]
    capabilities: Vec<String>,
}

/// The catalog files compiled into the binary.
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("test.yaml", include_str!("../operations/test.yaml")),
    ("research.yaml", include_str!("../operations/research.yaml")),
    ("ai.yaml", include_str!("../operations/ai.yaml")),
    ("cards.yaml", include_str!("../operations/cards.yaml")),
    (
        "integration.yaml",
        include_str!("../operations/integration.yaml"),
    ),
];

static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::from_yaml_files(BUILTIN_FILES)
        .unwrap_or_else(|err| panic!("the built-in operation catalog is invalid: {err}"))
});

impl Catalog {
    /// The catalog shipped with Switchyard (`catalog/operations/*.yaml`).
    pub fn builtin() -> &'static Catalog {
        &BUILTIN
    }

    /// Builds a catalog from `(file name, YAML text)` pairs, one file per worker kind.
    pub fn from_yaml_files(files: &[(&str, &str)]) -> Result<Catalog, Error> {
        let mut catalog = Catalog::default();
        let mut origin: BTreeMap<String, &str> = BTreeMap::new();
        for (file_name, text) in files {
            let bad = |reason: String| Error::BadFile {
                file: file_name.to_string(),
                reason,
            };
            let file: File = serde_yaml_ng::from_str(text).map_err(|e| bad(e.to_string()))?;
            if !is_name_part(&file.kind) {
                return Err(bad(format!(
                    "kind {:?} must be letters, digits, '_' and '-'",
                    file.kind
                )));
            }
            for (name, op) in file.operations {
                let well_formed = name
                    .strip_prefix(&file.kind)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|rest| rest.split('.').all(is_name_part));
                if !well_formed {
                    return Err(Error::BadName {
                        file: file_name.to_string(),
                        name,
                        kind: file.kind.clone(),
                    });
                }
                for (which, schema) in [("input", &op.input), ("output", &op.output)] {
                    if let Err(errors) = schema.check() {
                        let list: Vec<String> = errors
                            .iter()
                            .map(|e| format!("{name}.{which}{}", display_suffix(e)))
                            .collect();
                        return Err(bad(list.join("; ")));
                    }
                }
                if let Some(first) = origin.get(&name) {
                    return Err(Error::Duplicate {
                        file: file_name.to_string(),
                        name,
                        first: first.to_string(),
                    });
                }
                origin.insert(name.clone(), file_name);
                let spec = OperationSpec {
                    name: name.clone(),
                    kind: file.kind.clone(),
                    description: op.description,
                    input: op.input,
                    output: op.output,
                    version: 1,
                    capabilities: op.capabilities,
                };
                catalog
                    .check_capabilities(&spec)
                    .map_err(|e| bad(e.to_string()))?;
                catalog.claim(&spec);
                catalog.operations.insert(name, spec);
            }
        }
        Ok(catalog)
    }

    /// The operation called `name`.
    pub fn get(&self, name: &str) -> Option<&OperationSpec> {
        self.operations.get(name)
    }

    /// Every operation, ordered by name.
    pub fn operations(&self) -> impl Iterator<Item = &OperationSpec> {
        self.operations.values()
    }

    /// The operations served by worker kind `kind`, ordered by name.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a OperationSpec> {
        self.operations.values().filter(move |op| op.kind == kind)
    }

    /// Every kind that serves an operation here, ordered by name.
    pub fn kinds(&self) -> std::collections::BTreeSet<&str> {
        self.operations
            .values()
            .map(|op| op.kind.as_str())
            .collect()
    }

    /// The known operation name closest to `name`, for "did you mean" hints.
    pub fn closest(&self, name: &str) -> Option<&str> {
        closest(name, self.operations.keys().map(String::as_str))
    }
}

/// The candidate most similar to `name`, if any is similar enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const THRESHOLD: f64 = 0.5;
    candidates
        .into_iter()
        .map(|candidate| {
            (
                strsim::normalized_damerau_levenshtein(name, candidate),
                candidate,
            )
        })
        .filter(|(score, _)| *score >= THRESHOLD)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// Whether `part` may be one token of a subject: a kind or a capability name.
pub fn is_name_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn display_suffix(error: &SchemaError) -> String {
    if error.path.is_empty() {
        format!(": {}", error.message)
    } else {
        format!(".{}: {}", error.path, error.message)
    }
}

#[cfg(test)]
mod tests;
