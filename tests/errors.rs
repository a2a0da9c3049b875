//! Bad input and unreachable brokers: one line on stderr, the right exit code, no password shown.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn one_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line on stderr, got: {err:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

#[test]
fn unknown_config_key_exits_2_naming_file_line_and_key() {
    let scope = Scope::new("badkey");
    let cfg = scope.config("[services.billing]\nmax_retires = 3\n");
    let out = dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(
        err.contains(cfg.to_str().unwrap())
            && err.contains("line 2")
            && err.contains("services.billing.max_retires"),
        "{err}"
    );
}

#[test]
fn bad_duration_exits_2_naming_the_key() {
    let scope = Scope::new("baddur");
    let cfg = scope.config("[defaults]\nretry_delay = \"ten seconds\"\n[services.billing]\n");
    let out = dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(
        err.contains("line 2")
            && err.contains("defaults.retry_delay")
            && err.contains("bad duration"),
        "{err}"
    );
}

#[test]
fn missing_config_file_exits_2() {
    let scope = Scope::new("nocfg");
    let out = dlq(&scope)
        .args(["-c", "nope.toml", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out).contains("nope.toml"));
}

#[test]
fn unreachable_broker_exits_1_quickly_without_the_password() {
    let scope = Scope::new("down");
    let cfg = scope.config("[services.billing]\n");
    let started = Instant::now();
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--url",
            "amqp://guest:hunter2@127.0.0.1:1/%2f",
            "stats",
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(
        err.contains("connection refused") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("guest:***@") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn several_urls_are_tried_in_order() {
    let scope = Scope::new("fallback");
    let q = scope.name("svc");
    let cfg = scope.config(&format!("[services.\"{q}\"]\n"));
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--url",
            &format!("amqp://guest:guest@127.0.0.1:1/%2f,{AMQP_URL}"),
            "topology",
            "apply",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn wrong_password_exits_1_with_access_refused_and_no_password() {
    let scope = Scope::new("badpw");
    let cfg = scope.config("[services.billing]\n");
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--url",
            "amqp://guest:wr0ngpass@127.0.0.1:5672/%2f",
            "stats",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(
        err.contains("access refused") && !err.contains("wr0ngpass"),
        "{err}"
    );
}

#[test]
fn missing_vhost_exits_1_naming_it() {
    let scope = Scope::new("novhost");
    let cfg = scope.config("[services.billing]\n");
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--url",
            "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
            "-v",
            "stats",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("vhost \"no-such-vhost\""), "{err}");
    assert!(
        !err.contains("guest:guest"),
        "-v must not show the password either: {err}"
    );
}

#[test]
fn a_bad_url_is_a_usage_error() {
    let scope = Scope::new("badurl");
    let out = dlq(&scope)
        .args(["--url", "http://guest:pw9@host", "topology", "plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(!err.contains("pw9"), "{err}");
}

#[test]
fn a_bad_flag_exits_2() {
    let scope = Scope::new("badflag");
    dlq(&scope)
        .args(["stats", "--no-such-flag"])
        .assert()
        .code(2);
    dlq(&scope).args(["-o", "yaml", "stats"]).assert().code(2);
}
