//! Booking metrics. The breaker gauge is the one per-tenant series: operators must see which
//! tenant's Cal.com is failing. It only exists for tenants that have booked.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct BookingMetrics {
    /// Booking attempts by outcome: booked, found, deferred, transient, permanent.
    pub bookings_total: IntCounterVec,
    /// Latency of Cal.com requests (any endpoint).
    pub booking_duration_seconds: Histogram,
    /// 0 closed, 1 open, 2 half-open, per tenant.
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions_total: IntCounterVec,
    /// Requests that had to wait for the rate limit, and how long.
    pub rate_limit_waits_total: IntCounter,
    pub rate_limit_wait_seconds: Histogram,
    /// Appointments stored locally, waiting for Cal.com (as of the last reconciler sweep).
    pub pending_sync: IntGauge,
    /// Reconciler runs per tenant, by outcome: synced, deferred, idle, error.
    pub reconciler_runs_total: IntCounterVec,
    pub default_services_created_total: IntCounter,
    /// Events sent to a retry tier, by tier (1-based).
    pub retries_scheduled_total: IntCounterVec,
    pub dead_letters_total: IntCounter,
}

impl BookingMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            bookings_total: IntCounterVec::new(
                Opts::new("askproai_bookings_total", "booking attempts by outcome"),
                &["status"],
            )?,
            booking_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "askproai_booking_duration_seconds",
                    "latency of cal.com requests",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    "askproai_breaker_state",
                    "cal.com circuit breaker per tenant: 0 closed, 1 open, 2 half-open",
                ),
                &["company_id"],
            )?,
            breaker_transitions_total: IntCounterVec::new(
                Opts::new(
                    "askproai_breaker_transitions_total",
                    "circuit breaker state changes",
                ),
                &["from", "to"],
            )?,
            rate_limit_waits_total: IntCounter::new(
                "askproai_rate_limit_waits_total",
                "cal.com requests that waited for their api key's rate limit",
            )?,
            rate_limit_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "askproai_rate_limit_wait_seconds",
                    "time spent waiting for the rate limit",
                )
                .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0]),
            )?,
            pending_sync: IntGauge::new(
                "askproai_pending_sync_appointments",
                "appointments stored locally and waiting for cal.com (last reconciler sweep)",
            )?,
            reconciler_runs_total: IntCounterVec::new(
                Opts::new(
                    "askproai_reconciler_runs_total",
                    "reconciler runs per tenant by outcome",
                ),
                &["outcome"],
            )?,
            default_services_created_total: IntCounter::new(
                "askproai_default_services_created_total",
                "Standardberatung services created for branches that had none",
            )?,
            retries_scheduled_total: IntCounterVec::new(
                Opts::new(
                    "askproai_retries_scheduled_total",
                    "events sent to a retry tier after a transient failure",
                ),
                &["tier"],
            )?,
            dead_letters_total: IntCounter::new(
                "askproai_dead_letters_total",
                "events dead-lettered after their last retry",
            )?,
        };
        registry.register(Box::new(m.bookings_total.clone()))?;
        registry.register(Box::new(m.booking_duration_seconds.clone()))?;
        registry.register(Box::new(m.breaker_state.clone()))?;
        registry.register(Box::new(m.breaker_transitions_total.clone()))?;
        registry.register(Box::new(m.rate_limit_waits_total.clone()))?;
        registry.register(Box::new(m.rate_limit_wait_seconds.clone()))?;
        registry.register(Box::new(m.pending_sync.clone()))?;
        registry.register(Box::new(m.reconciler_runs_total.clone()))?;
        registry.register(Box::new(m.default_services_created_total.clone()))?;
        registry.register(Box::new(m.retries_scheduled_total.clone()))?;
        registry.register(Box::new(m.dead_letters_total.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (unit tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry accepts every metric")
    }
}
