//! Registration checks of workflow definitions: each rejected definition names the path, the
//! reason and, where it can, the line.

use switchyard_catalog::Catalog;
use switchyard_workflow::definition::{Definition, Problem, Problems, ValidateOptions};

fn parse(source: &str) -> Result<Definition, Problems> {
    Definition::parse(source, Catalog::builtin(), &ValidateOptions::default())
}

fn problems(source: &str) -> Vec<Problem> {
    match parse(source) {
        Ok(_) => panic!("expected problems, the definition was accepted:\n{source}"),
        Err(Problems(problems)) => problems,
    }
}

/// The one problem of `source`, as "path: message".
fn only(source: &str) -> String {
    let found = problems(source);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    format!("{}: {}", found[0].path, found[0].message)
}

/// A valid workflow with `steps` spliced in (indented two spaces, as list items).
fn with_steps(steps: &str) -> String {
    format!(
        "name: t\nversion: 1\ninput:\n  topic: {{ type: string, required: true }}\n  n: {{ type: integer, default: 2 }}\nsteps:\n{steps}"
    )
}

#[test]
fn a_valid_definition_is_accepted() {
    let def = parse(&with_steps(
        "  - id: research\n    operation: research.topic\n    input: { topic: \"{{ input.topic }}\" }\n  - id: post\n    operation: integration.slack.post_message\n    needs: [research]\n    input: { markdown: \"{{ steps.research.output.summary }}\" }\n",
    ))
    .expect("valid");
    assert_eq!(def.name, "t");
    assert_eq!(def.steps.len(), 2);
    assert_eq!(def.step_index("post"), Some(1));
    assert_eq!(
        def.step("post").map(|s| s.needs.clone()),
        Some(vec!["research".to_string()])
    );
}

#[test]
fn yaml_syntax_errors_give_the_line() {
    let found = problems("name: t\nversion: 1\nsteps:\n  - id: a\n    needs: [b\n  - id: b\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "");
    assert_eq!(found[0].line, Some(6));
    assert!(
        found[0]
            .message
            .starts_with("invalid YAML: did not find expected ',' or ']'"),
        "{}",
        found[0].message
    );
}

#[test]
fn unknown_keys_are_named_with_their_path_line_and_a_suggestion() {
    let found = problems(&with_steps("  - id: a\n    opration: test.echo\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "steps[0].opration");
    assert_eq!(found[0].line, Some(8));
    assert_eq!(
        found[0].message,
        "unknown key (did you mean \"operation\"?); expected one of: id, operation, capability, prefer, input, needs, when, for_each, retry, timeout, on_error, wait_for_signal, sleep, sleep_until, rate_limit"
    );
    assert_eq!(
        only("name: t\nversion: 1\nsteps: [{ id: a, operation: test.echo }]\nouptut: {}\n"),
        "ouptut: unknown key (did you mean \"output\"?); expected one of: name, version, description, input, steps, output, timeout, schedules, triggers, concurrency, rate_limit"
    );
}

#[test]
fn every_structural_problem_is_reported_not_only_the_first() {
    let found = problems(
        "name: t\nversion: 1\ninput:\n  topic: { type: strin }\nsteps:\n  - id: a\n    operation: test.echo\n    retries: 3\n  - id: b\n    operation: test.echo\n    timeout: 3 parsecs\n  - operation: test.echo\n",
    );
    let got: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "input.topic.type: unknown value \"strin\" (did you mean \"string\"?); expected one of: string, integer, number, boolean, array, object, any (line 4)",
            "steps[0].retries: unknown key (did you mean \"retry\"?); expected one of: id, operation, capability, prefer, input, needs, when, for_each, retry, timeout, on_error, wait_for_signal, sleep, sleep_until, rate_limit (line 8)",
            "steps[1].timeout: invalid value: string \"3 parsecs\", expected a duration (line 11)",
            "steps[2].id: missing required key (line 12)",
        ]
    );
}

#[test]
fn names_and_ids_must_be_tokens() {
    assert_eq!(
        only("name: my.flow\nversion: 1\nsteps: [{ id: a, operation: test.echo }]\n"),
        "name: not a valid workflow name: contains '.'; allowed are letters, digits, '-' and '_'"
    );
    assert_eq!(
        only(&with_steps("  - id: a b\n    operation: test.echo\n")),
        "steps[0].id: not a valid step id: contains ' '; allowed are letters, digits, '-' and '_'"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: fetch-data\n    operation: test.echo\n"
        )),
        "steps[0].id: step id \"fetch-data\" must start with a letter or '_' and contain only letters, digits and '_', so that templates can read it as steps.fetch-data"
    );
    assert_eq!(
        only("name: t\nversion: 0\nsteps: [{ id: a, operation: test.echo }]\n"),
        "version: must be at least 1"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    wait_for_signal: { name: \"ok?\" }\n"
        )),
        "steps[0].wait_for_signal.name: not a valid signal name: contains '?'; allowed are letters, digits, '-' and '_'"
    );
}

