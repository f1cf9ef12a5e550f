//! The notifier: tells the team's push service about each message whose
//! room has members that are not there, so their phones can buzz.
//!
//! It consumes `sb.events` in a consumer group of its own. For a message,
//! the room's audience (a private room's members; for a public room, the
//! users who have read it) minus its sender and minus the users present in
//! the room are the recipients. Who is present comes from `sb.ephemeral`,
//! the presence records the edges write (see `edge/src/presence.rs`): every
//! notifier reads all of it, from three refreshes back at start, so it
//! never asks an edge. A recipient told about more than the rate limit
//! allows is skipped; the others go in batches of
//! `--recipients-per-request`, one POST each (`schemas/json/notification.json`),
//! signed with HMAC-SHA256 over the body and named by an idempotency key
//! per (message, batch) (see [`idempotency_key`]). Messages older than
//! `--notify-max-age` are not notified.
//!
//! At least once: a record's offset is stored only once every request for
//! it was answered 2xx or dead-lettered, and a record that could not be
//! handled (database or Kafka unavailable) is read again; so a notifier
//! killed midway sends those requests again, with the same keys, and the
//! receiver drops the repeats. Timeouts, connection failures, 408, 429 and 5xx are retried
//! with exponential backoff and full jitter; any other answer, or the last
//! failure, sends the notification to `sb.dead-letter` (schema
//! `notification.v1`, with the reason), where an operator can find it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Timestamp};
use sha2::{Digest, Sha256};
use switchboard_core::clock::now_ms;
use switchboard_core::config::Secret;
use switchboard_core::dead_letter::DeadLetter;
use switchboard_core::http_client::error_chain;
use switchboard_core::kafka::{KafkaConfig, METADATA_TIMEOUT, assign_all_since, consume_error};
use switchboard_core::metrics::Metrics;
use switchboard_core::ops::Readiness;
use switchboard_core::presence::{Roster, ttl_ms};
use switchboard_core::store::Store;
use switchboard_core::topics::Topics;
use switchboard_schemas::envelope::{Event, StoredMessage};
use switchboard_schemas::notification::{IDEMPOTENCY_HEADER, NOTIFICATION_V1, Notification, SIGNATURE_HEADER, preview};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch;
use crate::error::WorkerError;
use crate::events::NotifierEvents;
use crate::membership::GroupMember;

#[derive(Debug, Clone, clap::Args)]
pub struct NotifierConfig {
    /// Where notifications are POSTed: the team's push service (http or https).
    #[arg(long = "webhook-url", env = "SB_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Key of the HMAC-SHA256 signature of each body (at least 32 bytes),
    /// which the receiver checks (`X-Switchboard-Signature: sha256=<hex>`).
    #[arg(long = "webhook-secret", env = "SB_WEBHOOK_SECRET")]
    pub webhook_secret: Option<Secret>,
    /// How long one request may take, connecting included.
    #[arg(long = "webhook-timeout", env = "SB_WEBHOOK_TIMEOUT", default_value = "5s",
          value_parser = switchboard_core::config::parse_duration)]
    pub timeout: Duration,
    /// Tries per request (timeouts, connection failures, 408, 429, 5xx), then dead-lettered.
    #[arg(long = "webhook-attempts", env = "SB_WEBHOOK_ATTEMPTS", default_value_t = 5)]
    pub attempts: usize,
    /// Requests in flight at once.
    #[arg(long = "webhook-concurrency", env = "SB_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Recipients per request: a message for more goes in several.
    #[arg(long = "recipients-per-request", env = "SB_RECIPIENTS_PER_REQUEST", default_value_t = 100)]
    pub recipients_per_request: usize,
    /// Notifications per recipient per minute, sustained; more are skipped.
    #[arg(long = "recipient-rate-per-minute", env = "SB_RECIPIENT_RATE_PER_MINUTE", default_value_t = 6)]
    pub recipient_rate_per_minute: u32,
    /// Notifications a recipient may get in a burst above that rate.
    #[arg(long = "recipient-burst", env = "SB_RECIPIENT_BURST", default_value_t = 3)]
    pub recipient_burst: u32,
    /// Messages older than this (by when an edge accepted them) are not
    /// notified: a new notifier group starting at the topic's beginning, a
    /// notifier back after a long outage, or a replay that republishes
    /// events would otherwise push hours-old messages.
    #[arg(long = "notify-max-age", env = "SB_NOTIFY_MAX_AGE", default_value = "15m",
          value_parser = switchboard_core::config::parse_duration)]
    pub max_age: Duration,
    /// Characters of the body in a notification's `preview`.
    #[arg(long = "preview-chars", env = "SB_PREVIEW_CHARS", default_value_t = 140)]
    pub preview_chars: usize,
    /// The edges' SB_PRESENCE_REFRESH: a user no edge named for three of
    /// these is not present.
    #[arg(long = "presence-refresh", env = "SB_PRESENCE_REFRESH", default_value = "10s",
          value_parser = switchboard_core::config::parse_duration)]
    pub presence_refresh: Duration,
    /// Consumer group of the notifier instances [default: <topic-prefix>-notifier].
    #[arg(long = "notifier-group", env = "SB_NOTIFIER_GROUP")]
    pub group: Option<String>,
    /// Stable id of this instance in the group (e.g. the pod name).
    #[arg(long = "notifier-instance-id", env = "SB_NOTIFIER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Records handled at once. Small, because the group drops a member
    /// that does not poll within 5 minutes (librdkafka's max.poll.interval.ms),
    /// and a receiver that times out every try holds a record for up to
    /// attempts x (timeout + 10 s): at 32 records, 16 requests at a time,
    /// that is under 2 minutes per batch with the defaults.
    #[arg(long = "notifier-batch-max", env = "SB_NOTIFIER_BATCH_MAX", default_value_t = 32)]
    pub batch_max: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: None,
            timeout: Duration::from_secs(5),
            attempts: 5,
            concurrency: 16,
            recipients_per_request: 100,
            recipient_rate_per_minute: 6,
            recipient_burst: 3,
            max_age: Duration::from_secs(15 * 60),
            preview_chars: 140,
            presence_refresh: Duration::from_secs(10),
            group: None,
            instance_id: None,
            batch_max: 32,
        }
    }
}

