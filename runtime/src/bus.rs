//! The NATS bus: typed request/reply, pub/sub and queue groups carrying Cap'n Proto messages,
//! subjects namespaced by cluster, deadlines and trace context in headers, JetStream access.
//!
//! Replies carry their outcome in headers: no `Quiver-Status` header means success and the
//! payload is the response message; otherwise the payload is empty and `Quiver-Error` explains.
//!
//! Every request carries its caller's remaining budget (`Quiver-Timeout-Ms`); a server turns
//! it into a [`RequestContext`] on arrival and bounds every sub-request and retry by it, so
//! no work goes on for a caller that gave up.
//!
//! Calls between roles of one process (a proxy and a query node of `quiver standalone`, or
//! of one `quiver run --roles ...`) skip nats-server when `node.local_calls` is on: a role
//! registers how it takes them ([`Bus::serve_locally`]) and [`Bus::call_node`] hands the same
//! encoded request to it in memory, with the caller's budget and trace context, and gets the
//! same encoded reply or error back ([`LocalRequest`]): through the role's actor, or, for the
//! methods a role serves off its actor ([`LocalServer::direct`]), started in the caller's
//! thread. Everything else (queue groups, events, the DML log) always goes through NATS.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use quiver_schemas::protocol::{NodeCall, QueueCall, Service};
use quiver_schemas::{Subjects, Wire};

use crate::error::{Code, Error, Result};
use crate::retry::{retry, Backoff};

pub use quiver_schemas::status::{
    HEADER_DEADLINE, HEADER_ERROR, HEADER_PROGRESS, HEADER_REQUEST_ID, HEADER_STATUS, HEADER_TIMEOUT,
    HEADER_TRACEPARENT, MAX_REQUEST_ID,
};

/// Whether a client's request id may name log messages: 1 to [`MAX_REQUEST_ID`] characters of
/// ASCII letters, digits, `.`, `_` and `-` (anything else is ignored, not refused).
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How often the callee of a [`CallOptions::long`] call sends word that it is still working.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Words in a row a long call may miss before its caller takes the request (or the answer) as
/// lost: a callee's thread may be held up for a while, a message lost with a server is lost.
const PROGRESS_MISSES: u32 = 5;
/// Bounds of a progress interval a request may ask for (a hostile header is clamped).
const PROGRESS_MIN: Duration = Duration::from_millis(100);
const PROGRESS_MAX: Duration = Duration::from_secs(60);

/// The interval at which a request's caller asks for word while it is worked on
/// ([`HEADER_PROGRESS`]; clamped to 100 ms – 60 s), if it asks.
pub fn progress_of(msg: &Message) -> Option<Duration> {
    let ms = msg.headers.as_ref()?.get(HEADER_PROGRESS)?.as_str().parse::<u64>().ok()?;
    Some(Duration::from_millis(ms).clamp(PROGRESS_MIN, PROGRESS_MAX))
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// How long this call may take (the bus default when `None`).
    pub timeout: Option<Duration>,
    pub traceparent: Option<String>,
    /// Ask the callee for word every this often while it works, and fail the call as lost
    /// after [`PROGRESS_MISSES`] missed words instead of waiting out `timeout` (see
    /// [`CallOptions::long`]). Calls to a role of this process need none.
    pub progress: Option<Duration>,
}

impl CallOptions {
    /// Options of a call that may take up to `timeout` (a load, an index build, a compaction):
    /// the callee sends word every [`PROGRESS_EVERY`] while it works, so a request or answer
    /// lost with a nats-server (which request/reply never reports) fails the call after
    /// about 10 s of silence rather than after `timeout`. Such calls must be safe to send
    /// again: the caller cannot know whether a lost one was acted on.
    pub fn long(timeout: Duration) -> CallOptions {
        CallOptions { timeout: Some(timeout), traceparent: None, progress: Some(PROGRESS_EVERY) }
    }

    /// The trace context the call carries: the sending span's, which becomes the callee's
    /// parent (tracing on); else the caller's context (a client's traceparent), passed on as
    /// it came.
    fn traceparent_to_send(&self) -> Option<String> {
        crate::trace::current_traceparent().or_else(|| self.traceparent.clone())
    }
}