#[test]
fn duplicate_step_ids_are_rejected() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n  - id: a\n    operation: test.echo\n"
        )),
        "steps[1].id: duplicate step id \"a\"; steps[0] has it too"
    );
}

#[test]
fn unknown_operations_suggest_the_closest_one() {
    let found = problems(&with_steps(
        "  - id: a\n    operation: research.topc\n    input: { topic: x }\n",
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].to_string(),
        "steps[0].operation: unknown operation \"research.topc\" (did you mean \"research.topic\"?) (line 8)"
    );
}

#[test]
fn a_step_needs_an_operation_or_a_signal() {
    assert_eq!(
        only(&with_steps("  - id: a\n    needs: []\n")),
        "steps[0]: a step needs an operation, wait_for_signal to wait for a signal, or sleep (or sleep_until) to wait for a time"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    wait_for_signal: { name: approval }\n    input: { x: 1 }\n"
        )),
        "steps[0].input: only a step with an operation takes input; this step only waits for a signal"
    );
    parse(&with_steps(
        "  - id: approval\n    wait_for_signal: { name: approval, sla: 1h }\n",
    ))
    .expect("a signal-only step is fine");
}

#[test]
fn needs_must_name_existing_steps() {
    let found = problems(&with_steps(
        "  - id: research\n    operation: test.echo\n  - id: post\n    operation: test.echo\n    needs: [resarch]\n",
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].to_string(),
        "steps[1].needs[0]: needs step \"resarch\", which does not exist (did you mean \"research\"?) (line 11)"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    needs: [a]\n"
        )),
        "steps[0].needs[0]: a step cannot need itself"
    );
}

#[test]
fn cycles_are_reported_with_their_steps_in_order() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    needs: [c]\n  - id: b\n    operation: test.echo\n    needs: [a]\n  - id: c\n    operation: test.echo\n    needs: [b]\n"
        )),
        "steps[1].needs[0]: needs form a cycle: a → c → b → a"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    needs: [b]\n  - id: b\n    operation: test.echo\n    needs: [a]\n"
        )),
        "steps[1].needs[0]: needs form a cycle: a → b → a"
    );
}

#[test]
fn template_syntax_errors_are_reported_where_the_template_is() {
    let found = problems(&with_steps(
        "  - id: a\n    operation: test.echo\n    input:\n      x: \"{{ input.topic \"\n      y: \"{% for %}\"\n",
    ));
    let got: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "steps[0].input.x: template syntax error: unexpected end of input, expected end of variable block (line 10)",
            "steps[0].input.y: template syntax error: unexpected end of block, expected in (line 11)",
        ]
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ input.topic | shout }}\" }\n"
        )),
        "steps[0].input.x: unknown filter: filter shout is unknown"
    );
}

#[test]
fn a_template_may_only_read_upstream_steps() {
    let steps = "  - id: a\n    operation: test.echo\n  - id: b\n    operation: test.echo\n    input: { x: \"{{ steps.c.output }}\" }\n  - id: c\n    operation: test.echo\n    needs: [a]\n    input: { x: \"{{ steps.c.output }}\", y: \"{{ steps.a.output.anything }}\" }\n  - id: d\n    operation: test.echo\n    needs: [c]\n    input: { x: \"{{ steps.a.status }}\" }\n";
    let got: Vec<String> = problems(&with_steps(steps))
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        got,
        vec![
            "steps[1].input.x: refers to step \"c\", which is not upstream of step \"b\"; add \"c\" to its needs (directly or through a step it needs)",
            "steps[2].input.x: refers to its own step \"c\"; a step can only read the results of the steps it needs",
        ]
    );
}

#[test]
fn a_step_result_has_only_output_status_and_error() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n  - id: b\n    operation: test.echo\n    needs: [a]\n    input: { x: \"{{ steps.a.outptu }}\" }\n"
        )),
        "steps[1].input.x: refers to steps.a.outptu; a step's result has only output, status and error"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n  - id: b\n    operation: test.echo\n    needs: [a]\n    input: { x: \"{{ steps.nope.output }}\" }\n"
        )),
        "steps[1].input.x: refers to step \"nope\", which does not exist"
    );
}

