//! Decoding and applying `sb.inbound` records: the one place that says
//! what a valid record is and how a batch is applied, for the live
//! persister and for `sbctl replay store`, so a replay applies exactly what
//! the persister applied.

use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use futures_util::future::join_all;
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

/// Lanes of the persister and of `sbctl replay store` unless told otherwise
/// (see [`apply_in_lanes`]).
pub const DEFAULT_LANES: usize = 2;

/// Applies `records` in up to `lanes` transactions at once. Each lane
/// takes the records of the rooms that hash to it, in their order, so a
/// room's records are applied in order in one lane, and lanes never touch
/// the same room (seqs are per room). The rows lanes share are users'
/// names, which a transaction writes once, at its end, in id order (see
/// `Names` in `store/batch.rs`), so lanes that change the same users' names
/// wait for each other and never deadlock.
/// `apply` retries as its caller needs and answers `None` to give up; a
/// lane whose batch fails for good is applied one record at a time (see
/// [`apply_isolating`]). Results are in the order of `records`.
///
/// One transaction keeps one of PostgreSQL's cores busy at most; a second
/// one at once wrote 15-25% more rows/s here (see `--persister-lanes`).
pub async fn apply_in_lanes<'r, F, Fut>(
    records: &'r [Inbound],
    lanes: usize,
    apply: F,
) -> Option<Vec<Result<Outcome, StoreError>>>
where
    F: Fn(Vec<&'r Inbound>) -> Fut,
    Fut: Future<Output = Option<Result<Vec<Outcome>, StoreError>>>,
{
    let lanes = lanes.clamp(1, records.len().max(1));
    let assigned: Vec<usize> = records.iter().map(|r| lane_of(r.room(), lanes)).collect();
    let mut split: Vec<Vec<&'r Inbound>> = vec![Vec::new(); lanes];
    for (record, &lane) in records.iter().zip(&assigned) {
        split[lane].push(record);
    }
    let applied = join_all(split.into_iter().map(|lane| apply_isolating(lane, &apply))).await;
    let mut applied: Vec<_> = applied.into_iter().map(|lane| lane.map(Vec::into_iter)).collect::<Option<_>>()?;
    Some(assigned.iter().map(|&lane| applied[lane].next().expect("a result for every record")).collect())
}

/// The lane, of `lanes`, that applies a room's records: the same room, the
/// same lane, in every batch.
pub fn lane_of(room: &str, lanes: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(room) % lanes.max(1) as u64) as usize
}

