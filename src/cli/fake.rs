//! `askpro fake-calcom`: a stand-in Cal.com for demos, scripts and load runs.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::calcom::fake::{FakeConfig, Faults, OpeningHours, DEFAULT_RATE_LIMIT_PER_MIN};

const AFTER_HELP: &str = "\
Point a branch at it with its base URL (without /v2), e.g. http://127.0.0.1:8098.

Endpoints: GET /v2/slots, POST /v2/slots/reservations, DELETE
/v2/slots/reservations/{uid}, POST|GET /v2/bookings, GET /v2/bookings/{uid},
POST /v2/bookings/{uid}/cancel, POST /v2/bookings/{uid}/reschedule. Requests need
`Authorization: Bearer <any key>` and the right `cal-api-version` (bookings 2024-08-13,
slots 2024-09-04).

Change faults while it runs:
  curl -X POST localhost:8098/_fake/faults -d '{\"fail_next\":3}'
  curl -X POST localhost:8098/_fake/faults -d '{\"hang_after_commit\":1,\"hang_ms\":20000}'
  curl localhost:8098/_fake/stats
  curl -X POST localhost:8098/_fake/reset
Fields of /_fake/faults: latency_ms, error_rate, fail_next, hang_after_commit, hang_ms,
rate_limit_per_min.";

#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct FakeCalcomArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8098")]
    pub listen: SocketAddr,
    /// Delay added before answering every /v2 request.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    /// Probability (0..1) that a /v2 request answers 500 without acting.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// The first N /v2 requests answer 500 without acting.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fail_next: u32,
    /// Requests a minute per API key before answering 429 (0: no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE_LIMIT_PER_MIN)]
    pub rate_limit_per_min: u32,
    /// Seed of the --error-rate draws and booking uids (same seed, same run).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// First hour GET /v2/slots offers (local to the requested timeZone).
    #[arg(long, value_name = "H", default_value_t = 9)]
    pub open_hour: u32,
    /// Hour by which the last slot ends.
    #[arg(long, value_name = "H", default_value_t = 17)]
    pub close_hour: u32,
    /// Slot length and step in minutes.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub slot_minutes: u32,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

/// Serves until ctrl-c or SIGTERM. Prints `fake cal.com listening on http://ADDR` once bound,
/// on stdout, for scripts to wait for.
pub async fn run(args: FakeCalcomArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let config = FakeConfig {
        faults: Faults {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            fail_next: args.fail_next,
            ..Faults::default()
        },
        rate_limit_per_min: args.rate_limit_per_min,
        seed: args.seed,
        hours: OpeningHours {
            open_hour: args.open_hour,
            close_hour: args.close_hour,
            slot_minutes: args.slot_minutes,
        },
    };
    if let Some(problem) = config.hours.problem() {
        anyhow::bail!(problem);
    }
    super::output::println(format_args!("fake cal.com listening on http://{addr}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    crate::calcom::fake::run(listener, config, shutdown).await?;
    Ok(())
}

const RETELL_AFTER_HELP: &str = "\
Point `askpro agent provision --retell-base-url` at it, e.g. http://127.0.0.1:8097.

Endpoints: POST /create-retell-llm, PATCH /update-retell-llm/{id}, GET /get-retell-llm/{id},
GET /list-retell-llms, DELETE /delete-retell-llm/{id}, POST /create-agent,
PATCH /update-agent/{id}, GET /get-agent/{id}, GET /list-agents, DELETE /delete-agent/{id},
POST /create-phone-number {phone_number}, PATCH /update-phone-number/{number},
GET /get-phone-number/{number}, GET /list-phone-numbers. State lives in memory. Unknown
fields and the removed inbound_agent_id are refused (400).";

#[derive(clap::Args, Debug)]
#[command(after_help = RETELL_AFTER_HELP)]
pub struct FakeRetellArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8097")]
    pub listen: SocketAddr,
    /// The only API key accepted (`Authorization: Bearer KEY`); any non-empty key without it.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// A phone number (E.164) the fake account owns from the start; repeatable.
    #[arg(long = "phone-number", value_name = "E164")]
    pub phone_numbers: Vec<String>,
}

/// Serves until ctrl-c or SIGTERM. Prints `fake retell listening on http://ADDR` once bound.
pub async fn run_retell(args: FakeRetellArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let config = crate::retell::FakeRetellConfig {
        api_key: args.api_key,
        phone_numbers: args.phone_numbers,
    };
    super::output::println(format_args!("fake retell listening on http://{addr}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    crate::retell::fake::run(listener, config, shutdown).await?;
    Ok(())
}
