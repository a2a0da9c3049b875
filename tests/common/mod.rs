//! Shared helpers for the end-to-end suites: unique names, a cleanup guard, the management API,
//! publishing and draining over AMQP, and running the `dlq` binary. Every suite needs a broker at
//! 127.0.0.1:5672 (AMQP) and :15672 (management); without one the tests fail, never skip.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const API: &str = "http://127.0.0.1:15672/api";

/// A short random suffix, different for every call in every process.
pub fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// Unique names for one test and a guard that deletes every queue and exchange starting with
/// its prefix when dropped (also on panic), so tests run in parallel and leave nothing behind.
pub struct Scope {
    pub prefix: String,
    pub dir: tempfile::TempDir,
}

impl Scope {
    pub fn new(test: &str) -> Scope {
        let prefix = format!("dlq-test.{test}.{}", random_suffix());
        Scope {
            prefix,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A name inside this test's scope.
    pub fn name(&self, what: &str) -> String {
        format!("{}.{what}", self.prefix)
    }

    /// Writes a config file into the test's temp dir and returns its path.
    pub fn config(&self, toml: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("dlq-{}.toml", random_suffix()));
        std::fs::write(&path, toml).unwrap();
        path
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        for kind in ["queues", "exchanges"] {
            let Ok(Some(Value::Array(items))) = api_get(&format!("{kind}/%2F?columns=name")) else {
                continue;
            };
            for item in items {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if name.starts_with(&self.prefix) {
                    api_delete(&format!("{kind}/%2F/{}", enc(name)));
                }
            }
        }
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

const AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q="; // guest:guest

/// GET from the management API: `Ok(None)` on 404. Panics when the API is unreachable: tests need it.
pub fn api_get(path: &str) -> Result<Option<Value>, String> {
    let mut resp = agent()
        .get(&format!("{API}/{path}"))
        .header("Authorization", AUTH)
        .call()
        .unwrap_or_else(|e| panic!("the management API at {API} is needed by this test: {e}"));
    match resp.status().as_u16() {
        200 => Ok(Some(
            resp.body_mut().read_json().map_err(|e| e.to_string())?,
        )),
        404 => Ok(None),
        s => Err(format!("HTTP {s}")),
    }
}

/// PUT to the management API (users, permissions); panics unless it answers 2xx.
pub fn api_put(path: &str, body: Value) {
    let resp = agent()
        .put(&format!("{API}/{path}"))
        .header("Authorization", AUTH)
        .send_json(body)
        .unwrap_or_else(|e| panic!("the management API at {API} is needed by this test: {e}"));
    assert!(
        resp.status().is_success(),
        "PUT {path}: HTTP {}",
        resp.status()
    );
}

/// POST raw JSON text to the management API (e.g. a publish whose headers nest deeper than
/// serde_json serialises); panics unless it answers 2xx.
pub fn api_post_text(path: &str, body: &str) -> String {
    let mut resp = agent()
        .post(&format!("{API}/{path}"))
        .header("Authorization", AUTH)
        .header("content-type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("the management API at {API} is needed by this test: {e}"));
    assert!(
        resp.status().is_success(),
        "POST {path}: HTTP {}",
        resp.status()
    );
    resp.body_mut().read_to_string().unwrap_or_default()
}

pub fn api_delete(path: &str) {
    let _ = agent()
        .delete(&format!("{API}/{path}"))
        .header("Authorization", AUTH)
        .call();
}

pub fn api_queue(name: &str) -> Option<Value> {
    api_get(&format!("queues/%2F/{}", enc(name))).unwrap()
}

pub fn api_exchange(name: &str) -> Option<Value> {
    api_get(&format!("exchanges/%2F/{}", enc(name))).unwrap()
}

pub async fn connect() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("this test needs RabbitMQ at {AMQP_URL}: {e}"))
}

pub async fn declare_queue(conn: &Connection, name: &str, args: FieldTable) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let _ = ch.close(200, "ok".into()).await;
}

/// Publishes each body to `queue` through the default exchange, confirmed.
pub async fn publish(conn: &Connection, queue: &str, bodies: &[(Vec<u8>, BasicProperties)]) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (body, props) in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(c, lapin::Confirmation::Ack(None)),
            "publish to {queue} not confirmed: {c:?}"
        );
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// Takes every message out of `queue` (basic.get + ack), in order.
pub async fn drain(conn: &Connection, queue: &str) -> Vec<lapin::message::Delivery> {
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(m.delivery);
    }
    let _ = ch.close(200, "ok".into()).await;
    out
}

/// The ready count of a queue, read over AMQP (the management API's counts lag by seconds).
pub async fn amqp_count(queue: &str) -> u64 {
    let conn = connect().await;
    let n = ready_on(&conn, queue).await;
    let _ = conn.close(200, "ok".into()).await;
    n
}

/// The ready count of a queue, over this connection.
pub async fn ready_on(conn: &Connection, queue: &str) -> u64 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "ok".into()).await;
    q.message_count() as u64
}

