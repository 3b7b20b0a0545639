//! How a record is stored in `log.db`: its headers as a JSON object beside the raw body.

use askpro_actors::error::LogError;
use askpro_actors::record::{RecordMeta, StoredRecord};
use bytes::Bytes;

/// Headers as a JSON object, name → value.
pub(super) fn headers_json(meta: &RecordMeta) -> String {
    let map: serde_json::Map<String, serde_json::Value> = meta
        .to_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(super) fn decode(
    partition: u32,
    offset: u64,
    headers: &str,
    value: Vec<u8>,
) -> Result<StoredRecord, LogError> {
    let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| LogError::Corrupt {
        partition,
        offset,
        source,
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(headers).map_err(|e| corrupt(Box::new(e)))?;
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in &map {
        let value = value
            .as_str()
            .ok_or_else(|| corrupt(format!("header {name} is not a string").into()))?;
        pairs.push((name.as_str(), value.as_bytes()));
    }
    let meta = RecordMeta::from_headers(pairs).map_err(|e| corrupt(Box::new(e)))?;
    Ok(StoredRecord {
        partition,
        offset,
        meta,
        value: Bytes::from(value),
    })
}
