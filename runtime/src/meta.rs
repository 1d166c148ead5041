//! Metadata and the node registry in JetStream KV buckets. Values are JSON of the plain types.

use std::time::Duration;

use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::kv;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use quiver_schemas::{HostStatus, NodeStatus};
use serde::{de::DeserializeOwned, Serialize};

use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::retry::{retry, Backoff};

/// How long a KV write is sent again while the server does not acknowledge it.
pub const WRITE_RETRYING: Duration = Duration::from_secs(10);

/// Runs `write` again while it fails with [`Error::Unavailable`], with a growing pause, for up
/// to [`WRITE_RETRYING`].
async fn retrying<T, F, Fut>(key: &str, write: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let backoff = Backoff::within(WRITE_RETRYING, Duration::from_millis(50), Duration::from_secs(1));
    let retryable = |e: &Error| {
        let Error::Unavailable(e) = e else { return false };
        tracing::debug!(key, error = %e, "KV write not acknowledged; sending it again");
        metrics::counter!("quiver_kv_write_retries_total").increment(1);
        true
    };
    retry(backoff, retryable, write).await
}

/// JetStream's expectation on another subject's last sequence (nats-server 2.11 and later).
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// A KV bucket holding JSON values.
///
/// A bucket handle can be *fenced* ([`JsonBucket::fenced`]): its puts and deletes then carry
/// JetStream's `Nats-Expected-Last-Subject-Sequence-Subject` expectation on another key of the
/// bucket, so the server stores them only while that key is still at the revision the handle
/// was fenced with. The coordinator fences its writes on its epoch key: once a standby took
/// over (and wrote the next epoch), nothing the deposed one writes is stored, even if it has
/// not noticed yet.
#[derive(Clone)]
pub struct JsonBucket {
    store: kv::Store,
    js: async_nats::jetstream::Context,
    fence: Option<Fence>,
}

#[derive(Clone)]
struct Fence {
    /// The fencing key's subject in the bucket's stream.
    subject: String,
    key: String,
    revision: u64,
}

impl JsonBucket {
    /// Opens the bucket, creating it if needed. `max_age` > 0 makes entries expire.
    pub async fn open(bus: &Bus, name: &str, max_age: Duration, replicas: usize) -> Result<JsonBucket> {
        let js = bus.jetstream();
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(JsonBucket { store, js: js.clone(), fence: None });
        }
        let config = kv::Config {
            bucket: name.to_string(),
            history: 1,
            max_age,
            num_replicas: replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let store = match js.create_key_value(config).await {
            Ok(store) => store,
            // Another node may have created it between our get and our create.
            Err(create_err) => js
                .get_key_value(name)
                .await
                .map_err(|_| Error::Unavailable(format!("cannot create KV bucket {name}: {create_err}")))?,
        };
        Ok(JsonBucket { store, js: js.clone(), fence: None })
    }

    /// This bucket with every put and delete conditional on `key` still being at `revision`;
    /// a write refused for that fails with [`Error::Stale`] naming the key.
    pub fn fenced(&self, key: &str, revision: u64) -> JsonBucket {
        let subject = format!("{}{key}", self.store.prefix);
        JsonBucket {
            store: self.store.clone(),
            js: self.js.clone(),
            fence: Some(Fence { subject, key: key.to_string(), revision }),
        }
    }