/// What a request brings from its caller: when the caller stops waiting, and the trace
/// context. Built once where a request arrives ([`RequestContext::of`]) and passed down to
/// everything done for it.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    deadline: Option<Instant>,
    /// W3C trace context of the request.
    pub traceparent: Option<String>,
    /// The client's id for this request, the same on every send of it (`Quiver-Request-Id`).
    pub request_id: Option<String>,
}

impl RequestContext {
    /// A context whose caller waits `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> RequestContext {
        RequestContext { deadline: Instant::now().checked_add(timeout), traceparent: None, request_id: None }
    }

    /// A context with no deadline (background work of the node itself).
    pub fn background() -> RequestContext {
        RequestContext::default()
    }

    /// The context of a request that arrived on the bus: its budget header (relative, so
    /// clocks need not agree), else its absolute deadline header (older clients), else none.
    pub fn of(msg: &Message) -> RequestContext {
        let headers = msg.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).and_then(|v| v.as_str().parse::<u64>().ok());
        // Checked: a hostile header must not overflow the clock (too far away = no deadline).
        let deadline = match (header(HEADER_TIMEOUT), header(HEADER_DEADLINE)) {
            (Some(ms), _) => Instant::now().checked_add(Duration::from_millis(ms)),
            (None, Some(at)) => Instant::now().checked_add(Duration::from_millis(at.saturating_sub(now_ms()))),
            (None, None) => None,
        };
        let traceparent = headers.and_then(|h| h.get(HEADER_TRACEPARENT)).map(|v| v.as_str().to_string());
        // Only a well-formed id is taken: it becomes part of JetStream message ids.
        let request_id = headers
            .and_then(|h| h.get(HEADER_REQUEST_ID))
            .map(|v| v.as_str())
            .filter(|id| valid_request_id(id))
            .map(str::to_string);
        RequestContext { deadline, traceparent, request_id }
    }

    /// The same context with its deadline no later than `cap` from now (for a part of the
    /// work that must not use the caller's whole budget).
    pub fn with_cap(mut self, cap: Duration) -> RequestContext {
        let capped = Instant::now().checked_add(cap);
        self.deadline = match (self.deadline, capped) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        self
    }

    /// Time left before the caller gives up (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the caller has given up.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Fails with `DeadlineExceeded` (naming `what`) once the caller has given up. `what` is
    /// formatted only then (callers pass `format_args!`: nothing is allocated per request).
    pub fn check(&self, what: impl std::fmt::Display) -> Result<()> {
        if self.expired() {
            return Err(Error::DeadlineExceeded(format!("the caller stopped waiting before {what}")));
        }
        Ok(())
    }

    /// Options for one try or sub-request: `min(remaining, patience)`, and the trace context.
    /// Fails with `DeadlineExceeded` when nothing is left.
    pub fn try_options(&self, patience: Duration, what: &str) -> Result<CallOptions> {
        self.check(what)?;
        let timeout = self.remaining().map_or(patience, |left| left.min(patience));
        Ok(CallOptions { timeout: Some(timeout), traceparent: self.traceparent.clone(), progress: None })
    }

    /// Runs `work` unless the deadline passes first (then `DeadlineExceeded`, naming `what`).
    pub async fn bound<T>(&self, what: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match self.remaining() {
            None => work.await,
            Some(left) => tokio::time::timeout(left, work)
                .await
                .unwrap_or_else(|_| Err(Error::DeadlineExceeded(format!("the caller stopped waiting during {what}")))),
        }
    }
}

/// A request to a node of this process, handed over in memory instead of through
/// nats-server: what a NATS request carries (subject, encoded payload, budget, trace context)
/// and where the encoded reply (or error) goes.
pub struct LocalRequest {
    pub subject: String,
    pub payload: Bytes,
    pub ctx: RequestContext,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<u8>>>,
}

/// How a node of this process takes [`LocalRequest`]s.
#[derive(Clone)]
pub struct LocalServer {
    /// The role's actor (closed once the role stops: the server is then forgotten).
    pub actor: tokio::sync::mpsc::UnboundedSender<LocalRequest>,
    /// Takes the requests a role serves off its actor (on any thread) and gives back the
    /// others, which go to `actor`.
    pub direct: Option<Arc<DirectServe>>,
}

