//! Registration checks: everything that can be known about a definition before it runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use switchyard_catalog::{Catalog, Lookup, Schema, Type};
use switchyard_proto::subject::check_token;

use super::parse::{self, Path, RawDefinition, RawRateLimit, RawSchedule, RawStep, RawTrigger};
use super::schedule::{self, MAX_SCHEDULES, Schedule, When};
use super::template::{self, Compiler, Node, TemplateInfo};
use super::{
    Compiled, CompiledStep, Concurrency, DeclaredContract, Definition, MAX_CONCURRENCY_LIMIT,
    MAX_SLEEP, Problem, Problems, RateLimit, Sleep, Step, Trigger, Unit, ValidateOptions,
};

/// The largest `rate_limit.limit`.
const MAX_RATE: u32 = 1_000_000;

/// Most triggers one definition may have.
pub const MAX_TRIGGERS: usize = 20;

/// The variables templates can read.
const ROOTS: [&str; 6] = ["input", "steps", "item", "index", "signal", "env"];

/// Retry attempts allowed per step.
const MAX_ATTEMPTS: u32 = 100;

pub(super) fn build(
    source: &str,
    catalog: &Catalog,
    options: &ValidateOptions,
) -> Result<Definition, Problems> {
    let raw = parse::read(source).map_err(Problems)?;
    let mut v = Validator {
        catalog,
        options,
        issues: Vec::new(),
        compiler: Compiler::new(options.limits),
    };
    let definition = v.definition(raw, source);
    let mut issues = v.issues;
    issues.extend(v.compiler.problems);
    if issues.is_empty() {
        return Ok(definition);
    }
    let mut problems: Vec<Problem> = Vec::with_capacity(issues.len());
    for (path, message) in issues {
        let problem = Problem {
            path: path.to_string(),
            line: parse::locate(source, &path),
            message,
        };
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(Problems(problems))
}

struct Validator<'a> {
    catalog: &'a Catalog,
    options: &'a ValidateOptions,
    issues: Vec<(Path, String)>,
    compiler: Compiler,
}

/// Where a template is, which decides what it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Input(usize),
    When(usize),
    ForEach(usize),
    Output,
    /// A trigger's `input:`, which reads the event that started the instance.
    Trigger,
    /// `concurrency.key`, which reads the instance's input.
    Start,
}

/// What reference checks need to know about the steps.
struct Graph<'a> {
    ids: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    /// Every step each step depends on, transitively.
    upstream: Vec<BTreeSet<usize>>,
    /// What `steps.<id>.output` is: `None` when anything goes (a signal's payload, or an
    /// operation the catalog does not know).
    outputs: Vec<Option<Schema>>,
    operations: Vec<Option<&'a str>>,
    for_each: Vec<bool>,
    waits: Vec<bool>,
    /// What `item` is in a `for_each` step, when the list's schema is known.
    items: Vec<Option<Schema>>,
    input: &'a Schema,
    globals: BTreeSet<String>,
    env_allow: Vec<String>,
}

impl<'a> Validator<'a> {
    fn issue(&mut self, path: Path, message: impl Into<String>) {
        self.issues.push((path, message.into()));
    }

    fn definition(&mut self, mut raw: RawDefinition, source: &str) -> Definition {
        if let Err(err) = check_token(&raw.name) {
            self.issue(
                Path::root("name"),
                format!("not a valid workflow name: {err}"),
            );
        }
        if raw.version == 0 {
            self.issue(Path::root("version"), "must be at least 1");
        }
        if raw.timeout.is_some_and(|t| t.is_zero()) {
            self.issue(Path::root("timeout"), "must be greater than zero");
        }
        let input = self.input_schema(std::mem::take(&mut raw.input));
        let schedules = self.schedules(std::mem::take(&mut raw.schedules), &input);
        if raw.steps.is_empty() {
            self.issue(Path::root("steps"), "a workflow needs at least one step");
        }

        let steps_path = Path::root("steps");
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, step) in raw.steps.iter().enumerate() {
            let path = steps_path.index(i).key("id");
            if let Some(message) = id_problem(&step.id) {
                self.issue(path, message);
            } else if let Some(first) = index.get(step.id.as_str()) {
                self.issue(
                    path,
                    format!("duplicate step id {:?}; steps[{first}] has it too", step.id),
                );
            } else {
                index.insert(&step.id, i);
            }
        }

        let mut needs: Vec<Vec<usize>> = Vec::with_capacity(raw.steps.len());
        for (i, step) in raw.steps.iter().enumerate() {
            needs.push(self.step_shape(i, step, &index));
        }
        self.cycles(&raw.steps, &needs);

        let raw_triggers = std::mem::take(&mut raw.triggers);
        let raw_concurrency = raw.concurrency.take();
        let raw_rate = raw.rate_limit.take();
        let mut graph = self.graph(&raw, &index, &needs, &input);
        let mut compiled_steps = Vec::with_capacity(raw.steps.len());
        for (i, step) in raw.steps.iter().enumerate() {
            compiled_steps.push(self.compile_step(i, step, &mut graph));
        }
        let output = raw.output.as_ref().map(|value| {
            let node = self.compiler.value(value, &Path::root("output"));
            let templates = self.compiler.take();
            self.references(&templates, Site::Output, &graph);
            Unit {
                steps: template::steps_used(templates.iter().flat_map(|t| &t.vars)),
                body: node,
            }
        });

