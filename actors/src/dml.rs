//! Reading a shard's DML log: an ordered JetStream consumer from a given position, and the
//! catch-up check that consistency and flush rely on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::push::{self, OrderedErrorKind};
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use quiver_runtime::retry::{retry, Backoff};
use quiver_runtime::{Bus, Error, Result};
use quiver_schemas::protocol::subjects::DmlKind;
use quiver_schemas::{CollectionInfo, DataType, DmlEntry, PrimaryKey, RowBatch, ScalarValue, Seq, Wire};
use tokio::sync::mpsc;

/// Header naming the kind of a DML message, so readers can skip payloads they do not need.
pub const KIND_HEADER: &str = "Quiver-Dml";
/// On a message of an atomic batch of several: how many messages of the batch follow it. A
/// reader applies the batch as one step (an upsert's delete and insert are seen together).
pub const BATCH_REST_HEADER: &str = "Quiver-Batch-Rest";

/// Log entries this process refused to apply (undecodable, or not matching the collection's
/// schema), since it started.
static QUARANTINED: AtomicU64 = AtomicU64::new(0);

/// How many log entries this process has quarantined (shown in node status).
pub fn quarantined() -> u64 {
    QUARANTINED.load(Ordering::Relaxed)
}

/// ", N log entries quarantined" for a node's status detail, when there are any.
pub fn quarantine_note() -> Option<String> {
    match quarantined() {
        0 => None,
        n => Some(format!(", {n} log entries quarantined (see the log)")),
    }
}

/// Whether a value may be stored in a field of type `t` (numbers are coerced between the
/// numeric types; `Null` fits anywhere).
pub(crate) fn value_fits(t: DataType, v: &ScalarValue) -> bool {
    match (t, v) {
        // NaN and infinity cannot be stored (segment files are JSON, which has neither) and
        // compare as nothing; Milvus refuses them too.
        (DataType::Float | DataType::Double, ScalarValue::Float(f)) => f.is_finite(),
        (DataType::Float | DataType::Double, ScalarValue::Double(f)) => f.is_finite(),
        _ => matches!(
            (t, v),
            (_, ScalarValue::Null)
                | (DataType::Bool, ScalarValue::Bool(_))
                | (DataType::Int64, ScalarValue::Int64(_))
                | (DataType::Float | DataType::Double, ScalarValue::Int64(_))
                | (DataType::VarChar, ScalarValue::VarChar(_))
                | (DataType::Json, ScalarValue::Json(_))
        ),
    }
}

/// What an entry of one collection's log must look like to be applied. The proxy checks every
/// write, but the log is only as trustworthy as everything that can publish to it: an entry
/// that would break a reader (vectors that are not whole rows, columns of the wrong length or
/// type) is quarantined (logged, counted, skipped) instead of crash-looping the role that
/// replays it or reaching a sealed segment.
#[derive(Debug, Clone)]
pub struct EntryCheck {
    dim: usize,
    pk: DataType,
    fields: HashMap<String, DataType>,
    dynamic: bool,
}

impl EntryCheck {
    pub fn of(info: &CollectionInfo) -> EntryCheck {
        EntryCheck {
            dim: info.dim() as usize,
            pk: info.primary_field().map_or(DataType::Int64, |f| f.data_type),
            fields: info
                .schema
                .fields
                .iter()
                .filter(|f| !f.is_primary && f.data_type != DataType::FloatVector)
                .map(|f| (f.name.clone(), f.data_type))
                .collect(),
            dynamic: info.schema.enable_dynamic_field,
        }
    }

    /// Why `entry` cannot be applied, if it cannot.
    pub fn check(&self, entry: &DmlEntry) -> std::result::Result<(), String> {
        match entry {
            DmlEntry::Insert { rows, .. } => self.check_rows(rows),
            DmlEntry::Delete { pks, .. } => match pks.iter().find(|pk| !self.key_fits(pk)) {
                Some(pk) => Err(format!("delete of key {pk:?}, not of the collection's key type {:?}", self.pk)),
                None => Ok(()),
            },
        }
    }

    fn key_fits(&self, pk: &PrimaryKey) -> bool {
        matches!((self.pk, pk), (DataType::Int64, PrimaryKey::Int64(_)) | (DataType::VarChar, PrimaryKey::VarChar(_)))
    }

