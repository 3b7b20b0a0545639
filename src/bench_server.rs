//! A bare HTTP server that answers `200 ok` to any request once it has read the body: the
//! ceiling for plain HTTP on this machine, to compare the ingress against with
//! `askpro loadgen`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::serve::ListenerExt;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// Serves on `listener` until `shutdown` is cancelled, then drains open connections.
///
/// Every method and path gets `200` with body `ok` after the request body was read fully
/// (as the ingress must, so the comparison is fair). Connections use `TCP_NODELAY`.
pub async fn run(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "bench server cannot set tcp_nodelay");
        }
    });
    let router = Router::new().fallback(answer);
    tracing::info!(%addr, "bench server listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await?;
    tracing::info!(%addr, "bench server stopped");
    Ok(())
}

/// Reads the whole body (the extractor does), then answers at once.
async fn answer(body: Bytes) -> (StatusCode, &'static str) {
    drop(body);
    (StatusCode::OK, "ok")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn start() -> (
        String,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, shutdown.clone()));
        (url, shutdown, task)
    }

    #[tokio::test]
    async fn answers_any_method_and_path_with_ok() {
        let (url, shutdown, task) = start().await;
        let client = reqwest::Client::new();
        let post = client
            .post(format!("{url}/webhooks/retell/anything"))
            .body(vec![b'x'; 64 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 200);
        assert_eq!(post.text().await.unwrap(), "ok");
        let get = client.get(format!("{url}/")).send().await.unwrap();
        assert_eq!(get.status(), 200);
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stops_on_shutdown_with_idle_keep_alive_connections() {
        let (url, shutdown, task) = start().await;
        let client = reqwest::Client::new();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops while the client still holds an idle connection")
            .unwrap()
            .unwrap();
        drop(client);
    }
}
