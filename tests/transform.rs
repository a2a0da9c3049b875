//! `replay --transform` against a real broker: repaired copies carry exactly the change, `.` is a
//! plain replay byte for byte, failing transforms keep their messages, bad ones touch nothing.

mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::Value;

fn headers() -> FieldTable {
    let mut h = FieldTable::default();
    h.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    h.insert("n32".into(), AMQPValue::LongInt(7));
    h.insert("flag".into(), AMQPValue::Boolean(true));
    h.insert("at".into(), AMQPValue::Timestamp(1_763_800_000));
    h.insert(
        "x-error-message".into(),
        AMQPValue::LongString("bad amount".into()),
    );
    h
}

fn props(i: u64) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(ShortString::from(format!("m-{i}")))
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_priority(4)
        .with_timestamp(1_763_800_000)
        .with_headers(headers())
}

fn replay(scope: &Scope, args: &[&str]) -> std::process::Output {
    dlq(scope)
        .args(["replay", "--yes"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_transform_fixes_30_of_100_bodies_and_changes_nothing_else() {
    let scope = Scope::new("tfix");
    let (src, dst) = (scope.name("src"), scope.name("dst"));
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    // Every third message (up to 30) has its amount as a string: the bug to repair.
    let broken = |i: u64| i % 3 == 0 && i < 90;
    let messages: Vec<_> = (0..100u64)
        .map(|i| {
            let amount = if broken(i) {
                format!("\"{i}.50\"")
            } else {
                format!("{i}.5")
            };
            (
                format!("{{\"n\":{i},\"amount\":{amount}}}").into_bytes(),
                props(i),
            )
        })
        .collect();
    publish(&conn, &src, &messages).await;
    let out = replay(
        &scope,
        &[
            "--queue",
            &src,
            "--to",
            &dst,
            "--filter",
            ".body.amount | type == \"string\"",
            "--transform",
            ".body.amount |= tonumber",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json_out(&out);
    assert_eq!(
        (r["replayed"].as_u64(), r["kept"].as_u64()),
        (Some(30), Some(70)),
        "{r}"
    );
    let copies = drain(&conn, &dst).await;
    assert_eq!(copies.len(), 30);
    for d in &copies {
        let i: u64 = message_id(d).trim_start_matches("m-").parse().unwrap();
        assert!(broken(i));
        assert_eq!(
            d.data,
            format!("{{\"n\":{i},\"amount\":{i}.5}}").into_bytes()
        );
        // Every property and header as a plain replay: the same, plus x-replay-count 1.
        let mut want = headers();
        want.insert("x-replay-count".into(), AMQPValue::LongLongInt(1));
        assert_eq!(d.properties, props(i).with_headers(want));
    }
    let rest = drain(&conn, &src).await;
    let ids: Vec<u64> = rest
        .iter()
        .map(|d| message_id(d).trim_start_matches("m-").parse().unwrap())
        .collect();
    assert_eq!(ids, (0..100).filter(|i| !broken(*i)).collect::<Vec<_>>());
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn transform_identity_is_byte_identical_to_a_plain_replay() {
    let scope = Scope::new("tident");
    let (s1, s2, d1, d2) = (
        scope.name("s1"),
        scope.name("s2"),
        scope.name("d1"),
        scope.name("d2"),
    );
    let conn = connect().await;
    for q in [&s1, &s2, &d1, &d2] {
        declare_queue(&conn, q, FieldTable::default()).await;
    }
    let mut h = headers();
    h.insert(
        "x-death".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString("old".into())].into()),
    );
    h.insert("x-replay-count".into(), AMQPValue::ShortInt(2));
    let base = BasicProperties::default()
        .with_message_id("m-0".into())
        .with_headers(h);
    let messages = vec![
        (b"{ \"spaced\" :  1 }".to_vec(), base.clone()),
        (b"plain text, not JSON".to_vec(), base.clone()),
        (vec![0, 159, 146, 150, 255, 10], base.clone()),
    ];
    publish(&conn, &s1, &messages).await;
    publish(&conn, &s2, &messages).await;
    let plain = replay(&scope, &["--queue", &s1, "--to", &d1]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let ident = replay(&scope, &["--queue", &s2, "--to", &d2, "--transform", "."]);
    assert_eq!(ident.status.code(), Some(0), "{}", stderr(&ident));
    let (a, b) = (drain(&conn, &d1).await, drain(&conn, &d2).await);
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(b.iter()) {
        assert_eq!(x.data, y.data);
        assert_eq!(x.properties, y.properties);
    }
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_transform_that_fails_on_some_keeps_them_in_order_and_exits_1() {
    let scope = Scope::new("tfail");
    let (src, dst) = (scope.name("src"), scope.name("dst"));
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let messages: Vec<_> = (0..20u64)
        .map(|i| (format!("{{\"n\":{i}}}").into_bytes(), props(i)))
        .collect();
    publish(&conn, &src, &messages).await;
    let out = replay(
        &scope,
        &[
            "--queue",
            &src,
            "--to",
            &dst,
            "--transform",
            "if .body.n % 4 == 0 then error(\"cannot fix\") elif .body.n == 7 then .body = {} | .body_encoding = \"rot13\" else . end",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json_out(&out);
    assert_eq!(
        (r["replayed"].as_u64(), r["failed"].as_u64()),
        (Some(14), Some(6)),
        "{r}"
    );
    assert!(stderr(&out).contains("position 1"), "{}", stderr(&out));
    let stayed: Vec<u64> = drain(&conn, &src)
        .await
        .iter()
        .map(|d| message_id(d).trim_start_matches("m-").parse().unwrap())
        .collect();
    assert_eq!(stayed, vec![0, 4, 7, 8, 12, 16]);
    assert_eq!(drain(&conn, &dst).await.len(), 14);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_bad_transform_touches_nothing_and_a_dry_run_shows_the_change() {
    let scope = Scope::new("tdry");
    let (src, dst) = (scope.name("src"), scope.name("dst"));
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    publish(
        &conn,
        &src,
        &[(b"{\"amount\":\"12.50\"}".to_vec(), props(1))],
    )
    .await;
    let bad = replay(
        &scope,
        &["--queue", &src, "--to", &dst, "--transform", ".body |"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--transform"), "{}", stderr(&bad));

    let dry = dlq(&scope)
        .args(["replay", "--queue", &src, "--to", &dst, "--dry-run"])
        .args(["--transform", ".body.amount |= tonumber"])
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("body.amount: \"12.50\" → 12.5"), "{text}");
    let json = dlq(&scope)
        .args([
            "replay",
            "--queue",
            &src,
            "--to",
            &dst,
            "--dry-run",
            "-o",
            "json",
        ])
        .args(["--transform", ".body.amount |= tonumber"])
        .output()
        .unwrap();
    let r: Value = json_out(&json);
    assert_eq!(r["preview"][0]["after"]["body"]["amount"], 12.5, "{r}");
    assert_eq!(r["preview"][0]["before"]["body"]["amount"], "12.50", "{r}");
    let same = dlq(&scope)
        .args(["replay", "--queue", &src, "--to", &dst, "--dry-run"])
        .args(["--transform", "."])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("the transform changes nothing"),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert_eq!(amqp_count(&src).await, 1, "nothing moved");
    assert_eq!(amqp_count(&dst).await, 0);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_transform_can_reroute_to_an_existing_queue_only() {
    let scope = Scope::new("treroute");
    let (src, dst, v2) = (scope.name("src"), scope.name("dst"), scope.name("v2"));
    let conn = connect().await;
    for q in [&src, &dst, &v2] {
        declare_queue(&conn, q, FieldTable::default()).await;
    }
    let messages: Vec<_> = (0..4u64)
        .map(|i| (format!("{{\"n\":{i}}}").into_bytes(), props(i)))
        .collect();
    publish(&conn, &src, &messages).await;
    let t = format!(
        "if .body.n < 2 then .routing_key = \"{v2}\" elif .body.n == 2 then .routing_key = \"{v2}.missing\" else . end"
    );
    let out = replay(&scope, &["--queue", &src, "--to", &dst, "--transform", &t]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(drain(&conn, &v2).await.len(), 2);
    assert_eq!(drain(&conn, &dst).await.len(), 1);
    assert_eq!(
        drain(&conn, &src).await.len(),
        1,
        "the one sent nowhere stays"
    );
    let _ = conn.close(200, "ok".into()).await;
}
