//! A fake Cal.com speaking the same API v2 subset as [`super::CalcomClient`], with fault
//! injection, for tests, demos and load runs.
//!
//! Like the real service it wants `Authorization: Bearer ..` (401) and refuses a second
//! accepted booking for one host at one start (409; the event type stands in for the host).
//! Unlike it, it refuses a missing or wrong `cal-api-version` (400) instead of silently
//! switching contracts, so a client bug shows up here rather than in production.
//!
//! Faults (set at start or at run time through `POST /_fake/faults`) apply to `/v2` requests
//! in this order: auth, rate limit (429 with `Retry-After`), latency, `fail_next`, `error_rate`
//! (both 500 without acting), version check, then the endpoint. `hang_after_commit` makes a
//! create commit the booking and then stall, as a response lost after Cal.com acted.

mod handlers;
mod slots;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::handlers::FakeError;
pub use self::slots::OpeningHours;
use self::state::Shared;
pub use self::state::{FakeAttendee, FakeBooking, FakeHost, FakeReservation, FakeStats};
use super::{API_VERSION_HEADER, BOOKINGS_API_VERSION, SLOTS_API_VERSION};

/// Cal.com's default: 120 requests a minute per API key.
pub const DEFAULT_RATE_LIMIT_PER_MIN: u32 = 120;

/// Faults in force. Every field has a harmless default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added before answering any `/v2` request.
    pub latency_ms: u64,
    /// Probability (0..=1) that a `/v2` request answers 500 without acting; seeded, so a run
    /// with the same seed and requests fails the same ones.
    pub error_rate: f64,
    /// The next N `/v2` requests answer 500 without acting.
    pub fail_next: u32,
    /// The next N creates commit the booking, then wait `hang_ms` before answering.
    pub hang_after_commit: u32,
    pub hang_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            error_rate: 0.0,
            fail_next: 0,
            hang_after_commit: 0,
            hang_ms: 30_000,
        }
    }
}

/// How a fake starts.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeConfig {
    pub faults: Faults,
    /// Requests a minute per API key; 0 turns the limit off.
    pub rate_limit_per_min: u32,
    /// Seeds `error_rate` draws and booking uids.
    pub seed: u64,
    /// When `GET /v2/slots` offers slots, and how long they are.
    pub hours: OpeningHours,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            faults: Faults::default(),
            rate_limit_per_min: DEFAULT_RATE_LIMIT_PER_MIN,
            seed: 1,
            hours: OpeningHours::default(),
        }
    }
}

/// A run-time change: fields left out stay as they are (`POST /_fake/faults` takes this JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub fail_next: Option<u32>,
    pub hang_after_commit: Option<u32>,
    pub hang_ms: Option<u64>,
    /// Also starts fresh rate-limit windows.
    pub rate_limit_per_min: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("error_rate must be between 0 and 1, got {0}")]
    ErrorRate(String),
}

impl FaultUpdate {
    fn validate(&self) -> Result<(), FaultError> {
        match self.error_rate {
            Some(rate) if !(0.0..=1.0).contains(&rate) => {
                Err(FaultError::ErrorRate(rate.to_string()))
            }
            _ => Ok(()),
        }
    }
}

/// An in-process fake on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeCalcom {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeCalcom {
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config, shutdown.clone()));
        let task = tokio::spawn(serve(listener, shared.clone(), shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What goes into `CalcomConfig::base_url` (no `/v2`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every booking, cancelled ones included, in creation order.
    pub fn bookings(&self) -> Vec<FakeBooking> {
        self.shared.bookings()
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Applies `update` and returns the faults now in force.
    pub fn set_faults(&self, update: FaultUpdate) -> Result<Faults, FaultError> {
        update.validate()?;
        Ok(self.shared.apply(&update))
    }

    pub fn stats(&self) -> FakeStats {
        self.shared.stats()
    }

    /// Every slot hold, expired ones included until the next hold drops them.
    pub fn reservations(&self) -> Vec<FakeReservation> {
        self.shared.reservations()
    }

    /// Forgets bookings, counters and rate-limit windows; faults return to the config's.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops the server and waits for it (hung requests are cut short).
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|err| Err(std::io::Error::other(err))),
            None => Ok(()),
        }
    }
}

