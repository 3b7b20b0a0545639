//! End to end on Kafka plus CQL through `askpro serve`.

use super::*;

// ---------------------------------------------------------------------------------------------
// 1. end to end

/// Issue test "the foundation and pipeline end-to-end scenarios, run on Kafka plus CQL":
/// `askpro serve` with log = kafka and store = cql (migrating its keyspace at start). Signed
/// webhooks of four tenants (call_started, call_ended, a Cal.com BOOKING_CREATED and a
/// call_analyzed that books at the fake Cal.com) are answered 202, every event ends `processed`
/// in the CQL store (also as `askpro events list` shows it), each booking call is booked
/// exactly once; a re-delivery after completion is answered 200 duplicate, and two deliveries
/// sent back to back (both in the log) still book once.
#[tokio::test]
async fn kafka_cql_serve_end_to_end_books_once_and_records_every_event() {
    with_keyspace(test_contact_points(), |keyspace| async move {
        const TENANTS: usize = 4;
        let names = KafkaNames::new("it-kcql-e2e");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let store = keyspace.open().await;
        let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
        let tenants = tenants(store.as_ref(), 41, TENANTS).await;
        for t in &tenants {
            connect_calcom(store.as_ref(), t, &fake, None).await;
        }
        let companies: Vec<CompanyId> = tenants.iter().map(|t| t.company).collect();
        let setup = on_cql(KafkaSetup::new(&names, 4), &keyspace, 10_000);
        let serve = setup.spawn("serve", dir);
        let client = http();
        wait_healthy(&client, &serve).await;

        let mut acked = Vec::new();
        for (i, t) in tenants.iter().enumerate() {
            let call_id = format!("call_kcql_{i}");
            for (event, body, books) in [
                (
                    "call_started",
                    retell_body("call_started", &call_id, &t.phone),
                    false,
                ),
                (
                    "call_ended",
                    retell_body("call_ended", &call_id, &t.phone),
                    false,
                ),
                (
                    "call_analyzed",
                    analyzed(&call_id, &t.phone, &slot(i)),
                    true,
                ),
            ] {
                let answer = post_retell(&client, &serve, t, &body, None).await.unwrap();
                assert_eq!(
                    answer.status, 202,
                    "{event} of tenant {i}: {:?}",
                    answer.body
                );
                acked.push(Acked {
                    event_id: answer.event_id.expect("202 names the event id"),
                    company: t.company,
                    call_id: call_id.clone(),
                    books,
                });
            }
            let body = calcom_created(&format!("uid_kcql_{i}"), "2028-02-01T09:00:00Z");
            let answer = post_calcom(&client, &serve, t, &body).await.unwrap();
            assert_eq!(answer.status, 202, "cal.com webhook: {:?}", answer.body);
            acked.push(Acked {
                event_id: answer.event_id.expect("202 names the event id"),
                company: t.company,
                // Not a Retell call: checked through the ledger only.
                call_id: String::new(),
                books: false,
            });
        }
        wait_processed(store.as_ref(), &acked, Duration::from_secs(90)).await;
        let retell: Vec<Acked> = acked
            .iter()
            .filter(|a| !a.call_id.is_empty())
            .cloned()
            .collect();
        let calcom_ids: BTreeSet<EventId> = acked
            .iter()
            .filter(|a| a.call_id.is_empty())
            .map(|a| a.event_id)
            .collect();
        let rows = ledger(store.as_ref(), &companies).await;
        for row in rows.iter().filter(|r| calcom_ids.contains(&r.id)) {
            assert_eq!(row.event_type, "BOOKING_CREATED", "{row:?}");
        }
        // Exactly once (the Cal.com events are the only rows besides the Retell ones).
        assert_eq!(rows.len(), acked.len(), "{:?}", by_status(&rows));
        assert_exactly_once_retell(store.as_ref(), &fake, &retell, &rows, TENANTS).await;

        // The operator's view: `askpro events list` on the same keyspace.
        let listed = events_cli(dir, &keyspace, tenants[0].company);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(
            listed.iter().all(|e| e["status"] == "processed"),
            "events list: {listed:?}"
        );

        // A re-delivery of a completed call_analyzed: the ingress's dedup check answers
        // 200 duplicate, nothing is booked again.
        let t = &tenants[0];
        let body = analyzed("call_kcql_0", &t.phone, &slot(0));
        let again = post_retell(&client, &serve, t, &body, None).await.unwrap();
        assert_eq!(again.status, 200, "re-delivery: {:?}", again.body);
        assert_eq!(again.body["duplicate"], true, "{:?}", again.body);

        // Two deliveries back to back, before the first is processed: both go into the log,
        // the pipeline's dedup (LWT claim in CQL) lets one book.
        let t = &tenants[1];
        let call_id = "call_kcql_burst";
        let body = analyzed(call_id, &t.phone, &slot(20));
        let (a, b) = futures::join!(
            post_retell(&client, &serve, t, &body, None),
            post_retell(&client, &serve, t, &body, None)
        );
        let mut burst = Vec::new();
        for answer in [a.unwrap(), b.unwrap()] {
            assert!(
                answer.status == 202 || answer.status == 200,
                "{:?}",
                answer.body
            );
            if answer.status == 202 {
                burst.push(answer.event_id.unwrap());
            }
        }
        assert!(!burst.is_empty(), "at least the first delivery is accepted");
        let burst_rows = wait_until(
            "the burst deliveries settle",
            Duration::from_secs(60),
            || async {
                let mut rows = Vec::new();
                for id in &burst {
                    match store
                        .event(t.company, *id)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Some(row) if row.status.is_final() => rows.push(row),
                        other => return Err(format!("{:?}", other.map(|r| r.status))),
                    }
                }
                Ok(rows)
            },
        )
        .await;
        let processed = burst_rows
            .iter()
            .filter(|r| r.status == EventStatus::Processed)
            .count();
        assert_eq!(
            processed,
            1,
            "one of the deliveries is processed, the other is a duplicate: {:?}",
            burst_rows
                .iter()
                .map(|r| (r.status, &r.error))
                .collect::<Vec<_>>()
        );
        assert!(
            burst_rows
                .iter()
                .all(|r| matches!(r.status, EventStatus::Processed | EventStatus::Duplicate)),
            "{burst_rows:?}"
        );
        // Let a wrongly repeated booking show up before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per_call = bookings_per_call(&fake);
        assert_eq!(
            per_call.get(&askpro_actors::handlers::call_booking_key(
                tenants[0].company,
                "call_kcql_0"
            )),
            Some(&1),
            "{per_call:?}"
        );
        assert_eq!(
            per_call.get(&askpro_actors::handlers::call_booking_key(
                t.company, call_id
            )),
            Some(&1),
            "the burst booked once: {per_call:?} ({} deliveries accepted)",
            burst.len()
        );
        assert_eq!(
            per_call.values().sum::<usize>(),
            TENANTS + 1,
            "{per_call:?}"
        );
        eprintln!(
            "e2e: {} webhooks processed; burst: {} of 2 deliveries accepted into the log",
            acked.len(),
            burst.len()
        );
        drop(serve);
        names.delete_topics(TIERS).await;
    })
    .await;
}

