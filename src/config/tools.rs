//! The `[tools]` section: live Retell tool calls (`/webhooks/retell/{company_id}/functions/..`).

use std::time::Duration;

use askpro_actors::tools::ToolSettings;
use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    pub budget_ms: u64,
    pub slot_cache_ttl_ms: u64,
    pub answer_ttl_secs: u64,
    pub max_cached: usize,
    pub search_days: u32,
}

impl ToolsConfig {
    /// `request_timeout_ms` is the server's whole-request bound: a tool must answer before it.
    pub fn validate(&self, request_timeout_ms: u64) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if self.budget_ms < 100 || self.budget_ms >= request_timeout_ms {
            return invalid(
                "tools.budget_ms",
                format!(
                    "must be at least 100 and below server.request_timeout_ms ({request_timeout_ms}), got {}",
                    self.budget_ms
                ),
            );
        }
        if self.slot_cache_ttl_ms > 600_000 {
            return invalid(
                "tools.slot_cache_ttl_ms",
                format!(
                    "must be at most 600000 (0 turns it off), got {}",
                    self.slot_cache_ttl_ms
                ),
            );
        }
        if !(1..=86_400).contains(&self.answer_ttl_secs) {
            return invalid(
                "tools.answer_ttl_secs",
                format!("must be 1..=86400, got {}", self.answer_ttl_secs),
            );
        }
        if !(1..=1_000_000).contains(&self.max_cached) {
            return invalid(
                "tools.max_cached",
                format!("must be 1..=1000000, got {}", self.max_cached),
            );
        }
        if !(1..=31).contains(&self.search_days) {
            return invalid(
                "tools.search_days",
                format!("must be 1..=31, got {}", self.search_days),
            );
        }
        Ok(())
    }

    pub fn settings(&self, default_region: &str) -> ToolSettings {
        ToolSettings {
            budget: Duration::from_millis(self.budget_ms),
            slot_cache_ttl: Duration::from_millis(self.slot_cache_ttl_ms),
            answer_ttl: Duration::from_secs(self.answer_ttl_secs),
            max_answers: self.max_cached,
            search_days: self.search_days,
            default_region: default_region.to_owned(),
        }
    }
}
