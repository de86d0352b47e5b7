//! Workflow definitions: YAML (or JSON) text parsed into typed structs, checked against the
//! operation catalog, and compiled once, when the definition is registered.
//!
//! ```yaml
//! name: research_to_slack          # a subject token: letters, digits, '-' and '_'
//! version: 1
//! description: Research a topic and post a summary to Slack
//! input:                           # the workflow's input, field by field
//!   topic: { type: string, required: true, description: What to research }
//!   channel: { type: string, default: "#research" }
//! steps:
//!   - id: research                 # letters, digits and '_' (templates say steps.<id>)
//!     operation: research.topic    # from the catalog; optional only with wait_for_signal
//!     input: { topic: "{{ input.topic }}" }
//!   - id: post
//!     operation: integration.slack.post_message
//!     needs: [research]
//!     input:
//!       channel: "{{ input.channel }}"
//!       markdown: "*{{ input.topic }}*\n{{ steps.research.output.summary }}"
//! output:
//!   summary: "{{ steps.research.output.summary }}"
//! ```
//!
//! Steps also take `when` (a boolean or an expression, evaluated once when the step is
//! ready), `for_each` (an expression yielding a list, or a literal list; the step's input is
//! rendered once per element with `item` and `index` in scope, and its output is the list of
//! the items' outputs in order), `retry`, `timeout`, `on_error` (`fail` or `continue`) and
//! `wait_for_signal` (`signal` is then in scope in the step's input; a step with no operation
//! completes with the signal's payload as its output). A definition may take a `timeout`
//! for the whole instance (`timeout: 10m`): past it, the instance fails with code `timeout`.
//!
//! # Rendering
//!
//! A string that is exactly one `{{ expression }}` is evaluated and keeps its JSON type;
//! any other string containing `{{`, `{%` or `{#` renders to a string; everything else is kept
//! as written. Undefined values chain (`steps.x.output.y | default('n/a')` works when `x` was
//! skipped) and become `null`. Templates read `input`, `steps.<id>.output|status|error`,
//! `item`/`index`, `signal` and `env.<NAME>` (allow-listed names only). There is no
//! auto-escaping, and no function reads the clock or a random source, so rendering the same
//! scope twice gives the same value.

mod bounded;
mod parse;
mod schedule;
mod shipped;
mod template;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_catalog::{Catalog, Schema};

pub use bounded::RenderLimits;
pub use schedule::{MAX_SCHEDULES, Schedule, When};
pub use shipped::shipped;

use parse::Path;
use template::{Condition, Node, StepsUsed};

/// Most elements a `for_each` list may have: each becomes a job.
pub const MAX_FOR_EACH_ITEMS: usize = 1000;

/// A registered workflow definition. Immutable; the engine shares it in an `Arc`.
#[derive(Debug)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    pub description: String,
    /// The input schema: a closed object of the fields under `input:`.
    pub input: Schema,
    /// In declaration order.
    pub steps: Vec<Step>,
    /// How long an instance may run from its start: past it, it fails with code `timeout`
    /// and its running jobs are cancelled.
    pub timeout: Option<Duration>,
    /// When instances start by themselves: run by the bus's message scheduler.
    pub schedules: Vec<Schedule>,
    /// Subjects of the tenant's events whose messages start instances.
    pub triggers: Vec<Trigger>,
    /// At most this many instances per value of a key run at once; the others queue.
    pub concurrency: Option<Concurrency>,
    /// At most this many starts per key value per period; the others wait their turn.
    pub rate_limit: Option<RateLimit>,
    /// The text as given.
    pub source: String,
    index: HashMap<String, usize>,
    compiled: Compiled,
}

/// Templates compiled at registration, by step.
#[derive(Debug)]
struct Compiled {
    env: Environment<'static>,
    limits: RenderLimits,
    steps: Vec<CompiledStep>,
    output: Option<Unit<Node>>,
    /// Each trigger's `input:`, by trigger.
    triggers: Vec<Option<Node>>,
    /// `concurrency.key`.
    concurrency_key: Option<Node>,
    /// `rate_limit.key` of the definition.
    rate_key: Option<Node>,
}

