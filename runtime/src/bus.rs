//! The NATS bus: typed request/reply, pub/sub and queue groups carrying Cap'n Proto messages,
//! subjects namespaced by cluster, deadlines and trace context in headers, JetStream access.
//!
//! Replies carry their outcome in headers: no `Quiver-Status` header means success and the
//! payload is the response message; otherwise the payload is empty and `Quiver-Error` explains.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use quiver_schemas::Wire;

use crate::error::{Code, Error, Result};

pub use quiver_schemas::status::{HEADER_DEADLINE, HEADER_ERROR, HEADER_STATUS, HEADER_TRACEPARENT};

/// Subjects, streams and buckets of one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    cluster: String,
}

impl Subjects {
    pub fn new(cluster: &str) -> Subjects {
        Subjects { cluster: cluster.to_string() }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Public API served by every proxy in one queue group.
    pub fn api(&self, method: &str) -> String {
        format!("quiver.{}.api.{method}", self.cluster)
    }

    /// Served by the active coordinator.
    pub fn coord(&self, method: &str) -> String {
        format!("quiver.{}.coord.{method}", self.cluster)
    }

    /// Methods of one specific node.
    pub fn node(&self, node_id: &str, method: &str) -> String {
        format!("quiver.{}.node.{node_id}.{method}", self.cluster)
    }

    /// Index-build tasks, taken by any index node of the queue group.
    pub fn index_build(&self) -> String {
        format!("quiver.{}.index.build", self.cluster)
    }

    /// Published by the coordinator whenever a collection's serving layout changes.
    pub fn distribution_event(&self, collection: u64) -> String {
        format!("quiver.{}.event.distribution.{collection}", self.cluster)
    }

    pub fn distribution_events(&self) -> String {
        format!("quiver.{}.event.distribution.*", self.cluster)
    }

    /// The DML subject of one shard.
    pub fn dml(&self, collection: u64, shard: u32) -> String {
        format!("quiver.{}.dml.{collection}.{shard}", self.cluster)
    }

    /// The JetStream stream holding one shard's DML log.
    pub fn dml_stream(&self, collection: u64, shard: u32) -> String {
        format!("QUIVER_{}_DML_{collection}_{shard}", self.cluster)
    }

    pub fn meta_bucket(&self) -> String {
        format!("quiver_{}_meta", self.cluster)
    }

    pub fn nodes_bucket(&self) -> String {
        format!("quiver_{}_nodes", self.cluster)
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub timeout: Option<Duration>,
    pub traceparent: Option<String>,
}

/// A connected bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    timeout: Duration,
}

impl Bus {
    /// Connects to `urls` (comma separated), retrying the first connection and reconnecting forever.
    pub async fn connect(urls: &str, cluster: &str, name: &str, timeout: Duration) -> Result<Bus> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(timeout))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::debug!(%other, "NATS event"),
                }
            })
            .connect(urls)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to NATS at {urls}: {e}")))?;
        let js = jetstream::new(client.clone());
        Ok(Bus { client, js, subjects: Subjects::new(cluster), timeout })
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

    /// Sends `req` and waits for the typed reply (default deadline).
    pub async fn request<Req: Wire, Resp: Wire>(&self, subject: String, req: &Req) -> Result<Resp> {
        self.request_with(subject, req, &CallOptions::default()).await
    }

    /// Sends `req` and waits for the typed reply.
    pub async fn request_with<Req: Wire, Resp: Wire>(
        &self,
        subject: String,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp> {
        let payload = Bytes::from(req.to_bytes());
        let reply = self.request_bytes(subject, payload, opts).await?;
        Ok(Resp::from_bytes(&reply)?)
    }

    /// Raw request/reply; decodes the status headers into an error.
    pub async fn request_bytes(&self, subject: String, payload: Bytes, opts: &CallOptions) -> Result<Bytes> {
        let timeout = opts.timeout.unwrap_or(self.timeout);
        let mut headers = HeaderMap::new();
        let deadline = now_ms() + timeout.as_millis() as u64;
        headers.insert(HEADER_DEADLINE, deadline.to_string().as_str());
        if let Some(tp) = &opts.traceparent {
            headers.insert(HEADER_TRACEPARENT, tp.as_str());
        }
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(timeout));
        let msg = self.client.send_request(subject.clone(), request).await.map_err(|e| {
            use async_nats::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => Error::Unavailable(format!("nothing serves {subject} (is the node up?)")),
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

    /// Answers a request with `result`. A reply larger than the server's `max_payload` cannot
    /// be sent; the caller gets an error saying so instead of waiting for its deadline.
    pub async fn reply<T: Wire>(&self, request: &Message, result: Result<T>) {
        let Some(reply_to) = request.reply.clone() else { return };
        let max = self.client.server_info().max_payload;
        let result = result.map(|body| body.to_bytes()).and_then(|bytes| {
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
            tracing::warn!(subject = %request.subject, error = %e, "failed to send reply");
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

/// Decodes a request body, naming the message type on failure.
pub fn decode<T: Wire>(msg: &Message) -> Result<T> {
    Ok(T::from_bytes(&msg.payload)?)
}

/// The request's deadline, if the caller set one.
pub fn deadline_of(msg: &Message) -> Option<u64> {
    msg.headers.as_ref()?.get(HEADER_DEADLINE)?.as_str().parse().ok()
}

/// The request's trace context, if any.
pub fn traceparent_of(msg: &Message) -> Option<String> {
    Some(msg.headers.as_ref()?.get(HEADER_TRACEPARENT)?.as_str().to_string())
}

fn error_headers(err: &Error) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_STATUS, (err.code() as u16).to_string().as_str());
    let text: String = err.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    headers.insert(HEADER_ERROR, text.as_str());
    headers
}

fn reply_outcome(msg: &Message) -> Result<()> {
    let Some(headers) = msg.headers.as_ref() else { return Ok(()) };
    if let Some(status) = headers.get(HEADER_STATUS) {
        let code = Code::from_u16(status.as_str().parse().unwrap_or(6));
        let text = headers.get(HEADER_ERROR).map(|v| v.as_str().to_string()).unwrap_or_default();
        return Err(Error::from_code(code, text));
    }
    if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(Error::Unavailable(format!("nothing serves {}", msg.subject)));
    }
    Ok(())
}

/// Wall clock, unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh W3C traceparent with random ids.
pub fn new_traceparent() -> String {
    let a: u128 = rand_u128();
    let b: u64 = (rand_u128() >> 64) as u64;
    format!("00-{a:032x}-{b:016x}-01")
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u64(now_ms());
    let hi = h.finish();
    let mut h2 = s.build_hasher();
    h2.write_u64(hi);
    ((hi as u128) << 64) | h2.finish() as u128
}
