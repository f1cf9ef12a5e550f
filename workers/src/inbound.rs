//! Decoding and applying `sb.inbound` records: the one place that says
//! what a valid record is and how a batch is applied, for the live
//! persister and for `sbctl replay store`, so a replay applies exactly what
//! the persister applied.

use std::future::Future;

use rdkafka::Message;
use switchboard_core::kafka::header_str;
use switchboard_core::store::{Outcome, StoreError};
use switchboard_schemas::envelope::Inbound;
use switchboard_schemas::headers::SCHEMA;

/// Decodes and checks one record (see [`Inbound::decode`], and its key is
/// its room); the error is the reason it is dead-lettered.
pub fn decode<M: Message>(record: &M) -> Result<Inbound, String> {
    let schema = header_str(record, SCHEMA).ok_or_else(|| format!("missing {SCHEMA} header"))?;
    let payload = record.payload().ok_or("empty payload")?;
    let inbound = Inbound::decode(schema, payload)?;
    if record.key() != Some(inbound.room().as_bytes()) {
        return Err("key is not the room id".into());
    }
    Ok(inbound)
}

/// Applies `records` with `apply`, which retries as its caller needs and
/// answers `None` to give up. When the batch as a whole fails for good, the
/// records are applied one at a time, so a record the database refuses fails
/// alone and the others are stored: the persister dead-letters such a
/// record, a replay counts it and goes on.
pub async fn apply_isolating<'r, F, Fut>(records: &'r [Inbound], apply: F) -> Option<Vec<Result<Outcome, StoreError>>>
where
    F: Fn(&'r [Inbound]) -> Fut,
    Fut: Future<Output = Option<Result<Vec<Outcome>, StoreError>>>,
{
    match apply(records).await? {
        Ok(outcomes) => Some(outcomes.into_iter().map(Ok).collect()),
        Err(batch_error) => {
            tracing::warn!(error = %batch_error, "batch failed; applying records one by one");
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                let one = apply(std::slice::from_ref(record)).await?;
                results.push(one.map(|mut outcomes| outcomes.pop().expect("one outcome per record")));
            }
            Some(results)
        }
    }
}