impl NotifierConfig {
    /// Checks what clap cannot: the URL and secret are there and usable,
    /// the numbers positive. The message says which flag to fix.
    pub fn validate(&self) -> Result<(Uri, Vec<u8>), String> {
        let url = self.webhook_url.as_deref().filter(|u| !u.is_empty());
        let url = url.ok_or("--webhook-url (SB_WEBHOOK_URL) is required")?;
        let uri: Uri = url.parse().map_err(|e| format!("--webhook-url {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("--webhook-url {url:?}: an http:// or https:// URL with a host is needed"));
        }
        let secret = self.webhook_secret.as_ref().filter(|s| !s.expose().is_empty());
        let secret = secret.ok_or("--webhook-secret (SB_WEBHOOK_SECRET) is required")?;
        if secret.expose().len() < 32 {
            return Err("--webhook-secret must be at least 32 bytes".into());
        }
        let positive = [
            ("--webhook-attempts", self.attempts),
            ("--webhook-concurrency", self.concurrency),
            ("--recipients-per-request", self.recipients_per_request),
            ("--recipient-rate-per-minute", self.recipient_rate_per_minute as usize),
            ("--recipient-burst", self.recipient_burst as usize),
            ("--preview-chars", self.preview_chars),
            ("--notifier-batch-max", self.batch_max),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{flag} must be positive"));
        }
        if self.timeout.is_zero() || self.presence_refresh.is_zero() || self.max_age.is_zero() {
            return Err("--webhook-timeout, --presence-refresh and --notify-max-age must be positive".into());
        }
        Ok((uri, secret.expose().as_bytes().to_vec()))
    }
}

pub struct Notifier {
    kafka: KafkaConfig,
    presence_consumer: StreamConsumer,
    dead_letter: DeadLetter,
    topics: Topics,
    store: Store,
    webhook: Webhook,
    config: NotifierConfig,
    rosters: Arc<Mutex<HashMap<String, Roster>>>,
    limiter: DefaultKeyedRateLimiter<String>,
    events: Arc<NotifierEvents>,
    ready: Readiness,
}

impl Notifier {
    pub fn new(
        kafka: &KafkaConfig,
        topics: Topics,
        store: Store,
        config: NotifierConfig,
        metrics: &Metrics,
    ) -> Result<Self, WorkerError> {
        let (url, secret) = config.validate().map_err(WorkerError::Config)?;
        let events = Arc::new(NotifierEvents::new(metrics));
        let webhook = Webhook::new(url, secret, &config, events.clone())?;
        let quota = Quota::per_minute(NonZeroU32::new(config.recipient_rate_per_minute).expect("validated"))
            .allow_burst(NonZeroU32::new(config.recipient_burst).expect("validated"));
        Ok(Self {
            kafka: kafka.clone(),
            presence_consumer: kafka.assigned_consumer()?,
            dead_letter: DeadLetter::new(kafka.batch_producer()?, topics.dead_letter()),
            topics,
            store,
            webhook,
            config,
            rosters: Arc::default(),
            limiter: RateLimiter::keyed(quota),
            events,
            ready: Readiness::default(),
        })
    }

