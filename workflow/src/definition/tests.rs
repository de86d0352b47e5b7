use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_catalog::Catalog;

use super::*;

fn definition(source: &str) -> Definition {
    Definition::parse(source, Catalog::builtin(), &ValidateOptions::default())
        .unwrap_or_else(|p| panic!("{p}"))
}

fn shipped_definition(name: &str) -> Definition {
    let (_, source) = shipped().iter().find(|(n, _)| *n == name).expect("shipped");
    definition(source)
}

struct Fixture {
    input: Value,
    steps: Value,
    env: BTreeMap<String, String>,
}

impl Fixture {
    fn new(input: Value, steps: Value) -> Fixture {
        Fixture {
            input,
            steps,
            env: BTreeMap::new(),
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            input: &self.input,
            steps: &self.steps,
            item: None,
            signal: None,
            env: &self.env,
        }
    }
}

fn completed(output: Value) -> Value {
    json!({"status": "completed", "output": output, "error": null})
}

const ECHO: &str = r#"
name: echo
version: 1
input:
  topic: { type: string, required: true }
  n: { type: integer, default: 3 }
  tags: { type: array, items: { type: string }, default: [] }
steps:
  - id: a
    operation: test.echo
    input:
      whole: "{{ input }}"
      n: "{{ input.n }}"
      doubled: "{{ input.n * 2 }}"
      half: "{{ input.n / 2 }}"
      text: "n is {{ input.n }}"
      list: "{{ input.tags + ['x'] }}"
      missing: "{{ input.nope_is_not_declared_but_checked | default('d') }}"
      literal: { a: [1, 2.5, true, null, "{not a template}"] }
      mixed: ["{{ input.n }}", 7]
  - id: b
    operation: test.echo
    needs: [a]
    when: "{{ steps.a.output.n > 2 }}"
    input:
      from_a: "{{ steps.a.output.n }}"
      skipped: "{{ steps.a.output.nothing.deeper | default('n/a') }}"
"#;

#[test]
fn prepare_input_applies_defaults_and_reports_paths() {
    let def = definition(&ECHO.replace("input.nope_is_not_declared_but_checked", "input.topic"));
    assert_eq!(
        def.prepare_input(json!({"topic": "rust"})).unwrap(),
        json!({"topic": "rust", "n": 3, "tags": []})
    );
    let err = def
        .prepare_input(json!({"n": "x", "extra": 1, "tags": [1]}))
        .unwrap_err();
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "input.topic: missing required field",
            "input.extra: unknown field; expected one of: n, tags, topic",
            "input.n: expected integer, got string \"x\"",
            "input.tags[0]: expected string, got integer 1",
        ]
    );
    assert_eq!(
        def.prepare_input(json!([1])).unwrap_err().to_string(),
        "input: expected object, got array"
    );
}

#[test]
fn expressions_keep_their_json_type_and_text_renders_to_strings() {
    let def = definition(&ECHO.replace("input.nope_is_not_declared_but_checked", "input.topic"));
    let input = def
        .prepare_input(json!({"topic": "rust", "tags": ["a"]}))
        .unwrap();
    let fixture = Fixture::new(input.clone(), json!({}));
    let rendered = def.render_step_input(0, &fixture.scope()).unwrap();
    assert_eq!(
        rendered,
        json!({
            "whole": input,
            "n": 3,
            "doubled": 6,
            "half": 1.5,
            "text": "n is 3",
            "list": ["a", "x"],
            "missing": "rust",
            "literal": {"a": [1, 2.5, true, null, "{not a template}"]},
            "mixed": [3, 7],
        })
    );
    assert!(
        rendered["n"].is_u64() || rendered["n"].is_i64(),
        "integers stay integers"
    );
}

#[test]
fn undefined_values_chain_and_default_works() {
    let def = definition(&ECHO.replace("input.nope_is_not_declared_but_checked", "input.topic"));
    let fixture = Fixture::new(
        json!({"topic": "t", "n": 3}),
        json!({"a": {"status": "skipped", "output": null, "error": null}}),
    );
    let rendered = def.render_step_input(1, &fixture.scope()).unwrap();
    assert_eq!(rendered, json!({"from_a": null, "skipped": "n/a"}));
}

