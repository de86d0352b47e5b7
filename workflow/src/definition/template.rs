//! Templated values: compiled once when a definition is registered, rendered per step.
//!
//! A string that is exactly one `{{ expression }}` keeps the expression's JSON type; any
//! other string with template syntax renders to a string; everything else is kept as is.

use std::collections::BTreeSet;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use super::Scope;
use super::bounded::{self, OVER_LIMIT, RenderLimits};
use super::parse::Path;

/// The variable a whole-value expression is stored in (see [`Compiler::expression`]).
const RESULT: &str = "__switchyard_value";

/// Instructions one render may run before it is stopped, so that a definition cannot stall
/// the orchestrator with a runaway loop. Generous: rendering a long Markdown document takes a
/// few thousand.
const FUEL: u64 = 2_000_000;

/// The environment every definition compiles its templates into.
pub(super) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Not HTML: values go to APIs, Markdown and Slack as written.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    // Prints the whole context; nothing a workflow needs.
    env.remove_global("debug");
    bounded::install(&mut env);
    env
}

/// A compiled templated value.
#[derive(Debug)]
pub(super) enum Node {
    /// No template syntax anywhere below.
    Literal(Value),
    /// A whole-value expression, by template name.
    Expr(String),
    /// A string template, by template name.
    Text(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A compiled condition (`when`).
#[derive(Debug)]
pub(super) enum Condition {
    Always(bool),
    Expr(String),
}

/// What a templated value refers to, so a render only converts the step results it needs.
#[derive(Debug, Clone, Default)]
pub(super) enum StepsUsed {
    #[default]
    None,
    Some(BTreeSet<String>),
    All,
}

/// A compiled template's name (its path) with what it reads.
#[derive(Debug)]
pub(super) struct TemplateInfo {
    pub path: Path,
    /// Variable paths it reads, as minijinja reports them (`steps.research.output.summary`).
    pub vars: Vec<String>,
    /// The source of a whole-value expression, without the braces.
    pub expression: Option<String>,
}

/// How a string is treated.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind<'a> {
    Plain,
    Expression(&'a str),
    Text,
}

pub(super) fn classify(s: &str) -> Kind<'_> {
    if !(s.contains("{{") || s.contains("{%") || s.contains("{#")) {
        return Kind::Plain;
    }
    if let Some(inner) = s
        .trim()
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        && !["{{", "}}", "{%", "%}", "{#", "#}"]
            .iter()
            .any(|t| inner.contains(t))
    {
        let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let inner = inner.strip_suffix('-').unwrap_or(inner);
        return Kind::Expression(inner.trim());
    }
    Kind::Text
}

/// Compiles templated values into one environment, recording problems by path.
pub(super) struct Compiler {
    pub env: Environment<'static>,
    /// The limits dry runs render within.
    pub limits: RenderLimits,
    /// Templates compiled since the last [`Compiler::take`].
    templates: Vec<TemplateInfo>,
    /// Every template name used, to keep them unique (a key may contain a dot).
    names: BTreeSet<String>,
    pub problems: Vec<(Path, String)>,
}

impl Compiler {
    pub fn new(limits: RenderLimits) -> Compiler {
        Compiler {
            env: environment(),
            limits,
            templates: Vec::new(),
            names: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The templates compiled since the last call.
    pub fn take(&mut self) -> Vec<TemplateInfo> {
        std::mem::take(&mut self.templates)
    }

    /// Compiles a templated value.
    pub fn value(&mut self, value: &Value, path: &Path) -> Node {
        match value {
            Value::String(s) => match classify(s) {
                Kind::Plain => Node::Literal(value.clone()),
                Kind::Expression(source) => match self.expression(source, path) {
                    Some(name) => Node::Expr(name),
                    None => Node::Literal(Value::Null),
                },
                Kind::Text => match self.text(s, path) {
                    Some(name) => Node::Text(name),
                    None => Node::Literal(Value::Null),
                },
            },
            Value::Array(items) => {
                let nodes: Vec<Node> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, &path.index(i)))
                    .collect();
                if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                    Node::Literal(value.clone())
                } else {
                    Node::Array(nodes)
                }
            }
            Value::Object(map) => {
                let nodes: Vec<(String, Node)> = map
                    .iter()
                    .map(|(key, item)| (key.clone(), self.value(item, &path.key(key))))
                    .collect();
                if nodes.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
                    Node::Literal(value.clone())
                } else {
                    Node::Object(nodes)
                }
            }
            _ => Node::Literal(value.clone()),
        }
    }

    /// Compiles a condition: a boolean, `{{ expression }}` or a bare expression.
    pub fn condition(&mut self, value: &Value, path: &Path) -> Option<Condition> {
        match value {
            Value::Bool(b) => Some(Condition::Always(*b)),
            Value::String(s) => self.expression_text(s, path).map(Condition::Expr),
            other => {
                self.problems.push((
                    path.clone(),
                    format!(
                        "expected a boolean or an expression, got {}",
                        switchyard_catalog::describe(other)
                    ),
                ));
                None
            }
        }
    }

    /// Compiles `{{ expression }}` or a bare expression (for `when` and `for_each`).
    pub fn expression_text(&mut self, s: &str, path: &Path) -> Option<String> {
        match classify(s) {
            Kind::Plain => self.expression(s.trim(), path),
            Kind::Expression(source) => self.expression(source, path),
            Kind::Text => {
                self.problems.push((
                    path.clone(),
                    "expected one expression, such as \"{{ input.x == 'y' }}\" or \"input.x == 'y'\""
                        .into(),
                ));
                None
            }
        }
    }

    /// Compiles a whole-value expression. Expressions are stored as a template that sets one
    /// variable, read back after rendering: the environment owns every compiled template, so
    /// nothing borrows from it and nothing is compiled per render.
    fn expression(&mut self, source: &str, path: &Path) -> Option<String> {
        if let Err(err) = self.env.compile_expression_owned(source.to_string()) {
            self.problems.push((path.clone(), syntax_message(&err)));
            return None;
        }
        let wrapped = format!("{{% set {RESULT} = ({source}) %}}");
        self.add(wrapped, path, Some(source.to_string()))
    }

    fn text(&mut self, source: &str, path: &Path) -> Option<String> {
        self.add(source.to_string(), path, None)
    }

    fn add(&mut self, source: String, path: &Path, expression: Option<String>) -> Option<String> {
        let mut name = path.to_string();
        let mut n = 1;
        while self.names.contains(&name) {
            n += 1;
            name = format!("{path}#{n}");
        }
        self.names.insert(name.clone());
        if let Err(err) = self.env.add_template_owned(name.clone(), source) {
            self.problems.push((path.clone(), syntax_message(&err)));
            return None;
        }
        let template = self.env.get_template(&name).ok()?;
        let mut vars: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        vars.sort();
        // A dry run with nothing defined finds unknown filters and tests, which minijinja only
        // reports when they are called, and a template that grows past the render limits on
        // its own (it runs within them, so it cannot take the engine's memory).
        if let Err(err) = bounded::render(
            &self.env,
            &name,
            minijinja::context! {},
            self.limits,
            RESULT,
        ) && (matches!(
            err.kind(),
            ErrorKind::UnknownFilter | ErrorKind::UnknownTest
        ) || err.detail().is_some_and(|d| d.contains(OVER_LIMIT)))
        {
            self.problems.push((path.clone(), render_message(&err)));
        }
        self.templates.push(TemplateInfo {
            path: path.clone(),
            vars,
            expression,
        });
        Some(name)
    }
}

