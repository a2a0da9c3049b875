//! Quorum queues, per broker version: reads that leave messages in place (`export` without
//! `--remove`, `replay --dry-run`, the kept messages of `replay --filter`) never take a message
//! past its delivery-limit; a publish over `max_message_size` is one clear line.

mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// A quorum queue with `x-delivery-limit: 4` holding m0…m9.
async fn limited_queue(conn: &lapin::Connection, q: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(4));
    declare_queue(conn, q, args).await;
    publish_many(
        conn,
        q,
        (0..10).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                BasicProperties::default().with_message_id(format!("m{i}").into()),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(q, 10).await, 10);
}

/// Where each read counts toward the delivery-limit (3.10 with a limit, 4.0–4.2), the third run
/// of a command that leaves messages in place stops at the first message near the limit, exits 1
/// and names it; from 4.3 a read is free and every run reads all ten. Either way nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn reads_that_leave_messages_stop_before_the_delivery_limit_where_reads_count_and_not_on_4_3()
{
    let counts = broker_version() < (4, 3);
    let scope = Scope::new("qlimit");
    let conn = connect().await;
    let file = scope.path("out.jsonl");
    let file = file.to_str().unwrap().to_string();
    let (dst, _) = (scope.name("dst"), ());
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let commands: Vec<(&str, Vec<String>)> = vec![
        (
            "replay --dry-run",
            vec![
                "replay".into(),
                "--dry-run".into(),
                "--to".into(),
                dst.clone(),
            ],
        ),
        (
            "export",
            vec!["export".into(), "--file".into(), file.clone()],
        ),
        (
            "replay --filter (nothing matches)",
            vec![
                "replay".into(),
                "--yes".into(),
                "--to".into(),
                dst.clone(),
                "--filter".into(),
                ".body.n > 100".into(),
            ],
        ),
        (
            "export --remove --filter (nothing matches)",
            vec![
                "export".into(),
                "--remove".into(),
                "--yes".into(),
                "--file".into(),
                file.clone(),
                "--filter".into(),
                ".body.n > 100".into(),
            ],
        ),
    ];
    for (i, (what, args)) in commands.iter().enumerate() {
        let q = scope.name(&format!("q{i}"));
        limited_queue(&conn, &q).await;
        let runs = if counts { 3 } else { 5 };
        for run in 1..=runs {
            let out = dlq(&scope)
                .args(args)
                .args(["--queue", &q, "-o", "json"])
                .output()
                .unwrap();
            let err = stderr(&out);
            if counts && run == 3 {
                assert_eq!(out.status.code(), Some(1), "{what}, run {run}: {err}");
                assert!(
                    err.contains("reading stopped at message 1")
                        && err.contains("x-delivery-count is 2")
                        && err.contains("delivery-limit is 4"),
                    "{what}: {err}"
                );
                assert!(err.contains("read one at a time"), "{what}: {err}");
                assert!(!err.contains(" -1"), "{what}: {err}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{what}, run {run}: {err}");
            }
        }
        assert_eq!(wait_for_count(&q, 10).await, 10, "{what}: nothing dropped");
    }
    assert_eq!(amqp_count(&dst).await, 0);
    let _ = conn.close(200, "ok".into()).await;
}

/// A record over 4.x's default `max_message_size` (16 MiB): on 4.x `import` names the line, the
/// size and the limit and publishes nothing, and `replay` keeps a message whose repaired copy
/// grew over it while moving the rest; on 3.x (128 MiB) both go through.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_max_message_size_is_one_line_on_4_x_and_fits_on_3_x() {
    let limited = broker_version() >= (4, 0);
    let scope = Scope::new("maxsize");
    let (dst, src) = (scope.name("dst"), scope.name("src"));
    let conn = connect().await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    let record = |id: &str, body: String| {
        serde_json::json!({"body": body, "body_encoding": "text",
                           "properties": {"message_id": id}, "headers": {}})
        .to_string()
    };
    let file = scope.path("big.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            record("small", "s".into()),
            record("big", "x".repeat(17 << 20))
        ),
    )
    .unwrap();
    let out = dlq(&scope)
        .args(["import", "--yes", "--to", &dst, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let err = stderr(&out);
    if limited {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("line 2: a message of 17,825,792 bytes is over the broker's max_message_size (16,777,216 bytes); nothing was published"),
            "{err}"
        );
        assert_eq!(amqp_count(&dst).await, 0, "nothing half done");
    } else {
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(wait_for_count(&dst, 2).await, 2);
    }

    // A transform that doubles a 9 MiB body makes an 18 MiB copy.
    let file = scope.path("nine.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            record("nine", "y".repeat(9 << 20)),
            record("small", "s".into())
        ),
    )
    .unwrap();
    let out = dlq(&scope)
        .args(["import", "--yes", "--to", &src, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = amqp_count(&dst).await;
    let out = dlq(&scope)
        .args([
            "replay", "--yes", "--queue", &src, "--to", &dst, "-o", "json",
        ])
        .args(["--transform", ".body = (.body + .body)"])
        .output()
        .unwrap();
    let err = stderr(&out);
    let r = json_out(&out);
    if limited {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            (r["replayed"].as_u64(), r["failed"].as_u64()),
            (Some(1), Some(1)),
            "{r}"
        );
        assert!(
            err.contains("a message of 18,874,368 bytes is over the broker's max_message_size (16,777,216 bytes)"),
            "{err}"
        );
        assert_eq!(wait_for_count(&src, 1).await, 1, "the big one stayed");
        assert_eq!(wait_for_count(&dst, before + 1).await, before + 1);
    } else {
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(r["replayed"].as_u64(), Some(2), "{r}");
        assert_eq!(wait_for_count(&src, 0).await, 0);
    }
    let _ = conn.close(200, "ok".into()).await;
}

/// `x-delivery-limit: -1` means "no limit" from 4.0, but on 3.x every return exceeds it (measured
/// on 3.10.8: one plain browse emptied the queue). dlq refuses to read such a queue on 3.x and
/// reads it freely on 4.x; the messages stay either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_negative_delivery_limit_is_refused_on_3_x_and_read_freely_on_4_x() {
    let scope = Scope::new("qneg");
    let q = scope.name("q");
    let conn = connect().await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(-1));
    declare_queue(&conn, &q, args).await;
    publish_many(
        &conn,
        &q,
        (0..3).map(|i| (format!("{i}").into_bytes(), BasicProperties::default())),
    )
    .await;
    assert_eq!(wait_for_count(&q, 3).await, 3);
    for command in [vec!["list"], vec!["replay", "--dry-run", "--to", &q]] {
        let out = dlq(&scope)
            .args(&command)
            .args(["--queue", &q])
            .output()
            .unwrap();
        let err = stderr(&out);
        if broker_version() < (4, 0) {
            assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
            assert!(err.contains("dlq does not read it"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{command:?}: {err}");
        }
        assert_eq!(
            wait_for_count(&q, 3).await,
            3,
            "{command:?}: nothing dropped"
        );
    }
    let _ = conn.close(200, "ok".into()).await;
}