#[test]
fn output_fields_must_be_declared_by_the_operation() {
    let steps = "  - id: research\n    operation: research.topic\n    input: { topic: x }\n  - id: post\n    operation: test.echo\n    needs: [research]\n    input:\n      a: \"{{ steps.research.output.summry }}\"\n      b: \"{{ steps.research.output.summary.text }}\"\n      c: \"{{ steps.research.output.sources.title }}\"\n      ok: \"{{ steps.research.output.sources[0].title }} {{ steps.research.output.key_points | join(', ') }}\"\n";
    let got: Vec<String> = problems(&with_steps(steps))
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        got,
        vec![
            "steps[1].input.a: refers to steps.research.output.summry, but steps.research.output (research.topic) has no field \"summry\" (did you mean \"summary\"?); declared: found, key_points, skipped, sources, summary",
            "steps[1].input.b: refers to steps.research.output.summary.text, but steps.research.output.summary is a string",
            "steps[1].input.c: refers to steps.research.output.sources.title, but steps.research.output.sources is a list; loop over it, index it or use a filter such as first",
        ]
    );
}

#[test]
fn open_outputs_and_signal_payloads_allow_any_field() {
    parse(&with_steps(
        "  - id: approval\n    wait_for_signal: { name: approval }\n  - id: echo\n    operation: test.echo\n    needs: [approval]\n    input: { who: \"{{ steps.approval.output.approved_by }}\" }\n  - id: after\n    operation: test.echo\n    needs: [echo]\n    input: { x: \"{{ steps.echo.output.anything.at.all }}\" }\n",
    ))
    .expect("open schemas allow anything");
}

#[test]
fn for_each_outputs_are_lists_and_items_are_checked_against_the_list_schema() {
    let steps = "  - id: extract\n    operation: ai.extract_tasks\n    input: { text: notes }\n  - id: create\n    operation: integration.clickup.create_task\n    needs: [extract]\n    for_each: \"{{ steps.extract.output.tasks }}\"\n    input:\n      list_id: l\n      name: \"{{ item.titel }}\"\n      description: \"{{ index }}: {{ item.source_quote }}\"\n  - id: after\n    operation: test.echo\n    needs: [create]\n    input:\n      bad: \"{{ steps.create.output.task_id }}\"\n      good: \"{{ steps.create.output | map(attribute='task_id') | list }}\"\n";
    let got: Vec<String> = problems(&with_steps(steps))
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        got,
        vec![
            "steps[1].input.name: refers to item.titel, but item has no field \"titel\" (did you mean \"title\"?); declared: assignee, due, priority, source_quote, title",
            "steps[2].input.bad: refers to steps.create.output.task_id, but steps.create.output (a list of integration.clickup.create_task outputs, one per item) is a list; loop over it, index it or use a filter such as first",
        ]
    );
    assert_eq!(
        only(&with_steps(
            "  - id: r\n    operation: research.topic\n    input: { topic: x }\n  - id: each\n    operation: test.echo\n    needs: [r]\n    for_each: steps.r.output.summary\n"
        )),
        "steps[1].for_each: for_each needs a list, but steps.r.output.summary is a string"
    );
}

#[test]
fn input_references_must_be_declared() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ input.topc }}\" }\n"
        )),
        "steps[0].input.x: refers to input.topc, but input has no field \"topc\" (did you mean \"topic\"?); declared: n, topic"
    );
}

#[test]
fn item_and_index_exist_only_in_for_each_steps() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ item }}\" }\n"
        )),
        "steps[0].input.x: refers to item, which is only defined in the input of a step with for_each"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    for_each: [1, 2]\n    when: \"{{ index > 0 }}\"\n    input: { x: \"{{ item }}\", i: \"{{ index }}\" }\n"
        )),
        "steps[0].when: refers to index, which is only defined in the input of a step with for_each"
    );
}

#[test]
fn signal_exists_only_in_steps_that_wait_for_one() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ signal.approved }}\" }\n"
        )),
        "steps[0].input.x: refers to signal, which is only defined in the input of a step with wait_for_signal"
    );
    parse(&with_steps(
        "  - id: a\n    operation: test.echo\n    wait_for_signal: { name: go }\n    input: { x: \"{{ signal.approved }}\" }\n",
    ))
    .expect("signal is in scope");
}

