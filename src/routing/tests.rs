//! The resolver over the embedded store, with a manual clock for the TTLs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use askpro_actors::catalog::Service;
use askpro_actors::domain::{Branch, Company};
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

use super::*;
use crate::embedded::EmbeddedStore;

/// A clock that only moves when told to.
#[derive(Clone)]
struct ManualNow {
    base: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl ManualNow {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).expect("test durations are small");
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn source(&self) -> Now {
        let me = self.clone();
        Arc::new(move || me.base + Duration::from_millis(me.offset_ms.load(Ordering::SeqCst)))
    }
}

struct Fixture {
    _dir: TempDir,
    store: Arc<dyn StateStore>,
    clock: ManualNow,
    resolver: Arc<InboundResolver>,
}

fn settings() -> ResolverSettings {
    ResolverSettings {
        ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(5),
        default_region: "DE".into(),
        max_entries: DEFAULT_MAX_ENTRIES,
    }
}

fn fixture_with(settings: ResolverSettings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let clock = ManualNow::new();
    let resolver = Arc::new(InboundResolver::with_clock(
        Arc::clone(&store),
        settings,
        clock.source(),
    ));
    Fixture {
        _dir: dir,
        store,
        clock,
        resolver,
    }
}

fn fixture() -> Fixture {
    fixture_with(settings())
}

async fn company(store: &dyn StateStore, name: &str) -> Company {
    let company = Company {
        id: CompanyId::new(),
        name: name.into(),
        allow_unsigned_calcom: false,
        created_at: chrono::Utc::now(),
    };
    store.create_company(&company).await.unwrap();
    company
}

async fn branch(
    store: &dyn StateStore,
    company: CompanyId,
    phone: &str,
    agent: Option<&str>,
) -> Branch {
    let branch = Branch {
        id: BranchId::new(),
        company_id: company,
        name: format!("branch {phone}"),
        phone: phone.into(),
        timezone: "Europe/Berlin".into(),
        retell_agent_id: agent.map(str::to_owned),
        retell_llm_id: None,
        calcom: None,
        created_at: chrono::Utc::now(),
        fallback_email: None,
    };
    store.create_branch(&branch).await.unwrap();
    branch
}

async fn service(
    store: &dyn StateStore,
    company: CompanyId,
    name: &str,
    at: Option<BranchId>,
    active: bool,
) {
    let service = Service {
        company_id: company,
        id: Uuid::now_v7(),
        branch_id: at,
        name: name.into(),
        duration_minutes: 30,
        price_cents: 2_500,
        currency: "EUR".into(),
        calcom_event_type_id: None,
        active,
        metadata: BTreeMap::new(),
        created_at: chrono::Utc::now(),
    };
    store.create_service(&service).await.unwrap();
}

#[tokio::test]
async fn resolves_a_branch_with_its_services_then_answers_from_the_cache() {
    let f = fixture();
    let store = f.store.as_ref();
    let c = company(store, "Salon Berlin").await;
    let b = branch(store, c.id, "+49301234567", Some("agent_mitte")).await;
    let other = branch(store, c.id, "+49301234568", None).await;
    service(store, c.id, "Herrenhaarschnitt", Some(b.id), true).await;
    service(store, c.id, "Färben", None, true).await;
    service(store, c.id, "Dauerwelle", None, false).await;
    service(store, c.id, "Bart", Some(other.id), true).await;

    let first = f.resolver.resolve("+49301234567").await.unwrap();
    assert!(!first.cached);
    let route = first.route.expect("routed");
    assert_eq!(route.company_id, c.id);
    assert_eq!(route.company_name, "Salon Berlin");
    assert_eq!(route.branch_id, b.id);
    assert_eq!(route.branch_name, b.name);
    assert_eq!(route.timezone, "Europe/Berlin");
    assert_eq!(route.agent_id.as_deref(), Some("agent_mitte"));
    assert_eq!(route.service_names, ["Herrenhaarschnitt", "Färben"]);

    let second = f.resolver.resolve("+49301234567").await.unwrap();
    assert!(second.cached);
    assert!(Arc::ptr_eq(&route, &second.route.unwrap()), "the same Arc");
}

