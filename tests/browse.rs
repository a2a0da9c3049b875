//! list and peek against a real broker: the contract's JSON field by field, the queue left as it
//! was (same messages, same order, nothing redelivered when nothing was fetched), filters and
//! group-by, terminal safety, and peek --pop on a real pseudo-terminal.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::*;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

const T: u64 = 1_763_800_000;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

/// Message `i` of the mixed set: its body, properties, and the contract object dlq must print
/// for it (without `position`, `queue`, `routing_key`, `exchange` and `redelivered`).
fn sample(i: u64) -> (Vec<u8>, BasicProperties, Value) {
    let none = json!({"origin": null, "reason": null, "attempts": null, "message": null, "type": null, "at": null});
    match i % 10 {
        // A parked message as the contract's worker writes it, with a broker-style x-death.
        0 => {
            let count = (i % 7 + 1) as i64;
            let error = if i % 3 == 0 {
                "timeout after 30s"
            } else {
                "bad input"
            };
            let tenant = if i % 20 == 0 { "acme" } else { "globex" };
            let body = format!(r#"{{"tenant":"{tenant}","n":{i}}}"#);
            let death = table(vec![
                ("count", AMQPValue::LongLongInt(count)),
                ("reason", long("rejected")),
                ("queue", long("svc")),
                ("time", AMQPValue::Timestamp(T - 100)),
                ("exchange", long("")),
                (
                    "routing-keys",
                    AMQPValue::FieldArray(FieldArray::from(vec![long("svc.retry")])),
                ),
            ]);
            let headers = table(vec![
                ("x-error-message", long(error)),
                ("x-error-type", long("TimeoutError")),
                ("x-attempts", AMQPValue::LongLongInt(count + 1)),
                ("x-failed-at", AMQPValue::Timestamp(T + i)),
                ("x-first-death-queue", long("svc")),
                ("x-first-death-reason", long("rejected")),
                (
                    "x-death",
                    AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
                ),
            ]);
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(format!("m-{i}").into())
                .with_timestamp(T)
                .with_delivery_mode(2)
                .with_headers(headers);
            let want = json!({
                "properties": {"content_type": "application/json", "delivery_mode": 2,
                               "message_id": format!("m-{i}"), "timestamp": T},
                "headers": {
                    "x-error-message": error, "x-error-type": "TimeoutError",
                    "x-attempts": count + 1, "x-failed-at": T + i,
                    "x-first-death-queue": "svc", "x-first-death-reason": "rejected",
                    "x-death": [{"count": count, "reason": "rejected", "queue": "svc",
                                 "time": T - 100, "exchange": "", "routing-keys": ["svc.retry"]}]
                },
                "failure": {"origin": "svc", "reason": "rejected", "attempts": count + 1,
                            "message": error, "type": "TimeoutError", "at": T + i},
                "body": {"tenant": tenant, "n": i},
                "body_encoding": "json",
                "body_size": body.len(),
            });
            (body.into_bytes(), props, want)
        }
        // JSON whose compact form differs from its bytes: body_text keeps the exact text.
        1 => {
            let body = format!("{{\n  \"tenant\": \"globex\",\n  \"n\": {i}\n}}\n");
            let want = json!({
                "properties": {}, "headers": {}, "failure": none,
                "body": {"tenant": "globex", "n": i}, "body_encoding": "json",
                "body_text": body, "body_size": body.len(),
            });
            (body.into_bytes(), BasicProperties::default(), want)
        }
        2 => {
            let body = format!("plain text {i}\nsecond line");
            let want = json!({
                "properties": {}, "headers": {}, "failure": none,
                "body": body, "body_encoding": "text", "body_size": body.len(),
            });
            (body.into_bytes(), BasicProperties::default(), want)
        }
        // Not UTF-8.
        3 => {
            let body = vec![0xff, 0xfe, 0x00, (i % 256) as u8, 0xc3];
            let want = json!({
                "properties": {}, "headers": {}, "failure": none,
                "body": BASE64.encode(&body), "body_encoding": "base64", "body_size": 5,
            });
            (body, BasicProperties::default(), want)
        }
        4 => {
            let want = json!({
                "properties": {}, "headers": {}, "failure": none,
                "body": "", "body_encoding": "text", "body_size": 0,
            });
            (Vec::new(), BasicProperties::default(), want)
        }
        // Every field type a header can have.
        5 => {
            let nested = table(vec![
                ("inner", long("value")),
                (
                    "list",
                    AMQPValue::FieldArray(FieldArray::from(vec![
                        AMQPValue::LongLongInt(1),
                        long("two"),
                        AMQPValue::Boolean(false),
                    ])),
                ),
            ]);
            let headers = table(vec![
                ("bool", AMQPValue::Boolean(true)),
                ("i8", AMQPValue::ShortShortInt(-5)),
                ("u8", AMQPValue::ShortShortUInt(200)),
                ("i16", AMQPValue::ShortInt(-300)),
                ("u16", AMQPValue::ShortUInt(60_000)),
                ("i32", AMQPValue::LongInt(-70_000)),
                ("u32", AMQPValue::LongUInt(4_000_000_000)),
                ("i64", AMQPValue::LongLongInt(-5_000_000_000_000)),
                ("f32", AMQPValue::Float(0.5)),
                ("f64", AMQPValue::Double(2.25)),
                (
                    "decimal",
                    AMQPValue::DecimalValue(DecimalValue {
                        scale: 2,
                        value: 12_345,
                    }),
                ),
                ("text", long("héllo")),
                (
                    "not-utf8",
                    AMQPValue::LongString(LongString::from(vec![0xffu8, 0x00, 0x41])),
                ),
                ("bytes", AMQPValue::ByteArray(vec![1u8, 2, 3, 0xff].into())),
                ("void", AMQPValue::Void),
                ("stamp", AMQPValue::Timestamp(T)),
                ("nested", AMQPValue::FieldTable(nested)),
            ]);
            let body = format!("{{\"typed\":{i}}}");
            let want = json!({
                "properties": {},
                "headers": {
                    "bool": true, "i8": -5, "u8": 200, "i16": -300, "u16": 60000, "i32": -70000,
                    "u32": 4_000_000_000u64, "i64": -5_000_000_000_000i64, "f32": 0.5, "f64": 2.25,
                    "decimal": 123.45, "text": "héllo", "not-utf8": BASE64.encode([0xffu8, 0x00, 0x41]),
                    "bytes": BASE64.encode([1u8, 2, 3, 0xff]), "void": null, "stamp": T,
                    "nested": {"inner": "value", "list": [1, "two", false]}
                },
                "failure": none,
                "body": {"typed": i}, "body_encoding": "json", "body_size": body.len(),
            });
            (
                body.into_bytes(),
                BasicProperties::default().with_headers(headers),
                want,
            )
        }
        // Terminal escapes in the body, a header value, a header key and a property.
        6 => {
            let evil = "\u{1b}[31mboom\u{1b}[0m\u{7}\u{1b}]0;pwned\u{7}";
            let body = format!("\u{1b}[2J\u{1b}[Hred {i}\u{7}\u{9b}31m");
            let headers = table(vec![
                ("x-error-message", long(evil)),
                ("x-\u{1b}[1mkey", long("v\u{1b}c")),
            ]);
            let props = BasicProperties::default()
                .with_message_id(format!("id-\u{1b}[5m{i}").into())
                .with_headers(headers);
            let want = json!({
                "properties": {"message_id": format!("id-\u{1b}[5m{i}")},
                "headers": {"x-error-message": evil, "x-\u{1b}[1mkey": "v\u{1b}c"},
                "failure": {"origin": null, "reason": null, "attempts": null,
                            "message": evil, "type": null, "at": null},
                "body": body, "body_encoding": "text", "body_size": body.len(),
            });
            (body.into_bytes(), props, want)
        }
        // Every basic property set.
        7 => {
            let body = r#"{"tenant":"acme","z":1,"a":2}"#.to_string();
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(1)
                .with_priority(4)
                .with_correlation_id(format!("c-{i}").into())
                .with_reply_to("replies".into())
                .with_expiration("3600000".into())
                .with_message_id(format!("m-{i}").into())
                .with_timestamp(T + 7)
                .with_type("invoice.created".into())
                .with_user_id("guest".into())
                .with_app_id("billing-api".into())
                .with_cluster_id("c1".into());
            let want = json!({
                "properties": {
                    "content_type": "application/json", "content_encoding": "utf-8",
                    "delivery_mode": 1, "priority": 4, "correlation_id": format!("c-{i}"),
                    "reply_to": "replies", "expiration": "3600000", "message_id": format!("m-{i}"),
                    "timestamp": T + 7, "type": "invoice.created", "user_id": "guest",
                    "app_id": "billing-api", "cluster_id": "c1"
                },
                "headers": {}, "failure": none,
                "body": {"tenant": "acme", "z": 1, "a": 2}, "body_encoding": "json",
                "body_size": body.len(),
            });
            (body.into_bytes(), props, want)
        }
        // A Sneakers-parked message.
        8 => {
            let info = r#"{"error":"RuntimeError","num_attempts":3,"failed_at":"2024-01-01T10:00:00Z","error_class":"RuntimeError","error_message":"db down"}"#;
            let body = format!("job {i}");
            let want = json!({
                "properties": {},
                "headers": {"retry_info": info},
                "failure": {"origin": null, "reason": null, "attempts": 3,
                            "message": "db down", "type": "RuntimeError", "at": 1_704_103_200},
                "body": body, "body_encoding": "text", "body_size": body.len(),
            });
            (
                body.into_bytes(),
                BasicProperties::default().with_headers(table(vec![("retry_info", long(info))])),
                want,
            )
        }
        // JSON with escapes: parsed, and the exact text kept.
        _ => {
            let body = format!(r#"{{"s":"caf\u00e9 \/ {i}"}}"#);
            let want = json!({
                "properties": {}, "headers": {}, "failure": none,
                "body": {"s": format!("café / {i}")}, "body_encoding": "json",
                "body_text": body, "body_size": body.len(),
            });
            (body.into_bytes(), BasicProperties::default(), want)
        }
    }
}

/// The full contract object of message `i` at `position` in `queue`.
fn expected(i: u64, position: u64, queue: &str, redelivered: bool) -> Value {
    let (_, _, partial) = sample(i);
    let mut o = Map::new();
    o.insert("position".into(), json!(position));
    o.insert("queue".into(), json!(queue));
    o.insert("exchange".into(), json!(""));
    o.insert("routing_key".into(), json!(queue));
    o.insert("redelivered".into(), json!(redelivered));
    if let Value::Object(rest) = partial {
        o.extend(rest);
    }
    Value::Object(o)
}

async fn queue_with(scope: &Scope, what: &str, n: u64) -> (lapin::Connection, String) {
    let q = scope.name(what);
    let conn = connect().await;
    declare_queue(&conn, &q, FieldTable::default()).await;
    publish_many(
        &conn,
        &q,
        (0..n).map(|i| {
            let (body, props, _) = sample(i);
            (body, props)
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, n).await, n);
    (conn, q)
}

fn run(scope: &Scope, args: &[&str]) -> std::process::Output {
    dlq(scope).args(args).output().unwrap()
}

fn ok(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
}

/// Takes everything out of the queue and checks it holds messages `ids`, in that order.
async fn assert_holds_in_order(
    conn: &lapin::Connection,
    q: &str,
    ids: &[u64],
    redelivered: Option<bool>,
) {
    assert_eq!(
        wait_for_count(q, ids.len() as u64).await,
        ids.len() as u64,
        "count of {q}"
    );
    let got = drain(conn, q).await;
    assert_eq!(got.len(), ids.len());
    for (d, &i) in got.iter().zip(ids) {
        let (body, props, _) = sample(i);
        assert_eq!(d.data, body, "message {i} out of place");
        assert_eq!(
            d.properties.headers(),
            props.headers(),
            "message {i} headers"
        );
        assert_eq!(d.properties.message_id(), props.message_id());
        if let Some(r) = redelivered {
            assert_eq!(d.redelivered, r, "redelivered flag of message {i}");
        }
    }
}

fn positions(out: &std::process::Output) -> Vec<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_json_matches_the_contract_field_by_field_and_leaves_the_queue_unchanged() {
    let scope = Scope::new("list500");
    let (conn, q) = queue_with(&scope, "q", 500).await;

    let out = run(&scope, &["list", "--queue", &q, "-o", "json"]);
    ok(&out);
    let Value::Array(items) = json_out(&out) else {
        panic!("not an array")
    };
    assert_eq!(items.len(), 500);
    for (n, item) in items.iter().enumerate() {
        let i = n as u64;
        let want = expected(i, i + 1, &q, false);
        let (Value::Object(got), Value::Object(want)) = (item, &want) else {
            panic!("message {i} is not an object")
        };
        for (key, value) in want {
            assert_eq!(got.get(key), Some(value), "message {i}, field {key}");
        }
        assert_eq!(
            got.len(),
            want.len(),
            "message {i} has extra fields: {got:?}"
        );
    }
    let keys: Vec<&str> = items[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "position",
            "queue",
            "exchange",
            "routing_key",
            "redelivered",
            "properties",
            "headers",
            "failure",
            "body",
            "body_encoding",
            "body_size"
        ],
        "the contract's field order"
    );

    let table = dlq(&scope)
        .args(["list", "--queue", &q, "-o", "table"])
        .env("COLUMNS", "160")
        .output()
        .unwrap();
    ok(&table);
    assert_eq!(String::from_utf8_lossy(&table.stdout).lines().count(), 501);
    assert!(!table.stdout.contains(&0x1b), "ESC in the table");
    assert!(!table.stdout.contains(&0x07), "BEL in the table");
    assert!(String::from_utf8_lossy(&table.stdout).contains("timeout after 30s"));

    let peek = run(
        &scope,
        &["peek", "--queue", &q, "--count", "10", "-o", "table"],
    );
    ok(&peek);
    let text = String::from_utf8_lossy(&peek.stdout);
    assert!(
        !peek.stdout.contains(&0x1b) && !peek.stdout.contains(&0x07),
        "control bytes in peek"
    );
    assert!(!text.contains('\u{9b}'), "C1 CSI in peek");
    assert!(text.contains("x-death history"), "{text}");

    let ids: Vec<u64> = (0..500).collect();
    assert_holds_in_order(&conn, &q, &ids, Some(true)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_streams_one_object_a_line_and_limit_reads_only_the_head() {
    let scope = Scope::new("limit");
    let (conn, q) = queue_with(&scope, "q", 40).await;
    let out = run(
        &scope,
        &["list", "--queue", &q, "-o", "jsonl", "--limit", "5"],
    );
    ok(&out);
    assert_eq!(positions(&out), [1, 2, 3, 4, 5]);
    // The five read were given back in place; the other 35 were never delivered.
    assert_eq!(wait_for_count(&q, 40).await, 40);
    let got = drain(&conn, &q).await;
    let flags: Vec<bool> = got.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags[..5], [true; 5]);
    assert!(flags[5..].iter().all(|r| !r));
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.data, sample(i as u64).0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_filter_examples_select_exactly_the_right_messages() {
    let scope = Scope::new("filters");
    let n = 200;
    let (conn, q) = queue_with(&scope, "q", n).await;
    let header = |i: u64, key: &str| {
        sample(i)
            .1
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(key).cloned())
    };
    let cases: Vec<(&str, Vec<u64>)> = vec![
        (
            r#".body.tenant == "acme""#,
            (0..n).filter(|i| (i % 10 == 0 && i % 20 == 0) || i % 10 == 7).collect(),
        ),
        (
            r#".headers["x-error-message"] | test("timeout")"#,
            (0..n)
                .filter(|&i| matches!(header(i, "x-error-message"), Some(AMQPValue::LongString(s)) if String::from_utf8_lossy(s.as_bytes()).contains("timeout")))
                .collect(),
        ),
        (
            r#".headers["x-death"][0].count >= 5"#,
            (0..n).filter(|i| i % 10 == 0 && i % 7 + 1 >= 5).collect(),
        ),
    ];
    for (filter, want) in cases {
        assert!(!want.is_empty(), "{filter} selects something");
        let out = run(
            &scope,
            &["list", "--queue", &q, "-o", "jsonl", "--filter", filter],
        );
        ok(&out);
        let want_positions: Vec<u64> = want.iter().map(|i| i + 1).collect();
        assert_eq!(positions(&out), want_positions, "{filter}");
        assert!(
            stderr(&out).contains(&format!("{} of {n} messages matched", want.len())),
            "{}",
            stderr(&out)
        );
    }
    let ids: Vec<u64> = (0..n).collect();
    assert_holds_in_order(&conn, &q, &ids, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_filters_exit_2_in_one_line_with_a_caret_under_v_and_nothing_is_redelivered() {
    let scope = Scope::new("badfilter");
    let (conn, q) = queue_with(&scope, "q", 20).await;
    for bad in [".body.tenant ==", "nosuchfn(1)", ". as $x | $y", ".[\"a\""] {
        let out = run(&scope, &["list", "--queue", &q, "--filter", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("invalid --filter expression"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty());
        let out = run(&scope, &["-v", "list", "--queue", &q, "--filter", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.lines().any(|l| l.trim() == "^"),
            "a caret line with -v: {err}"
        );
    }
    let out = run(&scope, &["list", "--queue", &q, "--group-by", ".a |"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let ids: Vec<u64> = (0..20).collect();
    assert_holds_in_order(&conn, &q, &ids, Some(false)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn group_by_failure_message_counts_each_value_biggest_first() {
    let scope = Scope::new("groupby");
    let n = 300;
    let (conn, q) = queue_with(&scope, "q", n).await;
    let out = run(
        &scope,
        &[
            "list",
            "--queue",
            &q,
            "--group-by",
            ".failure.message",
            "-o",
            "json",
        ],
    );
    ok(&out);
    let mut want: std::collections::HashMap<String, u64> = Default::default();
    for i in 0..n {
        let (_, _, partial) = sample(i);
        *want
            .entry(partial["failure"]["message"].to_string())
            .or_default() += 1;
    }
    let Value::Array(rows) = json_out(&out) else {
        panic!("not an array")
    };
    assert_eq!(rows.len(), want.len());
    let counts: Vec<u64> = rows.iter().map(|r| r["count"].as_u64().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "biggest first: {counts:?}"
    );
    for r in &rows {
        assert_eq!(
            Some(&r["count"].as_u64().unwrap()),
            want.get(&r["value"].to_string()),
            "{r}"
        );
    }
    assert_eq!(rows[0], json!({"value": null, "count": 210}));
    let table = run(
        &scope,
        &[
            "list",
            "--queue",
            &q,
            "--group-by",
            ".failure.message",
            "-o",
            "table",
        ],
    );
    ok(&table);
    assert!(!table.stdout.contains(&0x1b), "ESC in the group table");
    // With --filter, the group-by counts only what the filter matched (both run on one jaq
    // value per message).
    let filtered = run(
        &scope,
        &[
            "list",
            "--queue",
            &q,
            "--filter",
            ".failure.message != null",
            "--group-by",
            ".failure.message",
            "-o",
            "json",
        ],
    );
    ok(&filtered);
    let Value::Array(filtered_rows) = json_out(&filtered) else {
        panic!("not an array")
    };
    assert_eq!(filtered_rows.len(), want.len() - 1, "{filtered_rows:?}");
    for r in &filtered_rows {
        assert!(!r["value"].is_null(), "{r}");
        assert_eq!(
            Some(&r["count"].as_u64().unwrap()),
            want.get(&r["value"].to_string()),
            "{r}"
        );
    }
    let ids: Vec<u64> = (0..n).collect();
    assert_holds_in_order(&conn, &q, &ids, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_name_lists_its_error_queue_under_either_naming() {
    let scope = Scope::new("service");
    let conn = connect().await;
    for (naming, suffix) in [("dotted", ".error"), ("sneakers", "-error")] {
        let s = scope.name(naming);
        let q = format!("{s}{suffix}");
        declare_queue(&conn, &q, FieldTable::default()).await;
        publish_many(&conn, &q, (0..3).map(|i| (sample(i).0, sample(i).1))).await;
        wait_for_count(&q, 3).await;
        let cfg = scope.config(&format!("[services.\"{s}\"]\nnaming = \"{naming}\"\n"));
        let out = run(
            &scope,
            &["-c", cfg.to_str().unwrap(), "list", &s, "-o", "jsonl"],
        );
        ok(&out);
        assert_eq!(positions(&out), [1, 2, 3], "{naming}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\"queue\":\"{q}\"")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_queue_exits_1_naming_it_and_is_not_created() {
    let scope = Scope::new("missing");
    let q = scope.name("nope");
    for args in [
        vec!["list", "--queue", &q],
        vec!["peek", "--queue", &q],
        vec!["peek", "--queue", &q, "--pop", "--yes"],
    ] {
        let out = run(&scope, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&q), "{}", stderr(&out));
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    }
    assert!(api_queue(&q).is_none(), "the queue was created");
    let _ = connect().await.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_queue_lists_as_an_empty_array() {
    let scope = Scope::new("empty");
    let (_conn, q) = queue_with(&scope, "q", 0).await;
    let out = run(&scope, &["list", "--queue", &q, "-o", "json"]);
    ok(&out);
    assert_eq!(json_out(&out), json!([]));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_shows_the_head_and_leaves_the_queue_unchanged() {
    let scope = Scope::new("peek");
    let (conn, q) = queue_with(&scope, "q", 12).await;
    let out = run(
        &scope,
        &["peek", "--queue", &q, "--count", "3", "-o", "json"],
    );
    ok(&out);
    let Value::Array(items) = json_out(&out) else {
        panic!("not an array")
    };
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item, &expected(n as u64, n as u64 + 1, &q, false));
    }
    assert_eq!(items.len(), 3);
    let view = run(&scope, &["peek", "--queue", &q, "-o", "table"]);
    ok(&view);
    let text = String::from_utf8_lossy(&view.stdout);
    for part in [
        "Properties",
        "Headers",
        "x-death history",
        "timeout after 30s",
        "\"tenant\": \"acme\"",
    ] {
        assert!(text.contains(part), "{part} missing from\n{text}");
    }
    let ids: Vec<u64> = (0..12).collect();
    assert_holds_in_order(&conn, &q, &ids, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_pop_yes_save_removes_exactly_the_head_and_the_file_holds_it() {
    let scope = Scope::new("popsave");
    let (conn, q) = queue_with(&scope, "q", 5).await;
    let file = scope.path("popped.jsonl");
    std::fs::write(&file, "{\"earlier\":true}\n").unwrap();
    let out = run(
        &scope,
        &[
            "peek",
            "--queue",
            &q,
            "--pop",
            "--yes",
            "--save",
            file.to_str().unwrap(),
            "-o",
            "jsonl",
        ],
    );
    ok(&out);
    let saved = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = saved.lines().collect();
    assert_eq!(lines.len(), 2, "appended, not truncated: {saved}");
    assert_eq!(lines[0], "{\"earlier\":true}");
    let record: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(record, expected(0, 1, &q, false));
    assert!(stderr(&out).contains("1 of 1"), "{}", stderr(&out));
    assert_holds_in_order(&conn, &q, &[1, 2, 3, 4], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_pop_without_a_terminal_or_yes_exits_2_and_fetches_nothing() {
    let scope = Scope::new("popnotty");
    let (conn, q) = queue_with(&scope, "q", 3).await;
    let out = dlq(&scope)
        .args(["peek", "--queue", &q, "--pop"])
        .write_stdin("y\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_holds_in_order(&conn, &q, &[0, 1, 2], Some(false)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_pop_on_a_terminal_keeps_on_n_and_removes_on_y() {
    let scope = Scope::new("poptty");
    let (conn, q) = queue_with(&scope, "q", 4).await;

    let (code, screen) = on_terminal(&scope, "n", false, &["peek", "--queue", &q, "--pop"]);
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains(&format!("Remove this message from {q}?")),
        "{screen}"
    );
    assert!(screen.contains("0 of 1 shown"), "{screen}");
    assert_eq!(wait_for_count(&q, 4).await, 4);

    // Two messages: keep the first, remove the second.
    let (code, screen) = on_terminal(
        &scope,
        "ny",
        false,
        &["peek", "--queue", &q, "--pop", "--count", "2"],
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("1 of 2 shown"), "{screen}");
    assert_holds_in_order(&conn, &q, &[0, 2, 3], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peek_pop_says_so_when_the_broker_takes_the_message_back_during_the_prompt() {
    let scope = Scope::new("poplost");
    let (conn, q) = queue_with(&scope, "q", 3).await;
    let (code, screen) = on_terminal(&scope, "y", true, &["peek", "--queue", &q, "--pop"]);
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("took message 1 back"), "{screen}");
    assert!(screen.contains("not removed"), "{screen}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_holds_in_order(&conn, &q, &[0, 1, 2], None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quorum_queue_with_a_delivery_limit_is_read_with_care_before_4_3_and_freely_since() {
    let scope = Scope::new("quorum");
    let q = scope.name("qq");
    let conn = connect().await;
    let args = table(vec![
        ("x-queue-type", long("quorum")),
        ("x-delivery-limit", AMQPValue::LongLongInt(3)),
    ]);
    declare_queue(&conn, &q, args).await;
    publish_many(&conn, &q, (0..3).map(|i| (sample(i).0, sample(i).1))).await;
    assert_eq!(wait_for_count(&q, 3).await, 3);
    if broker_version() >= (4, 3) {
        // From 4.3 a basic.nack does not count toward the delivery-limit: browsing is free.
        for _ in 0..6 {
            let out = run(&scope, &["list", "--queue", &q, "-o", "jsonl"]);
            ok(&out);
            assert_eq!(positions(&out), [1, 2, 3]);
        }
        assert_eq!(wait_for_count(&q, 3).await, 3, "nothing was dropped");
        let _ = conn.close(200, "ok".into()).await;
        return;
    }
    // Each browse counts; once the head is within 2 of the limit, reading stops there.
    let mut stopped = None;
    for run_no in 0..6 {
        let out = run(&scope, &["list", "--queue", &q, "-o", "jsonl"]);
        let err = stderr(&out);
        assert!(
            err.contains("is a quorum queue") && err.contains("delivery-limit (3)"),
            "{err}"
        );
        if out.status.code() == Some(1) {
            assert!(err.contains("reading stopped at message 1"), "{err}");
            assert!(!err.contains(" -1"), "{err}");
            // The message near the limit was read anyway: it is shown, and nothing after it.
            assert_eq!(positions(&out), [1]);
            stopped = Some(run_no);
            break;
        }
        ok(&out);
        assert_eq!(positions(&out), [1, 2, 3]);
    }
    assert!(stopped.is_some(), "reading never stopped");
    assert_eq!(wait_for_count(&q, 3).await, 3, "nothing was dropped");
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browse_bigger_than_one_consumer_window_keeps_queue_order() {
    // More than two windows of dlq::broker::browse::WINDOW, so several consumers overlap and
    // their deliveries are merged back into queue order.
    let n = 2 * dlq::broker::browse::WINDOW + 5_000;
    let scope = Scope::new("windows");
    let q = scope.name("q");
    let conn = connect().await;
    declare_queue(&conn, &q, FieldTable::default()).await;
    publish_many(
        &conn,
        &q,
        (0..n).map(|i| {
            (
                i.to_string().into_bytes(),
                BasicProperties::default().with_message_id(format!("m-{i}").into()),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, n).await, n);
    for round in 0..2 {
        let out = run(&scope, &["list", "--queue", &q, "-o", "jsonl"]);
        ok(&out);
        let mut count = 0u64;
        for (i, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
            let m: Value = serde_json::from_str(line).unwrap();
            assert_eq!(m["position"], json!(i + 1), "round {round}");
            assert_eq!(
                m["body"],
                json!(i),
                "round {round}: message {i} out of place"
            );
            count += 1;
        }
        assert_eq!(count, n, "round {round}");
        // No wait needed: dlq exits only once the queue's count is back.
        assert_eq!(
            amqp_count(&q).await,
            n,
            "round {round}: the count right after"
        );
    }
    let _ = conn.close(200, "ok".into()).await;
}