#[test]
fn env_is_limited_to_the_allow_list_and_other_names_are_unknown() {
    let source = with_steps(
        "  - id: a\n    operation: test.echo\n    input: { x: \"{{ env.REGION }}\", y: \"{{ env.HOME }}\" }\n",
    );
    let options = ValidateOptions {
        env_allow: vec!["REGION".into()],
        ..ValidateOptions::default()
    };
    let Problems(found) = Definition::parse(&source, Catalog::builtin(), &options).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].message,
        "refers to env.HOME, which is not an allowed environment variable (allowed are: REGION)"
    );
    assert_eq!(found[0].path, "steps[0].input.y");
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ inputs.topic }}\" }\n"
        )),
        "steps[0].input.x: unknown variable \"inputs\" (did you mean \"input\"?); templates can read input, steps, item, index, signal and env"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    input: { x: \"{{ env }}\" }\n"
        )),
        "steps[0].input.x: refers to all of env; name one variable, as in env.NAME"
    );
}

#[test]
fn required_operation_inputs_must_be_given() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: research.topic\n    input: { difficulty: advanced }\n"
        )),
        "steps[0].input.topic: missing required field (input of research.topic)"
    );
    assert_eq!(
        only(&with_steps("  - id: a\n    operation: test.sleep\n")),
        "steps[0].input.ms: missing required field (input of test.sleep)"
    );
    // A whole-value expression may produce anything: checked when the job runs.
    parse(&with_steps(
        "  - id: a\n    operation: research.topic\n    input: \"{{ input }}\"\n",
    ))
    .expect("whole-value input is not checked statically");
}

#[test]
fn undeclared_operation_inputs_are_rejected() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: research.topic\n    input: { topic: x, max_source: 3 }\n"
        )),
        "steps[0].input.max_source: research.topic does not take this field (did you mean \"max_sources\"?); expected one of: allow_unread, corpus, difficulty, max_sources, sources, topic, web_search"
    );
}

#[test]
fn literal_inputs_must_match_the_declared_types() {
    let got: Vec<String> = problems(&with_steps(
        "  - id: a\n    operation: research.topic\n    input:\n      topic: x\n      max_sources: five\n      difficulty: expert\n      sources: [\"{{ input.topic }}\", 3]\n      corpus: \"yes {{ input.topic }}\"\n",
    ))
    .iter()
    .map(|p| format!("{}: {}", p.path, p.message))
    .collect();
    assert_eq!(
        got,
        vec![
            "steps[0].input.max_sources: expected integer, got string \"five\"",
            "steps[0].input.difficulty: must be one of: \"beginner\", \"intermediate\", \"advanced\"",
            "steps[0].input.sources[1]: expected string, got integer 3",
            "steps[0].input.corpus: expected boolean, but a template with text around its {{ }} always renders to a string; write only \"{{ expression }}\" to keep the expression's type",
        ]
    );
}

#[test]
fn retry_values_must_be_in_range() {
    let got: Vec<String> = problems(&with_steps(
        "  - id: a\n    operation: test.echo\n    retry: { max_attempts: 0, multiplier: 0.5, initial_delay: 1m, max_delay: 10s }\n    timeout: 0s\n",
    ))
    .iter()
    .map(|p| format!("{}: {}", p.path, p.message))
    .collect();
    assert_eq!(
        got,
        vec![
            "steps[0].retry.max_attempts: must be between 1 and 100, got 0",
            "steps[0].retry.multiplier: must be at least 1, got 0.5",
            "steps[0].retry.initial_delay: must not exceed max_delay (1m > 10s)",
            "steps[0].timeout: must be greater than zero",
        ]
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    retry: { max_attempts: 101 }\n"
        )),
        "steps[0].retry.max_attempts: must be between 1 and 100, got 101"
    );
}

#[test]
fn enum_keys_name_their_values() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    on_error: ignore\n"
        )),
        "steps[0].on_error: unknown value \"ignore\"; expected one of: fail, continue"
    );
}

#[test]
fn durations_must_be_humantime_strings() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n    retry: { initial_delay: soon }\n"
        )),
        "steps[0].retry.initial_delay: invalid value: string \"soon\", expected a duration"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    wait_for_signal: { name: ok, sla: 90 }\n"
        )),
        "steps[0].wait_for_signal.sla: invalid value: string \"90\", expected a duration"
    );
}

