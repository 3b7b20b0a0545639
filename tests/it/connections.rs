//! The HTTP server's connection bounds over raw TCP: header timeout (fresh, trickling and
//! kept-alive idle connections), the connection cap, 413 on a declared Content-Length, and the
//! ingress's byte budget. Timeouts in these tests are bounds that only a broken server hits,
//! never measurements.

use std::net::SocketAddr;
use std::time::Duration;

use askpro::app::RunOptions;
use askpro::config::Config;
use askpro_actors::CompanyId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Longer than any bound a correct server needs here; a server without the bound hangs.
const BOUND: Duration = Duration::from_secs(10);

/// A server whose header timeout is short and whose request timeout is far beyond `BOUND`,
/// so a 408 can never be mistaken for the behaviour under test.
async fn server_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(
        |config| {
            config.server.header_read_timeout_ms = 300;
            config.server.request_timeout_ms = 60_000;
            tweak(config);
        },
        RunOptions::default(),
    )
    .await
}

/// A parsed HTTP/1.1 response.
struct RawResponse {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one response (headers, then a Content-Length body) within `BOUND`.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    tokio::time::timeout(BOUND, read_response_unbounded(stream))
        .await
        .expect("a response within the bound")
}

async fn read_response_unbounded(stream: &mut TcpStream) -> RawResponse {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
    RawResponse { status, head, body }
}

/// Waits (within `BOUND`) until the server closes the connection, whatever it sent before.
async fn closed_by_server(stream: &mut TcpStream) {
    let closed = async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, closed)
        .await
        .expect("the server closes the connection within the bound");
}

fn get_health(addr: SocketAddr) -> String {
    format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n")
}

/// Headers of a POST that declares `length` body bytes (none of which are sent).
fn post_head(addr: SocketAddr, path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let server = server_with(|_| {}).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut idle).await;
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_header_timeout_once_idle() {
    let server = server_with(|_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(get_health(server.addr).as_bytes())
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(!response.head.contains("connection: close"));
    closed_by_server(&mut stream).await;
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_header_trickle_is_closed() {
    let server = server_with(|_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let head = post_head(server.addr, "/webhooks/retell", 10);
    // One byte every 50 ms: the head would take longer than BOUND to arrive.
    let trickle = async {
        for byte in head.as_bytes().iter().cycle().take(1_000) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let closed = async {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
    };
    let ended = tokio::time::timeout(BOUND, async {
        tokio::select! {
            () = closed => {}
            () = trickle => panic!("the trickle ran to its end on an open connection"),
        }
    })
    .await;
    assert!(ended.is_ok(), "the trickling connection is still open");
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let mut server = server_with(|config| {
        config.server.max_connections = 2;
        config.server.header_read_timeout_ms = 60_000;
    })
    .await;
    // The harness's client keeps its health-check connection pooled: let it go.
    server.client = reqwest::Client::new();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(get_health(server.addr).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
        open.push(stream);
    }
    // The kernel completes the handshake, but the server does not take the connection.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(get_health(server.addr).as_bytes())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served over a cap of 2"
    );
    drop(open.pop());
    // A cancelled read consumed nothing: the whole response is still to come.
    let response = read_response(&mut third).await;
    assert_eq!(response.status, 200, "{}", response.head);
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_at_once_with_json_413() {
    let server = server_with(|_| {}).await;
    let company = CompanyId::new();
    for path in [
        format!("/webhooks/retell/{company}"),
        format!("/webhooks/calcom/{company}"),
        "/webhooks/retell".to_owned(),
        "/webhooks/retell/inbound".to_owned(),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        // Headers only: the body is never sent, so only a refusal on the header can answer.
        let head = post_head(server.addr, &path, 10 * 1024 * 1024);
        stream.write_all(head.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 413, "{path}: {}", response.head);
        assert_eq!(response.body["error"]["code"], "body_too_large", "{path}");
        let message = response.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("262144"), "{message}");
    }
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn bodies_over_the_byte_budget_get_503_before_they_are_read() {
    let server = server_with(|config| {
        config.server.header_read_timeout_ms = 60_000;
        config.server.body_limit_bytes = 64 * 1024;
        config.ingress.max_pending_bytes = 100 * 1024;
    })
    .await;
    let t = tenant(server.store.as_ref(), "budget", "+49301239001").await;
    let path = format!("/webhooks/retell/{}", t.company);
    let declared = 60 * 1024;
    // A slow sender holds its declared 60 KiB of the budget while its body is awaited.
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    let head = post_head(server.addr, &path, declared);
    holder.write_all(head.as_bytes()).await.unwrap();
    eventually("the holder's reservation", || async {
        server.metric("askproai_ingress_pending_bytes").await == declared as f64
    })
    .await;

    // Another 60 KiB does not fit: refused on its headers, its body never sent nor read.
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    refused.write_all(head.as_bytes()).await.unwrap();
    let response = read_response(&mut refused).await;
    assert_eq!(response.status, 503, "{}", response.head);
    assert!(
        response.head.contains("retry-after: 1"),
        "{}",
        response.head
    );
    assert_eq!(response.body["error"]["code"], "unavailable");
    let message = response.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ingress.max_pending_bytes"), "{message}");
    // A small webhook still fits beside the holder.
    let body = retell_body("call_ended", "call_budget_small", &t.phone);
    let small = server.post_retell(t.company, &body, &t.retell_secret).await;
    assert_eq!(small.status(), 202);
    assert_eq!(
        server.metric("askproai_ingress_pending_bytes").await,
        declared as f64,
        "the answered requests gave their bytes back"
    );

    drop(holder);
    eventually("the holder's bytes are back", || async {
        server.metric("askproai_ingress_pending_bytes").await == 0.0
    })
    .await;
    server.stop().await.0.unwrap();
}
