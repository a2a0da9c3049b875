//! The seed's retry loop end to end: the example worker retries a failing message `max_retries`
//! times through the retry queue's TTL and parks it in the error queue with the contract's headers.

mod common;

use std::time::Duration;

use common::*;
use dlq::broker::{worker, Broker};
use dlq::config::Config;
use lapin::types::AMQPValue;
use lapin::BasicProperties;

#[tokio::test]
async fn a_failing_message_is_retried_3_times_then_parked_with_x_death_count_3_and_x_attempts_4() {
    let scope = Scope::new("loop");
    let s = scope.name("jobs");
    let cfg = scope.config(&format!(
        "[services.\"{s}\"]\nretry_delay = \"200ms\"\nmax_retries = 3\n"
    ));
    dlq(&scope)
        .args(["-c", cfg.to_str().unwrap(), "topology", "apply"])
        .assert()
        .code(0);

    let conn = connect().await;
    let props = BasicProperties::default()
        .with_message_id("job-1".into())
        .with_content_type("application/json".into());
    publish(
        &conn,
        &s,
        &[
            (b"{\"task\":\"work\"}".to_vec(), props.clone()),
            (b"{\"task\":\"fine\"}".to_vec(), BasicProperties::default()),
            (
                b"{\"task\":\"also fine\"}".to_vec(),
                BasicProperties::default(),
            ),
        ],
    )
    .await;

    let config = Config::load(&cfg).unwrap();
    let service = config.service(&s).unwrap().clone();
    let broker = Broker::connect(&[AMQP_URL.to_string()], "test worker")
        .await
        .unwrap();
    let error_queue = format!("{s}.error");
    let stop = async {
        for _ in 0..150 {
            if api_queue(&error_queue).and_then(|q| q["messages"].as_u64()) == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut log = Vec::new();
    let stats = worker::run(&broker, &service, "work", stop, |l| log.push(l.to_string()))
        .await
        .unwrap();
    assert_eq!(
        (stats.processed, stats.retried, stats.parked),
        (2, 3, 1),
        "{log:?}"
    );

    let parked = drain(&conn, &error_queue).await;
    assert_eq!(parked.len(), 1);
    let m = &parked[0];
    assert_eq!(m.data, b"{\"task\":\"work\"}", "identical body");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("job-1")
    );
    assert_eq!(
        m.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    let h = m.properties.headers().as_ref().unwrap().inner();
    assert_eq!(h["x-attempts"], AMQPValue::LongLongInt(4));
    assert!(matches!(h["x-failed-at"], AMQPValue::Timestamp(_)));
    assert!(matches!(&h["x-error-message"], AMQPValue::LongString(t) if !t.as_bytes().is_empty()));
    assert_eq!(h["x-original-exchange"], AMQPValue::LongString("".into()));
    assert_eq!(
        h["x-original-routing-key"],
        AMQPValue::LongString(s.as_str().into())
    );
    let deaths = dlq::message::x_death(m.properties.headers().as_ref());
    let rejected = deaths
        .iter()
        .find(|d| d.queue == s && d.reason == "rejected")
        .expect("x-death entry for the work queue");
    assert_eq!(rejected.count, 3);
    assert_eq!(dlq::retry::attempt(m.properties.headers().as_ref(), &s), 4);

    assert!(drain(&conn, &s).await.is_empty(), "the work queue is empty");
    assert!(
        drain(&conn, &format!("{s}.retry")).await.is_empty(),
        "the retry queue is empty"
    );
    broker.close().await;
    let _ = conn.close(200, "ok".into()).await;
}
