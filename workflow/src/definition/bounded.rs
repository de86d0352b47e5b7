//! Rendering within limits of memory.
//!
//! minijinja's fuel counts instructions, not bytes: `{% set a = a ~ a %}` doubles a string in
//! one instruction, so thirty of them ask for a gigabyte. Every render therefore runs a copy of
//! the compiled instructions in which each step that can make a value larger is checked
//! before (or, where the growth is bounded by a small factor, right after) it runs:
//!
//! - `~`, `+` and `*` call functions that compute the result's size first and refuse one over
//!   [`RenderLimits::value_bytes`] (or a list over [`MAX_ITEMS`] items);
//! - the filters that can multiply their input (`replace`, `join`, `indent`, `format`,
//!   `tojson`, `pprint`, `string`, `escape`) check their arguments first, and the
//!   result of every filter, function and method call is checked after;
//! - everything written to the output (and to `{% set %}` captures) is counted against
//!   [`RenderLimits::output_bytes`].
//!
//! A refusal is a render error naming the limit, so a definition that would exceed it is
//! rejected at validation (its dry run fails) and a step whose rendering would exceed it at
//! run time fails with the reason.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use minijinja::machinery::{self, Instruction, Instructions};
use minijinja::value::{Kwargs, Rest, StringInput, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, Expression, State, Value, filters};

/// Items a list built by a template may have.
pub const MAX_ITEMS: usize = 100_000;

/// How large a render may make things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// The largest value (string, or a list's or map's text) an operation may produce.
    pub value_bytes: usize,
    /// The most one template may write, captures included.
    pub output_bytes: usize,
    /// The largest rendered input of a step (its JSON).
    pub step_input_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            value_bytes: 1024 * 1024,
            output_bytes: 1024 * 1024,
            step_input_bytes: 1024 * 1024,
        }
    }
}

thread_local! {
    /// The limits of the render running on this thread (renders are synchronous).
    static LIMITS: Cell<RenderLimits> = Cell::new(RenderLimits::default());
    /// Bytes the running render has written so far.
    static WRITTEN: Cell<usize> = const { Cell::new(0) };
}

const CONCAT: &str = "__switchyard_concat";
const ADD: &str = "__switchyard_add";
const MUL: &str = "__switchyard_mul";
const CHECK: &str = "__switchyard_check";
const WRITE: &str = "__switchyard_write";

/// The marker of a refusal in a render error's detail.
pub(super) const OVER_LIMIT: &str = "over the render limit";

fn over(what: impl fmt::Display, limit: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{what} would be {OVER_LIMIT} of {limit} bytes"),
    )
}

fn limits() -> RenderLimits {
    LIMITS.with(Cell::get)
}

/// Counts what is written, failing past `cap`.
struct Counter {
    n: usize,
    cap: usize,
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n += s.len();
        if self.n > self.cap {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// The length of `v`'s text, or `None` when it is longer than `cap` (found without building
/// it).
fn text_len(v: &Value, cap: usize) -> Option<usize> {
    if let Some(s) = v.as_str() {
        return (s.len() <= cap).then_some(s.len());
    }
    let mut counter = Counter { n: 0, cap };
    write!(counter, "{v}").ok().map(|()| counter.n)
}

/// Refuses a value whose text is longer than the value limit.
fn check_value(v: &Value, what: &str) -> Result<(), Error> {
    let limit = limits().value_bytes;
    match text_len(v, limit) {
        Some(_) => Ok(()),
        None => Err(over(what, limit)),
    }
}

/// The number of items of a list (not of a string's characters).
fn items(v: &Value) -> Option<usize> {
    if v.as_str().is_some() { None } else { v.len() }
}

/// The environment `+` and `*` are evaluated in once their size is checked: their meaning
/// does not depend on the definition, so each is compiled once per process, not per use.
static OPS: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
});

static PLUS: LazyLock<Result<Expression<'static, 'static>, Error>> =
    LazyLock::new(|| OPS.compile_expression("a + b"));

static TIMES: LazyLock<Result<Expression<'static, 'static>, Error>> =
    LazyLock::new(|| OPS.compile_expression("a * b"));

/// Evaluates `a <op> b` with minijinja's own semantics.
fn delegate(
    op: &LazyLock<Result<Expression<'static, 'static>, Error>>,
    a: Value,
    b: Value,
) -> Result<Value, Error> {
    match &**op {
        Ok(expr) => expr.eval(minijinja::context! { a => a, b => b }),
        Err(e) => Err(Error::new(e.kind(), e.to_string())),
    }
}

fn concat(a: &Value, b: &Value) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let la = text_len(a, limit).ok_or_else(|| over("a `~` operand", limit))?;
    let lb = text_len(b, limit).ok_or_else(|| over("a `~` operand", limit))?;
    if la + lb > limit {
        return Err(over(format_args!("`~` of {} bytes", la + lb), limit));
    }
    Ok(Value::from(format!("{a}{b}")))
}