/// Applies `records` with `apply`. When the batch as a whole fails for
/// good, the records are applied one at a time, so a record the database
/// refuses fails alone and the others are stored: the persister
/// dead-letters such a record, a replay counts it and goes on. One lane of
/// [`apply_in_lanes`]; `sbctl replay store` runs its lanes itself.
pub async fn apply_isolating<'r, F, Fut>(
    records: Vec<&'r Inbound>,
    apply: &F,
) -> Option<Vec<Result<Outcome, StoreError>>>
where
    F: Fn(Vec<&'r Inbound>) -> Fut,
    Fut: Future<Output = Option<Result<Vec<Outcome>, StoreError>>>,
{
    if records.is_empty() {
        return Some(Vec::new());
    }
    match apply(records.clone()).await? {
        Ok(outcomes) => Some(outcomes.into_iter().map(Ok).collect()),
        Err(batch_error) => {
            tracing::warn!(error = %batch_error, "batch failed; applying records one by one");
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                let one = apply(vec![record]).await?;
                results.push(one.map(|mut outcomes| outcomes.pop().expect("one outcome per record")));
            }
            Some(results)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use switchboard_schemas::envelope::{InboundSend, Origin};
    use switchboard_schemas::protocol::ErrorCode;

    use super::*;

    fn send(room: &str, client_id: &str) -> Inbound {
        Inbound::Send(InboundSend {
            room: room.into(),
            sender: "u".into(),
            sender_name: None,
            client_id: client_id.into(),
            body: "b".into(),
            origin: Origin { node: "n".into(), conn: 1, reference: "r".into() },
            received_at: 0,
        })
    }

    fn client_id(record: &Inbound) -> &str {
        let Inbound::Send(send) = record else { panic!("sends only") };
        &send.client_id
    }

    /// A stand-in for the store: each call's records (by client id) are
    /// kept, each outcome names its record, and a batch holding "bad" fails.
    struct Recorder(Mutex<Vec<Vec<String>>>);

    impl Recorder {
        async fn apply(&self, records: Vec<&Inbound>) -> Option<Result<Vec<Outcome>, StoreError>> {
            let ids: Vec<String> = records.iter().map(|r| client_id(r).to_owned()).collect();
            self.0.lock().unwrap().push(ids.clone());
            tokio::task::yield_now().await;
            if ids.iter().any(|id| id == "bad") {
                return Some(Err(StoreError::Query(sqlx::Error::Protocol("refused".into()))));
            }
            Some(Ok(ids.into_iter().map(|id| Outcome::Rejected { code: ErrorCode::Forbidden, message: id }).collect()))
        }
    }

    fn named(result: &Result<Outcome, StoreError>) -> &str {
        match result {
            Ok(Outcome::Rejected { message, .. }) => message,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn lanes_keep_each_room_in_one_transaction_in_order_and_answer_in_input_order() {
        let records: Vec<Inbound> = (0..60).map(|i| send(&format!("room-{}", i % 9), &format!("c{i}"))).collect();
        let recorder = Recorder(Mutex::new(Vec::new()));
        let results = apply_in_lanes(&records, 3, |lane| recorder.apply(lane)).await.unwrap();

        let answered: Vec<&str> = results.iter().map(named).collect();
        let sent: Vec<&str> = records.iter().map(client_id).collect();
        assert_eq!(answered, sent, "results come back in the order of the records");

        let calls = recorder.0.into_inner().unwrap();
        assert!(calls.len() > 1 && calls.len() <= 3, "split over up to 3 lanes: {calls:?}");
        let position = |id: &str| sent.iter().position(|s| *s == id).unwrap();
        for call in &calls {
            let positions: Vec<usize> = call.iter().map(|id| position(id)).collect();
            assert!(positions.is_sorted(), "a lane applies its records in their order: {call:?}");
        }
        for room in 0..9 {
            let holding = calls.iter().filter(|call| call.iter().any(|id| position(id) % 9 == room)).count();
            assert_eq!(holding, 1, "room-{room} is applied in one lane");
        }
    }

    #[tokio::test]
    async fn a_refused_record_is_applied_alone_and_the_other_lanes_are_untouched() {
        let mut records: Vec<Inbound> = (0..40).map(|i| send(&format!("room-{}", i % 8), &format!("c{i}"))).collect();
        records[17] = send("room-1", "bad");
        let recorder = Recorder(Mutex::new(Vec::new()));
        let results = apply_in_lanes(&records, 2, |lane| recorder.apply(lane)).await.unwrap();

        assert_eq!(results.len(), records.len());
        for (result, record) in results.iter().zip(&records) {
            match client_id(record) {
                "bad" => assert!(result.is_err(), "the refused record fails"),
                id => assert_eq!(named(result), id, "every other record is applied"),
            }
        }
        let calls = recorder.0.into_inner().unwrap();
        let singles = calls.iter().filter(|call| call.len() == 1).count();
        let batches: Vec<&Vec<String>> = calls.iter().filter(|call| call.len() > 1).collect();
        assert_eq!(batches.len(), 2, "each lane was tried as one batch first: {calls:?}");
        let failed = batches.iter().find(|call| call.iter().any(|id| id == "bad")).unwrap();
        assert_eq!(singles, failed.len(), "only the failed lane went record by record");
    }

    #[tokio::test]
    async fn one_lane_is_the_whole_batch() {
        let records: Vec<Inbound> = (0..10).map(|i| send(&format!("room-{i}"), &format!("c{i}"))).collect();
        let recorder = Recorder(Mutex::new(Vec::new()));
        apply_in_lanes(&records, 1, |lane| recorder.apply(lane)).await.unwrap();
        assert_eq!(recorder.0.into_inner().unwrap().len(), 1);
    }
}