    fn check_rows(&self, rows: &RowBatch) -> std::result::Result<(), String> {
        let n = rows.pks.len();
        if rows.dim as usize != self.dim {
            return Err(format!(
                "insert of {}-dimensional vectors into a {}-dimensional collection",
                rows.dim, self.dim
            ));
        }
        if rows.vectors.len() != n.saturating_mul(self.dim) {
            return Err(format!("insert of {n} rows with {} floats (not {n} × {})", rows.vectors.len(), self.dim));
        }
        if let Some(pk) = rows.pks.iter().find(|pk| !self.key_fits(pk)) {
            return Err(format!("insert of key {pk:?}, not of the collection's key type {:?}", self.pk));
        }
        if rows.vectors.iter().any(|v| !v.is_finite()) {
            return Err("insert of vectors holding NaN or infinity".into());
        }
        for col in &rows.columns {
            let Some(&t) = self.fields.get(&col.name) else {
                return Err(format!("insert into field {:?}, which the schema does not have", col.name));
            };
            if col.values.len() != n {
                return Err(format!("field {:?} has {} values for {n} rows", col.name, col.values.len()));
            }
            if let Some(v) = col.values.iter().find(|v| !value_fits(t, v)) {
                return Err(format!("field {:?} is {t:?}, the entry holds {v:?}", col.name));
            }
        }
        if !rows.dynamic.is_empty() && (!self.dynamic || rows.dynamic.len() != n) {
            return Err(format!("{} dynamic-field values for {n} rows", rows.dynamic.len()));
        }
        Ok(())
    }
}

fn quarantine(collection: u64, shard: u32, seq: Seq, why: &str) {
    QUARANTINED.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("quiver_dml_quarantined_total").increment(1);
    tracing::error!(collection, shard, seq, why, "quarantined a log entry: skipped, not applied");
}

/// A decoded log entry with its position.
pub struct LogEntry {
    pub seq: Seq,
    /// The position delivered just before (or the reader's start). Entries between `prev` and
    /// `seq` were removed from the stream before the reader got to them: inserts purged once
    /// served from segments, deletes purged below the delete floor.
    pub prev: Seq,
    pub entry: Option<DmlEntry>,
    /// Entries of the same atomic batch that follow this one (0: none, or not in a batch).
    pub batch_rest: u32,
}

/// A shard stream's log read from a given position, entry by entry, in order.
///
/// An ordered push consumer, read by a task of its own that hands decoded entries over a
/// short queue: [`ShardLog::next`] is only a receive, so a caller may drop it (a `select!`
/// with a timer) at any time without losing an entry or cutting off the task's recovery
/// mid-way. The task survives NATS server restarts: when the client has reconnected since the
/// consumer was created, the consumer stops sending heartbeats, or it falls silent while the
/// stream holds later entries, a fresh consumer resumes right after the last delivered
/// position. (The client's own ordered consumer can miss a quick disconnect/reconnect and then
/// wait on a consumer the restarted server no longer has, and lives on one nats-server.)
pub struct ShardLog {
    entries: mpsc::Receiver<Result<LogEntry>>,
    reader: tokio::task::JoinHandle<()>,
    /// Where this reader reports how far behind the log it is ([`max_lag`]).
    lag: Option<LagKey>,
}

/// One reporting reader: its kind (the role reading) and a process-unique number.
type LagKey = (&'static str, u64);

/// Entries each reporting log reader of this process still has to read: JetStream's count of
/// messages after the last one delivered (`pending`), as of that delivery.
static LAGS: std::sync::LazyLock<dashmap::DashMap<LagKey, u64>> = std::sync::LazyLock::new(Default::default);

/// The most entries any log reader of `reader` kind (`datanode`, `querynode`) in this process
/// still has to read (None: it has no reader). Exported as `quiver_dml_lag_entries`.
pub fn max_lag(reader: &str) -> Option<u64> {
    LAGS.iter().filter(|e| e.key().0 == reader).map(|e| *e.value()).max()
}

impl Drop for ShardLog {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(key) = self.lag {
            LAGS.remove(&key);
        }
    }
}