fn add(a: Value, b: Value) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str())
        && x.len() + y.len() > limit
    {
        return Err(over(
            format_args!("`+` of {} bytes", x.len() + y.len()),
            limit,
        ));
    }
    if let (Some(x), Some(y)) = (items(&a), items(&b))
        && x + y > MAX_ITEMS
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "`+` would make a list of {} items, {OVER_LIMIT} of {MAX_ITEMS} items",
                x + y
            ),
        ));
    }
    delegate(&PLUS, a, b)
}

fn mul(a: Value, b: Value) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    for (seq, n) in [(&a, &b), (&b, &a)] {
        let Some(n) = n.as_usize() else { continue };
        if let Some(s) = seq.as_str() {
            if s.len().saturating_mul(n) > limit {
                return Err(over(
                    format_args!("`*` repeating {} bytes {n} times", s.len()),
                    limit,
                ));
            }
        } else if let Some(len) = items(seq)
            && len.saturating_mul(n) > MAX_ITEMS
        {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "`*` would make a list of {len}×{n} items, {OVER_LIMIT} of {MAX_ITEMS} items"
                ),
            ));
        }
    }
    delegate(&TIMES, a, b)
}

/// Counts what is about to be written against the output limit.
fn write(v: Value) -> Result<Value, Error> {
    let limit = limits().output_bytes;
    let so_far = WRITTEN.with(Cell::get);
    let len = text_len(&v, limit.saturating_sub(so_far))
        .ok_or_else(|| over("the rendered text", limit))?;
    WRITTEN.with(|w| w.set(so_far + len));
    Ok(v)
}

/// Refuses a `replace` whose result would be over the limit.
fn replace(
    state: &mut State,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let (s, f, t) = (value.as_str(), from.as_str(), to.as_str());
    if t.len() > f.len() {
        let hits = if f.is_empty() {
            s.chars().count() + 1
        } else {
            s.matches(f).count()
        };
        let size = s.len() + hits.saturating_mul(t.len() - f.len());
        if size > limit {
            return Err(over(format_args!("`replace` of {size} bytes"), limit));
        }
    }
    filters::replace(state, value, from, to)
}

fn join(
    state: &mut State,
    value: &Value,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let attribute_kw: Option<String> = kwargs.get("attribute")?;
    let attribute_name = attribute.map(str::to_owned).or(attribute_kw);
    let sep = joiner.as_ref().map_or(0, |j| j.as_str().len());
    let mut size = 0usize;
    if let Ok(iter) = value.try_iter() {
        for (i, item) in iter.enumerate() {
            let item = match &attribute_name {
                Some(name) => item.get_attr(name).unwrap_or(item),
                None => item,
            };
            size += text_len(&item, limit).unwrap_or(limit + 1) + if i > 0 { sep } else { 0 };
            if size > limit {
                return Err(over("`join`", limit));
            }
        }
    }
    filters::join(state, value, joiner, attribute, kwargs)
}

fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    indent_first_line: Option<bool>,
    indent_blank_lines: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let width_kw: Option<usize> = kwargs.get("width")?;
    let w = width.or(width_kw).unwrap_or(4);
    let lines = value.as_str().lines().count() + 1;
    let size = value.as_str().len() + lines.saturating_mul(w);
    if size > limit {
        return Err(over(format_args!("`indent` of {size} bytes"), limit));
    }
    filters::indent(value, width, indent_first_line, indent_blank_lines, kwargs)
}

fn format(
    state: &mut State,
    format_str: &Value,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    // A width or precision is how `%s` could ask for more than its argument.
    if let Some(fmt) = format_str.as_str() {
        let mut digits = String::new();
        for c in fmt.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.len() > 7 || digits.parse::<usize>().is_ok_and(|n| n > limit) {
                return Err(over("a `format` width", limit));
            }
            digits.clear();
        }
    }
    filters::format(state, format_str, args)
}

fn tojson(value: &Value, indent: Option<Value>, args: Kwargs) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let mut counter = Counter { n: 0, cap: limit };
    // The compact form; indentation adds at most a line per value, checked after.
    if serde_json::to_writer(FmtIo(&mut counter), value).is_err() {
        return Err(over("`tojson`", limit));
    }
    let out = filters::tojson(value, indent, args)?;
    check_value(&out, "`tojson`")?;
    Ok(out)
}

/// `io::Write` over a `fmt::Write` counter, for serde_json.
struct FmtIo<'a>(&'a mut Counter);

