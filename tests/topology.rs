//! `dlq topology apply|verify` against a real broker, checked through the management API.

mod common;

use common::*;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};

fn two_services(scope: &Scope, billing_delay: &str) -> (std::path::PathBuf, String, String) {
    let billing = scope.name("billing");
    let email = scope.name("email");
    let path = scope.config(&format!(
        r#"
[defaults]
retry_delay = "{billing_delay}"

[services."{billing}"]

[services."{email}"]
retry_delay = "1s"
max_retries = 3
bind = [ {{ exchange = "{email}.events", type = "topic", routing_key = "email.#" }} ]
"#
    ));
    (path, billing, email)
}

fn args_of(queue: &str) -> Value {
    let q = api_queue(queue).unwrap_or_else(|| panic!("queue {queue} should exist"));
    assert_eq!(q["durable"], json!(true), "{queue} durable");
    let mut args = q["arguments"].clone();
    // RabbitMQ 4.x shows `x-queue-type: classic` for every classic queue, declared with it or
    // not; 3.10 shows nothing. dlq declares no type for classic queues on either.
    if args["x-queue-type"] == json!("classic") {
        args.as_object_mut().unwrap().remove("x-queue-type");
    }
    args
}

fn findings(out: &std::process::Output) -> Vec<Value> {
    json_out(out)["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn apply_creates_exactly_the_contract_queues_and_a_second_apply_changes_nothing() {
    let scope = Scope::new("apply");
    let (cfg, billing, email) = two_services(&scope, "10s");
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "topology",
            "apply",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(findings(&out)
        .iter()
        .all(|f| f["status"] == "created" || f["status"] == "ok"));

    assert_eq!(
        args_of(&billing),
        json!({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": format!("{billing}.retry")})
    );
    assert_eq!(
        args_of(&format!("{billing}.retry")),
        json!({"x-message-ttl": 10000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": billing})
    );
    assert_eq!(args_of(&format!("{billing}.error")), json!({}));
    assert_eq!(
        args_of(&format!("{email}.retry"))["x-message-ttl"],
        json!(1000)
    );
    let x = api_exchange(&format!("{email}.events")).expect("bound exchange declared");
    assert_eq!(
        (x["type"].as_str(), x["durable"].as_bool()),
        (Some("topic"), Some(true))
    );
    let bindings = api_get(&format!(
        "bindings/%2F/e/{}/q/{}",
        enc(&format!("{email}.events")),
        enc(&email)
    ))
    .unwrap()
    .unwrap();
    assert_eq!(bindings[0]["routing_key"], "email.#");

    // Messages already in the queues survive a second apply, which reports nothing created.
    let conn = connect().await;
    let parked: Vec<_> = (0..3)
        .map(|i| (format!("m{i}").into_bytes(), BasicProperties::default()))
        .collect();
    publish(&conn, &format!("{billing}.error"), &parked).await;
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "topology",
            "apply",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let statuses: Vec<Value> = findings(&out).iter().map(|f| f["status"].clone()).collect();
    assert!(
        statuses.iter().all(|s| s == "unchanged" || s == "ok"),
        "{statuses:?}"
    );
    assert_eq!(wait_for_count(&format!("{billing}.error"), 3).await, 3);
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_changed_retry_delay_is_drift_and_apply_leaves_the_queue_alone() {
    let scope = Scope::new("drift");
    let (old_cfg, billing, email) = two_services(&scope, "10s");
    let only_billing = scope.config(&format!(
        "[services.\"{billing}\"]\nretry_delay = \"10s\"\n"
    ));
    dlq(&scope)
        .args(["-c", only_billing.to_str().unwrap(), "topology", "apply"])
        .assert()
        .code(0);
    let retry = format!("{billing}.retry");
    let conn = connect().await;
    publish(
        &conn,
        &retry,
        &[(b"waiting".to_vec(), BasicProperties::default())],
    )
    .await;
    drop(old_cfg);

    let (new_cfg, _, _) = two_services(&scope, "1m");
    let out = dlq(&scope)
        .args(["-c", new_cfg.to_str().unwrap(), "topology", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&retry) && table.contains("x-message-ttl"),
        "{table}"
    );
    assert!(
        table.contains("10000") && table.contains("60000"),
        "{table}"
    );

    let out = dlq(&scope)
        .args([
            "-c",
            new_cfg.to_str().unwrap(),
            "topology",
            "apply",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let items = findings(&out);
    let conflict = items.iter().find(|f| f["name"] == retry.as_str()).unwrap();
    assert_eq!(conflict["status"], "conflict");
    assert_eq!(
        conflict["differences"][0],
        json!({"argument": "x-message-ttl", "broker": "10000", "wanted": "60000"})
    );
    assert!(stderr(&out).contains("conflict"), "{}", stderr(&out));
    // The queue keeps its message and its old TTL; the other service was still applied.
    assert_eq!(args_of(&retry)["x-message-ttl"], json!(10000));
    assert_eq!(wait_for_count(&retry, 1).await, 1);
    assert!(
        api_queue(&format!("{email}.error")).is_some(),
        "the other service is still applied"
    );
    let _ = conn.close(200, "ok".into()).await;
}

#[test]
fn verify_on_an_empty_broker_exits_3_and_creates_nothing() {
    let scope = Scope::new("empty");
    let (cfg, billing, email) = two_services(&scope, "10s");
    for extra in [&[][..], &["--management-url", "http://127.0.0.1:9"][..]] {
        let out = dlq(&scope)
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "topology",
                "verify",
                "-o",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let items = findings(&out);
        assert!(items
            .iter()
            .filter(|f| f["entity"] == "queue")
            .all(|f| f["status"] == "missing"));
    }
    for q in [
        billing.clone(),
        format!("{billing}.retry"),
        format!("{billing}.error"),
        email.clone(),
    ] {
        assert!(api_queue(&q).is_none(), "verify created {q}");
    }
    assert!(
        api_exchange(&format!("{email}.events")).is_none(),
        "verify created the exchange"
    );
}

#[test]
fn verify_without_the_management_api_catches_a_changed_ttl_and_leaves_bindings_unchecked() {
    let scope = Scope::new("noapi");
    let (cfg, billing, _) = two_services(&scope, "10s");
    dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .assert()
        .code(0);
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--management-url",
            "http://127.0.0.1:9",
            "topology",
            "verify",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bindings unchecked"),
        "{}",
        stderr(&out)
    );
    let items = findings(&out);
    assert!(items
        .iter()
        .filter(|f| f["entity"] == "binding")
        .all(|f| f["status"] == "unchecked"));

    let (changed, _, _) = two_services(&scope, "30s");
    let out = dlq(&scope)
        .args([
            "-c",
            changed.to_str().unwrap(),
            "--management-url",
            "http://127.0.0.1:9",
            "topology",
            "verify",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let items = findings(&out);
    let retry = items
        .iter()
        .find(|f| f["name"] == format!("{billing}.retry").as_str())
        .unwrap();
    assert_eq!(retry["status"], "different");
    assert_eq!(retry["differences"][0]["argument"], "x-message-ttl");
    // The re-declare that detected it changed nothing.
    assert_eq!(
        args_of(&format!("{billing}.retry"))["x-message-ttl"],
        json!(10000)
    );
}

/// Declares a service's topology the way the Ruby Sneakers Maxretry handler does.
async fn declare_like_sneakers(conn: &lapin::Connection, q: &str, ttl: i64) {
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for x in [
        format!("{q}-retry"),
        format!("{q}-retry-requeue"),
        format!("{q}-error"),
    ] {
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut work_args = FieldTable::default();
    work_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(format!("{q}-retry").into()),
    );
    declare_queue(conn, q, work_args).await;
    let mut retry_args = FieldTable::default();
    retry_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(format!("{q}-retry-requeue").into()),
    );
    retry_args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl as i32));
    declare_queue(conn, &format!("{q}-retry"), retry_args).await;
    declare_queue(conn, &format!("{q}-error"), FieldTable::default()).await;
    for (x, queue) in [
        (format!("{q}-retry"), format!("{q}-retry")),
        (format!("{q}-error"), format!("{q}-error")),
        (format!("{q}-retry-requeue"), q.to_string()),
    ] {
        ch.queue_bind(
            queue.as_str().into(),
            x.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let _ = ch.close(200, "ok".into()).await;
}

#[tokio::test]
async fn a_topology_declared_by_sneakers_passes_verify_with_sneakers_naming() {
    let scope = Scope::new("sneakers");
    let q = scope.name("mailer");
    let conn = connect().await;
    declare_like_sneakers(&conn, &q, 60_000).await;
    let cfg = scope.config(&format!(
        "[defaults]\nnaming = \"sneakers\"\nretry_delay = \"60s\"\n\n[services.\"{q}\"]\n"
    ));
    for extra in [&[][..], &["--management-url", "http://127.0.0.1:9"][..]] {
        let out = dlq(&scope)
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "topology",
                "verify",
                "-o",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} {}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(findings(&out).len(), 9, "3 exchanges, 3 queues, 3 bindings");
    }
    // A sneakers deployment with another retry timeout is drift.
    let other = scope.config(&format!(
        "[defaults]\nnaming = \"sneakers\"\nretry_delay = \"30s\"\n\n[services.\"{q}\"]\n"
    ));
    dlq(&scope)
        .args(["-c", other.to_str().unwrap(), "topology", "verify"])
        .assert()
        .code(3);
    let _ = conn.close(200, "ok".into()).await;
}

#[test]
fn quorum_services_get_quorum_queues_with_no_delivery_limit_on_4_x_and_none_declared_on_3_x() {
    let scope = Scope::new("quorum");
    let s = scope.name("orders");
    let cfg = scope.config(&format!(
        "[defaults]\nqueue_type = \"quorum\"\n\n[services.\"{s}\"]\n"
    ));
    dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .assert()
        .code(0);
    let from_4 = broker_version() >= (4, 0);
    for q in [s.clone(), format!("{s}.retry"), format!("{s}.error")] {
        let info = api_queue(&q).unwrap();
        assert_eq!(info["type"], "quorum", "{q}");
        // 4.x: -1 is "no limit" (the default of 20 would let the retry loop drop a message);
        // 3.x: a negative limit drops every message, and there is no default to override.
        let limit = &info["arguments"]["x-delivery-limit"];
        if from_4 {
            assert_eq!(limit, &serde_json::json!(-1), "{q}");
        } else {
            assert!(limit.is_null(), "{q}: {limit}");
        }
    }
    dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "verify"])
        .assert()
        .code(0);
    let classic = scope.config(&format!("[services.\"{s}\"]\n"));
    dlq(&scope)
        .args(["-c", classic.to_str().unwrap(), "topology", "verify"])
        .assert()
        .code(3);
}

#[test]
fn a_bind_to_a_missing_existing_exchange_is_reported_and_the_rest_applied() {
    let scope = Scope::new("nox");
    let s = scope.name("svc");
    let cfg = scope.config(&format!(
        "[services.\"{s}\"]\nbind = [ {{ exchange = \"{s}.nosuch\", routing_key = \"k\" }} ]\n"
    ));
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "topology",
            "apply",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let items = findings(&out);
    assert_eq!(items[0]["entity"], "exchange");
    assert_eq!(items[0]["status"], "missing");
    assert!(api_queue(&s).is_some(), "the queues are still applied");
    assert!(
        api_exchange(&format!("{s}.nosuch")).is_none(),
        "an exchange without type is never created"
    );
}

#[test]
fn plan_needs_no_broker() {
    let scope = Scope::new("plan");
    let (cfg, billing, _) = two_services(&scope, "10s");
    let out = dlq(&scope)
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "topology",
            "plan",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = json_out(&out);
    assert_eq!(plan["queues"].as_array().unwrap().len(), 6);
    assert_eq!(plan["queues"][1]["name"], format!("{billing}.retry"));
    assert_eq!(plan["queues"][1]["arguments"]["x-message-ttl"], 10000);
}

/// A user without configure permission gets the broker's 403 ACCESS_REFUSED: a runtime failure
/// (exit 1, one line naming it), not a topology conflict (exit 3).
#[tokio::test]
async fn apply_and_verify_without_configure_permission_are_access_refused_naming_it_with_exit_1() {
    let scope = Scope::new("noperm");
    let (cfg, billing, _) = two_services(&scope, "10s");
    let user = scope.name("user");
    api_put(
        &format!("users/{}", enc(&user)),
        json!({"password": "pw", "tags": ""}),
    );
    api_put(
        &format!("permissions/%2F/{}", enc(&user)),
        json!({"configure": "^$", "write": ".*", "read": ".*"}),
    );
    let out = dlq(&scope)
        .args([
            "--url",
            &format!("amqp://{}:pw@127.0.0.1:5672/%2f", enc(&user)),
        ])
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .output()
        .unwrap();
    let declared_by_the_user = api_queue(&billing).is_some();
    // verify as that user (no management tag, so over AMQP) once the topology exists: the
    // re-declare that checks arguments is refused, which is access refused (exit 1) naming the
    // permission, never drift.
    let applied = dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .output()
        .unwrap();
    assert_eq!(applied.status.code(), Some(0), "{}", stderr(&applied));
    let verify = dlq(&scope)
        .args([
            "--url",
            &format!("amqp://{}:pw@127.0.0.1:5672/%2f", enc(&user)),
        ])
        .args(["-c", cfg.to_str().unwrap(), "topology", "verify"])
        .output()
        .unwrap();
    api_delete(&format!("users/{}", enc(&user)));
    let verify_err = stderr(&verify);
    assert_eq!(verify.status.code(), Some(1), "{verify_err}");
    assert!(
        verify_err.contains("access refused") && verify_err.contains("configure"),
        "{verify_err}"
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("access refused"), "{err}");
    // The broker's reason names the permission, the vhost and the user.
    for part in ["configure", "vhost '/'", &format!("user '{user}'")] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(
        !err.contains("lost the connection") && !err.contains("conflict"),
        "{err}"
    );
    assert!(!declared_by_the_user, "nothing was declared");
}
