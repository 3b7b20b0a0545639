//! `askpro bench-store`: dedup claims per second on the configured state store (embedded or
//! CQL), the way the pipeline makes them: a claim on a fresh key, then its completion.
//!
//! Every run creates its own tenants (`loadgen::provision_tenants`, named
//! `bench-store-<run>-<i>`) and keys, so it can run against a store that is in use. After the timed phase it re-claims a sample of the keys
//! with another holder: each must come back `Completed` (or `InFlight` with
//! `--no-complete`). A store whose dedup misses a duplicate fails the run, so a fast but
//! wrong store never reports a figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use askpro_actors::domain::DedupClaim;
use askpro_actors::store::ClaimRequest;
use askpro_actors::{CompanyId, EventId, StateStore, StoreError};
use chrono::Utc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::loadgen::LatencySummary;

/// Keys re-claimed after the run to check that every one is detected as a duplicate.
const CHECK_SAMPLE: u64 = 1_000;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchStoreArgs {
    /// Dedup keys to claim (each a fresh key).
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Claims in flight at once (the pipeline has one per busy tenant).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tenants the keys are spread over; created for the run.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
    /// Only claim; skip the completion write that follows each claim in the pipeline.
    #[arg(long)]
    pub no_complete: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchStoreReport {
    pub backend: String,
    pub count: u64,
    pub concurrency: usize,
    pub tenants: usize,
    pub completes: bool,
    pub elapsed_secs: f64,
    /// Keys claimed (and completed, unless `--no-complete`) per second.
    pub claims_per_sec: f64,
    /// Store writes per second: a claim, plus a completion per key unless `--no-complete`.
    pub writes_per_sec: f64,
    /// Per claim, in microseconds.
    pub claim_latency_us: LatencySummary,
    /// Per completion, in microseconds (zeros with `--no-complete`).
    pub complete_latency_us: LatencySummary,
    /// Keys re-claimed by another holder after the run, and how many were refused as they
    /// must be.
    pub duplicate_check: DuplicateCheck,
}

#[derive(Debug, Serialize)]
pub struct DuplicateCheck {
    pub sampled: u64,
    pub detected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchStoreError {
    #[error("--{0} must be at least 1")]
    Argument(&'static str),
    #[error("store refused {operation} for key {key}")]
    Store {
        operation: &'static str,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("key {key} was claimed on the first try by someone else's holder: {claim:?}")]
    NotFresh { key: String, claim: DedupClaim },
    #[error(
        "dedup missed duplicates: {missed} of {sampled} sampled keys were claimed again by another holder"
    )]
    Missed { missed: u64, sampled: u64 },
}

struct Run {
    store: Arc<dyn StateStore>,
    tenants: Vec<CompanyId>,
    prefix: String,
    completes: bool,
}

impl Run {
    fn key(&self, i: u64) -> (CompanyId, String) {
        let company = self.tenants[(i % self.tenants.len() as u64) as usize];
        (company, format!("{}:{i}", self.prefix))
    }

    /// One key: claim it, then complete it. Returns the two latencies in µs.
    async fn one(&self, i: u64) -> Result<(u64, Option<u64>), BenchStoreError> {
        let (company_id, key) = self.key(i);
        let holder = EventId::new();
        let started = Instant::now();
        let claim = self
            .store
            .dedup_claim(request(company_id, &key, holder))
            .await
            .map_err(|source| store_error("dedup_claim", &key, source))?;
        if claim != DedupClaim::Claimed {
            return Err(BenchStoreError::NotFresh { key, claim });
        }
        let claimed = started.elapsed();
        if !self.completes {
            return Ok((micros(claimed), None));
        }
        let completing = Instant::now();
        self.store
            .dedup_complete(company_id, &key, holder)
            .await
            .map_err(|source| store_error("dedup_complete", &key, source))?;
        Ok((micros(claimed), Some(micros(completing.elapsed()))))
    }

    /// Re-claims a sample of the keys with a new holder; counts the ones refused.
    async fn check(&self, count: u64) -> Result<DuplicateCheck, BenchStoreError> {
        let step = count.div_ceil(CHECK_SAMPLE).max(1);
        let mut check = DuplicateCheck {
            sampled: 0,
            detected: 0,
        };
        for i in (0..count).step_by(step as usize) {
            let (company_id, key) = self.key(i);
            let claim = self
                .store
                .dedup_claim(request(company_id, &key, EventId::new()))
                .await
                .map_err(|source| store_error("dedup_claim (check)", &key, source))?;
            check.sampled += 1;
            let refused = match claim {
                DedupClaim::Completed { .. } => self.completes,
                DedupClaim::InFlight { .. } => !self.completes,
                DedupClaim::Claimed => false,
            };
            check.detected += u64::from(refused);
        }
        Ok(check)
    }
}

fn request(company_id: CompanyId, key: &str, holder: EventId) -> ClaimRequest<'_> {
    let now = Utc::now();
    ClaimRequest {
        company_id,
        key,
        holder,
        now,
        // A lease as long as the window: the duplicate check after a long run must still
        // find every key held (an expired lease would rightly be taken over).
        lease_until: now + chrono::Duration::hours(24),
        expires_at: now + chrono::Duration::hours(24),
    }
}

fn store_error(operation: &'static str, key: &str, source: StoreError) -> BenchStoreError {
    BenchStoreError::Store {
        operation,
        key: key.to_owned(),
        source,
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Creates the run's tenants, times `count` claims (and completions) with `concurrency` in
/// flight, then checks a sample for duplicates.
pub async fn run(
    store: Arc<dyn StateStore>,
    backend: &str,
    args: &BenchStoreArgs,
) -> Result<BenchStoreReport, BenchStoreError> {
    if args.count == 0 {
        return Err(BenchStoreError::Argument("count"));
    }
    if args.concurrency == 0 {
        return Err(BenchStoreError::Argument("concurrency"));
    }
    if args.tenants == 0 {
        return Err(BenchStoreError::Argument("tenants"));
    }
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("bench-store-{run_id}");
    let tenants = crate::loadgen::provision_tenants(store.as_ref(), args.tenants, &prefix)
        .await
        .map_err(|source| store_error("provision tenants", &prefix, source))?
        .into_iter()
        .map(|t| t.company_id)
        .collect();
    let run = Arc::new(Run {
        store,
        tenants,
        prefix: format!("bench-store:{run_id}"),
        completes: !args.no_complete,
    });
    let (elapsed, claims, completes) = timed(&run, args).await?;
    let check = run.check(args.count).await?;
    if check.detected != check.sampled {
        return Err(BenchStoreError::Missed {
            missed: check.sampled - check.detected,
            sampled: check.sampled,
        });
    }
    let secs = elapsed.as_secs_f64();
    let writes = args.count * if run.completes { 2 } else { 1 };
    Ok(BenchStoreReport {
        backend: backend.to_owned(),
        count: args.count,
        concurrency: args.concurrency,
        tenants: args.tenants,
        completes: run.completes,
        elapsed_secs: secs,
        claims_per_sec: args.count as f64 / secs,
        writes_per_sec: writes as f64 / secs,
        claim_latency_us: LatencySummary::from_histogram(&claims),
        complete_latency_us: LatencySummary::from_histogram(&completes),
        duplicate_check: check,
    })
}

type Timed = (Duration, Histogram<u64>, Histogram<u64>);

/// The timed phase, with a progress line a second on stderr unless `--quiet`.
async fn timed(run: &Arc<Run>, args: &BenchStoreArgs) -> Result<Timed, BenchStoreError> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = (!args.quiet).then(|| spawn_progress(done.clone(), args.count));
    // Fixed bounds (1 µs to 10 min): `saturating_record` does not grow an auto-resizing
    // histogram, it clamps to its current top.
    let mut claims =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let mut completes = claims.clone();
    let started = Instant::now();
    let mut results = futures::stream::iter(0..args.count)
        .map(|i| {
            let run = run.clone();
            async move { run.one(i).await }
        })
        .buffer_unordered(args.concurrency);
    let mut outcome = Ok(());
    while let Some(result) = results.next().await {
        match result {
            Ok((claim, complete)) => {
                claims.saturating_record(claim);
                if let Some(complete) = complete {
                    completes.saturating_record(complete);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    outcome.map(|()| (elapsed, claims, completes))
}

fn spawn_progress(done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("bench-store: {n}/{total} keys claimed, {rate:.0}/s");
        }
    })
}

impl BenchStoreReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let c = &self.claim_latency_us;
        let mut text = format!(
            "bench-store on the {} store: {} keys, {} in flight, {} tenants{}\n\
             {:.0} keys/s ({:.0} store writes/s) in {:.2} s\n\
             claim    p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms\n",
            self.backend,
            self.count,
            self.concurrency,
            self.tenants,
            if self.completes {
                ", claim + complete"
            } else {
                ", claim only"
            },
            self.claims_per_sec,
            self.writes_per_sec,
            self.elapsed_secs,
            ms(c.p50),
            ms(c.p99),
            ms(c.p999),
        );
        if self.completes {
            let d = &self.complete_latency_us;
            text += &format!(
                "complete p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms\n",
                ms(d.p50),
                ms(d.p99),
                ms(d.p999)
            );
        }
        text += &format!(
            "duplicates: {} of {} re-claimed keys refused\n",
            self.duplicate_check.detected, self.duplicate_check.sampled
        );
        text
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    fn args(count: u64, no_complete: bool) -> BenchStoreArgs {
        BenchStoreArgs {
            count,
            concurrency: 8,
            tenants: 3,
            no_complete,
            quiet: true,
            json: false,
        }
    }

    #[tokio::test]
    async fn every_key_is_claimed_once_and_the_sample_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let report = run(store.clone(), "embedded", &args(200, false))
            .await
            .unwrap();
        assert_eq!(report.count, 200);
        assert_eq!(report.duplicate_check.sampled, 200);
        assert_eq!(report.duplicate_check.detected, 200);
        assert!(report.complete_latency_us.max > 0, "completions were timed");
        let (c, d) = (&report.claim_latency_us, &report.complete_latency_us);
        assert!(c.p50 <= c.p99 && c.p99 <= c.max, "claim latency {c:?}");
        assert!(d.p50 <= d.p99 && d.p99 <= d.max, "complete latency {d:?}");
        assert_eq!(store.companies().await.unwrap().len(), 3);
        assert!(report
            .render()
            .contains("200 of 200 re-claimed keys refused"));
    }

    #[tokio::test]
    async fn claim_only_keys_stay_in_flight_for_another_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let report = run(store, "embedded", &args(50, true)).await.unwrap();
        assert!(!report.completes);
        assert_eq!(report.duplicate_check.detected, 50);
        assert_eq!(report.complete_latency_us.p50, 0);
    }

    #[tokio::test]
    async fn zero_counts_are_refused_with_the_flag_named() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut a = args(10, false);
        a.concurrency = 0;
        let e = run(store, "embedded", &a).await.unwrap_err();
        assert_eq!(e.to_string(), "--concurrency must be at least 1");
    }
}
