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
        let (fake, tenants, companies) = booking_tenants(store.as_ref(), 42, TENANTS).await;
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
        let doomed_had = wait_split(&client, &doomed, &survivor, PARTITIONS).await;

        let make: MakeWebhook = |i, t| webhook("kcql_loss", i, t);
        let stream = Stream::start(&client, &ingress, tenants, WEBHOOKS, SENDERS, make);
        let at_kill = stream.wait_acked(WEBHOOKS / 3).await;
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
        let acked = stream.finish().await;
        assert!(
            processed_at_kill < WEBHOOKS,
            "the worker died mid-stream, not after it"
        );
        wait_owns_all(&client, &survivor, PARTITIONS, &format!("{doomed_had:?}")).await;
        wait_processed(store.as_ref(), &acked, Duration::from_secs(120)).await;
        // Let anything still in flight land before checking that nothing else appears.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_exactly_once(store.as_ref(), &fake, &acked, &companies).await;
        drop((doomed, survivor, ingress));
        names.delete_topics(TIERS).await;
    })
    .await;
}