    /// Ready once presence is loaded and the group joined.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let ttl = ttl_ms(self.config.presence_refresh);
        let ephemeral = self.topics.ephemeral();
        load_presence(&self.presence_consumer, &ephemeral, &self.rosters, ttl, &self.events, &shutdown).await?;
        let follow = tokio::spawn(follow_presence(
            self.presence_consumer,
            self.rosters.clone(),
            ttl,
            self.config.presence_refresh / 4,
            self.events.clone(),
            shutdown.clone(),
        ));
        let group = self.config.group.clone().unwrap_or_else(|| self.topics.group("notifier"));
        let mut member = GroupMember::join(
            &self.kafka,
            group,
            self.config.instance_id.clone(),
            vec![self.topics.events()],
            self.events.lag.handler(),
        )?;
        let work = Work {
            store: &self.store,
            webhook: &self.webhook,
            dead_letter: &self.dead_letter,
            rosters: &self.rosters,
            limiter: &self.limiter,
            config: &self.config,
            events: &self.events,
            requests: Semaphore::new(self.config.concurrency),
            audiences: Mutex::default(),
        };
        tracing::info!(group = %member.group(), "notifier started");
        self.ready.set(true);
        loop {
            member.rejoin_if_failed()?;
            let records = batch::collect(member.consumer(), self.config.batch_max, Duration::ZERO, &shutdown).await;
            if records.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            let decoded: Vec<Decoded> = records.iter().map(decode).collect();
            work.read_audiences(&decoded).await;
            let handled = join_all(records.iter().zip(decoded).map(|(record, event)| work.handle(record, event))).await;
            // A partition stops at its first record that could not be handled
            // (the database or Kafka unavailable): its offset stays before
            // it, and the partition is read again from there.
            let mut offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
            let mut held: BTreeMap<(&str, i32), i64> = BTreeMap::new();
            for (record, done) in records.iter().zip(handled) {
                let position = (record.topic(), record.partition());
                if held.contains_key(&position) {
                    continue;
                }
                if done {
                    offsets.insert(position, record.offset());
                } else {
                    held.insert(position, record.offset());
                }
            }
            member.store_offsets(offsets);
            if !held.is_empty() {
                tracing::warn!(partitions = held.len(), "notifications held back; reading those records again");
                member.rewind(held);
                tokio::time::sleep(HELD_PAUSE).await;
            }
            self.limiter.retain_recent();
        }
        follow.abort();
        self.ready.set(false);
        tracing::info!("notifier stopped");
        Ok(())
    }
}

/// What handling one record needs, borrowed for the run.
struct Work<'a> {
    store: &'a Store,
    webhook: &'a Webhook,
    dead_letter: &'a DeadLetter,
    rosters: &'a Mutex<HashMap<String, Roster>>,
    limiter: &'a DefaultKeyedRateLimiter<String>,
    config: &'a NotifierConfig,
    events: &'a NotifierEvents,
    /// Requests in flight.
    requests: Semaphore,
    /// Audiences read lately, per room.
    audiences: Mutex<HashMap<String, Audience>>,
}

/// A record of `sb.events`, or why it cannot be read (the dead-letter reason).
type Decoded = Result<Event, String>;

fn decode(record: &BorrowedMessage<'_>) -> Decoded {
    match record.payload().map(serde_json::from_slice::<Event>) {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(format!("undecodable: {e}")),
        None => Err("empty payload".into()),
    }
}

/// A room's audience as read at a time.
type Audience = (tokio::time::Instant, Arc<Vec<String>>);

/// Pause before reading held-back records again.
const HELD_PAUSE: Duration = Duration::from_secs(1);

/// How long a room's audience read from SQL is used again: a busy room's
/// messages do not each cost a query, and a member added is heard of soon.
const AUDIENCE_FOR: Duration = Duration::from_secs(5);

