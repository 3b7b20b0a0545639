//! The timed section: workers that send signed requests, per-worker statistics and the
//! once-a-second progress line.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::body::BodyTemplate;
use super::booking::BookingTemplate;
use super::inbound::{inbound_body, Scenario};
use super::{error_chain, LoadTenant, LoadgenArgs, LoadgenError};
use crate::signature::sign_retell;

/// Earlier bodies a worker keeps per tenant for duplicates.
const HISTORY_PER_TENANT: usize = 256;

/// Everything fixed before the timed section starts.
pub(crate) struct Plan {
    count: u64,
    duplicate_ratio: f64,
    limiter: Option<DefaultDirectRateLimiter>,
    tenants: Vec<TenantPlan>,
}

struct TenantPlan {
    url: Url,
    secret: String,
    template: BodyTemplate,
    /// `--scenario inbound`: the tenant's one `call_inbound` body, sent every time.
    inbound: Option<Bytes>,
    /// `--scenario booking`: fresh `call_analyzed` bodies with the next free slot.
    booking: Option<BookingTemplate>,
}

impl Plan {
    pub(crate) fn new(
        args: &LoadgenArgs,
        target: &Url,
        tenants: &[LoadTenant],
    ) -> Result<Self, LoadgenError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let base = target.as_str().trim_end_matches('/');
        let tenants = tenants
            .iter()
            .enumerate()
            .map(|(i, tenant)| {
                let path = args
                    .path()
                    .replace("{company_id}", &tenant.company_id.to_string());
                let url = Url::parse(&format!("{base}{path}")).map_err(|e| {
                    LoadgenError::InvalidArgs {
                        flag: "path-template",
                        reason: format!("{path:?} does not form a URL with the target: {e}"),
                    }
                })?;
                Ok(TenantPlan {
                    url,
                    secret: tenant.secret.clone(),
                    template: BodyTemplate::with_transcript(i, now_ms, args.transcript_bytes),
                    inbound: (args.scenario == Scenario::Inbound)
                        .then(|| inbound_body(i, tenant.phone.as_deref())),
                    booking: (args.scenario == Scenario::Booking)
                        .then(|| BookingTemplate::new(tenant.phone.as_deref(), now_ms)),
                })
            })
            .collect::<Result<_, LoadgenError>>()?;
        Ok(Self {
            count: args.count,
            duplicate_ratio: args.duplicate_ratio,
            limiter: limiter(args.rate),
            tenants,
        })
    }
}

/// A shared limiter for `rate` requests/s with a burst of about 10 ms worth of requests,
/// so the start is not one big burst and timer jitter is absorbed.
fn limiter(rate: u32) -> Option<DefaultDirectRateLimiter> {
    let per_second = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(rate.div_ceil(100)).unwrap_or(NonZeroU32::MIN);
    Some(RateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

/// What one worker saw. Locked once per request by its worker and once a second by the
/// progress task, so it is practically uncontended.
pub(crate) struct SlotStats {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) ok: u64,
    pub(crate) transport_errors: u64,
    pub(crate) first_transport_error: Option<String>,
    pub(crate) duplicates: u64,
    pub(crate) cancelled: u64,
}

impl SlotStats {
    fn new() -> Self {
        Self {
            // Explicit bounds: an auto-resizing histogram would clamp `saturating_record` at 2.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            by_status: BTreeMap::new(),
            ok: 0,
            transport_errors: 0,
            first_transport_error: None,
            duplicates: 0,
            cancelled: 0,
        }
    }

    /// Requests that got an answer or failed in transport.
    pub(crate) fn requests(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport_errors
    }

    fn record(&mut self, outcome: Outcome, latency: Duration, duplicate: bool) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(micros);
        match outcome {
            Outcome::Status(status) => {
                *self.by_status.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    self.ok += 1;
                }
            }
            Outcome::Transport(reason) => {
                self.transport_errors += 1;
                self.first_transport_error.get_or_insert(reason);
            }
        }
        if duplicate {
            self.duplicates += 1;
        }
    }

    fn merge(&mut self, other: &SlotStats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("auto-resizing histograms merge");
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.ok += other.ok;
        self.transport_errors += other.transport_errors;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error.clone();
        }
        self.duplicates += other.duplicates;
        self.cancelled += other.cancelled;
    }
}

/// Statistics of all workers, one slot each.
pub(crate) struct Shared {
    slots: Vec<Mutex<SlotStats>>,
}

impl Shared {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            slots: (0..workers).map(|_| Mutex::new(SlotStats::new())).collect(),
        }
    }

    fn slot(&self, slot: usize) -> MutexGuard<'_, SlotStats> {
        // A worker never panics while holding its lock; recover the data if one did.
        self.slots[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// All slots merged into one.
    pub(crate) fn merged(&self) -> SlotStats {
        let mut total = SlotStats::new();
        for slot in 0..self.slots.len() {
            total.merge(&self.slot(slot));
        }
        total
    }

    /// Requests completed so far over all workers.
    pub(crate) fn completed(&self) -> u64 {
        (0..self.slots.len())
            .map(|slot| self.slot(slot).requests())
            .sum()
    }
}

/// What a worker needs; one per worker task.
pub(crate) struct WorkerCtx {
    pub(crate) slot: usize,
    pub(crate) client: reqwest::Client,
    pub(crate) plan: Arc<Plan>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next: Arc<AtomicU64>,
    pub(crate) stop: CancellationToken,
}

enum Outcome {
    Status(u16),
    Transport(String),
}