#[test]
fn when_uses_jinja_truthiness() {
    let def = definition(&ECHO.replace("input.nope_is_not_declared_but_checked", "input.topic"));
    let run = |n: i64| {
        let fixture = Fixture::new(json!({}), json!({"a": completed(json!({"n": n}))}));
        def.eval_when(1, &fixture.scope()).unwrap()
    };
    assert!(run(3));
    assert!(!run(2));
    let fixture = Fixture::new(json!({}), json!({}));
    assert!(def.eval_when(0, &fixture.scope()).unwrap(), "no when: runs");
}

#[test]
fn for_each_yields_lists_and_items_are_in_scope() {
    let def = definition(
        r##"
name: fan
version: 1
input:
  things: { type: any }
steps:
  - id: each
    operation: test.echo
    for_each: input.things
    input: { value: "{{ item }}", at: "{{ index }}", label: "#{{ index }} {{ item.name | default(item) }}" }
  - id: literal
    operation: test.echo
    for_each: [1, "{{ input.things | length }}"]
    input: { v: "{{ item }}" }
"##,
    );
    let fixture = Fixture::new(json!({"things": [{"name": "a"}, 2]}), json!({}));
    let items = def.eval_for_each(0, &fixture.scope()).unwrap().unwrap();
    assert_eq!(items, vec![json!({"name": "a"}), json!(2)]);
    let rendered: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let scope = Scope {
                item: Some((item, i)),
                ..fixture.scope()
            };
            def.render_step_input(0, &scope).unwrap()
        })
        .collect();
    assert_eq!(
        rendered,
        vec![
            json!({"value": {"name": "a"}, "at": 0, "label": "#0 a"}),
            json!({"value": 2, "at": 1, "label": "#1 2"}),
        ]
    );
    assert_eq!(
        def.eval_for_each(1, &fixture.scope()).unwrap(),
        Some(vec![json!(1), json!(2)])
    );

    let null = Fixture::new(json!({"things": null}), json!({}));
    assert_eq!(def.eval_for_each(0, &null.scope()).unwrap(), Some(vec![]));
    let text = Fixture::new(json!({"things": "abc"}), json!({}));
    assert_eq!(
        def.eval_for_each(0, &text.scope()).unwrap_err().to_string(),
        "steps[0].for_each: expected a list, got string \"abc\""
    );
    let many = Fixture::new(
        json!({"things": vec![0; MAX_FOR_EACH_ITEMS + 1]}),
        json!({}),
    );
    assert!(def.eval_for_each(0, &many.scope()).is_err());
    let err = def.eval_for_each(1, &null.scope()).unwrap_err();
    assert_eq!(err.path, "steps[1].for_each[1]");
    assert_eq!(
        err.message,
        "invalid operation: cannot calculate length of value of type none"
    );
}

#[test]
fn keys_with_dots_do_not_collide_with_nested_keys() {
    let def = definition(
        "name: d\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: { \"x.y\": \"{{ 1 }}\", x: { y: \"{{ 2 }}\" } }\n",
    );
    let fixture = Fixture::new(json!({}), json!({}));
    assert_eq!(
        def.render_step_input(0, &fixture.scope()).unwrap(),
        json!({"x.y": 1, "x": {"y": 2}})
    );
}

#[test]
fn render_errors_name_the_template() {
    let def = definition(
        "name: e\nversion: 1\ninput:\n  n: { type: any }\nsteps:\n  - id: a\n    operation: test.echo\n    input: { x: \"{{ 10 / input.n }}\" }\n",
    );
    let fixture = Fixture::new(json!({"n": 0}), json!({}));
    let err = def.render_step_input(0, &fixture.scope()).unwrap_err();
    assert_eq!(err.path, "steps[0].input.x");
    assert_eq!(err.message, "invalid operation: unable to calculate 10 / 0");
}

#[test]
fn runaway_templates_run_out_of_fuel() {
    let def = definition(
        "name: e\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: { x: \"{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\" }\n",
    );
    let fixture = Fixture::new(json!({}), json!({}));
    let err = def.render_step_input(0, &fixture.scope()).unwrap_err();
    assert!(err.message.contains("took too long"), "{err}");
}

#[test]
fn output_defaults_to_the_completed_steps_outputs() {
    let def = definition(&ECHO.replace("input.nope_is_not_declared_but_checked", "input.topic"));
    let fixture = Fixture::new(
        json!({}),
        json!({
            "a": completed(json!({"n": 1})),
            "b": {"status": "skipped", "output": null, "error": null},
        }),
    );
    assert_eq!(
        def.render_output(&fixture.scope()).unwrap(),
        json!({"a": {"n": 1}})
    );
}