impl std::io::Write for FmtIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.n += buf.len();
        if self.0.n > self.0.cap {
            Err(std::io::Error::other("over the limit"))
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pprint(value: &Value) -> Result<Value, Error> {
    let limit = limits().value_bytes;
    let mut counter = Counter { n: 0, cap: limit };
    if write!(counter, "{value:#?}").is_err() {
        return Err(over("`pprint`", limit));
    }
    Ok(Value::from(filters::pprint(value)))
}

fn string(state: &State, value: &Value) -> Result<Value, Error> {
    check_value(value, "`string`")?;
    filters::string(state, value)
}

fn escape(state: &mut State, value: &Value) -> Result<Value, Error> {
    check_value(value, "`escape`")?;
    filters::escape(state, value)
}

/// Registers the checked operations and filters in `env`.
pub(super) fn install(env: &mut Environment<'static>) {
    env.add_function(CONCAT, |a: Value, b: Value| concat(&a, &b));
    env.add_function(ADD, add);
    env.add_function(MUL, mul);
    env.add_function(CHECK, |v: Value| check_value(&v, "a value").map(|()| v));
    env.add_function(WRITE, write);
    env.add_filter("replace", replace);
    env.add_filter("join", join);
    env.add_filter("indent", indent);
    env.add_filter("format", format);
    env.add_filter("tojson", tojson);
    env.add_filter("pprint", pprint);
    env.add_filter("string", string);
    env.add_filter("escape", escape);
    env.add_filter("e", escape);
}

/// What one instruction becomes in the checked copy.
fn expand<'s>(ins: &Instruction<'s>) -> Vec<Instruction<'s>> {
    match ins {
        Instruction::Emit => vec![Instruction::CallFunction(WRITE, Some(1)), Instruction::Emit],
        Instruction::EmitRaw(s) => vec![
            Instruction::LoadConst(Value::from(*s)),
            Instruction::CallFunction(WRITE, Some(1)),
            Instruction::Emit,
        ],
        Instruction::StringConcat => vec![Instruction::CallFunction(CONCAT, Some(2))],
        Instruction::Add => vec![Instruction::CallFunction(ADD, Some(2))],
        Instruction::Mul => vec![Instruction::CallFunction(MUL, Some(2))],
        Instruction::ApplyFilter(..)
        | Instruction::CallMethod(..)
        | Instruction::CallObject(..) => {
            vec![ins.clone(), Instruction::CallFunction(CHECK, Some(1))]
        }
        Instruction::CallFunction(name, _) if !name.starts_with("__switchyard_") => {
            vec![ins.clone(), Instruction::CallFunction(CHECK, Some(1))]
        }
        other => vec![other.clone()],
    }
}

/// A copy of `src` with every growth checked (see the module's documentation); jumps are
/// moved to where their targets went.
fn checked<'s>(src: &Instructions<'s>) -> Instructions<'s> {
    let mut expanded = Vec::new();
    let mut at = Vec::new();
    let mut i = 0;
    while let Some(ins) = src.get(i) {
        at.push(u32::try_from(expanded.len()).unwrap_or(u32::MAX));
        let line = src
            .get_line(i)
            .and_then(|l| u16::try_from(l).ok())
            .unwrap_or(0);
        expanded.extend(expand(ins).into_iter().map(|e| (e, line)));
        i += 1;
    }
    at.push(u32::try_from(expanded.len()).unwrap_or(u32::MAX));
    let target = |t: u32| at.get(t as usize).copied().unwrap_or(t);
    let mut out = Instructions::new(src.name(), src.source());
    for (ins, line) in expanded {
        let ins = match ins {
            Instruction::Jump(t) => Instruction::Jump(target(t)),
            Instruction::JumpIfFalse(t) => Instruction::JumpIfFalse(target(t)),
            Instruction::JumpIfFalseOrPop(t) => Instruction::JumpIfFalseOrPop(target(t)),
            Instruction::JumpIfTrueOrPop(t) => Instruction::JumpIfTrueOrPop(target(t)),
            Instruction::Iterate(t) => Instruction::Iterate(target(t)),
            other => other,
        };
        out.add_with_line(ins, line);
    }
    out
}

/// Restores the previous limits when a render ends.
struct Scope(RenderLimits, usize);

impl Drop for Scope {
    fn drop(&mut self) {
        LIMITS.with(|l| l.set(self.0));
        WRITTEN.with(|w| w.set(self.1));
    }
}

/// Renders template `name` of `env` within `limits`: its text and, for a whole-value
/// expression, the value stored in `result`.
pub(super) fn render(
    env: &Environment<'static>,
    name: &str,
    ctx: Value,
    limits: RenderLimits,
    result: &str,
) -> Result<(String, Option<Value>), Error> {
    let template = env.get_template(name)?;
    let compiled = machinery::get_compiled_template(&template);
    let instructions = checked(&compiled.instructions);
    let blocks = compiled
        .blocks
        .iter()
        .map(|(k, v)| (*k, checked(v)))
        .collect();
    let _scope = Scope(
        LIMITS.with(|l| l.replace(limits)),
        WRITTEN.with(|w| w.replace(0)),
    );
    let mut text = String::new();
    let mut out = machinery::make_string_output(&mut text);
    let (_, state) = machinery::eval(
        env,
        &instructions,
        ctx,
        &blocks,
        &mut out,
        compiled.initial_auto_escape.clone(),
    )?;
    let value = state.lookup(result);
    drop(state);
    Ok((text, value))
}