impl Drop for FakeCalcom {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the fake on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: FakeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(config, shutdown.clone()));
    serve(listener, shared, shutdown).await
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let router = router(shared);
    tracing::info!(%addr, "fake cal.com listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await?;
    tracing::info!(%addr, "fake cal.com stopped");
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v2/slots", get(slots::slots))
        .route("/v2/slots/reservations", post(slots::reserve))
        .route(
            "/v2/slots/reservations/{uid}",
            axum::routing::delete(slots::release),
        )
        .route(
            "/v2/bookings",
            post(handlers::create_booking).get(handlers::list_bookings),
        )
        .route("/v2/bookings/{uid}", get(handlers::get_booking))
        .route("/v2/bookings/{uid}/cancel", post(handlers::cancel_booking))
        .route(
            "/v2/bookings/{uid}/reschedule",
            post(handlers::reschedule_booking),
        )
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), gate));
    let control = Router::new()
        .route("/_fake/faults", post(set_faults).get(get_faults))
        .route("/_fake/stats", get(get_stats))
        .route("/_fake/reset", post(reset));
    api.merge(control)
        .fallback(|| async {
            FakeError::new(StatusCode::NOT_FOUND, "NotFoundException", "no such route")
        })
        .with_state(shared)
}

/// Everything a `/v2` request passes before its endpoint, and the stats after it.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let endpoint = format!("{} {route}", request.method());
    let mut response = admit_and_run(&shared, &route, request, next).await;
    // Cal.com tags every answer so support can find it; the client logs it on failures.
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()) {
        response.headers_mut().insert("x-request-id", id);
    }
    shared.record(endpoint, response.status().as_u16());
    response
}

async fn admit_and_run(shared: &Shared, route: &str, request: Request, next: Next) -> Response {
    let Some(api_key) = bearer(request.headers()) else {
        return FakeError::new(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "missing or malformed `Authorization: Bearer <api key>` header",
        )
        .into_response();
    };
    let admission = shared.admit(&api_key);
    if admission.limited {
        let mut response = FakeError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlerException",
            "ThrottlerException: Too Many Requests",
        )
        .into_response();
        if let Some(limits) = admission.limits {
            limits.write(response.headers_mut(), true);
        }
        return response;
    }
    if !admission.latency.is_zero() {
        shared.pause(admission.latency).await;
    }
    let mut response = if admission.fail {
        FakeError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            "injected failure (fake cal.com)",
        )
        .into_response()
    } else if let Err(refusal) = check_version(request.headers(), route) {
        refusal.into_response()
    } else {
        next.run(request).await
    };
    if let Some(limits) = admission.limits {
        limits.write(response.headers_mut(), false);
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn check_version(headers: &HeaderMap, route: &str) -> Result<(), FakeError> {
    let expected = if route.starts_with("/v2/slots") {
        SLOTS_API_VERSION
    } else {
        BOOKINGS_API_VERSION
    };
    let sent = headers.get(API_VERSION_HEADER).map(HeaderValue::to_str);
    let message = match sent {
        Some(Ok(version)) if version == expected => return Ok(()),
        Some(Ok(version)) => {
            format!("unsupported {API_VERSION_HEADER} `{version}` for {route}; send `{expected}`")
        }
        Some(Err(_)) => format!("unreadable {API_VERSION_HEADER} header; send `{expected}`"),
        None => format!("missing {API_VERSION_HEADER} header; {route} needs `{expected}`"),
    };
    Err(FakeError::new(
        StatusCode::BAD_REQUEST,
        "BadRequestException",
        message,
    ))
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let update: FaultUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => {
            let message = format!("invalid fault update: {err}");
            return FakeError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
                .into_response();
        }
    };
    if let Err(err) = update.validate() {
        return FakeError::new(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            err.to_string(),
        )
        .into_response();
    }
    let faults = shared.apply(&update);
    tracing::info!(?faults, "fake cal.com faults changed");
    Json(faults).into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults())
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Json<FakeStats> {
    Json(shared.stats())
}

async fn reset(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    shared.reset();
    Json(serde_json::json!({"status": "reset"}))
}
