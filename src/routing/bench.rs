//! `askpro bench-resolver`: latency of a cached `call_inbound` resolution, in nanoseconds.
//!
//! Builds a throwaway embedded store with `--branches` branches (10 per company, three
//! services each), warms the cache with every number, then times `--lookups` resolutions of
//! random numbers, one `Instant` pair per lookup (the timer's own cost is measured and
//! reported, not subtracted).

use std::time::{Duration, Instant};

use askpro_actors::catalog::Service;
use askpro_actors::domain::{Branch, Company};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use super::*;
use crate::embedded::EmbeddedStore;

const BRANCHES_PER_COMPANY: usize = 10;

/// Flags of `askpro bench-resolver`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchResolverArgs {
    /// Branches (phone numbers) to create and cache.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub branches: u64,
    /// Cached resolutions to time, over all tasks.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lookups: u64,
    /// Tasks resolving at once (contention on the cache lock).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub tasks: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Percentiles of one cached resolution.
#[derive(Debug, Serialize)]
pub struct BenchResolverReport {
    pub branches: u64,
    pub lookups: u64,
    pub tasks: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    /// Median cost of an empty `Instant::now()` pair, included in every sample.
    pub timer_overhead_ns: u64,
    pub lookups_per_sec: f64,
}

impl BenchResolverReport {
    pub fn render_text(&self) -> String {
        format!(
            "cached call_inbound resolution: {} branches, {} lookups, {} task(s)\n  \
             p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns  mean {:.0} ns\n  \
             timer overhead ~{} ns per sample (included)  throughput {:.0} lookups/s",
            self.branches,
            self.lookups,
            self.tasks,
            self.p50_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.mean_ns,
            self.timer_overhead_ns,
            self.lookups_per_sec,
        )
    }
}

/// Runs the benchmark in a temp dir.
pub async fn bench_resolver(args: &BenchResolverArgs) -> anyhow::Result<BenchResolverReport> {
    let dir = ScratchDir::create()?;
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(&dir.0)?);
    let numbers = Arc::new(populate(store.as_ref(), args.branches).await?);
    let settings = ResolverSettings {
        ttl: Duration::from_secs(3_600),
        negative_ttl: Duration::from_secs(5),
        default_region: "DE".into(),
        max_entries: DEFAULT_MAX_ENTRIES.max(numbers.len() + 1),
    };
    let resolver = Arc::new(InboundResolver::new(store, settings));
    for number in numbers.iter() {
        resolver.resolve(number).await?;
    }
    let per_task = args.lookups.div_ceil(args.tasks);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.tasks)
        .map(|_| {
            let (resolver, numbers) = (Arc::clone(&resolver), Arc::clone(&numbers));
            tokio::spawn(async move { time_lookups(&resolver, &numbers, per_task).await })
        })
        .collect();
    let mut total = histogram();
    for handle in handles {
        total.add(handle.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(BenchResolverReport {
        branches: args.branches,
        lookups: total.len(),
        tasks: args.tasks,
        p50_ns: total.value_at_quantile(0.50),
        p99_ns: total.value_at_quantile(0.99),
        p999_ns: total.value_at_quantile(0.999),
        max_ns: total.max(),
        mean_ns: total.mean(),
        timer_overhead_ns: timer_overhead(),
        lookups_per_sec: total.len() as f64 / elapsed,
    })
}

/// A directory under the system temp dir, removed on drop (`tempfile` is a dev-dependency).
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create() -> std::io::Result<Self> {
        let name = format!("askpro-bench-resolver-{}", uuid::Uuid::now_v7().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(error = %error, dir = %self.0.display(), "bench scratch dir not removed");
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

async fn time_lookups(
    resolver: &InboundResolver,
    numbers: &[String],
    lookups: u64,
) -> anyhow::Result<Histogram<u64>> {
    // Indices are drawn up front so the RNG stays out of the timed section.
    let picks: Vec<usize> = {
        let mut rng = rand::rng();
        (0..lookups)
            .map(|_| rng.random_range(0..numbers.len()))
            .collect()
    };
    let mut samples = histogram();
    for (i, pick) in picks.into_iter().enumerate() {
        let started = Instant::now();
        let resolved = resolver.resolve(&numbers[pick]).await?;
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        anyhow::ensure!(resolved.cached, "{} fell out of the cache", numbers[pick]);
        samples.saturating_record(ns.max(1));
        if i % 4096 == 4095 {
            // Let other tasks run on a busy runtime; outside the timed span.
            tokio::task::yield_now().await;
        }
    }
    Ok(samples)
}

fn timer_overhead() -> u64 {
    let mut samples = histogram();
    for _ in 0..100_000 {
        let started = Instant::now();
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        samples.saturating_record(ns.max(1));
    }
    samples.value_at_quantile(0.5)
}

/// Creates the companies, branches and services; returns the branch numbers.
async fn populate(store: &dyn StateStore, branches: u64) -> anyhow::Result<Vec<String>> {
    let now = chrono::Utc::now();
    let mut numbers = Vec::new();
    let mut company = None;
    for i in 0..branches as usize {
        if i % BRANCHES_PER_COMPANY == 0 {
            let c = Company {
                id: CompanyId::new(),
                name: format!("bench company {}", i / BRANCHES_PER_COMPANY),
                allow_unsigned_calcom: false,
                created_at: now,
            };
            store.create_company(&c).await?;
            for name in ["Herrenhaarschnitt", "Damenhaarschnitt", "Färben"] {
                store
                    .create_service(&bench_service(c.id, name, now))
                    .await?;
            }
            company = Some(c.id);
        }
        let company_id = company.expect("set on the first iteration");
        // Berlin numbers: +49 30 plus eight digits.
        let phone = format!("+4930{:08}", 30_000_000 + i);
        let branch = Branch {
            id: BranchId::new(),
            company_id,
            name: format!("bench branch {i}"),
            phone: phone.clone(),
            timezone: "Europe/Berlin".into(),
            retell_agent_id: Some(format!("agent_bench_{i}")),
            retell_llm_id: None,
            calcom: None,
            created_at: now,
            fallback_email: None,
        };
        store.create_branch(&branch).await?;
        numbers.push(phone);
    }
    Ok(numbers)
}

fn bench_service(company_id: CompanyId, name: &str, now: chrono::DateTime<chrono::Utc>) -> Service {
    Service {
        company_id,
        id: uuid::Uuid::now_v7(),
        branch_id: None,
        name: name.into(),
        duration_minutes: 30,
        price_cents: 3_000,
        currency: "EUR".into(),
        calcom_event_type_id: None,
        active: true,
        metadata: Default::default(),
        created_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_percentiles_of_cached_lookups() {
        let args = BenchResolverArgs {
            branches: 12,
            lookups: 2_000,
            tasks: 2,
            json: false,
        };
        let report = bench_resolver(&args).await.unwrap();
        assert_eq!(report.lookups, 2_000);
        assert!(report.p50_ns <= report.p99_ns && report.p99_ns <= report.max_ns);
        assert!(report.render_text().contains("p99"));
    }
}
