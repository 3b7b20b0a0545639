//! Process crash and graceful shutdown of the real binary on one data dir.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use askpro::embedded::{EmbeddedLog, EmbeddedStore};
use askpro_actors::domain::EventStatus;
use askpro_actors::{EventLog, StateStore};
use tokio::sync::Mutex;

use crate::harness::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two distinct free loopback ports (a service's client port and its peer port).
pub fn free_port_pair() -> (u16, u16) {
    let first = free_port();
    let mut second = free_port();
    while second == first {
        second = free_port();
    }
    (first, second)
}

/// A fresh dir for a private service, under the scratch dir `scripts/test` hands tests
/// (`ASKPRO_SERVICES_DIR`, whose leftovers it stops at the end), else the temp dir.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("ASKPRO_SERVICES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap()
}

/// A child process that is killed when dropped, so a failing test leaks nothing.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(dir: &Path, port: u16) -> Proc {
    spawn_role("serve", dir, port)
}

/// Starts the real binary in a role (`serve`, `ingress`, `worker`) on a data dir.
pub fn spawn_role(role: &str, dir: &Path, port: u16) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args([role, "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("ASKPRO_LOG__PARTITIONS", "4")
        .env("ASKPRO_PIPELINE__COMMIT_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn askpro");
    Proc(child)
}

pub async fn wait_up(client: &reqwest::Client, port: u16) {
    let url = format!("http://127.0.0.1:{port}/health");
    eventually("binary healthy", || {
        let (client, url) = (client.clone(), url.clone());
        async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
}

#[tokio::test]
async fn kill_mid_flight_then_restart_processes_every_ack_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(
            tenant(
                store.as_ref(),
                &format!("crash{i}"),
                &format!("+4930123460{i}"),
            )
            .await,
        );
    }
    let port = free_port();
    let mut child = spawn_server(dir.path(), port);
    let client = reqwest::Client::new();
    wait_up(&client, port).await;

    // Ten senders push until the process dies; only 202s count as acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let tenants = Arc::new(tenants);
    let mut senders = Vec::new();
    for worker in 0..10 {
        let (client, acked, tenants) = (client.clone(), acked.clone(), tenants.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..200 {
                let t = &tenants[(worker + i) % tenants.len()];
                let call_id = format!("call_crash_{worker}_{i}");
                let body = retell_body("call_ended", &call_id, &t.phone);
                let signature =
                    askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
                let sent = client
                    .post(format!(
                        "http://127.0.0.1:{port}/webhooks/retell/{}",
                        t.company
                    ))
                    .header("x-retell-signature", signature)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        acked.lock().await.insert((t.company, call_id));
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the process is gone
                }
            }
        }));
    }
    eventually("some webhooks acknowledged", || {
        let acked = acked.clone();
        async move { acked.lock().await.len() >= 150 }
    })
    .await;
    child.kill().expect("sigkill");
    child.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 150);

    let mut child = spawn_server(dir.path(), port);
    wait_up(&client, port).await;
    for t in tenants.iter() {
        let expected = acked.iter().filter(|(c, _)| *c == t.company).count();
        let events = settled_events(store.as_ref(), t.company, expected).await;
        for (_, call_id) in acked.iter().filter(|(c, _)| *c == t.company) {
            let key = format!("retell:call_ended:{call_id}");
            let processed = events
                .iter()
                .filter(|e| e.dedup_key == key && e.status == EventStatus::Processed)
                .count();
            assert_eq!(processed, 1, "{call_id} must be processed exactly once");
            assert!(
                store.call(t.company, call_id).await.unwrap().is_some(),
                "{call_id} lost"
            );
        }
    }

    // Graceful stop: SIGTERM → exit 0, and every partition committed up to its end.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");
    let log = EmbeddedLog::open(dir.path(), 4).unwrap();
    for partition in 0..4 {
        let end = log.end_offset(partition).await.unwrap();
        let committed = log
            .committed("askpro", partition)
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(
            committed, end,
            "partition {partition} fully committed on shutdown"
        );
    }
}
