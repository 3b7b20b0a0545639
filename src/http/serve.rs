//! The connection loop: hyper's HTTP/1 server with a header timer and a cap on open
//! connections, drained gracefully when the shutdown token fires.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout never ran and idle or
//! header-trickling connections stayed open for ever; it also accepts without limit, so idle
//! sockets could exhaust the process's open files (which the log and store need too).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;

/// How long to wait before accepting again after the kernel refused to hand over a socket
/// for lack of resources (EMFILE, ENFILE, ENOBUFS): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection settings taken from `[server]`.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub keep_alive: bool,
    pub max_connections: usize,
}

impl ServeSettings {
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            keep_alive: server.keep_alive,
            max_connections: server.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and waits for
/// the open connections: idle ones close at once, busy ones after their current response.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    // hyper starts the header timer whenever a connection waits for a request head: on a
    // fresh connection and between requests on a kept-alive one. It only runs with a timer.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(settings.keep_alive);
    // Taken before accept: connections over the cap wait in the kernel's listen backlog,
    // not in our file table.
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                accept_failed(&error).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Header timeouts, resets and clients that hang up end up here: routine.
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "http connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed accept never stops the server. A peer that hung up before we took its
/// connection is routine; anything else (usually out of file descriptors) is worth a warning
/// and a short pause.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error, pause_ms = ACCEPT_ERROR_PAUSE.as_millis() as u64, "cannot accept a connection; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
