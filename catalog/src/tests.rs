use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

#[test]
fn builtin_catalog_loads_with_every_operation_under_its_kind() {
    let catalog = Catalog::builtin();
    let names: Vec<&str> = catalog.operations().map(|op| op.name.as_str()).collect();
    for expected in [
        "test.echo",
        "test.sleep",
        "test.fail",
        "research.topic",
        "ai.generate",
        "ai.summarize",
        "ai.extract_tasks",
        "ai.identify_speakers",
        "ai.transcribe",
        "cards.retrieve",
        "cards.create",
        "cards.batch_create",
        "cards.get",
        "cards.update",
        "cards.delete",
        "cards.list",
        "cards.versions",
        "cards.onboard",
        "cards.register_type",
        "integration.notion.create_page",
        "integration.slack.post_message",
        "integration.clickup.create_task",
        "integration.clickup.update_status",
        "integration.webhook.post",
        "integration.markdown.write",
        "integration.status",
    ] {
        assert!(names.contains(&expected), "{expected} is declared");
    }
    assert_eq!(
        names.len(),
        26,
        "no undocumented extra operations: {names:?}"
    );
    for op in catalog.operations() {
        assert!(
            op.name.starts_with(&format!("{}.", op.kind)),
            "{} is under kind {}",
            op.name,
            op.kind
        );
        assert!(!op.description.is_empty(), "{} has a description", op.name);
        assert_eq!(op.input.ty, Type::Object, "{} input is an object", op.name);
        assert_eq!(
            op.output.ty,
            Type::Object,
            "{} output is an object",
            op.name
        );
    }
    assert_eq!(catalog.of_kind("cards").count(), 10);
}

#[test]
fn every_declared_field_is_documented() {
    fn walk(schema: &Schema, path: &str, missing: &mut Vec<String>) {
        for (name, property) in &schema.properties {
            let path = format!("{path}.{name}");
            if property.description.is_empty() {
                missing.push(path.clone());
            }
            walk(property, &path, missing);
        }
        if let Some(items) = &schema.items {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for op in Catalog::builtin().operations() {
        walk(&op.input, &format!("{}.input", op.name), &mut missing);
        walk(&op.output, &format!("{}.output", op.name), &mut missing);
    }
    assert_eq!(missing, Vec::<String>::new());
}

#[test]
fn builtin_schemas_validate_and_default_realistic_input() {
    let catalog = Catalog::builtin();
    let research = &catalog.get("research.topic").unwrap().input;
    let mut input = json!({"topic": "rust async"});
    research.apply_defaults(&mut input);
    assert_eq!(
        input,
        json!({"topic": "rust async", "difficulty": "intermediate", "max_sources": 5, "corpus": true, "web_search": true, "allow_unread": false})
    );
    assert_eq!(research.validate(&input), Ok(()));

    let retrieve = &catalog.get("cards.retrieve").unwrap().input;
    let errors = retrieve
        .validate(&json!({"card_ids": ["a", 3], "allow_partial": "yes"}))
        .unwrap_err();
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        vec![
            r#"allow_partial: expected boolean, got string "yes""#,
            "card_ids[1]: expected string, got integer 3",
        ]
    );
    let output = &catalog.get("ai.extract_tasks").unwrap().output;
    assert!(matches!(
        output.lookup(&["tasks", "0", "priority"]),
        Lookup::Declared(s) if s.enum_values.as_ref().is_some_and(|v| v.len() == 4)
    ));
}

#[test]
fn closest_suggests_plausible_typos_only() {
    let catalog = Catalog::builtin();
    assert_eq!(catalog.closest("research.topc"), Some("research.topic"));
    assert_eq!(catalog.closest("ai.summarise"), Some("ai.summarize"));
    assert_eq!(
        catalog.closest("integration.slack.post_mesage"),
        Some("integration.slack.post_message")
    );
    assert_eq!(catalog.closest("zzz"), None);
}

#[test]
fn bad_files_are_rejected_with_the_file_name() {
    let ok = "kind: x\noperations:\n  x.a: { description: d, input: {}, output: {} }\n";
    assert!(Catalog::from_yaml_files(&[("x.yaml", ok)]).is_ok());

    let err = Catalog::from_yaml_files(&[("x.yaml", ok), ("y.yaml", ok)]).unwrap_err();
    assert_eq!(
        err,
        Error::Duplicate {
            file: "y.yaml".into(),
            name: "x.a".into(),
            first: "x.yaml".into()
        }
    );

    let wrong_kind = "kind: x\noperations:\n  y.a: { description: d, input: {}, output: {} }\n";
    let err = Catalog::from_yaml_files(&[("x.yaml", wrong_kind)]).unwrap_err();
    assert!(
        matches!(err, Error::BadName { ref name, .. } if name == "y.a"),
        "{err}"
    );
    let no_op = "kind: x\noperations:\n  x.: { description: d, input: {}, output: {} }\n";
    assert!(matches!(
        Catalog::from_yaml_files(&[("x.yaml", no_op)]),
        Err(Error::BadName { .. })
    ));

    let typo = "kind: x\noperations:\n  x.a: { description: d, inptu: {}, output: {} }\n";
    let err = Catalog::from_yaml_files(&[("x.yaml", typo)]).unwrap_err();
    assert!(
        matches!(&err, Error::BadFile { file, reason } if file == "x.yaml" && reason.contains("inptu")),
        "{err}"
    );

    let bad_default = "kind: x\noperations:\n  x.a:\n    description: d\n    input: { type: object, properties: { n: { type: integer, default: two } } }\n    output: {}\n";
    let err = Catalog::from_yaml_files(&[("x.yaml", bad_default)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"x.yaml: x.a.input.properties.n.default: expected integer, got string "two""#
    );
}

/// Values shaped by a schema: mostly valid, with optional properties left out or `null`.
fn value_for(schema: &Schema, depth: u32) -> BoxedStrategy<Value> {
    if let Some(values) = &schema.enum_values {
        return proptest::sample::select(values.clone()).boxed();
    }
    match schema.ty {
        Type::String => "[a-z ]{0,12}".prop_map(Value::from).boxed(),
        Type::Integer => {
            let min = schema.minimum.unwrap_or(-1000.0) as i64;
            let max = schema.maximum.unwrap_or(1000.0) as i64;
            (min..=max).prop_map(Value::from).boxed()
        }
        Type::Number => {
            let min = schema.minimum.unwrap_or(-1000.0);
            let max = schema.maximum.unwrap_or(1000.0);
            (min..=max).prop_map(Value::from).boxed()
        }
        Type::Boolean => any::<bool>().prop_map(Value::from).boxed(),
        Type::Array => {
            let items = match &schema.items {
                Some(items) if depth < 4 => value_for(items, depth + 1),
                _ => Just(Value::Null).boxed(),
            };
            let min = schema.min_items.unwrap_or(0) as usize;
            let max = schema.max_items.unwrap_or(3).min(3).max(min as u64) as usize;
            proptest::collection::vec(items, min..=max)
                .prop_map(Value::Array)
                .boxed()
        }
        Type::Object => {
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema
                .properties
                .iter()
                .map(|(name, property)| {
                    let name = name.clone();
                    let value = if depth < 4 {
                        value_for(property, depth + 1)
                    } else {
                        Just(Value::Null).boxed()
                    };
                    if schema.is_required(&name) {
                        value.prop_map(move |v| Some((name.clone(), v))).boxed()
                    } else {
                        prop_oneof![
                            Just(None),
                            Just(Some((name.clone(), Value::Null))),
                            value.prop_map(move |v| Some((name.clone(), v))),
                        ]
                        .boxed()
                    }
                })
                .collect();
            fields
                .prop_map(|fields| {
                    Value::Object(fields.into_iter().flatten().collect::<Map<_, _>>())
                })
                .boxed()
        }
        Type::Any => prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,5}".prop_map(Value::from),
        ]
        .boxed(),
    }
}

