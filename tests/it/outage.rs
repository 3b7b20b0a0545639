//! The log goes away: the ingress answers 503 (the provider retries) and never 2xx.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use askpro::app::{Backends, RunOptions};
use askpro::embedded::{EmbeddedLog, EmbeddedStore};
use askpro_actors::log::{EventLog, LogPosition};
use askpro_actors::record::{LogRecord, StoredRecord};
use askpro_actors::LogError;
use async_trait::async_trait;

use crate::harness::*;

/// The embedded log with a switch that makes appends fail like an unreachable broker.
struct SwitchableLog {
    inner: EmbeddedLog,
    down: AtomicBool,
}

#[async_trait]
impl EventLog for SwitchableLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn append(&self, records: Vec<LogRecord>) -> Result<Vec<LogPosition>, LogError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LogError::Unavailable {
                context: "test: log switched off".into(),
                source: Box::new(std::io::Error::other("switched off")),
            });
        }
        self.inner.append(records).await
    }
    async fn fetch(
        &self,
        p: u32,
        o: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>, LogError> {
        self.inner.fetch(p, o, max, wait).await
    }
    async fn commit(&self, group: &str, p: u32, next: u64) -> Result<(), LogError> {
        self.inner.commit(group, p, next).await
    }
    async fn committed(&self, group: &str, p: u32) -> Result<Option<u64>, LogError> {
        self.inner.committed(group, p).await
    }
    async fn end_offset(&self, p: u32) -> Result<u64, LogError> {
        self.inner.end_offset(p).await
    }
    async fn check(&self) -> Result<(), LogError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LogError::Invalid("test: log switched off".into()));
        }
        self.inner.check().await
    }
}

#[tokio::test]
async fn log_outage_answers_503_and_recovery_accepts_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SwitchableLog {
        inner: EmbeddedLog::open(dir.path(), 4).unwrap(),
        down: AtomicBool::new(false),
    });
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let options = RunOptions {
        backends: Some(Backends {
            log: log.clone(),
            store,
        }),
        ..Default::default()
    };
    let server = TestServer::start_in(dir, |_| {}, options).await;
    let t = tenant(server.store.as_ref(), "outage", "+49301234579").await;

    log.down.store(true, Ordering::SeqCst);
    let body = retell_body("call_ended", "call_outage", &t.phone);
    let response = server.post_retell(t.company, &body, &t.retell_secret).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, reply) = json_body(response).await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("switched off"),
        "{reply}"
    );
    let health = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "health reports the log");

    // The provider retries after the outage: accepted and processed once.
    log.down.store(false, Ordering::SeqCst);
    let response = server.post_retell(t.company, &body, &t.retell_secret).await;
    assert_eq!(response.status(), 202);
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events.len(), 1, "the refused delivery left no trace");
    server.stop().await.0.unwrap();
}