#[test]
fn env_and_signal_are_in_scope_where_allowed() {
    let source = "name: s\nversion: 1\nsteps:\n  - id: gate\n    operation: test.echo\n    wait_for_signal: { name: approval, sla: 1h }\n    input: { by: \"{{ signal.by }}\", region: \"{{ env.REGION }}\" }\n";
    let options = ValidateOptions {
        env_allow: vec!["REGION".into()],
        ..ValidateOptions::default()
    };
    let def = Definition::parse(source, Catalog::builtin(), &options).unwrap();
    assert_eq!(
        def.steps[0].wait_for_signal,
        Some(WaitForSignal {
            name: "approval".into(),
            sla: Some(Duration::from_secs(3600))
        })
    );
    let mut fixture = Fixture::new(json!({}), json!({}));
    fixture.env.insert("REGION".into(), "eu".into());
    let signal = json!({"by": "ana"});
    let scope = Scope {
        signal: Some(&signal),
        ..fixture.scope()
    };
    assert_eq!(
        def.render_step_input(0, &scope).unwrap(),
        json!({"by": "ana", "region": "eu"})
    );
}

#[test]
fn steps_are_typed_as_declared() {
    let def = definition(
        "name: s\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    retry: { max_attempts: 3, initial_delay: 1s, max_delay: 1m, multiplier: 2 }\n    timeout: 30s\n    on_error: continue\n    when: true\n",
    );
    let step = &def.steps[0];
    assert_eq!(
        step.retry,
        Some(Retry {
            max_attempts: Some(3),
            initial_delay: Some(Duration::from_secs(1)),
            max_delay: Some(Duration::from_secs(60)),
            multiplier: Some(2.0),
        })
    );
    assert_eq!(step.timeout, Some(Duration::from_secs(30)));
    assert_eq!(step.on_error, OnError::Continue);
    assert!(step.has_when && !step.has_for_each);
}

#[test]
fn a_workflow_timeout_is_read_and_must_be_positive() {
    let def = definition(
        "name: t\nversion: 1\ntimeout: 90s\nsteps:\n  - { id: a, operation: test.echo }\n",
    );
    assert_eq!(def.timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        definition(&def.source.replace("timeout: 90s\n", "")).timeout,
        None
    );
    let problems = Definition::parse(
        "name: t\nversion: 1\ntimeout: 0s\nsteps:\n  - { id: a, operation: test.echo }\n",
        Catalog::builtin(),
        &ValidateOptions::default(),
    )
    .expect_err("a zero timeout is refused");
    assert!(
        problems
            .to_string()
            .contains("timeout: must be greater than zero"),
        "{problems}"
    );
}

fn research_output() -> Value {
    json!({
        "summary": "Rust is fast.",
        "key_points": ["Zero-cost abstractions", "No GC"],
        "sources": [
            {"title": "The Book", "location": "https://doc.rust-lang.org/book/", "snippet": "Rust is…", "score": 1.5},
            {"title": "Notes", "location": "corpus/notes.md", "snippet": "GC-free", "score": 0.5},
        ],
    })
}

#[test]
fn research_to_docs_writes_a_markdown_document() {
    let def = shipped_definition("research_to_docs");
    let input = def.prepare_input(json!({"topic": "Rust"})).unwrap();
    assert_eq!(input["destination"], "markdown");
    let fixture = Fixture::new(input, json!({"research": completed(research_output())}));
    let write = def.step_index("write_markdown").unwrap();
    let notion = def.step_index("write_notion").unwrap();
    assert!(def.eval_when(write, &fixture.scope()).unwrap());
    assert!(!def.eval_when(notion, &fixture.scope()).unwrap());
    let rendered = def.render_step_input(write, &fixture.scope()).unwrap();
    assert_eq!(
        rendered["markdown"],
        "Rust is fast.\n\n## Key points\n\n- Zero-cost abstractions\n- No GC\n\n## Sources\n\n\
         1. [The Book](https://doc.rust-lang.org/book/) — Rust is…\n\
         2. [Notes](corpus/notes.md) — GC-free\n"
    );
    assert_eq!(rendered["title"], "Rust");
    // the Notion page gets the same body
    let notion_input = def.render_step_input(notion, &fixture.scope()).unwrap();
    assert_eq!(notion_input["markdown"], rendered["markdown"]);
}