/// Decoded entries a reader task may hold ahead of its caller. Entries are at most a NATS
/// payload each (1 MiB by default), so a reader buffers a few MiB at most.
const QUEUE: usize = 8;
/// How often an idle reader checks whether the NATS connection was re-established.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);
/// How long a reader keeps trying to recreate its consumer before giving up (role restart).
const REOPEN_LIMIT: Duration = Duration::from_secs(30);
/// How long one try at creating a consumer may take: a request lost with a nats-server would
/// otherwise hold the reader for the client's whole request timeout.
const REOPEN_TRY: Duration = Duration::from_secs(5);
/// Silence after which a reader asks whether its log holds later entries than it got: an
/// ordered consumer lives on one nats-server and dies with it, and the client library notices
/// only after two missed 5 s heartbeats.
const STALL_CHECK: Duration = Duration::from_secs(2);

fn connects(bus: &Bus) -> u64 {
    bus.client().statistics().connects.load(Ordering::Relaxed)
}

async fn ordered_consumer(bus: &Bus, collection: u64, shard: u32, after: Seq) -> Result<push::Ordered> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    let deliver_policy =
        if after == 0 { DeliverPolicy::All } else { DeliverPolicy::ByStartSequence { start_sequence: after + 1 } };
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: bus.client().new_inbox(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Unavailable(format!("cannot read DML stream {name}: {e}")))?;
    consumer.messages().await.map_err(|e| Error::Unavailable(format!("cannot read DML stream {name}: {e}")))
}

impl ShardLog {
    /// Opens the shard log of collection `info`, `shard`, from sequence `after + 1`. Insert
    /// payloads at or below `skip_inserts_until` are not decoded (the reader already has them
    /// sealed); entries that do not fit the collection are quarantined ([`EntryCheck`]). With
    /// `lag`, the reader reports how far behind the log it is as one of that role's
    /// ([`max_lag`]). Fails when the first consumer cannot be created (a dropped collection
    /// is `CollectionNotFound`).
    pub async fn open(
        bus: &Bus,
        info: &CollectionInfo,
        shard: u32,
        after: Seq,
        skip_inserts_until: Seq,
        lag: Option<&'static str>,
    ) -> Result<ShardLog> {
        let connects = connects(bus);
        let collection = info.id;
        let messages = ordered_consumer(bus, collection, shard, after).await?;
        let lag = lag.map(|reader| {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let key = (reader, NEXT.fetch_add(1, Ordering::Relaxed));
            LAGS.insert(key, 0);
            key
        });
        let reader = Reader {
            bus: bus.clone(),
            collection,
            shard,
            messages,
            skip_inserts_until,
            check: EntryCheck::of(info),
            last: after,
            connects,
            delivered_at: Instant::now(),
            lag,
        };
        let (tx, entries) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(reader.run(tx));
        Ok(ShardLog { entries, reader, lag })
    }

    /// The next entry; `None` when the consumer ended. After an error there are no more
    /// entries. Positions only grow: an entry at or below one already delivered (a replay
    /// across a consumer switch) is skipped. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Result<LogEntry>> {
        self.entries.recv().await
    }
}

/// The task behind a [`ShardLog`]: owns the consumer and replaces it when it goes quiet.
struct Reader {
    bus: Bus,
    collection: u64,
    shard: u32,
    messages: push::Ordered,
    skip_inserts_until: Seq,
    check: EntryCheck,
    /// Last position delivered (or the start position): a new consumer resumes after it.
    last: Seq,
    /// The client's connection count when `messages` was created.
    connects: u64,
    /// When the consumer last delivered something, was created, or the stall check last ran.
    delivered_at: Instant,
    lag: Option<LagKey>,
}

impl Reader {
    /// Reads until the consumer ends, fails, or the [`ShardLog`] is dropped.
    async fn run(mut self, entries: mpsc::Sender<Result<LogEntry>>) {
        while let Some(entry) = self.next().await {
            let failed = entry.is_err();
            if entries.send(entry).await.is_err() || failed {
                return;
            }
            // Time spent waiting for a busy caller is not the consumer's silence.
            self.delivered_at = Instant::now();
        }
    }