#[test]
fn when_for_each_and_output_are_checked_too() {
    let got: Vec<String> = problems(&with_steps(
        "  - id: a\n    operation: test.echo\n    when: \"{{ steps.b.status == 'completed' }}\"\n  - id: b\n    operation: test.echo\n    for_each: \"{{ steps.a.output.items }} and more\"\n  - id: c\n    operation: test.echo\n    when: 3\noutput:\n  fine: \"{{ steps.b.output }} {{ steps }}\"\n  bad: \"{{ steps.zz.output }}\"\n",
    ))
    .iter()
    .map(|p| format!("{}: {}", p.path, p.message))
    .collect();
    assert_eq!(
        got,
        vec![
            "steps[0].when: refers to step \"b\", which is not upstream of step \"a\"; add \"b\" to its needs (directly or through a step it needs)",
            "steps[1].for_each: expected one expression, such as \"{{ input.x == 'y' }}\" or \"input.x == 'y'\"",
            "steps[2].when: expected a boolean or an expression, got integer 3",
            "output.bad: refers to step \"zz\", which does not exist",
        ]
    );
}

#[test]
fn steps_by_subscript_cannot_be_checked_and_are_rejected_in_steps() {
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    operation: test.echo\n  - id: b\n    operation: test.echo\n    needs: [a]\n    input: { x: \"{{ steps['a'].output }}\" }\n"
        )),
        "steps[1].input.x: refers to all of steps (or looks a step up by subscript); name one step, as in steps.<id>.output"
    );
}

#[test]
fn input_declarations_are_checked() {
    let got: Vec<String> = problems(
        "name: t\nversion: 1\ninput:\n  my-topic: { type: string }\n  n: { type: integer, default: many }\nsteps: [{ id: a, operation: test.echo }]\n",
    )
    .iter()
    .map(|p| format!("{}: {}", p.path, p.message))
    .collect();
    assert_eq!(
        got,
        vec![
            "input.my-topic: input name \"my-topic\" must start with a letter or '_' and contain only letters, digits and '_', so that templates can read it as input.my-topic",
            "input.n.default: expected integer, got string \"many\"",
        ]
    );
}

#[test]
fn json_is_accepted_as_yaml() {
    let def = parse(
        r#"{"name": "j", "version": 2, "steps": [{"id": "a", "operation": "test.sleep", "input": {"ms": 5}}]}"#,
    )
    .expect("JSON parses");
    assert_eq!(def.version, 2);
}

#[test]
fn problems_display_joined_and_serialize_as_a_list() {
    let err = parse(&with_steps(
        "  - id: a\n    operation: nope.x\n  - id: b\n    operation: test.echo\n    needs: [zz]\n",
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "steps[0].operation: unknown operation \"nope.x\" (line 8); steps[1].needs[0]: needs step \"zz\", which does not exist (line 11)"
    );
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"path": "steps[0].operation", "line": 8, "message": "unknown operation \"nope.x\""},
            {"path": "steps[1].needs[0]", "line": 11, "message": "needs step \"zz\", which does not exist"},
        ])
    );
}

#[test]
fn shipped_workflows_are_valid() {
    let shipped = switchyard_workflow::definition::shipped();
    let names: Vec<&str> = shipped.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        vec![
            "research_to_docs",
            "research_to_slack",
            "research_pipeline",
            "meeting_to_tasks",
            "research_brief",
            "linkedin_post"
        ]
    );
    for (name, source) in shipped {
        let def = parse(source).unwrap_or_else(|p| panic!("{name}: {p}"));
        assert_eq!(def.name, *name);
        assert!(!def.description.is_empty(), "{name} has a description");
    }
}

