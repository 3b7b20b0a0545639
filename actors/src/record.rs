//! The log record: the exact raw body as the value, our metadata as headers.
//!
//! The header names and encodings below are the wire contract shared by every log backend
//! (SQLite rows in the embedded log, Kafka record headers in the scale-out mode) and are
//! described by `schemas/json/log_record.schema.json`.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CompanyId, EventId};

/// Who sent a webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Retell,
    Calcom,
    /// Not a webhook sender: the kind of the company's Retell API key (a secret that
    /// `askpro agent provision` calls Retell's API with). Never on the log.
    #[serde(rename = "retell-api")]
    RetellApi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Retell => "retell",
            Provider::Calcom => "calcom",
            Provider::RetellApi => "retell-api",
        }
    }

    /// Whether records on the log may name it (the secret kinds that are no sender may not).
    pub fn sends_webhooks(self) -> bool {
        !matches!(self, Provider::RetellApi)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "retell" => Ok(Provider::Retell),
            "calcom" => Ok(Provider::Calcom),
            "retell-api" => Ok(Provider::RetellApi),
            other => Err(format!(
                "unknown provider {other:?} (expected retell, calcom or retell-api)"
            )),
        }
    }
}

fn webhook_sender(provider: Provider) -> Result<Provider, String> {
    match provider.sends_webhooks() {
        true => Ok(provider),
        false => Err(format!("{provider} sends no webhooks")),
    }
}

/// What the ingress decided about an authentic webhook. Every authentic delivery is logged,
/// including the ones we cannot use, so nothing is dropped silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "reason", rename_all = "lowercase")]
pub enum Disposition {
    /// A valid event for the pipeline.
    Accept,
    /// Authentic but unparseable or schema-invalid: kept with status `rejected`.
    Rejected(String),
    /// Authentic but no tenant owns it (account-level URL, unknown number): status `unrouted`.
    Unrouted(String),
}

/// Metadata carried beside the raw body (Kafka headers in the scale-out mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub event_id: EventId,
    pub provider: Provider,
    pub company_id: CompanyId,
    pub event_type: String,
    pub dedup_key: String,
    pub received_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    /// Id of the secret that verified the signature (`global` for the account-level secret).
    pub secret_id: String,
    pub disposition: Disposition,
    /// Set on a copy of the record sent to a retry tier (and forwarded back from it) or to the
    /// dead-letter log; `None` on a first delivery.
    pub retry: Option<RetryMeta>,
}

/// Why and when a record is being run again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryMeta {
    /// The attempt this copy is (2 for the first retry).
    pub attempt: u32,
    /// Not to be processed before this instant.
    pub due_at: DateTime<Utc>,
    /// The failure that caused the retry (or, in the dead-letter log, the last one).
    pub last_error: String,
}

impl RecordMeta {
    /// The attempt a record represents: 1 for a first delivery.
    pub fn attempt(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.attempt)
    }
}

/// Header names, as they appear on the wire.
pub mod header {
    pub const EVENT_ID: &str = "askpro-event-id";
    pub const PROVIDER: &str = "askpro-provider";
    pub const COMPANY_ID: &str = "askpro-company-id";
    pub const EVENT_TYPE: &str = "askpro-event-type";
    pub const DEDUP_KEY: &str = "askpro-dedup-key";
    pub const RECEIVED_AT: &str = "askpro-received-at";
    pub const CORRELATION_ID: &str = "askpro-correlation-id";
    pub const SECRET_ID: &str = "askpro-secret-id";
    pub const DISPOSITION: &str = "askpro-disposition";
    pub const REASON: &str = "askpro-reason";
    pub const ATTEMPT: &str = "askpro-attempt";
    pub const DUE_AT: &str = "askpro-due-at";
    pub const LAST_ERROR: &str = "askpro-last-error";
}

/// A header that is missing or malformed in a stored record.
#[derive(Debug, thiserror::Error)]
#[error("log record header {name}: {problem}")]
pub struct HeaderError {
    pub name: &'static str,
    pub problem: String,
}

