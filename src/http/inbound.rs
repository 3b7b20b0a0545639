//! `POST /webhooks/retell/inbound`: Retell's `call_inbound`, answered synchronously with the
//! branch's agent and dynamic variables while the caller hears ringing.
//!
//! Order: body limit (router layer, 413) → parse just `call_inbound.to_number` → resolve it
//! (cached, [`crate::routing`]) → verify the signature against the resolved tenant's Retell
//! secrets plus the global one, or the global one alone for unknown numbers (401, nothing
//! stored) → answer. The tenant must be known before verifying, since it decides which
//! secrets apply; a request without a usable number is checked against the global secret
//! when one is configured, then refused with 400.
//!
//! Routing is a read: a known number appends nothing to the log, since the call itself
//! arrives later as `call_started` / `call_ended` / `call_analyzed`. An unknown number is
//! appended as `unrouted` to the quarantine tenant, like the account-level route does, and
//! only answered once that append is durable (503 otherwise), so operators see numbers
//! pointed at us that no branch owns. Its answer `{"call_inbound":{}}` lets Retell use the
//! number's default agent.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use askpro_actors::record::{Disposition, LogRecord, Provider, RecordMeta};
use askpro_actors::{CompanyId, EventId};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::routing::{InboundRoute, ResolveError};
use crate::signature::{self, SecretRef};

/// The answer for an unknown number: no override, Retell uses the number's default agent.
const NO_OVERRIDE: &[u8] = br#"{"call_inbound":{}}"#;
const EVENT: &str = "call_inbound";

/// How a `call_inbound` request ended, the `outcome` label of `askproai_inbound_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Routed,
    Unrouted,
    Unauthorized,
    BadRequest,
    TooLarge,
    Unavailable,
    Other,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Routed,
        Outcome::Unrouted,
        Outcome::Unauthorized,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::Unavailable,
        Outcome::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::Unrouted => "unrouted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::Unavailable => "unavailable",
            Outcome::Other => "other",
        }
    }

    fn of_error(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Outcome::Unauthorized,
            StatusCode::BAD_REQUEST => Outcome::BadRequest,
            StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
            StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
            _ => Outcome::Other,
        }
    }
}

/// Metrics of `call_inbound`. Label children are resolved once, so the hot path does no
/// label hashing.
#[derive(Clone)]
pub struct InboundMetrics {
    outcomes: Vec<IntCounter>,
    resolve_hit: Histogram,
    resolve_miss: Histogram,
    duration: Histogram,
}

impl InboundMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "askproai_inbound_total",
                "call_inbound requests, by outcome",
            ),
            &["outcome"],
        )?;
        let resolve = HistogramVec::new(
            HistogramOpts::new(
                "askproai_inbound_resolve_seconds",
                "time to resolve a call_inbound number, by cache hit or miss",
            )
            .buckets(vec![
                1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0,
            ]),
            &["cache"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "askproai_inbound_duration_seconds",
                "time from call_inbound request to answer",
            )
            .buckets(vec![
                1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.05, 0.25, 1.0, 5.0,
            ]),
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(resolve.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            outcomes: Outcome::ALL
                .iter()
                .map(|o| total.with_label_values(&[o.as_str()]))
                .collect(),
            resolve_hit: resolve.with_label_values(&["hit"]),
            resolve_miss: resolve.with_label_values(&["miss"]),
            duration,
        })
    }

    fn count(&self, outcome: Outcome) {
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
    }
}

/// The part of the request we read; everything else is ignored.
#[derive(Deserialize)]
struct InboundRequest<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    call_inbound: Option<InboundCall>,
}

#[derive(Deserialize)]
struct InboundCall {
    // A `Value` so a wrong type gets a message naming the field, not serde's position.
    #[serde(default)]
    to_number: Option<Value>,
}