/// A step naming a capability is checked against the capability's contract (for
/// `research`, the schemas of `research.topic`) like a step naming that operation.
#[test]
fn a_capability_step_is_checked_against_its_contract() {
    let step = |extra: &str, reference: &str| {
        format!(
            "name: t\nversion: 1\nsteps:\n  - id: r\n    capability: research\n{extra}    input: {{ topic: x }}\noutput:\n  s: \"{{{{ steps.r.output.{reference} }}}}\"\n"
        )
    };
    let def = parse(&step("", "summary")).expect("a valid capability step");
    assert_eq!(def.steps[0].capability.as_deref(), Some("research"));
    assert_eq!(def.steps[0].operation, None);
    parse(&step("    prefer: [tutor]\n", "sources")).expect("prefer names kinds");

    let wrong = only(&step("", "summery"));
    assert!(
        wrong.starts_with("output.s:") && wrong.contains("summary"),
        "{wrong}"
    );
    let unknown = only(&step("", "summary").replace("capability: research", "capability: reserch"));
    assert!(
        unknown.starts_with("steps[0].capability:")
            && unknown.contains("did you mean \"research\""),
        "{unknown}"
    );
    let both = only(&step("    operation: test.echo\n", "summary"));
    assert!(both.contains("not both"), "{both}");
    let missing = only(&step("", "summary").replace("input: { topic: x }", "input: {}"));
    assert!(missing.contains("topic"), "{missing}");
    let bad_prefer = only(&step("    prefer: [\"a.b\"]\n", "summary"));
    assert!(bad_prefer.starts_with("steps[0].prefer:"), "{bad_prefer}");
    let stray_prefer = only(&with_steps(
        "  - id: a\n    operation: test.echo\n    prefer: [tutor]\n",
    ));
    assert!(
        stray_prefer.contains("only a step with a capability"),
        "{stray_prefer}"
    );
}

#[test]
fn definitions_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Definition>();
}

#[test]
fn empty_and_misshapen_documents_are_explained() {
    assert_eq!(
        only("name: t\nversion: 1\nsteps: []\n"),
        "steps: a workflow needs at least one step"
    );
    assert_eq!(
        only("# nothing\n"),
        ": the definition is empty; expected a mapping with name, version and steps"
    );
    for source in ["- 1\n", "just text\n"] {
        assert_eq!(
            only(source),
            format!(
                ": invalid type: {}, expected a workflow definition (a mapping with name, version and steps)",
                if source.starts_with('-') {
                    "sequence"
                } else {
                    "string \"just text\""
                }
            )
        );
    }
}

#[test]
fn the_readme_example_is_valid() {
    let readme = include_str!("../../workflows/README.md");
    let section = readme
        .split("## Writing a definition")
        .nth(1)
        .expect("section");
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("yaml block");
    let def = parse(example).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(def.steps.len(), 4);
    assert_eq!(def.schedules.len(), 2);
    assert_eq!(def.triggers.len(), 1);
}

#[test]
fn a_step_may_sleep_for_a_while_or_until_a_time() {
    let def = parse(&with_steps(
        "  - id: pause\n    sleep: 10m\n  - id: wake\n    needs: [pause]\n    sleep_until: \"{{ input.topic }}\"\n  - id: after\n    needs: [wake]\n    operation: test.echo\n    input: { at: \"{{ steps.wake.output.until_ms }}\" }\n",
    ))
    .expect("valid");
    assert_eq!(
        def.step("pause").and_then(|s| s.sleep),
        Some(switchyard_workflow::definition::Sleep::For(
            std::time::Duration::from_secs(600)
        ))
    );
    assert_eq!(
        def.step("wake").and_then(|s| s.sleep),
        Some(switchyard_workflow::definition::Sleep::Until)
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    sleep: 1s\n    operation: test.echo\n"
        )),
        "steps[0].operation: a step with sleep only sleeps; it takes no operation"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    sleep: 1s\n    input: { x: 1 }\n"
        )),
        "steps[0].input: only a step with an operation takes input; this step only waits for a time"
    );
    assert_eq!(
        only(&with_steps("  - id: a\n    sleep: 0s\n")),
        "steps[0].sleep: must be greater than zero"
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    sleep: 1s\n    sleep_until: 5\n"
        )),
        "steps[0].sleep_until: a step takes sleep or sleep_until, not both"
    );
    assert!(
        only(&with_steps("  - id: a\n    sleep_until: next tuesday\n"))
            .starts_with("steps[0].sleep_until: \"next tuesday\" is not an RFC 3339 time"),
    );
    assert_eq!(
        only(&with_steps(
            "  - id: a\n    sleep_until: \"{{ steps.b.output }}\"\n  - id: b\n    sleep: 1s\n"
        )),
        "steps[0].sleep_until: refers to step \"b\", which is not upstream of step \"a\"; add \"b\" to its needs (directly or through a step it needs)"
    );
    assert!(
        only(&with_steps("  - id: a\n    sleep: 1s\n  - id: b\n    needs: [a]\n    operation: test.echo\n    input: { x: \"{{ steps.a.output.woke }}\" }\n"))
            .contains("has no field \"woke\""),
    );
}