/// Claims request numbers until `count` is reached or `stop` is cancelled.
pub(crate) async fn run_worker(ctx: WorkerCtx) {
    let plan = &ctx.plan;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut history: Vec<Vec<Bytes>> = vec![Vec::new(); plan.tenants.len()];
    while !ctx.stop.is_cancelled() {
        let n = ctx.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.count || !wait_turn(plan, &ctx.stop).await {
            break;
        }
        let tenant_ix = usize::try_from(n % plan.tenants.len() as u64).unwrap_or(0);
        let tenant = &plan.tenants[tenant_ix];
        let (body, duplicate) = match (&tenant.inbound, &tenant.booking) {
            (Some(body), _) => (body.clone(), false),
            (None, Some(booking)) => (booking.fresh(), false),
            (None, None) => pick_body(
                &mut rng,
                &mut history[tenant_ix],
                &tenant.template,
                plan.duplicate_ratio,
            ),
        };
        let sent = tokio::select! {
            biased;
            () = ctx.stop.cancelled() => None,
            sent = send(&ctx.client, tenant, body) => Some(sent),
        };
        let mut stats = ctx.shared.slot(ctx.slot);
        match sent {
            Some((outcome, latency)) => stats.record(outcome, latency, duplicate),
            None => stats.cancelled += 1,
        }
    }
}

/// Waits for the rate limiter, if any. Returns false when stopped meanwhile.
async fn wait_turn(plan: &Plan, stop: &CancellationToken) -> bool {
    let Some(limiter) = &plan.limiter else {
        return true;
    };
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        _ = limiter.until_ready() => true,
    }
}

/// Re-sends an earlier body of the tenant with probability `ratio`; otherwise a fresh one.
fn pick_body(
    rng: &mut StdRng,
    history: &mut Vec<Bytes>,
    template: &BodyTemplate,
    ratio: f64,
) -> (Bytes, bool) {
    if !history.is_empty() && ratio > 0.0 && rng.random_bool(ratio) {
        let earlier = history[rng.random_range(0..history.len())].clone();
        return (earlier, true);
    }
    let body = template.fresh();
    if history.len() < HISTORY_PER_TENANT {
        history.push(body.clone());
    } else {
        let victim = rng.random_range(0..history.len());
        history[victim] = body.clone();
    }
    (body, false)
}

/// Signs `body` with the current time and sends it; the latency covers reading the answer.
async fn send(client: &reqwest::Client, tenant: &TenantPlan, body: Bytes) -> (Outcome, Duration) {
    let signature = sign_retell(&tenant.secret, &body, chrono::Utc::now().timestamp_millis());
    let started = Instant::now();
    let result = client
        .post(tenant.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("x-retell-signature", signature)
        .body(body)
        .send()
        .await;
    let outcome = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) => Outcome::Status(status),
                Err(err) => Outcome::Transport(error_chain(&err)),
            }
        }
        Err(err) => Outcome::Transport(error_chain(&err)),
    };
    if let Outcome::Transport(reason) = &outcome {
        tracing::debug!(%reason, "loadgen request failed");
    }
    (outcome, started.elapsed())
}

/// Prints one progress line a second on stderr until `stop` is cancelled.
pub(crate) fn spawn_progress(shared: Arc<Shared>, stop: CancellationToken, started: Instant) {
    tokio::spawn(async move {
        let period = Duration::from_secs(1);
        let mut ticker = tokio::time::interval_at((started + period).into(), period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = (0_u64, started);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => last = print_progress(&shared, started, last),
            }
        }
    });
}

fn print_progress(shared: &Shared, started: Instant, last: (u64, Instant)) -> (u64, Instant) {
    let stats = shared.merged();
    let now = Instant::now();
    let sent = stats.requests();
    let window = now.duration_since(last.1).as_secs_f64().max(1e-3);
    let rate = (sent - last.0) as f64 / window;
    let errors = sent - stats.ok;
    let p99_ms = stats.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    eprintln!(
        "[{:>6.1}s] sent {sent:>9}  ok {:>9}  errors {errors:>7}  rate {rate:>9.0}/s  p99 {p99_ms:>8.2} ms",
        now.duration_since(started).as_secs_f64(),
        stats.ok,
    );
    (sent, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limiter_without_a_rate() {
        assert!(limiter(0).is_none());
        assert!(limiter(1).is_some());
    }

    #[test]
    fn duplicates_come_from_the_history_only() {
        let template = BodyTemplate::new(0, 0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut history = Vec::new();
        let (first, dup) = pick_body(&mut rng, &mut history, &template, 1.0);
        assert!(!dup, "nothing to duplicate yet");
        let (second, dup) = pick_body(&mut rng, &mut history, &template, 1.0);
        assert!(dup);
        assert_eq!(first, second);
        assert_eq!(history.len(), 1);
    }

    #[test]
    fn history_stays_bounded() {
        let template = BodyTemplate::new(0, 0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut history = Vec::new();
        for _ in 0..HISTORY_PER_TENANT + 10 {
            let (_, dup) = pick_body(&mut rng, &mut history, &template, 0.0);
            assert!(!dup);
        }
        assert_eq!(history.len(), HISTORY_PER_TENANT);
    }

    #[test]
    fn slot_stats_count_statuses_and_transport_errors() {
        let mut stats = SlotStats::new();
        let ms = Duration::from_millis(1);
        stats.record(Outcome::Status(202), ms, false);
        stats.record(Outcome::Status(503), ms, true);
        stats.record(Outcome::Transport("refused".to_owned()), ms, false);
        let mut total = SlotStats::new();
        total.merge(&stats);
        total.merge(&stats);
        assert_eq!(total.requests(), 6);
        assert_eq!(total.ok, 2);
        assert_eq!(total.by_status[&503], 2);
        assert_eq!(total.transport_errors, 2);
        assert_eq!(total.duplicates, 2);
        assert_eq!(total.first_transport_error.as_deref(), Some("refused"));
        assert_eq!(total.latency_us.len(), 6);
    }
}