/// `POST /webhooks/retell/inbound`.
pub async fn retell_inbound(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = inbound(&app, &headers, body).await;
    let metrics = &app.metrics.inbound;
    let (outcome, response) = match result {
        Ok(answered) => answered,
        Err(error) => {
            if error.status.is_server_error() {
                tracing::warn!(status = error.status.as_u16(), error = %error.message, "call_inbound not answered");
            } else {
                tracing::debug!(status = error.status.as_u16(), error = %error.message, "call_inbound refused");
            }
            (Outcome::of_error(error.status), error.into_response())
        }
    };
    metrics.count(outcome);
    metrics.duration.observe(started.elapsed().as_secs_f64());
    response
}

async fn inbound(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Outcome, Response), ApiError> {
    let body = limited(app, body)?;
    let number = match to_number(&body) {
        Ok(number) => number,
        Err(problem) => return Err(bad_request(app, headers, &body, problem)),
    };
    let resolving = Instant::now();
    let resolved = app.inbound.resolve(&number).await;
    let resolve_seconds = resolving.elapsed().as_secs_f64();
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(ResolveError::InvalidNumber(e)) => {
            let problem = format!("call_inbound.to_number is not a phone number: {e}");
            return Err(bad_request(app, headers, &body, problem));
        }
        Err(ResolveError::Store(e)) => {
            return Err(ApiError::unavailable(format!("routing lookup failed: {e}")))
        }
    };
    let metrics = &app.metrics.inbound;
    match resolved.cached {
        true => metrics.resolve_hit.observe(resolve_seconds),
        false => metrics.resolve_miss.observe(resolve_seconds),
    }
    match resolved.route {
        Some(route) => routed(app, headers, &body, &route).await,
        None => unrouted(app, headers, body, &number).await,
    }
}

/// A known number: verify with the tenant's secrets and the global one, answer the route.
async fn routed(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    route: &InboundRoute,
) -> Result<(Outcome, Response), ApiError> {
    let auth = app
        .tenants
        .get(route.company_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("tenant lookup failed: {e}")))?;
    let mut secrets: Vec<SecretRef<'_>> = auth
        .iter()
        .flat_map(|a| a.retell.iter())
        .map(|s| SecretRef {
            id: &s.id,
            value: &s.value,
        })
        .collect();
    secrets.extend(app.global_retell());
    if secrets.is_empty() {
        return Err(no_secret(format!(
            "company {} has no Retell secret and no global Retell secret is configured",
            route.company_id
        )));
    }
    verify(app, headers, body, &secrets)?;
    Ok((Outcome::Routed, json_ok(route.answer())))
}

/// An unknown number: verify with the global secret, append `unrouted`, answer no override.
async fn unrouted(
    app: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    number: &str,
) -> Result<(Outcome, Response), ApiError> {
    let global = app.global_retell();
    if global.is_empty() {
        return Err(no_secret(format!(
            "no branch owns {number}, and a call_inbound for an unknown number can only be \
             verified with retell.global_secret (ASKPRO_RETELL__GLOBAL_SECRET)"
        )));
    }
    let secret_id = verify(app, headers, &body, &global)?;
    let event_id = EventId::new();
    let correlation_id = correlation_id(headers);
    let reason = format!("no branch owns {number}");
    let meta = RecordMeta {
        event_id,
        provider: Provider::Retell,
        company_id: CompanyId::UNROUTED,
        event_type: EVENT.to_owned(),
        // No call id exists yet; Retell's retries resend the same body, so its hash is stable.
        dedup_key: askpro_actors::dedup::body_key(Provider::Retell, &body),
        received_at: app.clock.now(),
        correlation_id,
        secret_id,
        disposition: Disposition::Unrouted(reason.clone()),
        retry: None,
    };
    let ingress = app
        .ingress
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this process runs no ingress (askpro worker)"))?;
    let span =
        tracing::info_span!("call_inbound", event_id = %event_id, correlation_id = %correlation_id);
    ingress
        .append(LogRecord { meta, value: body })
        .instrument(span)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::warn!(event_id = %event_id, to_number = number, reason = %reason, "call_inbound unrouted; retell uses its default agent");
    Ok((Outcome::Unrouted, json_ok(Bytes::from_static(NO_OVERRIDE))))
}

