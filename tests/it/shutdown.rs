//! Slow clients get 408 and cannot hold shutdown open.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

async fn slow_request(server: &TestServer, company: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/retell/{company} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{\"ev"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_does_not_hold_shutdown() {
    let server = TestServer::start_with(
        |c| {
            c.ingress.durability_timeout_ms = 300;
            c.server.request_timeout_ms = 600;
        },
        Default::default(),
    )
    .await;
    let t = tenant(server.store.as_ref(), "slow", "+49301234578").await;
    let mut stream = slow_request(&server, &t.company.to_string()).await;
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the slow request is answered, not left hanging")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A client that never finishes its body is connected while the server shuts down.
    let _held = slow_request(&server, &t.company.to_string()).await;
    let stopped = tokio::time::timeout(Duration::from_secs(15), server.stop()).await;
    let (result, _dir) = stopped.expect("shutdown completes despite the slow client");
    result.unwrap();
}