#[tokio::test]
async fn the_answer_nests_strings_under_call_inbound_and_omits_a_missing_agent() {
    let with_agent = InboundRoute::new(
        CompanyId::new(),
        "Salon".into(),
        BranchId::new(),
        "Mitte".into(),
        "Europe/Berlin".into(),
        Some("agent_1".into()),
        vec!["A".into(), "B".into()],
    );
    let expected = json!({"call_inbound": {
        "override_agent_id": "agent_1",
        "dynamic_variables": {
            "company_name": "Salon", "branch_name": "Mitte",
            "timezone": "Europe/Berlin", "services": "A, B",
        },
    }});
    assert_eq!(with_agent.answer_json(), expected);
    let parsed: Value = serde_json::from_slice(&with_agent.answer()).unwrap();
    assert_eq!(parsed, expected);

    let without = InboundRoute {
        agent_id: None,
        service_names: Vec::new(),
        ..with_agent
    };
    let answer = without.answer_json();
    assert!(answer["call_inbound"].get("override_agent_id").is_none());
    assert_eq!(answer["call_inbound"]["dynamic_variables"]["services"], "");
}

#[tokio::test]
async fn positive_entries_expire_after_the_ttl() {
    let f = fixture();
    let c = company(f.store.as_ref(), "ttl").await;
    branch(f.store.as_ref(), c.id, "+49301234569", None).await;
    assert!(!f.resolver.resolve("+49301234569").await.unwrap().cached);
    f.clock.advance(Duration::from_secs(299));
    assert!(f.resolver.resolve("+49301234569").await.unwrap().cached);
    f.clock.advance(Duration::from_secs(2));
    let after = f.resolver.resolve("+49301234569").await.unwrap();
    assert!(!after.cached, "expired, read again");
    assert!(after.route.is_some());
}

#[tokio::test]
async fn unknown_numbers_are_cached_briefly() {
    let f = fixture();
    let unknown = f.resolver.resolve("+49301234570").await.unwrap();
    assert!(unknown.route.is_none());
    assert!(!unknown.cached);
    assert!(f.resolver.resolve("+49301234570").await.unwrap().cached);

    // A branch created meanwhile (by another process: no invalidation) shows up once the
    // short negative TTL has passed.
    let c = company(f.store.as_ref(), "late").await;
    branch(f.store.as_ref(), c.id, "+49301234570", None).await;
    let still = f.resolver.resolve("+49301234570").await.unwrap();
    assert!(still.cached && still.route.is_none());
    f.clock.advance(Duration::from_secs(6));
    let found = f.resolver.resolve("+49301234570").await.unwrap();
    assert!(!found.cached);
    assert_eq!(found.route.unwrap().company_id, c.id);
}

#[tokio::test]
async fn a_zero_negative_ttl_disables_negative_caching() {
    let f = fixture_with(ResolverSettings {
        negative_ttl: Duration::ZERO,
        ..settings()
    });
    f.resolver.resolve("+49301234571").await.unwrap();
    assert!(!f.resolver.resolve("+49301234571").await.unwrap().cached);
    assert!(f.resolver.is_empty());
}

#[tokio::test]
async fn invalidate_drops_a_number_in_any_spelling() {
    let f = fixture();
    let c = company(f.store.as_ref(), "spelling").await;
    branch(f.store.as_ref(), c.id, "+49301234572", None).await;
    f.resolver.resolve("+49 30 1234572").await.unwrap();
    f.resolver.resolve("+49301234573").await.unwrap();
    assert_eq!(f.resolver.len(), 2);
    f.resolver.invalidate("030 1234572");
    assert!(f.resolver.cached("+49 30 1234572").is_none());
    assert!(f.resolver.cached("+49301234573").is_some(), "others stay");
    f.resolver.invalidate_all();
    assert!(f.resolver.is_empty());
}