/// `call_inbound.to_number`, or what is wrong with the body.
fn to_number(body: &[u8]) -> Result<String, String> {
    let request: InboundRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("body is not a call_inbound request: {e}"))?;
    if let Some(event) = request.event.as_deref().filter(|e| *e != EVENT) {
        return Err(format!(
            "event is {event:?}, expected \"call_inbound\" (call events go to \
             /webhooks/retell/{{company_id}})"
        ));
    }
    let missing = || "call_inbound.to_number is missing".to_owned();
    match request.call_inbound.and_then(|c| c.to_number) {
        None | Some(Value::Null) => Err(missing()),
        Some(Value::String(s)) if s.trim().is_empty() => Err(missing()),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "call_inbound.to_number must be a string in E.164, got {other}"
        )),
    }
}

/// A 400, unless the global secret is configured and the signature does not match it: what
/// we can verify, we verify before saying anything about the body.
fn bad_request(app: &AppState, headers: &HeaderMap, body: &[u8], problem: String) -> ApiError {
    let global = app.global_retell();
    if !global.is_empty() {
        if let Err(unauthorized) = verify(app, headers, body, &global) {
            return unauthorized;
        }
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_call_inbound", problem)
}

fn verify(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretRef<'_>],
) -> Result<String, ApiError> {
    let header = super::webhooks::signature_header(headers, signature::RETELL_HEADER)?;
    let now_ms = app.clock.now().timestamp_millis();
    let tolerance_ms = app.config.ingress.signature_tolerance_secs as i64 * 1000;
    signature::verify_retell(header, body, secrets, now_ms, tolerance_ms)
        .map_err(|e| super::webhooks::unauthorized(e.to_string()))
}

fn no_secret(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "no_secret", message)
}

fn limited(app: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "body exceeds the limit of {} bytes",
                app.config.server.body_limit_bytes
            ),
        ),
        status => ApiError::new(status, "bad_body", rejection.body_text()),
    })
}

fn json_ok(body: Bytes) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn correlation_id(headers: &HeaderMap) -> Uuid {
    ["x-correlation-id", "x-request-id"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find_map(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_to_number_from_the_fixture() {
        let fixture = br#"{"event":"call_inbound","call_inbound":{"call_id":"call_inbound_123",
            "from_number":"+491111111111","to_number":"+491234567890","agent_id":"agent_test_123"}}"#;
        assert_eq!(to_number(fixture).unwrap(), "+491234567890");
    }

    #[test]
    fn problems_name_the_field() {
        let cases: [&[u8]; 5] = [
            br#"{"event":"call_inbound","call_inbound":{}}"#,
            br#"{"event":"call_inbound"}"#,
            br#"{"event":"call_inbound","call_inbound":{"to_number":null}}"#,
            br#"{"event":"call_inbound","call_inbound":{"to_number":" "}}"#,
            br#"{"event":"call_inbound","call_inbound":{"to_number":491234}}"#,
        ];
        for body in cases {
            let problem = to_number(body).unwrap_err();
            assert!(problem.contains("call_inbound.to_number"), "{problem}");
        }
        let wrong_event = to_number(br#"{"event":"call_ended","call":{}}"#).unwrap_err();
        assert!(wrong_event.contains("call_ended"), "{wrong_event}");
        assert!(to_number(b"not json")
            .unwrap_err()
            .contains("not a call_inbound"));
    }

    #[test]
    fn every_outcome_has_a_counter() {
        let registry = Registry::new();
        let metrics = InboundMetrics::register(&registry).unwrap();
        assert_eq!(metrics.outcomes.len(), Outcome::ALL.len());
        metrics.count(Outcome::BadRequest);
        assert_eq!(metrics.outcomes[3].get(), 1);
    }
}