fn every_schema() -> Vec<(String, Schema)> {
    Catalog::builtin()
        .operations()
        .flat_map(|op| {
            [
                (format!("{}.input", op.name), op.input.clone()),
                (format!("{}.output", op.name), op.output.clone()),
            ]
        })
        .collect()
}

proptest! {
    /// Defaults never turn an accepted value into a rejected one, and applying them twice
    /// changes nothing more.
    #[test]
    fn defaults_keep_valid_values_valid(
        (name, schema, value) in proptest::sample::select(every_schema())
            .prop_flat_map(|(name, schema)| {
                let values = value_for(&schema, 0);
                (Just(name), Just(schema), values)
            })
    ) {
        // Values the schema refuses are not this property's business; proptest counts them
        // and fails the test if too few cases are left, rather than passing on none.
        prop_assume!(schema.validate(&value).is_ok());
        let mut defaulted = value.clone();
        schema.apply_defaults(&mut defaulted);
        prop_assert_eq!(schema.validate(&defaulted), Ok(()), "{} {}", name, defaulted);
        let mut twice = defaulted.clone();
        schema.apply_defaults(&mut twice);
        prop_assert_eq!(twice, defaulted);
    }

    /// Validation reports one error per wrong field, each at that field's path.
    #[test]
    fn a_wrongly_typed_field_is_reported_at_its_path(
        field in "[a-z]{1,8}",
        value in prop_oneof![any::<i64>().prop_map(Value::from), any::<bool>().prop_map(Value::from)],
    ) {
        let schema = Schema::object([(field.clone(), Schema::of(Type::String))], &[]);
        let errors = schema.validate(&json!({ field.clone(): value })).unwrap_err();
        prop_assert_eq!(errors.len(), 1);
        prop_assert_eq!(&errors[0].path, &field);
    }
}