impl Work<'_> {
    /// Handles one record; false when it could be neither done nor
    /// dead-lettered (its offset must not move).
    async fn handle(&self, record: &BorrowedMessage<'_>, decoded: Decoded) -> bool {
        let event = match decoded {
            Ok(Event::Message(stored)) => stored,
            // A removed member hears of nothing more from the room.
            Ok(Event::MemberRemoved { room, .. }) => {
                self.audiences.lock().unwrap_or_else(|e| e.into_inner()).remove(&room);
                return true;
            }
            Ok(_) => return true, // nothing to notify
            Err(reason) => return self.dead_letter_record(record, &reason).await,
        };
        let age = now_ms() - event.message.sent_at;
        if age > self.config.max_age.as_millis() as i64 {
            self.events.too_old();
            return true;
        }
        let audience = match self.audience(&event.message.room).await {
            Ok(audience) => audience,
            Err(e) => {
                tracing::warn!(room = %event.message.room, error = %e, "audience unavailable; holding the message");
                return false;
            }
        };
        let recipients = self.recipients(&event, &audience);
        let batches = recipients.chunks(self.config.recipients_per_request).enumerate();
        let sent = join_all(batches.map(|(batch, users)| self.notify(record, &event, users, batch as u32))).await;
        sent.into_iter().all(|ok| ok)
    }

    /// The audience minus the sender, the users present, and those over their rate.
    fn recipients(&self, stored: &StoredMessage, audience: &[String]) -> Vec<String> {
        let message = &stored.message;
        let rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
        let roster = rosters.get(&message.room);
        let (mut online, mut limited) = (0, 0);
        let mut recipients = Vec::new();
        for user in audience.iter().filter(|u| **u != message.sender) {
            if roster.is_some_and(|r| r.contains(user)) {
                online += 1;
            } else if self.limiter.check_key(user).is_err() {
                limited += 1;
            } else {
                recipients.push(user.clone());
            }
        }
        self.events.recipients_skipped(online, limited);
        recipients
    }

    /// Reads the audience of each room with messages in the batch once, so
    /// its messages (handled side by side) find it read.
    async fn read_audiences(&self, batch: &[Decoded]) {
        let rooms: BTreeSet<&str> = batch
            .iter()
            .filter_map(|event| match event {
                Ok(Event::Message(stored)) => Some(stored.message.room.as_str()),
                _ => None,
            })
            .collect();
        // Errors are met again, and handled, per message.
        join_all(rooms.into_iter().map(|room| self.audience(room))).await;
    }

    async fn audience(&self, room: &str) -> Result<Arc<Vec<String>>, switchboard_core::store::StoreError> {
        let now = tokio::time::Instant::now();
        if let Some((at, users)) = self.audiences.lock().unwrap_or_else(|e| e.into_inner()).get(room)
            && now.duration_since(*at) < AUDIENCE_FOR
        {
            return Ok(users.clone());
        }
        let read = || self.store.audience(room);
        let users = Arc::new(
            read.retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(100)).with_max_times(3))
                .notify(|e, _| tracing::warn!(room, error = %e, "audience read failed; retrying"))
                .await?,
        );
        let mut audiences = self.audiences.lock().unwrap_or_else(|e| e.into_inner());
        if audiences.len() > 10_000 {
            audiences.retain(|_, (at, _)| now.duration_since(*at) < AUDIENCE_FOR);
        }
        audiences.insert(room.to_owned(), (now, users.clone()));
        Ok(users)
    }

    /// One request; false when it failed and could not be dead-lettered either.
    async fn notify(&self, record: &BorrowedMessage<'_>, stored: &StoredMessage, users: &[String], batch: u32) -> bool {
        let message = &stored.message;
        let notification = Notification {
            room: message.room.clone(),
            message_id: message.id.clone(),
            seq: message.seq,
            epoch: stored.epoch,
            sender: message.sender.clone(),
            sender_name: message.sender_name.clone(),
            preview: preview(&message.body, self.config.preview_chars),
            sent_at: message.sent_at,
            recipients: users.to_vec(),
            batch,
        };
        let body = Bytes::from(serde_json::to_vec(&notification).expect("notifications serialize"));
        let _permit = self.requests.acquire().await.expect("never closed");
        match self.webhook.deliver(body.clone(), &idempotency_key(&notification)).await {
            Ok(()) => {
                self.events.notified(users.len());
                true
            }
            Err(reason) => {
                self.events.notification_failed();
                match self.dead_letter.send_derived(record, NOTIFICATION_V1, &body, &reason).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "could not dead-letter a notification; it is sent again later");
                        false
                    }
                }
            }
        }
    }

    async fn dead_letter_record(&self, record: &BorrowedMessage<'_>, reason: &str) -> bool {
        match self.dead_letter.send(record, reason).await {
            Ok(()) => {
                self.events.dead_lettered();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the record is read again");
                false
            }
        }
    }
}

