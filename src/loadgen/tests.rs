//! End-to-end tests of [`super::run`] against the bench server and a recording server.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::bench_server;
use crate::signature::sign_retell;

fn tenants(n: usize) -> Vec<LoadTenant> {
    (0..n)
        .map(|i| LoadTenant {
            company_id: askpro_actors::CompanyId::new(),
            secret: format!("test-secret-{i}"),
            phone: None,
        })
        .collect()
}

fn args(target: &str, count: u64) -> LoadgenArgs {
    LoadgenArgs {
        target: target.to_owned(),
        count,
        concurrency: 8,
        tenants: 2,
        quiet: true,
        ..LoadgenArgs::default()
    }
}

/// Starts the bench server on a free port; the token stops it.
async fn bench() -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(bench_server::run(listener, shutdown.clone()));
    (url, shutdown)
}

#[tokio::test]
async fn sends_count_requests_to_the_bench_server() {
    let (url, server) = bench().await;
    let report = run(&args(&url, 200), &tenants(2), CancellationToken::new())
        .await
        .unwrap();
    server.cancel();
    assert_eq!(report.requests, 200);
    assert_eq!(report.by_status.get(&200), Some(&200));
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.duplicates_sent, 0);
    assert_eq!(report.cancelled, 0);
    assert_eq!(report.stop_reason, "count");
    assert!(report.latency_us.p99 >= report.latency_us.p50);
    assert!(report.latency_us.max >= report.latency_us.p99);
    assert_eq!(
        report.latency_buckets.iter().map(|b| b.count).sum::<u64>(),
        200
    );
    assert!(report.throughput_per_sec > 0.0);
    assert!(report.render_text().contains("200: 200"));
}

#[tokio::test]
async fn resends_earlier_bodies_at_the_duplicate_ratio() {
    let (url, server) = bench().await;
    let args = LoadgenArgs {
        duplicate_ratio: 0.5,
        ..args(&url, 200)
    };
    let report = run(&args, &tenants(2), CancellationToken::new())
        .await
        .unwrap();
    server.cancel();
    assert_eq!(report.requests, 200);
    assert_eq!(report.by_status.get(&200), Some(&200));
    assert!(report.duplicates_sent > 0, "{}", report.duplicates_sent);
    assert!(report.duplicates_sent < 200, "{}", report.duplicates_sent);
}

#[tokio::test]
async fn a_rate_limited_run_still_sends_every_request() {
    let (url, server) = bench().await;
    let args = LoadgenArgs {
        rate: 200,
        ..args(&url, 20)
    };
    let report = run(&args, &tenants(1), CancellationToken::new())
        .await
        .unwrap();
    server.cancel();
    assert_eq!(report.requests, 20);
    assert_eq!(report.target_rate, 200);
}

#[tokio::test]
async fn stops_when_the_duration_runs_out() {
    let (url, server) = bench().await;
    let args = LoadgenArgs {
        duration: 1,
        rate: 100,
        ..args(&url, u64::MAX)
    };
    let report = run(&args, &tenants(2), CancellationToken::new())
        .await
        .unwrap();
    server.cancel();
    assert_eq!(report.stop_reason, "duration");
    assert!(report.requests > 0);
    assert!(report.requests < u64::MAX);
}

#[tokio::test]
async fn stops_on_shutdown() {
    let (url, server) = bench().await;
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stopper.cancel();
    });
    let report = run(&args(&url, u64::MAX), &tenants(2), shutdown)
        .await
        .unwrap();
    server.cancel();
    assert_eq!(report.stop_reason, "shutdown");
    assert!(report.requests > 0);
}

#[tokio::test]
async fn fails_fast_when_the_target_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = run(&args(&url, 10), &tenants(1), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadgenError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach {url}/: ")),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_to_run_without_tenants() {
    let err = run(
        &args("http://127.0.0.1:9", 10),
        &[],
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LoadgenError::NoTenants), "{err:?}");
}

#[test]
fn validation_names_the_bad_flag() {
    let flag_of = |args: LoadgenArgs| match args.validate() {
        Err(LoadgenError::InvalidArgs { flag, .. }) => flag,
        other => panic!("expected invalid args, got {other:?}"),
    };
    let ok = LoadgenArgs::default();
    assert!(ok.validate().is_ok());
    let with = |f: fn(&mut LoadgenArgs)| {
        let mut args = LoadgenArgs::default();
        f(&mut args);
        args
    };
    assert_eq!(
        flag_of(with(|a| a.duplicate_ratio = 1.5)),
        "duplicate-ratio"
    );
    assert_eq!(
        flag_of(with(|a| a.duplicate_ratio = f64::NAN)),
        "duplicate-ratio"
    );
    assert_eq!(flag_of(with(|a| a.concurrency = 0)), "concurrency");
    assert_eq!(flag_of(with(|a| a.count = 0)), "count");
    assert_eq!(flag_of(with(|a| a.duration = 0)), "duration");
    assert_eq!(
        flag_of(with(|a| a.path_template = "webhooks".to_owned())),
        "path-template"
    );
    assert_eq!(
        flag_of(with(|a| a.target = "https://example.com".to_owned())),
        "target"
    );
    assert_eq!(
        flag_of(with(|a| a.target = "not a url".to_owned())),
        "target"
    );
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

#[test]
fn clap_defaults_match_default_and_bad_values_are_refused() {
    let parsed = Cli::try_parse_from(["loadgen"]).unwrap().args;
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", LoadgenArgs::default())
    );
    assert!(Cli::try_parse_from(["loadgen", "--duplicate-ratio", "2"]).is_err());
    assert!(Cli::try_parse_from(["loadgen", "--concurrency", "0"]).is_err());
    let parsed = Cli::try_parse_from(["loadgen", "--duplicate-ratio", "0.25", "--json"]).unwrap();
    assert_eq!(parsed.args.duplicate_ratio, 0.25);
    assert!(parsed.args.json);
}

type Captured = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

async fn record(
    State(seen): State<Captured>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    seen.lock()
        .unwrap()
        .push((uri.path().to_owned(), headers, body));
    StatusCode::ACCEPTED
}

/// Splits `v=<ms>,d=<hex>` into the timestamp.
fn signed_at(header: &str) -> i64 {
    let (v, _) = header.split_once(",d=").expect("v=..,d=..");
    v.strip_prefix("v=").expect("v=").parse().expect("ms")
}

#[tokio::test]
async fn requests_carry_a_valid_retell_signature_of_their_tenant() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Captured::default();
    let router = Router::new().fallback(record).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let tenants = tenants(2);
    let report = run(&args(&url, 10), &tenants, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.by_status.get(&202), Some(&10));
    let seen = seen.lock().unwrap();
    let posts: Vec<_> = seen.iter().filter(|(path, _, _)| path != "/").collect();
    assert_eq!(posts.len(), 10, "the probe is not a webhook");
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (path, headers, body) in posts {
        let tenant = tenants
            .iter()
            .find(|t| *path == format!("/webhooks/retell/{}", t.company_id))
            .expect("the path names a tenant");
        let signature = headers["x-retell-signature"].to_str().unwrap();
        let at = signed_at(signature);
        assert!(
            (now_ms - at).abs() < 300_000,
            "signed with the current time"
        );
        assert_eq!(signature, sign_retell(&tenant.secret, body, at));
        assert_eq!(headers["content-type"], "application/json");
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(value["event"], "call_ended");
        assert!(value["call"]["call_id"]
            .as_str()
            .unwrap()
            .starts_with("call_lg_"));
    }
}