/// The ready count once it has stopped changing (requeues after a lost connection take a moment).
pub async fn wait_settled(queue: &str) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..50 {
        let now = amqp_count(queue).await;
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    last
}

/// The ready count of a queue, polled until it equals `want` or 10 s pass (counts lag requeues).
pub async fn wait_for_count(queue: &str, want: u64) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..100 {
        let conn = connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        last = q.message_count() as u64;
        let _ = conn.close(200, "ok".into()).await;
        if last == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The environment a test's dlq must not inherit.
pub const CLEARED_ENV: [&str; 6] = [
    "DLQ_URL",
    "DLQ_CONFIG",
    "DLQ_OUTPUT",
    "DLQ_MANAGEMENT_URL",
    "DLQ_PASSWORD",
    "NO_COLOR",
];

/// The `dlq` binary with no DLQ_* or NO_COLOR from the environment, run in the test's temp dir.
pub fn dlq(scope: &Scope) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_dlq"));
    for var in CLEARED_ENV {
        c.env_remove(var);
    }
    c.current_dir(scope.dir.path());
    c.timeout(Duration::from_secs(120));
    c
}

/// stdout of a finished command parsed as JSON.
pub fn json_out(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Publishes many messages with confirms pipelined (fast), then checks every confirm.
pub async fn publish_many(
    conn: &Connection,
    queue: &str,
    messages: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>,
) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = std::collections::VecDeque::new();
    for (body, props) in messages {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await
            .unwrap();
        pending.push_back(c);
        if pending.len() > 1000 {
            let c = pending.pop_front().unwrap().await.unwrap();
            assert!(
                matches!(c, lapin::Confirmation::Ack(None)),
                "publish to {queue} not confirmed: {c:?}"
            );
        }
    }
    for c in pending {
        let c = c.await.unwrap();
        assert!(
            matches!(c, lapin::Confirmation::Ack(None)),
            "publish to {queue} not confirmed: {c:?}"
        );
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// Dead-letters `n` messages into `target` through a queue whose TTL is 0, so they carry a real,
/// broker-made x-death (reason "expired", queue `via`), the way parked messages carry one.
pub async fn dead_letter_into(
    conn: &Connection,
    via: &str,
    target: &str,
    messages: Vec<(Vec<u8>, BasicProperties)>,
) {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), lapin::types::AMQPValue::LongInt(0));
    args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        lapin::types::AMQPValue::LongString(target.into()),
    );
    declare_queue(conn, via, args).await;
    let n = messages.len() as u64;
    let before = amqp_count(target).await;
    publish_many(conn, via, messages).await;
    assert_eq!(
        wait_for_count(target, before + n).await,
        before + n,
        "dead-lettered into {target}"
    );
}

pub fn message_id(d: &lapin::message::Delivery) -> String {
    d.properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The broker's version as (major, minor), from the management API; version-specific tests
/// branch on it and say so in their names.
pub fn broker_version() -> (u32, u32) {
    let overview = api_get("overview")
        .unwrap()
        .expect("the management API answers");
    let v = overview["rabbitmq_version"]
        .as_str()
        .unwrap_or("0.0")
        .to_string();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Runs a command on a pseudo-terminal (Python's pty module) and types one answer character at
/// each prompt; with `close_first`, the command's broker connection is closed through the
/// management API while the first prompt is open.
const PTY_DRIVER: &str = r#"
import base64, json, os, pty, select, sys, time, urllib.request
answers, close_first, cmd = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
os.environ["TERM"] = "xterm"
def api(method, path):
    req = urllib.request.Request("http://127.0.0.1:15672/api/" + path, method=method,
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    return urllib.request.urlopen(req, timeout=10).read()
def close_connections_of(marker):
    for _ in range(50):
        conns = json.loads(api("GET", "connections?columns=name,client_properties"))
        mine = [c["name"] for c in conns
                if marker in (c.get("client_properties") or {}).get("connection_name", "")]
        for name in mine:
            api("DELETE", "connections/" + urllib.request.quote(name, safe=""))
        if mine:
            return
        time.sleep(0.2)
    raise SystemExit("no connection to close")
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
out, asked, deadline = b"", 0, time.time() + 90
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if out.count(b"Remove this message") > asked and asked < len(answers):
        if close_first and asked == 0:
            close_connections_of(os.environ["MARKER"])
            time.sleep(1.5)
        time.sleep(0.2)
        os.write(fd, answers[asked].encode())
        asked += 1
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

pub fn on_terminal(
    scope: &Scope,
    answers: &str,
    close_first: bool,
    args: &[&str],
) -> (i32, String) {
    let driver = scope.path("pty_driver.py");
    std::fs::write(&driver, PTY_DRIVER).unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&driver)
        .arg(answers)
        .arg(if close_first { "1" } else { "0" })
        .arg(env!("CARGO_BIN_EXE_dlq"))
        .args(args)
        .env("MARKER", &scope.prefix)
        .current_dir(scope.dir.path());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}