/// Reads `sb.ephemeral` from a TTL back up to the end seen at start, so the
/// first messages are not sent to users who are there.
async fn load_presence(
    consumer: &StreamConsumer,
    topic: &str,
    rosters: &Mutex<HashMap<String, Roster>>,
    ttl: i64,
    events: &NotifierEvents,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let assigned = assign_all_since(consumer, &[topic], now_ms() - ttl)
        .await
        .map_err(|source| WorkerError::TopicsUnavailable { topics: vec![topic.to_owned()], source })?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for (_, partition, start) in assigned {
        let (_, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        if start.is_some_and(|at| at < high) {
            remaining.insert(partition, high);
        }
    }
    while !remaining.is_empty() {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            // A partition with nothing from the window left to read sends nothing.
            _ = tokio::time::sleep(Duration::from_secs(5)) => break,
            r = consumer.recv() => r,
        };
        match record {
            Ok(record) => {
                apply_presence(rosters, &record, written_at(&record), events);
                if remaining.get(&record.partition()).is_some_and(|high| record.offset() + 1 >= *high) {
                    remaining.remove(&record.partition());
                }
            }
            Err(e) => consume_error("presence", &e).await,
        }
    }
    tracing::info!(rooms = rosters.lock().unwrap_or_else(|e| e.into_inner()).len(), "presence loaded");
    Ok(())
}

/// Keeps applying presence records, and drops who is no longer named.
async fn follow_presence(
    consumer: StreamConsumer,
    rosters: Arc<Mutex<HashMap<String, Roster>>>,
    ttl: i64,
    expire_every: Duration,
    events: Arc<NotifierEvents>,
    shutdown: CancellationToken,
) {
    let mut expire = tokio::time::interval(expire_every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = expire.tick() => {
                let now = now_ms();
                let mut rosters = rosters.lock().unwrap_or_else(|e| e.into_inner());
                rosters.retain(|_, roster| {
                    roster.expire(now, ttl);
                    !roster.is_empty()
                });
            }
            record = consumer.recv() => match record {
                // As it comes, like the edges: no clock skew between machines.
                Ok(record) => apply_presence(&rosters, &record, now_ms(), &events),
                Err(e) => consume_error("presence", &e).await,
            },
        }
    }
}

/// When a record was written (the producing edge's clock): what the records
/// read again at start are aged by.
fn written_at(record: &BorrowedMessage<'_>) -> i64 {
    match record.timestamp() {
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
        Timestamp::NotAvailable => now_ms(),
    }
}

/// Applies a presence record as named at `at`; anything else on the topic
/// (typing) or undecodable is skipped: it is not the notifier's.
fn apply_presence(
    rosters: &Mutex<HashMap<String, Roster>>,
    record: &BorrowedMessage<'_>,
    at: i64,
    events: &NotifierEvents,
) {
    let Some(Ok(Event::Presence(update))) = record.payload().map(serde_json::from_slice::<Event>) else { return };
    events.presence_applied();
    let mut rosters = rosters.lock().unwrap_or_else(|e| e.into_inner());
    rosters.entry(update.room.clone()).or_default().apply(&update, at);
}

/// Why one request did not land.
#[derive(Debug, Error)]
enum WebhookError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered {0}")]
    Status(StatusCode),
}

impl WebhookError {
    /// Worth another try: the receiver may answer later. Any other 4xx is
    /// the receiver refusing this request: trying again changes nothing.
    fn retryable(&self) -> bool {
        match self {
            WebhookError::Timeout(_) | WebhookError::Request(_) => true,
            WebhookError::Status(status) => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

/// The push service's endpoint.
struct Webhook {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    secret: Vec<u8>,
    timeout: Duration,
    attempts: usize,
    events: Arc<NotifierEvents>,
}

/// Most bytes of an answer read (and dropped), so the connection is reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Webhook {
    fn new(
        url: Uri,
        secret: Vec<u8>,
        config: &NotifierConfig,
        events: Arc<NotifierEvents>,
    ) -> Result<Self, WorkerError> {
        let connector = switchboard_core::http_client::connector(&url, config.timeout)
            .map_err(|e| WorkerError::Config(format!("--webhook-url {url}: no CA certificates to check it: {e}")))?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, url, secret, timeout: config.timeout, attempts: config.attempts, events })
    }

