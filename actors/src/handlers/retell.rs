//! Retell `call_started` / `call_ended` / `call_analyzed`: upsert the call.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{booking, wire, Handled, HandlerCtx, HandlerError};
use crate::domain::Call;
use crate::ids::BranchId;
use crate::phone;
use crate::record::StoredRecord;

/// The event name, read first: events we do not act on are not read any further.
#[derive(Deserialize)]
struct Head {
    event: String,
}

#[derive(Deserialize)]
struct Body {
    call: RetellCall,
}

/// The call object as the worker reads it. The ingress reads every body through
/// [`read_event`] too, so a body this cannot read is refused at the door (400), and
/// `schemas/json/retell_webhook.schema.json` is tested to admit nothing this refuses.
#[derive(Deserialize)]
pub struct RetellCall {
    call_id: String,
    agent_id: Option<String>,
    direction: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    call_status: Option<String>,
    #[serde(default, deserialize_with = "wire::timestamp_ms")]
    start_timestamp: Option<i64>,
    #[serde(default, deserialize_with = "wire::timestamp_ms")]
    end_timestamp: Option<i64>,
    #[serde(default, deserialize_with = "wire::duration_ms")]
    duration_ms: Option<i64>,
    disconnection_reason: Option<String>,
    call_analysis: Option<CallAnalysis>,
}

#[derive(Deserialize)]
struct CallAnalysis {
    call_summary: Option<String>,
}

/// A Retell webhook as the worker reads it.
pub enum RetellEvent {
    /// An event we store but do not act on (`transcript_updated`, ...): not read further.
    Ignored { event: String },
    /// A call event, with its order among the call's events.
    Call {
        event: String,
        version: i64,
        call: Box<RetellCall>,
    },
}

/// Reads a Retell webhook body (already parsed as JSON) the way the worker will.
pub fn read_event(json: &serde_json::Value) -> Result<RetellEvent, String> {
    let head: Head = wire::read(json)?;
    let Some(version) = retell_version(&head.event) else {
        return Ok(RetellEvent::Ignored { event: head.event });
    };
    let body: Body = wire::read(json)?;
    Ok(RetellEvent::Call {
        event: head.event,
        version,
        call: Box::new(body.call),
    })
}

/// Retell sends a call's events in this order but not blocking, so they may arrive out of
/// order. Later events carry a superset of earlier ones, so the later one wins.
pub fn retell_version(event: &str) -> Option<i64> {
    match event {
        "call_started" => Some(1),
        "call_ended" => Some(2),
        "call_analyzed" => Some(3),
        _ => None,
    }
}

pub(super) async fn handle(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
) -> Result<Handled, HandlerError> {
    let unreadable =
        |e: String| HandlerError::Permanent(format!("retell body does not parse: {e}"));
    let json: serde_json::Value =
        serde_json::from_slice(&record.value).map_err(|e| unreadable(e.to_string()))?;
    let (event, version, call) = match read_event(&json).map_err(unreadable)? {
        RetellEvent::Ignored { event } => {
            return Ok(Handled {
                note: Some(format!("retell event {event} is stored but not acted on")),
            })
        }
        RetellEvent::Call {
            event,
            version,
            call,
        } => (event, version, *call),
    };
    let from_number =
        normalize_optional("call.from_number", call.from_number.as_deref(), ctx, record);
    let to_number = normalize_optional("call.to_number", call.to_number.as_deref(), ctx, record);
    // Our own number is the callee of an inbound call and the caller of an outbound one.
    let ours = match call.direction.as_deref() {
        Some("outbound") => from_number.as_deref(),
        _ => to_number.as_deref(),
    };
    let branch_id = branch_for(ctx, record, ours).await?;
    let row = Call {
        company_id: record.meta.company_id,
        call_id: call.call_id,
        branch_id,
        agent_id: call.agent_id,
        direction: call.direction,
        from_number,
        to_number,
        status: call
            .call_status
            .unwrap_or_else(|| status_for(&event).into()),
        start_at: call.start_timestamp.and_then(ms_to_utc),
        end_at: call.end_timestamp.and_then(ms_to_utc),
        duration_ms: call.duration_ms,
        disconnection_reason: call.disconnection_reason,
        summary: call.call_analysis.and_then(|a| a.call_summary),
        last_event: event,
        version,
        updated_at: ctx.clock.now(),
    };
    let applied = ctx.store.upsert_call(&row).await?;
    // `call_analyzed` books (its analysis is the final word); `call_ended` only when the
    // tenant's agents send no analysis. The key is the call's either way, so a call books at
    // most once whichever event gets there.
    let books = version == 3 || (version == 2 && ctx.book_on_call_ended);
    let booking_note = if books {
        let call_json = json.get("call").unwrap_or(&serde_json::Value::Null);
        booking::book_from_call(ctx, record, call_json, &row).await?
    } else {
        None
    };
    let stale = (!applied).then(|| "a newer event of this call was already applied".to_owned());
    Ok(Handled {
        note: booking_note.or(stale),
    })
}

fn status_for(event: &str) -> &'static str {
    match event {
        "call_started" => "ongoing",
        _ => "ended",
    }
}

/// A number as E.164, or `None` (anonymous, or not a number we can read). An unreadable
/// number must not cost the whole call record, and it is never guessed.
fn normalize_optional(
    field: &str,
    value: Option<&str>,
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
) -> Option<String> {
    match phone::normalize_caller(value, ctx.default_region) {
        Ok(number) => number,
        Err(error) => {
            tracing::warn!(
                event_id = %record.meta.event_id,
                field,
                error = %error,
                "unreadable phone number stored as none"
            );
            None
        }
    }
}

/// The branch owning our side of the call, only if it belongs to this tenant.
async fn branch_for(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    number: Option<&str>,
) -> Result<Option<BranchId>, HandlerError> {
    let Some(number) = number else {
        return Ok(None);
    };
    let route = ctx.store.resolve_phone(number).await?;
    match route {
        Some(route) if route.company_id == record.meta.company_id => Ok(Some(route.branch_id)),
        Some(_) => {
            tracing::warn!(
                company_id = %record.meta.company_id,
                event_id = %record.meta.event_id,
                "call number belongs to another tenant; branch left empty"
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

fn ms_to_utc(ms: i64) -> Option<DateTime<Utc>> {
    crate::timestamp::from_ms(ms)
}
