//! [`MemStore`]: an in-memory [`crate::store::StateStore`] that follows the trait's documented
//! semantics (tenant-keyed rows, global pointer tables, the dedup claim protocol, conditional
//! version upserts), with fault switches, a per-tenant gate on dedup claims and call counters.
//! The trait implementation is in `store_impl.rs`; the catalog, branch updates and the
//! appointment model live in `store_catalog.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::catalog::{Customer, Service, Staff};
use crate::domain::{
    ApiKey, Appointment, Branch, Call, Company, DedupEntry, EventRow, PhoneRoute, Secret,
};
use crate::error::StoreError;
use crate::ids::{BranchId, CompanyId, EventId};
use crate::record::Provider;
use crate::store::StoreResult;

#[derive(Default)]
pub(super) struct Data {
    pub(super) companies: BTreeMap<CompanyId, Company>,
    pub(super) branches: HashMap<CompanyId, BTreeMap<BranchId, Branch>>,
    pub(super) phones: HashMap<String, PhoneRoute>,
    pub(super) secrets: HashMap<(CompanyId, Provider), Vec<Secret>>,
    pub(super) events: HashMap<CompanyId, HashMap<EventId, EventRow>>,
    pub(super) event_pointers: HashMap<EventId, CompanyId>,
    pub(super) dedup: HashMap<(CompanyId, String), DedupEntry>,
    pub(super) calls: HashMap<(CompanyId, String), Call>,
    pub(super) appointments: HashMap<CompanyId, BTreeMap<Uuid, Appointment>>,
    pub(super) services: HashMap<CompanyId, BTreeMap<Uuid, Service>>,
    pub(super) staff: HashMap<CompanyId, BTreeMap<Uuid, Staff>>,
    /// (staff id, service id) per tenant.
    pub(super) assignments: HashMap<CompanyId, BTreeSet<(Uuid, Uuid)>>,
    pub(super) customers: HashMap<CompanyId, BTreeMap<Uuid, Customer>>,
    pub(super) routing_version: u64,
    /// The global key table: key hash → key.
    pub(super) api_keys: HashMap<String, ApiKey>,
}

/// An in-memory state store.
#[derive(Default)]
pub struct MemStore {
    data: Mutex<Data>,
    unavailable: AtomicBool,
    fail_next: AtomicUsize,
    failing_ops: Mutex<HashSet<&'static str>>,
    refusing_ops: Mutex<HashSet<&'static str>>,
    calls: Mutex<HashMap<&'static str, usize>>,
    failures: AtomicUsize,
    claim_gates: Mutex<HashMap<CompanyId, Arc<Semaphore>>>,
    claims_waiting: Mutex<HashMap<CompanyId, usize>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().expect("memstore lock poisoned")
    }

    // ---- knobs ---------------------------------------------------------------------------

    /// While set, every call fails with [`StoreError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// The next `n` calls fail with [`StoreError::Unavailable`].
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// While set, calls of this operation fail with [`StoreError::Unavailable`].
    pub fn set_op_failing(&self, op: &'static str, failing: bool) {
        let mut ops = self.failing_ops.lock().unwrap();
        if failing {
            ops.insert(op);
        } else {
            ops.remove(op);
        }
    }

    /// While set, calls of this operation fail permanently with [`StoreError::Conflict`].
    pub fn set_op_refusing(&self, op: &'static str, refusing: bool) {
        let mut ops = self.refusing_ops.lock().unwrap();
        if refusing {
            ops.insert(op);
        } else {
            ops.remove(op);
        }
    }

    /// From now on, `dedup_claim` of this tenant waits for a permit from
    /// [`MemStore::release_claims`]: its events stay in flight until the test lets them go.
    pub fn hold_claims(&self, company_id: CompanyId) {
        self.claim_gates
            .lock()
            .unwrap()
            .insert(company_id, Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` held claims of the tenant proceed.
    pub fn release_claims(&self, company_id: CompanyId, n: usize) {
        if let Some(gate) = self.claim_gates.lock().unwrap().get(&company_id) {
            gate.add_permits(n);
        }
    }

    // ---- observations --------------------------------------------------------------------

    /// Calls of one operation (failed ones included).
    pub fn calls_of(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    /// Calls answered with an injected failure.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Claims of the tenant currently waiting at its gate.
    pub fn claims_waiting(&self, company_id: CompanyId) -> usize {
        let waiting = self.claims_waiting.lock().unwrap();
        waiting.get(&company_id).copied().unwrap_or(0)
    }

    /// The tenant's ledger rows, in no particular order (no fault injection, not counted).
    pub fn rows_unordered(&self, company_id: CompanyId) -> Vec<EventRow> {
        let data = self.data();
        let rows = data.events.get(&company_id);
        rows.map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The stored dedup entry of a key, expired or not (not counted).
    pub fn dedup_row(&self, company_id: CompanyId, key: &str) -> Option<DedupEntry> {
        self.data()
            .dedup
            .get(&(company_id, key.to_owned()))
            .cloned()
    }

    /// The stored call (not counted).
    pub fn call_row(&self, company_id: CompanyId, call_id: &str) -> Option<Call> {
        self.data()
            .calls
            .get(&(company_id, call_id.to_owned()))
            .cloned()
    }

    /// Counts the call and injects a failure if a switch says so.
    pub(super) fn enter(&self, op: &'static str) -> StoreResult<()> {
        *self.calls.lock().unwrap().entry(op).or_insert(0) += 1;
        let once = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let failing = once
            || self.unavailable.load(Ordering::SeqCst)
            || self.failing_ops.lock().unwrap().contains(op);
        if self.refusing_ops.lock().unwrap().contains(op) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Conflict(format!("memstore: {op} refused")));
        }
        if failing {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable {
                operation: op,
                source: Box::new(std::io::Error::other("memstore: injected failure")),
            });
        }
        Ok(())
    }

    pub(super) async fn claim_gate(&self, company_id: CompanyId) {
        let gate = self.claim_gates.lock().unwrap().get(&company_id).cloned();
        let Some(gate) = gate else { return };
        *self
            .claims_waiting
            .lock()
            .unwrap()
            .entry(company_id)
            .or_insert(0) += 1;
        gate.acquire().await.expect("gate never closes").forget();
        *self
            .claims_waiting
            .lock()
            .unwrap()
            .get_mut(&company_id)
            .unwrap() -= 1;
    }
}
