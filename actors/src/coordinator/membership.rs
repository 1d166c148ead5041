//! Membership: which registered nodes take part in the cluster, decided by the discovery
//! policy (MISSION S4.3) from the registry's entries and heartbeats.
//!
//! Nodes register by writing their status to the registry bucket, refresh it every heartbeat
//! and delete it when they stop. The coordinator remembers every node it has seen, so a node
//! whose entry expired is still shown to the policy with its last heartbeat (and becomes
//! suspect, then dead); an entry deleted while still fresh means the node deregistered, and it
//! is forgotten at once.
//!
//! Verdicts: `Alive` nodes get new work; `Suspect` nodes keep what they hold but get nothing
//! new; `Dead` nodes' work is reassigned. An alive node that reports it is draining counts as
//! `draining`: it gets nothing new and its work is moved away while it still serves it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use quiver_policy::discovery::{DiscoverySettings, Liveness, NodeRecord};
use quiver_runtime::bus::now_ms;
use quiver_runtime::plugin::DiscoverySlot;
use quiver_runtime::{Config, Result};
use quiver_schemas::{NodeState, NodeStatus, Role};

use crate::node::Node;

/// Every known node with its verdict, from one read of the registry.
#[derive(Debug, Default, Clone)]
pub struct Verdicts {
    nodes: Vec<(NodeStatus, Liveness)>,
}

impl Verdicts {
    /// The members of `role`.
    pub fn members(&self, role: Role) -> Members {
        let mut members = Members::default();
        for (status, verdict) in self.nodes.iter().filter(|(n, _)| n.role == role) {
            match verdict {
                Liveness::Alive if status.state == NodeState::Draining => members.draining.push(status.clone()),
                Liveness::Alive => members.alive.push(status.clone()),
                Liveness::Suspect => members.suspect.push(status.clone()),
                Liveness::Dead => {}
            }
        }
        members
    }
}

/// Members of one role, by verdict.
#[derive(Debug, Default, Clone)]
pub struct Members {
    pub alive: Vec<NodeStatus>,
    pub suspect: Vec<NodeStatus>,
    /// Alive but draining: they serve what they hold until it has moved elsewhere.
    pub draining: Vec<NodeStatus>,
}

impl Members {
    /// Alive, suspect and draining nodes: everyone that still serves what it holds.
    pub fn serving(&self) -> impl Iterator<Item = &NodeStatus> {
        self.alive.iter().chain(&self.suspect).chain(&self.draining)
    }

    /// Whether `node` is draining.
    pub fn is_draining(&self, node: &str) -> bool {
        self.draining.iter().any(|n| n.node_id == node)
    }
}

/// The coordinator's memory of registered nodes.
#[derive(Default)]
pub struct Membership {
    seen: RefCell<BTreeMap<String, NodeStatus>>,
    verdicts: RefCell<BTreeMap<String, Liveness>>,
}

pub fn settings(config: &Config, now_ms: u64) -> DiscoverySettings {
    DiscoverySettings {
        now_ms,
        heartbeat_interval_ms: config.node.heartbeat_interval.as_millis() as u64,
        suspect_after_ms: config.discovery.suspect_after.as_millis() as u64,
        dead_after_ms: config.discovery.dead_after.as_millis() as u64,
        static_nodes: config.discovery.static_nodes.clone(),
    }
}

impl Membership {
    /// Reads the registry once and classifies every known (healthy) node of every role with
    /// the discovery policy, in one call.
    pub async fn refresh(&self, node: &Node, discovery: &DiscoverySlot) -> Result<Verdicts> {
        let entries = node.shared.registry.nodes().await?;
        let config = &node.shared.config;
        let now = now_ms();
        let ttl_ms = config.node.heartbeat_ttl.as_millis() as u64;
        {
            let mut seen = self.seen.borrow_mut();
            let present: BTreeMap<String, NodeStatus> = entries.into_iter().map(|n| (n.node_id.clone(), n)).collect();
            // Gone while still fresh: deleted by the node itself on the way out (the listing is
            // one snapshot of the registry, `JsonBucket::values`, so a node heartbeating is
            // never missing from it). Gone once its entry expired: judged by its heartbeat's
            // age like any other (suspect, then dead). Long dead: forgotten (it was reported
            // dead for a while already).
            let forget_after_ms = (config.discovery.dead_after.as_millis() as u64).saturating_mul(10).max(60_000);
            seen.retain(|id, last| {
                let silent = now.saturating_sub(last.heartbeat_ms);
                present.contains_key(id) || (silent >= ttl_ms && silent < forget_after_ms)
            });
            seen.extend(present);
        }
        let seen = self.seen.borrow();
        let candidates: Vec<&NodeStatus> = seen.values().filter(|n| n.healthy).collect();
        let records: Vec<NodeRecord> = candidates
            .iter()
            .map(|n| NodeRecord {
                node_id: n.node_id.clone(),
                role: n.role.as_str().to_string(),
                started_ms: n.started_ms,
                last_heartbeat_ms: n.heartbeat_ms,
            })
            .collect();
        let verdicts = discovery.classify(&records, &settings(config, now));
        let mut previous = self.verdicts.borrow_mut();
        previous.retain(|id, _| seen.contains_key(id));
        let mut out = Verdicts::default();
        for (status, verdict) in candidates.into_iter().zip(verdicts) {
            if previous.insert(status.node_id.clone(), verdict) != Some(verdict) {
                tracing::info!(node = %status.node_id, ?verdict, "membership changed");
            }
            out.nodes.push((status.clone(), verdict));
        }
        Ok(out)
    }

    /// The last verdict per node, for status output.
    pub fn verdicts(&self) -> BTreeMap<String, Liveness> {
        self.verdicts.borrow().clone()
    }
}
