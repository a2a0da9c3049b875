//! Owns `--filter` and `--group-by`: jq expressions (CONTRACT.md section 6) compiled once with the jaq crates and run per message.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data::JustLut, Compiler, Ctx, Exn, Vars};
use jaq_json::Val;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

type Data = JustLut<Val>;

/// How long one message may take in a filter before it counts as a run-time error for that
/// message (contract section 6: no match). jq expressions over a message take microseconds;
/// one that loops (`def f: f; f`) never returns.
pub(crate) const BUDGET: Duration = Duration::from_secs(2);

/// After this many messages ran past the budget, the expression is not run again: each of
/// those runs still spins a thread that cannot be stopped, and the expression is evidently
/// broken, so every later message counts as an error at once.
pub(crate) const MAX_OVERRUNS: usize = 2;

/// A compiled jq expression. It holds only the program graph (plain data and function
/// pointers), never a `Val`, so it is `Send + Sync` even though jaq's values use `Rc`.
///
/// Messages are evaluated on a worker thread, so that the caller can stop waiting after
/// [`BUDGET`]: jaq has no step limit, and a thread cannot be interrupted. A worker that runs
/// past the budget is abandoned (it ends with the process) and a new one is started.
pub(crate) struct Filter {
    program: Arc<jaq_core::Filter<Data>>,
    /// A second expression run on the same jaq value when the first matches (`--group-by`
    /// after `--filter`): a message is converted to a jaq value once.
    then: Option<Arc<jaq_core::Filter<Data>>>,
    budget: Duration,
    evaluator: Mutex<Evaluator>,
}

#[derive(Default)]
struct Evaluator {
    worker: Option<Worker>,
    overruns: usize,
}

/// Messages to evaluate in order from an index on, each as compact JSON (the worker reads it
/// straight into a jaq value, with no `serde_json::Value` in between), and what is wanted of
/// them. The worker sends one answer per message.
type Job = (Arc<Vec<Vec<u8>>>, usize, Want);
type Answer = Result<Verdict, String>;

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The truthiness of the first output.
    Truth,
    /// The first output itself.
    Value,
    /// The truthiness of the first output and, when true, the second expression's first output.
    TruthThenValue,
}

/// What the expression said of one message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// The jq truthiness of the first output (no output: false).
    pub matched: bool,
    /// The first output, when wanted (`first_value`), or the second expression's first output
    /// (or its error) when the first matched (`select_then`).
    pub value: Option<Result<Option<Value>, String>>,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<Answer>,
}

impl Worker {
    fn start(
        program: Arc<jaq_core::Filter<Data>>,
        then: Option<Arc<jaq_core::Filter<Data>>>,
    ) -> Result<Worker, String> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (answer_tx, answers) = mpsc::channel::<Answer>();
        std::thread::Builder::new()
            .name("jq".into())
            .stack_size(crate::STACK_SIZE)
            .spawn(move || {
                for (messages, from, want) in job_rx {
                    for message in &messages[from..] {
                        let answer = evaluate_on(&program, then.as_deref(), message, want);
                        if answer_tx.send(answer).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the filter's thread: {e}"))?;
        Ok(Worker { jobs, answers })
    }
}

/// One job on the worker thread: the message becomes a jaq value once, for both expressions.
fn evaluate_on(
    program: &jaq_core::Filter<Data>,
    then: Option<&jaq_core::Filter<Data>>,
    message: &[u8],
    want: Want,
) -> Answer {
    let mut json = serde_json::Deserializer::from_slice(message);
    // The message was written by serde_json from a value it holds, so its depth is already
    // bounded (bodies deeper than serde_json's limit are text); the worker's stack is large.
    json.disable_recursion_limit();
    let input = Val::deserialize(&mut json).map_err(|e| format!("cannot read the message: {e}"))?;
    let first_out = first(program, input.clone())?;
    let matched = first_out.as_ref().is_some_and(jaq_core::ValT::as_bool);
    let value = match (want, then) {
        (Want::Truth, _) => None,
        (Want::Value, _) => Some(Ok(first_out.as_ref().map(val_to_json))),
        (Want::TruthThenValue, Some(then)) if matched => {
            Some(first(then, input).map(|v| v.as_ref().map(val_to_json)))
        }
        (Want::TruthThenValue, _) => None,
    };
    Ok(Verdict { matched, value })
}

// jaq_json::Val is !Send; this fails to build if the compiled program ever starts holding one.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Filter>();
};

/// Why an expression was refused. Display is several lines: the reason, the expression's
/// line and a caret under the offending column.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    /// The expression does not parse.
    #[error("invalid filter: {message}\n{}", caret(.expr, *.offset))]
    Syntax {
        message: String,
        expr: String,
        offset: usize,
    },
    /// The expression nests deeper, or chains more operators, than dlq evaluates safely.
    #[error("invalid filter: {message}")]
    TooBig { message: String },
    /// The expression names a filter, variable, label or module that does not exist.
    #[error("invalid filter: {message}\n{}", caret(.expr, *.offset))]
    Undefined {
        message: String,
        expr: String,
        offset: usize,
    },
}

impl FilterError {
    /// What is wrong, without the position lines.
    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        match self {
            FilterError::Syntax { message, .. }
            | FilterError::Undefined { message, .. }
            | FilterError::TooBig { message } => message,
        }
    }
}