#[tokio::test]
async fn a_routing_version_change_clears_the_cache() {
    let f = fixture();
    let c = company(f.store.as_ref(), "moving").await;
    let mut b = branch(f.store.as_ref(), c.id, "+49301234574", None).await;
    let shutdown = CancellationToken::new();
    let watch = f
        .resolver
        .spawn_version_watch(shutdown.clone(), Duration::from_millis(10));
    assert_eq!(
        f.resolver
            .resolve("+49301234574")
            .await
            .unwrap()
            .route
            .unwrap()
            .branch_id,
        b.id
    );
    // Another process moves the branch to a new number; this resolver is not told.
    b.phone = "+49301234575".into();
    f.store.update_branch(&b).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while f
        .resolver
        .resolve("+49301234574")
        .await
        .unwrap()
        .route
        .is_some()
    {
        assert!(Instant::now() < deadline, "the cache was never cleared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved = f.resolver.resolve("+49301234575").await.unwrap();
    assert_eq!(moved.route.unwrap().branch_id, b.id);
    shutdown.cancel();
    watch.await.unwrap();
}

#[tokio::test]
async fn invalid_numbers_are_refused_and_not_cached() {
    let f = fixture();
    let err = f.resolver.resolve("anonymous").await.unwrap_err();
    assert!(matches!(err, ResolveError::InvalidNumber(_)), "{err}");
    assert!(f.resolver.is_empty());
}

#[tokio::test]
async fn a_full_cache_prunes_expired_then_unknown_entries() {
    let f = fixture_with(ResolverSettings {
        max_entries: 2,
        ..settings()
    });
    let c = company(f.store.as_ref(), "full").await;
    branch(f.store.as_ref(), c.id, "+49301234576", None).await;
    f.resolver.resolve("+49301234576").await.unwrap();
    f.resolver.resolve("+49301234577").await.unwrap();
    f.resolver.resolve("+49301234578").await.unwrap();
    assert_eq!(f.resolver.len(), 2, "the unknown number made room");
    assert!(
        f.resolver.cached("+49301234576").is_some(),
        "routes are kept"
    );
}

#[tokio::test]
async fn an_invalidation_during_a_lookup_discards_its_result() {
    let f = fixture();
    let c = company(f.store.as_ref(), "race").await;
    branch(f.store.as_ref(), c.id, "+49301234579", None).await;
    let generation = f.resolver.read().generation;
    f.resolver.invalidate_all();
    f.resolver
        .insert("+49301234579", "+49301234579".into(), None, generation);
    assert!(f.resolver.cached("+49301234579").is_none());
}

#[test]
fn settings_come_from_the_inbound_section_and_bad_values_name_their_key() {
    use figment::providers::{Format, Toml};
    let defaults = || -> Config {
        figment::Figment::from(Toml::string(crate::config::DEFAULTS))
            .extract()
            .unwrap()
    };
    let settings = ResolverSettings::from_config(&defaults());
    assert_eq!(settings.ttl, Duration::from_secs(300));
    assert_eq!(settings.negative_ttl, Duration::from_secs(5));
    assert_eq!(defaults().inbound.version_poll_ms, 1_000);
    type Spoil = fn(&mut Config);
    let cases: [(&str, Spoil); 3] = [
        ("inbound.cache_ttl_secs", |c| c.inbound.cache_ttl_secs = 0),
        ("inbound.negative_ttl_secs", |c| {
            c.inbound.negative_ttl_secs = 301
        }),
        ("inbound.version_poll_ms", |c| c.inbound.version_poll_ms = 0),
    ];
    for (key, spoil) in cases {
        let mut config = defaults();
        spoil(&mut config);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}
