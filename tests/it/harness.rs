//! Shared test plumbing: an in-process server on 127.0.0.1:0 with its own temp data dir,
//! tenant setup through the store, signed requests and polling with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use askpro::app::{AppError, RunOptions};
use askpro::config::{Config, Overrides};
use askpro::embedded::EmbeddedStore;
use askpro::signature::{sign_calcom, sign_retell};
use askpro_actors::domain::{Branch, Company, EventRow, EventStatus, Secret};
use askpro_actors::{BranchId, CompanyId, Provider, StateStore};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Defaults for tests: few partitions and short timers, so events flow quickly.
pub fn test_config(dir: &Path) -> Config {
    let overrides = Overrides {
        listen: None,
        data_dir: Some(dir.to_owned()),
    };
    let mut config = Config::load(None, &overrides).expect("default config loads");
    config.log.partitions = 4;
    config.pipeline.commit_interval_ms = 50;
    config.pipeline.fetch_wait_ms = 50;
    config.pipeline.restart_backoff_ms = 20;
    config.pipeline.drain_timeout_ms = 5_000;
    config.ingress.tenant_cache_ttl_ms = 100;
    // Every test server writes its disk reserve; keep that small.
    config.data.disk_reserve_bytes = 256 * 1024;
    config
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub store: Arc<dyn StateStore>,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), AppError>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, RunOptions::default()).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config), options: RunOptions) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), tweak, options).await
    }

    /// Starts on an existing data dir (for backends the test opened itself).
    pub async fn start_in(
        dir: TempDir,
        tweak: impl FnOnce(&mut Config),
        options: RunOptions,
    ) -> Self {
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(askpro::app::run(
            listener,
            config,
            shutdown.clone(),
            options,
        ));
        let store: Arc<dyn StateStore> =
            Arc::new(EmbeddedStore::open(dir.path()).expect("open store beside the server"));
        let server = Self {
            addr,
            dir,
            store,
            client: reqwest::Client::new(),
            shutdown,
            handle,
        };
        server.wait_healthy().await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_healthy(&self) {
        let client = self.client.clone();
        let url = self.url("/health");
        eventually("server healthy", || {
            let (client, url) = (client.clone(), url.clone());
            async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) }
        })
        .await;
    }

    /// Graceful stop; returns the server's result.
    pub async fn stop(self) -> (Result<(), AppError>, TempDir) {
        self.shutdown.cancel();
        let result = self.handle.await.expect("server task");
        (result, self.dir)
    }

    pub async fn post_retell(
        &self,
        company: CompanyId,
        body: &str,
        secret: &str,
    ) -> reqwest::Response {
        let signature = sign_retell(secret, body.as_bytes(), now_ms());
        self.post_raw(
            &format!("/webhooks/retell/{company}"),
            body,
            Some(("x-retell-signature", &signature)),
        )
        .await
    }

    pub async fn post_calcom(
        &self,
        company: CompanyId,
        body: &str,
        secret: &str,
    ) -> reqwest::Response {
        let signature = sign_calcom(secret, body.as_bytes());
        self.post_raw(
            &format!("/webhooks/calcom/{company}"),
            body,
            Some(("x-cal-signature-256", &signature)),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: &str,
        header: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send().await.expect("request reaches the server")
    }

    /// Waits until `count` events of the tenant have a final status, then returns them all.
    pub async fn settled_events(&self, company: CompanyId, count: usize) -> Vec<EventRow> {
        settled_events(self.store.as_ref(), company, count).await
    }

    /// Counter value from `/metrics` for a metric line prefix such as `name{label="x"}`.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        scrape_metric(&self.client, &self.url("/metrics"), line_prefix).await
    }
}

/// The sum of the `/metrics` lines at `url` that start with `line_prefix`.
pub async fn scrape_metric(client: &reqwest::Client, url: &str, line_prefix: &str) -> f64 {
    let text = client
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn settled_events(
    store: &dyn StateStore,
    company: CompanyId,
    count: usize,
) -> Vec<EventRow> {
    let mut last = Vec::new();
    for _ in 0..1500 {
        last = store.events(company, None, 10_000).await.expect("events");
        if last.len() >= count && last.iter().all(|e| e.status.is_final()) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {count} settled events for {company}, have {}: {:?}",
        last.len(),
        last.iter()
            .map(|e| (e.status, e.error.clone()))
            .collect::<Vec<_>>()
    );
}

/// Polls `check` every 20 ms for up to 30 s; panics naming `what` if it never holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A company with one branch and one secret per provider.
pub struct Tenant {
    pub company: CompanyId,
    pub branch: BranchId,
    pub phone: String,
    pub retell_secret: String,
    pub calcom_secret: String,
}

pub async fn tenant(store: &dyn StateStore, name: &str, phone_e164: &str) -> Tenant {
    let company = Company {
        id: CompanyId::new(),
        name: name.to_owned(),
        allow_unsigned_calcom: false,
        created_at: chrono::Utc::now(),
    };
    store
        .create_company(&company)
        .await
        .expect("create company");
    let branch = Branch {
        id: BranchId::new(),
        company_id: company.id,
        name: format!("{name} branch"),
        phone: phone_e164.to_owned(),
        timezone: "Europe/Berlin".into(),
        retell_agent_id: None,
        retell_llm_id: None,
        calcom: None,
        created_at: chrono::Utc::now(),
        fallback_email: None,
    };
    store.create_branch(&branch).await.expect("create branch");
    let retell_secret = format!("key_{}", uuid::Uuid::now_v7().simple());
    let calcom_secret = format!("whsec_{}", uuid::Uuid::now_v7().simple());
    add_secret(
        store,
        company.id,
        Provider::Retell,
        "sec_retell_1",
        &retell_secret,
    )
    .await;
    add_secret(
        store,
        company.id,
        Provider::Calcom,
        "sec_calcom_1",
        &calcom_secret,
    )
    .await;
    Tenant {
        company: company.id,
        branch: branch.id,
        phone: phone_e164.to_owned(),
        retell_secret,
        calcom_secret,
    }
}

pub async fn add_secret(
    store: &dyn StateStore,
    company: CompanyId,
    provider: Provider,
    id: &str,
    value: &str,
) {
    let secret = Secret {
        company_id: company,
        provider,
        id: id.to_owned(),
        value: value.to_owned(),
        created_at: chrono::Utc::now(),
    };
    store.add_secret(&secret).await.expect("add secret");
}

/// A Retell call event body as Retell sends it.
pub fn retell_body(event: &str, call_id: &str, to_number: &str) -> String {
    json!({
        "event": event,
        "call": {
            "call_id": call_id,
            "agent_id": "agent_test",
            "call_type": "phone_call",
            "direction": "inbound",
            "from_number": "anonymous",
            "to_number": to_number,
            "call_status": if event == "call_started" { "ongoing" } else { "ended" },
            "start_timestamp": 1_761_297_670_702_i64,
            "end_timestamp": 1_761_297_706_005_i64,
            "duration_ms": 35_303,
            "call_analysis": {"call_summary": format!("summary of {call_id}")},
        }
    })
    .to_string()
}

pub async fn json_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub fn count(events: &[EventRow], status: EventStatus) -> usize {
    events.iter().filter(|e| e.status == status).count()
}