fn syntax_message(err: &minijinja::Error) -> String {
    let detail = err.detail().unwrap_or("invalid syntax");
    match err.line() {
        Some(line) if line > 1 => format!("template syntax error: {detail} (template line {line})"),
        _ => format!("template syntax error: {detail}"),
    }
}

/// A render error's message, without minijinja's "(in <template>:<line>)" suffix.
pub(super) fn render_message(err: &minijinja::Error) -> String {
    let mut message = match (err.kind(), err.detail()) {
        (ErrorKind::OutOfFuel, _) => {
            "template took too long to render (it ran out of its instruction budget)".to_string()
        }
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    if let Some(line) = err.line().filter(|l| *l > 1) {
        message.push_str(&format!(" (template line {line})"));
    }
    message
}

/// Builds the render context for `scope`, converting only the step results `steps` names.
pub(super) fn context(scope: &Scope<'_>, steps: &StepsUsed) -> minijinja::Value {
    let mut pairs: Vec<(&str, minijinja::Value)> = Vec::with_capacity(6);
    pairs.push(("input", minijinja::Value::from(Serde(scope.input))));
    match steps {
        StepsUsed::None => {}
        StepsUsed::All => pairs.push(("steps", minijinja::Value::from(Serde(scope.steps)))),
        StepsUsed::Some(ids) => {
            let picked = ids.iter().filter_map(|id| {
                scope
                    .steps
                    .get(id)
                    .map(|result| (id.as_str(), minijinja::Value::from(Serde(result))))
            });
            pairs.push(("steps", minijinja::Value::from_pairs(picked)));
        }
    }
    if let Some((item, index)) = scope.item {
        pairs.push(("item", minijinja::Value::from(Serde(item))));
        pairs.push(("index", minijinja::Value::from(index)));
    }
    if let Some(signal) = scope.signal {
        pairs.push(("signal", minijinja::Value::from(Serde(signal))));
    }
    pairs.push(("env", minijinja::Value::from(Serde(scope.env))));
    minijinja::Value::from_pairs(pairs)
}

/// What `concurrency.key` reads: the instance's input and the allowed environment.
pub(super) fn start_context(
    input: &Value,
    env: &std::collections::BTreeMap<String, String>,
) -> minijinja::Value {
    minijinja::Value::from_pairs([
        ("input", minijinja::Value::from(Serde(input))),
        ("env", minijinja::Value::from(Serde(env))),
    ])
}

/// What a trigger's `input:` reads: the event, its subject and the allowed environment.
pub(super) fn trigger_context(
    event: &Value,
    subject: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> minijinja::Value {
    minijinja::Value::from_pairs([
        ("event", minijinja::Value::from(Serde(event))),
        ("subject", minijinja::Value::from(subject)),
        ("env", minijinja::Value::from(Serde(env))),
    ])
}

/// An error while rendering, by template name (the path of the templated value).
pub(super) struct Failure {
    pub name: String,
    pub message: String,
}

/// Evaluates a whole-value expression to a minijinja value (undefined when it is).
pub(super) fn evaluate(
    env: &Environment<'static>,
    limits: RenderLimits,
    name: &str,
    ctx: &minijinja::Value,
) -> Result<minijinja::Value, Failure> {
    let (_, value) =
        bounded::render(env, name, ctx.clone(), limits, RESULT).map_err(|err| Failure {
            name: name.to_string(),
            message: render_message(&err),
        })?;
    Ok(value.unwrap_or(minijinja::Value::UNDEFINED))
}

/// Converts a rendered value to JSON: undefined and none become `null`; integers stay
/// integers.
pub(super) fn to_json(name: &str, value: &minijinja::Value) -> Result<Value, Failure> {
    if value.is_undefined() || value.is_none() {
        return Ok(Value::Null);
    }
    serde_json::to_value(value).map_err(|err| Failure {
        name: name.to_string(),
        message: format!("the result cannot be represented as JSON: {err}"),
    })
}

/// Renders a compiled value within `limits`.
pub(super) fn render(
    env: &Environment<'static>,
    limits: RenderLimits,
    node: &Node,
    ctx: &minijinja::Value,
) -> Result<Value, Failure> {
    match node {
        Node::Literal(value) => Ok(value.clone()),
        Node::Expr(name) => to_json(name, &evaluate(env, limits, name, ctx)?),
        Node::Text(name) => bounded::render(env, name, ctx.clone(), limits, RESULT)
            .map(|(text, _)| Value::String(text))
            .map_err(|err| Failure {
                name: name.clone(),
                message: render_message(&err),
            }),
        Node::Array(items) => items
            .iter()
            .map(|item| render(env, limits, item, ctx))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Node::Object(fields) => {
            let mut map = serde_json::Map::new();
            for (key, item) in fields {
                map.insert(key.clone(), render(env, limits, item, ctx)?);
            }
            Ok(Value::Object(map))
        }
    }
}

/// Every step id a set of variable paths refers to (`steps.<id>…`), or all of them.
pub(super) fn steps_used<'a>(vars: impl IntoIterator<Item = &'a String>) -> StepsUsed {
    let mut ids = BTreeSet::new();
    for var in vars {
        let mut parts = var.split('.');
        if parts.next() != Some("steps") {
            continue;
        }
        match parts.next() {
            Some(id) => {
                ids.insert(id.to_string());
            }
            None => return StepsUsed::All,
        }
    }
    if ids.is_empty() {
        StepsUsed::None
    } else {
        StepsUsed::Some(ids)
    }
}

/// Names the environment defines itself (functions such as `range`), which templates may use.
pub(super) fn globals(env: &Environment<'static>) -> BTreeSet<String> {
    env.globals().map(|(name, _)| name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_tells_expressions_from_text() {
        assert_eq!(classify("plain"), Kind::Plain);
        assert_eq!(classify(" {{ input.x }} "), Kind::Expression("input.x"));
        assert_eq!(classify("{{- input.x -}}"), Kind::Expression("input.x"));
        assert_eq!(classify("{{ a }} and {{ b }}"), Kind::Text);
        assert_eq!(classify("Topic: {{ a }}"), Kind::Text);
        assert_eq!(classify("{% if a %}x{% endif %}"), Kind::Text);
        assert_eq!(classify("{# note #}"), Kind::Text);
    }

    #[test]
    fn nested_attribute_paths_are_reported_up_to_the_first_subscript() {
        let mut compiler = Compiler::new(RenderLimits::default());
        let cases = [
            (
                "{{ steps.research.output.summary }}",
                vec!["steps.research.output.summary"],
            ),
            (
                "{{ steps.a.output.sources[0].title }}",
                vec!["steps.a.output.sources"],
            ),
            (
                "{{ steps.a.output.tasks.0.title }}",
                vec!["steps.a.output.tasks"],
            ),
            ("{{ steps['a'].output }}", vec!["steps"]),
            ("{{ input.topic | default('x') }}", vec!["input.topic"]),
            (
                "{% for p in steps.r.output.key_points %}{{ p.x }}{{ loop.index }}{% endfor %}",
                vec!["steps.r.output.key_points"],
            ),
            ("{% set y = input.a %}{{ y.b }}", vec!["input.a"]),
            ("{{ range(3) | list }}", vec!["range"]),
            (
                "{{ x if input.a else input.b.c }}",
                vec!["input.a", "input.b.c", "x"],
            ),
        ];
        for (i, (source, expected)) in cases.into_iter().enumerate() {
            let path = Path::root("t").index(i);
            compiler.value(&Value::String(source.into()), &path);
            let info = compiler.take().pop().expect("compiled");
            assert_eq!(info.vars, expected, "{source}");
        }
        assert!(compiler.problems.is_empty(), "{:?}", compiler.problems);
    }

    #[test]
    fn unknown_filters_are_found_at_compile_time() {
        let mut compiler = Compiler::new(RenderLimits::default());
        compiler.value(
            &Value::String("{{ input.x | shout }}".into()),
            &Path::root("x"),
        );
        assert_eq!(compiler.problems.len(), 1);
        assert!(
            compiler.problems[0].1.starts_with("unknown filter"),
            "{:?}",
            compiler.problems
        );
    }
}
