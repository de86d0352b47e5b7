//! Operations a worker kind declares at run time (docs/worker-protocol.md): the JSON a replica
//! sends when it starts, and the checks it must pass before definitions may use it.
//!
//! The checks here are the pure ones (names, schemas, versions within one declaration); that a
//! version keeps its schemas across declarations is the registry's check, since it needs what
//! was stored before.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Catalog, OperationSpec, Schema, is_name_part};

/// The worker protocol version this build speaks.
pub const PROTOCOL: u32 = 1;

/// What a worker kind declares: its name and the operations it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// The worker protocol version, [`PROTOCOL`].
    pub protocol: u32,
    /// The kind, one subject token (letters, digits, `_`, `-`).
    pub kind: String,
    pub operations: Vec<DeclaredOperation>,
}

/// One operation of a [`Declaration`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredOperation {
    /// `<kind>.<op>`, e.g. `tutor.knowledge_graph`.
    pub name: String,
    /// From 1; a version names its schemas for good. Declare changed schemas as a new
    /// version.
    pub version: u32,
    #[serde(default)]
    pub description: String,
    pub input: Schema,
    pub output: Schema,
    /// What the operation can stand for, e.g. `summarize`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

impl Declaration {
    /// What built-in kind `kind` declares: its operations in the built-in catalog.
    pub fn builtin(kind: &str) -> Declaration {
        Declaration {
            protocol: PROTOCOL,
            kind: kind.to_owned(),
            operations: Catalog::builtin()
                .of_kind(kind)
                .map(|op| DeclaredOperation {
                    name: op.name.clone(),
                    version: op.version,
                    description: op.description.clone(),
                    input: op.input.clone(),
                    output: op.output.clone(),
                    capabilities: op.capabilities.clone(),
                })
                .collect(),
        }
    }
}

impl DeclaredOperation {
    /// The catalog entry of this operation of `kind`.
    pub fn spec(&self, kind: &str) -> OperationSpec {
        OperationSpec {
            name: self.name.clone(),
            kind: kind.to_owned(),
            description: self.description.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
            version: self.version,
            capabilities: self.capabilities.clone(),
        }
    }

    /// Whether `other` declares the same contract: the same schemas and capabilities (the
    /// description may be reworded).
    pub fn same_contract(&self, other: &DeclaredOperation) -> bool {
        self.input == other.input
            && self.output == other.output
            && self.capabilities == other.capabilities
    }
}

/// Why a declaration is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DeclarationError {
    /// Where, like `operations[1].input.properties.text` or `kind`.
    pub field: String,
    pub reason: String,
}