#[test]
fn meeting_to_tasks_maps_priorities_and_lists_created_tasks() {
    let def = shipped_definition("meeting_to_tasks");
    let input = def
        .prepare_input(json!({"transcript": "Ana: ship it", "clickup_list_id": "L1"}))
        .unwrap();
    let tasks = json!({"tasks": [
        {"title": "Ship it", "assignee": "Ana", "priority": "urgent", "source_quote": "ship it"},
        {"title": "Write notes", "priority": "low", "source_quote": "notes", "due": "2025-03-21"},
    ]});
    let steps = json!({
        "transcribe": completed(json!({"transcript": "Ana: ship it", "segments": [], "duration_seconds": 0})),
        "speakers": completed(json!({"speakers": [{"name": "Ana", "turns": 1, "talk_time_seconds": 0}], "segments": [], "transcript": "Ana: ship it"})),
        "summarize": completed(json!({"summary": "We ship.", "key_points": []})),
        "extract": completed(tasks.clone()),
        "create_tasks": {"status": "failed", "error": "1 of 2 items failed", "output": [{"task_id": "t1", "url": "https://app.clickup.com/t/t1"}, null]},
        "notes": completed(json!({"path": "meetings/Meeting.md", "bytes": 200})),
    });
    let fixture = Fixture::new(input, steps);
    let create = def.step_index("create_tasks").unwrap();
    let items = def
        .eval_for_each(create, &fixture.scope())
        .unwrap()
        .unwrap();
    assert_eq!(items.len(), 2);
    let scope = Scope {
        item: Some((&items[0], 0)),
        ..fixture.scope()
    };
    let first = def.render_step_input(create, &scope).unwrap();
    assert_eq!(first["priority"], 1);
    assert_eq!(first["name"], "Ship it");
    assert_eq!(first["due_date"], Value::Null);
    assert_eq!(
        first["description"],
        "ship it\n\nAssignee: Ana\nFrom: Meeting"
    );
    let post = def
        .render_step_input(def.step_index("post_summary").unwrap(), &fixture.scope())
        .unwrap();
    assert_eq!(
        post["markdown"],
        "**Meeting**\n\nWe ship.\n\n**Action items**\n\
         • <https://app.clickup.com/t/t1|Ship it> — Ana\n\
         • Write notes (not created)\n"
    );
    let notes = def
        .render_step_input(def.step_index("notes").unwrap(), &fixture.scope())
        .unwrap();
    assert_eq!(notes["filename"], "Meeting");
    assert_eq!(
        notes["markdown"],
        "We ship.\n\n## Key points\n\n## Action items\n\
         - [ ] **Ship it** — Ana (urgent) · [ClickUp](https://app.clickup.com/t/t1)\n  > ship it\n\
         - [ ] **Write notes**, due 2025-03-21 (low)\n  > notes\n\n\
         ## Speakers\n- Ana: 1 turns, 0 s\n"
    );
    assert_eq!(
        def.render_output(&fixture.scope()).unwrap(),
        json!({"summary": "We ship.", "key_points": [], "speakers": ["Ana"],
               "speaker_stats": [{"name": "Ana", "turns": 1, "talk_time_seconds": 0}],
               "tasks": tasks["tasks"],
               "created_tasks": [{"task_id": "t1", "url": "https://app.clickup.com/t/t1"}, null],
               "notes": "meetings/Meeting.md", "task_ids": ["t1"]})
    );
}

#[test]
fn an_output_so_far_renders_each_field_from_the_steps_finished_so_far() {
    let def = shipped_definition("meeting_to_tasks");
    let input = def
        .prepare_input(json!({"transcript": "Ana: ship it"}))
        .unwrap();
    let steps = json!({
        "transcribe": completed(json!({"transcript": "Ana: ship it", "segments": []})),
        "speakers": completed(json!({"speakers": [{"name": "Ana", "turns": 1, "talk_time_seconds": 4}], "transcript": "Ana: ship it"})),
        "summarize": completed(json!({"summary": "We ship.", "key_points": ["ship"]})),
        "extract": {"status": "running", "output": null, "error": null},
    });
    let so_far = def.render_output_so_far(&Fixture::new(input, steps).scope());
    assert_eq!(
        so_far,
        json!({"summary": "We ship.", "key_points": ["ship"], "speakers": ["Ana"],
               "speaker_stats": [{"name": "Ana", "turns": 1, "talk_time_seconds": 4}],
               "tasks": null, "created_tasks": null, "notes": null, "task_ids": []})
    );
}

