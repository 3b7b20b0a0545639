//! Webhook endpoints: limit → authenticate → inspect → append durably → answer.
//!
//! The order matters: the body limit is enforced before any HMAC work (413), nothing is
//! stored for an unauthenticated request (401), and an authentic but unusable payload is
//! still stored (status `rejected`, answered 400) so it is never lost silently. A 2xx is only
//! sent once the record is durable in the log.

use std::sync::Arc;
use std::time::Instant;

use askpro_actors::domain::Secret;
use askpro_actors::record::{Disposition, LogRecord, Provider, RecordMeta};
use askpro_actors::{CompanyId, EventId};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::payload::{self, PayloadError};
use crate::signature::{self, SecretRef};

/// Where an authentic webhook goes, decided before it is appended.
struct Admission {
    provider: Provider,
    company_id: CompanyId,
    secret_id: String,
    event_type: String,
    dedup_key: String,
    disposition: Disposition,
}

/// `POST /webhooks/retell/{company_id}`: one tenant's agents.
pub async fn retell_for_company(
    State(app): State<Arc<AppState>>,
    Path(company): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = retell_company_inner(&app, &company, &headers, body).await;
    finish(&app, Provider::Retell, started, result)
}

async fn retell_company_inner(
    app: &AppState,
    company: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = limited(body, app)?;
    let auth = app.tenant(company).await?;
    let own = secret_refs(&auth.retell);
    let secrets = if own.is_empty() {
        app.global_retell()
    } else {
        own
    };
    if secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_secret",
            format!(
                "company {company} has no Retell secret and no global Retell secret is configured"
            ),
        ));
    }
    let secret_id = verify_retell(app, headers, &body, &secrets)?;
    let company_id = auth.company.id;
    let admission = match payload::inspect_retell(&body) {
        Ok(event) => Admission {
            provider: Provider::Retell,
            company_id,
            secret_id,
            dedup_key: event.dedup_key(),
            event_type: event.event,
            disposition: Disposition::Accept,
        },
        Err(error) => rejected(Provider::Retell, company_id, secret_id, &body, &error),
    };
    admit(app, admission, body, headers).await
}

/// `POST /webhooks/retell`: the account-level URL. The tenant is found through the phone
/// index: `to_number` of inbound calls, `from_number` of outbound ones.
pub async fn retell_account(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = retell_account_inner(&app, &headers, body).await;
    finish(&app, Provider::Retell, started, result)
}

async fn retell_account_inner(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = limited(body, app)?;
    let secrets = app.global_retell();
    if secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_secret",
            "the account-level URL needs retell.global_secret (ASKPRO_RETELL__GLOBAL_SECRET)",
        ));
    }
    let secret_id = verify_retell(app, headers, &body, &secrets)?;
    let event = match payload::inspect_retell(&body) {
        Ok(event) => event,
        Err(error) => {
            let admission = rejected(
                Provider::Retell,
                CompanyId::UNROUTED,
                secret_id,
                &body,
                &error,
            );
            return admit(app, admission, body, headers).await;
        }
    };
    let ours = match event.direction.as_deref() {
        Some("outbound") => event.from_number.as_deref(),
        _ => event.to_number.as_deref(),
    };
    let (company_id, disposition) = route(app, ours).await?;
    let admission = Admission {
        provider: Provider::Retell,
        company_id,
        secret_id,
        dedup_key: event.dedup_key(),
        event_type: event.event,
        disposition,
    };
    admit(app, admission, body, headers).await
}

/// Resolves our side of a call to its tenant, or to the quarantine tenant as `unrouted`.
async fn route(app: &AppState, number: Option<&str>) -> Result<(CompanyId, Disposition), ApiError> {
    let Some(raw) = number else {
        let reason = "the call names no number of ours to route by".to_owned();
        return Ok((CompanyId::UNROUTED, Disposition::Unrouted(reason)));
    };
    let e164 = match askpro_actors::phone::normalize(raw, &app.config.phone.default_region) {
        Ok(e164) => e164,
        Err(e) => return Ok((CompanyId::UNROUTED, Disposition::Unrouted(e.to_string()))),
    };
    let found = app
        .store
        .resolve_phone(&e164)
        .await
        .map_err(|e| ApiError::unavailable(format!("phone index unavailable: {e}")))?;
    Ok(match found {
        Some(route) => (route.company_id, Disposition::Accept),
        None => (
            CompanyId::UNROUTED,
            Disposition::Unrouted(format!("no branch owns {e164}")),
        ),
    })
}

/// `POST /webhooks/calcom/{company_id}`.
pub async fn calcom_for_company(
    State(app): State<Arc<AppState>>,
    Path(company): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = calcom_inner(&app, &company, &headers, body).await;
    finish(&app, Provider::Calcom, started, result)
}

async fn calcom_inner(
    app: &AppState,
    company: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = limited(body, app)?;
    let auth = app.tenant(company).await?;
    let secrets = secret_refs(&auth.calcom);
    let header = signature_header(headers, signature::CALCOM_HEADER)?;
    let secret_id =
        signature::verify_calcom(header, &body, &secrets, auth.company.allow_unsigned_calcom)
            .map_err(|e| unauthorized(e.to_string()))?
            .unwrap_or_else(|| "unsigned".to_owned());
    let company_id = auth.company.id;
    let admission = match payload::inspect_calcom(&body) {
        Ok(event) => Admission {
            provider: Provider::Calcom,
            company_id,
            secret_id,
            dedup_key: event.dedup_key(&body),
            event_type: event.trigger_event,
            disposition: Disposition::Accept,
        },
        Err(error) => rejected(Provider::Calcom, company_id, secret_id, &body, &error),
    };
    admit(app, admission, body, headers).await
}