impl Filter {
    /// Parses and compiles `expr` with jq's core, std and JSON definitions. Everything that
    /// can be known without a message (syntax, undefined names) fails here.
    pub(crate) fn compile(expr: &str) -> Result<Filter, FilterError> {
        check_size(expr)?;
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: expr,
                    path: (),
                },
            )
            .map_err(|errs| load_error(expr, errs))?;
        let program = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| compile_error(expr, errs))?;
        Ok(Filter {
            program: Arc::new(program),
            then: None,
            budget: BUDGET,
            evaluator: Mutex::default(),
        })
    }

    /// The same expression with another per-message budget (tests).
    #[cfg(test)]
    pub(crate) fn with_budget(mut self, budget: Duration) -> Filter {
        self.budget = budget;
        self
    }

    /// This filter, then `next` on the messages it matches, run together on one jaq value per
    /// message (`select_then`).
    pub(crate) fn then(mut self, next: &Filter) -> Filter {
        self.then = Some(next.program.clone());
        self
    }

    /// jq truthiness of the first output; no output is no match.
    pub(crate) fn matches(&self, msg: &impl Serialize) -> Result<bool, String> {
        Ok(self.evaluate(msg, Want::Truth)?.matched)
    }

    /// The first output as JSON (for grouping and transforms). None when the expression yields
    /// nothing.
    pub(crate) fn first_value(&self, msg: &impl Serialize) -> Result<Option<Value>, String> {
        self.evaluate(msg, Want::Value)?.value.unwrap_or(Ok(None))
    }

    /// Whether the message matches and, when it does and a second expression was chained with
    /// [`Filter::then`], that expression's first output (or its error).
    pub(crate) fn select_then(&self, msg: &impl Serialize) -> Answer {
        self.evaluate(msg, Want::TruthThenValue)
    }

    /// Whether each message matches, in order: [`Filter::matches`] for a batch, handed to the
    /// worker thread at once (one hand-over instead of one per message; each message keeps its
    /// own budget).
    pub(crate) fn matches_all<M: Serialize>(&self, msgs: &[M]) -> Vec<Result<bool, String>> {
        self.evaluate_all(msgs, Want::Truth)
            .into_iter()
            .map(|a| a.map(|v| v.matched))
            .collect()
    }

    /// Runs the expression on one message on the worker thread, waiting at most the budget.
    fn evaluate(&self, msg: &impl Serialize, want: Want) -> Answer {
        self.evaluate_all(std::slice::from_ref(msg), want)
            .pop()
            .unwrap_or_else(|| Err("the filter's thread stopped".into()))
    }

    /// Runs the expression on each message, in order, on the worker thread: the batch is handed
    /// over at once and each answer waited for at most the budget. A message that runs past it
    /// abandons that worker; the rest of the batch goes to a new one.
    fn evaluate_all<M: Serialize>(&self, msgs: &[M], want: Want) -> Vec<Answer> {
        let mut answers: Vec<Answer> = Vec::with_capacity(msgs.len());
        let mut jobs = Vec::with_capacity(msgs.len());
        // Which messages go to the worker: one that cannot be written as JSON is answered here.
        let mut sent = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match serde_json::to_vec(msg) {
                Ok(bytes) => {
                    jobs.push(bytes);
                    sent.push(true);
                }
                Err(e) => {
                    sent.push(false);
                    answers.push(Err(format!("cannot read the message: {e}")));
                }
            }
        }
        let mut results = self.run_jobs(jobs, want).into_iter();
        let mut unsent = answers.into_iter();
        sent.into_iter()
            .map(|s| {
                let next = if s { results.next() } else { unsent.next() };
                next.unwrap_or_else(|| Err("the filter's thread stopped".into()))
            })
            .collect()
    }

    /// The answers to `jobs`, in order (see [`Filter::evaluate_all`]).
    fn run_jobs(&self, jobs: Vec<Vec<u8>>, want: Want) -> Vec<Answer> {
        let count = jobs.len();
        let jobs = Arc::new(jobs);
        let mut answers = Vec::with_capacity(count);
        let mut ev = self
            .evaluator
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while answers.len() < count {
            let left = count - answers.len();
            if ev.overruns >= MAX_OVERRUNS {
                let why = format!(
                    "not run: the filter already ran past its budget of {} on {} messages",
                    humantime::format_duration(self.budget),
                    ev.overruns
                );
                answers.extend(std::iter::repeat_n(Err(why), left));
                break;
            }
            let worker = match ev.worker.take() {
                Some(w) => w,
                None => match Worker::start(self.program.clone(), self.then.clone()) {
                    Ok(w) => w,
                    Err(why) => {
                        answers.extend(std::iter::repeat_n(Err(why), left));
                        break;
                    }
                },
            };
            let stopped = || Err("the filter's thread stopped".to_string());
            if worker
                .jobs
                .send((jobs.clone(), answers.len(), want))
                .is_err()
            {
                answers.extend(std::iter::repeat_with(stopped).take(left));
                break;
            }
            let mut healthy = true;
            while healthy && answers.len() < count {
                answers.push(match worker.answers.recv_timeout(self.budget) {
                    Ok(answer) => answer,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // The worker is left to spin; the rest of the batch goes to a new one.
                        ev.overruns += 1;
                        healthy = false;
                        Err(format!(
                            "ran past its budget of {} on this message",
                            humantime::format_duration(self.budget)
                        ))
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        healthy = false;
                        stopped()
                    }
                });
            }
            if healthy {
                ev.worker = Some(worker);
            }
        }
        answers
    }
}

