//! Pipeline metrics, defined in one place. Names carry the `askproai_` prefix of the
//! original design. Labels are bounded: statuses and partitions, never tenants.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct PipelineMetrics {
    /// Events that reached a final status, by status.
    pub events_total: IntCounterVec,
    /// Time from taking an event to its final status.
    pub processing_seconds: Histogram,
    /// Tenant actors currently alive.
    pub tenant_actors: IntGauge,
    /// Tenant actor restarts after a panic.
    pub actor_restarts: IntCounter,
    /// Records in the log not yet committed by this worker's group, per partition.
    pub consumer_lag: IntGaugeVec,
    /// Records appended per group commit.
    pub ingress_batch_size: Histogram,
    /// Retries caused by an unavailable store.
    pub store_retries: IntCounter,
}

impl PipelineMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            events_total: IntCounterVec::new(
                Opts::new(
                    "askproai_events_total",
                    "events that reached a final status",
                ),
                &["status"],
            )?,
            processing_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "askproai_webhook_processing_duration_seconds",
                    "time from taking an event off the log to its final status",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            tenant_actors: IntGauge::new("askproai_tenant_actors", "live tenant actors")?,
            actor_restarts: IntCounter::new(
                "askproai_actor_restarts_total",
                "tenant actor restarts after a panic",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "askproai_consumer_lag",
                    "records appended but not yet committed, per partition",
                ),
                &["partition"],
            )?,
            ingress_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "askproai_ingress_batch_size",
                    "records made durable by one group commit",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
            )?,
            store_retries: IntCounter::new(
                "askproai_store_retries_total",
                "pipeline retries caused by an unavailable store",
            )?,
        };
        registry.register(Box::new(m.events_total.clone()))?;
        registry.register(Box::new(m.processing_seconds.clone()))?;
        registry.register(Box::new(m.tenant_actors.clone()))?;
        registry.register(Box::new(m.actor_restarts.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.ingress_batch_size.clone()))?;
        registry.register(Box::new(m.store_retries.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (unit tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry accepts every metric")
    }
}