/// See [`LocalServer::direct`].
pub type DirectServe = dyn Fn(LocalRequest) -> Option<LocalRequest> + Send + Sync;

/// This process's nodes that take [`LocalRequest`]s, by node id.
type LocalInboxes = Arc<RwLock<HashMap<String, LocalServer>>>;

/// The servers of a `nats.url` (several servers of one NATS cluster, comma separated): the client
/// connects to one of them and fails over to the others.
pub fn server_list(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// A connected bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    timeout: Duration,
    /// `None` when `node.local_calls` is off.
    local: Option<LocalInboxes>,
    /// Fires when the connection to NATS is lost: the answers to requests in flight are lost
    /// with it, so they fail at once (retryably) instead of at their deadline.
    disconnects: tokio::sync::broadcast::Sender<()>,
}

impl Bus {
    /// Connects to `urls` (comma separated), retrying the first connection and reconnecting forever.
    pub async fn connect(urls: &str, cluster: &str, name: &str, timeout: Duration) -> Result<Bus> {
        Bus::connect_with(urls, cluster, name, timeout, async_nats::ConnectOptions::new()).await
    }

    /// [`Bus::connect`] with credentials and TLS already set on `options`
    /// ([`crate::security::nats_connect_options`]).
    pub async fn connect_with(
        urls: &str,
        cluster: &str,
        name: &str,
        timeout: Duration,
        options: async_nats::ConnectOptions,
    ) -> Result<Bus> {
        let (disconnects, _) = tokio::sync::broadcast::channel(4);
        let on_disconnect = disconnects.clone();
        let client = options
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(timeout))
            .event_callback(move |event| {
                let on_disconnect = on_disconnect.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS");
                            let _ = on_disconnect.send(());
                        }
                        async_nats::Event::Connected => tracing::info!("connected to NATS"),
                        // Authorization and permission violations: the server refused something
                        // this node did (wrong credentials, a subject outside its permissions).
                        async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
                        other => tracing::debug!(%other, "NATS event"),
                    }
                }
            })
            .connect(server_list(urls))
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to NATS at {urls}: {e}")))?;
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            subjects: Subjects::new(cluster),
            timeout,
            local: Some(LocalInboxes::default()),
            disconnects,
        })
    }

    /// The same bus with calls between this process's nodes going through NATS too
    /// (`node.local_calls = false`).
    pub fn without_local_calls(mut self) -> Bus {
        self.local = None;
        self
    }

    /// Node `node` of this process takes its node calls through `server` from now on
    /// (replacing an earlier one of the same id: a restarted role); `false` (nothing
    /// registered) when local calls are off. Forgotten once its actor is gone (the role stopped).
    pub fn serve_locally(&self, node: &str, server: LocalServer) -> bool {
        let Some(mut map) = self.local.as_ref().and_then(|local| local.write().ok()) else { return false };
        map.retain(|_, s| !s.actor.is_closed());
        map.insert(node.to_string(), server);
        true
    }

    /// How node `node` takes calls, if it runs (and serves) in this process.
    fn local_server(&self, node: &str) -> Option<LocalServer> {
        let local = self.local.as_ref()?;
        let server = local.read().ok()?.get(node).cloned()?;
        if server.actor.is_closed() {
            if let Ok(mut map) = local.write() {
                map.retain(|_, s| !s.actor.is_closed());
            }
            return None;
        }
        Some(server)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn default_timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls method `C` of a queue-group service (API, coordinator, index nodes).
    pub async fn call<C: QueueCall>(&self, req: &C::Request, opts: &CallOptions) -> Result<C::Reply> {
        self.request_with(self.subjects.call::<C>(), req, opts).await
    }

    /// [`Bus::call`] of an idempotent method of a service that fails over (the coordinator),
    /// sent again while nothing answers it: no responder, no reply within `per_try` (a request
    /// or answer lost with a nats-server), a dropped connection, a coordinator not acting yet.
    /// Gives up after `within`, with the last error.
    pub async fn call_again<C: QueueCall>(
        &self,
        req: &C::Request,
        per_try: Duration,
        within: Duration,
    ) -> Result<C::Reply> {
        let opts = CallOptions { timeout: Some(per_try), ..Default::default() };
        let backoff = Backoff::within(within, Duration::from_millis(100), Duration::from_secs(2));
        let retryable = |e: &Error| {
            let again = matches!(e, Error::Unavailable(_) | Error::NotServed(_) | Error::Timeout { .. });
            if again {
                tracing::debug!(method = C::METHOD, error = %e, "call not answered; sending it again");
            }
            again
        };
        retry(backoff, retryable, || self.call::<C>(req, &opts)).await
    }

    /// Calls method `C` of node `node`: in memory when the node runs in this process (see the
    /// module documentation), else through NATS.
    pub async fn call_node<C: NodeCall>(&self, node: &str, req: &C::Request, opts: &CallOptions) -> Result<C::Reply> {
        let subject = self.subjects.node_call::<C>(node);
        // Host agents are never roles of this process (their ids are not node ids).
        if let Some(server) = self.local_server(node).filter(|_| C::SERVICE != Service::Host) {
            let payload = Bytes::from(req.to_bytes());
            let reply = self.call_local(&server, subject.clone(), payload, opts).await?;
            return C::Reply::from_bytes(&reply)
                .map_err(|e| Error::Internal(format!("malformed reply from {subject}: {e}")));
        }
        self.request_with(subject, req, opts).await
    }

    /// One request to a node of this process, bounded like a NATS request.
    async fn call_local(
        &self,
        server: &LocalServer,
        subject: String,
        payload: Bytes,
        opts: &CallOptions,
    ) -> Result<Vec<u8>> {
        let timeout = opts.timeout.unwrap_or(self.timeout);
        let mut ctx = RequestContext::with_timeout(timeout);
        ctx.traceparent = opts.traceparent_to_send();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = LocalRequest { subject: subject.clone(), payload, ctx, reply };
        let for_actor = match &server.direct {
            Some(direct) => direct(request),
            None => Some(request),
        };
        if for_actor.is_some_and(|r| server.actor.send(r).is_err()) {
            return Err(not_served(&subject));
        }
        metrics::counter!("quiver_bus_local_calls_total").increment(1);
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            // The node's role stopped (drain timeout, restart) with the request unanswered.
            Ok(Err(_)) => Err(Error::Unavailable(format!("{subject}: the node stopped before answering; retry"))),
            Err(_) => Err(Error::Timeout { subject, timeout }),
        }
    }

    async fn request_with<Req: Wire, Resp: Wire>(
        &self,
        subject: String,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp> {
        let payload = Bytes::from(req.to_bytes());
        let reply = self.request_bytes(subject.clone(), payload, opts).await?;
        // A reply that does not decode is the replier's fault, not the caller's.
        Resp::from_bytes(&reply).map_err(|e| Error::Internal(format!("malformed reply from {subject}: {e}")))
    }

    /// Raw request/reply; decodes the status headers into an error.
    pub async fn request_bytes(&self, subject: String, payload: Bytes, opts: &CallOptions) -> Result<Bytes> {
        let timeout = opts.timeout.unwrap_or(self.timeout);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TIMEOUT, (timeout.as_millis() as u64).to_string().as_str());
        if let Some(tp) = opts.traceparent_to_send() {
            headers.insert(HEADER_TRACEPARENT, tp.as_str());
        }
        if let Some(every) = opts.progress {
            return self.request_with_progress(subject, payload, headers, timeout, every).await;
        }
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(timeout));
        let mut disconnected = self.disconnects.subscribe();
        let sent = tokio::select! {
            sent = self.client.send_request(subject.clone(), request) => sent,
            Ok(()) = disconnected.recv() => return Err(cut(&subject)),
        };
        let msg = sent.map_err(|e| {
            use async_nats::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => not_served(&subject),
                K::TimedOut => Error::Timeout { subject: subject.clone(), timeout },
                K::MaxPayloadExceeded => Error::InvalidArgument(format!(
                    "request to {subject} is larger than the server's max_payload; send smaller batches"
                )),
                K::InvalidSubject => Error::InvalidArgument(format!("invalid subject {subject:?}")),
                _ => Error::Unavailable(format!("request to {subject} failed: {e}")),
            }
        })?;
        reply_outcome(&msg)?;
        Ok(msg.payload)
    }

    /// A request whose callee sends word every `every` while it works ([`CallOptions::long`]):
    /// on an inbox of its own, since the word and the answer come on the same subject. Fails
    /// as lost after [`PROGRESS_MISSES`] words missed in a row, and as cut when the
    /// connection drops.
    async fn request_with_progress(
        &self,
        subject: String,
        payload: Bytes,
        mut headers: HeaderMap,
        timeout: Duration,
        every: Duration,
    ) -> Result<Bytes> {
        let every = every.clamp(PROGRESS_MIN, PROGRESS_MAX);
        headers.insert(HEADER_PROGRESS, (every.as_millis() as u64).to_string().as_str());
        let give_up = tokio::time::Instant::now() + timeout;
        let silence = every * PROGRESS_MISSES;
        let mut disconnected = self.disconnects.subscribe();
        let inbox = self.client.new_inbox();
        // Subscribed before the request goes out (same connection, in order), so no word and
        // no answer can arrive before the subscription.
        let mut answers = self.subscribe(inbox.clone()).await?;
        self.client
            .publish_with_reply_and_headers(subject.clone(), inbox, headers, payload)
            .await
            .map_err(|e| Error::Unavailable(format!("request to {subject} failed: {e}")))?;
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { subject, timeout });
            }
            let next = tokio::select! {
                next = tokio::time::timeout(silence.min(left), answers.next()) => next,
                Ok(()) = disconnected.recv() => return Err(cut(&subject)),
            };
            let msg = match next {
                Ok(Some(msg)) => msg,
                Ok(None) => return Err(Error::Unavailable(format!("the answer subscription for {subject} ended"))),
                Err(_) if silence < left => {
                    metrics::counter!("quiver_bus_requests_lost_total").increment(1);
                    return Err(Error::Unavailable(format!(
                        "no word from {subject} for {silence:?} (it sends word every {every:?} while it works): \
                         the request or its answer was lost; it may or may not have been acted on"
                    )));
                }
                Err(_) => return Err(Error::Timeout { subject, timeout }),
            };
            if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                return Err(not_served(&subject));
            }
            if msg.headers.as_ref().is_some_and(|h| h.get(HEADER_PROGRESS).is_some()) {
                continue;
            }
            reply_outcome(&msg)?;
            return Ok(msg.payload);
        }
    }

    /// Runs `work`, the answer to a request that asked for word every `every`
    /// ([`progress_of`]), sending that word to `reply_to` until it is done.
    pub async fn with_progress<T>(
        &self,
        reply_to: &async_nats::Subject,
        every: Duration,
        work: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    let mut word = HeaderMap::new();
                    word.insert(HEADER_PROGRESS, "1");
                    // A word lost is what the caller's silence limit allows for.
                    let _ = self.client.publish_with_headers(reply_to.clone(), word, Bytes::new()).await;
                }
            }
        }
    }

    /// Answers a request with an encoded reply or an error. A reply larger than the server's `max_payload` cannot
    /// be sent; the caller gets an error saying so instead of waiting for its deadline.
    pub async fn reply(&self, request: &Message, result: Result<Vec<u8>>) {
        let Some(reply_to) = request.reply.clone() else { return };
        self.reply_to(reply_to, result).await;
    }

    /// Answers on a request's reply subject (kept from the request) with an encoded reply or
    /// an error.
    pub async fn reply_to(&self, reply_to: async_nats::Subject, result: Result<Vec<u8>>) {
        let max = self.client.server_info().max_payload;
        let result = result.and_then(|bytes| {
            if max > 0 && bytes.len() > max {
                Err(Error::InvalidArgument(format!(
                    "the reply would be {} bytes, more than the NATS server's max_payload of {max} bytes; \
                     ask for fewer rows or results per request",
                    bytes.len()
                )))
            } else {
                Ok(bytes)
            }
        });
        let outcome = match result {
            Ok(bytes) => self.client.publish(reply_to, Bytes::from(bytes)).await,
            Err(err) => self.client.publish_with_headers(reply_to, error_headers(&err), Bytes::new()).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "failed to send reply");
        }
    }

    /// Publishes a typed message (fire and forget).
    pub async fn publish<T: Wire>(&self, subject: String, msg: &T) -> Result<()> {
        self.client
            .publish(subject, Bytes::from(msg.to_bytes()))
            .await
            .map_err(|e| Error::Unavailable(format!("publish failed: {e}")))
    }

    pub async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber> {
        self.client
            .subscribe(subject.clone())
            .await
            .map_err(|e| Error::Unavailable(format!("cannot subscribe to {subject}: {e}")))
    }

    pub async fn queue_subscribe(&self, subject: String, group: &str) -> Result<async_nats::Subscriber> {
        self.client
            .queue_subscribe(subject.clone(), group.to_string())
            .await
            .map_err(|e| Error::Unavailable(format!("cannot subscribe to {subject}: {e}")))
    }

    /// Waits until everything published so far reached the server.
    pub async fn flush(&self) -> Result<()> {
        self.client.flush().await.map_err(|e| Error::Unavailable(format!("flush failed: {e}")))
    }
}

