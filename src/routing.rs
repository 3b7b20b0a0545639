//! `call_inbound` routing: which tenant, branch and agent answer a call to one of our numbers.
//!
//! Retell asks before it answers, while the caller hears ringing, so a cached answer must
//! cost next to nothing: one read lock, one hash lookup and an `Arc` clone. The answer body is
//! serialised once when an entry is filled, not per request.
//!
//! Freshness comes from three sources, in order of speed:
//! - [`InboundResolver::invalidate`] / [`InboundResolver::invalidate_all`] in this process;
//! - [`InboundResolver::spawn_version_watch`], which polls the store's routing version and
//!   clears the cache when another process (the CLI, another node) changed phone routing;
//! - the TTLs: positive entries live `inbound.cache_ttl_secs`, unknown numbers only
//!   `inbound.negative_ttl_secs`, so a branch added a moment ago is found quickly even without
//!   the watch. Service changes do not bump the routing version; they show up within the TTL.

mod bench;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use askpro_actors::phone::{self, PhoneError};
use askpro_actors::{BranchId, CompanyId, StateStore, StoreError};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use bench::{bench_resolver, BenchResolverArgs, BenchResolverReport};

use crate::config::Config;

/// More entries than this and expired ones are pruned first; an attacker sending random
/// numbers (resolution happens before the signature check) cannot grow the cache forever.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Where a call to one of our numbers goes, and what the agent is told about the branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundRoute {
    pub company_id: CompanyId,
    pub company_name: String,
    pub branch_id: BranchId,
    pub branch_name: String,
    /// IANA zone of the branch, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// The branch's Retell agent; `None` lets Retell use the number's default agent.
    pub agent_id: Option<String>,
    /// Names of the active services offered at the branch, oldest first.
    pub service_names: Vec<String>,
    answer: Bytes,
}

impl InboundRoute {
    pub fn new(
        company_id: CompanyId,
        company_name: String,
        branch_id: BranchId,
        branch_name: String,
        timezone: String,
        agent_id: Option<String>,
        service_names: Vec<String>,
    ) -> Self {
        let mut route = Self {
            company_id,
            company_name,
            branch_id,
            branch_name,
            timezone,
            agent_id,
            service_names,
            answer: Bytes::new(),
        };
        route.answer = Bytes::from(route.answer_json().to_string());
        route
    }

    /// Retell's `call_inbound` response. The variables sit under `call_inbound` (the original
    /// system put them at the top level, where Retell ignores them), and all values are
    /// strings because Retell's dynamic variables are `{string: string}`.
    pub fn answer_json(&self) -> Value {
        let mut inner = Map::new();
        if let Some(agent) = &self.agent_id {
            inner.insert("override_agent_id".into(), json!(agent));
        }
        inner.insert(
            "dynamic_variables".into(),
            json!({
                "company_name": self.company_name,
                "branch_name": self.branch_name,
                "timezone": self.timezone,
                "services": self.service_names.join(", "),
            }),
        );
        json!({ "call_inbound": inner })
    }

    /// [`Self::answer_json`], serialised once when the route was built.
    pub fn answer(&self) -> Bytes {
        self.answer.clone()
    }
}

/// Why a number could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    InvalidNumber(#[from] PhoneError),
    #[error("routing lookup failed")]
    Store(#[from] StoreError),
}

/// The answer of [`InboundResolver::resolve`].
#[derive(Clone, Debug)]
pub struct Resolved {
    /// `None`: no branch owns the number.
    pub route: Option<Arc<InboundRoute>>,
    /// Whether the answer came from the cache (for metrics and tests).
    pub cached: bool,
}

/// Cache settings; [`ResolverSettings::from_config`] reads the `[inbound]` section.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    pub ttl: Duration,
    /// Zero disables caching unknown numbers.
    pub negative_ttl: Duration,
    /// Region for numbers not in E.164 (Retell sends E.164; this is a fallback).
    pub default_region: String,
    pub max_entries: usize,
}

impl ResolverSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            ttl: Duration::from_secs(config.inbound.cache_ttl_secs),
            negative_ttl: Duration::from_secs(config.inbound.negative_ttl_secs),
            default_region: config.phone.default_region.clone(),
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The time source of TTLs; tests inject a manual one.
pub type Now = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Entry {
    expires_at: Instant,
    /// The normalised number, so [`InboundResolver::invalidate`] finds entries cached under
    /// another spelling.
    e164: String,
    route: Option<Arc<InboundRoute>>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    /// Bumped by every invalidation; a fill that started before one is discarded, so a lookup
    /// racing with an invalidation cannot put stale data back.
    generation: u64,
}

/// Resolves our phone numbers to [`InboundRoute`]s through a TTL cache over the store.
pub struct InboundResolver {
    store: Arc<dyn StateStore>,
    settings: ResolverSettings,
    now: Now,
    cache: RwLock<Cache>,
}

impl InboundResolver {
    pub fn new(store: Arc<dyn StateStore>, settings: ResolverSettings) -> Self {
        Self::with_clock(store, settings, Arc::new(Instant::now))
    }

