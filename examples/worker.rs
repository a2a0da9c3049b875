//! An example worker for one service of a dlq config: it fails messages whose body contains a
//! text (default "work") and succeeds otherwise, retrying and parking as the seed design says.
//!
//!   cargo run --example worker -- -c examples/dlq.toml --service billing --seed 6 --run-for 8

use std::time::Duration;

use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;

use dlq::broker::{worker, Broker};
use dlq::config::Config;

#[derive(Parser)]
struct Args {
    /// dlq config file
    #[arg(short = 'c', long, default_value = "examples/dlq.toml")]
    config: std::path::PathBuf,
    /// Service to work for (default: the first in the config)
    #[arg(long)]
    service: Option<String>,
    /// Bodies containing this text fail
    #[arg(long, default_value = "work")]
    fail_on: String,
    /// First publish this many sample messages to the work queue (every other one fails)
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Stop after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    run_for: Option<f64>,
    /// Broker URL (default: the config's)
    #[arg(long, env = "DLQ_URL")]
    url: Option<String>,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> dlq::error::Result<()> {
    let config = Config::load(&args.config)?;
    let service = match &args.service {
        Some(name) => config.service(name)?.clone(),
        None => config
            .services
            .first()
            .cloned()
            .ok_or_else(|| dlq::error::Error::usage("no services in the config"))?,
    };
    let url = args
        .url
        .or(config.broker_url.clone())
        .unwrap_or_else(|| dlq::settings::DEFAULT_URL.to_string());
    let urls = dlq::settings::parse_url_list(&url)?;
    let broker = Broker::connect(&urls, "example worker").await?;
    if args.seed > 0 {
        let ch = broker.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker.lost(e))?;
        for i in 1..=args.seed {
            let task = if i % 2 == 1 {
                args.fail_on.as_str()
            } else {
                "ok"
            };
            let body = format!("{{\"order\":{i},\"task\":\"{task}\"}}");
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(format!("demo-{i}").into())
                .with_delivery_mode(2);
            ch.basic_publish(
                "".into(),
                service.work_queue().as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .map_err(|e| broker.lost(e))?
            .await
            .map_err(|e| broker.lost(e))?;
        }
        println!(
            "published {} messages to {}",
            args.seed,
            service.work_queue()
        );
    }
    let stop = async {
        match args.run_for {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let name = service.work_queue();
    let stats = worker::run(&broker, &service, &args.fail_on, stop, |line| {
        println!("{name}: {line}")
    })
    .await?;
    println!(
        "{name}: done: processed {}, retried {}, parked {}",
        stats.processed, stats.retried, stats.parked
    );
    broker.close().await;
    Ok(())
}
