//! Capabilities: what an operation can stand for (`research`, `summarize`), so that a
//! workflow step may name the capability and run on whichever kind provides it.
//!
//! Each capability has a contract, the schemas of the operation that claimed it first (a
//! built-in operation before any declared at run time). A definition's step that names the
//! capability is checked against the contract, and every other operation that claims it must
//! be compatible with it: it accepts every input the contract accepts and returns every field
//! the contract promises. Compatibility looks at types and required fields; bounds such as
//! `maxLength` are each operation's own.

use crate::{Catalog, OperationSpec, Schema, SchemaError, Type};

impl Catalog {
    /// The operation whose schemas define `capability`.
    pub fn contract(&self, capability: &str) -> Option<&OperationSpec> {
        self.capabilities
            .get(capability)
            .and_then(|name| self.operations.get(name))
    }

    /// Every operation that claims `capability`, ordered by name.
    pub fn providers<'a>(
        &'a self,
        capability: &'a str,
    ) -> impl Iterator<Item = &'a OperationSpec> + 'a {
        self.operations
            .values()
            .filter(move |op| op.capabilities.iter().any(|c| c == capability))
    }

    /// Every capability some operation claims, ordered by name.
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.capabilities.keys().map(String::as_str)
    }

    /// Whether `spec` may claim its capabilities here: each one is new, or `spec` is
    /// compatible with its contract. The error names the capability and the field.
    pub fn check_capabilities(&self, spec: &OperationSpec) -> Result<(), CapabilityError> {
        for capability in &spec.capabilities {
            let Some(contract) = self.contract(capability) else {
                continue;
            };
            if contract.name == spec.name {
                continue;
            }
            let refuse = |which: &str, e: SchemaError| CapabilityError {
                capability: capability.clone(),
                contract: contract.name.clone(),
                field: if e.path.is_empty() {
                    which.to_owned()
                } else {
                    format!("{which}.{}", e.path)
                },
                reason: e.message,
            };
            accepts_all_of(&spec.input, &contract.input, "").map_err(|e| refuse("input", e))?;
            provides_all_of(&spec.output, &contract.output, "").map_err(|e| refuse("output", e))?;
        }
        Ok(())
    }

    /// Records the capabilities of an operation just added; the first claim of each is its
    /// contract.
    pub(crate) fn claim(&mut self, spec: &OperationSpec) {
        for capability in &spec.capabilities {
            self.capabilities
                .entry(capability.clone())
                .or_insert_with(|| spec.name.clone());
        }
    }
}

