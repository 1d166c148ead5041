//! Back-pressure on writes for the memory of query nodes (Milvus' memory protection). A query
//! node takes in every insert of the shards it serves as growing rows, from the log: there is
//! no request of its own it could refuse, so a node near its budget would go on growing until
//! its cgroup kills it. The proxy refuses inserts and upserts into a collection instead while
//! a query node serving it is above its high-water mark (`limits.memory_high_water_percentage`
//! of its budget, `node.memory_limit_mb` or its size). The refusal is `ResourceExhausted`
//! (Milvus `RateLimit`, which pymilvus retries with a growing pause), and it ends by itself
//! once the node is below its mark again: given more memory (a resize, by hand or by the
//! autoscaler), replaced, or rid of a collection released.
//!
//! Deletes, flushes and reads go on: they free memory or need none worth refusing.
//!
//! How a proxy knows: a query node publishes a [`MemoryMarkEvent`] the moment its resident
//! memory crosses the mark, either way (checked as it applies log entries); and every second
//! the proxy reads the registry entries (heartbeats) of the query nodes serving the collections
//! it has cached layouts of — one KV get per node, not the whole registry — for an event it
//! missed. Of the two, the later measurement (on the node's clock) counts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use quiver_runtime::{Error, Result};
use quiver_schemas::{Distribution, MemoryMarkEvent, NodeStatus};

use super::Proxy;

/// How often the query nodes' heartbeats are read from the registry (their period).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A query node's memory against its mark, as last measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Mark {
    over: bool,
    used: u64,
    budget: u64,
    /// When the node measured it (its clock: heartbeats and events alike).
    at_ms: u64,
}

impl Mark {
    fn of_status(s: &NodeStatus, percent: f64) -> Mark {
        Mark {
            over: is_over(s.mem_used, s.mem_capacity, percent),
            used: s.mem_used,
            budget: s.mem_capacity,
            at_ms: s.heartbeat_ms,
        }
    }

    fn of_event(e: &MemoryMarkEvent) -> Mark {
        Mark { over: e.over, used: e.used, budget: e.budget, at_ms: e.at_ms }
    }
}

/// Whether `used` is above `percent` of `budget` (no budget: never).
fn is_over(used: u64, budget: u64, percent: f64) -> bool {
    budget > 0 && used as f64 > budget as f64 * percent / 100.0
}

/// The last measurement of each query node the proxy follows (node id → mark).
#[derive(Default)]
pub(super) struct MemoryQuota {
    marks: ArcSwap<HashMap<String, Mark>>,
}

impl MemoryQuota {
    /// Refuses a write into the collection of `dist` while a query node serving it is over its
    /// mark; `what` names the write ("an insert").
    pub(super) fn admit(&self, dist: &Distribution, what: &str, percent: f64) -> Result<()> {
        let marks = self.marks.load();
        if !marks.values().any(|m| m.over) {
            return Ok(());
        }
        let serving = dist.replicas.iter().flat_map(|g| &g.nodes);
        let Some((node, m)) = serving.filter_map(|n| Some((n, marks.get(n)?))).find(|(_, m)| m.over) else {
            return Ok(());
        };
        metrics::counter!("quiver_admission_refused_total", "reason" => "query_node_memory").increment(1);
        Err(Error::ResourceExhausted(format!(
            "{what} into {:?} refused: query node {node}, which serves it and takes in its inserts, uses {} MiB \
             of its {} MiB memory budget, over its high-water mark ({percent:.0}%, \
             limits.memory_high_water_percentage); writes resume once it has room: give query nodes more memory \
             or more nodes (quiver ctl scale, autoscaling), or release collections",
            dist.collection.schema.name,
            m.used >> 20,
            m.budget >> 20,
        )))
    }

    /// A query node's event: taken unless a later measurement is already in hand.
    pub(super) fn heard(&self, event: &MemoryMarkEvent) {
        let mark = Mark::of_event(event);
        let mut flipped = false;
        self.marks.rcu(|marks| {
            let mut next = HashMap::clone(marks);
            let current = next.get(&event.node_id).copied();
            flipped = false;
            if current.is_none_or(|m| m.at_ms <= mark.at_ms) {
                flipped = current.map_or(mark.over, |m| m.over != mark.over);
                next.insert(event.node_id.clone(), mark);
            }
            next
        });
        if flipped {
            self.changed(&event.node_id, mark.over);
        }
    }

    /// Replaces the marks with `read` (the followed nodes' latest heartbeats), keeping a
    /// node's current mark where it was measured later (an event newer than the heartbeat).
    fn refresh(&self, read: HashMap<String, Mark>) {
        let mut flips = Vec::new();
        self.marks.rcu(|marks| {
            flips.clear();
            let mut next = HashMap::with_capacity(read.len());
            for (id, mark) in &read {
                let kept = match marks.get(id) {
                    Some(m) if m.at_ms > mark.at_ms => *m,
                    Some(m) => {
                        if m.over != mark.over {
                            flips.push((id.clone(), mark.over));
                        }
                        *mark
                    }
                    None => {
                        if mark.over {
                            flips.push((id.clone(), true));
                        }
                        *mark
                    }
                };
                next.insert(id.clone(), kept);
            }
            next
        });
        for (id, over) in flips {
            self.changed(&id, over);
        }
    }

    fn changed(&self, node: &str, over: bool) {
        if over {
            tracing::warn!(
                node,
                "query node over its memory high-water mark: inserts into its collections are refused"
            );
        } else {
            tracing::info!(node, "query node under its memory high-water mark: inserts into its collections go on");
        }
        let n = self.marks.load().values().filter(|m| m.over).count();
        metrics::gauge!("quiver_proxy_query_nodes_over_memory_mark").set(n as f64);
    }
}

