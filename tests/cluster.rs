//! A three-node RabbitMQ 4.3 cluster (scripts/broker-cluster up): dlq works through any node,
//! and a replay whose node dies goes on through the other URLs, losing nothing.
//!
//! Each test re-runs itself inside the cluster's network namespace (rmq43c), where the nodes
//! answer on 127.0.0.1:5672, 5673 and 5674, so the test's own AMQP client (seeding, counting
//! ids) reaches them too. The cluster is the same whichever broker the rest of the suite runs
//! on, so scripts/test runs these once (`--skip cluster_` elsewhere). Without the cluster they
//! fail, never skip.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{json_out, stderr, Scope, CLEARED_ENV};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const NS: &str = "rmq43c";
/// Set in the re-run inside the namespace.
const INSIDE: &str = "DLQ_TEST_IN_CLUSTER";

fn node(n: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5671 + n)
}

fn script() -> String {
    format!("{}/scripts/broker-cluster", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `test` of this binary inside the cluster's namespace, one at a time (one of them kills
/// a node); true when already inside, where the caller does the work.
fn inside_cluster(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        std::path::Path::new("/run/netns").join(NS).exists(),
        "no RabbitMQ cluster: run scripts/broker-cluster up"
    );
    let status = Command::new("ip")
        .args(["netns", "exec", NS])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .unwrap();
    assert!(status.success(), "{test} failed inside the cluster");
    false
}

fn cluster(args: &[&str]) {
    let out = Command::new(script()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "broker-cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every node up (a previous run that failed half-way may have left one down).
fn all_nodes_up() {
    let status = Command::new(script()).arg("status").output().unwrap();
    if !status.status.success() {
        let text = String::from_utf8_lossy(&status.stdout);
        for n in ["1", "2", "3"] {
            if text.contains(&format!("node {n} down")) {
                cluster(&["start", n]);
            }
        }
    }
}

fn dlq(scope: &Scope, args: &[&str]) -> std::process::Output {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_dlq"));
    for var in CLEARED_ENV {
        c.env_remove(var);
    }
    c.current_dir(scope.dir.path())
        .timeout(Duration::from_secs(300))
        .args(args);
    c.output().unwrap()
}

async fn connect(n: u16) -> Connection {
    Connection::connect(&node(n), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("node {n} of the cluster does not answer: {e}"))
}

async fn ready(conn: &Connection, queue: &str) -> u64 {
    common::ready_on(conn, queue).await
}

/// Takes every message out of `queue` with a consumer (a basic.get per message is slow on a
/// quorum queue): message id → how many times it was there. Stops after 5 s without a delivery.
async fn take_all(conn: &Connection, queue: &str) -> HashMap<String, u32> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(2000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "count".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = HashMap::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), next(&mut consumer)).await
    {
        *ids.entry(common::message_id(&d.unwrap())).or_insert(0) += 1;
    }
    let _ = ch.close(200, "ok".into()).await;
    ids
}

async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

/// A quorum service declared through node 2 and verified through node 3; its error queue read
/// and replayed through node 3 and node 1; a --url list whose first entry answers nothing
/// connects to the next.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_topology_list_and_replay_work_through_any_node() {
    if !inside_cluster("cluster_topology_list_and_replay_work_through_any_node") {
        return;
    }
    all_nodes_up();
    let scope = Scope::new("cluster");
    let svc = scope.name("svc");
    let config = scope.config(&format!(
        "[defaults]\nqueue_type = \"quorum\"\n[services.\"{svc}\"]\n"
    ));
    let config = config.to_str().unwrap();
    let out = dlq(
        &scope,
        &["-c", config, "--url", &node(2), "topology", "apply"],
    );
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let out = dlq(
        &scope,
        &[
            "-c",
            config,
            "--url",
            &node(3),
            "--management-url",
            "http://guest:guest@127.0.0.1:15674",
            "topology",
            "verify",
        ],
    );
    assert!(out.status.success(), "verify: {}", stderr(&out));

    let conn = connect(1).await;
    let error = format!("{svc}.error");
    common::publish_many(
        &conn,
        &error,
        (0..100).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                BasicProperties::default().with_message_id(format!("m{i}").into()),
            )
        }),
    )
    .await;
    let nobody = "amqp://guest:guest@127.0.0.1:5999";
    let urls = format!("{nobody},{}", node(3));
    let out = dlq(
        &scope,
        &["-c", config, "--url", &urls, "-o", "json", "list", &svc],
    );
    assert!(out.status.success(), "list: {}", stderr(&out));
    let listed = json_out(&out);
    assert_eq!(listed.as_array().unwrap().len(), 100);
    assert_eq!(listed[0]["properties"]["message_id"], "m0");

    let out = dlq(
        &scope,
        &[
            "-c",
            config,
            "--url",
            &node(1),
            "-o",
            "json",
            "-y",
            "replay",
            &svc,
            "--filter",
            ".body.n % 2 == 0",
        ],
    );
    assert!(out.status.success(), "replay: {}", stderr(&out));
    assert_eq!(
        json_out(&out),
        serde_json::json!({"replayed": 50, "kept": 50, "failed": 0})
    );
    let moved = take_all(&connect(2).await, &svc).await;
    assert_eq!(moved.len(), 50);
    assert!((0..100)
        .step_by(2)
        .all(|i| moved.get(&format!("m{i}")) == Some(&1)));
    assert_eq!(ready(&conn, &error).await, 50);
}