#[test]
fn linkedin_post_passes_cards_as_context() {
    let def = shipped_definition("linkedin_post");
    let input = def
        .prepare_input(json!({"card_ids": ["c1", "c2"]}))
        .unwrap();
    let cards =
        json!([{"id": "c1", "type": "voice", "title": "Voice", "content": "Plain.", "version": 1}]);
    let fixture = Fixture::new(
        input,
        json!({"cards": completed(json!({"cards": cards, "missing_ids": ["c2"], "partial_result": true}))}),
    );
    assert_eq!(
        def.render_step_input(0, &fixture.scope()).unwrap(),
        json!({"card_ids": ["c1", "c2"], "allow_partial": false, "workflow": "linkedin_post"})
    );
    assert_eq!(
        def.render_step_input(1, &fixture.scope()).unwrap(),
        json!({"template": "linkedin_post", "context": {"cards": cards, "additional_context": ""}})
    );
}

/// JSON values without template syntax, integers and floats included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z {}%#]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_input_definition() -> Definition {
    definition(
        "name: p\nversion: 1\ninput:\n  v: { type: any }\nsteps:\n  - id: a\n    operation: test.echo\n    input: { whole: \"{{ input.v }}\", text: \"{{ input.v | tojson }}\" }\n",
    )
}

proptest! {
    /// Whatever JSON flows through `{{ expression }}` comes out unchanged, integers as
    /// integers; `tojson` renders text that parses back to the same value.
    #[test]
    fn values_round_trip_through_expressions(value in json_value()) {
        let def = any_input_definition();
        let fixture = Fixture::new(json!({"v": value}), json!({}));
        let rendered = def.render_step_input(0, &fixture.scope()).unwrap();
        prop_assert_eq!(&rendered["whole"], &value);
        let text = rendered["text"].as_str().unwrap();
        prop_assert_eq!(serde_json::from_str::<Value>(text).unwrap(), value);
    }

    /// Strings without template syntax are kept exactly, wherever they are.
    #[test]
    fn literals_are_kept_as_written(value in json_value()) {
        let text = value.to_string();
        prop_assume!(!["{{", "{%", "{#"].iter().any(|t| text.contains(t)));
        let source = format!(
            "name: p\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: {}\n",
            serde_json::to_string(&json!({"v": value})).unwrap()
        );
        let def = definition(&source);
        let fixture = Fixture::new(json!({}), json!({}));
        let rendered = def.render_step_input(0, &fixture.scope()).unwrap();
        prop_assert_eq!(&rendered["v"], &value);
    }
}

/// A step `a` whose input is `{x: <template>}`, rendered with `input`.
fn render_x(template: &str, input: Value) -> Result<Value, RenderError> {
    let source = format!(
        "name: r\nversion: 1\ninput:\n  s: {{ type: any }}\n  n: {{ type: any }}\nsteps:\n  - id: a\n    operation: test.echo\n    input: {{ x: {template:?} }}\n"
    );
    let def = definition(&source);
    let fixture = Fixture::new(input, json!({}));
    def.render_step_input(0, &fixture.scope())
        .map(|v| v["x"].clone())
}

#[test]
fn checked_operations_keep_minijinja_semantics() {
    // The oracle is minijinja itself, rendering the same template without the checks.
    let mut plain = minijinja::Environment::new();
    plain.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    plain.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let input = json!({"s": "abc", "n": 1});
    for template in [
        "{{ 1 + 2 }}",
        "{{ 2 * 3 }}",
        "{{ 'ab' * 3 }}",
        "{{ 'a' ~ 1 ~ none ~ [1, 'x'] }}",
        "{{ [1] + [2, 3] }}",
        "{{ 'x' + 'y' }}",
        "{{ 2 ** 10 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -input.n }}",
        "{{ input.s | replace('b', 'BB') }}",
        "{{ ['a', 'b'] | join('-') }} {{ [{'n': 1}, {'n': 2}] | join(',', attribute='n') }}",
        "{{ 'a\nb' | indent(2) }}",
        "{{ '%s=%d' | format('n', 4) }}",
        "{{ {'k': 'v<'} | tojson }} {{ [1] | string }} {{ 'a<b' | escape }} {{ [1] | pprint }}",
        "{% for i in range(3) %}{% if i > 0 %},{% endif %}{{ i * 2 }}{% else %}none{% endfor %}",
        "{% for i in [] %}x{% else %}empty{% endfor %}",
        "{% if input.n and not input.s %}yes{% elif input.s %}s{% else %}no{% endif %}",
        "{% set ns = namespace(t='') %}{% for c in 'abc' %}{% set ns.t = ns.t ~ c | upper %}{% endfor %}{{ ns.t }}",
        "{% set c %}<{{ input.s }}>{% endset %}{{ c }}{{ c | length }}",
        "{{ input.s if input.n else 'no' }} {{ none or 'default' }}",
        "{% for x in [3, 1, 2] | sort %}{{ loop.index }}:{{ x }}{% if not loop.last %} {% endif %}{% endfor %}",
    ] {
        let want = plain
            .render_str(
                template,
                minijinja::context! { input => minijinja::Value::from(minijinja::value::Serde(&input)) },
            )
            .unwrap_or_else(|e| panic!("{template}: {e}"));
        // Text around the template keeps it a text template (a lone expression keeps its
        // JSON type instead).
        assert_eq!(
            render_x(&format!("v:{template}"), input.clone()).unwrap(),
            json!(format!("v:{want}")),
            "{template}"
        );
    }
}