/// The proxy's loop that reads the heartbeats of the query nodes it follows; not started when
/// the mark is 100 % (memory protection off).
pub(super) async fn watch(proxy: Arc<Proxy>) -> Result<()> {
    let percent = proxy.node.shared.config.limits.memory_high_water_percentage;
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes: BTreeSet<String> = proxy
            .layouts
            .iter()
            .flat_map(|c| c.dist.replicas.iter().flat_map(|g| g.nodes.clone()).collect::<Vec<_>>())
            .collect();
        let registry = &proxy.node.shared.registry;
        let read = futures::future::join_all(nodes.iter().map(|id| registry.node(id))).await;
        // A node whose entry cannot be read now keeps its last mark; one whose entry expired
        // (it died) is forgotten.
        let previous = proxy.quota.marks.load_full();
        let mut marks = HashMap::new();
        for (id, r) in nodes.into_iter().zip(read) {
            let mark = match r {
                Ok(status) => status.map(|s| Mark::of_status(&s, percent)),
                Err(e) => {
                    tracing::debug!(node = %id, error = %e, "could not read a query node's heartbeat; keeping its last mark");
                    previous.get(&id).copied()
                }
            };
            if let Some(m) = mark {
                marks.insert(id, m);
            }
        }
        proxy.quota.refresh(marks);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use quiver_schemas::{CollectionInfo, CollectionSchema, Consistency, ReplicaGroup};

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Heartbeats of (node, used MiB, budget MiB) measured at `at_ms`.
    fn beats(nodes: &[(&str, u64, u64)], at_ms: u64) -> HashMap<String, Mark> {
        nodes
            .iter()
            .map(|(id, used, budget)| {
                let mark = Mark {
                    over: is_over(used * MIB, budget * MIB, 90.0),
                    used: used * MIB,
                    budget: budget * MIB,
                    at_ms,
                };
                (id.to_string(), mark)
            })
            .collect()
    }

    fn event(node: &str, over: bool, at_ms: u64) -> MemoryMarkEvent {
        MemoryMarkEvent { node_id: node.into(), over, used: 250 * MIB, budget: 256 * MIB, at_ms }
    }

    fn served_by(name: &str, nodes: &[&str]) -> Distribution {
        let schema = CollectionSchema {
            name: name.into(),
            description: String::new(),
            fields: Vec::new(),
            enable_dynamic_field: false,
            num_shards: 1,
            consistency: Consistency::Bounded,
        };
        Distribution {
            collection: CollectionInfo {
                partitions: Default::default(),
                id: 7,
                schema,
                index: None,
                created_ts: 0,
                scalar_indexes: Vec::new(),
            },
            shards: Vec::new(),
            segments: Vec::new(),
            version: 1,
            released: false,
            replicas: vec![ReplicaGroup { id: 0, nodes: nodes.iter().map(|n| n.to_string()).collect() }],
            unserved: Vec::new(),
        }
    }

    #[test]
    fn writes_are_refused_only_where_a_serving_query_node_is_over_its_mark() {
        let quota = MemoryQuota::default();
        let docs = served_by("docs", &["qn1", "qn2"]);
        let other = served_by("other", &["qn3"]);
        quota.refresh(beats(&[("qn1", 200, 256), ("qn2", 240, 256), ("qn3", 10, 0)], 1_000));
        let e = quota.admit(&docs, "an insert", 90.0).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("an insert into \"docs\"") && msg.contains("qn2") && msg.contains("240 MiB of its 256 MiB"),
            "{msg}"
        );
        // qn3 reports no budget: never over.
        quota.admit(&other, "an insert", 90.0).unwrap();
        // Back under the mark, or its entry gone: writes resume.
        quota.refresh(beats(&[("qn1", 200, 256), ("qn2", 230, 256)], 2_000));
        quota.admit(&docs, "an insert", 90.0).unwrap();
        quota.refresh(beats(&[("qn1", 200, 256), ("qn2", 240, 512)], 3_000));
        quota.admit(&docs, "an insert", 90.0).unwrap();
        quota.refresh(beats(&[("qn1", 200, 256)], 4_000));
        quota.admit(&docs, "an insert", 90.0).unwrap();
    }

    #[test]
    fn an_event_counts_until_a_later_heartbeat_says_otherwise() {
        let quota = MemoryQuota::default();
        let docs = served_by("docs", &["qn1"]);
        quota.refresh(beats(&[("qn1", 100, 256)], 1_000));
        // Crossed at 1.5 s: refused at once, and an older heartbeat (1.2 s) does not undo it.
        quota.heard(&event("qn1", true, 1_500));
        assert!(quota.admit(&docs, "an insert", 90.0).is_err());
        quota.refresh(beats(&[("qn1", 100, 256)], 1_200));
        assert!(quota.admit(&docs, "an insert", 90.0).is_err());
        // An event older than what is in hand is ignored; a later heartbeat decides.
        quota.heard(&event("qn1", false, 1_400));
        assert!(quota.admit(&docs, "an insert", 90.0).is_err());
        quota.refresh(beats(&[("qn1", 100, 256)], 2_000));
        quota.admit(&docs, "an insert", 90.0).unwrap();
        // Back under by event too.
        quota.heard(&event("qn1", true, 2_500));
        assert!(quota.admit(&docs, "an insert", 90.0).is_err());
        quota.heard(&event("qn1", false, 2_600));
        quota.admit(&docs, "an insert", 90.0).unwrap();
    }
}
