//! Liveness from heartbeat silence, the default discovery (MISSION S4.3).

use super::{Discovery, DiscoverySettings, Liveness, NodeRecord};

/// Every registered node is a member; its liveness follows how long it has been silent:
///
/// ```text
/// silence = now_ms - last_heartbeat_ms      (0 when the heartbeat is "in the future")
/// silence <= suspect_after_ms  → Alive
/// silence <= dead_after_ms     → Suspect
/// otherwise                    → Dead
/// ```
///
/// The two steps let a node that missed a heartbeat or two (a GC pause, a busy network) keep its
/// segments while getting no new work, and only a node silent for `dead_after_ms` loses them
/// (its work is then reassigned). A heartbeat stamped after `now_ms` means the clocks disagree,
/// not that the node is gone, so it counts as fresh.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HeartbeatDiscovery;

/// The heartbeat verdict for one node; shared with [`super::StaticDiscovery`].
pub(crate) fn liveness(node: &NodeRecord, settings: &DiscoverySettings) -> Liveness {
    let silence = settings.now_ms.saturating_sub(node.last_heartbeat_ms);
    if silence <= settings.suspect_after_ms {
        Liveness::Alive
    } else if silence <= settings.dead_after_ms {
        Liveness::Suspect
    } else {
        Liveness::Dead
    }
}

impl Discovery for HeartbeatDiscovery {
    fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness> {
        nodes.iter().map(|node| liveness(node, settings)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn settings(now_ms: u64) -> DiscoverySettings {
        DiscoverySettings {
            now_ms,
            heartbeat_interval_ms: 1_000,
            suspect_after_ms: 3_000,
            dead_after_ms: 10_000,
            static_nodes: Vec::new(),
        }
    }

    fn node(id: &str, last_heartbeat_ms: u64) -> NodeRecord {
        NodeRecord { node_id: id.into(), role: "querynode".into(), started_ms: 0, last_heartbeat_ms }
    }

    fn verdict(silence: u64) -> Liveness {
        let now = 1_000_000;
        HeartbeatDiscovery.classify(&[node("n", now - silence)], &settings(now))[0]
    }

    #[test]
    fn boundaries_are_inclusive_on_the_healthy_side() {
        assert_eq!(verdict(0), Liveness::Alive);
        assert_eq!(verdict(2_999), Liveness::Alive);
        assert_eq!(verdict(3_000), Liveness::Alive);
        assert_eq!(verdict(3_001), Liveness::Suspect);
        assert_eq!(verdict(10_000), Liveness::Suspect);
        assert_eq!(verdict(10_001), Liveness::Dead);
        assert_eq!(verdict(999_999), Liveness::Dead);
    }

    #[test]
    fn a_heartbeat_from_the_future_is_fresh() {
        let s = settings(5_000);
        assert_eq!(HeartbeatDiscovery.classify(&[node("skewed", 60_000)], &s), [Liveness::Alive]);
        assert_eq!(HeartbeatDiscovery.classify(&[node("max", u64::MAX)], &s), [Liveness::Alive]);
    }

    #[test]
    fn a_node_that_never_beat_is_dead_on_a_real_clock() {
        assert_eq!(HeartbeatDiscovery.classify(&[node("n", 0)], &settings(1_700_000_000_000)), [Liveness::Dead]);
    }

    #[test]
    fn one_verdict_per_node_in_order_and_the_static_list_is_ignored() {
        let mut s = settings(100_000);
        s.static_nodes = vec!["other".into()];
        let nodes = [node("a", 100_000), node("b", 95_000), node("c", 50_000), node("d", 99_000)];
        assert_eq!(
            HeartbeatDiscovery.classify(&nodes, &s),
            [Liveness::Alive, Liveness::Suspect, Liveness::Dead, Liveness::Alive]
        );
        assert!(HeartbeatDiscovery.classify(&[], &s).is_empty());
    }

    #[test]
    fn suspect_window_can_be_empty() {
        let mut s = settings(100_000);
        s.dead_after_ms = s.suspect_after_ms;
        assert_eq!(HeartbeatDiscovery.classify(&[node("n", 97_000)], &s), [Liveness::Alive]);
        assert_eq!(HeartbeatDiscovery.classify(&[node("n", 96_999)], &s), [Liveness::Dead]);
    }
}
