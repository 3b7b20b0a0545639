//! The `[booking]` section: Cal.com client timeouts, rate limit, circuit breaker, retry tiers
//! and the reconciler.

use std::time::Duration;

use askpro_actors::booking::{BookingSettings, BreakerSettings};
use askpro_actors::reconciler::ReconcileSettings;
use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BookingConfig {
    pub book_on_call_ended: bool,
    pub rate_limit_per_min: u32,
    pub breaker_failure_threshold: u32,
    pub breaker_open_ms: u64,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub retry_delays_ms: Vec<u64>,
    pub reconcile_interval_ms: u64,
    pub reconcile_min_age_ms: u64,
    pub reconcile_batch: usize,
}

impl BookingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        let positive: [(&'static str, u64); 7] = [
            (
                "booking.rate_limit_per_min",
                u64::from(self.rate_limit_per_min),
            ),
            (
                "booking.breaker_failure_threshold",
                u64::from(self.breaker_failure_threshold),
            ),
            ("booking.breaker_open_ms", self.breaker_open_ms),
            ("booking.connect_timeout_ms", self.connect_timeout_ms),
            ("booking.request_timeout_ms", self.request_timeout_ms),
            ("booking.reconcile_interval_ms", self.reconcile_interval_ms),
            ("booking.reconcile_batch", self.reconcile_batch as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0".into());
            }
        }
        if self.retry_delays_ms.len() > 10 {
            return invalid(
                "booking.retry_delays_ms",
                format!("has {} tiers; at most 10", self.retry_delays_ms.len()),
            );
        }
        if let Some(bad) = self.retry_delays_ms.iter().find(|d| **d == 0) {
            return invalid(
                "booking.retry_delays_ms",
                format!("contains {bad}; every delay must be greater than 0"),
            );
        }
        if self.connect_timeout_ms > self.request_timeout_ms {
            return invalid(
                "booking.connect_timeout_ms",
                format!(
                    "({}) must not exceed booking.request_timeout_ms ({})",
                    self.connect_timeout_ms, self.request_timeout_ms
                ),
            );
        }
        Ok(())
    }

    pub fn settings(&self) -> BookingSettings {
        BookingSettings {
            breaker: BreakerSettings {
                failure_threshold: self.breaker_failure_threshold,
                open_for: Duration::from_millis(self.breaker_open_ms),
            },
            default_rate_per_min: self.rate_limit_per_min,
            // A fresh identity; the worker wiring sets the one it can prove (src/worker.rs).
            ..BookingSettings::default()
        }
    }

    pub fn reconcile(&self) -> ReconcileSettings {
        ReconcileSettings {
            interval: Duration::from_millis(self.reconcile_interval_ms),
            min_age: Duration::from_millis(self.reconcile_min_age_ms),
            batch: self.reconcile_batch,
        }
    }

    pub fn retry_delays(&self) -> Vec<Duration> {
        self.retry_delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect()
    }
}