#[test]
fn schedules_take_cron_or_an_interval_and_an_input_the_workflow_accepts() {
    use switchyard_workflow::definition::When;
    let def = parse(&format!(
        "{}schedules:\n  - name: mornings\n    cron: \"0 9 * * MON-FRI\"\n    time_zone: Europe/Berlin\n    input: {{ topic: news }}\n  - every: 2s\n    input: {{ topic: ticks, n: 5 }}\n",
        with_steps("  - id: a\n    operation: test.echo\n")
    ))
    .expect("valid");
    assert_eq!(def.schedules.len(), 2);
    assert_eq!(def.schedules[0].name, "mornings");
    assert_eq!(def.schedules[0].pattern(), "0 0 9 * * MON-FRI");
    assert_eq!(def.schedules[0].time_zone(), Some("Europe/Berlin"));
    assert_eq!(
        def.schedules[0].input,
        serde_json::json!({"topic": "news", "n": 2})
    );
    assert_eq!(def.schedules[1].name, "1");
    assert_eq!(
        def.schedules[1].when,
        When::Every(std::time::Duration::from_secs(2))
    );
    assert_eq!(def.schedules[1].pattern(), "@every 2s");

    let steps = with_steps("  - id: a\n    operation: test.echo\n");
    for (schedules, expected) in [
        (
            "  - cron: \"0 9 * *\"\n    input: { topic: x }\n",
            "schedules[0].cron: expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), got 4",
        ),
        (
            "  - cron: \"0 9 * * *\"\n    time_zone: Mars/Olympus\n    input: { topic: x }\n",
            "schedules[0].time_zone: \"Mars/Olympus\" is not an IANA time zone name (like Europe/Berlin or America/New_York)",
        ),
        (
            "  - every: 1500ms\n    input: { topic: x }\n",
            "schedules[0].every: must be a whole number of seconds, at least 1s",
        ),
        (
            "  - every: 1m\n    time_zone: UTC\n    input: { topic: x }\n",
            "schedules[0].time_zone: only a cron schedule takes time_zone; an interval has none",
        ),
        (
            "  - every: 1m\n    cron: \"* * * * *\"\n    input: { topic: x }\n",
            "schedules[0]: a schedule needs one of cron and every",
        ),
        (
            "  - every: 1m\n    input: { n: 1 }\n",
            "schedules[0].input.topic: missing required field",
        ),
        (
            "  - every: 1m\n    name: a.b\n    input: { topic: x }\n",
            "schedules[0].name: not a valid schedule name: contains '.'",
        ),
        (
            "  - every: 1m\n    input: { topic: x }\n    inptu: {}\n",
            "schedules[0].inptu: unknown key (did you mean \"input\"?); expected one of: name, cron, every, time_zone, input",
        ),
    ] {
        let found = only(&format!("{steps}schedules:\n{schedules}"));
        assert!(found.starts_with(expected), "{found}\nexpected {expected}");
    }
}

#[test]
fn triggers_name_a_subject_and_render_the_input_from_the_event() {
    let def = parse(&format!(
        "{}triggers:\n  - subject: orders.created\n    input: {{ topic: \"{{{{ event.order.title }}}}\", n: \"{{{{ event.order.lines | length }}}}\" }}\n  - subject: \"orders.*.>\"\n",
        with_steps("  - id: a\n    operation: test.echo\n")
    ))
    .expect("valid");
    assert_eq!(def.triggers.len(), 2);
    assert!(def.triggers[0].matches("orders.created"));
    assert!(!def.triggers[0].matches("orders.created.eu"));
    assert!(!def.triggers[0].matches("orders"));
    assert!(def.triggers[1].matches("orders.eu.created"));
    assert!(def.triggers[1].matches("orders.eu.created.late"));
    assert!(!def.triggers[1].matches("orders.eu"));
    let event = serde_json::json!({ "order": { "title": "Mugs", "lines": [1, 2, 3] } });
    let env = std::collections::BTreeMap::new();
    assert_eq!(
        def.render_trigger_input(0, &event, "orders.created", &env)
            .unwrap(),
        serde_json::json!({ "topic": "Mugs", "n": 3 })
    );
    assert_eq!(
        def.render_trigger_input(1, &event, "orders.eu.created", &env)
            .unwrap(),
        event,
        "without input the event is the input"
    );

    let steps = with_steps("  - id: a\n    operation: test.echo\n");
    for (triggers, expected) in [
        (
            "  - subject: orders..created\n",
            "triggers[0].subject: \"orders..created\" is not a subject of tokens and wildcards",
        ),
        (
            "  - subject: \"orders.>.x\"\n",
            "triggers[0].subject: > may only be the last token",
        ),
        (
            "  - subject: orders\n    input: { topic: \"{{ input.topic }}\" }\n",
            "triggers[0].input.topic: refers to input; a trigger's input can read event (the message), subject and env",
        ),
        (
            "  - subject: orders\n    input: { n: 2 }\n",
            "triggers[0].input.topic: missing required field",
        ),
    ] {
        let found = only(&format!("{steps}triggers:\n{triggers}"));
        assert!(found.starts_with(expected), "{found}\nexpected {expected}");
    }
    assert!(
        only(&format!(
            "{}  - id: b\n    operation: test.echo\n    input: {{ x: \"{{{{ event.id }}}}\" }}\n",
            steps
        ))
        .contains("unknown variable \"event\""),
    );
}