fn error_headers(err: &Error) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_STATUS, (err.code() as u16).to_string().as_str());
    let text: String = err.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    headers.insert(HEADER_ERROR, text.as_str());
    headers
}

/// A call with nobody subscribed to its subject.
fn not_served(subject: &str) -> Error {
    Error::NotServed(format!("nothing serves {subject} (is the node up?)"))
}

/// A call whose connection dropped before its answer came (counted).
fn cut(subject: &str) -> Error {
    metrics::counter!("quiver_bus_requests_cut_total").increment(1);
    Error::Unavailable(format!(
        "the connection to NATS was lost before the answer from {subject}; it may or may not have been acted on"
    ))
}

fn reply_outcome(msg: &Message) -> Result<()> {
    let Some(headers) = msg.headers.as_ref() else { return Ok(()) };
    if let Some(status) = headers.get(HEADER_STATUS) {
        let code = Code::from_u16(status.as_str().parse().unwrap_or(6));
        let text = headers.get(HEADER_ERROR).map(|v| v.as_str().to_string()).unwrap_or_default();
        return Err(Error::from_code(code, text));
    }
    if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(Error::NotServed(format!("nothing serves {}", msg.subject)));
    }
    Ok(())
}

/// Wall clock, unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn message(headers: &[(&str, &str)]) -> Message {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, *v);
        }
        Message {
            subject: "quiver.c.api.search".into(),
            reply: Some("_INBOX.x".into()),
            payload: Bytes::new(),
            headers: Some(map),
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn a_request_carries_its_callers_budget() {
        let ctx = RequestContext::of(&message(&[(HEADER_TIMEOUT, "2000"), (HEADER_TRACEPARENT, "00-a-b-01")]));
        let left = ctx.remaining().unwrap();
        assert!(left > Duration::from_millis(1900) && left <= Duration::from_millis(2000), "{left:?}");
        assert_eq!(ctx.traceparent.as_deref(), Some("00-a-b-01"));
        // Each try gets min(remaining, patience).
        let opts = ctx.try_options(Duration::from_secs(10), "a try").unwrap();
        assert!(opts.timeout.unwrap() <= Duration::from_millis(2000));
        let opts = ctx.try_options(Duration::from_millis(100), "a try").unwrap();
        assert_eq!(opts.timeout, Some(Duration::from_millis(100)));
        // The older absolute header still works; no header means no deadline.
        let at = (now_ms() + 5000).to_string();
        assert!(RequestContext::of(&message(&[(HEADER_DEADLINE, &at)])).remaining().unwrap() > Duration::from_secs(4));
        assert!(RequestContext::of(&message(&[])).remaining().is_none());
    }

    #[test]
    fn a_spent_budget_stops_the_work_and_hostile_values_do_not_panic() {
        let spent = RequestContext::of(&message(&[(HEADER_TIMEOUT, "0")]));
        assert!(spent.expired());
        assert!(matches!(spent.try_options(Duration::from_secs(1), "a try"), Err(Error::DeadlineExceeded(_))));
        for hostile in ["18446744073709551615", "-1", "nope", ""] {
            let ctx = RequestContext::of(&message(&[(HEADER_TIMEOUT, hostile)]));
            assert!(!ctx.expired(), "{hostile}");
        }
    }

    #[tokio::test]
    async fn bound_gives_up_when_the_caller_does() {
        let ctx = RequestContext::with_timeout(Duration::from_millis(50));
        let started = Instant::now();
        let out = ctx
            .bound("a long wait", async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert!(matches!(out, Err(Error::DeadlineExceeded(_))), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// A long call against a real nats-server: word keeps a slow answer alive past the silence
    /// limit; a request that reaches a callee which then goes silent (as one lost with a server
    /// would) fails after the silence limit, not the timeout; no callee is `NotServed` at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_call_hears_word_and_fails_soon_once_its_callee_goes_silent() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nats = crate::nats_server::EmbeddedNats::start(
            "nats-server",
            port,
            &dir.path().join("nats"),
            crate::nats_server::SyncInterval::Always,
        )
        .await
        .unwrap();
        let connect = |name: &'static str| Bus::connect(nats.url(), "progress", name, Duration::from_secs(5));
        let (caller, callee) = (connect("caller").await.unwrap(), connect("callee").await.unwrap());
        let every = Duration::from_millis(200);
        let opts = CallOptions { timeout: Some(Duration::from_secs(30)), traceparent: None, progress: Some(every) };

        // Slow (3 s, three times the 1 s silence limit) and alive: answered.
        let mut slow = callee.subscribe("progress.slow".into()).await.unwrap();
        let server = callee.clone();
        tokio::spawn(async move {
            while let Some(msg) = slow.next().await {
                assert_eq!(progress_of(&msg), Some(every));
                let to = msg.reply.clone().unwrap();
                server.with_progress(&to, every, tokio::time::sleep(Duration::from_secs(3))).await;
                server.reply_to(to, Ok(b"done".to_vec())).await;
            }
        });
        callee.flush().await.unwrap();
        // A flush puts the subscription on the wire; the server may still be taking it in when
        // the caller's request (on its own connection) arrives: that one is not served, and
        // sent again.
        let request = |subject: &'static str| {
            let (caller, opts) = (caller.clone(), opts.clone());
            async move {
                let give_up = Instant::now() + Duration::from_secs(5);
                loop {
                    match caller.request_bytes(subject.into(), Bytes::from_static(b"x"), &opts).await {
                        Err(Error::NotServed(_)) if Instant::now() < give_up => {
                            tokio::time::sleep(Duration::from_millis(10)).await
                        }
                        other => return other,
                    }
                }
            }
        };
        let started = Instant::now();
        let answer = request("progress.slow").await.unwrap();
        assert_eq!(&answer[..], b"done");
        assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());

        // Received, then silence: lost after 5 missed words (1 s), not after the 30 s timeout.
        let mut silent = callee.subscribe("progress.silent".into()).await.unwrap();
        tokio::spawn(async move { while silent.next().await.is_some() {} });
        callee.flush().await.unwrap();
        let started = Instant::now();
        let lost = request("progress.silent").await;
        let took = started.elapsed();
        match lost {
            Err(Error::Unavailable(m)) => assert!(m.contains("no word from progress.silent"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "{took:?}");

        // Nobody listens: refused at once.
        let started = Instant::now();
        match caller.request_bytes("progress.nobody".into(), Bytes::new(), &opts).await {
            Err(Error::NotServed(m)) => assert!(m.contains("progress.nobody"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

        // A hostile interval is clamped.
        let hostile = message(&[(HEADER_PROGRESS, "0")]);
        assert_eq!(progress_of(&hostile), Some(PROGRESS_MIN));
        let hostile = message(&[(HEADER_PROGRESS, "18446744073709551615")]);
        assert_eq!(progress_of(&hostile), Some(PROGRESS_MAX));
        assert_eq!(progress_of(&message(&[(HEADER_PROGRESS, "soon")])), None);
    }
}