    /// POSTs `body` until it lands or may not be tried again; the error is why.
    async fn deliver(&self, body: Bytes, key: &str) -> Result<(), String> {
        let signature = sign(&self.secret, &body);
        let attempt = || self.post(body.clone(), key, &signature);
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(self.attempts - 1)
                    .with_jitter(),
            )
            .when(WebhookError::retryable)
            .notify(|e, after| self.events.webhook_retry(e, after))
            .await
            .map_err(|e| e.to_string())
    }

    async fn post(&self, body: Bytes, key: &str, signature: &str) -> Result<(), WebhookError> {
        let request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("switchboard-notifier/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, key)
            .body(Full::new(body))
            .expect("a POST of a parsed URI with plain headers is a valid request");
        let answered = tokio::time::timeout(self.timeout, async {
            let response = self.client.request(request).await.map_err(|e| WebhookError::Request(error_chain(&e)))?;
            let status = response.status();
            // Read (and drop) the answer, so the connection can be used again.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            Ok(status)
        })
        .await
        .map_err(|_| WebhookError::Timeout(self.timeout))??;
        if answered.is_success() { Ok(()) } else { Err(WebhookError::Status(answered)) }
    }
}

/// `<message id>:<batch>:<recipients>`, the last part 16 hex digits of the
/// SHA-256 of the batch's recipients. The same request, tried again or sent
/// again after a restart, has the same key. A batch worked out again after
/// a restart can differ (someone came into the room meanwhile): then so
/// does its key, and the receiver does not drop it, so nobody is left out
/// (someone in both may be told twice).
pub fn idempotency_key(notification: &Notification) -> String {
    let mut hash = Sha256::new();
    for user in &notification.recipients {
        hash.update(user.as_bytes());
        hash.update(b"\n");
    }
    let digest = hash.finalize();
    format!("{}:{}:{}", notification.message_id, notification.batch, hex::encode(&digest[..8]))
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        let signed = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(signed, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_batch_keeps_its_key_unless_its_recipients_change() {
        let notification = |recipients: &[&str]| Notification {
            room: "r".into(),
            message_id: "m".into(),
            seq: 1,
            epoch: 1,
            sender: "a".into(),
            sender_name: "A".into(),
            preview: "p".into(),
            sent_at: 0,
            recipients: recipients.iter().map(|u| u.to_string()).collect(),
            batch: 0,
        };
        let key = idempotency_key(&notification(&["bob", "carol"]));
        assert!(key.starts_with("m:0:") && key.len() == "m:0:".len() + 16, "{key}");
        assert_eq!(key, idempotency_key(&notification(&["bob", "carol"])));
        assert_ne!(key, idempotency_key(&notification(&["bob", "dave"])));
        assert_ne!(key, idempotency_key(&notification(&["bobcarol"])));
    }

    #[test]
    fn only_answers_that_may_change_are_retried() {
        assert!(WebhookError::Timeout(Duration::from_secs(1)).retryable());
        assert!(WebhookError::Request("connection refused".into()).retryable());
        for code in [500, 502, 503, 408, 429] {
            assert!(WebhookError::Status(StatusCode::from_u16(code).unwrap()).retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422] {
            assert!(!WebhookError::Status(StatusCode::from_u16(code).unwrap()).retryable(), "{code}");
        }
    }

    #[test]
    fn the_config_says_which_flag_is_wrong() {
        let mut config = NotifierConfig::default();
        assert!(config.validate().unwrap_err().contains("--webhook-url"));
        config.webhook_url = Some("ftp://push".into());
        assert!(config.validate().unwrap_err().contains("http:// or https://"));
        config.webhook_url = Some("http://127.0.0.1:9/push".into());
        assert!(config.validate().unwrap_err().contains("--webhook-secret"));
        config.webhook_secret = Some(Secret::new("short"));
        assert!(config.validate().unwrap_err().contains("32 bytes"));
        config.webhook_secret = Some(Secret::new("x".repeat(32)));
        config.recipients_per_request = 0;
        assert!(config.validate().unwrap_err().contains("--recipients-per-request"));
        config.recipients_per_request = 10;
        assert!(config.validate().is_ok());
    }
}