impl Declaration {
    /// Checks a declaration sent for worker kind `kind` (the kind its subject names).
    pub fn check(&self, kind: &str) -> Result<(), DeclarationError> {
        let err = |field: &str, reason: String| DeclarationError {
            field: field.to_owned(),
            reason,
        };
        if self.protocol != PROTOCOL {
            return Err(err(
                "protocol",
                format!(
                    "version {} is not spoken here; this engine speaks {PROTOCOL}",
                    self.protocol
                ),
            ));
        }
        if self.kind != kind {
            return Err(err(
                "kind",
                format!(
                    "{:?} differs from the kind the subject names, {kind:?}",
                    self.kind
                ),
            ));
        }
        if !is_name_part(kind) {
            return Err(err(
                "kind",
                format!("{kind:?} must be letters, digits, '_' and '-'"),
            ));
        }
        // A built-in kind declares itself too, with exactly what it was compiled with.
        let builtin = Catalog::builtin().of_kind(kind).next().is_some();
        if self.operations.is_empty() {
            return Err(err("operations", "must declare at least one".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, op) in self.operations.iter().enumerate() {
            let at = |field: &str| format!("operations[{i}].{field}");
            let well_formed = op
                .name
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| rest.split('.').all(is_name_part));
            if !well_formed {
                return Err(err(
                    &at("name"),
                    format!(
                        "{:?} must be named \"{kind}.<op>\" (letters, digits, '_' and '-' between dots)",
                        op.name
                    ),
                ));
            }
            if !seen.insert(op.name.as_str()) {
                return Err(err(&at("name"), format!("{:?} is declared twice", op.name)));
            }
            if op.version == 0 {
                return Err(err(&at("version"), "must be 1 or more".into()));
            }
            for (which, schema) in [("input", &op.input), ("output", &op.output)] {
                if let Err(errors) = schema.check() {
                    let first = &errors[0];
                    let field = if first.path.is_empty() {
                        at(which)
                    } else {
                        at(&format!("{which}.{}", first.path))
                    };
                    return Err(err(&field, first.message.clone()));
                }
            }
            if let Some(bad) = op.capabilities.iter().find(|c| !is_name_part(c)) {
                return Err(err(
                    &at("capabilities"),
                    format!("{bad:?} must be letters, digits, '_' and '-'"),
                ));
            }
            if builtin {
                let compiled = Catalog::builtin().get(&op.name);
                let same = compiled.is_some_and(|c| {
                    c.version == op.version
                        && c.input == op.input
                        && c.output == op.output
                        && c.capabilities == op.capabilities
                });
                if !same {
                    return Err(err(
                        &at("name"),
                        format!(
                            "{:?} is not {kind}'s built-in operation of that name and version: \
                             {kind:?} is a built-in kind, which declares only what Switchyard \
                             was built with (choose another kind name for your own operations)",
                            op.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Catalog {
    /// This catalog with `declared` added, in the order given (the first claim of a
    /// capability defines it); an operation already here is kept as it is, and so is a
    /// capability claim that is not compatible with its contract (the registry refuses those
    /// when they are declared).
    pub fn with_declared(&self, declared: impl IntoIterator<Item = OperationSpec>) -> Catalog {
        let mut catalog = self.clone();
        for mut spec in declared {
            if catalog.operations.contains_key(&spec.name) {
                continue;
            }
            let compatible: Vec<String> = spec
                .capabilities
                .iter()
                .filter(|c| {
                    let one = OperationSpec {
                        capabilities: vec![(*c).clone()],
                        ..spec.clone()
                    };
                    catalog.check_capabilities(&one).is_ok()
                })
                .cloned()
                .collect();
            spec.capabilities = compatible;
            catalog.claim(&spec);
            catalog.operations.insert(spec.name.clone(), spec);
        }
        catalog
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declaration(ops: serde_json::Value) -> Declaration {
        serde_json::from_value(json!({ "protocol": 1, "kind": "tutor", "operations": ops }))
            .unwrap()
    }

    fn graph(version: u32) -> serde_json::Value {
        json!({
            "name": "tutor.knowledge_graph",
            "version": version,
            "input": { "type": "object", "required": ["text"],
                       "properties": { "text": { "type": "string" } } },
            "output": { "type": "object", "required": ["nodes", "edges"],
                        "properties": { "nodes": { "type": "array" }, "edges": { "type": "array" } } },
            "capabilities": ["knowledge_graph"],
        })
    }

    #[test]
    fn a_well_formed_declaration_is_accepted_and_joins_the_catalog() {
        let d = declaration(json!([graph(1)]));
        d.check("tutor").unwrap();
        let catalog =
            Catalog::builtin().with_declared(d.operations.iter().map(|o| o.spec("tutor")));
        let spec = catalog.get("tutor.knowledge_graph").unwrap();
        assert_eq!((spec.kind.as_str(), spec.version), ("tutor", 1));
        assert!(catalog.get("research.topic").is_some());
    }

    #[test]
    fn each_refusal_names_its_field() {
        let cases = [
            (
                json!({ "protocol": 2, "kind": "tutor", "operations": [graph(1)] }),
                "tutor",
                "protocol",
            ),
            (
                json!({ "protocol": 1, "kind": "tutor", "operations": [graph(1)] }),
                "other",
                "kind",
            ),
            (
                json!({ "protocol": 1, "kind": "research", "operations": [graph(1)] }),
                "research",
                "operations[0].name",
            ),
            (
                json!({ "protocol": 1, "kind": "tutor", "operations": [] }),
                "tutor",
                "operations",
            ),
            (
                json!({ "protocol": 1, "kind": "tutor", "operations": [graph(0)] }),
                "tutor",
                "operations[0].version",
            ),
            (
                json!({ "protocol": 1, "kind": "tutor", "operations": [graph(1), graph(2)] }),
                "tutor",
                "operations[1].name",
            ),
        ];
        for (value, kind, field) in cases {
            let d: Declaration = serde_json::from_value(value.clone()).unwrap();
            let e = d.check(kind).unwrap_err();
            assert_eq!(e.field, field, "{value}: {e}");
        }
        let mut misnamed = graph(1);
        misnamed["name"] = json!("other.knowledge_graph");
        let e = declaration(json!([misnamed])).check("tutor").unwrap_err();
        assert_eq!(e.field, "operations[0].name");
        assert!(e.reason.contains("tutor.<op>"), "{e}");
        let mut bad_schema = graph(1);
        bad_schema["input"]["required"] = json!(["missing"]);
        let e = declaration(json!([bad_schema])).check("tutor").unwrap_err();
        assert_eq!(e.field, "operations[0].input.required", "{e}");
        assert!(e.reason.contains("\"missing\" is required"), "{e}");
    }

    #[test]
    fn a_built_in_kind_declares_only_what_it_was_built_with() {
        let d = Declaration::builtin("research");
        assert_eq!(d.operations.len(), 1);
        d.check("research").unwrap();
        let mut changed = d.clone();
        changed.operations[0].output.required.clear();
        let e = changed.check("research").unwrap_err();
        assert_eq!(e.field, "operations[0].name", "{e}");
        assert!(e.reason.contains("built-in kind"), "{e}");
        let mut added = d.clone();
        let mut mine = d.operations[0].clone();
        mine.name = "research.mine".into();
        added.operations.push(mine);
        assert_eq!(
            added.check("research").unwrap_err().field,
            "operations[1].name"
        );
    }

    #[test]
    fn a_reworded_description_keeps_the_contract_and_a_changed_schema_does_not() {
        let d = declaration(json!([graph(1)]));
        let first = &d.operations[0];
        let mut reworded = first.clone();
        reworded.description = "Entities and relations.".into();
        assert!(first.same_contract(&reworded));
        let mut changed = first.clone();
        changed.output.required = vec!["nodes".into()];
        assert!(!first.same_contract(&changed));
    }
}