#[derive(Debug, Default)]
struct CompiledStep {
    input: Option<Unit<Node>>,
    when: Option<Unit<Condition>>,
    for_each: Option<Unit<Node>>,
    /// `sleep_until:`, rendered when the step is reached.
    sleep_until: Option<Unit<Node>>,
    /// `rate_limit.key` of the step.
    rate_key: Option<Node>,
    /// The schemas of an operation declared at run time, which the engine enforces itself:
    /// a worker in another language need not validate, and must not be trusted to.
    declared: Option<DeclaredContract>,
}

/// The contract of a declared operation as the definition was checked against it.
#[derive(Debug)]
struct DeclaredContract {
    operation: String,
    version: u32,
    input: Schema,
    output: Schema,
}

/// A compiled value and the step results it reads.
#[derive(Debug)]
struct Unit<T> {
    body: T,
    steps: StepsUsed,
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// `<kind>.<op>` from the catalog; `None` for a step that names a capability or only
    /// waits for a signal.
    pub operation: Option<String>,
    /// What the step needs done (`research`), run by whichever kind provides it: see
    /// `docs/worker-protocol.md`, "Capabilities".
    pub capability: Option<String>,
    /// For a capability: the kinds to try first, in order.
    pub prefer: Vec<String>,
    /// Ids of the steps that must finish first.
    pub needs: Vec<String>,
    pub retry: Option<Retry>,
    /// How long one attempt may run.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    pub wait_for_signal: Option<WaitForSignal>,
    /// A step that only waits for a time: it holds no worker, and its timer is a stored
    /// message, so it survives restarts.
    pub sleep: Option<Sleep>,
    /// At most this many runs of the step per key value per period, over every instance.
    pub rate_limit: Option<RateLimit>,
    pub has_when: bool,
    pub has_for_each: bool,
}

impl Step {
    /// Whether the step runs a job (an operation, or one chosen for its capability).
    pub fn runs_job(&self) -> bool {
        self.operation.is_some() || self.capability.is_some()
    }
}

/// `triggers:` — a subject of the tenant's events whose every message starts an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Dot-separated tokens after `evt.<tenant>.`, with NATS wildcards: `*` for one token,
    /// `>` (last) for the rest.
    pub subject: String,
}

impl Trigger {
    /// Whether a message on `evt.<tenant>.<subject>` is one of this trigger's.
    pub fn matches(&self, subject: &str) -> bool {
        let mut pattern = self.subject.split('.');
        let mut tokens = subject.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// `concurrency:` — at most `limit` instances per value of `key` (rendered from the input) run
/// at once, across every engine replica; the others wait in order (ADR 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub limit: u32,
}

/// `rate_limit:` — at most `limit` per value of `key` per `per`, a burst of up to `limit` at
/// once; what is over it waits its turn rather than failing (ADR 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub per: Duration,
}

/// The largest `concurrency.limit`.
pub const MAX_CONCURRENCY_LIMIT: u32 = 100;

/// How long a sleeping step sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleep {
    /// `sleep: 10m`, from when the step is reached.
    For(Duration),
    /// `sleep_until:`, a time rendered when the step is reached (see
    /// [`Definition::wake_at_ms`]).
    Until,
}

/// The longest a step may sleep.
pub const MAX_SLEEP: Duration = Duration::from_secs(366 * 24 * 3600);

/// A step's retry policy; unset fields take the worker's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, 1 to 100.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt (a humantime string such as `1s`).
    #[serde(default, with = "humantime_serde")]
    pub initial_delay: Option<Duration>,
    /// Longest delay between attempts; at least `initial_delay`.
    #[serde(default, with = "humantime_serde")]
    pub max_delay: Option<Duration>,
    /// Growth of the delay per attempt, at least 1.
    #[serde(default)]
    pub multiplier: Option<f64>,
}

/// What a failed step does to its workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The workflow fails.
    #[default]
    Fail,
    /// The step is recorded as failed and the steps that need it still run.
    Continue,
}

/// Waiting for a named signal (human approval and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForSignal {
    /// The signal's name, a subject token.
    pub name: String,
    /// How long to wait before the step fails; forever when absent.
    #[serde(default, with = "humantime_serde")]
    pub sla: Option<Duration>,
}

/// Registration settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Environment variables templates may read as `env.NAME`.
    pub env_allow: Vec<String>,
    /// How large a render may make values, its text and a step's input.
    pub limits: RenderLimits,
}

