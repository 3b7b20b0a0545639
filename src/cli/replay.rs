//! `askpro events replay`: puts stored events back onto the log under their own ids.

use anyhow::{Context, Result};
use askpro_actors::domain::{EventRow, EventStatus};
use askpro_actors::{Disposition, LogRecord, RecordMeta, StateStore};
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Serialize)]
pub struct Report {
    pub replayed: Vec<Replayed>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    pub id: askpro_actors::EventId,
    pub company_id: askpro_actors::CompanyId,
    pub previous_status: EventStatus,
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub id: askpro_actors::EventId,
    pub status: EventStatus,
    pub reason: &'static str,
}

/// Replays `rows` that can be replayed and says why the others were skipped.
pub async fn replay(
    config: &Config,
    store: &dyn StateStore,
    rows: Vec<EventRow>,
) -> Result<Report> {
    let log = crate::app::open_backends(config).await?.log;
    let mut report = Report {
        replayed: Vec::new(),
        skipped: Vec::new(),
    };
    for row in rows {
        if let Some(reason) = refusal(row.status) {
            report.skipped.push(Skipped {
                id: row.id,
                status: row.status,
                reason,
            });
            continue;
        }
        let now = chrono::Utc::now();
        // Marked before the append: once the record is on the log a worker may finish it at
        // any moment, and this write must not land after its final status.
        store
            .set_event_status(
                row.company_id,
                row.id,
                EventStatus::Received,
                row.attempts,
                Some("replay requested"),
                now,
            )
            .await?;
        let appended = log.append(vec![record(&row)]).await;
        let position = match appended {
            Ok(positions) => positions[0],
            Err(error) => {
                store
                    .set_event_status(
                        row.company_id,
                        row.id,
                        row.status,
                        row.attempts,
                        row.error.as_deref(),
                        now,
                    )
                    .await?;
                return Err(error).with_context(|| format!("replay event {}", row.id));
            }
        };
        tracing::info!(event_id = %row.id, company_id = %row.company_id, partition = position.partition, offset = position.offset, "event replayed");
        report.replayed.push(Replayed {
            id: row.id,
            company_id: row.company_id,
            previous_status: row.status,
            partition: position.partition,
            offset: position.offset,
        });
    }
    Ok(report)
}

fn refusal(status: EventStatus) -> Option<&'static str> {
    match status {
        EventStatus::Rejected => Some("rejected events never passed validation; fix the sender"),
        EventStatus::Unrouted => Some("unrouted events belong to no tenant; add the branch"),
        EventStatus::Received | EventStatus::Processing => {
            Some("still in flight; it will finish on its own")
        }
        EventStatus::Retrying => Some("waiting in a retry tier; it comes back on its own"),
        EventStatus::Processed | EventStatus::Duplicate | EventStatus::Failed => None,
    }
}

/// The ledger row as a first delivery again (same id, so dedup recognises it).
fn record(row: &EventRow) -> LogRecord {
    LogRecord {
        meta: RecordMeta {
            event_id: row.id,
            provider: row.provider,
            company_id: row.company_id,
            event_type: row.event_type.clone(),
            dedup_key: row.dedup_key.clone(),
            received_at: row.received_at,
            correlation_id: row.correlation_id,
            secret_id: row.secret_id.clone(),
            disposition: Disposition::Accept,
            retry: None,
        },
        value: row.payload.clone(),
    }
}

pub fn describe(report: &Report) -> String {
    let mut lines: Vec<String> = report
        .replayed
        .iter()
        .map(|r| {
            format!(
                "replayed {} (was {}) -> partition {} offset {}",
                r.id, r.previous_status, r.partition, r.offset
            )
        })
        .collect();
    lines.extend(
        report
            .skipped
            .iter()
            .map(|s| format!("skipped {} ({}): {}", s.id, s.status, s.reason)),
    );
    if lines.is_empty() {
        lines.push("nothing to replay".into());
    }
    lines.join("\n")
}
