//! Operations endpoints: `/health` (one check per component) and `/metrics` (Prometheus).

use std::sync::Arc;
use std::time::Duration;

use askpro_actors::booking::BreakerState;
use askpro_actors::group::GroupMsg;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde_json::{json, Value};

use super::AppState;

/// Metrics of the HTTP ingress.
#[derive(Clone)]
pub struct HttpMetrics {
    pub webhook_total: IntCounterVec,
    pub ingress_seconds: HistogramVec,
    /// Bytes of webhook bodies holding the ingress's byte budget, read at scrape time.
    pub ingress_pending_bytes: IntGauge,
    pub inbound: super::InboundMetrics,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            webhook_total: IntCounterVec::new(
                Opts::new(
                    "askproai_webhook_total",
                    "webhooks received, by provider and outcome",
                ),
                &["provider", "outcome"],
            )?,
            ingress_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "askproai_ingress_duration_seconds",
                    "time from request to answer, including durable append",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["provider"],
            )?,
            ingress_pending_bytes: IntGauge::new(
                "askproai_ingress_pending_bytes",
                "bytes of webhook bodies in flight (reserved from ingress.max_pending_bytes)",
            )?,
            inbound: super::InboundMetrics::register(registry)?,
        };
        registry.register(Box::new(m.webhook_total.clone()))?;
        registry.register(Box::new(m.ingress_pending_bytes.clone()))?;
        registry.register(Box::new(m.ingress_seconds.clone()))?;
        Ok(m)
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    if let Some(ingress) = &app.ingress {
        let pending = i64::try_from(ingress.pending_bytes()).unwrap_or(i64::MAX);
        app.metrics.ingress_pending_bytes.set(pending);
    }
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&app.registry.gather(), &mut buffer) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        buffer,
    )
        .into_response()
}

/// `GET /health`: 200 when every component is healthy, else 503.
pub async fn health(State(app): State<Arc<AppState>>) -> Response {
    let store = check(app.store.check().await.map_err(|e| e.to_string()));
    let log = check(app.log.check().await.map_err(|e| e.to_string()));
    let ingress = match &app.ingress {
        Some(_) => json!({"status": "healthy"}),
        None => json!({"status": "disabled", "reason": "this process runs no ingress"}),
    };
    let consumers = consumers(&app).await;
    let calcom = breakers(&app);
    let disk = disk(&app);
    let healthy = [&store, &log, &ingress, &consumers]
        .iter()
        .all(|c| c["status"] != "unhealthy");
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": app.clock.now(),
        "checks": {
            "store": store, "log": log, "ingress": ingress, "consumers": consumers,
            "calcom": calcom, "disk": disk,
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Each tenant's Cal.com circuit breaker. An open breaker degrades that tenant (its
/// bookings wait as `pending_sync`); it does not make this process unhealthy. Breakers live
/// in memory and start closed, so after a restart they say nothing about Cal.com until they
/// have seen an outcome: `relearning_since` (the process start) is present while no breaker
/// has, or some still have not (`relearning` names those tenants).
fn breakers(app: &AppState) -> Value {
    let Some(booker) = &app.booker else {
        return json!({"status": "disabled", "reason": "this process runs no workers"});
    };
    let states = booker.breaker_states();
    let open: Vec<String> = states
        .iter()
        .filter(|(_, s)| *s != BreakerState::Closed)
        .map(|(c, _)| c.to_string())
        .collect();
    let tenants: serde_json::Map<String, Value> = states
        .iter()
        .map(|(c, s)| (c.to_string(), json!(s.as_str())))
        .collect();
    let relearning = booker.relearning_breakers();
    let mut report = json!({
        "status": if open.is_empty() { "healthy" } else { "degraded" },
        "breakers": tenants,
        "not_closed": open,
        "relearning": relearning,
    });
    if states.is_empty() || !relearning.is_empty() {
        report["relearning_since"] = json!(app.started_at);
    }
    report
}

/// The embedded log's disk reserve. Released means the disk filled up: the log is using the
/// reserve and processing (state writes) waits. That degrades the service but is no reason
/// to stop sending webhooks, so it does not make `/health` fail; `checks.log` does that when
/// the log itself cannot write.
fn disk(app: &AppState) -> Value {
    let Some(reserve) = crate::app::disk_reserve(&app.config) else {
        return json!({"status": "disabled", "reason": "no disk reserve (data.disk_reserve_bytes = 0, or the log is not embedded)"});
    };
    match reserve.is_held() {
        true => json!({"status": "healthy", "reserve": "held", "reserve_bytes": reserve.bytes()}),
        false => json!({
            "status": "degraded",
            "reserve": "released",
            "reserve_bytes": reserve.bytes(),
            "state_writes": "paused",
            "reason": "disk full: the log uses the reserve; processing waits until the reserve fits again (free space in the data dir)",
        }),
    }
}

fn check(result: Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({"status": "healthy"}),
        Err(error) => json!({"status": "unhealthy", "error": error}),
    }
}

async fn consumers(app: &AppState) -> Value {
    let Some(group) = &app.group else {
        return json!({"status": "disabled", "reason": "this process runs no workers"});
    };
    let result = group
        .call(GroupMsg::Status, Some(Duration::from_secs(3)))
        .await;
    match result {
        Ok(ractor::rpc::CallResult::Success(status)) => {
            let expected = status.assigned.len();
            let live = status.partitions.len();
            let healthy = live == expected;
            json!({
                "status": if healthy { "healthy" } else { "unhealthy" },
                "partitions_expected": expected,
                "assigned": status.assigned,
                "partitions_live": live,
                "consumer_restarts": status.consumer_restarts,
                "partitions": status.partitions,
            })
        }
        _ => json!({"status": "unhealthy", "error": "worker group did not answer"}),
    }
}