#[test]
fn growth_past_the_limits_is_refused_before_it_happens() {
    let long = json!({"s": "x".repeat(600_000), "n": 3_000_000});
    let lines = json!({"s": "x\n".repeat(300_000)});
    for (template, input) in [
        // Doubling with `~` or `+`, repeating with `*`, and multiplying filters.
        (
            "{% set a = input.s %}{% set a = a ~ a %}{{ a | length }}",
            &long,
        ),
        ("{{ (input.s + input.s) | length }}", &long),
        ("{{ ('x' * input.n) | length }}", &long),
        ("{{ ([1, 2] * input.n) | length }}", &long),
        ("{{ input.s | replace('x', 'yyy') | length }}", &long),
        ("{{ [input.s, input.s] | join | length }}", &long),
        ("{{ input.s | indent(4) | length }}", &lines),
        ("{{ ('%' ~ input.n ~ 's') | format('x') | length }}", &long),
        ("{{ [input.s, input.s] | tojson | length }}", &long),
        ("{{ [input.s, input.s] | string | length }}", &long),
        // Writing the same value again and again, into the output or a capture.
        ("{% for i in range(3) %}{{ input.s }}{% endfor %}", &long),
        (
            "{% set c %}{{ input.s }}{{ input.s }}{% endset %}{{ c | length }}",
            &long,
        ),
    ] {
        match render_x(template, input.clone()) {
            Ok(v) => panic!("{template}: rendered {} bytes", v.to_string().len()),
            Err(err) => {
                assert!(
                    err.message.contains("over the render limit"),
                    "{template}: {}",
                    &err.message[..err.message.len().min(300)]
                );
                assert_eq!(err.path, "steps[0].input.x", "{template}");
            }
        }
    }
}

#[test]
fn a_definition_that_grows_on_its_own_is_refused_at_validation() {
    let doubling = format!(
        "{{% set a = 'x' * 1024 %}}{}{{{{ a }}}}",
        "{% set a = a ~ a %}".repeat(40)
    );
    let source = format!(
        "name: g\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: {{ x: {doubling:?} }}\n"
    );
    let Problems(found) =
        Definition::parse(&source, Catalog::builtin(), &ValidateOptions::default()).unwrap_err();
    assert_eq!(found[0].path, "steps[0].input.x");
    assert!(
        found[0].message.contains("over the render limit"),
        "{found:?}"
    );
}

#[test]
fn a_step_input_over_its_limit_fails_naming_the_step() {
    let source = "name: l\nversion: 1\ninput:\n  s: { type: any }\nsteps:\n  - id: a\n    operation: test.echo\n    input: { x: \"{{ input.s }}\", y: \"{{ input.s }}\" }\n";
    let options = ValidateOptions {
        limits: RenderLimits {
            step_input_bytes: 1500,
            ..RenderLimits::default()
        },
        ..ValidateOptions::default()
    };
    let def = Definition::parse(source, Catalog::builtin(), &options).unwrap();
    let fixture = Fixture::new(json!({"s": "z".repeat(1000)}), json!({}));
    let err = def.render_step_input(0, &fixture.scope()).unwrap_err();
    assert_eq!(err.path, "steps[0].input");
    assert!(err.message.contains("1500 bytes"), "{err}");
}