/// The first output of the program on one message (on the worker thread).
fn first(program: &jaq_core::Filter<Data>, input: Val) -> Result<Option<Val>, String> {
    let ctx = Ctx::<Data>::new(&program.lut, Vars::new([]));
    // Only the first output is needed; the iterator is lazy, so later outputs (and their
    // errors) are never computed.
    match program.id.run((ctx, input)).next() {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(exn)) => Err(exception_message(exn)),
    }
}

// Not jaq_core::unwrap_valr: it exits the whole process when the filter calls `halt`.
fn exception_message(exn: Exn<'_, Val>) -> String {
    match exn.get_err() {
        Ok(err) => match err.into_val() {
            // error("text") should read as text, not as a quoted JSON string.
            Val::TStr(s) => String::from_utf8_lossy(&s).into_owned(),
            other => other.to_string(),
        },
        Err(exn) => match exn.get_halt() {
            Ok(code) => format!("the filter called halt (exit code {code})"),
            Err(_) => "the filter stopped without a result".to_owned(),
        },
    }
}

/// jaq values back to JSON. Byte strings become base64 like binary headers do; numbers that
/// JSON cannot hold (NaN, infinities) become null.
pub(crate) fn val_to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        // Num's Display is its exact JSON text (or NaN/Infinity, which do not parse).
        Val::Num(n) => serde_json::from_str::<serde_json::Number>(&n.to_string())
            .map_or(Value::Null, Value::Number),
        Val::TStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::BStr(b) => Value::String(BASE64.encode(&b[..])),
        Val::Arr(items) => Value::Array(items.iter().map(val_to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => other.to_string(),
                    };
                    (key, val_to_json(v))
                })
                .collect(),
        ),
    }
}

/// Byte offset of `part` inside `whole`, if it is a slice of it. jaq reports positions as
/// sub-slices of the source; this checks that instead of trusting it, so a slice of some
/// other text (a library module) can never produce a bogus offset.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    (at >= start && at + part.len() <= start + whole.len()).then(|| at - start)
}

