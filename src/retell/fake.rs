//! A fake Retell API for tests and demos: LLMs, agents and phone numbers kept in memory,
//! behind `Authorization: Bearer <key>`.
//!
//! It is strict where a real mistake would otherwise go unnoticed until production: every
//! body refuses unknown fields (400 naming the field), the phone fields Retell removed on
//! 2026-03-31 (`inbound_agent_id`, `outbound_agent_id`) are refused with what to use instead,
//! `inbound_agents` weights must sum to 1 and name existing agents, `create-agent` needs
//! `response_engine {type: "retell-llm", llm_id}` of an existing LLM and a `voice_id`, and the
//! removed built-in Cal.com tools are refused. `POST /create-phone-number` takes the number
//! itself (the real one buys a number by area code).

mod handlers;
mod state;
#[cfg(test)]
mod tests;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::state::Shared;
pub use self::state::{FakeAgent, FakeLlm, FakePhone, Refusal};

/// How a fake starts.
#[derive(Clone, Debug, Default)]
pub struct FakeRetellConfig {
    /// The only key accepted; `None` accepts any non-empty key.
    pub api_key: Option<String>,
    /// Numbers the account owns from the start (E.164).
    pub phone_numbers: Vec<String>,
}

/// An in-process fake on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeRetell {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeRetell {
    pub async fn start(config: FakeRetellConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared::new(config.api_key, &config.phone_numbers));
        let task = tokio::spawn(serve(listener, shared.clone(), shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The base URL a client is pointed at (endpoints hang directly off it).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn llms(&self) -> Vec<FakeLlm> {
        self.shared.snapshot(|s| s.llms.values().cloned().collect())
    }

    pub fn agents(&self) -> Vec<FakeAgent> {
        self.shared
            .snapshot(|s| s.agents.values().cloned().collect())
    }

    pub fn phone(&self, number: &str) -> Option<FakePhone> {
        self.shared.snapshot(|s| s.phones.get(number).cloned())
    }

    /// Accepted creates, updates and deletes so far.
    pub fn writes(&self) -> u64 {
        self.shared.snapshot(|s| s.writes)
    }

    /// Stops the server and waits for it.
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

impl Drop for FakeRetell {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the fake on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: FakeRetellConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(config.api_key, &config.phone_numbers));
    serve(listener, shared, shutdown).await
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "fake retell listening");
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await?;
    tracing::info!(%addr, "fake retell stopped");
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    use handlers as h;
    Router::new()
        .route("/create-retell-llm", post(h::create_llm))
        .route("/update-retell-llm/{id}", patch(h::update_llm))
        .route("/get-retell-llm/{id}", get(h::get_llm))
        .route("/list-retell-llms", get(h::list_llms))
        .route("/delete-retell-llm/{id}", delete(h::delete_llm))
        .route("/create-agent", post(h::create_agent))
        .route("/update-agent/{id}", patch(h::update_agent))
        .route("/get-agent/{id}", get(h::get_agent))
        .route("/list-agents", get(h::list_agents))
        .route("/delete-agent/{id}", delete(h::delete_agent))
        .route("/create-phone-number", post(h::create_phone))
        .route("/update-phone-number/{number}", patch(h::update_phone))
        .route("/get-phone-number/{number}", get(h::get_phone))
        .route("/list-phone-numbers", get(h::list_phones))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), auth))
        .fallback(|| async {
            Refusal {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
            }
        })
        .with_state(shared)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

async fn auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let sent = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty());
    let accepted = match (sent, shared.api_key.as_deref()) {
        (Some(key), Some(expected)) => key == expected,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !accepted {
        return Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong `Authorization: Bearer <api key>`".into(),
        }
        .into_response();
    }
    next.run(request).await
}
