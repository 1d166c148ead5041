//! An operator-maintained member list (MISSION S4.3's "static config" discovery).

use super::heartbeat::liveness;
use super::{Discovery, DiscoverySettings, Liveness, NodeRecord};

/// Only the nodes named in `settings.static_nodes` are members; any other node that registers
/// is [`Liveness::Dead`], so it gets no work and whatever it claimed is reassigned. Listed nodes
/// are classified by heartbeat silence exactly as [`super::HeartbeatDiscovery`] does, so a
/// listed node that stops answering still stops getting work.
///
/// This fits fixed deployments where membership is decided by the operator (e.g. a host list),
/// and it keeps a stray or misconfigured process that joins the bus out of the cluster.
/// The list must name every member: with an empty list every node is dead.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StaticDiscovery;

impl Discovery for StaticDiscovery {
    fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness> {
        nodes
            .iter()
            .map(
                |node| {
                    if settings.static_nodes.contains(&node.node_id) {
                        liveness(node, settings)
                    } else {
                        Liveness::Dead
                    }
                },
            )
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn settings(now_ms: u64, listed: &[&str]) -> DiscoverySettings {
        DiscoverySettings {
            now_ms,
            heartbeat_interval_ms: 1_000,
            suspect_after_ms: 3_000,
            dead_after_ms: 10_000,
            static_nodes: listed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn node(id: &str, last_heartbeat_ms: u64) -> NodeRecord {
        NodeRecord { node_id: id.into(), role: "querynode".into(), started_ms: 0, last_heartbeat_ms }
    }

    #[test]
    fn unlisted_nodes_are_dead_even_when_beating() {
        let s = settings(100_000, &["a", "b"]);
        let nodes = [node("a", 100_000), node("intruder", 100_000), node("b", 100_000)];
        assert_eq!(StaticDiscovery.classify(&nodes, &s), [Liveness::Alive, Liveness::Dead, Liveness::Alive]);
    }

    #[test]
    fn listed_nodes_follow_the_heartbeat_rules() {
        let s = settings(100_000, &["a", "b", "c", "d"]);
        let nodes = [node("a", 97_000), node("b", 96_999), node("c", 90_000), node("d", 89_999)];
        assert_eq!(
            StaticDiscovery.classify(&nodes, &s),
            [Liveness::Alive, Liveness::Suspect, Liveness::Suspect, Liveness::Dead]
        );
        // And agree with the heartbeat policy node for node.
        assert_eq!(StaticDiscovery.classify(&nodes, &s), crate::discovery::HeartbeatDiscovery.classify(&nodes, &s));
    }

    #[test]
    fn clock_skew_counts_as_fresh_for_listed_nodes() {
        let s = settings(100_000, &["a"]);
        assert_eq!(StaticDiscovery.classify(&[node("a", 200_000)], &s), [Liveness::Alive]);
    }

    #[test]
    fn ids_match_exactly() {
        let s = settings(100_000, &["node-1"]);
        let nodes = [node("node-10", 100_000), node("NODE-1", 100_000), node("node-1", 100_000)];
        assert_eq!(StaticDiscovery.classify(&nodes, &s), [Liveness::Dead, Liveness::Dead, Liveness::Alive]);
    }

    #[test]
    fn an_empty_list_admits_nobody() {
        let s = settings(100_000, &[]);
        assert_eq!(StaticDiscovery.classify(&[node("a", 100_000)], &s), [Liveness::Dead]);
    }
}