    /// The subject a key's values are published on (buckets of this account: no JetStream
    /// domain prefix).
    fn subject_of(&self, key: &str) -> String {
        format!("{}{key}", self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix))
    }

    /// Publishes one fenced message (a put, or a purge when `headers` say so).
    async fn publish_fenced(&self, fence: &Fence, key: &str, mut headers: HeaderMap, value: Bytes) -> Result<u64> {
        use async_nats::jetstream::context::PublishErrorKind;
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, fence.revision.to_string().as_str());
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, fence.subject.as_str());
        let js = &self.js;
        let fenced_out = |e: &dyn std::fmt::Display| {
            Error::Stale(format!(
                "KV write {key} refused: {} is no longer at revision {} ({e}); this writer was fenced out",
                fence.key, fence.revision
            ))
        };
        let ack = js
            .publish_with_headers(self.subject_of(key), headers, value)
            .await
            .map_err(|e| Error::Unavailable(format!("KV put {key}: {e}")))?
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::WrongLastSequence => fenced_out(&e),
                _ => Error::Unavailable(format!("KV put {key}: {e}")),
            })?;
        Ok(ack.sequence)
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let raw = self.store.get(key).await.map_err(|e| Error::Unavailable(format!("KV get {key}: {e}")))?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Internal(format!("KV value {key} is corrupt: {e}"))),
        }
    }

    /// Gets a value with its revision (for compare-and-set).
    pub async fn get_rev<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        let entry = self.store.entry(key).await.map_err(|e| Error::Unavailable(format!("KV get {key}: {e}")))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
                .map(|v| Some((v, e.revision)))
                .map_err(|err| Error::Internal(format!("KV value {key} is corrupt: {err}"))),
            _ => Ok(None),
        }
    }

    /// Stores `value` under `key`. A write the server did not acknowledge (a nats-server lost,
    /// the bucket's stream between leaders) is sent again for up to [`WRITE_RETRYING`]: a put
    /// stored twice leaves the same value.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<u64> {
        let bytes: Bytes = serde_json::to_vec(value).map_err(Error::internal)?.into();
        retrying(key, || async {
            if let Some(fence) = &self.fence {
                return self.publish_fenced(fence, key, HeaderMap::new(), bytes.clone()).await;
            }
            self.store.put(key, bytes.clone()).await.map_err(|e| Error::Unavailable(format!("KV put {key}: {e}")))
        })
        .await
    }

    /// Writes only if the key is still at `revision` (0 = must not exist): [`Error::Stale`]
    /// when it is not, [`Error::Unavailable`] when the write may not have been stored (no
    /// acknowledgement). Not fenced: one write carries one expectation, and this one is on the
    /// key itself.
    pub async fn update<T: Serialize>(&self, key: &str, value: &T, revision: u64) -> Result<u64> {
        use kv::{CreateErrorKind, UpdateErrorKind};
        let bytes = serde_json::to_vec(value).map_err(Error::internal)?;
        if revision == 0 {
            self.store.create(key, bytes.into()).await.map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => Error::Stale(format!("KV create {key}: {e}")),
                _ => Error::Unavailable(format!("KV create {key}: {e}")),
            })
        } else {
            self.store.update(key, bytes.into(), revision).await.map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => Error::Stale(format!("KV update {key}: {e}")),
                _ => Error::Unavailable(format!("KV update {key}: {e}")),
            })
        }
    }

    /// Removes `key` and its history; sent again like [`JsonBucket::put`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        retrying(key, || self.delete_once(key)).await
    }

    async fn delete_once(&self, key: &str) -> Result<()> {
        if let Some(fence) = &self.fence {
            let mut headers = HeaderMap::new();
            headers.insert("KV-Operation", "PURGE");
            headers.insert(async_nats::header::NATS_ROLLUP, "sub");
            return self.publish_fenced(fence, key, headers, Bytes::new()).await.map(|_| ());
        }
        self.store.purge(key).await.map_err(|e| Error::Unavailable(format!("KV delete {key}: {e}")))
    }

    /// Every key starting with `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = self.store.keys().await.map_err(|e| Error::Unavailable(format!("KV keys: {e}")))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| Error::Unavailable(format!("KV keys: {e}")))?;
            if k.starts_with(prefix) {
                out.push(k);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every value whose key starts with `prefix`, in key order.
    ///
    /// The keys come from the stream's subjects, one snapshot of the server's state, not from
    /// a [`JsonBucket::keys`]-style consumer, which can miss a key whose value is being
    /// replaced (the old message goes before the consumer reaches it, the new one comes after
    /// it thinks it is done): a registry listing then lost a node that was heartbeating.
    /// Deleted keys are listed too (their marker is a message) and read as absent.
    pub async fn values<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for key in self.subject_keys(prefix).await? {
            if let Some(v) = self.get(&key).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Keys starting with `prefix` that have a message in the bucket's stream (deleted ones
    /// included), sorted.
    async fn subject_keys(&self, prefix: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let base = self.store.prefix.as_str();
        // A filter on whole tokens when the prefix ends with one; the rest is checked here.
        let filter = match prefix.rsplit_once('.') {
            Some((tokens, _)) => format!("{base}{tokens}.>"),
            None => format!("{base}>"),
        };
        let failed = |e: &dyn std::fmt::Display| Error::Unavailable(format!("KV keys of {}: {e}", self.store.name));
        let subjects: Vec<(String, usize)> = self
            .store
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| failed(&e))?
            .try_collect()
            .await
            .map_err(|e| failed(&e))?;
        let mut keys: Vec<String> = subjects
            .into_iter()
            .filter_map(|(subject, _)| subject.strip_prefix(base).map(str::to_string))
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// The node registry: each node refreshes its [`NodeStatus`] every heartbeat, and each host
/// agent its [`HostStatus`] (a bucket of their own); entries expire.
#[derive(Clone)]
pub struct Registry {
    bucket: JsonBucket,
    hosts: JsonBucket,
}

impl Registry {
    pub async fn open(bus: &Bus, ttl: Duration, replicas: usize) -> Result<Registry> {
        let name = bus.subjects().nodes_bucket();
        let hosts = bus.subjects().hosts_bucket();
        Ok(Registry {
            bucket: JsonBucket::open(bus, &name, ttl, replicas).await?,
            hosts: JsonBucket::open(bus, &hosts, ttl, replicas).await?,
        })
    }

    /// A host agent's heartbeat.
    pub async fn host_heartbeat(&self, status: &HostStatus) -> Result<()> {
        self.hosts.put(&status.host_id, status).await.map(|_| ())
    }

    pub async fn host_deregister(&self, host_id: &str) -> Result<()> {
        self.hosts.delete(host_id).await
    }

    /// Live host agents (whose entries have not expired), sorted by id.
    pub async fn hosts(&self) -> Result<Vec<HostStatus>> {
        self.hosts.values("").await
    }

    pub async fn heartbeat(&self, status: &NodeStatus) -> Result<()> {
        self.bucket.put(&status.node_id, status).await.map(|_| ())
    }

    pub async fn deregister(&self, node_id: &str) -> Result<()> {
        self.bucket.delete(node_id).await
    }

    /// One node's entry, if it has not expired.
    pub async fn node(&self, node_id: &str) -> Result<Option<NodeStatus>> {
        self.bucket.get(node_id).await
    }

    /// Live nodes (whose entries have not expired), sorted by id.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.bucket.values("").await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::plugin::test_support::TestCluster;

    /// A listing while every value is being replaced still finds every key: `values` lists the
    /// stream's subjects; a consumer listing (`keys`) misses keys now and then (counted, shown).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_sees_every_key_while_values_are_replaced() {
        let cluster = TestCluster::start("kvlist").await;
        let bus = cluster.bus("kvlist").await;
        let bucket = JsonBucket::open(&bus, "kvlist_test", Duration::from_secs(60), 1).await.unwrap();
        let n = 20u64;
        for i in 0..n {
            bucket.put(&format!("node.{i}"), &i).await.unwrap();
        }
        bucket.put("other", &99u64).await.unwrap();
        bucket.put("node.gone", &1u64).await.unwrap();
        bucket.delete("node.gone").await.unwrap();
        let writer = {
            let bucket = bucket.clone();
            tokio::spawn(async move {
                for round in 0u64.. {
                    for i in 0..n {
                        bucket.put(&format!("node.{i}"), &(i + round)).await.unwrap();
                    }
                }
            })
        };
        let mut consumer_misses = 0;
        for _ in 0..100 {
            let listed: Vec<u64> = bucket.values("node.").await.unwrap();
            assert_eq!(listed.len() as u64, n, "{listed:?}");
            consumer_misses += n as usize - bucket.keys("node.").await.unwrap().len().min(n as usize);
        }
        writer.abort();
        eprintln!("keys missed by consumer listings meanwhile: {consumer_misses} (of {})", 100 * n);
        // A prefix that ends inside a token, and the empty one.
        assert_eq!(bucket.values::<u64>("oth").await.unwrap(), vec![99]);
        assert_eq!(bucket.values::<u64>("").await.unwrap().len() as u64, n + 1);
    }
}
