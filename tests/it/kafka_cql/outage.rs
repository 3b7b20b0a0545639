//! The CQL store unreachable while Kafka keeps accepting.

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. store outage

/// A Cassandra of this test only (`scripts/services up cassandra` in a run dir of its own, on
/// free ports). Stopped when dropped, also when the test fails.
struct PrivateCassandra {
    dir: tempfile::TempDir,
    cql_port: u16,
    storage_port: u16,
}

impl PrivateCassandra {
    fn new() -> Self {
        let (cql_port, storage_port) = crate::crash::free_port_pair();
        Self {
            dir: crate::crash::scratch_dir("it-cql-outage-"),
            cql_port,
            storage_port,
        }
    }

    fn contact_points(&self) -> String {
        format!("127.0.0.1:{}", self.cql_port)
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(services_script());
        command
            .args([action, "cassandra"])
            .env("ASKPRO_SERVICES_DIR", self.dir.path())
            .env("ASKPRO_CQL_PORT", self.cql_port.to_string())
            .env(
                "ASKPRO_CASSANDRA_STORAGE_PORT",
                self.storage_port.to_string(),
            );
        command
    }

    async fn run(&self, action: &'static str) {
        let mut command = self.command(action);
        let started = Instant::now();
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("run scripts/services");
        assert!(
            output.status.success(),
            "scripts/services {action} cassandra (port {}) failed: {}{}",
            self.cql_port,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if action == "up" {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                stdout.contains(&format!(
                    "ASKPRO_CQL__CONTACT_POINTS={}",
                    self.contact_points()
                )),
                "up prints the private Cassandra's address: {stdout}"
            );
        }
        eprintln!(
            "private cassandra on {}: {action} took {:?}",
            self.cql_port,
            started.elapsed()
        );
    }
}

impl Drop for PrivateCassandra {
    fn drop(&mut self) {
        match self.command("down").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stopping the private cassandra on port {} failed: {}",
                self.cql_port,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!(
                "stopping the private cassandra on port {}: {e}",
                self.cql_port
            ),
        }
    }
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after "(comm)": state is field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The sum of a counter's lines on a process's `/metrics`.
async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> f64 {
    crate::harness::scrape_metric(client, &node.url("/metrics"), name).await
}

