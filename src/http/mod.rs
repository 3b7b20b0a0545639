//! The HTTP surface: webhook ingress, health and metrics.

mod admission;
mod error;
mod inbound;
mod ops;
mod serve;
mod tenants;
mod tools;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use askpro_actors::group::GroupMsg;
use askpro_actors::ingress::IngressHandle;
use askpro_actors::{Clock, CompanyId, EventLog, StateStore};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus::Registry;
use ractor::ActorRef;

pub use error::ApiError;
pub use inbound::InboundMetrics;
pub use ops::HttpMetrics;
pub use serve::{serve, ServeSettings};
use tenants::{TenantAuth, TenantCache};

use crate::app::Backends;
use crate::config::Config;
use crate::routing::{InboundResolver, ResolverSettings};
use crate::signature::SecretRef;

/// Shared state of every handler.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub log: Arc<dyn EventLog>,
    pub clock: Arc<dyn Clock>,
    /// The ingress, when this process accepts webhooks.
    pub ingress: Option<IngressHandle>,
    /// The worker group, when this process runs workers (for `/health`).
    pub group: Option<ActorRef<GroupMsg>>,
    pub registry: Registry,
    pub metrics: HttpMetrics,
    /// `call_inbound` routing cache; whoever builds the state spawns its version watch.
    pub inbound: Arc<InboundResolver>,
    /// The booker, when this process runs workers (breaker states for `/health`).
    pub booker: Option<Arc<askpro_actors::booking::Booker>>,
    /// When this process started: in-memory state such as the breakers is known since then.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Live Retell tool calls; `None` answers them 503.
    pub tools: Option<Arc<askpro_actors::tools::ToolService>>,
    tenants: TenantCache,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        backends: Backends,
        clock: Arc<dyn Clock>,
        ingress: Option<IngressHandle>,
        group: Option<ActorRef<GroupMsg>>,
        registry: Registry,
        metrics: HttpMetrics,
    ) -> Self {
        let ttl = Duration::from_millis(config.ingress.tenant_cache_ttl_ms);
        Self {
            tenants: TenantCache::new(Arc::clone(&backends.store), ttl),
            booker: None,
            tools: None,
            started_at: clock.now(),
            inbound: Arc::new(InboundResolver::new(
                Arc::clone(&backends.store),
                ResolverSettings::from_config(&config),
            )),
            config,
            store: backends.store,
            log: backends.log,
            clock,
            ingress,
            group,
            registry,
            metrics,
        }
    }

    /// The tenant named in a URL, or 404.
    async fn tenant(&self, raw: &str) -> Result<Arc<TenantAuth>, ApiError> {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_company",
                format!("unknown company {raw:?}"),
            )
        };
        let id: CompanyId = raw.parse().map_err(|_| not_found())?;
        if id == CompanyId::UNROUTED {
            return Err(not_found());
        }
        self.tenants
            .get(id)
            .await
            .map_err(|e| ApiError::unavailable(format!("tenant lookup failed: {e}")))?
            .ok_or_else(not_found)
    }

    /// The account-level Retell secret, if configured.
    fn global_retell(&self) -> Vec<SecretRef<'_>> {
        let value = self.config.retell.global_secret.as_str();
        if value.is_empty() {
            return Vec::new();
        }
        vec![SecretRef {
            id: "global",
            value,
        }]
    }
}

/// Answers 408 when a request, body included, is not done in time, so slow clients cannot
/// hold connections (and shutdown) open.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("request not completed within {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// The router: webhooks only where an ingress runs; health and metrics everywhere. The body
/// limit and the byte budget apply before any handler reads the body. Every error answer,
/// unknown paths and axum's own rejections included, is our JSON.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.server.body_limit_bytes;
    let ops = Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics));
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let routes = match state.ingress {
        None => ops,
        Some(_) => Router::new()
            .route("/webhooks/retell", post(webhooks::retell_account))
            // A static segment wins over the `{company_id}` capture below (matchit), whatever
            // the registration order; tests/it/inbound.rs checks both routes.
            .route("/webhooks/retell/inbound", post(inbound::retell_inbound))
            .route(
                "/webhooks/retell/{company_id}",
                post(webhooks::retell_for_company),
            )
            .route(
                "/webhooks/retell/{company_id}/functions/{tool}",
                post(tools::retell_tool),
            )
            .route(
                "/webhooks/calcom/{company_id}",
                post(webhooks::calcom_for_company),
            )
            .layer(DefaultBodyLimit::max(limit))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                admission::admit_body,
            ))
            .merge(ops),
    };
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}
