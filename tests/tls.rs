//! TLS against a real listener: RabbitMQ 4.3 in its network namespace (scripts/broker-ns up 4.3)
//! serves AMQPS on 5671 and the management API over HTTPS on 15671 with a throwaway CA made by
//! that script. These tests run `dlq` inside that namespace whichever broker the rest of the
//! suite uses; without the 4.3 broker they fail, never skip.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::{random_suffix, CLEARED_ENV};

const NS: &str = "rmq43";
const PLAIN_API: &str = "http://127.0.0.1:15672/api";

/// Where scripts/broker-ns keeps the 4.3 broker's test certificates.
fn tls_dir() -> PathBuf {
    let dir = std::env::var_os("DLQ_TEST_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/dlq-brokers/forky/etc/rabbitmq/tls"));
    assert!(
        dir.join("ca.pem").exists() && std::path::Path::new("/run/netns").join(NS).exists(),
        "no RabbitMQ 4.3 with TLS: run scripts/broker-ns up 4.3 (certificates expected in {})",
        dir.display()
    );
    dir
}

fn file(name: &str) -> String {
    tls_dir().join(name).display().to_string()
}

/// `dlq ARGS` inside the 4.3 broker's network namespace, in a fresh temp dir.
fn dlq(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    let mut c = assert_cmd::Command::new("ip");
    c.args(["netns", "exec", NS, env!("CARGO_BIN_EXE_dlq")]);
    c.args(args);
    for var in CLEARED_ENV {
        c.env_remove(var);
    }
    c.current_dir(dir.path()).timeout(Duration::from_secs(60));
    c.output().unwrap()
}

/// The plain management API of the 4.3 broker (setup and cleanup only).
fn api(method: &str, path: &str, body: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            NS,
            "curl",
            "-sS",
            "-u",
            "guest:guest",
            "-X",
            method,
        ])
        .args(["-H", "content-type: application/json", "-d", body])
        .arg(format!("{PLAIN_API}/{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {method} {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn amqps(query: &str) -> String {
    format!("amqps://guest:guest@127.0.0.1:5671/%2f?{query}")
}

/// Deletes the queues it names when dropped.
struct Queues(Vec<String>);

impl Drop for Queues {
    fn drop(&mut self) {
        for q in &self.0 {
            let _ = std::panic::catch_unwind(|| api("DELETE", &format!("queues/%2f/{q}"), ""));
        }
    }
}

#[test]
fn tls_apply_verify_import_and_list_work_over_amqps_and_https_with_and_without_a_client_certificate(
) {
    let dir = tempfile::tempdir().unwrap();
    let service = format!("dlq-test.tls.{}", random_suffix());
    let _cleanup = Queues(vec![
        service.clone(),
        format!("{service}.retry"),
        format!("{service}.error"),
    ]);
    let ca = format!("cacertfile={}", file("ca.pem"));
    let with_client = format!(
        "{ca}&certfile={}&keyfile={}",
        file("client.pem"),
        file("client.key")
    );
    let config = dir.path().join("dlq.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{}\"\n\n[services.\"{service}\"]\n",
            amqps(&ca)
        ),
    )
    .unwrap();
    let config = config.display().to_string();

    let out = dlq(&dir, &["-c", &config, "topology", "apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // verify reads the management API over https (the default for an amqps URL), trusting the
    // same CA, and presents the client certificate when the URL has one.
    for query in [&ca, &with_client] {
        let out = dlq(
            &dir,
            &["-c", &config, "--url", &amqps(query), "topology", "verify"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("checked with management API at https://127.0.0.1:15671"),
            "{err}"
        );
        let out = dlq(
            &dir,
            &[
                "-c",
                &config,
                "--url",
                &amqps(query),
                "--management-url",
                "https://localhost:15671",
                "topology",
                "verify",
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("management API at https://localhost:15671"),
            "{err}"
        );
    }

    // Messages move over TLS: import three records, list them back with a client certificate.
    let records = dir.path().join("in.jsonl");
    std::fs::write(
        &records,
        (1..=3)
            .map(|i| format!("{{\"body\":{{\"n\":{i}}}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let error_queue = format!("{service}.error");
    let out = dlq(
        &dir,
        &[
            "--url",
            &amqps(&ca),
            "-y",
            "import",
            "--file",
            &records.display().to_string(),
            "--to",
            &error_queue,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = dlq(
        &dir,
        &[
            "--url",
            &amqps(&with_client),
            "-o",
            "json",
            "list",
            "--queue",
            &error_queue,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bodies: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(bodies, [1, 2, 3]);

    // verify=verify_none connects without any CA; server_name_indication names the host the
    // certificate is checked against when the URL uses an address.
    for query in [
        "verify=verify_none".to_string(),
        format!("{ca}&server_name_indication=localhost"),
    ] {
        let out = dlq(
            &dir,
            &["--url", &amqps(&query), "list", "--queue", &error_queue],
        );
        assert_eq!(out.status.code(), Some(0), "{query}: {}", stderr(&out));
    }
}

#[test]
fn tls_failures_are_one_line_each_and_exit_1_and_a_missing_certificate_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("dlq-test.tls-fail.{}", random_suffix());
    let _cleanup = Queues(vec![queue.clone()]);
    api("PUT", &format!("queues/%2f/{queue}"), r#"{"durable":true}"#);
    let ca = format!("cacertfile={}", file("ca.pem"));
    let cases = [
        ("no CA given", String::new(), 1, "untrusted server"),
        (
            "another CA",
            format!("cacertfile={}", file("rogue-ca.pem")),
            1,
            "untrusted server",
        ),
        (
            "wrong name",
            format!("{ca}&server_name_indication=wrong.example"),
            1,
            "name mismatch",
        ),
        (
            "client certificate of another CA",
            format!(
                "{ca}&certfile={}&keyfile={}",
                file("rogue-client.pem"),
                file("rogue-client.key")
            ),
            1,
            "does not trust the client certificate",
        ),
        (
            "missing CA file",
            "cacertfile=/nonexistent/ca.pem".to_string(),
            2,
            "cannot read the cacertfile /nonexistent/ca.pem",
        ),
        (
            "certificate without key",
            format!("{ca}&certfile={}", file("client.pem")),
            2,
            "both certfile and keyfile",
        ),
        (
            "a key file that is a certificate",
            format!(
                "{ca}&certfile={}&keyfile={}",
                file("client.pem"),
                file("client.pem")
            ),
            2,
            "cannot read the keyfile",
        ),
    ];
    for (what, query, code, needle) in cases {
        let out = dlq(&dir, &["--url", &amqps(&query), "list", "--queue", &queue]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            !err.contains("guest:guest"),
            "{what}: password shown: {err}"
        );
    }
    // TLS parameters on a plain URL would silently send everything in clear: refused.
    let out = dlq(
        &dir,
        &[
            "--url",
            &format!("amqp://guest:guest@127.0.0.1:5672/%2f?{ca}"),
            "list",
            "--queue",
            &queue,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("use amqps://"), "{}", stderr(&out));
}