fn secret_refs(secrets: &[Secret]) -> Vec<SecretRef<'_>> {
    secrets
        .iter()
        .map(|s| SecretRef {
            id: &s.id,
            value: &s.value,
        })
        .collect()
}

fn limited(body: Result<Bytes, BytesRejection>, app: &AppState) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "body exceeds the limit of {} bytes",
                    app.config.server.body_limit_bytes
                ),
            )
        } else {
            ApiError::new(rejection.status(), "bad_body", rejection.body_text())
        }
    })
}

fn verify_retell(
    app: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretRef<'_>],
) -> Result<String, ApiError> {
    let header = signature_header(headers, signature::RETELL_HEADER)?;
    let now_ms = app.clock.now().timestamp_millis();
    let tolerance_ms = app.config.ingress.signature_tolerance_secs as i64 * 1000;
    signature::verify_retell(header, body, secrets, now_ms, tolerance_ms)
        .map_err(|e| unauthorized(e.to_string()))
}

/// A signature header's text; one that is present but not ASCII is refused as such (401), not
/// reported as missing.
pub(super) fn signature_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    let raw = headers.get(name).map(|value| value.as_bytes());
    signature::header_text(name, raw).map_err(|e| unauthorized(e.to_string()))
}

pub(super) fn unauthorized(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

fn rejected(
    provider: Provider,
    company_id: CompanyId,
    secret_id: String,
    body: &[u8],
    error: &PayloadError,
) -> Admission {
    Admission {
        provider,
        company_id,
        secret_id,
        event_type: "invalid".into(),
        dedup_key: askpro_actors::dedup::body_key(provider, body),
        disposition: Disposition::Rejected(error.to_string()),
    }
}

/// Appends the record and answers only once it is durable.
async fn admit(
    app: &AppState,
    admission: Admission,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let correlation_id = correlation_id(headers);
    if let Some(duplicate) = known_duplicate(app, &admission, correlation_id).await {
        return Ok(duplicate);
    }
    let event_id = EventId::new();
    let span = tracing::info_span!(
        "webhook",
        provider = %admission.provider,
        company_id = %admission.company_id,
        event_id = %event_id,
        correlation_id = %correlation_id,
    );
    let meta = RecordMeta {
        event_id,
        provider: admission.provider,
        company_id: admission.company_id,
        event_type: admission.event_type,
        dedup_key: admission.dedup_key,
        received_at: app.clock.now(),
        correlation_id,
        secret_id: admission.secret_id,
        disposition: admission.disposition,
        retry: None,
    };
    let disposition = meta.disposition.clone();
    let ingress = app
        .ingress
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this process runs no ingress (askpro worker)"))?;
    ingress
        .append(LogRecord { meta, value: body })
        .instrument(span)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let ids = json!({"event_id": event_id, "correlation_id": correlation_id});
    Ok(match disposition {
        Disposition::Accept => accepted(ids, "accepted"),
        Disposition::Unrouted(reason) => {
            tracing::warn!(event_id = %event_id, reason = %reason, "webhook unrouted");
            accepted(ids, &format!("unrouted: {reason}"))
        }
        Disposition::Rejected(reason) => {
            tracing::warn!(event_id = %event_id, reason = %reason, "authentic webhook rejected");
            let body = json!({
                "error": {"code": "invalid_payload", "message": reason},
                "event_id": event_id,
                "correlation_id": correlation_id,
                "stored": true,
            });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    })
}

fn accepted(mut ids: serde_json::Value, outcome: &str) -> Response {
    ids["duplicate"] = json!(false);
    ids["outcome"] = json!(outcome);
    (StatusCode::ACCEPTED, Json(ids)).into_response()
}

/// The fast path for redeliveries whose key is already completed. Only an optimisation:
/// the pipeline deduplicates regardless, so a store hiccup here just skips the check.
async fn known_duplicate(
    app: &AppState,
    admission: &Admission,
    correlation_id: Uuid,
) -> Option<Response> {
    if !app.config.ingress.dedup_check || admission.disposition != Disposition::Accept {
        return None;
    }
    let entry = app
        .store
        .dedup_entry(admission.company_id, &admission.dedup_key, app.clock.now())
        .await
        .ok()??;
    entry.completed.then(|| {
        let body = json!({
            "duplicate": true,
            "event_id": entry.holder,
            "correlation_id": correlation_id,
        });
        (StatusCode::OK, Json(body)).into_response()
    })
}

fn correlation_id(headers: &HeaderMap) -> Uuid {
    ["x-correlation-id", "x-request-id"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find_map(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7)
}

/// Records the outcome in metrics and turns errors into responses.
fn finish(
    app: &AppState,
    provider: Provider,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let response = result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            tracing::warn!(provider = %provider, status = e.status.as_u16(), error = %e.message, "webhook not accepted");
        } else {
            tracing::debug!(provider = %provider, status = e.status.as_u16(), error = %e.message, "webhook refused");
        }
        e.into_response()
    });
    let outcome = match response.status() {
        StatusCode::ACCEPTED => "accepted",
        StatusCode::OK => "duplicate",
        StatusCode::BAD_REQUEST => "rejected",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "unknown_company",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "other",
    };
    app.metrics
        .webhook_total
        .with_label_values(&[provider.as_str(), outcome])
        .inc();
    app.metrics
        .ingress_seconds
        .with_label_values(&[provider.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
