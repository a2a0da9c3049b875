//! Unit tests of the filter module: compiling, running, budgets, and the object a filter sees.

use super::*;
use serde_json::json;

#[test]
fn a_message_past_the_budget_is_an_error_and_the_expression_stops_being_run() {
    let budget = Duration::from_millis(200);
    let f = Filter::compile("if .n == 1 then (def f: f; f) else .n > 1 end")
        .unwrap_or_else(|e| panic!("{e}"))
        .with_budget(budget);
    let msg = |n: i64| serde_json::json!({ "n": n });
    assert_eq!(f.matches(&msg(2)), Ok(true));
    let started = std::time::Instant::now();
    let e = f.matches(&msg(1)).unwrap_err();
    assert!(e.contains("ran past its budget of 200ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A new worker takes over: the next message runs as before.
    assert_eq!(f.matches(&msg(3)), Ok(true));
    assert_eq!(f.first_value(&msg(0)), Ok(Some(serde_json::json!(false))));
    assert!(f.matches(&msg(1)).is_err());
    // Two overruns: not run again, answered at once.
    let started = std::time::Instant::now();
    let e = f.matches(&msg(2)).unwrap_err();
    assert!(e.starts_with("not run"), "{e}");
    assert!(started.elapsed() < budget);
}

#[test]
fn a_batch_gets_one_answer_per_message_in_order_even_past_an_overrun() {
    let budget = Duration::from_millis(200);
    let f = Filter::compile("if .n == 1 then (def f: f; f) else .n > 2 end")
        .unwrap_or_else(|e| panic!("{e}"))
        .with_budget(budget);
    let msgs: Vec<_> = [3, 0, 1, 4, 2, 5]
        .iter()
        .map(|n| serde_json::json!({ "n": n }))
        .collect();
    let answers = f.matches_all(&msgs);
    assert_eq!(answers.len(), msgs.len());
    assert_eq!(answers[..2], [Ok(true), Ok(false)]);
    let e = answers[2].clone().unwrap_err();
    assert!(e.contains("ran past its budget of 200ms"), "{e}");
    // The rest of the batch went to a new worker, each message answered for itself.
    assert_eq!(answers[3..], [Ok(true), Ok(false), Ok(true)]);
    // Past the overrun limit, a whole batch is answered at once, each with the reason.
    assert!(f.matches(&msgs[2]).is_err());
    let started = std::time::Instant::now();
    let answers = f.matches_all(&msgs);
    assert_eq!(answers.len(), msgs.len());
    assert!(answers
        .iter()
        .all(|a| a.as_ref().is_err_and(|e| e.starts_with("not run"))));
    assert!(started.elapsed() < budget);
    assert!(f.matches_all::<serde_json::Value>(&[]).is_empty());
}

#[test]
fn deep_or_long_expressions_are_refused_before_jaq_sees_them() {
    let deep = format!("{}1{}", "[".repeat(4000), "]".repeat(4000));
    assert!(matches!(
        Filter::compile(&deep),
        Err(FilterError::TooBig { .. })
    ));
    let long = vec![".a"; 6000].join(" or ");
    let Err(e) = Filter::compile(&long) else {
        panic!("compiled")
    };
    assert!(e.to_string().contains("5999 operators"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // At the limits they compile and run, on a thread with dlq's stack size.
    std::thread::Builder::new()
        .stack_size(crate::STACK_SIZE)
        .spawn(|| {
            let nested = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
            assert!(Filter::compile(&nested).is_ok());
            let chain = vec![".a"; MAX_OPERATORS + 1].join(" or ");
            let f = Filter::compile(&chain).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.matches(&serde_json::json!({"a": false})), Ok(false));
        })
        .unwrap()
        .join()
        .unwrap();
    // Strings and comments do not count.
    let text = format!(
        "\"{}\" # {}\n| length > 0",
        "((((".repeat(100),
        "[[[[".repeat(100)
    );
    assert!(Filter::compile(&text).is_ok());
}

fn compile(expr: &str) -> Filter {
    Filter::compile(expr).unwrap_or_else(|e| panic!("{e}"))
}

fn message(tenant: &str, error: &str, count: i64) -> Value {
    json!({
        "position": 1,
        "headers": { "x-error-message": error,
                     "x-death": [ { "count": count, "reason": "rejected", "queue": "billing" } ] },
        "failure": { "origin": "billing", "message": error, "attempts": count + 1 },
        "body": { "tenant": tenant, "n": 42 },
    })
}

#[test]
fn contract_examples() {
    let acme = message("acme", "connection timeout", 5);
    let other = message("globex", "bad input", 2);

    let tenant = compile(r#".body.tenant == "acme""#);
    assert_eq!(tenant.matches(&acme), Ok(true));
    assert_eq!(tenant.matches(&other), Ok(false));

    let timeout = compile(r#".headers["x-error-message"] | test("timeout")"#);
    assert_eq!(timeout.matches(&acme), Ok(true));
    assert_eq!(timeout.matches(&other), Ok(false));

    let deaths = compile(r#".headers["x-death"][0].count >= 5"#);
    assert_eq!(deaths.matches(&acme), Ok(true));
    assert_eq!(deaths.matches(&other), Ok(false));
}

#[test]
fn arithmetic_on_body() {
    let f = compile(".body.n % 10 < 3");
    assert_eq!(f.matches(&json!({"body": {"n": 42}})), Ok(true));
    assert_eq!(f.matches(&json!({"body": {"n": 45}})), Ok(false));
}

#[test]
fn truthiness_of_first_output() {
    let msg = json!({"a": 0, "s": "", "n": null, "f": false});
    assert_eq!(compile(".a").matches(&msg), Ok(true));
    assert_eq!(compile(".s").matches(&msg), Ok(true));
    assert_eq!(compile(".n").matches(&msg), Ok(false));
    assert_eq!(compile(".f").matches(&msg), Ok(false));
    assert_eq!(compile(".missing").matches(&msg), Ok(false));
    assert_eq!(compile("empty").matches(&msg), Ok(false));
    assert_eq!(compile("false, true").matches(&msg), Ok(false));
    // later outputs are never computed, so their errors do not matter
    assert_eq!(compile(r#"true, error("later")"#).matches(&msg), Ok(true));
}

#[test]
fn run_time_errors_are_errors() {
    let f = compile(r#".headers.missing | test("x")"#);
    let got = f.matches(&json!({"headers": {}}));
    assert!(got.is_err(), "{got:?}");
    assert_eq!(
        compile(r#"error("custom failure")"#).matches(&json!({})),
        Err("custom failure".to_owned())
    );
    assert!(compile(r#"test("(")"#).matches(&json!("x")).is_err());
}

#[test]
fn halt_does_not_exit_the_process() {
    let got = compile("halt").matches(&json!({}));
    assert!(matches!(&got, Err(e) if e.contains("halt")), "{got:?}");
    let got = compile("halt_error").first_value(&json!("bye"));
    assert!(got.is_err(), "{got:?}");
}

#[test]
fn first_value_for_group_by() {
    let f = compile(".failure.message");
    assert_eq!(
        f.first_value(&message("a", "timeout", 1)),
        Ok(Some(json!("timeout")))
    );
    assert_eq!(
        f.first_value(&json!({"failure": {"message": null}})),
        Ok(Some(Value::Null))
    );
    assert_eq!(f.first_value(&json!({})), Ok(Some(Value::Null)));
    let n = compile(".failure.attempts");
    assert_eq!(n.first_value(&message("a", "x", 4)), Ok(Some(json!(5))));
    assert_eq!(
        compile("1.5").first_value(&json!(null)),
        Ok(Some(json!(1.5)))
    );
    assert_eq!(compile("empty").first_value(&json!(null)), Ok(None));
    assert_eq!(
        compile("nan").first_value(&json!(null)),
        Ok(Some(Value::Null))
    );
    assert_eq!(
        compile("{b: 1, a: [true, \"x\"]}").first_value(&json!(null)),
        Ok(Some(json!({"b": 1, "a": [true, "x"]})))
    );
    assert_eq!(
        compile(".big").first_value(&json!({"big": u64::MAX})),
        Ok(Some(json!(u64::MAX)))
    );
}

#[test]
fn reusable_across_many_messages() {
    let f = compile(".body.n % 2 == 0");
    let hits = (0..1000)
        .filter(|n| f.matches(&json!({"body": {"n": n}})) == Ok(true))
        .count();
    assert_eq!(hits, 500);
}

#[test]
fn usable_from_other_threads() {
    let f = std::sync::Arc::new(compile(".x == 1"));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            std::thread::spawn(move || f.matches(&json!({"x": i})))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().ok()).collect();
    assert_eq!(
        results,
        [
            Some(Ok(false)),
            Some(Ok(true)),
            Some(Ok(false)),
            Some(Ok(false))
        ]
    );
}

fn error(expr: &str) -> FilterError {
    match Filter::compile(expr) {
        Ok(_) => panic!("{expr} compiled"),
        Err(e) => e,
    }
}

/// The caret line of the message, with the two-space indent removed.
fn caret_column(e: &FilterError) -> usize {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.find('^').map_or(usize::MAX, |i| i - 2)
}

#[test]
fn incomplete_comparison() {
    let e = error(".body.tenant ==");
    assert!(matches!(e, FilterError::Syntax { .. }), "{e:?}");
    assert_eq!(caret_column(&e), 15);
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("invalid filter: "), "{text}");
    assert_eq!(lines[1], "  .body.tenant ==");
    assert_eq!(lines[2], "                 ^");
    assert_eq!(lines.len(), 3);
}

#[test]
fn unclosed_bracket() {
    let e = error(".[");
    assert!(matches!(e, FilterError::Syntax { .. }), "{e:?}");
    assert_eq!(caret_column(&e), 2);
    assert!(e.message().contains("bracket"), "{e}");
}

#[test]
fn undefined_filter() {
    let e = error("nosuchfn(1)");
    assert!(matches!(e, FilterError::Undefined { .. }), "{e:?}");
    assert_eq!(e.message(), "undefined filter nosuchfn/1");
    assert_eq!(caret_column(&e), 0);
    let e = error(r#".body | nosuchfn("a"; 2)"#);
    assert_eq!(e.message(), "undefined filter nosuchfn/2");
    assert_eq!(caret_column(&e), 8);
}

#[test]
fn undefined_variable() {
    let e = error("$undefined");
    assert!(matches!(e, FilterError::Undefined { .. }), "{e:?}");
    assert!(e.message().contains("variable"), "{e}");
    assert!(e.message().contains("undefined"), "{e}");
    assert_eq!(caret_column(&e), 0);
    let e = error(". as $x | $y");
    assert_eq!(caret_column(&e), 10);
}

#[test]
fn caret_counts_characters_and_picks_the_line() {
    let e = error(".\"héllo\" == ");
    assert_eq!(caret_column(&e), 12);
    let e = error(".a\n| nosuchfn");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "  | nosuchfn");
    assert_eq!(lines[2], "    ^");
}

#[test]
fn trailing_garbage() {
    let e = error(".foo bar");
    assert_eq!(e.message(), r#"unexpected "bar""#);
    assert_eq!(caret_column(&e), 5);
}

#[test]
fn module_imports_are_refused_at_compile_time() {
    let e = error(r#"include "x"; ."#);
    assert!(e.to_string().starts_with("invalid filter: "), "{e}");
}

#[test]
fn a_chained_expression_runs_on_the_messages_the_first_matches() {
    let group_by = compile(".failure.message");
    let f = compile(".body.n > 1").then(&group_by);
    let msg = |n: i64| json!({"body": {"n": n}, "failure": {"message": format!("m{n}")}});
    assert_eq!(
        f.select_then(&msg(2)),
        Ok(Verdict {
            matched: true,
            value: Some(Ok(Some(json!("m2"))))
        })
    );
    assert_eq!(
        f.select_then(&msg(1)),
        Ok(Verdict {
            matched: false,
            value: None
        })
    );
    // An error in the second expression is its own, the match stands.
    let f = compile(".n > 1").then(&compile(r#"error("no group")"#));
    assert_eq!(
        f.select_then(&json!({"n": 5})),
        Ok(Verdict {
            matched: true,
            value: Some(Err("no group".into()))
        })
    );
    // An error in the first is the answer's.
    let f = compile(r#"error("bad")"#).then(&group_by);
    assert_eq!(f.select_then(&json!({})), Err("bad".into()));
    // Unchained, select_then is a plain match.
    assert_eq!(
        compile(".a").select_then(&json!({"a": 1})),
        Ok(Verdict {
            matched: true,
            value: None
        })
    );
}

#[test]
fn a_deeply_nested_message_reaches_the_filter_whole() {
    // The worker reads the message's JSON without serde_json's depth limit of 128: the depth of
    // a message is bounded where its body is parsed, not here.
    let mut v = json!(1);
    for _ in 0..200 {
        v = json!([v]);
    }
    let msg = json!({"body": v});
    assert_eq!(
        compile(".body | flatten | .[0] == 1").matches(&msg),
        Ok(true)
    );
}