/// Why an operation may not claim a capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "capability {capability:?} is defined by {contract}, and this operation is not compatible with it: {field}: {reason}"
)]
pub struct CapabilityError {
    pub capability: String,
    /// The operation whose schemas define the capability.
    pub contract: String,
    /// Where they differ, like `input.properties.topic` or `output.sources`.
    pub field: String,
    pub reason: String,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn error(path: &str, message: String) -> SchemaError {
    SchemaError {
        path: path.to_owned(),
        message,
    }
}

/// Whether a value of type `given` is always a value of type `wanted`.
fn type_fits(given: Type, wanted: Type) -> bool {
    wanted == Type::Any || given == wanted || (given == Type::Integer && wanted == Type::Number)
}

/// Checks that `provider` (an input schema) accepts every value `contract` accepts: the same
/// types, and no property required that the contract leaves optional.
pub fn accepts_all_of(provider: &Schema, contract: &Schema, path: &str) -> Result<(), SchemaError> {
    if !type_fits(contract.ty, provider.ty) {
        return Err(error(
            path,
            format!("takes {}, the contract gives {}", provider.ty, contract.ty),
        ));
    }
    if provider.ty == Type::Object {
        if let Some(extra) = provider.required.iter().find(|r| !contract.is_required(r)) {
            return Err(error(
                &join(path, extra),
                "is required here but optional in the contract".into(),
            ));
        }
        for (name, schema) in &provider.properties {
            if let Some(given) = contract.properties.get(name) {
                accepts_all_of(schema, given, &join(path, name))?;
            }
        }
    }
    if let (Some(provider), Some(contract)) = (&provider.items, &contract.items) {
        accepts_all_of(provider, contract, &join(path, "items"))?;
    }
    Ok(())
}

/// Checks that `provider` (an output schema) gives every value `contract` promises: the same
/// types, every required property, and compatible optional ones where both declare them.
pub fn provides_all_of(
    provider: &Schema,
    contract: &Schema,
    path: &str,
) -> Result<(), SchemaError> {
    if !type_fits(provider.ty, contract.ty) {
        return Err(error(
            path,
            format!(
                "returns {}, the contract promises {}",
                provider.ty, contract.ty
            ),
        ));
    }
    if contract.ty == Type::Object {
        if let Some(missing) = contract.required.iter().find(|r| !provider.is_required(r)) {
            return Err(error(
                &join(path, missing),
                "is required by the contract but not promised here".into(),
            ));
        }
        for (name, promised) in &contract.properties {
            if let Some(schema) = provider.properties.get(name) {
                provides_all_of(schema, promised, &join(path, name))?;
            } else if contract.is_required(name) {
                return Err(error(&join(path, name), "is not declared".into()));
            }
        }
    }
    if let Some(promised) = &contract.items
        && !promised.ty.is_any()
    {
        match &provider.items {
            Some(items) => provides_all_of(items, promised, &join(path, "items"))?,
            None => {
                return Err(error(
                    &join(path, "items"),
                    format!("the contract promises {} elements", promised.ty),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(name: &str, input: serde_json::Value, output: serde_json::Value) -> OperationSpec {
        OperationSpec {
            name: name.into(),
            kind: name.split('.').next().unwrap().into(),
            description: String::new(),
            input: serde_json::from_value(input).unwrap(),
            output: serde_json::from_value(output).unwrap(),
            version: 1,
            capabilities: vec!["research".into()],
        }
    }

    fn research_output() -> serde_json::Value {
        json!({ "type": "object", "required": ["summary", "key_points", "sources"],
                "properties": {
                    "summary": { "type": "string" },
                    "key_points": { "type": "array", "items": { "type": "string" } },
                    "sources": { "type": "array", "items": {
                        "type": "object", "required": ["title", "location", "snippet", "score"],
                        "properties": { "title": { "type": "string" }, "location": { "type": "string" },
                                        "snippet": { "type": "string" }, "score": { "type": "number" } } } } } })
    }

    #[test]
    fn the_built_in_research_operation_defines_the_research_capability() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.contract("research").unwrap().name, "research.topic");
        let names: Vec<&str> = catalog
            .providers("research")
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(names, ["research.topic"]);
    }

    #[test]
    fn a_narrower_input_and_a_wider_output_are_compatible() {
        let tutor = spec(
            "tutor.research",
            json!({ "type": "object", "required": ["topic"],
                    "properties": { "topic": { "type": "string" }, "max_sources": { "type": "integer" } } }),
            {
                let mut out = research_output();
                out["properties"]["found"] = json!({ "type": "boolean" });
                out
            },
        );
        Catalog::builtin().check_capabilities(&tutor).unwrap();
    }

    #[test]
    fn incompatible_claims_are_refused_naming_the_field() {
        let input = json!({ "type": "object", "required": ["topic"],
                            "properties": { "topic": { "type": "string" } } });
        let cases = [
            (
                json!({ "type": "object", "required": ["topic", "depth"],
                        "properties": { "topic": { "type": "string" }, "depth": { "type": "integer" } } }),
                research_output(),
                "input.depth",
            ),
            (
                json!({ "type": "object", "required": ["topic"],
                        "properties": { "topic": { "type": "integer" } } }),
                research_output(),
                "input.topic",
            ),
            (
                input.clone(),
                {
                    let mut out = research_output();
                    out["properties"]["key_points"] = json!({ "type": "array" });
                    out
                },
                "output.key_points.items",
            ),
            (
                input.clone(),
                {
                    let mut out = research_output();
                    out["required"] = json!(["summary", "key_points"]);
                    out
                },
                "output.sources",
            ),
        ];
        for (input, output, field) in cases {
            let e = Catalog::builtin()
                .check_capabilities(&spec("tutor.research", input, output))
                .unwrap_err();
            assert_eq!(
                (e.contract.as_str(), e.field.as_str()),
                ("research.topic", field),
                "{e}"
            );
        }
    }
}