        let (triggers, compiled_triggers) = self.triggers(raw_triggers, &input, &graph);
        let (concurrency, concurrency_key) = match raw_concurrency {
            None => (None, None),
            Some(c) => {
                let path = Path::root("concurrency");
                if !(1..=MAX_CONCURRENCY_LIMIT).contains(&c.limit) {
                    self.issue(
                        path.key("limit"),
                        format!(
                            "must be between 1 and {MAX_CONCURRENCY_LIMIT}, got {}",
                            c.limit
                        ),
                    );
                }
                let node = self.compiler.value(&c.key, &path.key("key"));
                let templates = self.compiler.take();
                self.references(&templates, Site::Start, &graph);
                (Some(Concurrency { limit: c.limit }), Some(node))
            }
        };
        let (rate_limit, rate_key) = match &raw_rate {
            None => (None, None),
            Some(r) => {
                let (rate, node) = self.rate_limit(r, &Path::root("rate_limit"), &graph);
                (Some(rate), Some(node))
            }
        };

        let steps = raw
            .steps
            .into_iter()
            .map(|step| Step {
                has_when: step.when.is_some(),
                has_for_each: step.for_each.is_some(),
                needs: step.needs,
                id: step.id,
                operation: step.operation,
                capability: step.capability,
                prefer: step.prefer,
                retry: step.retry,
                timeout: step.timeout,
                on_error: step.on_error,
                wait_for_signal: step.wait_for_signal,
                rate_limit: step.rate_limit.as_ref().map(|r| RateLimit {
                    limit: r.limit,
                    per: r.per,
                }),
                sleep: match (step.sleep, step.sleep_until.is_some()) {
                    (Some(d), _) => Some(Sleep::For(d)),
                    (None, true) => Some(Sleep::Until),
                    (None, false) => None,
                },
            })
            .collect::<Vec<_>>();
        let index = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Definition {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            input,
            steps,
            timeout: raw.timeout,
            schedules,
            triggers,
            concurrency,
            rate_limit,
            source: source.to_string(),
            index,
            compiled: Compiled {
                limits: self.compiler.limits,
                env: std::mem::replace(&mut self.compiler.env, template::environment()),
                steps: compiled_steps,
                output,
                triggers: compiled_triggers,
                concurrency_key,
                rate_key,
            },
        }
    }

    /// Checks `schedules:`: one of `cron` and `every` each, a pattern the bus's scheduler
    /// takes, a known time zone, unique names, and an input the workflow accepts.
    fn schedules(&mut self, raw: Vec<RawSchedule>, input: &Schema) -> Vec<Schedule> {
        if raw.len() > MAX_SCHEDULES {
            self.issue(
                Path::root("schedules"),
                format!(
                    "{} schedules; a definition may have at most {MAX_SCHEDULES}",
                    raw.len()
                ),
            );
        }
        let mut schedules: Vec<Schedule> = Vec::with_capacity(raw.len());
        for (i, entry) in raw.into_iter().enumerate() {
            let path = Path::root("schedules").index(i);
            let name = entry.name.unwrap_or_else(|| i.to_string());
            if let Err(err) = check_token(&name) {
                self.issue(
                    path.key("name"),
                    format!("not a valid schedule name: {err}"),
                );
            } else if let Some(first) = schedules.iter().position(|s| s.name == name) {
                self.issue(
                    path.key("name"),
                    format!("duplicate schedule name {name:?}; schedules[{first}] has it too"),
                );
            }
            let when = match (entry.cron, entry.every) {
                (Some(_), Some(_)) | (None, None) => {
                    self.issue(path.clone(), "a schedule needs one of cron and every");
                    continue;
                }
                (Some(cron), None) => {
                    if let Some(zone) = &entry.time_zone
                        && let Some(problem) = schedule::time_zone_problem(zone)
                    {
                        self.issue(path.key("time_zone"), problem);
                    }
                    match schedule::cron_pattern(&cron) {
                        Ok(pattern) => When::Cron {
                            pattern,
                            time_zone: entry.time_zone,
                        },
                        Err(problem) => {
                            self.issue(path.key("cron"), problem);
                            continue;
                        }
                    }
                }
                (None, Some(every)) => {
                    if entry.time_zone.is_some() {
                        self.issue(
                            path.key("time_zone"),
                            "only a cron schedule takes time_zone; an interval has none",
                        );
                    }
                    if every.as_secs() == 0 || every.subsec_nanos() != 0 {
                        self.issue(
                            path.key("every"),
                            "must be a whole number of seconds, at least 1s",
                        );
                    }
                    When::Every(every)
                }
            };
            let mut value = entry
                .input
                .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
            if value.is_object() {
                input.apply_defaults(&mut value);
                if let Err(errors) = input.validate(&value) {
                    for error in errors {
                        self.issue(path.key("input").schema_path(&error.path), error.message);
                    }
                }
            } else {
                self.issue(
                    path.key("input"),
                    format!(
                        "expected an object, got {}",
                        switchyard_catalog::describe(&value)
                    ),
                );
            }
            schedules.push(Schedule {
                name,
                when,
                input: value,
            });
        }
        schedules
    }

    /// Checks a `rate_limit:` and compiles its key (which reads the input and env).
    fn rate_limit(
        &mut self,
        raw: &RawRateLimit,
        path: &Path,
        graph: &Graph<'_>,
    ) -> (RateLimit, Node) {
        if !(1..=MAX_RATE).contains(&raw.limit) {
            self.issue(
                path.key("limit"),
                format!("must be between 1 and {MAX_RATE}, got {}", raw.limit),
            );
        }
        if raw.per.as_millis() == 0 || raw.per > std::time::Duration::from_secs(86_400) {
            self.issue(path.key("per"), "must be from 1ms to 1 day");
        }
        let node = self.compiler.value(&raw.key, &path.key("key"));
        let templates = self.compiler.take();
        self.references(&templates, Site::Start, graph);
        (
            RateLimit {
                limit: raw.limit,
                per: raw.per,
            },
            node,
        )
    }

    /// Checks `triggers:`: a subject of tokens and wildcards, and an input that reads only
    /// `event`, `subject` and `env` (checked against the workflow's input when it is literal).
    fn triggers(
        &mut self,
        raw: Vec<RawTrigger>,
        input: &Schema,
        graph: &Graph<'_>,
    ) -> (Vec<Trigger>, Vec<Option<Node>>) {
        if raw.len() > MAX_TRIGGERS {
            self.issue(
                Path::root("triggers"),
                format!(
                    "{} triggers; a definition may have at most {MAX_TRIGGERS}",
                    raw.len()
                ),
            );
        }
        let mut triggers = Vec::with_capacity(raw.len());
        let mut nodes = Vec::with_capacity(raw.len());
        for (i, entry) in raw.into_iter().enumerate() {
            let path = Path::root("triggers").index(i);
            if let Some(problem) = trigger_subject_problem(&entry.subject) {
                self.issue(path.key("subject"), problem);
            }
            let node = entry.input.as_ref().map(|value| {
                let input_path = path.key("input");
                let node = self.compiler.value(value, &input_path);
                let templates = self.compiler.take();
                self.references(&templates, Site::Trigger, graph);
                if let Node::Literal(literal) = &node {
                    let mut literal = literal.clone();
                    input.apply_defaults(&mut literal);
                    if let Err(errors) = input.validate(&literal) {
                        for error in errors {
                            self.issue(input_path.schema_path(&error.path), error.message);
                        }
                    }
                }
                node
            });
            triggers.push(Trigger {
                subject: entry.subject,
            });
            nodes.push(node);
        }
        (triggers, nodes)
    }

    /// The workflow's input schema: a closed object of the declared fields.
    fn input_schema(&mut self, fields: BTreeMap<String, parse::RawInputField>) -> Schema {
        let mut schema = Schema {
            ty: Type::Object,
            additional_properties: Some(false),
            ..Schema::default()
        };
        for (name, field) in fields {
            let path = Path::root("input").key(&name);
            if !is_identifier(&name) {
                self.issue(
                    path.clone(),
                    format!(
                        "input name {name:?} must start with a letter or '_' and contain only \
                         letters, digits and '_', so that templates can read it as input.{name}"
                    ),
                );
            }
            let (field, required) = field.into_schema();
            if let Err(errors) = field.check() {
                for error in errors {
                    self.issue(path.schema_path(&error.path), error.message);
                }
            }
            if required {
                schema.required.push(name.clone());
            }
            schema.properties.insert(name, field);
        }
        schema
    }

    /// Checks a step's own keys; returns the indexes of the steps it needs.
    fn step_shape(&mut self, i: usize, step: &RawStep, index: &HashMap<&str, usize>) -> Vec<usize> {
        let path = Path::root("steps").index(i);
        let sleeps = step.sleep.is_some() || step.sleep_until.is_some();
        if sleeps {
            self.sleep_shape(step, &path);
        }
        if let Some(capability) = &step.capability {
            if step.operation.is_some() {
                self.issue(
                    path.key("capability"),
                    "a step names an operation or a capability, not both",
                );
            } else if self.catalog.contract(capability).is_none() {
                let known: Vec<&str> = self.catalog.capabilities().collect();
                let hint = match switchyard_catalog::closest(capability, known.iter().copied()) {
                    Some(close) => format!(" (did you mean {close:?}?)"),
                    None => format!(" (known: {})", known.join(", ")),
                };
                self.issue(
                    path.key("capability"),
                    format!("no operation provides capability {capability:?}{hint}"),
                );
            }
        } else if !step.prefer.is_empty() {
            self.issue(
                path.key("prefer"),
                "only a step with a capability takes prefer",
            );
        }
        if let Some(bad) = step
            .prefer
            .iter()
            .find(|k| !switchyard_catalog::is_name_part(k))
        {
            self.issue(
                path.key("prefer"),
                format!("{bad:?} is not a worker kind name (letters, digits, '_' and '-')"),
            );
        }
        match &step.operation {
            _ if step.capability.is_some() => {}
            Some(operation) if self.catalog.get(operation).is_none() => {
                let hint = match self.catalog.closest(operation) {
                    Some(close) => format!(" (did you mean {close:?}?)"),
                    None => String::new(),
                };
                self.issue(
                    path.key("operation"),
                    format!("unknown operation {operation:?}{hint}"),
                );
            }
            Some(_) => {}
            None if step.wait_for_signal.is_none() && !sleeps => self.issue(
                path.clone(),
                "a step needs an operation, wait_for_signal to wait for a signal, or sleep \
                 (or sleep_until) to wait for a time",
            ),
            None => {
                for (key, present) in [
                    ("input", step.input.is_some()),
                    ("for_each", step.for_each.is_some()),
                    ("retry", step.retry.is_some()),
                    ("timeout", step.timeout.is_some()),
                ] {
                    if present {
                        let waits = if sleeps { "a time" } else { "a signal" };
                        self.issue(
                            path.key(key),
                            format!(
                                "only a step with an operation takes {key}; this step only waits for {waits}"
                            ),
                        );
                    }
                }
            }
        }

        let mut needs = Vec::new();
        for (n, need) in step.needs.iter().enumerate() {
            let need_path = path.key("needs").index(n);
            match index.get(need.as_str()) {
                Some(&j) if j == i => self.issue(need_path, "a step cannot need itself"),
                Some(&j) if needs.contains(&j) => {
                    self.issue(need_path, format!("needs step {need:?} twice"));
                }
                Some(&j) => needs.push(j),
                None => {
                    let hint = match switchyard_catalog::closest(need, index.keys().copied()) {
                        Some(close) => format!(" (did you mean {close:?}?)"),
                        None => String::new(),
                    };
                    self.issue(
                        need_path,
                        format!("needs step {need:?}, which does not exist{hint}"),
                    );
                }
            }
        }

        if let Some(retry) = &step.retry {
            let retry_path = path.key("retry");
            if let Some(n) = retry.max_attempts
                && !(1..=MAX_ATTEMPTS).contains(&n)
            {
                self.issue(
                    retry_path.key("max_attempts"),
                    format!("must be between 1 and {MAX_ATTEMPTS}, got {n}"),
                );
            }
            if let Some(m) = retry.multiplier
                && !(m.is_finite() && m >= 1.0)
            {
                self.issue(
                    retry_path.key("multiplier"),
                    format!("must be at least 1, got {m}"),
                );
            }
            if let (Some(initial), Some(max)) = (retry.initial_delay, retry.max_delay)
                && initial > max
            {
                self.issue(
                    retry_path.key("initial_delay"),
                    format!(
                        "must not exceed max_delay ({} > {})",
                        humantime::format_duration(initial),
                        humantime::format_duration(max)
                    ),
                );
            }
        }
        if step.timeout.is_some_and(|t| t.is_zero()) {
            self.issue(path.key("timeout"), "must be greater than zero");
        }
        if let Some(wait) = &step.wait_for_signal {
            if let Err(err) = check_token(&wait.name) {
                self.issue(
                    path.key("wait_for_signal").key("name"),
                    format!("not a valid signal name: {err}"),
                );
            }
            if wait.sla.is_some_and(|t| t.is_zero()) {
                self.issue(
                    path.key("wait_for_signal").key("sla"),
                    "must be greater than zero",
                );
            }
        }
        needs
    }

    /// A sleeping step only sleeps: no operation, capability or signal, and one of `sleep`
    /// and `sleep_until`.
    fn sleep_shape(&mut self, step: &RawStep, path: &Path) {
        let key = if step.sleep.is_some() {
            "sleep"
        } else {
            "sleep_until"
        };
        if step.sleep.is_some() && step.sleep_until.is_some() {
            self.issue(
                path.key("sleep_until"),
                "a step takes sleep or sleep_until, not both",
            );
        }
        for (other, present) in [
            ("operation", step.operation.is_some()),
            ("capability", step.capability.is_some()),
            ("wait_for_signal", step.wait_for_signal.is_some()),
        ] {
            if present {
                self.issue(
                    path.key(other),
                    format!("a step with {key} only sleeps; it takes no {other}"),
                );
            }
        }
        if let Some(d) = step.sleep {
            if d.is_zero() {
                self.issue(path.key("sleep"), "must be greater than zero");
            } else if d > MAX_SLEEP {
                self.issue(
                    path.key("sleep"),
                    format!("must be at most {}", humantime::format_duration(MAX_SLEEP)),
                );
            }
        }
        match &step.sleep_until {
            None | Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.is_i64() => {}
            Some(other) => self.issue(
                path.key("sleep_until"),
                format!(
                    "expected an RFC 3339 time, milliseconds since the epoch or an expression, got {}",
                    switchyard_catalog::describe(other)
                ),
            ),
        }
    }

    /// Reports every cycle in `needs` once, naming its steps in order.
    fn cycles(&mut self, steps: &[RawStep], needs: &[Vec<usize>]) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        fn visit(
            node: usize,
            needs: &[Vec<usize>],
            marks: &mut [Mark],
            stack: &mut Vec<usize>,
            found: &mut Vec<(usize, usize, Vec<usize>)>,
        ) {
            marks[node] = Mark::Open;
            stack.push(node);
            for &next in &needs[node] {
                match marks[next] {
                    Mark::New => visit(next, needs, marks, stack, found),
                    Mark::Open => {
                        let start = stack.iter().position(|&s| s == next).unwrap_or(0);
                        found.push((node, next, stack[start..].to_vec()));
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks[node] = Mark::Done;
        }
        let mut marks = vec![Mark::New; needs.len()];
        let mut found = Vec::new();
        for node in 0..needs.len() {
            if marks[node] == Mark::New {
                visit(node, needs, &mut marks, &mut Vec::new(), &mut found);
            }
        }
        for (node, next, cycle) in found {
            let mut names: Vec<&str> = cycle.iter().map(|&s| steps[s].id.as_str()).collect();
            names.push(steps[next].id.as_str());
            let need_index = steps[node]
                .needs
                .iter()
                .position(|need| *need == steps[next].id)
                .unwrap_or(0);
            self.issue(
                Path::root("steps")
                    .index(node)
                    .key("needs")
                    .index(need_index),
                format!("needs form a cycle: {}", names.join(" → ")),
            );
        }
    }

    fn graph<'g>(
        &self,
        raw: &'g RawDefinition,
        index: &HashMap<&'g str, usize>,
        needs: &[Vec<usize>],
        input: &'g Schema,
    ) -> Graph<'g>
    where
        'a: 'g,
    {
        let upstream = (0..raw.steps.len())
            .map(|i| {
                let mut seen = BTreeSet::new();
                let mut todo: Vec<usize> = needs[i].clone();
                while let Some(j) = todo.pop() {
                    if seen.insert(j) {
                        todo.extend(&needs[j]);
                    }
                }
                seen
            })
            .collect();
        let operations: Vec<Option<&str>> = raw
            .steps
            .iter()
            .map(|s| match (&s.operation, &s.capability) {
                // A capability is checked against its contract's schemas.
                (None, Some(capability)) => self
                    .catalog
                    .contract(capability)
                    .map(|spec| spec.name.as_str()),
                (operation, _) => operation
                    .as_deref()
                    .filter(|op| self.catalog.get(op).is_some()),
            })
            .collect();
        let outputs = raw
            .steps
            .iter()
            .zip(&operations)
            .map(|(step, op)| {
                if step.sleep.is_some() || step.sleep_until.is_some() {
                    return Some(sleep_output());
                }
                let spec = self.catalog.get((*op)?)?;
                Some(if step.for_each.is_some() {
                    Schema::array(spec.output.clone())
                } else {
                    spec.output.clone()
                })
            })
            .collect();
        Graph {
            ids: raw.steps.iter().map(|s| s.id.as_str()).collect(),
            index: index.clone(),
            upstream,
            outputs,
            operations,
            for_each: raw.steps.iter().map(|s| s.for_each.is_some()).collect(),
            waits: raw
                .steps
                .iter()
                .map(|s| s.wait_for_signal.is_some())
                .collect(),
            items: vec![None; raw.steps.len()],
            input,
            globals: template::globals(&self.compiler.env),
            env_allow: self.options.env_allow.clone(),
        }
    }

    fn compile_step(&mut self, i: usize, step: &RawStep, graph: &mut Graph<'_>) -> CompiledStep {
        let path = Path::root("steps").index(i);
        let mut compiled = CompiledStep::default();

        if let Some(when) = &step.when {
            let condition = self.compiler.condition(when, &path.key("when"));
            let templates = self.compiler.take();
            self.references(&templates, Site::When(i), graph);
            compiled.when = condition.map(|body| Unit {
                steps: template::steps_used(templates.iter().flat_map(|t| &t.vars)),
                body,
            });
        }

        if let Some(rate) = &step.rate_limit {
            let rate_path = path.key("rate_limit");
            if step.operation.is_none() && step.capability.is_none() {
                self.issue(
                    rate_path.clone(),
                    "only a step that runs an operation takes rate_limit",
                );
            }
            let (_, node) = self.rate_limit(rate, &rate_path, graph);
            compiled.rate_key = Some(node);
        }

        if let Some(until) = &step.sleep_until {
            let until_path = path.key("sleep_until");
            let node = self.compiler.value(until, &until_path);
            let templates = self.compiler.take();
            self.references(&templates, Site::When(i), graph);
            if let Node::Literal(value) = &node
                && let Err(problem) = schedule::instant_ms(value)
            {
                self.issue(until_path, problem);
            }
            compiled.sleep_until = Some(Unit {
                steps: template::steps_used(templates.iter().flat_map(|t| &t.vars)),
                body: node,
            });
        }

        let mut item_schema = None;
        if let Some(for_each) = &step.for_each {
            let for_each_path = path.key("for_each");
            let node = match for_each {
                Value::String(s) => self
                    .compiler
                    .expression_text(s, &for_each_path)
                    .map(Node::Expr),
                Value::Array(_) => Some(self.compiler.value(for_each, &for_each_path)),
                other => {
                    self.issue(
                        for_each_path.clone(),
                        format!(
                            "expected a list or an expression, got {}",
                            switchyard_catalog::describe(other)
                        ),
                    );
                    None
                }
            };
            let templates = self.compiler.take();
            self.references(&templates, Site::ForEach(i), graph);
            if let [only] = templates.as_slice()
                && let Some(expression) = &only.expression
            {
                item_schema = self.item_schema(expression, &for_each_path, graph);
            }
            compiled.for_each = node.map(|body| Unit {
                steps: template::steps_used(templates.iter().flat_map(|t| &t.vars)),
                body,
            });
        }

        if let Some(input) = &step.input {
            let input_path = path.key("input");
            let node = self.compiler.value(input, &input_path);
            let templates = self.compiler.take();
            graph.items[i] = item_schema;
            self.references(&templates, Site::Input(i), graph);
            if let Some(op) = graph.operations[i]
                && let Some(spec) = self.catalog.get(op)
            {
                self.check_input(Item::Node(&node), &spec.input, &input_path, op);
            }
            compiled.input = Some(Unit {
                steps: template::steps_used(templates.iter().flat_map(|t| &t.vars)),
                body: node,
            });
        } else if let Some(op) = graph.operations[i]
            && let Some(spec) = self.catalog.get(op)
        {
            let empty = Value::Object(serde_json::Map::new());
            self.check_input(Item::Value(&empty), &spec.input, &path.key("input"), op);
        }
        // The engine enforces the schemas of operations declared at run time, and a
        // capability's contract whichever kind runs it.
        if let Some(op) = graph.operations[i]
            && (step.capability.is_some() || Catalog::builtin().get(op).is_none())
            && let Some(spec) = self.catalog.get(op)
        {
            compiled.declared = Some(DeclaredContract {
                operation: op.to_owned(),
                version: spec.version,
                input: spec.input.clone(),
                output: spec.output.clone(),
            });
        }
        compiled
    }

    /// The schema of `item` when `for_each` is a plain path (`steps.x.output.tasks`) to a
    /// declared list; reports a path that is declared as something other than a list.
    fn item_schema(&mut self, expression: &str, path: &Path, graph: &Graph<'_>) -> Option<Schema> {
        let parts: Vec<&str> = expression.split('.').collect();
        if !parts.iter().all(|p| is_identifier(p)) {
            return None;
        }
        let found = match parts.as_slice() {
            ["input", rest @ ..] => graph.input.lookup(rest),
            ["steps", id, "output", rest @ ..] => {
                let j = *graph.index.get(id)?;
                graph.outputs[j].as_ref()?.lookup(rest)
            }
            _ => return None,
        };
        match found {
            Lookup::Declared(schema) => match schema.ty {
                Type::Array => schema.items.as_deref().cloned(),
                Type::Any => None,
                ty => {
                    self.issue(
                        path.clone(),
                        format!("for_each needs a list, but {expression} is {}", article(ty)),
                    );
                    None
                }
            },
            _ => None,
        }
    }

    /// Checks what the templates at `site` read.
    fn references(&mut self, templates: &[TemplateInfo], site: Site, graph: &Graph<'_>) {
        for template in templates {
            for var in &template.vars {
                if let Some(message) = reference_problem(var, site, graph) {
                    self.issue(template.path.clone(), message);
                }
            }
        }
    }

    /// Checks a step's input against its operation's input schema, as far as it is known
    /// before rendering: required fields present, no undeclared fields in closed objects,
    /// literal values of the declared type.
    fn check_input(&mut self, item: Item<'_>, schema: &Schema, path: &Path, op: &str) {
        let item = match item {
            Item::Node(Node::Expr(_)) => return,
            Item::Node(Node::Text(_)) => {
                if !matches!(schema.ty, Type::String | Type::Any) {
                    self.issue(
                        path.clone(),
                        format!(
                            "expected {}, but a template with text around its {{{{ }}}} always renders \
                             to a string; write only \"{{{{ expression }}}}\" to keep the expression's type",
                            schema.ty
                        ),
                    );
                }
                return;
            }
            Item::Node(Node::Literal(value)) => Item::Value(value),
            other => other,
        };
        if schema.ty == Type::Any {
            return;
        }
        let entries: Vec<(&str, Item<'_>)> = match item {
            Item::Node(Node::Object(fields)) => fields
                .iter()
                .map(|(k, n)| (k.as_str(), Item::Node(n)))
                .collect(),
            Item::Value(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.as_str(), Item::Value(v)))
                .collect(),
            Item::Node(Node::Array(items)) => {
                let items: Vec<Item<'_>> = items.iter().map(Item::Node).collect();
                return self.check_array(&items, schema, path, op);
            }
            Item::Value(Value::Array(items)) => {
                let items: Vec<Item<'_>> = items.iter().map(Item::Value).collect();
                return self.check_array(&items, schema, path, op);
            }
            Item::Value(scalar) => {
                if let Err(errors) = schema.validate(scalar) {
                    for error in errors {
                        self.issue(path.clone(), error.message);
                    }
                }
                return;
            }
            Item::Node(_) => return,
        };
        if schema.ty != Type::Object {
            self.issue(path.clone(), format!("expected {}, got object", schema.ty));
            return;
        }
        for name in &schema.required {
            let present = entries
                .iter()
                .any(|(k, item)| *k == name && !matches!(item, Item::Value(Value::Null)));
            let defaulted = schema
                .properties
                .get(name)
                .is_some_and(|p| p.default.is_some());
            if !present && !defaulted {
                self.issue(
                    path.key(name),
                    format!("missing required field (input of {op})"),
                );
            }
        }
        for (name, item) in entries {
            match schema.properties.get(name) {
                Some(_) if matches!(item, Item::Value(Value::Null)) => {}
                Some(property) => self.check_input(item, property, &path.key(name), op),
                None if schema.allows_additional() => {}
                None => {
                    let declared: Vec<&str> =
                        schema.properties.keys().map(String::as_str).collect();
                    let hint = match switchyard_catalog::closest(name, declared.iter().copied()) {
                        Some(close) => format!(" (did you mean {close:?}?)"),
                        None => String::new(),
                    };
                    let expected = if declared.is_empty() {
                        "no fields are accepted here".to_string()
                    } else {
                        format!("expected one of: {}", declared.join(", "))
                    };
                    self.issue(
                        path.key(name),
                        format!("{op} does not take this field{hint}; {expected}"),
                    );
                }
            }
        }
    }

    fn check_array(&mut self, items: &[Item<'_>], schema: &Schema, path: &Path, op: &str) {
        if schema.ty != Type::Array {
            self.issue(path.clone(), format!("expected {}, got array", schema.ty));
            return;
        }
        let len = items.len() as u64;
        if let Some(min) = schema.min_items
            && len < min
        {
            self.issue(
                path.clone(),
                format!("must have at least {min} items, got {len}"),
            );
        }
        if let Some(max) = schema.max_items
            && len > max
        {
            self.issue(
                path.clone(),
                format!("must have at most {max} items, got {len}"),
            );
        }
        if let Some(item_schema) = &schema.items {
            for (i, item) in items.iter().enumerate() {
                self.check_input(*item, item_schema, &path.index(i), op);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Item<'a> {
    Node(&'a Node),
    Value(&'a Value),
}

/// What is wrong with reading `var` (a dotted path such as `steps.research.output.summary`)
/// from a template at `site`, if anything.
fn reference_problem(var: &str, site: Site, graph: &Graph<'_>) -> Option<String> {
    let parts: Vec<&str> = var.split('.').collect();
    let (root, rest) = parts.split_first()?;
    if graph.globals.contains(*root) {
        return None;
    }
    if site == Site::Trigger && !matches!(*root, "event" | "subject" | "env") {
        return Some(format!(
            "refers to {root}; a trigger's input can read event (the message), subject and env"
        ));
    }
    if site == Site::Start && !matches!(*root, "input" | "env") {
        return Some(format!(
            "refers to {root}; a concurrency key can read input and env, known at the start"
        ));
    }
    let own = match site {
        Site::Input(i) | Site::When(i) | Site::ForEach(i) => Some(i),
        Site::Output | Site::Trigger | Site::Start => None,
    };
    match *root {
        "input" => missing_field(graph.input, "input", rest, ""),
        "steps" => {
            let Some((id, rest)) = rest.split_first() else {
                // the output may read every step; a step must name the ones it reads
                return own.map(|_| {
                    "refers to all of steps (or looks a step up by subscript); name one step, \
                     as in steps.<id>.output"
                        .to_string()
                });
            };
            let Some(&j) = graph.index.get(id) else {
                let hint = match switchyard_catalog::closest(id, graph.ids.iter().copied()) {
                    Some(close) => format!(" (did you mean {close:?}?)"),
                    None => String::new(),
                };
                return Some(format!("refers to step {id:?}, which does not exist{hint}"));
            };
            if let Some(i) = own {
                if i == j {
                    return Some(format!(
                        "refers to its own step {id:?}; a step can only read the results of the \
                         steps it needs"
                    ));
                }
                if !graph.upstream[i].contains(&j) {
                    return Some(format!(
                        "refers to step {id:?}, which is not upstream of step {:?}; add {id:?} to \
                         its needs (directly or through a step it needs)",
                        graph.ids[i]
                    ));
                }
            }
            match rest.split_first() {
                None => None,
                Some((&"output", rest)) => {
                    let schema = graph.outputs[j].as_ref()?;
                    let owner = match (graph.operations[j], graph.for_each[j]) {
                        (Some(op), true) => format!(" (a list of {op} outputs, one per item)"),
                        (Some(op), false) => format!(" ({op})"),
                        (None, _) => String::new(),
                    };
                    missing_field(schema, &format!("steps.{id}.output"), rest, &owner)
                }
                Some((&("status" | "error"), _)) => None,
                Some((other, _)) => Some(format!(
                    "refers to steps.{id}.{other}; a step's result has only output, status and error"
                )),
            }
        }
        "item" | "index" => match site {
            Site::Input(i) if graph.for_each[i] => match (*root, &graph.items[i]) {
                ("item", Some(schema)) => missing_field(schema, "item", rest, ""),
                _ => None,
            },
            _ => Some(format!(
                "refers to {root}, which is only defined in the input of a step with for_each"
            )),
        },
        "signal" => match site {
            Site::Input(i) | Site::ForEach(i) if graph.waits[i] => None,
            _ => Some(
                "refers to signal, which is only defined in the input of a step with \
                 wait_for_signal"
                    .into(),
            ),
        },
        "event" | "subject" if site == Site::Trigger => None,
        "env" => match rest.first() {
            None => Some("refers to all of env; name one variable, as in env.NAME".into()),
            Some(name) if graph.env_allow.iter().any(|a| a == name) => None,
            Some(name) => {
                let allowed = if graph.env_allow.is_empty() {
                    "none are".to_string()
                } else {
                    format!("allowed are: {}", graph.env_allow.join(", "))
                };
                Some(format!(
                    "refers to env.{name}, which is not an allowed environment variable ({allowed})"
                ))
            }
        },
        other => {
            let hint = match switchyard_catalog::closest(other, ROOTS) {
                Some(close) => format!(" (did you mean {close:?}?)"),
                None => String::new(),
            };
            Some(format!(
                "unknown variable {other:?}{hint}; templates can read input, steps, item, index, \
                 signal and env"
            ))
        }
    }
}

/// Why `prefix.rest…` is not declared by `schema` (the schema of `prefix`), if it is not.
fn missing_field(schema: &Schema, prefix: &str, rest: &[&str], owner: &str) -> Option<String> {
    let Lookup::Missing { at, declared, on } = schema.lookup(rest) else {
        return None;
    };
    // the first segment that is not declared, found again to name what it was looked up on
    let depth = (0..rest.len())
        .find(|&k| matches!(schema.lookup(&rest[..=k]), Lookup::Missing { .. }))
        .unwrap_or(0);
    let container = std::iter::once(prefix)
        .chain(rest[..depth].iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    let var = std::iter::once(prefix)
        .chain(rest.iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    let owner = if depth == 0 { owner } else { "" };
    Some(match on {
        Type::Object => {
            let hint = match switchyard_catalog::closest(&at, declared.iter().map(String::as_str)) {
                Some(close) => format!(" (did you mean {close:?}?)"),
                None => String::new(),
            };
            let list = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            };
            format!(
                "refers to {var}, but {container}{owner} has no field {at:?}{hint}; declared: {list}"
            )
        }
        Type::Array => format!(
            "refers to {var}, but {container}{owner} is a list; loop over it, index it or use a \
             filter such as first"
        ),
        ty => format!("refers to {var}, but {container}{owner} is {}", article(ty)),
    })
}

fn article(ty: Type) -> String {
    match ty {
        Type::Integer | Type::Array | Type::Object | Type::Any => format!("an {ty}"),
        _ => format!("a {ty}"),
    }
}

/// Why `subject` cannot be a trigger's subject, if it cannot.
fn trigger_subject_problem(subject: &str) -> Option<String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() > 16 {
        return Some(format!("{} tokens; at most 16", tokens.len()));
    }
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return Some("> may only be the last token".into()),
            _ => {
                if let Err(err) = check_token(token) {
                    return Some(format!(
                        "{subject:?} is not a subject of tokens and wildcards (* and a last >): \
                         {err}"
                    ));
                }
            }
        }
    }
    None
}

/// What a sleeping step's output is: when it woke.
fn sleep_output() -> Schema {
    Schema::object(
        [
            ("until_ms", Schema::of(Type::Integer)),
            ("slept_ms", Schema::of(Type::Integer)),
        ],
        &["until_ms", "slept_ms"],
    )
}

/// Why `id` cannot be a step id, if it cannot.
fn id_problem(id: &str) -> Option<String> {
    if let Err(err) = check_token(id) {
        return Some(format!("not a valid step id: {err}"));
    }
    if !is_identifier(id) {
        return Some(format!(
            "step id {id:?} must start with a letter or '_' and contain only letters, digits and \
             '_', so that templates can read it as steps.{id}"
        ));
    }
    None
}

/// Whether templates can name `name` with attribute syntax (`input.<name>`).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
