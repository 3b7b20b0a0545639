//! `askpro loadgen`: a load tool that sends realistic, correctly signed Retell `call_ended`
//! webhooks to an ingress (or to the bare [`crate::bench_server`]) and reports throughput,
//! status codes and latency percentiles.
//!
//! The flow: [`provision_tenants`] creates tenants with Retell secrets in a state store (or
//! the caller builds [`LoadTenant`]s by hand), then [`run`] drives the load and returns a
//! [`LoadReport`].

mod body;
mod booking;
mod inbound;
mod report;
mod tenants;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use reqwest::Url;
use tokio_util::sync::CancellationToken;

pub use booking::connect_branches;
pub use inbound::{provision_branches, Scenario, INBOUND_PATH};
pub use report::{LatencyBucket, LatencySummary, LoadReport};
pub use tenants::{provision_tenants, LoadTenant};

use worker::{Plan, Shared};

/// Retell's default webhook timeout; a request slower than this counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting, and on the whole start-up probe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `askpro loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Base URL of the ingress (or bench server) to load. Plain http only.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Total number of requests to send.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Hard time bound in seconds; the run stops at --count or --duration, whichever comes first.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,

    /// Target rate in requests per second; 0 sends as fast as --concurrency allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,

    /// Number of requests in flight at once (one worker per slot).
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: usize,

    /// Number of tenants to provision and spread the requests over (round robin).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub tenants: usize,

    /// Fraction (0..=1) of requests that re-send an earlier body of the same tenant, freshly
    /// signed; the ingress should deduplicate them by (call_id, event).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub duplicate_ratio: f64,

    /// Request path; `{company_id}` is replaced by the tenant id. The bench server ignores it.
    #[arg(long, default_value = "/webhooks/retell/{company_id}")]
    pub path_template: String,

    /// What to send: `call-ended` webhooks, or `inbound` (`call_inbound` routing requests
    /// for each tenant's branch number; the path defaults to /webhooks/retell/inbound).
    #[arg(long, value_enum, default_value_t = Scenario::CallEnded)]
    pub scenario: Scenario,

    /// `call-ended`: repeat the transcript until it has at least this many bytes, for large
    /// bodies (0: the usual two-KiB call). Must stay under the server's body limit.
    #[arg(long, default_value_t = 0, value_parser = RangedU64ValueParser::<usize>::new().range(0..=16 * 1024 * 1024))]
    pub transcript_bytes: usize,

    /// Print the final report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Do not print progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Default for LoadgenArgs {
    fn default() -> Self {
        Self {
            target: "http://127.0.0.1:8080".to_owned(),
            count: 10_000,
            duration: 60,
            rate: 0,
            concurrency: 64,
            tenants: 10,
            duplicate_ratio: 0.0,
            path_template: "/webhooks/retell/{company_id}".to_owned(),
            scenario: Scenario::CallEnded,
            transcript_bytes: 0,
            json: false,
            quiet: false,
        }
    }
}

impl LoadgenArgs {
    /// Checks the flags that clap cannot check alone (and all of them when the struct was
    /// built in code). Returns the parsed target URL.
    pub fn validate(&self) -> Result<Url, LoadgenError> {
        let invalid =
            |flag: &'static str, reason: String| LoadgenError::InvalidArgs { flag, reason };
        if !(0.0..=1.0).contains(&self.duplicate_ratio) {
            let reason = format!("must be within 0..=1, got {}", self.duplicate_ratio);
            return Err(invalid("duplicate-ratio", reason));
        }
        if self.count == 0 {
            return Err(invalid("count", "must be at least 1".to_owned()));
        }
        if self.duration == 0 {
            return Err(invalid("duration", "must be at least 1 second".to_owned()));
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1".to_owned()));
        }
        if self.tenants == 0 {
            return Err(invalid("tenants", "must be at least 1".to_owned()));
        }
        if !self.path_template.starts_with('/') {
            let reason = format!("must start with '/', got {:?}", self.path_template);
            return Err(invalid("path-template", reason));
        }
        parse_target(&self.target)
    }

    /// The path template in effect: `inbound` without an explicit template goes to
    /// [`INBOUND_PATH`].
    pub(crate) fn path(&self) -> &str {
        let default = self.path_template == Self::default().path_template;
        match self.scenario {
            Scenario::Inbound if default => INBOUND_PATH,
            _ => &self.path_template,
        }
    }
}

