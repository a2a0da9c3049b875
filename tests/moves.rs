//! replay, export, import and purge against a real broker: what moves, what stays, and that no
//! failure path (missing queue, lost connection, Ctrl-C, full disk) loses a message.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::Value;

/// A service with applied topology; returns (config path, service name).
fn service(scope: &Scope) -> (std::path::PathBuf, String) {
    let s = scope.name("svc");
    let cfg = scope.config(&format!(
        "[services.\"{s}\"]\nretry_delay = \"200ms\"\nmax_retries = 0\n"
    ));
    dlq(scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .assert()
        .code(0);
    (cfg, s)
}

fn props(i: u64, replay_count: Option<i64>) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    h.insert(
        "x-error-message".into(),
        AMQPValue::LongString(format!("boom {}", i % 3).into()),
    );
    if let Some(c) = replay_count {
        h.insert("x-replay-count".into(), AMQPValue::LongLongInt(c));
    }
    BasicProperties::default()
        .with_message_id(format!("m-{i}").into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_app_id("billing-api".into())
        .with_headers(h)
}

#[tokio::test]
async fn replay_with_a_filter_moves_exactly_the_matching_30_with_identical_bytes_and_keeps_70_in_order(
) {
    let scope = Scope::new("replay30");
    let (cfg, s) = service(&scope);
    let error_q = format!("{s}.error");
    let conn = connect().await;
    let messages = (0..100u64)
        .map(|n| {
            (
                format!("{{\"n\":{n}}}").into_bytes(),
                props(n, (n % 20 == 0).then_some(2)),
            )
        })
        .collect();
    dead_letter_into(&conn, &scope.name("expire"), &error_q, messages).await;

    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "replay",
            &s,
            "--filter",
            ".body.n % 10 < 3",
            "--yes",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json_out(&out),
        serde_json::json!({"replayed": 30, "kept": 70, "failed": 0})
    );

    let moved = drain(&conn, &s).await;
    assert_eq!(moved.len(), 30);
    for d in &moved {
        let n: u64 = serde_json::from_slice::<Value>(&d.data).unwrap()["n"]
            .as_u64()
            .unwrap();
        assert!(n % 10 < 3, "{n} does not match");
        assert_eq!(
            d.data,
            format!("{{\"n\":{n}}}").into_bytes(),
            "identical body bytes"
        );
        let want = props(n, None);
        assert_eq!(d.properties.message_id(), want.message_id());
        assert_eq!(d.properties.content_type(), want.content_type());
        assert_eq!(d.properties.delivery_mode(), want.delivery_mode());
        assert_eq!(d.properties.priority(), want.priority());
        assert_eq!(d.properties.app_id(), want.app_id());
        let h = d.properties.headers().as_ref().unwrap().inner();
        assert!(
            !h.keys().any(|k| k.as_str() == "x-death"
                || k.as_str().starts_with("x-first-death")
                || k.as_str().starts_with("x-last-death")),
            "{h:?}"
        );
        assert_eq!(h["tenant"], AMQPValue::LongString("acme".into()));
        let expected = if n % 20 == 0 { 3 } else { 1 };
        assert_eq!(
            h["x-replay-count"],
            AMQPValue::LongLongInt(expected),
            "n={n}"
        );
    }
    let kept: Vec<u64> = drain(&conn, &error_q)
        .await
        .iter()
        .map(|d| {
            serde_json::from_slice::<Value>(&d.data).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = (0..100).filter(|n| n % 10 >= 3).collect();
    assert_eq!(kept, want, "the other 70 stay, in order");
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn replay_to_a_missing_queue_keeps_every_message_and_creates_nothing() {
    let scope = Scope::new("replaymissing");
    let src = scope.name("src");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    publish_many(
        &conn,
        &src,
        (0..10).map(|i| (format!("{i}").into_bytes(), props(i, None))),
    )
    .await;
    let missing = scope.name("nosuch");
    let out = dlq(&scope)
        .args(["replay", "--queue", &src, "--to", &missing, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    assert!(api_queue(&missing).is_none(), "nothing created");
    let left = drain(&conn, &src).await;
    assert_eq!(
        left.iter().map(message_id).collect::<Vec<_>>(),
        (0..10).map(|i| format!("m-{i}")).collect::<Vec<_>>()
    );
    assert!(left.iter().all(|d| !d.redelivered), "not even looked at");
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_message_without_origin_is_kept_and_counted_failed() {
    let scope = Scope::new("noorigin");
    let src = scope.name("src");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    publish_many(
        &conn,
        &src,
        (0..3).map(|i| {
            (
                b"x".to_vec(),
                BasicProperties::default().with_message_id(format!("m-{i}").into()),
            )
        }),
    )
    .await;
    let out = dlq(&scope)
        .args(["replay", "--queue", &src, "--yes", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json_out(&out),
        serde_json::json!({"replayed": 0, "kept": 0, "failed": 3})
    );
    assert_eq!(drain(&conn, &src).await.len(), 3);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_worker_failing_everything_during_replay_gets_each_message_replayed_once() {
    let scope = Scope::new("refail");
    let (cfg, s) = service(&scope);
    let error_q = format!("{s}.error");
    let conn = connect().await;
    let n = 300u64;
    dead_letter_into(
        &conn,
        &scope.name("expire"),
        &error_q,
        (0..n).map(|i| (b"work".to_vec(), props(i, None))).collect(),
    )
    .await;

    // The worker fails every message at once (max_retries 0): each replayed copy is parked
    // again at the tail of the error queue while the replay is still running.
    let config = dlq::config::Config::load(&cfg).unwrap();
    let svc = config.service(&s).unwrap().clone();
    let broker = dlq::broker::Broker::connect(&[AMQP_URL.to_string()], "test worker")
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = async {
        dlq::broker::worker::run(
            &broker,
            &svc,
            "work",
            async {
                let _ = stop_rx.await;
            },
            |_| {},
        )
        .await
        .unwrap()
    };
    let replay = async {
        let cfg = cfg.clone();
        let s2 = s.clone();
        let out = tokio::task::spawn_blocking(move || {
            let scope2 = Scope::new("refail-run");
            dlq(&scope2)
                .args([
                    "-c",
                    cfg.to_str().unwrap(),
                    "replay",
                    &s2,
                    "--yes",
                    "-o",
                    "json",
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        wait_for_count(&error_q, n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(());
        out
    };
    let (stats, out) = tokio::join!(worker, replay);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json_out(&out)["replayed"],
        n,
        "replayed = the initial count"
    );
    assert_eq!(stats.parked, n);
    let parked = drain(&conn, &error_q).await;
    assert_eq!(parked.len() as u64, n);
    let ids: HashSet<String> = parked.iter().map(message_id).collect();
    assert_eq!(ids.len() as u64, n, "each message once");
    for d in &parked {
        let h = d.properties.headers().as_ref().unwrap().inner();
        assert_eq!(
            h["x-replay-count"],
            AMQPValue::LongLongInt(1),
            "no message replayed twice"
        );
    }
    broker.close().await;
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
/// The replay's user is deleted mid-run: the broker closes its connection and refuses every
/// reconnect, so after 30 s of trying dlq stops with exit 1, saying how many it moved; nothing
/// is lost and a second run (another user) finishes.
async fn a_replay_that_cannot_reconnect_within_30_s_stops_losing_nothing_and_a_second_run_finishes()
{
    let scope = Scope::new("killconn");
    let user = format!("dlqu{}", random_suffix());
    api_put(
        &format!("users/{}", enc(&user)),
        serde_json::json!({"password": "pw", "tags": "management"}),
    );
    api_put(
        &format!("permissions/%2F/{}", enc(&user)),
        serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
    );
    let url = format!("amqp://{}:pw@127.0.0.1:5672/%2f", enc(&user));
    let src = scope.name("src");
    let dst = scope.name("dst");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let n = 20_000u64;
    publish_many(
        &conn,
        &src,
        (0..n).map(|i| {
            (
                vec![b'x'; 1024],
                BasicProperties::default().with_message_id(format!("m-{i}").into()),
            )
        }),
    )
    .await;

    let (s2, d2) = (src.clone(), dst.clone());
    let run = tokio::task::spawn_blocking(move || {
        let scope2 = Scope::new("killconn-run");
        // The rate keeps the run long enough to be cut in the middle.
        dlq(&scope2)
            .args([
                "--url", &url, "replay", "--queue", &s2, "--to", &d2, "--rate", "4000", "--yes",
            ])
            .output()
            .unwrap()
    });
    // Delete the user once a thousand have moved: its connection is closed, and no reconnect
    // is let in.
    let mut closed = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if amqp_count(&dst).await >= 1000 {
            api_delete(&format!("users/{}", enc(&user)));
            closed = true;
            break;
        }
    }
    assert!(closed, "the replay started");
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no broker of --url answered within 30 s")
            && err.contains("stopped after replaying")
            && err.contains("run the command again"),
        "{err}"
    );

    // Every id is in the source or the destination.
    let in_dst = wait_settled(&dst).await;
    let in_src = wait_settled(&src).await;
    assert!(
        in_src > 0 && in_dst > 0,
        "cut in the middle: src {in_src}, dst {in_dst}"
    );
    assert!(
        in_src + in_dst >= n,
        "lost messages: src {in_src} + dst {in_dst} < {n}"
    );

    let out = dlq(&scope)
        .args([
            "replay", "--queue", &src, "--to", &dst, "--yes", "-o", "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let src_msgs = drain(&conn, &src).await;
    assert!(src_msgs.is_empty());
    let dst_ids: HashSet<String> = drain(&conn, &dst).await.iter().map(message_id).collect();
    assert_eq!(
        dst_ids.len() as u64,
        n,
        "every message arrived (duplicates allowed, none lost)"
    );
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn ctrl_c_mid_replay_confirms_what_is_in_flight_and_exits_130() {
    signal_mid_replay("sigint", "INT").await;
}

/// `kill`, `timeout`, a cancelled CI job: SIGTERM stops a replay as Ctrl-C does. It used to kill
/// it, with copies confirmed and their sources not yet acked (duplicates on a rerun), and no report.
#[tokio::test]
async fn sigterm_mid_replay_confirms_what_is_in_flight_and_exits_130() {
    signal_mid_replay("sigterm", "TERM").await;
}

/// The terminal or the ssh session went away: the same clean stop.
#[tokio::test]
async fn sighup_mid_replay_confirms_what_is_in_flight_and_exits_130() {
    signal_mid_replay("sighup", "HUP").await;
}

async fn signal_mid_replay(scope: &str, signal: &str) {
    let scope = Scope::new(scope);
    let src = scope.name("src");
    let dst = scope.name("dst");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let n = 3000u64;
    publish_many(
        &conn,
        &src,
        (0..n).map(|i| {
            (
                b"x".to_vec(),
                BasicProperties::default().with_message_id(format!("m-{i}").into()),
            )
        }),
    )
    .await;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dlq"))
        .args([
            "--url", AMQP_URL, "replay", "--queue", &src, "--to", &dst, "--rate", "1000", "--yes",
            "-o", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    send_signal(child.id(), signal);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let report = json_out(&out);
    let replayed = report["replayed"].as_u64().unwrap();
    assert!(replayed > 0 && replayed < n, "{report}");
    assert_eq!(
        wait_settled(&dst).await,
        replayed,
        "exactly the reported ones moved"
    );
    assert_eq!(wait_settled(&src).await, n - replayed, "the rest stayed");
    let _ = conn.close(200, "ok".into()).await;
}

fn send_signal(pid: u32, signal: &str) {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn export_then_import_reproduces_exact_bytes_properties_and_headers() {
    let scope = Scope::new("roundtrip");
    let src = scope.name("src");
    let dst = scope.name("dst");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"{\n  \"pretty\": true,\n  \"b\": 1,  \"a\": [1, 2]\n}".to_vec(),
        b"{\"compact\":1}".to_vec(),
        b"{\"esc\":\"\\u00e9\\n\"}".to_vec(),
        b"plain text \xe2\x9c\x93".to_vec(),
        vec![0, 159, 146, 150, 255],
        Vec::new(),
        b"1.0".to_vec(),
    ];
    let msgs: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), props(i as u64, Some(2))))
        .collect();
    publish_many(&conn, &src, msgs).await;
    let file = scope.path("out.jsonl");
    std::fs::write(&file, "").unwrap();
    dlq(&scope)
        .args(["export", "--queue", &src, "--file", file.to_str().unwrap()])
        .assert()
        .code(0);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        bodies.len()
    );
    dlq(&scope)
        .args([
            "import",
            "--file",
            file.to_str().unwrap(),
            "--to",
            &dst,
            "--yes",
        ])
        .assert()
        .code(0);

    // Appending never truncates.
    dlq(&scope)
        .args([
            "export",
            "--queue",
            &dst,
            "--file",
            file.to_str().unwrap(),
            "--limit",
            "2",
        ])
        .assert()
        .code(0);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        bodies.len() + 2
    );

    let original = drain(&conn, &src).await;
    let copied = drain(&conn, &dst).await;
    assert_eq!(
        original.len(),
        bodies.len(),
        "export without --remove leaves the queue as it was"
    );
    assert_eq!(copied.len(), bodies.len());
    for (o, c) in original.iter().zip(&copied) {
        assert_eq!(o.data, c.data, "exact body bytes");
        assert_eq!(o.properties.message_id(), c.properties.message_id());
        assert_eq!(o.properties.content_type(), c.properties.content_type());
        assert_eq!(o.properties.delivery_mode(), c.properties.delivery_mode());
        assert_eq!(o.properties.priority(), c.properties.priority());
        assert_eq!(o.properties.app_id(), c.properties.app_id());
        assert_eq!(o.properties.headers(), c.properties.headers(), "headers");
    }
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn export_remove_never_loses_a_message_when_the_file_cannot_be_written() {
    let scope = Scope::new("fullfile");
    let src = scope.name("src");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    publish_many(
        &conn,
        &src,
        (0..50).map(|i| (vec![b'y'; 200], props(i, None))),
    )
    .await;
    // /dev/full accepts the open and fails every write with "no space left on device".
    let out = dlq(&scope)
        .args([
            "export",
            "--queue",
            &src,
            "--file",
            "/dev/full",
            "--remove",
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/dev/full"), "{}", stderr(&out));
    let dir = scope.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let out = dlq(&scope)
        .args([
            "export",
            "--queue",
            &src,
            "--file",
            dir.to_str().unwrap(),
            "--remove",
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let left = drain(&conn, &src).await;
    assert_eq!(
        left.iter().map(message_id).collect::<Vec<_>>(),
        (0..50).map(|i| format!("m-{i}")).collect::<Vec<_>>()
    );

    // And with a writable file, --remove moves everything into it.
    publish_many(&conn, &src, (0..5).map(|i| (b"z".to_vec(), props(i, None)))).await;
    let file = scope.path("saved.jsonl");
    dlq(&scope)
        .args([
            "export",
            "--queue",
            &src,
            "--file",
            file.to_str().unwrap(),
            "--remove",
            "--yes",
        ])
        .assert()
        .code(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 5);
    assert!(drain(&conn, &src).await.is_empty());
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn without_a_terminal_and_without_yes_nothing_is_touched() {
    let scope = Scope::new("noyes");
    let src = scope.name("src");
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    publish_many(&conn, &src, (0..5).map(|i| (b"a".to_vec(), props(i, None)))).await;
    let file = scope.path("in.jsonl");
    std::fs::write(
        &file,
        "{\"body\":\"x\",\"body_encoding\":\"text\",\"headers\":{},\"properties\":{}}\n",
    )
    .unwrap();
    for args in [
        vec!["replay", "--queue", &src, "--to", &src],
        vec!["purge", "--queue", &src],
        vec!["export", "--queue", &src, "--file", "/dev/null", "--remove"],
        vec!["import", "--file", file.to_str().unwrap(), "--to", &src],
    ] {
        let out = dlq(&scope).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    }
    let left = drain(&conn, &src).await;
    assert_eq!(left.len(), 5, "nothing imported, removed or moved");
    assert!(
        left.iter().all(|d| !d.redelivered),
        "nothing was even fetched"
    );
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn import_stops_at_a_malformed_line_before_publishing_anything() {
    let scope = Scope::new("badimport");
    let dst = scope.name("dst");
    let conn = connect().await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let file = scope.path("bad.jsonl");
    std::fs::write(&file, "{\"body\":\"ok\",\"body_encoding\":\"text\"}\n{not json\n{\"body\":\"ok\",\"body_encoding\":\"text\"}\n").unwrap();
    let out = dlq(&scope)
        .args([
            "import",
            "--file",
            file.to_str().unwrap(),
            "--to",
            &dst,
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bad.jsonl line 2"),
        "{}",
        stderr(&out)
    );
    assert!(drain(&conn, &dst).await.is_empty());
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn purge_removes_everything_and_prints_the_count() {
    let scope = Scope::new("purge");
    let (cfg, s) = service(&scope);
    let conn = connect().await;
    publish_many(
        &conn,
        &format!("{s}.error"),
        (0..7).map(|i| (b"p".to_vec(), props(i, None))),
    )
    .await;
    let out = dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "purge", &s, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("purged 7"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(wait_for_count(&format!("{s}.error"), 0).await, 0);
    dlq(&scope)
        .args(["purge", "--queue", &scope.name("nosuch"), "--yes"])
        .assert()
        .code(1);
    let _ = conn.close(200, "ok".into()).await;
}

/// A TCP relay to the broker whose connections can be made to go silent at once: the broker's
/// side is closed (so the broker requeues what the connection held) while dlq's side stays open
/// with nothing on it, as a node that vanished without a reset. New connections relay as usual.
struct Relay {
    port: u16,
    live: std::sync::Arc<std::sync::Mutex<Vec<(std::net::TcpStream, std::net::TcpStream)>>>,
    held: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl Relay {
    fn start() -> Relay {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = live.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect("127.0.0.1:5672") else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                    });
                };
                pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
                pipe(up.try_clone().unwrap(), down.try_clone().unwrap());
                registry.lock().unwrap().push((down, up));
            }
        });
        Relay {
            port,
            live,
            held: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Every connection open now goes silent; dlq's end stays open until the relay is dropped.
    fn silence(&self) {
        for (down, up) in self.live.lock().unwrap().drain(..) {
            let _ = up.shutdown(std::net::Shutdown::Both);
            self.held.lock().unwrap().push(down);
        }
    }
}

#[tokio::test]
/// The replay's connection goes silent mid-run (no reset, no close: lapin sees nothing): dlq
/// notices that the broker stopped answering, reconnects and finishes; every message arrives.
async fn a_replay_whose_connection_goes_silent_reconnects_and_finishes() {
    let scope = Scope::new("silent");
    let (src, dst) = (scope.name("src"), scope.name("dst"));
    let conn = connect().await;
    declare_queue(&conn, &src, FieldTable::default()).await;
    declare_queue(&conn, &dst, FieldTable::default()).await;
    let n = 20_000u64;
    publish_many(
        &conn,
        &src,
        (0..n).map(|i| {
            (
                vec![b'x'; 1024],
                BasicProperties::default().with_message_id(format!("m-{i}").into()),
            )
        }),
    )
    .await;
    let relay = Relay::start();
    let url = relay.url();
    let (s2, d2) = (src.clone(), dst.clone());
    let run = tokio::task::spawn_blocking(move || {
        let scope2 = Scope::new("silent-run");
        dlq(&scope2)
            .args([
                "--url", &url, "-o", "json", "replay", "--queue", &s2, "--to", &d2, "--rate",
                "4000", "--yes",
            ])
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap()
    });
    let mut silenced = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if amqp_count(&dst).await >= 1000 {
            relay.silence();
            silenced = true;
            break;
        }
    }
    assert!(silenced, "the replay started");
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = json_out(&out);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(
        summary["reconnects"].as_array().map(Vec::len),
        Some(1),
        "{summary}"
    );
    assert!(
        stderr(&out).contains("no new channel would open"),
        "{}",
        stderr(&out)
    );
    assert_eq!(wait_settled(&src).await, 0, "the source is empty");
    let ids: HashSet<String> = drain(&conn, &dst).await.iter().map(message_id).collect();
    assert_eq!(ids.len() as u64, n, "every message arrived (none lost)");
    drop(relay);
    let _ = conn.close(200, "ok".into()).await;
}
