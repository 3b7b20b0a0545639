//! `askpro ingress` and `askpro worker` as separate processes on one embedded data dir.

use std::process::{Command, Stdio};
use std::sync::Arc;

use askpro::embedded::EmbeddedStore;
use askpro_actors::domain::EventStatus;
use askpro_actors::StateStore;

use crate::crash::{free_port, spawn_role, wait_up};
use crate::harness::*;

#[tokio::test]
async fn ingress_and_worker_split_across_processes_and_a_second_worker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let t = tenant(store.as_ref(), "roles", "+49301234590").await;
    let client = reqwest::Client::new();
    let (ingress_port, worker_port) = (free_port(), free_port());
    let mut ingress = spawn_role("ingress", dir.path(), ingress_port);
    wait_up(&client, ingress_port).await;

    // Accepted while no worker runs: durable in the log, not yet in the ledger.
    let body = retell_body("call_ended", "call_roles", &t.phone);
    let signature = askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
    let response = client
        .post(format!(
            "http://127.0.0.1:{ingress_port}/webhooks/retell/{}",
            t.company
        ))
        .header("x-retell-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(store.events(t.company, None, 10).await.unwrap().is_empty());

    let mut worker = spawn_role("worker", dir.path(), worker_port);
    wait_up(&client, worker_port).await;
    let events = settled_events(store.as_ref(), t.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Processed);
    let webhooks = client
        .post(format!(
            "http://127.0.0.1:{worker_port}/webhooks/retell/{}",
            t.company
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(webhooks.status(), 404, "a worker exposes no webhook routes");

    let second = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(["worker", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .env("ASKPRO_LOG__PARTITIONS", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another worker already owns"), "{stderr}");

    ingress.kill().unwrap();
    worker.kill().unwrap();
}