/// Issue test "CQL store unreachable", with a private Cassandra stopped and started again
/// (same data dir, so the keyspace survives). While it is down: the ingress keeps answering
/// 202 for tenants in its cache (their webhooks go into the Kafka log) and 503 for a tenant it
/// has not cached; the worker backs off (the store-retry counter grows slowly) without a busy
/// loop (its CPU time over 10 s stays low) and nothing is marked failed. Once Cassandra is back,
/// every acknowledged webhook ends `processed` exactly once and the uncached tenant's re-sent
/// webhook is accepted.
#[tokio::test]
async fn kafka_cql_store_outage_ingress_accepts_workers_back_off_then_recover() {
    let cassandra = PrivateCassandra::new();
    // Fails first without ASKPRO_KAFKA__BROKERS, like every Kafka test (nothing started).
    let names = KafkaNames::new("it-kcql-outage");
    cassandra.run("up").await;
    // The test body holds one reference; this one keeps Cassandra up until the keyspace is
    // dropped, then stops it (also after a failure).
    let cassandra = Arc::new(cassandra);
    let inner = Arc::clone(&cassandra);
    with_keyspace(cassandra.contact_points(), move |keyspace| async move {
        let cassandra = inner;
        const TENANTS: usize = 4;
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
        let tenants = tenants(store.as_ref(), 43, TENANTS + 1).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        // The last tenant never posts before the outage: the ingress has not cached it.
        let (cold, warm) = tenants.split_last().unwrap();
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(
            KafkaSetup::new(&names, 2)
                .with("ASKPRO_INGRESS__TENANT_CACHE_TTL_MS", "600000")
                .with("ASKPRO_PIPELINE__STORE_RETRY_MAX_BACKOFF_MS", "1000"),
            &keyspace,
            2_000,
        );
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let ingress = setup.spawn("ingress", dirs[0].path());
        let client = http();
        wait_healthy(&client, &ingress).await;
        let mut worker = setup.spawn("worker", dirs[1].path());
        wait_healthy(&client, &worker).await;

        let mut n = 0;
        let mut next = |t: &Tenant| {
            n += 1;
            let (call_id, body, books) = webhook("kcql_outage", n, t);
            (call_id, body, books)
        };
        // Before: every warm tenant posts (this also fills the ingress's tenant cache).
        let mut acked = Vec::new();
        for t in warm {
            for _ in 0..3 {
                let (call_id, body, books) = next(t);
                let answer = post_retell(&client, &ingress, t, &body, None)
                    .await
                    .unwrap();
                assert_eq!(answer.status, 202, "before the outage: {:?}", answer.body);
                acked.push(Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books,
                });
            }
        }
        wait_processed(store.as_ref(), &acked, Duration::from_secs(60)).await;

        cassandra.run("down").await;
        let retries_before = metric(&client, &worker, "askproai_store_retries_total").await;
        // During: cached tenants' webhooks are accepted into the log.
        let mut during = Vec::new();
        let started = Instant::now();
        for t in warm {
            for _ in 0..3 {
                let (call_id, body, books) = next(t);
                let sent = Instant::now();
                let answer = post_retell(&client, &ingress, t, &body, None)
                    .await
                    .unwrap();
                assert_eq!(
                    answer.status,
                    202,
                    "{call_id} of a cached tenant while the store is down (after {:?}): {:?}",
                    sent.elapsed(),
                    answer.body
                );
                during.push(Acked {
                    event_id: answer.event_id.unwrap(),
                    company: t.company,
                    call_id,
                    books,
                });
            }
        }
        eprintln!(
            "store down: {} webhooks of cached tenants answered 202 in {:?}",
            during.len(),
            started.elapsed()
        );
        // A tenant the ingress has not cached cannot be authenticated: 503 (retry later),
        // never a 4xx that would make the provider drop the webhook.
        let (cold_call, cold_body, cold_books) = next(cold);
        let answer = post_retell(&client, &ingress, cold, &cold_body, None)
            .await
            .unwrap();
        eprintln!(
            "store down: uncached tenant answered {} {}",
            answer.status, answer.body
        );
        assert_eq!(
            answer.status, 503,
            "uncached tenant while the store is down: {:?}",
            answer.body
        );

        // No busy loop: the worker's CPU time over 10 s of outage, and its retry rate.
        let ticks = clock_ticks_per_sec();
        let cpu_before = cpu_ticks(worker.pid());
        let window = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let cpu = (cpu_ticks(worker.pid()) - cpu_before) as f64 / ticks as f64;
        let elapsed = window.elapsed().as_secs_f64();
        let retries =
            metric(&client, &worker, "askproai_store_retries_total").await - retries_before;
        eprintln!(
            "store down: worker used {cpu:.2} s CPU in {elapsed:.1} s; {retries} store retries"
        );
        assert!(
            cpu < 0.25 * elapsed,
            "the worker busy-loops while the store is down: {cpu:.2} s CPU in {elapsed:.1} s"
        );
        assert!(
            retries >= 1.0,
            "the worker retries the store while it is down"
        );
        assert!(
            retries < 200.0,
            "the worker retries too often (no backoff): {retries} in ~{:.0} s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            worker.proc.try_wait().unwrap().is_none(),
            "the worker keeps running while the store is down"
        );

        cassandra.run("up").await;
        let restarted = Instant::now();
        acked.extend(during);
        // The uncached tenant's webhook, sent again (as Retell would), is accepted now.
        let cold_ack = wait_until(
            "the uncached tenant is accepted again",
            Duration::from_secs(60),
            || async {
                let answer = post_retell(&client, &ingress, cold, &cold_body, None).await?;
                match answer.status {
                    202 => Ok(answer.event_id.unwrap()),
                    _ => Err(format!("{} {}", answer.status, answer.body)),
                }
            },
        )
        .await;
        acked.push(Acked {
            event_id: cold_ack,
            company: cold.company,
            call_id: cold_call,
            books: cold_books,
        });
        wait_processed(store.as_ref(), &acked, Duration::from_secs(90)).await;
        eprintln!(
            "store back: every acknowledged webhook processed {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
        drop((worker, ingress));
        names.delete_topics(TIERS).await;
    })
    .await;
    drop(cassandra);
}