/// The node dlq is connected to dies (SIGKILL) in the middle of a replay of 20,000 messages
/// between quorum queues: dlq reconnects through the next URL and finishes by itself, every
/// message id arrives, duplicates only among the copies in flight, and the summary says so.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_a_replay_of_20000_goes_on_when_its_node_dies() {
    if !inside_cluster("cluster_a_replay_of_20000_goes_on_when_its_node_dies") {
        return;
    }
    const N: usize = 20_000;
    all_nodes_up();
    let scope = Scope::new("cluster-kill");
    let (from, to) = (scope.name("error"), scope.name("work"));
    let conn = connect(2).await;
    for q in [&from, &to] {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        common::declare_queue(&conn, q, args).await;
    }
    common::publish_many(
        &conn,
        &from,
        (0..N).map(|i| {
            (
                format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
                BasicProperties::default().with_message_id(format!("m{i}").into()),
            )
        }),
    )
    .await;
    assert_eq!(ready(&conn, &from).await, N as u64);

    let urls = format!("{},{},{}", node(1), node(2), node(3));
    let mut replay = std::process::Command::new(env!("CARGO_BIN_EXE_dlq"));
    for var in CLEARED_ENV {
        replay.env_remove(var);
    }
    let replay = replay
        .current_dir(scope.dir.path())
        .args(["--url", &urls, "-o", "json", "-y", "replay", "--queue"])
        .args([&from, "--to", &to])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill node 1 (the one dlq connected to) once a tenth has moved.
    let t0 = Instant::now();
    while ready(&conn, &to).await < N as u64 / 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the replay did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster(&["kill", "1"]);
    let killed_at = Instant::now();
    let out = tokio::task::spawn_blocking(move || replay.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let after_kill = killed_at.elapsed();
    // Whole again before anything can fail (the scope's cleanup uses node 1's management API).
    cluster(&["start", "1"]);
    assert!(out.status.success(), "replay: {}", stderr(&out));
    let summary = json_out(&out);
    // Copies whose source's ack was lost with the node are replayed again, and counted again.
    let replayed = summary["replayed"].as_u64().unwrap();
    assert!(replayed >= N as u64, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let reconnects = summary["reconnects"].as_array().expect("reconnects listed");
    assert_eq!(reconnects.len(), 1, "{summary}");
    assert_eq!(reconnects[0]["to"], "amqp://guest:***@127.0.0.1:5673/%2f");
    assert!(stderr(&out).contains("went on through"), "{}", stderr(&out));

    assert_eq!(ready(&conn, &from).await, 0, "the source is empty");
    let moved = take_all(&conn, &to).await;
    let missing: Vec<usize> = (0..N)
        .filter(|i| !moved.contains_key(&format!("m{i}")))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: u32 = moved.values().map(|c| c - 1).sum();
    assert!(replayed <= (N as u64) + u64::from(duplicates), "{summary}");
    eprintln!(
        "cluster: replay of {N} went on {:.1} s after its node was killed; {duplicates} duplicate(s); reconnect took {} s",
        after_kill.as_secs_f64(),
        reconnects[0]["seconds"]
    );
    // Copies in flight: at most the publish window, plus the acks of one settled batch.
    assert!(duplicates <= 1024, "{duplicates} duplicates");
}
