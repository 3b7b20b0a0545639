//! What a webhook request must pass before its body is read: a declared size within the body
//! limit (413 at once), and room in the ingress's byte budget for that body (503).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// Refuses a declared Content-Length over `server.body_limit_bytes` before reading a byte
/// (otherwise the refusal only comes once the limit has been read, or as a 408 when the
/// client sends headers only), then reserves the body's size in the ingress's byte budget
/// and holds it until the answer is ready. A body without a declared length (chunked)
/// reserves the full limit: it may grow that far.
pub async fn admit_body(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = app.config.server.body_limit_bytes;
    let declared = declared_length(&request);
    if let Some(length) = declared.filter(|&length| length > limit as u64) {
        return too_large(length, limit).into_response();
    }
    // Within the limit, so it fits in usize.
    let wanted = declared.map_or(limit, |length| length as usize);
    let reservation = match app.ingress.as_ref().map(|ingress| ingress.reserve(wanted)) {
        Some(Ok(reservation)) => Some(reservation),
        Some(Err(error)) => return ApiError::unavailable(error.to_string()).into_response(),
        None => None,
    };
    let response = next.run(request).await;
    drop(reservation);
    response
}

/// The Content-Length the client declared; hyper has already refused malformed ones.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large(length: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body of {length} bytes exceeds the limit of {limit} bytes"),
    )
}
