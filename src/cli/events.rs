//! `askpro events list|show|replay`: the event ledger.

use std::time::Duration;

use anyhow::{bail, Result};
use askpro_actors::domain::{EventRow, EventStatus};
use askpro_actors::{CompanyId, EventId, EventLog, StateStore};
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::emit;
use crate::config::{Config, LogBackend};
use crate::embedded::EmbeddedLog;

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// List events, newest first.
    List {
        /// Only this company's events (default: every company, plus unrouted events).
        #[arg(long, value_name = "ID")]
        company: Option<CompanyId>,
        /// received, processing, processed, duplicate, retrying, failed, rejected or unrouted.
        #[arg(long, value_parser = parse_status)]
        status: Option<EventStatus>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one event, including its raw body.
    Show {
        id: EventId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run events again: one by id, or a company's events in one status (default: failed).
    ///
    /// The stored raw body goes back onto the log under the same event id, so it is safe
    /// under dedup: an event that was processed stays a no-op, and a booking that already
    /// exists is found, never made twice. Rejected and unrouted events cannot be replayed
    /// (they never passed validation or routing; fix the sender instead).
    #[command(verbatim_doc_comment)]
    Replay {
        /// The event to replay (or use --company with --status).
        #[arg(required_unless_present = "company", conflicts_with_all = ["company", "status"])]
        id: Option<EventId>,
        /// Replay this company's events in --status.
        #[arg(long, value_name = "ID")]
        company: Option<CompanyId>,
        /// Which events of --company to replay.
        #[arg(long, value_parser = parse_status, default_value = "failed")]
        status: Option<EventStatus>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<EventStatus, String> {
    s.parse()
}

pub async fn run(config: &Config, cmd: EventsCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        EventsCmd::List {
            company,
            status,
            limit,
            json,
        } => {
            let rows = list(store.as_ref(), company, status, limit).await?;
            let shown: Vec<Value> = rows.iter().map(summary).collect();
            emit(json, &shown, |_| {
                rows.iter()
                    .map(|e| {
                        format!(
                            "{}  {:<10}  {:<7} {:<20} attempts={} {}",
                            e.id,
                            e.status,
                            e.provider,
                            e.event_type,
                            e.attempts,
                            e.error.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        EventsCmd::Replay {
            id,
            company,
            status,
            limit,
            json,
        } => {
            let rows = match (id, company) {
                (Some(id), _) => match store.find_event(id).await? {
                    Some(row) => vec![row],
                    None => bail!("no event {id}"),
                },
                (None, Some(company)) => store.events(company, status, limit).await?,
                (None, None) => bail!("give an event id, or --company ID [--status S]"),
            };
            let report = super::replay::replay(config, store.as_ref(), rows).await?;
            emit(json, &report, super::replay::describe)
        }
        EventsCmd::Show { id, json } => {
            let Some(row) = store.find_event(id).await? else {
                bail!("no event {id}");
            };
            let mut shown = summary(&row);
            shown["payload"] = match logged_body(config, &row).await? {
                Some(body) => json!(String::from_utf8_lossy(&body)),
                None => json!(String::from_utf8_lossy(&row.payload)),
            };
            emit(json, &shown, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            })
        }
    }
}

/// The body of a `rejected` event, which only the log keeps (the ledger row points at it):
/// read from the embedded log at the row's position. `None` for other events, whose row holds
/// the body. Fails when the log no longer has it (retention) or is Kafka, which the CLI does
/// not consume (read the topic at the partition and offset shown instead).
async fn logged_body(config: &Config, row: &EventRow) -> Result<Option<bytes::Bytes>> {
    if row.status != EventStatus::Rejected || !row.payload.is_empty() {
        return Ok(None);
    }
    let (partition, offset) = (row.partition, row.offset);
    if config.log.backend != LogBackend::Embedded {
        bail!(
            "the body of rejected event {} is kept only in the log: topic {} partition \
             {partition} offset {offset}",
            row.id,
            config.kafka.topic
        );
    }
    let log = EmbeddedLog::open(&config.data.dir, config.log.partitions)?;
    let records = log.fetch(partition, offset, 1, Duration::ZERO).await?;
    match records.into_iter().next() {
        Some(record) if record.offset == offset && record.meta.event_id == row.id => {
            Ok(Some(record.value))
        }
        _ => bail!(
            "the body of rejected event {} was kept only in the log (partition {partition} \
             offset {offset}), which no longer has it (log.retention_hours)",
            row.id
        ),
    }
}

/// A tenant's events, or every tenant's (one query per tenant: there is no cross-tenant read).
async fn list(
    store: &dyn StateStore,
    company: Option<CompanyId>,
    status: Option<EventStatus>,
    limit: usize,
) -> Result<Vec<EventRow>> {
    let companies = match company {
        Some(id) => vec![id],
        None => {
            let mut ids: Vec<_> = store.companies().await?.into_iter().map(|c| c.id).collect();
            ids.push(CompanyId::UNROUTED);
            ids
        }
    };
    let mut rows = Vec::new();
    for id in companies {
        rows.extend(store.events(id, status, limit).await?);
    }
    rows.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.id.cmp(&a.id)));
    rows.truncate(limit);
    Ok(rows)
}

fn summary(e: &EventRow) -> Value {
    json!({
        "id": e.id,
        "company_id": e.company_id,
        "status": e.status,
        "provider": e.provider,
        "event_type": e.event_type,
        "dedup_key": e.dedup_key,
        "attempts": e.attempts,
        "error": e.error,
        "correlation_id": e.correlation_id,
        "secret_id": e.secret_id,
        "partition": e.partition,
        "offset": e.offset,
        "received_at": e.received_at,
        "updated_at": e.updated_at,
    })
}