/// [`assert_exactly_once`] for the Retell events of a ledger that also holds other rows.
async fn assert_exactly_once_retell(
    store: &dyn StateStore,
    fake: &FakeCalcom,
    acked: &[Acked],
    rows: &[EventRow],
    calcom_bookings: usize,
) {
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    let mine: Vec<&EventRow> = rows.iter().filter(|r| wanted.contains(&r.id)).collect();
    assert_eq!(
        mine.len(),
        wanted.len(),
        "one row per acknowledged Retell webhook"
    );
    assert!(
        mine.iter().all(|r| r.status == EventStatus::Processed),
        "{:?}",
        mine.iter()
            .map(|r| (r.status, &r.error))
            .collect::<Vec<_>>()
    );
    let keys: BTreeSet<&str> = mine.iter().map(|r| r.dedup_key.as_str()).collect();
    assert_eq!(keys.len(), mine.len(), "one row per dedup key");
    let companies: Vec<CompanyId> = acked
        .iter()
        .map(|a| a.company)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for a in acked {
        let call = store.call(a.company, &a.call_id).await.unwrap();
        assert!(
            call.is_some(),
            "call {} recorded in the CQL store",
            a.call_id
        );
    }
    let per_call = bookings_per_call(fake);
    let booking_calls: Vec<&Acked> = acked.iter().filter(|a| a.books).collect();
    for a in &booking_calls {
        assert_eq!(
            per_call
                .get(&askpro_actors::handlers::call_booking_key(
                    a.company, &a.call_id
                ))
                .copied(),
            Some(1),
            "exactly one Cal.com booking for {}: {per_call:?}",
            a.call_id
        );
    }
    assert_eq!(per_call.values().sum::<usize>(), booking_calls.len());
    // Ours (booked from a call: an idempotency key) and Cal.com's (BOOKING_CREATED: its uid).
    let (mut ours, mut theirs) = (0, 0);
    for company in &companies {
        for a in store.appointments(*company).await.unwrap() {
            assert_eq!(a.status, AppointmentStatus::Scheduled, "{a:?}");
            match &a.idempotency_key {
                Some(key) => {
                    let call_key = key.rsplit_once(":retell-call:");
                    assert!(
                        call_key.is_some_and(|(scope, _)| scope == format!("askpro:{company}")),
                        "our key names our tenant: {a:?}"
                    );
                    ours += 1;
                }
                None => {
                    let uid = a.calcom_uid.as_deref().unwrap_or_default();
                    assert!(uid.starts_with("uid_kcql_"), "{a:?}");
                    theirs += 1;
                }
            }
        }
    }
    assert_eq!(
        ours,
        booking_calls.len(),
        "one appointment per booking call"
    );
    assert_eq!(
        theirs, calcom_bookings,
        "one appointment per Cal.com BOOKING_CREATED"
    );
}
