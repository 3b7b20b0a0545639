//! The tool service: one answer per (company, call, tool, arguments), within the budget, and
//! `check_availability` over a short per-branch slot cache.

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;

use super::answer;
use super::cache::TtlMap;
use super::{Tool, ToolCall, ToolSettings};
use crate::booking::{Booker, BookingApi, BookingError, Slots};
use crate::catalog::CalcomConfig;
use crate::clock::Clock;
use crate::domain::Branch;
use crate::extract::spoken::{self, SpokenSlot, Unclear};
use crate::ids::BranchId;
use crate::store::StateStore;

/// Slot cache key: branch, event type, first day searched.
type SlotKey = (BranchId, i64, NaiveDate);
/// A tool run shared by the first request and Retell's retries.
type Run = Shared<BoxFuture<'static, Value>>;

/// Everything a tool needs. Cheap to share (`Arc`).
pub struct ToolService {
    pub(super) store: Arc<dyn StateStore>,
    pub(super) api: Arc<dyn BookingApi>,
    /// `None` in a process without workers: bookings wait as `pending_sync` for one.
    pub(super) booker: Option<Arc<Booker>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: ToolSettings,
    slots: TtlMap<SlotKey, Slots>,
    answers: TtlMap<String, Run>,
}

impl ToolService {
    pub fn new(
        store: Arc<dyn StateStore>,
        api: Arc<dyn BookingApi>,
        booker: Option<Arc<Booker>>,
        clock: Arc<dyn Clock>,
        settings: ToolSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: TtlMap::new(settings.slot_cache_ttl, settings.max_answers),
            answers: TtlMap::new(settings.answer_ttl, settings.max_answers),
            store,
            api,
            booker,
            clock,
            settings,
        })
    }

    /// Answers one tool call. A retry of the same call and arguments gets the first run's
    /// answer (waiting for it if it is still going). Past the budget the answer is "pending"
    /// and the run goes on in the background, so the retry after it may get the real answer.
    pub async fn handle(self: &Arc<Self>, call: ToolCall) -> Value {
        let key = format!(
            "{}|{}|{}|{}",
            call.company_id,
            call.call_id,
            call.tool.as_str(),
            call.args.canonical()
        );
        let tool = call.tool;
        let zone = zone_of(&call.branch);
        let service = Arc::clone(self);
        let make = move || {
            // Spawned: the run finishes even when every waiting request has given up.
            let task = tokio::spawn(async move { service.run(call).await });
            async move {
                task.await.unwrap_or_else(|err| {
                    tracing::error!(error = %err, "tool run panicked");
                    answer::unavailable(tool.result_field(), "internal error")
                })
            }
            .boxed()
            .shared()
        };
        // Reads answer afresh (a check after this call's own booking must see it); what
        // changes the calendar answers once per (company, call, tool, arguments).
        let run = match tool {
            Tool::CheckAvailability | Tool::FindAppointment => make(),
            _ => self.answers.get_or_insert_with(key, make),
        };
        match tokio::time::timeout(self.settings.budget, run).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(
                    tool = tool.as_str(),
                    budget_ms = self.settings.budget.as_millis() as u64,
                    "tool answer past its budget; answered pending"
                );
                match tool {
                    Tool::CheckAvailability => answer::pending_check(),
                    _ => answer::pending_booking(None, None, zone),
                }
            }
        }
    }

    async fn run(self: Arc<Self>, call: ToolCall) -> Value {
        let started = tokio::time::Instant::now();
        let answer = match call.tool {
            Tool::CheckAvailability => self.check_availability(&call).await,
            Tool::BookAppointment => self.book_appointment(&call).await,
            Tool::FindAppointment => self.find_appointment(&call).await,
            Tool::RescheduleAppointment => self.reschedule_appointment(&call).await,
            Tool::CancelAppointment => self.cancel_appointment(&call).await,
        };
        tracing::info!(
            company_id = %call.company_id,
            branch_id = %call.branch.id,
            call_id = %call.call_id,
            tool = call.tool.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tool call answered"
        );
        answer
    }

    /// The spoken date and time, or the answer asking to repeat them.
    pub(super) fn read_slot(&self, call: &ToolCall) -> Result<SpokenSlot, Value> {
        let zone = zone_of(&call.branch);
        let date = call.args.date.as_deref().unwrap_or_default();
        spoken::read_slot(date, call.args.time.as_deref(), call.call_start, zone)
            .map_err(|unclear| answer::repeat(call.tool.result_field(), &unclear))
    }

    async fn check_availability(&self, call: &ToolCall) -> Value {
        let zone = zone_of(&call.branch);
        let slot = match self.read_slot(call) {
            Ok(slot) => slot,
            Err(repeat) => return repeat,
        };
        let Some(requested) = answer::requested_instant(&slot, zone) else {
            return answer::repeat(call.tool.result_field(), &dst_gap(call));
        };
        let Some(target) = call.branch.calcom.clone() else {
            return answer::unavailable(
                call.tool.result_field(),
                "the branch has no cal.com connection",
            );
        };
        let event_type = self.event_type(call, &target).await;
        match self
            .free_slots(&call.branch, &target, event_type.0, slot.date)
            .await
        {
            Ok(free) => {
                let found = answer::resolve(&slot, requested, &free, zone, self.not_before(call));
                answer::availability(&slot, &found, zone)
            }
            Err(error) => {
                tracing::warn!(company_id = %call.company_id, branch_id = %call.branch.id, error = %error, "cal.com slots unavailable for a tool call");
                answer::pending_check()
            }
        }
    }

    /// Slots are never offered before the call started nor before now.
    pub(super) fn not_before(&self, call: &ToolCall) -> DateTime<Utc> {
        call.call_start.max(self.clock.now())
    }

    /// The event type and length of the service the caller named (else the branch's first,
    /// else the branch's own event type) and the service's id.
    pub(super) async fn event_type(
        &self,
        call: &ToolCall,
        target: &CalcomConfig,
    ) -> (i64, Option<u32>, Option<uuid::Uuid>) {
        let services = match self.store.services(call.company_id).await {
            Ok(services) => services,
            Err(error) => {
                tracing::warn!(company_id = %call.company_id, error = %error, "services unreadable; using the branch's event type");
                Vec::new()
            }
        };
        let offered: Vec<_> = services
            .into_iter()
            .filter(|s| s.offered_at(call.branch.id))
            .collect();
        let wanted = call.args.service.as_deref().map(str::trim);
        let named = wanted.and_then(|w| {
            offered
                .iter()
                .find(|s| s.name.trim().eq_ignore_ascii_case(w))
        });
        match named.or(offered.first()) {
            Some(s) => (
                s.calcom_event_type_id.unwrap_or(target.event_type_id),
                Some(s.duration_minutes),
                Some(s.id),
            ),
            None => (target.event_type_id, None, None),
        }
    }

    /// Free starts from `day` on, for `search_days` days, through the branch's slot cache.
    pub(super) async fn free_slots(
        &self,
        branch: &Branch,
        target: &CalcomConfig,
        event_type_id: i64,
        day: NaiveDate,
    ) -> Result<Slots, BookingError> {
        let key = (branch.id, event_type_id, day);
        if let Some(free) = self.slots.get(&key) {
            return Ok(free);
        }
        let zone = zone_of(branch);
        let local_start = |d: NaiveDate| {
            d.and_time(NaiveTime::MIN)
                .and_local_timezone(zone)
                .earliest()
                .map(|at| at.with_timezone(&Utc))
        };
        let last = day.checked_add_days(Days::new(u64::from(self.settings.search_days.max(1))));
        let (Some(start), Some(end)) = (local_start(day), last.and_then(local_start)) else {
            return Ok(Vec::new());
        };
        let free = self
            .api
            .slots(target, event_type_id, start, end, zone.name())
            .await?;
        self.slots.insert(key, free.clone());
        Ok(free)
    }

    /// A booking, cancellation or reschedule changed the branch's calendar.
    pub(super) fn forget_slots(&self, branch_id: BranchId) {
        self.slots.retain(|(b, _, _)| *b != branch_id);
    }
}

/// The branch's zone; an unreadable one (never stored by the CLI) falls back to Berlin.
pub(super) fn zone_of(branch: &Branch) -> Tz {
    branch.timezone.parse().unwrap_or(chrono_tz::Europe::Berlin)
}

pub(super) fn dst_gap(call: &ToolCall) -> Unclear {
    Unclear {
        field: "time",
        value: call.args.time.clone().unwrap_or_default(),
        problem: "does not exist on that day (clock change)".into(),
    }
}
