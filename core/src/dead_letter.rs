//! The dead-letter topic: a record a worker cannot decode is copied there
//! (key, payload and headers intact, plus why and where from), and the worker
//! moves on instead of crashing or stalling on it.

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use switchboard_schemas::headers;

use crate::producer::KafkaProducer;

#[derive(Clone)]
pub struct DeadLetter {
    producer: KafkaProducer,
    topic: String,
}

impl DeadLetter {
    pub fn new(producer: KafkaProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Copies `message` to the dead-letter topic and waits for Kafka's ack,
    /// so the caller may then store the source offset.
    pub async fn send(&self, message: &BorrowedMessage<'_>, reason: &str) -> Result<(), KafkaError> {
        let mut out = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                out = out.insert(Header { key: header.key, value: header.value });
            }
        }
        self.write(message, out, message.payload(), reason).await
    }

    /// Writes `payload`, something a worker made from `source` and could
    /// not hand on (a notification its receiver refused), with the source's
    /// key and place, `schema` as its `sb-schema` and why; waits for the ack.
    pub async fn send_derived(
        &self,
        source: &BorrowedMessage<'_>,
        schema: &str,
        payload: &[u8],
        reason: &str,
    ) -> Result<(), KafkaError> {
        let out = OwnedHeaders::new().insert(Header { key: headers::SCHEMA, value: Some(schema) });
        self.write(source, out, Some(payload), reason).await
    }

    /// Writes `payload` with `out` and where `source` was and why, keyed like `source`.
    async fn write(
        &self,
        source: &BorrowedMessage<'_>,
        out: OwnedHeaders,
        payload: Option<&[u8]>,
        reason: &str,
    ) -> Result<(), KafkaError> {
        let partition = source.partition().to_string();
        let offset = source.offset().to_string();
        let out = out
            .insert(Header { key: headers::DLQ_REASON, value: Some(reason) })
            .insert(Header { key: headers::DLQ_TOPIC, value: Some(source.topic()) })
            .insert(Header { key: headers::DLQ_PARTITION, value: Some(&partition) })
            .insert(Header { key: headers::DLQ_OFFSET, value: Some(&offset) });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(out);
        if let Some(key) = source.key() {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        tracing::warn!(
            topic = source.topic(),
            partition = source.partition(),
            offset = source.offset(),
            reason,
            "record sent to dead-letter topic"
        );
        self.producer.send(record, Timeout::Never).await.map(drop)
    }
}
