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

/// Everything a command printed, both streams.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A password kept out of the URL: DLQ_PASSWORD, else `[broker] password_file` (one trailing
/// newline ignored), for a URL that names a user and no password. A password with `/`, `#`, `?`
/// and `@` works that way; it never appears in any output, not even with -v, nor in `--help` or
/// the completion scripts; a URL that does not parse shows no part of its userinfo.
#[test]
fn passwords_come_from_dlq_password_or_a_password_file_and_never_show() {
    let scope = Scope::new("pwsrc");
    let user = scope.name("user");
    let password = format!("Pw/{}#?@x", random_suffix());
    api_put(
        &format!("users/{}", enc(&user)),
        serde_json::json!({"password": password, "tags": ""}),
    );
    api_put(
        &format!("permissions/%2F/{}", enc(&user)),
        serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
    );
    let url = format!("amqp://{}@127.0.0.1:5672/%2f", enc(&user));
    let missing = scope.name("missing");
    let connected = |out: &std::process::Output| {
        let text = all_output(out);
        assert!(!text.contains(&password), "{text}");
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("not found"), "connected and looked: {text}");
    };
    // DLQ_PASSWORD.
    let out = dlq(&scope)
        .env("DLQ_PASSWORD", &password)
        .args(["--url", &url, "-v", "list", "--queue", &missing])
        .output()
        .unwrap();
    connected(&out);
    // [broker] password_file, relative to the config file.
    std::fs::write(scope.path("pw.txt"), format!("{password}\n")).unwrap();
    let cfg = scope.config(&format!(
        "[broker]\nurl = \"{url}\"\npassword_file = \"pw.txt\"\n"
    ));
    let out = dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "list", "--queue", &missing])
        .output()
        .unwrap();
    connected(&out);
    // A wrong one is access refused, exit 1.
    let out = dlq(&scope)
        .env("DLQ_PASSWORD", format!("{password}-wrong"))
        .args(["--url", &url, "-v", "list", "--queue", &missing])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("access refused") && !text.contains(&password),
        "{text}"
    );
    // Neither: a usage error before connecting.
    let out = dlq(&scope)
        .args(["--url", &url, "list", "--queue", &missing])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(one_line(&out).contains("DLQ_PASSWORD"));
    // Written raw into a URL, the password breaks it: not a byte of it is shown.
    let raw = format!("amqp://{}:{password}@127.0.0.1:5672/%2f", enc(&user));
    let out = dlq(&scope)
        .args(["--url", &raw, "-v", "list", "--queue", &missing])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("Pw/") && !text.contains("#?@x"), "{text}");
    api_delete(&format!("users/{}", enc(&user)));
    // The default URL's password is not shown by --help or the completion scripts.
    let help = dlq(&scope).arg("--help").output().unwrap();
    assert!(all_output(&help).contains("guest:***@"));
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = dlq(&scope).args(["completions", shell]).output().unwrap();
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(!text.contains("guest:guest"), "{shell}");
    }
}

/// Expressions that would overflow the stack are usage errors (exit 2, one line) before any
/// message is touched; `@FILE` reads an expression from a file, for one longer than an argument.
#[tokio::test(flavor = "multi_thread")]
async fn huge_expressions_are_one_line_usage_errors_and_at_file_reads_one() {
    let scope = Scope::new("bigexpr");
    let q = scope.name("q");
    let conn = connect().await;
    declare_queue(&conn, &q, lapin::types::FieldTable::default()).await;
    publish_many(
        &conn,
        &q,
        (0..3).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                lapin::BasicProperties::default(),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, 3).await, 3);
    let ors = vec![".a"; 6000].join(" or ");
    let deep = format!("{}1{}", "[".repeat(4000), "]".repeat(4000));
    for (flag, expr) in [("--filter", &ors), ("--group-by", &deep)] {
        let out = dlq(&scope)
            .args(["list", "--queue", &q, flag, expr])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = one_line(&out);
        assert!(err.contains(&format!("invalid {flag} expression")), "{err}");
    }
    // 200 KiB of expression: more than one argument may hold, read from a file.
    let long = format!("# {}\n.body.n == 1 or .body.n == 2", "x".repeat(200 << 10));
    std::fs::write(scope.path("f.jq"), long).unwrap();
    let out = dlq(&scope)
        .args(["list", "--queue", &q, "--filter", "@f.jq", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out).as_array().unwrap().len(), 2);
    let out = dlq(&scope)
        .args(["list", "--queue", &q, "--filter", "@missing.jq"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line(&out).contains("missing.jq"));
    assert_eq!(wait_for_count(&q, 3).await, 3);
    let _ = conn.close(200, "ok".into()).await;
}