/// One reason a definition (or a workflow input) is rejected; part of the wire contract,
/// since the orchestrator's replies carry it.
pub use switchyard_proto::orchestrator::Problem;

/// Every problem found; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{}", join(.0))]
pub struct Problems(pub Vec<Problem>);

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What templates can read while an instance runs.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The instance's input, as returned by [`Definition::prepare_input`].
    pub input: &'a Value,
    /// `{ "<step id>": { "status": "completed"|…, "output": <json or null>, "error": <string or null> } }`.
    pub steps: &'a Value,
    /// Inside `for_each`: the element and its index.
    pub item: Option<(&'a Value, usize)>,
    /// The received signal's payload, for a step with `wait_for_signal`.
    pub signal: Option<&'a Value>,
    /// Allow-listed environment variables.
    pub env: &'a BTreeMap<String, String>,
}

/// A template that could not be rendered for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RenderError {
    /// The templated value, like `steps[1].input.topic` or `steps[1].for_each`.
    pub path: String,
    pub message: String,
}

impl From<template::Failure> for RenderError {
    fn from(failure: template::Failure) -> RenderError {
        RenderError {
            path: failure.name,
            message: failure.message,
        }
    }
}

impl Definition {
    /// Parses, checks and compiles a definition, reporting every problem found.
    pub fn parse(
        source: &str,
        catalog: &Catalog,
        options: &ValidateOptions,
    ) -> Result<Definition, Problems> {
        validate::build(source, catalog, options)
    }

