//! Rust client for Quiver over NATS. Talks only to the public API subjects
//! (`quiver.<cluster>.api.<method>`), which every proxy serves in one queue group, so a client
//! needs no load balancer: NATS picks a proxy per request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_client::ClientError> {
//! use quiver_client::{schema, Client, ConnectOptions};
//! // Security is on by default: connect as a principal the server generated.
//! let options = ConnectOptions::default().credentials_file("quiver-data/credentials/admin.credentials")?;
//! let client = Client::connect_with("nats://127.0.0.1:4222", "quiver", &options).await?;
//! client.create_collection(schema::simple("docs", 384)).await?;
//! # Ok(()) }
//! ```
//!
//! [`schema`] builds schemas, rows, searches and index parameters; [`fvecs`] reads vectors
//! from `.fvecs` / `.ivecs` files.
//!
//! A cluster with `security.enabled` (the default) accepts only authenticated clients: pass its
//! `app.credentials` (the data API) or `admin.credentials` file, and its CA when NATS uses TLS,
//! through [`ConnectOptions`] and [`Client::connect_with`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod fvecs;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use quiver_schemas::protocol::{api, control};
use quiver_schemas::status::{
    Code, HEADER_ERROR, HEADER_REQUEST_ID, HEADER_STATUS, HEADER_TIMEOUT, HEADER_TRACEPARENT,
};
pub use quiver_schemas::*;

