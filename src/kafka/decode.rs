//! Kafka messages to log records. A message without AskPro's headers is not dropped: it is
//! returned as [`Foreign`] so the log can move it to the dead-letter topic.

use askpro_actors::record::{RecordMeta, StoredRecord};
use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Headers, OwnedHeaders};
use rdkafka::Message;

/// A record that is not ours (no AskPro headers): it is moved to the dead-letter topic.
pub struct Foreign {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
    pub problem: String,
}

/// What a fetch read, in offset order.
pub enum Fetched {
    Record(StoredRecord),
    Foreign(Foreign),
}

impl Fetched {
    pub fn offset(&self) -> u64 {
        match self {
            Fetched::Record(r) => r.offset,
            Fetched::Foreign(f) => f.offset,
        }
    }
}

pub(super) fn decode(message: &BorrowedMessage<'_>) -> Fetched {
    let partition = message.partition() as u32;
    let offset = message.offset() as u64;
    let value = message.payload().unwrap_or_default();
    let pairs = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    match RecordMeta::from_headers(pairs) {
        Ok(meta) => Fetched::Record(StoredRecord {
            partition,
            offset,
            meta,
            value: Bytes::copy_from_slice(value),
        }),
        Err(error) => Fetched::Foreign(Foreign {
            partition,
            offset,
            key: message.key().map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers: message.headers().map(|h| h.detach()).unwrap_or_default(),
            problem: error.to_string(),
        }),
    }
}
