//! `consumer`: calls `user-service` and `product-service` through the SDK's `ServiceClient` in
//! a loop and prints which instance answered each call, plus running totals.
//!
//! Discovery follows both services through the agent's watch stream; each client balances
//! round-robin, trips per-instance circuit breakers, ejects outliers and retries idempotent calls
//! on another instance. Killing an instance therefore shows up as (at most) a few retried
//! attempts, not as failed calls.
//!
//! ```sh
//! cargo run -p consumer -- --agent http://127.0.0.1:8500 --interval 200ms
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::Method;
use serde_json::Value;
use signpost_client::balance::RoundRobin;
use signpost_client::breaker::BreakerConfig;
use signpost_client::client::ServiceClient;
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registry::signpost::SignpostRegistry;

#[derive(Parser, Debug)]
#[command(about = "Example consumer for the Signpost demo")]
struct Args {
    /// The Signpost agent.
    #[arg(long, env = "SIGNPOST_ADDR", default_value = "http://127.0.0.1:8500")]
    agent: String,
    /// Pause between rounds (one call to each service per round).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Rounds to run (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    rounds: u64,
    /// Print a summary every this many rounds.
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// Timeout of one attempt.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Running totals for one service.
#[derive(Debug, Default)]
struct Tally {
    /// Calls that succeeded.
    ok: u64,
    /// Calls that failed (after retries).
    failed: u64,
    /// Calls that needed more than one attempt but succeeded.
    retried: u64,
    /// Successful calls per answering instance.
    by_instance: BTreeMap<String, u64>,
}

impl Tally {
    fn summary(&self, service: &str) -> String {
        let instances: Vec<String> = self
            .by_instance
            .iter()
            .map(|(id, n)| format!("{id}:{n}"))
            .collect();
        format!(
            "summary service={service} ok={} failed={} retried={} instances={}",
            self.ok,
            self.failed,
            self.retried,
            instances.join(",")
        )
    }
}

/// Calls `path` on `client` once, prints the outcome and counts it.
async fn call(client: &ServiceClient, path: &str, tally: &mut Tally) {
    let service = client.service().to_string();
    match client.request(Method::GET, path).send::<Value>().await {
        Ok(reply) => {
            tally.ok += 1;
            if reply.attempts > 1 {
                tally.retried += 1;
            }
            *tally
                .by_instance
                .entry(reply.instance.id.clone())
                .or_default() += 1;
            println!(
                "call service={service} path={path} instance={} status={} attempts={}",
                reply.instance.id,
                reply.status.as_u16(),
                reply.attempts
            );
        }
        Err(e) => {
            tally.failed += 1;
            println!("call service={service} path={path} error=\"{e}\"");
        }
    }
}

fn client(discovery: &Discovery, service: &str, timeout: Duration) -> ServiceClient {
    ServiceClient::builder(discovery.service(service))
        .balancer(RoundRobin::new())
        .breaker(BreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_secs(2),
            ..BreakerConfig::default()
        })
        .timeout(timeout)
        .build()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,signpost_client=info".into()),
        )
        .init();
    let args = Args::parse();
    let registry = Arc::new(SignpostRegistry::new([args.agent.clone()])?);
    let discovery = Discovery::new(registry, DiscoveryOptions::default());
    let users = client(&discovery, "user-service", args.timeout);
    let products = client(&discovery, "product-service", args.timeout);
    for service in ["user-service", "product-service"] {
        discovery.service(service).ready().await?;
    }

    let mut user_tally = Tally::default();
    let mut product_tally = Tally::default();
    let mut round: u64 = 0;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        round += 1;
        let id = round % 5 + 1;
        call(&users, &format!("/users/{id}"), &mut user_tally).await;
        call(&products, &format!("/products/{id}"), &mut product_tally).await;
        if round.is_multiple_of(args.report_every.max(1)) {
            println!("{}", user_tally.summary(users.service()));
            println!("{}", product_tally.summary(products.service()));
        }
        if args.rounds != 0 && round >= args.rounds {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = &mut interrupted => break,
        }
    }
    println!("{}", user_tally.summary(users.service()));
    println!("{}", product_tally.summary(products.service()));
    Ok(())
}