    pub fn with_clock(store: Arc<dyn StateStore>, settings: ResolverSettings, now: Now) -> Self {
        Self {
            store,
            settings,
            now,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// The route of `number` (as Retell sent it; normalised on a miss). Concurrent misses for
    /// one number each read the store; that is rare and cheaper than coordinating them.
    pub async fn resolve(&self, number: &str) -> Result<Resolved, ResolveError> {
        if let Some(route) = self.cached(number) {
            return Ok(Resolved {
                route,
                cached: true,
            });
        }
        let generation = self.read().generation;
        let e164 = phone::normalize(number, &self.settings.default_region)?;
        let route = self.load(&e164).await?;
        self.insert(number, e164, route.clone(), generation);
        Ok(Resolved {
            route,
            cached: false,
        })
    }

    /// The cached answer for `number`: `Some(None)` is a cached "unknown number", `None` a
    /// miss (absent or expired).
    pub fn cached(&self, number: &str) -> Option<Option<Arc<InboundRoute>>> {
        let now = (self.now)();
        let cache = self.read();
        let entry = cache.entries.get(number)?;
        (now < entry.expires_at).then(|| entry.route.clone())
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        let mut cache = self.write();
        cache.generation += 1;
        cache.entries.clear();
    }

    /// Drops the entries of one number, in any spelling that normalises to the same E.164.
    pub fn invalidate(&self, number: &str) {
        let e164 = phone::normalize(number, &self.settings.default_region).ok();
        let mut cache = self.write();
        cache.generation += 1;
        cache
            .entries
            .retain(|key, entry| key != number && Some(&entry.e164) != e164.as_ref());
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Polls [`StateStore::routing_version`] every `interval` and clears the cache whenever
    /// it changed (or could not be read for a while: changes may have been missed), until
    /// `shutdown`. The owner of the resolver spawns it once.
    pub fn spawn_version_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        interval: Duration,
    ) -> JoinHandle<()> {
        let resolver = Arc::clone(self);
        tokio::spawn(async move { resolver.watch_versions(shutdown, interval).await })
    }

    async fn watch_versions(&self, shutdown: CancellationToken, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<u64> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self.store.routing_version().await {
                Ok(version) if seen == Some(version) => {}
                Ok(version) => {
                    // The first read also clears: a change may predate the watch.
                    self.invalidate_all();
                    if seen.is_some() || failing {
                        tracing::debug!(version, "routing version changed; inbound cache cleared");
                    }
                    seen = Some(version);
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = %error, "routing version unreadable; inbound cache kept until ttl");
                    }
                    // Forget the version so the cache is cleared once the store answers again.
                    seen = None;
                    failing = true;
                }
            }
        }
    }

    async fn load(&self, e164: &str) -> Result<Option<Arc<InboundRoute>>, StoreError> {
        let Some(pointer) = self.store.resolve_phone(e164).await? else {
            return Ok(None);
        };
        let (company_id, branch_id) = (pointer.company_id, pointer.branch_id);
        let (branch, company, services) = tokio::try_join!(
            self.store.branch(company_id, branch_id),
            self.store.company(company_id),
            self.store.services(company_id),
        )?;
        let (Some(branch), Some(company)) = (branch, company) else {
            tracing::warn!(%company_id, %branch_id, phone = e164, "phone index points at a missing branch or company; number treated as unknown");
            return Ok(None);
        };
        let service_names = services
            .into_iter()
            .filter(|s| s.offered_at(branch.id))
            .map(|s| s.name)
            .collect();
        Ok(Some(Arc::new(InboundRoute::new(
            company.id,
            company.name,
            branch.id,
            branch.name,
            branch.timezone,
            branch.retell_agent_id,
            service_names,
        ))))
    }

    fn insert(
        &self,
        number: &str,
        e164: String,
        route: Option<Arc<InboundRoute>>,
        generation: u64,
    ) {
        let ttl = match route {
            Some(_) => self.settings.ttl,
            None => self.settings.negative_ttl,
        };
        if ttl.is_zero() {
            return;
        }
        let now = (self.now)();
        let mut cache = self.write();
        if cache.generation != generation {
            return;
        }
        if cache.entries.len() >= self.settings.max_entries && !cache.entries.contains_key(number) {
            prune(&mut cache.entries, now, self.settings.max_entries);
        }
        let entry = Entry {
            expires_at: now + ttl,
            e164,
            route,
        };
        cache.entries.insert(number.to_owned(), entry);
    }

    // Nothing panics while holding the lock with the map half-updated, so a poisoned lock
    // still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes room: expired entries go first, then unknown numbers, then everything.
fn prune(entries: &mut HashMap<String, Entry>, now: Instant, max: usize) {
    entries.retain(|_, e| e.expires_at > now);
    if entries.len() >= max {
        entries.retain(|_, e| e.route.is_some());
    }
    if entries.len() >= max {
        entries.clear();
    }
    tracing::debug!(
        remaining = entries.len(),
        max,
        "inbound cache full; entries pruned"
    );
}
