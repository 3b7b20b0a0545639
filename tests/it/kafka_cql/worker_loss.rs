//! A worker SIGKILLed mid-stream on Kafka plus CQL.

use super::*;

// ---------------------------------------------------------------------------------------------
// 2. worker loss

/// Issue test "worker loss" on Kafka plus CQL: an ingress and two workers sharing one keyspace
/// (no shared data dir: each process has its own), 8 partitions; webhooks (a fifth of them
/// bookings) stream in and one worker is SIGKILLed once a third are acknowledged. The survivor
/// takes over all 8 partitions; every acknowledged webhook is processed exactly once (the CQL
/// ledger) and each booking call is booked exactly once at the fake Cal.com.
#[tokio::test]
async fn kafka_cql_worker_sigkill_mid_stream_every_ack_processed_exactly_once() {
    with_keyspace(test_contact_points(), |keyspace| async move {
        const PARTITIONS: u32 = 8;
        const TENANTS: usize = 16;
        const WEBHOOKS: usize = 300;
        const SENDERS: usize = 8;
        let names = KafkaNames::new("it-kcql-loss");
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig {
            rate_limit_per_min: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let tenants = tenants(store.as_ref(), 42, TENANTS).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(
            KafkaSetup::new(&names, PARTITIONS).with("ASKPRO_BOOKING__RATE_LIMIT_PER_MIN", "6000"),
            &keyspace,
            10_000,
        );
        // A data dir per process: they share only Kafka and the keyspace.
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let ingress = setup.spawn("ingress", dirs[0].path());
        let client = http();
        wait_healthy(&client, &ingress).await;
        let mut doomed = setup.spawn("worker", dirs[1].path());
        let survivor = setup.spawn("worker", dirs[2].path());
        wait_every(
            "the two workers split the 8 partitions",
            Duration::from_secs(60),
            HEALTH_POLL,
            || async {
                let a = assigned(&client, &doomed).await?;
                let b = assigned(&client, &survivor).await?;
                let union: BTreeSet<u32> = a.union(&b).copied().collect();
                match !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && union.len() == 8 {
                    true => Ok(()),
                    false => Err(format!("doomed {a:?}, survivor {b:?}")),
                }
            },
        )
        .await;
        let doomed_had = assigned(&client, &doomed).await.unwrap();

        let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
        let refused = Arc::new(Mutex::new(Vec::<String>::new()));
        let tenants = Arc::new(tenants);
        let sending = {
            let (client, acked, refused, tenants) = (
                client.clone(),
                acked.clone(),
                refused.clone(),
                tenants.clone(),
            );
            let base = ingress.url("");
            tokio::spawn(async move {
                futures::stream::iter(0..WEBHOOKS)
                    .for_each_concurrent(SENDERS, |i| {
                        let (client, acked, refused, tenants) = (
                            client.clone(),
                            acked.clone(),
                            refused.clone(),
                            tenants.clone(),
                        );
                        let base = base.clone();
                        async move {
                            let t = &tenants[i % tenants.len()];
                            let (call_id, body, books) = webhook("kcql_loss", i, t);
                            match post_to(&client, &base, t, &body).await {
                                Ok((202, Some(event_id))) => acked.lock().unwrap().push(Acked {
                                    event_id,
                                    company: t.company,
                                    call_id,
                                    books,
                                }),
                                other => refused
                                    .lock()
                                    .unwrap()
                                    .push(format!("{call_id}: {other:?}")),
                            }
                        }
                    })
                    .await
            })
        };
        wait_until(
            "a third of the stream acknowledged",
            Duration::from_secs(90),
            || async {
                let n = acked.lock().unwrap().len();
                match n >= WEBHOOKS / 3 {
                    true => Ok(()),
                    false => Err(format!("{n} acknowledged")),
                }
            },
        )
        .await;
        let at_kill = acked.lock().unwrap().len();
        let processed_at_kill = ledger(store.as_ref(), &companies)
            .await
            .iter()
            .filter(|r| r.status == EventStatus::Processed)
            .count();
        doomed.signal("KILL");
        doomed.wait_exit(Duration::from_secs(30)).await;
        eprintln!(
            "SIGKILL to the worker owning {doomed_had:?} after {at_kill} acks, \
             {processed_at_kill} processed by then"
        );
        tokio::time::timeout(Duration::from_secs(120), sending)
            .await
            .expect("the stream is sent within 120 s")
            .unwrap();
        let refused = refused.lock().unwrap().clone();
        assert!(
            refused.is_empty(),
            "the ingress acknowledges every webhook while a worker dies: {} refused, e.g. {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len(), WEBHOOKS);
        assert!(
            processed_at_kill < WEBHOOKS,
            "the worker died mid-stream, not after it"
        );

        wait_every(
            "the survivor owns all 8 partitions",
            Duration::from_secs(60),
            HEALTH_POLL,
            || async {
                let now = assigned(&client, &survivor).await?;
                match now == (0..PARTITIONS).collect() {
                    true => Ok(()),
                    false => Err(format!("survivor owns {now:?}")),
                }
            },
        )
        .await;
        wait_processed(store.as_ref(), &acked, Duration::from_secs(120)).await;
        // Let anything still in flight land before checking that nothing else appears.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
        drop((doomed, survivor, ingress));
        names.delete_topics(TIERS).await;
    })
    .await;
}

async fn post_to(
    client: &reqwest::Client,
    base: &str,
    t: &Tenant,
    body: &str,
) -> Result<(u16, Option<EventId>), String> {
    let signature =
        askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), crate::harness::now_ms());
    let response = client
        .post(format!("{base}/webhooks/retell/{}", t.company))
        .header("content-type", "application/json")
        .header("x-retell-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    Ok((
        status,
        body["event_id"].as_str().and_then(|s| s.parse().ok()),
    ))
}