/// Why a load run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A flag has a value the tool cannot use.
    #[error("invalid --{flag}: {reason}")]
    InvalidArgs { flag: &'static str, reason: String },
    /// [`run`] was given no tenants to send for.
    #[error("no tenants to send for: provision at least one")]
    NoTenants,
    /// The start-up probe got no HTTP answer from the target.
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Client(#[source] reqwest::Error),
    /// A worker task panicked or was aborted.
    #[error("a load worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// Sends the load described by `args` for `tenants` and returns the report.
///
/// Probes the target once first and fails fast if it does not answer. The run stops after
/// `args.count` requests, after `args.duration` seconds or when `shutdown` is cancelled,
/// whichever comes first; requests still in flight at a time or shutdown stop are abandoned
/// and counted as `cancelled`.
pub async fn run(
    args: &LoadgenArgs,
    tenants: &[LoadTenant],
    shutdown: CancellationToken,
) -> Result<LoadReport, LoadgenError> {
    let target = args.validate()?;
    if tenants.is_empty() {
        return Err(LoadgenError::NoTenants);
    }
    let client = build_client(args.concurrency)?;
    probe(&client, &target).await?;
    let plan = Arc::new(Plan::new(args, &target, tenants)?);
    tracing::info!(
        target = %target, count = args.count, concurrency = args.concurrency,
        rate = args.rate, tenants = tenants.len(), "loadgen starting"
    );
    let stop = shutdown.child_token();
    let shared = Arc::new(Shared::new(args.concurrency));
    let started = Instant::now();
    spawn_deadline(stop.clone(), Duration::from_secs(args.duration));
    if !args.quiet {
        worker::spawn_progress(shared.clone(), stop.clone(), started);
    }
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..args.concurrency)
        .map(|slot| {
            let ctx = worker::WorkerCtx {
                slot,
                client: client.clone(),
                plan: plan.clone(),
                shared: shared.clone(),
                next: next.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(worker::run_worker(ctx))
        })
        .collect();
    for handle in handles {
        handle.await?;
    }
    let elapsed = started.elapsed();
    let stop_reason = stop_reason(&shutdown, &shared, args.count);
    stop.cancel();
    let report = LoadReport::build(args, tenants.len(), &shared, elapsed, stop_reason);
    tracing::info!(
        requests = report.requests,
        elapsed_secs = report.elapsed_secs,
        "loadgen done"
    );
    Ok(report)
}

/// Accepts a fraction within 0..=1 (clap value parser for `--duplicate-ratio`).
fn parse_ratio(s: &str) -> Result<f64, String> {
    let value: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be within 0..=1, got {value}"))
    }
}

fn parse_target(target: &str) -> Result<Url, LoadgenError> {
    let invalid = |reason: String| LoadgenError::InvalidArgs {
        flag: "target",
        reason,
    };
    let url = Url::parse(target).map_err(|e| invalid(format!("{target:?} is not a URL: {e}")))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => Err(invalid(
            "https is not supported (this build has no TLS); use http".to_owned(),
        )),
        other => Err(invalid(format!("unsupported scheme {other:?}; use http"))),
    }
}

fn build_client(concurrency: usize) -> Result<reqwest::Client, LoadgenError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(LoadgenError::Client)
}

/// One `GET` on the target: any HTTP answer (even a 404) proves it is reachable.
async fn probe(client: &reqwest::Client, target: &Url) -> Result<(), LoadgenError> {
    let result = client
        .get(target.clone())
        .timeout(CONNECT_TIMEOUT)
        .send()
        .await;
    match result {
        Ok(response) => {
            tracing::debug!(
                status = response.status().as_u16(),
                "loadgen probe answered"
            );
            Ok(())
        }
        Err(err) => Err(LoadgenError::Unreachable {
            target: target.to_string(),
            reason: error_chain(&err),
        }),
    }
}

/// Cancels `stop` after `after`, unless it is cancelled earlier.
fn spawn_deadline(stop: CancellationToken, after: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(after) => stop.cancel(),
            () = stop.cancelled() => {}
        }
    });
}

fn stop_reason(shutdown: &CancellationToken, shared: &Shared, count: u64) -> &'static str {
    if shared.completed() >= count {
        "count"
    } else if shutdown.is_cancelled() {
        "shutdown"
    } else {
        "duration"
    }
}

/// An error with its sources, `outer: inner: root`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