    /// The step called `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.step_index(id).map(|i| &self.steps[i])
    }

    /// The position of the step called `id` in [`Definition::steps`].
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Checks a start's input: an object (`null` counts as `{}`) of the declared fields, with
    /// defaults applied. Problem paths start with `input`.
    pub fn prepare_input(&self, input: Value) -> Result<Value, Problems> {
        let mut input = match input {
            Value::Null => Value::Object(serde_json::Map::new()),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(Problems(vec![Problem {
                    path: "input".into(),
                    line: None,
                    message: format!(
                        "expected object, got {}",
                        switchyard_catalog::describe(&other)
                    ),
                }]));
            }
        };
        self.input.apply_defaults(&mut input);
        match self.input.validate(&input) {
            Ok(()) => Ok(input),
            Err(errors) => Err(Problems(
                errors
                    .into_iter()
                    .map(|e| Problem {
                        path: Path::root("input").schema_path(&e.path).to_string(),
                        line: None,
                        message: e.message,
                    })
                    .collect(),
            )),
        }
    }

    /// Renders the input of step `step` (an index into [`Definition::steps`]); `{}` when the
    /// step has no `input:`.
    ///
    /// # Panics
    ///
    /// When `step` is out of range.
    pub fn render_step_input(&self, step: usize, scope: &Scope<'_>) -> Result<Value, RenderError> {
        let compiled = &self.compiled.steps[step];
        let mut input = match &compiled.input {
            None => Value::Object(serde_json::Map::new()),
            Some(unit) => self.render(unit, scope)?,
        };
        if let Some(contract) = &compiled.declared {
            contract.input.apply_defaults(&mut input);
            if let Err(errors) = contract.input.validate(&input) {
                let first = &errors[0];
                return Err(RenderError {
                    path: Path::root("steps")
                        .index(step)
                        .key("input")
                        .schema_path(&first.path)
                        .to_string(),
                    message: format!(
                        "does not match the input schema of {} version {}: {}",
                        contract.operation, contract.version, first.message
                    ),
                });
            }
        }
        let limit = self.compiled.limits.step_input_bytes;
        let size = serde_json::to_vec(&input).map_or(0, |b| b.len());
        if size > limit {
            return Err(RenderError {
                path: Path::root("steps").index(step).key("input").to_string(),
                message: format!(
                    "the rendered input is {size} bytes, over the limit of {limit} bytes a \
                     step's input may have"
                ),
            });
        }
        Ok(input)
    }

    /// Checks a step's output against the output schema of its operation when that operation
    /// was declared at run time; `Err` says which field is wrong. A capability step's output
    /// is the business of the operation that ran it (compatible with the contract by the
    /// registry's check), which the engine checks against that operation's declared schema.
    pub fn check_step_output(&self, step: usize, output: &Value) -> Result<(), String> {
        if self.steps[step].capability.is_some() {
            return Ok(());
        }
        let Some(contract) = &self.compiled.steps[step].declared else {
            return Ok(());
        };
        contract.output.validate(output).map_err(|errors| {
            let first = &errors[0];
            format!(
                "the output does not match the output schema of {} version {}: {first}",
                contract.operation, contract.version
            )
        })
    }

    /// When a sleeping step wakes, in milliseconds since the epoch: `now_ms` plus its `sleep`,
    /// or its `sleep_until` rendered (an RFC 3339 time or milliseconds); `None` for a step
    /// that does not sleep. A time in the past wakes it at once; one further than
    /// [`MAX_SLEEP`] away is an error.
    ///
    /// # Panics
    ///
    /// When `step` is out of range.
    pub fn wake_at_ms(
        &self,
        step: usize,
        scope: &Scope<'_>,
        now_ms: i64,
    ) -> Result<Option<i64>, RenderError> {
        let path = || {
            Path::root("steps")
                .index(step)
                .key("sleep_until")
                .to_string()
        };
        let at = match self.steps[step].sleep {
            None => return Ok(None),
            Some(Sleep::For(d)) => {
                now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            Some(Sleep::Until) => {
                let Some(unit) = &self.compiled.steps[step].sleep_until else {
                    return Ok(None);
                };
                let value = self.render(unit, scope)?;
                schedule::instant_ms(&value).map_err(|message| RenderError {
                    path: path(),
                    message,
                })?
            }
        };
        let longest = i64::try_from(MAX_SLEEP.as_millis()).unwrap_or(i64::MAX);
        if at.saturating_sub(now_ms) > longest {
            return Err(RenderError {
                path: path(),
                message: format!(
                    "the step would sleep until {at} ms, more than {} from now",
                    humantime::format_duration(MAX_SLEEP)
                ),
            });
        }
        Ok(Some(at.max(now_ms)))
    }

    /// The input of the instance trigger `index` starts for a message: its `input:` rendered
    /// with `event` (the message's JSON, or its text when it is not JSON), `subject` (after
    /// `evt.<tenant>.`) and `env` in scope; the event itself when the trigger has no `input:`.
    ///
    /// # Panics
    ///
    /// When `index` is out of range.
    pub fn render_trigger_input(
        &self,
        index: usize,
        event: &Value,
        subject: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Value, RenderError> {
        let Some(node) = &self.compiled.triggers[index] else {
            return Ok(event.clone());
        };
        if let Node::Literal(value) = node {
            return Ok(value.clone());
        }
        let ctx = template::trigger_context(event, subject, env);
        Ok(template::render(
            &self.compiled.env,
            self.compiled.limits,
            node,
            &ctx,
        )?)
    }

    /// The value of `concurrency.key` for an instance's input, as text (a string as it is,
    /// other values as JSON); `None` when the definition has no `concurrency:`.
    pub fn concurrency_key(
        &self,
        input: &Value,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<String>, RenderError> {
        key_text(
            self,
            self.compiled.concurrency_key.as_ref(),
            input,
            env,
            "concurrency.key",
        )
    }

    /// The value of a `rate_limit.key` for an instance's input: of step `step`, or of the
    /// definition when `None`; `Ok(None)` when there is no such rate limit.
    ///
    /// # Panics
    ///
    /// When `step` is out of range.
    pub fn rate_key(
        &self,
        step: Option<usize>,
        input: &Value,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<String>, RenderError> {
        let node = match step {
            None => &self.compiled.rate_key,
            Some(i) => &self.compiled.steps[i].rate_key,
        };
        let path = match step {
            None => "rate_limit.key".to_owned(),
            Some(i) => Path::root("steps")
                .index(i)
                .key("rate_limit")
                .key("key")
                .to_string(),
        };
        key_text(self, node.as_ref(), input, env, &path)
    }

    /// Evaluates the step's `when` (Jinja truthiness); `true` when it has none.
    ///
    /// # Panics
    ///
    /// When `step` is out of range.
    pub fn eval_when(&self, step: usize, scope: &Scope<'_>) -> Result<bool, RenderError> {
        let Some(unit) = &self.compiled.steps[step].when else {
            return Ok(true);
        };
        match &unit.body {
            Condition::Always(value) => Ok(*value),
            Condition::Expr(name) => {
                let ctx = template::context(scope, &unit.steps);
                Ok(
                    template::evaluate(&self.compiled.env, self.compiled.limits, name, &ctx)?
                        .is_true(),
                )
            }
        }
    }

    /// Evaluates the step's `for_each`: `None` when it has none. `null` (say, the output of a
    /// skipped step) gives an empty list; anything else that is not a list is an error, as is
    /// a list longer than [`MAX_FOR_EACH_ITEMS`].
    ///
    /// # Panics
    ///
    /// When `step` is out of range.
    pub fn eval_for_each(
        &self,
        step: usize,
        scope: &Scope<'_>,
    ) -> Result<Option<Vec<Value>>, RenderError> {
        let Some(unit) = &self.compiled.steps[step].for_each else {
            return Ok(None);
        };
        let path = || Path::root("steps").index(step).key("for_each").to_string();
        match self.render(unit, scope)? {
            Value::Null => Ok(Some(Vec::new())),
            Value::Array(items) if items.len() > MAX_FOR_EACH_ITEMS => Err(RenderError {
                path: path(),
                message: format!(
                    "the list has {} items; at most {MAX_FOR_EACH_ITEMS} are allowed",
                    items.len()
                ),
            }),
            Value::Array(items) => Ok(Some(items)),
            other => Err(RenderError {
                path: path(),
                message: format!(
                    "expected a list, got {}",
                    switchyard_catalog::describe(&other)
                ),
            }),
        }
    }

    /// Renders the workflow's `output:`; without one, an object of the output of every step
    /// whose status is `completed`, by step id.
    pub fn render_output(&self, scope: &Scope<'_>) -> Result<Value, RenderError> {
        if let Some(unit) = &self.compiled.output {
            return self.render(unit, scope);
        }
        let mut outputs = serde_json::Map::new();
        for step in &self.steps {
            if let Some(result) = scope.steps.get(&step.id)
                && result.get("status").and_then(Value::as_str) == Some("completed")
            {
                let output = result.get("output").cloned().unwrap_or(Value::Null);
                outputs.insert(step.id.clone(), output);
            }
        }
        Ok(Value::Object(outputs))
    }

    /// The declared `output:` rendered against what the steps have produced so far, field by
    /// field, for read models of a running instance: a field that cannot render (yet) is null,
    /// so one missing step does not hide the others. A completed instance's stored output is
    /// the authority; this is for the time before it exists.
    pub fn render_output_so_far(&self, scope: &Scope<'_>) -> Value {
        let Some(Unit {
            body: Node::Object(fields),
            steps,
        }) = &self.compiled.output
        else {
            return self.render_output(scope).unwrap_or(Value::Null);
        };
        let ctx = template::context(scope, steps);
        let fields = fields.iter().map(|(key, node)| {
            let value = template::render(&self.compiled.env, self.compiled.limits, node, &ctx)
                .unwrap_or(Value::Null);
            (key.clone(), value)
        });
        Value::Object(fields.collect())
    }

    fn render(&self, unit: &Unit<Node>, scope: &Scope<'_>) -> Result<Value, RenderError> {
        if let Node::Literal(value) = &unit.body {
            return Ok(value.clone());
        }
        let ctx = template::context(scope, &unit.steps);
        Ok(template::render(
            &self.compiled.env,
            self.compiled.limits,
            &unit.body,
            &ctx,
        )?)
    }
}

/// A key template rendered from the input, as text (a string as it is, other values as
/// JSON); `Ok(None)` without a template.
fn key_text(
    def: &Definition,
    node: Option<&Node>,
    input: &Value,
    env: &BTreeMap<String, String>,
    path: &str,
) -> Result<Option<String>, RenderError> {
    let Some(node) = node else {
        return Ok(None);
    };
    let ctx = template::start_context(input, env);
    let value = match node {
        Node::Literal(v) => v.clone(),
        node => template::render(&def.compiled.env, def.compiled.limits, node, &ctx)?,
    };
    match value {
        Value::Null => Err(RenderError {
            path: path.to_owned(),
            message: "renders to null; every instance needs a key".into(),
        }),
        Value::String(s) => Ok(Some(s)),
        other => Ok(Some(other.to_string())),
    }
}

#[cfg(test)]
mod tests;