/// What a call can fail with. `Unavailable` and `Timeout` are worth retrying. The finer
/// server codes (collection or index not found, not loaded, deadline exceeded) arrive as
/// their broad class ([`Code::class`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("server error: {0}")]
    Internal(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The NATS server refused the call: this client's principal may not make it (an `app`
    /// calling an admin method such as drop_collection).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("malformed reply: {0}")]
    Decode(#[from] DecodeError),
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable(_) | ClientError::Timeout(_))
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How a [`Client`] authenticates to NATS and encrypts the connection. The default: neither.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// NATS user and password: the `app` or `admin` principal of a cluster with security on.
    pub user_password: Option<(String, String)>,
    /// A NATS `.creds` file (JWT + nkey seed) for a NATS server in operator mode.
    pub creds_file: Option<PathBuf>,
    /// CA bundle (PEM) the server's certificate is verified with; set = TLS is required.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for a server that verifies clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS even without `ca_file` (the system's roots verify the server).
    pub require_tls: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ConnectOptions")
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

impl ConnectOptions {
    /// Takes user and password from a credentials file holding `user:password` (the
    /// `admin.credentials` / `app.credentials` files Quiver generates).
    pub fn credentials_file(mut self, path: impl AsRef<Path>) -> Result<ConnectOptions> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Connect(format!("cannot read credentials {}: {e}", path.display())))?;
        match text.trim().split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                self.user_password = Some((user.to_string(), password.to_string()));
                Ok(self)
            }
            _ => Err(ClientError::Connect(format!("{}: must hold one line \"user:password\"", path.display()))),
        }
    }

    /// Verifies the server with the CA bundle at `path` (TLS required).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> ConnectOptions {
        self.ca_file = Some(path.into());
        self
    }

    async fn apply(&self, mut options: async_nats::ConnectOptions) -> Result<async_nats::ConnectOptions> {
        if let Some(path) = &self.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| ClientError::Connect(format!("cannot use {}: {e}", path.display())))?;
        }
        if let Some((user, password)) = &self.user_password {
            // A principal may read only the replies under its own inbox prefix (docs/security.md).
            options = options.user_and_password(user.clone(), password.clone()).custom_inbox_prefix(
                protocol::access::Principal::of_user(user)
                    .map_or_else(|| format!("_INBOX.{user}"), protocol::access::Principal::inbox_prefix),
            );
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls || self.ca_file.is_some() || self.client_cert.is_some() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// Waits for the server's permission violation naming `subject` (never, if none comes).
async fn refusal(mut violations: tokio::sync::broadcast::Receiver<String>, subject: &str) -> String {
    let quoted = format!("\"{subject}\"");
    loop {
        match violations.recv().await {
            Ok(text) if text.contains(&quoted) => return text,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// Methods that may be sent again when the connection is lost before their answer: reads, and
/// writes whose effect does not change when repeated (deletes and upserts by key; inserts with
/// keys are decided per call).
const RESENDABLE: &[&str] = &[
    "describe_collection",
    "list_collections",
    "load_collection",
    "release_collection",
    "flush",
    "delete",
    "upsert",
    "query",
    "get",
    "search",
    "distribution",
    "status",
    "scaling",
    "autoscaling",
    "idling",
    "events",
    "compaction_state",
    "plugin_list",
];

/// Calls sent again (same request id) when no answer came within [`HEDGE_AFTER`], while the
/// first send is still awaited: core NATS delivers at most once, and a request or its answer
/// routed through a nats-server that died on the way is lost without a trace. Whichever answer
/// comes first is taken. Reads, and inserts that carry their keys (only those get a request id:
/// each call's rows fit one log message per shard, which the proxy appends under a message id
/// derived from the request id, so JetStream stores it once however often it is sent).
const HEDGED: &[&str] =
    &["describe_collection", "list_collections", "query", "get", "search", "distribution", "status", "insert"];

/// Silence after which a call is sent again; it doubles for each further send.
const HEDGE_AFTER: Duration = Duration::from_secs(2);
/// Sends of one read at most (the first and its resends).
const MAX_SENDS: usize = 3;

/// A request id: unique per call of this process (its pid, the time and a counter).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A request that nothing acted on (sent again by [`Client::request`]), with the error to give
/// if time runs out.
struct Unserved(ClientError);

/// A connection to a Quiver cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    subjects: Subjects,
    timeout: Duration,
    /// The server's permission violations (its `-ERR` texts): a refused publish gets no reply,
    /// so a call watches these to fail at once instead of timing out.
    violations: tokio::sync::broadcast::Sender<String>,
    /// Fires when the connection to NATS is lost: replies to requests in flight are lost too.
    disconnects: tokio::sync::broadcast::Sender<()>,
    /// The W3C trace context sent with every call ([`Client::with_traceparent`]).
    traceparent: Option<Arc<str>>,
}

impl Client {
    /// Connects to the cluster `cluster` through the NATS server(s) at `url` (comma separated).
    pub async fn connect(url: &str, cluster: &str) -> Result<Client> {
        Client::connect_with(url, cluster, &ConnectOptions::default()).await
    }

    /// [`Client::connect`] with credentials and TLS.
    pub async fn connect_with(url: &str, cluster: &str, options: &ConnectOptions) -> Result<Client> {
        let (violations, _) = tokio::sync::broadcast::channel(16);
        let (disconnects, _) = tokio::sync::broadcast::channel(4);
        let on_violation = violations.clone();
        let on_disconnect = disconnects.clone();
        let nats = options
            .apply(async_nats::ConnectOptions::new())
            .await?
            .event_callback(move |event| {
                let (violations, disconnects) = (on_violation.clone(), on_disconnect.clone());
                async move {
                    match event {
                        async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                            if text.starts_with("Permissions Violation") =>
                        {
                            let _ = violations.send(text);
                        }
                        async_nats::Event::Disconnected => {
                            let _ = disconnects.send(());
                        }
                        _ => {}
                    }
                }
            })
            .name("quiver-client")
            .connection_timeout(Duration::from_secs(5))
            // Several servers of one NATS cluster, comma separated: one is used, the others
            // take over when it goes.
            .connect(url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect::<Vec<_>>())
            .await
            .map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
        Ok(Client {
            nats,
            subjects: Subjects::new(cluster),
            timeout: Duration::from_secs(60),
            violations,
            disconnects,
            traceparent: None,
        })
    }

    /// Sets the per-call deadline (default 60 s). It travels with every call, so the cluster
    /// stops working on a request once its caller stopped waiting.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// A client whose calls carry the W3C trace context `traceparent`
    /// (`00-<trace id>-<span id>-<flags>`, e.g. your span's, from your tracing library): with
    /// tracing on in the cluster (`tracing.endpoint`), each call's spans join that trace as
    /// children of that span, and the caller's sampled flag decides whether they are recorded.
    /// Cheap: clone the client per traced operation.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Client {
        self.traceparent = Some(Arc::from(traceparent.into()));
        self
    }

    /// The largest message the NATS server accepts.
    pub fn max_payload(&self) -> usize {
        self.nats.server_info().max_payload
    }

    /// Sends raw bytes to an API method (tests use it to send malformed messages).
    pub async fn call_raw(&self, method: &str, payload: Vec<u8>) -> Result<Bytes> {
        self.request(self.subjects.api(method), method, payload, None).await
    }

    /// One API call. A request that nothing served (no proxy subscribed at that moment: one
    /// restarting, or reconnecting after its nats-server was lost; or a node answering that it
    /// no longer acts for the service) was not acted on, so it is sent again, with a growing
    /// pause, within the client's timeout.
    ///
    /// A request whose connection was lost before its answer came may or may not have been
    /// acted on. With a `request_id` (reads, and writes that name their rows' keys) it is sent
    /// again with the same id: the proxy appends a write under a log message id derived from
    /// it, so JetStream stores it once. Without one (an insert whose keys the cluster assigns)
    /// the caller gets an `Unavailable` error saying it may have been applied. Reads are also
    /// sent again when they go unanswered for a while ([`HEDGED`]).
    async fn request(
        &self,
        subject: String,
        method: &str,
        payload: Vec<u8>,
        request_id: Option<String>,
    ) -> Result<Bytes> {
        let payload = Bytes::from(payload);
        let deadline = std::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout = left.max(Duration::from_millis(1));
            match self.request_once(&subject, method, payload.clone(), timeout, request_id.as_deref()).await {
                Err(Unserved(_)) if left > pause => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(Unserved(e)) => return Err(e),
                Ok(reply) => return reply,
            }
        }
    }

    async fn request_once(
        &self,
        subject: &str,
        method: &str,
        payload: Bytes,
        timeout: Duration,
        request_id: Option<&str>,
    ) -> std::result::Result<Result<Bytes>, Unserved> {
        let deadline = tokio::time::Instant::now() + timeout;
        let send = |timeout: Duration| {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_TIMEOUT, (timeout.as_millis() as u64).to_string().as_str());
            if let Some(id) = request_id {
                headers.insert(HEADER_REQUEST_ID, id);
            }
            if let Some(tp) = &self.traceparent {
                headers.insert(HEADER_TRACEPARENT, &**tp);
            }
            let request = async_nats::Request::new().payload(payload.clone()).headers(headers).timeout(Some(timeout));
            self.nats.send_request(subject.to_string(), request)
        };
        let hedged = request_id.is_some() && HEDGED.contains(&method);
        let mut sends = futures::stream::FuturesUnordered::new();
        sends.push(send(timeout));
        let mut silence = HEDGE_AFTER;
        let mut resend_at = tokio::time::Instant::now() + silence;
        let refused = refusal(self.violations.subscribe(), subject);
        tokio::pin!(refused);
        let mut disconnected = self.disconnects.subscribe();
        let sent = loop {
            tokio::select! {
                Some(sent) = sends.next() => match sent {
                    // One send ran out of time, or found no proxy (a resend reaching a proxy
                    // that is draining), while another may still answer.
                    Err(e)
                        if matches!(e.kind(), async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders)
                            && !sends.is_empty() => continue,
                    sent => break sent,
                },
                _ = tokio::time::sleep_until(resend_at), if hedged && sends.len() < MAX_SENDS => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left > Duration::ZERO {
                        sends.push(send(left));
                    }
                    silence *= 2;
                    resend_at += silence;
                }
                text = &mut refused => return Ok(Err(ClientError::PermissionDenied(text))),
                Ok(()) = disconnected.recv() => {
                    let lost = ClientError::Unavailable(format!(
                        "the connection to NATS was lost before the answer to {method}; it may or may not have been applied"
                    ));
                    return match request_id {
                        Some(_) => Err(Unserved(lost)),
                        None => Ok(Err(lost)),
                    };
                }
            }
        };
        let msg = match sent {
            Ok(msg) => msg,
            Err(e) => {
                return match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => Err(Unserved(ClientError::Unavailable(format!(
                        "nothing serves {subject}: is Quiver running with cluster name {:?} (and the node up)?",
                        self.subjects.cluster()
                    )))),
                    async_nats::RequestErrorKind::TimedOut => {
                        Ok(Err(ClientError::Timeout(format!("{method} after {:?}", self.timeout))))
                    }
                    _ => Ok(Err(ClientError::Unavailable(format!("{method}: {e}")))),
                };
            }
        };
        Self::outcome(msg)
    }

    /// A reply's payload, or the error its status headers carry.
    fn outcome(msg: async_nats::Message) -> std::result::Result<Result<Bytes>, Unserved> {
        if let Some(h) = &msg.headers {
            if let Some(status) = h.get(HEADER_STATUS) {
                let text = h.get(HEADER_ERROR).map(|v| v.as_str().to_string()).unwrap_or_default();
                let code = Code::from_u16(status.as_str().parse().unwrap_or(6));
                if code == Code::NotServed {
                    return Err(Unserved(ClientError::Unavailable(text)));
                }
                return Ok(Err(match code.class() {
                    Code::InvalidArgument => ClientError::InvalidArgument(text),
                    Code::NotFound => ClientError::NotFound(text),
                    Code::AlreadyExists => ClientError::AlreadyExists(text),
                    Code::Unavailable | Code::Stale => ClientError::Unavailable(text),
                    Code::Timeout => ClientError::Timeout(text),
                    _ => ClientError::Internal(text),
                }));
            }
        }
        Ok(Ok(msg.payload))
    }

    /// Calls method `C`. Reads, deletes and upserts are sent again, with one request id, if the
    /// connection is lost before their answer (see [`Client::request`]).
    async fn call<C: Call>(&self, req: &C::Request) -> Result<C::Reply> {
        let resend = RESENDABLE.contains(&C::METHOD);
        self.call_with::<C>(req, resend).await
    }

    async fn call_with<C: Call>(&self, req: &C::Request, resend: bool) -> Result<C::Reply> {
        let id = resend.then(request_id);
        let bytes = self.request(self.subjects.api(C::METHOD), C::METHOD, req.to_bytes(), id).await?;
        Ok(C::Reply::from_bytes(&bytes)?)
    }

    pub async fn create_collection(&self, schema: CollectionSchema) -> Result<()> {
        self.call::<api::CreateCollection>(&CreateCollection { schema }).await.map(|_| ())
    }

    pub async fn drop_collection(&self, name: &str) -> Result<()> {
        self.call::<api::DropCollection>(&CollectionName { name: name.into() }).await.map(|_| ())
    }

    pub async fn describe_collection(&self, name: &str) -> Result<CollectionDescription> {
        self.call::<api::DescribeCollection>(&CollectionName { name: name.into() }).await
    }

    pub async fn list_collections(&self) -> Result<Vec<String>> {
        self.call::<api::ListCollections>(&Empty {}).await.map(|l| l.names)
    }

    pub async fn create_index(&self, collection: &str, params: IndexParams) -> Result<()> {
        self.call::<api::CreateIndex>(&CreateIndex { collection: collection.into(), params }).await.map(|_| ())
    }

    /// Drops the vector index of a released collection (segments are then searched exactly).
    pub async fn drop_index(&self, collection: &str) -> Result<()> {
        self.call::<api::DropIndex>(&CollectionName { name: collection.into() }).await.map(|_| ())
    }

    /// Serves a collection from `replicas` in-memory replica groups on disjoint query nodes (0
    /// counts as 1). On a loaded collection it changes the number of replicas. Fails with
    /// `InvalidArgument` when fewer query nodes than `replicas` are alive.
    pub async fn load_collection(&self, collection: &str, replicas: u32) -> Result<()> {
        let req = LoadCollection { name: collection.into(), replicas };
        self.call::<api::LoadCollection>(&req).await.map(|_| ())
    }

    /// Stops serving a collection from query nodes; reads are refused until it is loaded again,
    /// inserts are still accepted.
    pub async fn release_collection(&self, collection: &str) -> Result<()> {
        self.call::<api::ReleaseCollection>(&CollectionName { name: collection.into() }).await.map(|_| ())
    }

    /// Creates partition `name` (loaded when the collection is); creating it again succeeds.
    pub async fn create_partition(&self, collection: &str, name: &str) -> Result<()> {
        self.partition_call::<api::CreatePartition>(collection, &[name], 0).await
    }

    /// Drops partition `name`, which must be released first; its rows are never read again.
    pub async fn drop_partition(&self, collection: &str, name: &str) -> Result<()> {
        self.partition_call::<api::DropPartition>(collection, &[name], 0).await
    }

    /// Reads cover partitions `names` again; a released collection is loaded with only them.
    pub async fn load_partitions(&self, collection: &str, names: &[&str], replicas: u32) -> Result<()> {
        self.partition_call::<api::LoadPartitions>(collection, names, replicas).await
    }

    /// Reads no longer cover partitions `names`; with none left, the collection is released.
    pub async fn release_partitions(&self, collection: &str, names: &[&str]) -> Result<()> {
        self.partition_call::<api::ReleasePartitions>(collection, names, 0).await
    }

    /// The collection's partitions (dropped ones left out).
    pub async fn list_partitions(&self, collection: &str) -> Result<Vec<PartitionInfo>> {
        let info = self.describe_collection(collection).await?.info;
        Ok(info.partition_list().into_iter().filter(|p| p.state != PartitionState::Dropped).collect())
    }

    async fn partition_call<C: Call<Request = PartitionRequest, Reply = Empty>>(
        &self,
        collection: &str,
        names: &[&str],
        replicas: u32,
    ) -> Result<()> {
        let names = names.iter().map(|n| n.to_string()).collect();
        self.call::<C>(&PartitionRequest { collection: collection.into(), names, replicas }).await.map(|_| ())
    }

    /// Inserts rows; acknowledged once they are durable in the log. Batches larger than the
    /// server's message limit are sent as several requests (each atomic on its own).
    pub async fn insert(&self, collection: &str, rows: RowBatch) -> Result<MutationResult> {
        self.write::<api::Insert>(collection, "", rows).await
    }

    /// [`Self::insert`] into partition `partition` (empty: `_default`).
    pub async fn insert_into(&self, collection: &str, partition: &str, rows: RowBatch) -> Result<MutationResult> {
        self.write::<api::Insert>(collection, partition, rows).await
    }

    /// Inserts rows that replace the rows with the same keys (each row carries its key).
    /// Readers see a key's old row or its new one, never neither. Acknowledged once durable in
    /// the log; batches larger than the server's message limit are sent as several requests
    /// (each atomic on its own).
    pub async fn upsert(&self, collection: &str, rows: RowBatch) -> Result<MutationResult> {
        self.write::<api::Upsert>(collection, "", rows).await
    }

    /// [`Self::upsert`] into partition `partition` (the old rows go whatever their partition).
    pub async fn upsert_into(&self, collection: &str, partition: &str, rows: RowBatch) -> Result<MutationResult> {
        self.write::<api::Upsert>(collection, partition, rows).await
    }

    /// An insert or upsert, cut into calls under the server's message limit.
    async fn write<C: Call<Request = Insert, Reply = MutationResult>>(
        &self,
        collection: &str,
        partition: &str,
        rows: RowBatch,
    ) -> Result<MutationResult> {
        let insert = |rows| Insert { collection: collection.into(), rows, partition: partition.into() };
        let n = rows.num_rows();
        let row_bytes = rows.dim as usize * 4 + 128;
        let per_call = ((self.max_payload().saturating_sub(64 * 1024)) / row_bytes.max(1)).max(1);
        // Rows that carry their keys are stored once however often they are sent.
        let keyed = !rows.pks.is_empty();
        if n <= per_call {
            return self.call_with::<C>(&insert(rows), keyed).await;
        }
        let mut out = MutationResult { pks: Vec::with_capacity(n), timestamp: 0, count: 0 };
        let mut start = 0;
        while start < n {
            let end = (start + per_call).min(n);
            let part = schema::slice_rows(&rows, start, end);
            let res: MutationResult = self.call_with::<C>(&insert(part), keyed).await?;
            out.pks.extend(res.pks);
            out.timestamp = res.timestamp;
            out.count += res.count;
            start = end;
        }
        Ok(out)
    }

    pub async fn delete(&self, collection: &str, pks: Vec<PrimaryKey>) -> Result<MutationResult> {
        let req = Delete { collection: collection.into(), pks, filter: String::new(), partition: String::new() };
        self.call::<api::Delete>(&req).await
    }

    /// Deletes every row matching a Milvus boolean expression, however many; the result's
    /// `count` says how many were deleted (its key list is empty, as in Milvus).
    pub async fn delete_where(&self, collection: &str, filter: &str) -> Result<MutationResult> {
        self.delete_in(collection, "", filter).await
    }

    /// [`Self::delete_where`] for the rows of partition `partition` only (empty: every
    /// partition). A key deleted this way is deleted in every partition holding it.
    pub async fn delete_in(&self, collection: &str, partition: &str, filter: &str) -> Result<MutationResult> {
        let req = Delete {
            collection: collection.into(),
            pks: Vec::new(),
            filter: filter.into(),
            partition: partition.into(),
        };
        self.call::<api::Delete>(&req).await
    }

    /// Rows matching a filter (see [`Query`]); `output_fields = ["count(*)"]` counts them.
    pub async fn query(&self, query: &Query) -> Result<QueryResults> {
        self.call::<api::Query>(query).await
    }

    pub async fn get(
        &self,
        collection: &str,
        pks: Vec<PrimaryKey>,
        output_fields: Vec<String>,
        consistency: Consistency,
    ) -> Result<GetResults> {
        self.call::<api::Get>(&Get { collection: collection.into(), pks, output_fields, consistency }).await
    }

    pub async fn search(&self, search: &Search) -> Result<SearchResults> {
        self.call::<api::Search>(search).await
    }

    /// Seals and persists everything inserted so far.
    pub async fn flush(&self, collection: &str) -> Result<FlushResult> {
        self.call::<api::Flush>(&CollectionName { name: collection.into() }).await
    }

    /// Compacts a collection now: small sealed segments are merged and deleted rows dropped,
    /// in the background. Returns the job (its id and plans); follow it with
    /// [`Client::compaction_state`].
    pub async fn compact(&self, collection: &str) -> Result<CompactionState> {
        self.call::<api::Compact>(&CompactRequest { name: collection.into(), ..CompactRequest::default() }).await
    }

    /// A force merge: every sealed segment of each shard merged into segments of at most
    /// `target_rows` rows (0: one per shard), deleted rows dropped. A segment already alone
    /// within the target is listed as a `kept` plan (nothing rewritten). For a collection that
    /// is done changing, before a benchmark or a read-mostly phase.
    pub async fn force_merge(&self, collection: &str, target_rows: u64) -> Result<CompactionState> {
        self.call::<api::Compact>(&CompactRequest { name: collection.into(), force: true, target_rows }).await
    }

    /// A compaction job's plans and their state (`executing`, then `completed`).
    pub async fn compaction_state(&self, job: u64) -> Result<CompactionState> {
        self.call::<api::CompactionState>(&CompactionJobId { id: job }).await
    }

    /// Where each segment and shard of a collection is served.
    pub async fn distribution(&self, collection: &str) -> Result<Distribution> {
        self.call::<api::Distribution>(&CollectionName { name: collection.into() }).await
    }

    /// Every live node with its role, health, memory, segments and restarts.
    pub async fn status(&self) -> Result<ClusterStatus> {
        self.call::<api::Status>(&Empty {}).await
    }

    /// Asks the cluster to run `replicas` nodes of `role` (`proxy`, `datanode`, `indexnode` or
    /// `querynode`; 1 ≤ replicas ≤ `scaling.max_replicas`). Returns at once with what changed;
    /// [`Client::scaling`] shows the cluster converging. Admin only.
    pub async fn scale(&self, role: &str, replicas: u32) -> Result<ScaleReply> {
        self.call::<api::Scale>(&ScaleRequest { role: role.into(), replicas, size: NodeSize::UNSIZED }).await
    }

    /// Asks the cluster to give every node of `role` this size (MISSION S3.3: CPU and memory
    /// together). The scaler replaces the nodes make-before-break: nodes of the new size start
    /// and take the work over before the old ones drain.
    /// Give either the CPU or the memory (0 for the other: it follows at
    /// `scaling.memory_per_cpu_mb`), or both in that ratio. Admin only.
    pub async fn resize(&self, role: &str, size: NodeSize) -> Result<ScaleReply> {
        self.call::<api::Scale>(&ScaleRequest { role: role.into(), replicas: 0, size }).await
    }

    /// Sends a [`ScaleRequest`] as it is: a node count, a size, or both. Admin only.
    pub async fn scale_with(&self, req: &ScaleRequest) -> Result<ScaleReply> {
        self.call::<api::Scale>(req).await
    }

    /// Sets a role's autoscaling bounds (min = max pins the size and turns autoscaling off for
    /// it, MISSION S3.4); returns the autoscaler's status. Admin only.
    pub async fn autoscale(&self, req: &AutoscaleRequest) -> Result<AutoscaleStatus> {
        self.call::<api::Autoscale>(req).await
    }

    /// Whether the cluster idles (its compute nodes stopped for want of requests), the timeout
    /// in force, and the last measured start-up time. A read sent while it idles wakes it and
    /// is answered once it serves.
    pub async fn idling(&self) -> Result<IdlingStatus> {
        self.call::<api::Idling>(&Empty {}).await
    }

    /// The autoscaler's settings, every role's metrics window and its recent decisions.
    pub async fn autoscaling(&self) -> Result<AutoscaleStatus> {
        self.call::<api::Autoscaling>(&Empty {}).await
    }

    /// Every scalable role's wanted and actual node count, and the host agents.
    pub async fn scaling(&self) -> Result<ScalingStatus> {
        self.call::<api::Scaling>(&Empty {}).await
    }

    /// Recent hand-offs (`sealedSegmentChangeInfo`) and scaling steps, oldest first.
    pub async fn events(&self) -> Result<ClusterEvents> {
        self.call::<api::Events>(&Empty {}).await
    }

    /// Validates a policy plugin (a Wasm component) in the cluster and adds it to the catalog
    /// as the next version of `name`. Returns the catalog entry as JSON.
    pub async fn plugin_load(&self, kind: &str, name: &str, wasm: Vec<u8>) -> Result<String> {
        let req = PluginUpload { kind: kind.into(), name: name.into(), wasm };
        Ok(self.call::<api::PluginLoad>(&req).await?.json)
    }

    /// Makes `name@version` the active plugin of its kind on every node ("builtin" for the
    /// bundled plugins). Returns the new active choice as JSON.
    pub async fn plugin_activate(&self, name: &str, version: &str) -> Result<String> {
        let req = PluginActivate { name: name.into(), version: version.into() };
        Ok(self.call::<api::PluginActivate>(&req).await?.json)
    }

    /// Goes back to the previously active plugin of `kind`. Returns the new choice as JSON.
    pub async fn plugin_rollback(&self, kind: &str) -> Result<String> {
        Ok(self.call::<api::PluginRollback>(&PluginRollback { kind: kind.into() }).await?.json)
    }

    /// Asks node `node_id` (as listed by [`Client::status`]) to drain: it takes no new work,
    /// hands off or finishes what it holds, and stops. Returns once the node has started
    /// draining; [`Client::status`] shows its state until it is gone.
    pub async fn drain_node(&self, node_id: &str) -> Result<()> {
        let subject = self.subjects.node_call::<control::Drain>(node_id);
        let bytes = self.request(subject, control::Drain::METHOD, Empty {}.to_bytes(), None).await?;
        Empty::from_bytes(&bytes)?;
        Ok(())
    }

    /// The plugin catalog, the active plugin per kind and what every node runs, as JSON.
    pub async fn plugin_list(&self) -> Result<String> {
        Ok(self.call::<api::PluginList>(&Empty {}).await?.json)
    }
}