    /// Replaces the consumer with a new one starting after the last delivered position,
    /// trying again (each try bounded) for up to [`REOPEN_LIMIT`] while the server is not ready.
    async fn reopen(&mut self, why: &str) -> Result<()> {
        let (collection, shard, after) = (self.collection, self.shard, self.last);
        tracing::debug!(collection, shard, after, why, "reopening DML consumer");
        let bus = &self.bus;
        let try_once = || async {
            let connects = connects(bus);
            match tokio::time::timeout(REOPEN_TRY, ordered_consumer(bus, collection, shard, after)).await {
                Ok(messages) => messages.map(|m| (m, connects)),
                Err(_) => Err(Error::Unavailable(format!(
                    "creating a consumer of shard {shard}'s log took over {REOPEN_TRY:?}"
                ))),
            }
        };
        let retryable = |e: &Error| {
            tracing::warn!(collection, shard, error = %e, "cannot reopen DML consumer yet; retrying");
            !matches!(e, Error::CollectionNotFound(_))
        };
        let backoff = Backoff::within(REOPEN_LIMIT, Duration::from_millis(50), Duration::from_secs(1));
        let (messages, connects) = retry(backoff, retryable, try_once).await?;
        tracing::info!(collection, shard, after, why, "DML consumer reopened");
        metrics::counter!("quiver_dml_consumer_reopens_total").increment(1);
        self.messages = messages;
        self.connects = connects;
        self.delivered_at = Instant::now();
        Ok(())
    }

    /// Whether the log holds entries after the last one delivered (asked at most once per
    /// [`STALL_CHECK`] of silence, bounded in time; `false` when the log does not answer).
    async fn behind(&mut self) -> bool {
        self.delivered_at = Instant::now();
        let last = tokio::time::timeout(RECONNECT_CHECK, last_seq(&self.bus, self.collection, self.shard)).await;
        matches!(last, Ok(Ok(last)) if last > self.last)
    }

    /// The next entry; `None` when the consumer ended.
    async fn next(&mut self) -> Option<Result<LogEntry>> {
        let (msg, seq) = loop {
            if connects(&self.bus) != self.connects {
                if let Err(e) = self.reopen("reconnected to NATS").await {
                    return Some(Err(e));
                }
            }
            let next = tokio::time::timeout(RECONNECT_CHECK, self.messages.next()).await;
            if matches!(next, Ok(Some(Ok(_)))) {
                self.delivered_at = Instant::now();
            }
            match next {
                Err(_) => {
                    if self.delivered_at.elapsed() >= STALL_CHECK && self.behind().await {
                        if let Err(e) = self.reopen("delivered nothing while the log holds later entries").await {
                            return Some(Err(e));
                        }
                    }
                    continue;
                }
                Ok(None) => return None,
                Ok(Some(Ok(m))) => match m.info() {
                    Ok(info) if info.stream_sequence <= self.last => continue,
                    Ok(info) => {
                        if let Some(key) = self.lag {
                            LAGS.insert(key, info.pending);
                        }
                        let seq = info.stream_sequence;
                        break (m, seq);
                    }
                    Err(e) => return Some(Err(Error::Internal(format!("DML message without metadata: {e}")))),
                },
                Ok(Some(Err(e))) if e.kind() == OrderedErrorKind::MissingHeartbeat => {
                    if let Err(e) = self.reopen("missed heartbeats").await {
                        return Some(Err(e));
                    }
                }
                Ok(Some(Err(e))) => return Some(Err(Error::Unavailable(format!("DML stream: {e}")))),
            }
        };
        let prev = std::mem::replace(&mut self.last, seq);
        let header = |name: &str| msg.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str());
        let is_insert = header(KIND_HEADER) == Some("insert");
        let batch_rest = header(BATCH_REST_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
        if is_insert && seq <= self.skip_inserts_until {
            return Some(Ok(LogEntry { seq, prev, entry: None, batch_rest }));
        }
        let entry = DmlEntry::from_bytes(&msg.payload)
            .map_err(|e| e.to_string())
            .and_then(|entry| self.check.check(&entry).map(|()| entry));
        match entry {
            Ok(entry) => Some(Ok(LogEntry { seq, prev, entry: Some(entry), batch_rest })),
            Err(why) => {
                quarantine(self.collection, self.shard, seq, &why);
                Some(Ok(LogEntry { seq, prev, entry: None, batch_rest }))
            }
        }
    }
}

/// A shard stream that cannot be opened: gone with its dropped collection (`CollectionNotFound`),
/// or out of reach for now (`Unavailable`).
fn stream_error(name: &str, collection: u64, e: async_nats::jetstream::context::GetStreamError) -> Error {
    match e.kind() {
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(js)
            if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
        {
            Error::CollectionNotFound(format!("DML stream {name} does not exist (collection {collection} was dropped)"))
        }
        _ => Error::Unavailable(format!("DML stream {name}: {e}")),
    }
}

