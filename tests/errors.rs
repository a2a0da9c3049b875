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
fn a_bad_flag_exits_2_in_one_line_with_clap_s_hints_only_under_v() {
    let scope = Scope::new("badflag");
    for args in [
        &["stats", "--no-such-flag"][..],
        &["-o", "yaml", "stats"],
        &["import", "--to", "q"],
        &["list", "--limitt", "3"],
        &["nosuchcommand"],
        &[],
        &["list", "--queue", "bad\nname"],
        &["import", "--file", "x.jsonl", "--to", "q\u{1b}[2J"],
        &["replay", "--queue", "q", "--to", "q\r"],
    ] {
        let out = dlq(&scope).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = one_line(&out);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        let out = dlq(&scope).arg("-v").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = dlq(&scope).args(["import", "--to", "q"]).output().unwrap();
    assert!(stderr(&out).contains("--file"), "{}", stderr(&out));
    let out = dlq(&scope)
        .args(["-v", "list", "--limitt", "3"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("tip:"), "{}", stderr(&out));
    // An argument with control characters comes back without them.
    let out = dlq(&scope)
        .args(["stats", "--x\u{1b}]0;pwned\u{7}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!one_line(&out).contains('\u{1b}'));
    dlq(&scope).arg("--help").assert().code(0);
}

#[test]
fn a_50_mb_url_comes_back_as_one_short_line() {
    let scope = Scope::new("hugeurl");
    let url = format!("amqp://guest:guest@{}/%2f", "h".repeat(50 << 20));
    let config = scope.config(&format!("[broker]\nurl = \"{url}\"\n[services.a]\n"));
    let out = dlq(&scope)
        .args(["-c", &config.display().to_string(), "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
    let err = one_line(&out);
    assert!(
        err.chars().count() <= 320,
        "{} characters",
        err.chars().count()
    );
    assert!(err.contains("52,428,823 bytes long"), "{err}");
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

#[tokio::test(flavor = "multi_thread")]
async fn hostile_message_content_never_reaches_stderr_or_json_raw_and_a_looping_filter_gives_up() {
    let scope = Scope::new("hostile");
    let q = scope.name("q");
    let conn = connect().await;
    declare_queue(&conn, &q, lapin::types::FieldTable::default()).await;
    // OSC 52 (clipboard), OSC 0 (title), a C1 CSI, a bidi override and a bidi mark.
    let nasty =
        "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}]0;owned\u{7} \u{9b}31m red \u{202e}txt \u{200f}";
    publish_many(
        &conn,
        &q,
        (0..3).map(|i| {
            (
                serde_json::to_vec(&serde_json::json!({ "n": i, "t": nasty })).unwrap(),
                lapin::BasicProperties::default(),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, 3).await, 3);

    // A run-time error carrying message content: the note shows it without any control.
    for flag in ["--filter", "--group-by"] {
        let out = dlq(&scope)
            .args(["list", "--queue", &q, flag, ".body.t | error"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("red txt"),
            "{flag}: the note names the error: {err}"
        );
        assert!(
            !err.contains("owned"),
            "{flag}: an OSC payload is dropped whole: {err}"
        );
        assert!(
            !err.chars()
                .any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202e}' | '\u{200f}')),
            "{flag}: raw control on stderr: {err:?}"
        );
    }

    // JSON escapes C1 and bidi controls as \uXXXX and still parses to the same text.
    for format in ["json", "jsonl"] {
        let out = dlq(&scope)
            .args(["list", "--queue", &q, "-o", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202e}' | '\u{200f}')),
            "{format}: raw control in JSON: {text:?}"
        );
        assert!(
            text.contains("\\u009b") && text.contains("\\u202e"),
            "{text}"
        );
        let first = text.lines().find(|l| l.contains("\"t\"")).unwrap();
        let first: serde_json::Value = if format == "jsonl" {
            serde_json::from_str(first).unwrap()
        } else {
            json_out(&out)[0].clone()
        };
        assert_eq!(first["body"]["t"], nasty);
    }

    // A filter that never returns counts as no match once it runs past its budget, is not
    // run again after two such messages, and the command ends by itself with every message
    // where it was.
    let started = Instant::now();
    let out = dlq(&scope)
        .args(["list", "--queue", &q, "--filter", "def f: f; f"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("0 of 3 messages matched"), "{err}");
    assert!(err.contains("ran past its budget"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(wait_for_count(&q, 3).await, 3);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_table_nested_2000_deep_is_listed_replayed_exported_and_imported() {
    let scope = Scope::new("deephdr");
    let (q, to) = (scope.name("q"), scope.name("to"));
    let conn = connect().await;
    for name in [&q, &to] {
        declare_queue(&conn, name, lapin::types::FieldTable::default()).await;
    }
    let depth = 2000;
    let table = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let publish = format!(
        r#"{{"properties":{{"message_id":"deep","headers":{{"deep":{table}}}}},"routing_key":"{q}","payload":"x","payload_encoding":"string"}}"#
    );
    let answer = api_post_text("exchanges/%2F/amq.default/publish", &publish);
    assert!(answer.contains("\"routed\":true"), "{answer}");
    assert_eq!(wait_for_count(&q, 1).await, 1);

    let out = dlq(&scope)
        .args(["list", "--queue", &q, "-o", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("{\"a\":").count(),
        depth,
        "every level is shown"
    );

    let out = dlq(&scope)
        .args(["-y", "replay", "--queue", &q, "--to", &to])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = scope.path("deep.jsonl").display().to_string();
    let out = dlq(&scope)
        .args(["-y", "export", "--queue", &to, "--file", &file, "--remove"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = dlq(&scope)
        .args(["-y", "import", "--file", &file, "--to", &q])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(wait_for_count(&q, 1).await, 1);
    assert_eq!(wait_for_count(&to, 0).await, 0);
    let out = dlq(&scope)
        .args(["list", "--queue", &q, "-o", "jsonl"])
        .output()
        .unwrap();
    let back = String::from_utf8_lossy(&out.stdout);
    assert_eq!(back.matches("{\"a\":").count(), depth, "{}", stderr(&out));
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_strings_that_are_not_utf8_are_listed_as_base64_and_replayed_byte_exact() {
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let scope = Scope::new("notutf8");
    let (q, to) = (scope.name("q"), scope.name("to"));
    let conn = connect().await;
    for name in [&q, &to] {
        declare_queue(&conn, name, FieldTable::default()).await;
    }
    let id: &[u8] = b"\xff\xfeid";
    let key: &[u8] = b"k\xff";
    let content_type: &[u8] = b"text/\xc3";
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from_wire_bytes(key),
        AMQPValue::LongString(LongString::from("v")),
    );
    let poison = lapin::BasicProperties::default()
        .with_message_id(ShortString::from_wire_bytes(id))
        .with_content_type(ShortString::from_wire_bytes(content_type))
        .with_headers(headers);
    // The odd message in the middle of three: nothing behind it may be blocked.
    publish_many(
        &conn,
        &q,
        [
            (b"before".to_vec(), lapin::BasicProperties::default()),
            (b"poison".to_vec(), poison),
            (b"fine".to_vec(), lapin::BasicProperties::default()),
        ],
    )
    .await;
    assert_eq!(wait_for_count(&q, 3).await, 3);

    let out = dlq(&scope)
        .args(["list", "--queue", &q, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut listed = json_out(&out);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[0]["body"], "before");
    listed.as_array_mut().unwrap().remove(0);
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    assert_eq!(listed[0]["properties"]["message_id"], b64(id));
    assert_eq!(listed[0]["properties"]["content_type"], b64(content_type));
    assert_eq!(listed[0]["headers"][b64(key)], "v");
    assert_eq!(listed[1]["body"], "fine");

    let out = dlq(&scope)
        .args(["-y", "replay", "--queue", &q, "--to", &to])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copies = drain(&conn, &to).await;
    let bodies: Vec<&[u8]> = copies.iter().map(|d| &d.data[..]).collect();
    assert_eq!(bodies, [&b"before"[..], b"poison", b"fine"]);
    let p = &copies[1].properties;
    assert_eq!(&p.message_id().as_ref().unwrap().wire_bytes()[..], id);
    assert_eq!(
        &p.content_type().as_ref().unwrap().wire_bytes()[..],
        content_type
    );
    let headers = p.headers().as_ref().unwrap();
    let got_key = headers
        .inner()
        .keys()
        .find(|k| k.has_raw_bytes())
        .expect("the non-UTF-8 header name survives");
    assert_eq!(&got_key.wire_bytes()[..], key);
    assert_eq!(wait_for_count(&q, 0).await, 0);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_replay_whose_filter_never_returns_and_every_message_stays() {
    let scope = Scope::new("hangint");
    let (q, to) = (scope.name("q"), scope.name("to"));
    let conn = connect().await;
    for name in [&q, &to] {
        declare_queue(&conn, name, lapin::types::FieldTable::default()).await;
    }
    publish_many(
        &conn,
        &q,
        (0..5).map(|i| {
            (
                format!("{{\"n\":{i}}}").into_bytes(),
                lapin::BasicProperties::default(),
            )
        }),
    )
    .await;
    assert_eq!(wait_for_count(&q, 5).await, 5);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dlq"));
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let child = cmd
        .args([
            "-y",
            "replay",
            "--queue",
            &q,
            "--to",
            &to,
            "--filter",
            "def f: f; f",
        ])
        .current_dir(scope.dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The filter is spinning on the first message by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let interrupted = Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "stopped {:?} after Ctrl-C",
        interrupted.elapsed()
    );
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(wait_for_count(&q, 5).await, 5);
    assert_eq!(wait_for_count(&to, 0).await, 0);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_osc_52_clipboard_write_in_a_filter_error_never_reaches_the_terminal() {
    let scope = Scope::new("osc52");
    let q = scope.name("q");
    let conn = connect().await;
    declare_queue(&conn, &q, lapin::types::FieldTable::default()).await;
    // OSC 52 puts "rm -rf ~" (base64) in the clipboard; OSC 0 sets the window title.
    let body = serde_json::json!({ "e": "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}]0;pwned\u{7}boom" });
    publish_many(
        &conn,
        &q,
        [(
            serde_json::to_vec(&body).unwrap(),
            lapin::BasicProperties::default(),
        )],
    )
    .await;
    assert_eq!(wait_for_count(&q, 1).await, 1);
    let (code, screen) = on_terminal(
        &scope,
        "",
        false,
        &["list", "--queue", &q, "--filter", ".body.e | error"],
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("boom"), "the note is shown: {screen}");
    assert!(
        !screen.contains("\u{1b}]"),
        "an OSC sequence reached the terminal: {screen:?}"
    );
    assert!(
        !screen.contains("pwned") && !screen.contains("cm0gLXJmIH4="),
        "{screen:?}"
    );
    assert_eq!(wait_for_count(&q, 1).await, 1);
    let _ = conn.close(200, "ok".into()).await;
}