impl RecordMeta {
    /// Encodes the metadata as ordered (name, value) headers.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let (disposition, reason) = match &self.disposition {
            Disposition::Accept => ("accept", None),
            Disposition::Rejected(r) => ("rejected", Some(r.clone())),
            Disposition::Unrouted(r) => ("unrouted", Some(r.clone())),
        };
        let mut headers = vec![
            (header::EVENT_ID, self.event_id.to_string()),
            (header::PROVIDER, self.provider.as_str().to_owned()),
            (header::COMPANY_ID, self.company_id.to_string()),
            (header::EVENT_TYPE, self.event_type.clone()),
            (header::DEDUP_KEY, self.dedup_key.clone()),
            (
                header::RECEIVED_AT,
                self.received_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            (header::CORRELATION_ID, self.correlation_id.to_string()),
            (header::SECRET_ID, self.secret_id.clone()),
            (header::DISPOSITION, disposition.to_owned()),
        ];
        if let Some(reason) = reason {
            headers.push((header::REASON, reason));
        }
        if let Some(retry) = &self.retry {
            headers.push((header::ATTEMPT, retry.attempt.to_string()));
            headers.push((
                header::DUE_AT,
                retry.due_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ));
            headers.push((header::LAST_ERROR, retry.last_error.clone()));
        }
        headers
    }

    /// Decodes headers written by [`RecordMeta::to_headers`]; unknown headers are ignored.
    pub fn from_headers<'a, I>(headers: I) -> Result<Self, HeaderError>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut found: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (name, value) in headers {
            let value = std::str::from_utf8(value).map_err(|_| HeaderError {
                name: "utf-8",
                problem: format!("header {name} is not utf-8"),
            })?;
            found.insert(name, value);
        }
        let get = |name: &'static str| {
            found.get(name).copied().ok_or(HeaderError {
                name,
                problem: "missing".into(),
            })
        };
        let bad = |name: &'static str, e: &dyn fmt::Display| HeaderError {
            name,
            problem: e.to_string(),
        };
        let reason = found
            .get(header::REASON)
            .map(|r| (*r).to_owned())
            .unwrap_or_default();
        let disposition = match get(header::DISPOSITION)? {
            "accept" => Disposition::Accept,
            "rejected" => Disposition::Rejected(reason),
            "unrouted" => Disposition::Unrouted(reason),
            other => {
                return Err(bad(
                    header::DISPOSITION,
                    &format!("unknown value {other:?}"),
                ))
            }
        };
        Ok(RecordMeta {
            event_id: get(header::EVENT_ID)?
                .parse()
                .map_err(|e| bad(header::EVENT_ID, &e))?,
            provider: get(header::PROVIDER)?
                .parse()
                .and_then(webhook_sender)
                .map_err(|e: String| bad(header::PROVIDER, &e))?,
            company_id: get(header::COMPANY_ID)?
                .parse()
                .map_err(|e| bad(header::COMPANY_ID, &e))?,
            event_type: get(header::EVENT_TYPE)?.to_owned(),
            dedup_key: get(header::DEDUP_KEY)?.to_owned(),
            received_at: DateTime::parse_from_rfc3339(get(header::RECEIVED_AT)?)
                .map_err(|e| bad(header::RECEIVED_AT, &e))?
                .with_timezone(&Utc),
            correlation_id: get(header::CORRELATION_ID)?
                .parse()
                .map_err(|e| bad(header::CORRELATION_ID, &e))?,
            secret_id: get(header::SECRET_ID)?.to_owned(),
            disposition,
            retry: retry_from(&found)?,
        })
    }
}

/// The retry headers, all or none.
fn retry_from(
    found: &std::collections::HashMap<&str, &str>,
) -> Result<Option<RetryMeta>, HeaderError> {
    let Some(attempt) = found.get(header::ATTEMPT) else {
        return Ok(None);
    };
    let attempt = attempt.parse().map_err(|e| HeaderError {
        name: header::ATTEMPT,
        problem: format!("{e}"),
    })?;
    let due_at = found.get(header::DUE_AT).ok_or(HeaderError {
        name: header::DUE_AT,
        problem: "missing (askpro-attempt is set)".into(),
    })?;
    let due_at = DateTime::parse_from_rfc3339(due_at)
        .map_err(|e| HeaderError {
            name: header::DUE_AT,
            problem: e.to_string(),
        })?
        .with_timezone(&Utc);
    let last_error = found
        .get(header::LAST_ERROR)
        .map(|s| (*s).to_owned())
        .unwrap_or_default();
    Ok(Some(RetryMeta {
        attempt,
        due_at,
        last_error,
    }))
}

/// A record to append. The key is always the tenant, so one tenant's events share a
/// partition and keep their order.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub meta: RecordMeta,
    /// The exact raw body as received (signatures can be re-verified, replays are faithful).
    pub value: Bytes,
}

impl LogRecord {
    pub fn key(&self) -> String {
        self.meta.company_id.to_string()
    }
}

/// A record read back from the log, with its coordinates.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub meta: RecordMeta,
    pub value: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(disposition: Disposition) -> RecordMeta {
        RecordMeta {
            event_id: EventId::new(),
            provider: Provider::Retell,
            company_id: CompanyId::new(),
            event_type: "call_ended".into(),
            dedup_key: "retell:call_ended:call_1".into(),
            received_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            correlation_id: Uuid::now_v7(),
            secret_id: "sec_1".into(),
            disposition,
            retry: None,
        }
    }

    #[test]
    fn headers_round_trip() {
        for d in [
            Disposition::Accept,
            Disposition::Rejected("body is not json".into()),
            Disposition::Unrouted("no branch for +4930".into()),
        ] {
            let meta = sample(d);
            let headers = meta.to_headers();
            let back =
                RecordMeta::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
            assert_eq!(back, meta);
        }
    }

    #[test]
    fn retry_headers_round_trip() {
        let mut meta = sample(Disposition::Accept);
        meta.retry = Some(RetryMeta {
            attempt: 3,
            due_at: meta.received_at + chrono::Duration::seconds(60),
            last_error: "cal.com transient failure: 503".into(),
        });
        let headers = meta.to_headers();
        let back =
            RecordMeta::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.attempt(), 3);
        assert_eq!(sample(Disposition::Accept).attempt(), 1);
    }

    #[test]
    fn missing_header_is_named() {
        let meta = sample(Disposition::Accept);
        let headers: Vec<_> = meta
            .to_headers()
            .into_iter()
            .filter(|(k, _)| *k != header::DEDUP_KEY)
            .collect();
        let err =
            RecordMeta::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap_err();
        assert_eq!(err.name, header::DEDUP_KEY);
    }

    #[test]
    fn a_secret_kind_that_sends_no_webhooks_is_no_record_provider() {
        assert_eq!("retell-api".parse::<Provider>(), Ok(Provider::RetellApi));
        let mut meta = sample(Disposition::Accept);
        meta.provider = Provider::RetellApi;
        let headers = meta.to_headers();
        let err =
            RecordMeta::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap_err();
        assert_eq!(err.name, header::PROVIDER);
    }
}