/// The last sequence currently in a shard's stream (0 when empty).
pub async fn last_seq(bus: &Bus, collection: u64, shard: u32) -> Result<Seq> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    Ok(stream.cached_info().state.last_sequence)
}

/// How long one ask for a stream's last sequence may take in [`last_seq_within`].
const LAST_SEQ_TRY: Duration = Duration::from_secs(2);

/// [`last_seq`], asked again for up to `within` while the stream does not answer: only its
/// leader knows the last acknowledged position, and a stream whose leader's server died has
/// none until its replicas elect one (JetStream's election takes 4 to 9 s, longer on a busy
/// machine). Each ask is bounded, so the answer comes soon after the new leader does.
pub async fn last_seq_within(bus: &Bus, collection: u64, shard: u32, within: Duration) -> Result<Seq> {
    let backoff = Backoff::within(within, Duration::from_millis(100), Duration::from_millis(500));
    let give_up = Instant::now() + within;
    let ask = || async {
        let limit = give_up.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(100), LAST_SEQ_TRY);
        match tokio::time::timeout(limit, last_seq(bus, collection, shard)).await {
            Ok(answer) => answer,
            Err(_) => {
                Err(Error::Unavailable(format!("shard {shard}'s log did not say its last position within {limit:?}")))
            }
        }
    };
    let retryable = |e: &Error| {
        let Error::Unavailable(e) = e else { return false };
        tracing::debug!(collection, shard, error = %e, "asking a shard log for its last position again");
        metrics::counter!("quiver_log_position_retries_total").increment(1);
        true
    };
    retry(backoff, retryable, ask).await
}

/// Removes inserts below `before` from a shard stream (they are sealed in segments). Deletes
/// stay until every segment has them applied ([`purge_deletes`]).
pub async fn purge_inserts(bus: &Bus, collection: u64, shard: u32, before: Seq) -> Result<()> {
    purge(bus, collection, shard, bus.subjects().dml_entry(collection, shard, DmlKind::Insert), before).await
}

/// Removes the entries on `subject` below `before` from a shard stream.
async fn purge(bus: &Bus, collection: u64, shard: u32, subject: String, before: Seq) -> Result<()> {
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus
        .jetstream()
        .get_stream_no_info(&name)
        .await
        .map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))?;
    stream
        .purge()
        .filter(subject)
        .sequence(before)
        .await
        .map_err(|e| Error::Unavailable(format!("purge of {name}: {e}")))?;
    Ok(())
}

/// The number of delete entries a shard stream holds (those below the shard's delete floor are
/// purged, so this is what compaction has not applied everywhere yet).
pub async fn delete_entries(bus: &Bus, collection: u64, shard: u32) -> Result<u64> {
    use futures::TryStreamExt;
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream_no_info(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    let subject = bus.subjects().dml_entry(collection, shard, DmlKind::Delete);
    let mut info =
        stream.info_with_subjects(&subject).await.map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))?;
    let mut count = 0u64;
    while let Some((_, n)) = info.try_next().await.map_err(|e| Error::Unavailable(format!("DML stream {name}: {e}")))? {
        count += n as u64;
    }
    Ok(count)
}

/// The position of the last delete entry a shard stream holds (0 when it holds none).
pub async fn last_delete_seq(bus: &Bus, collection: u64, shard: u32) -> Result<Seq> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let name = bus.subjects().dml_stream(collection, shard);
    let stream = bus.jetstream().get_stream_no_info(&name).await.map_err(|e| stream_error(&name, collection, e))?;
    let subject = bus.subjects().dml_entry(collection, shard, DmlKind::Delete);
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(Error::Unavailable(format!("DML stream {name}: {e}"))),
    }
}

/// Removes deletes below `before` from a shard stream: every segment of the shard has them
/// applied (compaction), and query nodes read the shard's deletes after its floor.
pub async fn purge_deletes(bus: &Bus, collection: u64, shard: u32, before: Seq) -> Result<()> {
    purge(bus, collection, shard, bus.subjects().dml_entry(collection, shard, DmlKind::Delete), before).await
}