fn load_error(expr: &str, errs: load::Errors<&str, ()>) -> FilterError {
    let syntax = |message: String, at: &str| FilterError::Syntax {
        message,
        expr: expr.to_owned(),
        offset: offset_in(expr, at).unwrap_or(0),
    };
    // The first error of the expression itself is the useful one; the bundled libraries
    // always load, but never trust that enough to pick their error over ours.
    let ours = errs
        .iter()
        .find(|(file, _)| std::ptr::eq(file.code, expr))
        .or_else(|| errs.first());
    match ours.map(|(_, e)| e) {
        Some(load::Error::Lex(lex)) => match lex.first() {
            Some((expect, at)) => syntax(format!("expected {}", expect.as_str()), at),
            None => syntax("cannot read the expression".into(), ""),
        },
        Some(load::Error::Parse(parse)) => match parse.first() {
            Some((expect, found)) if found.is_empty() => syntax(
                format!("unexpected end of filter, expected {}", expect.as_str()),
                found,
            ),
            // "expected nothing" is jaq's way of saying the expression should have ended.
            Some((load::parse::Expect::Nothing, found)) => {
                syntax(format!("unexpected {found:?}"), found)
            }
            Some((expect, found)) => syntax(
                format!("expected {}, found {found:?}", expect.as_str()),
                found,
            ),
            None => syntax("cannot parse the expression".into(), ""),
        },
        Some(load::Error::Io(io)) => match io.first() {
            Some((path, why)) => syntax(format!("cannot load module {path:?}: {why}"), path),
            None => syntax("cannot load a module".into(), ""),
        },
        None => syntax("cannot parse the expression".into(), ""),
    }
}

fn compile_error(expr: &str, errs: jaq_core::compile::Errors<&str, ()>) -> FilterError {
    let first = errs
        .iter()
        .find(|(file, _)| std::ptr::eq(file.code, expr))
        .or_else(|| errs.first())
        .and_then(|(_, list)| list.first());
    let (message, offset) = match first {
        Some((name, undefined)) => {
            let message = match undefined {
                jaq_core::compile::Undefined::Filter(arity) => {
                    format!("undefined filter {name}/{arity}")
                }
                other => format!("undefined {} {name}", other.as_str()),
            };
            (message, offset_in(expr, name).unwrap_or(0))
        }
        None => ("the expression does not compile".to_owned(), 0),
    };
    FilterError::Undefined {
        message,
        expr: expr.to_owned(),
        offset,
    }
}

/// The line of `expr` holding `offset`, and a caret under that column. Tabs are shown as
/// spaces so the caret lines up; the column is counted in characters, not bytes.
fn caret(expr: &str, offset: usize) -> String {
    let offset = (0..=offset.min(expr.len()))
        .rev()
        .find(|&i| expr.is_char_boundary(i))
        .unwrap_or(0);
    let line_start = expr[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = expr[offset..].find('\n').map_or(expr.len(), |i| offset + i);
    let line: String = expr[line_start..line_end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let column = expr[line_start..offset].chars().count();
    format!("  {line}\n  {}^", " ".repeat(column))
}

/// The deepest nesting of `(`, `[`, `{` (and string interpolations) an expression may have.
pub(crate) const MAX_NESTING: usize = 100;

/// The most operators (`|`, `,`, `or`, `and`, arithmetic, comparison, assignment) an expression
/// may hold: jaq parses and runs a chain of them recursively, so a long one would overflow the
/// stack (measured: 1,000 `or` terms overflowed 8 MiB in a debug build) instead of failing.
pub(crate) const MAX_OPERATORS: usize = 500;

/// Refuses, before jaq sees it, an expression so deep or long that parsing or running it could
/// overflow the stack. Strings are skipped (their interpolations count as nesting).
fn check_size(expr: &str) -> Result<(), FilterError> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut operators = 0usize;
    // Open brackets, each noting whether it is a string interpolation `\(`.
    let mut open: Vec<bool> = Vec::new();
    let mut in_string = false;
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let end_word = |word: &mut String, operators: &mut usize| {
        if word == "or" || word == "and" {
            *operators += 1;
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' if chars.peek() == Some(&'(') => {
                    chars.next();
                    open.push(true);
                    in_string = false;
                    depth += 1;
                }
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            deepest = deepest.max(depth);
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        end_word(&mut word, &mut operators);
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => {
                open.push(false);
                depth += 1;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if open.pop() == Some(true) {
                    in_string = true;
                }
            }
            '#' => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '|' | ',' | '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' => operators += 1,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    end_word(&mut word, &mut operators);
    if deepest > MAX_NESTING {
        return Err(FilterError::TooBig {
            message: format!("it nests {deepest} levels deep; at most {MAX_NESTING} are allowed"),
        });
    }
    if operators > MAX_OPERATORS {
        return Err(FilterError::TooBig {
            message: format!(
                "it holds {operators} operators; at most {MAX_OPERATORS} are allowed (split the work, or match on a list with `IN(...)` or `any(...)`)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
