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

/// The message ids of a queue, in order, as a full `dlq list` shows them (a full read keeps the
/// order on every version: everything is held, then given back with one nack).
fn listed_ids(scope: &Scope, q: &str) -> Vec<String> {
    let out = dlq(scope)
        .args(["list", "--queue", q, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json_out(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["properties"]["message_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(range: impl IntoIterator<Item = u32>) -> Vec<String> {
    range.into_iter().map(|i| format!("m{i}")).collect()
}

/// A quorum queue does not put a message given back in its place: before 4.0 it goes to the
/// back, from 4.0 into a FIFO of returned messages served first. Reads that stop early (`list
/// --limit`, `list --filter --limit`, `peek`, `peek --pop` keeping one) read on as far as the
/// version needs, so the queue keeps its order on 3.10 (the whole queue), 4.0 (one at a time,
/// under the default delivery-limit) and 4.3 (to the first fresh delivery).
#[tokio::test(flavor = "multi_thread")]
async fn partial_reads_leave_a_quorum_queue_in_its_order_on_3_10_4_0_and_4_3() {
    let scope = Scope::new("qorder");
    let conn = connect().await;
    let q = scope.name("q");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare_queue(&conn, &q, args).await;
    publish_many(
        &conn,
        &q,
        (0..10).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                BasicProperties::default().with_message_id(format!("m{i}").into()),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, 10).await, 10);
    let reads: [&[&str]; 5] = [
        &["list", "--limit", "3"],
        &["peek"],
        &["peek", "--count", "2"],
        &["list", "--filter", ".body.n == 4", "--limit", "1"],
        &["list", "--group-by", ".body.n > 2", "--limit", "5"],
    ];
    for read in reads {
        let out = dlq(&scope)
            .args(read)
            .args(["--queue", &q, "-o", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{read:?}: {}", stderr(&out));
        assert_eq!(wait_for_count(&q, 10).await, 10, "{read:?}");
        assert_eq!(listed_ids(&scope, &q), ids(0..10), "after {read:?}");
    }
    // peek --pop: keep the first, remove the second.
    let (code, screen) = on_terminal(
        &scope,
        "ny",
        false,
        &["peek", "--queue", &q, "--pop", "--count", "2"],
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("1 of 2 shown"), "{screen}");
    assert_eq!(wait_for_count(&q, 9).await, 9);
    let mut rest = ids([0]);
    rest.extend(ids(2..10));
    assert_eq!(listed_ids(&scope, &q), rest, "after peek --pop");
    let drained: Vec<String> = drain(&conn, &q).await.iter().map(message_id).collect();
    assert_eq!(drained, rest, "the queue itself");
    let _ = conn.close(200, "ok".into()).await;
}

/// A consumer that crashes on `queue`'s head message `times` times: each time it takes the
/// message with basic.get and its connection closes before any ack (the broker requeues it).
/// Returns how many times it got a message.
async fn crash_on_head(queue: &str, times: u32) -> u32 {
    let mut got = 0;
    for _ in 0..times {
        let conn = connect().await;
        let ch = conn.create_channel().await.unwrap();
        let m = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        let _ = conn.close(320, "crash".into()).await;
        match m {
            Some(_) => got += 1,
            None => break,
        }
        // The requeue after a closed connection takes a moment.
        wait_for_count(queue, 1).await;
    }
    got
}

/// The quorum topology never drops a crash-looping message. On 4.x a quorum queue's default
/// delivery-limit of 20 dead-letters the message to S.retry, and when its TTL sends it back the
/// broker drops it as a cycle without a rejection (shown here on a queue declared without the
/// argument); the queues `topology apply` declares (x-delivery-limit -1 on 4.x) keep it through
/// 25 crashes, and `verify` flags the unsafe queue until a policy lifts the limit. On 3.x there
/// is no default limit: both keep it.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_message_survives_the_applied_quorum_topology_and_verify_flags_a_limited_one_on_4_x(
) {
    let from_4 = broker_version() >= (4, 0);
    let scope = Scope::new("qloop");
    let (safe, bare) = (scope.name("safe"), scope.name("bare"));
    let cfg = scope.config(&format!(
        "[defaults]\nqueue_type = \"quorum\"\nretry_delay = \"200ms\"\n\n[services.\"{safe}\"]\n[services.\"{bare}\"]\n"
    ));
    let cfg = cfg.to_str().unwrap().to_string();
    // `bare` is declared the way it would have been before: the contract's arguments only.
    let conn = connect().await;
    for (name, args) in [
        (
            bare.clone(),
            vec![
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString(format!("{bare}.retry").into()),
                ),
            ],
        ),
        (
            format!("{bare}.retry"),
            vec![
                ("x-message-ttl", AMQPValue::LongLongInt(200)),
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString(bare.clone().into()),
                ),
            ],
        ),
        (format!("{bare}.error"), vec![]),
    ] {
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        for (k, v) in args {
            t.insert(k.into(), v);
        }
        declare_queue(&conn, &name, t).await;
    }
    let out = dlq(&scope)
        .args(["-c", &cfg, "topology", "apply", "--service", &safe])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    for q in [&safe, &bare] {
        publish_many(
            &conn,
            q,
            [(
                b"{\"poison\":true}".to_vec(),
                BasicProperties::default().with_message_id("poison".into()),
            )],
        )
        .await;
        assert_eq!(wait_for_count(q, 1).await, 1);
    }
    assert_eq!(
        crash_on_head(&safe, 25).await,
        25,
        "dlq's topology keeps it"
    );
    assert_eq!(wait_for_count(&safe, 1).await, 1);
    let bare_got = crash_on_head(&bare, 25).await;
    if from_4 {
        // Past the default limit of 20 it goes to bare.retry, then the cycle drops it.
        assert!(bare_got <= 21, "{bare_got} deliveries");
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(amqp_count(&bare).await, 0, "dropped on 4.x");
        assert_eq!(amqp_count(&format!("{bare}.retry")).await, 0);
    } else {
        assert_eq!(bare_got, 25);
        assert_eq!(
            wait_for_count(&bare, 1).await,
            1,
            "3.x has no default limit"
        );
    }

    let verify = |service: &str| {
        dlq(&scope)
            .args(["-c", &cfg, "topology", "verify", "--service", service])
            .output()
            .unwrap()
    };
    let out = verify(&safe);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = verify(&bare);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if from_4 {
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(
            text.contains("x-delivery-limit") && text.contains("drops it"),
            "{text}"
        );
        // A policy that lifts the limit is the fix for queues that already exist.
        api_put(
            &format!("policies/%2F/{}", enc(&bare)),
            serde_json::json!({"pattern": format!("^{}", regex_escape(&bare)), "apply-to": "queues",
                               "definition": {"delivery-limit": -1}}),
        );
        let mut ok = false;
        for _ in 0..50 {
            if verify(&bare).status.code() == Some(0) {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        api_delete(&format!("policies/%2F/{}", enc(&bare)));
        assert!(ok, "verify accepts the policy");
    } else {
        assert_eq!(out.status.code(), Some(0), "{text}");
    }
    let _ = conn.close(200, "ok".into()).await;
}

/// The name as a regular expression matching itself.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// At real size: `peek` on a quorum queue of 100,000 reads on as far as the version needs and
/// gives everything back; a `list` started right after it sees all 100,000, in order (the
/// broker takes seconds to requeue that many, and the command waits for it before it exits).
#[tokio::test(flavor = "multi_thread")]
async fn peek_on_a_quorum_queue_of_100k_keeps_its_order_and_the_next_command_sees_all() {
    const N: u32 = 100_000;
    let scope = Scope::new("q100k");
    let conn = connect().await;
    let q = scope.name("q");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare_queue(&conn, &q, args).await;
    publish_many(
        &conn,
        &q,
        (0..N).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                BasicProperties::default().with_message_id(format!("m{i}").into()),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, u64::from(N)).await, u64::from(N));
    for read in [&["peek"][..], &["list", "--limit", "3"][..]] {
        let out = dlq(&scope)
            .args(read)
            .args(["--queue", &q, "-o", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{read:?}: {}", stderr(&out));
        let out = dlq(&scope)
            .args(["list", "--queue", &q, "-o", "jsonl"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<&str> = text
            .lines()
            .map(|l| {
                let at = l.find("\"message_id\":\"").expect("a message id") + 14;
                &l[at..at + l[at..].find('"').unwrap()]
            })
            .collect();
        assert_eq!(ids.len(), N as usize, "after {read:?}");
        assert!(
            ids.iter().enumerate().all(|(i, id)| *id == format!("m{i}")),
            "after {read:?}: out of order"
        );
    }
    let _ = conn.close(200, "ok".into()).await;
}