#[test]
fn a_concurrency_key_reads_the_input_and_has_a_limit() {
    let def = parse(&format!(
        "{}concurrency: {{ key: \"{{{{ input.topic }}}}-{{{{ input.n }}}}\", limit: 2 }}\n",
        with_steps("  - id: a\n    operation: test.echo\n")
    ))
    .expect("valid");
    assert_eq!(def.concurrency.map(|c| c.limit), Some(2));
    let env = std::collections::BTreeMap::new();
    assert_eq!(
        def.concurrency_key(&serde_json::json!({"topic": "acme", "n": 2}), &env)
            .unwrap()
            .as_deref(),
        Some("acme-2")
    );
    let def = parse(&format!(
        "{}concurrency: {{ key: \"{{{{ input.n }}}}\", limit: 1 }}\n",
        with_steps("  - id: a\n    operation: test.echo\n")
    ))
    .expect("valid");
    assert_eq!(
        def.concurrency_key(&serde_json::json!({"n": 7}), &env)
            .unwrap()
            .as_deref(),
        Some("7"),
        "a number keeps its JSON text"
    );
    assert!(def.concurrency_key(&serde_json::json!({}), &env).is_err());

    let steps = with_steps("  - id: a\n    operation: test.echo\n");
    assert_eq!(
        only(&format!(
            "{steps}concurrency: {{ key: \"{{{{ input.topic }}}}\", limit: 0 }}\n"
        )),
        "concurrency.limit: must be between 1 and 100, got 0"
    );
    assert!(
        only(&format!(
            "{steps}concurrency: {{ key: \"{{{{ steps.a.output }}}}\", limit: 2 }}\n"
        ))
        .starts_with("concurrency.key: refers to steps; a concurrency key can read input and env"),
    );
}

#[test]
fn rate_limits_take_a_key_a_limit_and_a_period() {
    let def = parse(&format!(
        "{}rate_limit: {{ key: \"{{{{ input.topic }}}}\", limit: 10, per: 1h }}\n",
        with_steps(
            "  - id: a\n    operation: test.echo\n    rate_limit: { key: provider, limit: 10, per: 1s }\n"
        )
    ))
    .expect("valid");
    assert_eq!(
        def.rate_limit.map(|r| (r.limit, r.per)),
        Some((10, std::time::Duration::from_secs(3600)))
    );
    assert_eq!(
        def.steps[0].rate_limit.map(|r| (r.limit, r.per)),
        Some((10, std::time::Duration::from_secs(1)))
    );
    let env = std::collections::BTreeMap::new();
    let input = serde_json::json!({"topic": "acme"});
    assert_eq!(
        def.rate_key(None, &input, &env).unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(
        def.rate_key(Some(0), &input, &env).unwrap().as_deref(),
        Some("provider")
    );
    for (steps, expected) in [
        (
            "  - id: a\n    operation: test.echo\n    rate_limit: { key: x, limit: 0, per: 1s }\n",
            "steps[0].rate_limit.limit: must be between 1 and 1000000, got 0",
        ),
        (
            "  - id: a\n    operation: test.echo\n    rate_limit: { key: x, limit: 5, per: 2d }\n",
            "steps[0].rate_limit.per: must be from 1ms to 1 day",
        ),
        (
            "  - id: a\n    sleep: 1s\n    rate_limit: { key: x, limit: 5, per: 1s }\n",
            "steps[0].rate_limit: only a step that runs an operation takes rate_limit",
        ),
    ] {
        assert_eq!(only(&with_steps(steps)), expected);
    }
}
