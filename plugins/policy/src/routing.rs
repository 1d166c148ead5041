//! Routing: for each sealed segment of a search, pick one node among those holding it.

use crate::fnv1a;

/// A segment and the nodes that hold it (indexes into the node list given to the router).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentCandidates {
    pub segment: u64,
    pub nodes: Vec<usize>,
}

/// What the router knows of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub node_id: String,
    /// Requests in flight from this proxy.
    pub in_flight: u32,
    /// Relative capacity weight (1.0 = normal).
    pub weight: f64,
}

/// A routing policy. Returns, per segment, the chosen index into `nodes` (or `None` when the
/// segment has no candidate).
pub trait Router: Send + Sync {
    fn name(&self) -> &'static str;
    fn route(&self, segments: &[SegmentCandidates], nodes: &[NodeLoad]) -> Vec<Option<usize>>;
}

/// Weighted rendezvous hashing at segment level: every segment goes to the candidate with
/// the highest `hrw_score`, so adding or removing a node moves only that node's segments.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rendezvous;

/// Weighted HRW score of `(segment, node)`: `-weight / ln(u)` with `u` uniform in (0, 1).
pub fn hrw_score(segment: u64, node_id: &str, weight: f64) -> f64 {
    let mut key = Vec::with_capacity(8 + node_id.len());
    key.extend_from_slice(&segment.to_le_bytes());
    key.extend_from_slice(node_id.as_bytes());
    let h = fnv1a(&key);
    // Mix (splitmix64 finaliser) so near-identical keys spread over the unit interval.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight.max(f64::MIN_POSITIVE) / u.ln()
}

impl Router for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    fn route(&self, segments: &[SegmentCandidates], nodes: &[NodeLoad]) -> Vec<Option<usize>> {
        segments
            .iter()
            .map(|s| {
                s.nodes
                    .iter()
                    .copied()
                    .filter(|&i| i < nodes.len())
                    .map(|i| (i, hrw_score(s.segment, &nodes[i].node_id, nodes[i].weight)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeLoad> {
        (0..n).map(|i| NodeLoad { node_id: format!("q{i}"), in_flight: 0, weight: 1.0 }).collect()
    }

    fn all_on(n_segments: u64, n_nodes: usize) -> Vec<SegmentCandidates> {
        (0..n_segments).map(|segment| SegmentCandidates { segment, nodes: (0..n_nodes).collect() }).collect()
    }

    #[test]
    fn spreads_segments_evenly() {
        let routed = Rendezvous.route(&all_on(1000, 4), &nodes(4));
        let mut counts = [0usize; 4];
        for r in routed.into_iter().flatten() {
            counts[r] += 1;
        }
        for c in counts {
            assert!((200..=300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_segments() {
        let before = Rendezvous.route(&all_on(500, 4), &nodes(4));
        let three: Vec<SegmentCandidates> =
            (0..500).map(|segment| SegmentCandidates { segment, nodes: vec![0, 1, 2] }).collect();
        let after = Rendezvous.route(&three, &nodes(4));
        for (b, a) in before.iter().zip(&after) {
            if *b != Some(3) {
                assert_eq!(b, a);
            }
        }
    }

    #[test]
    fn no_candidate_gives_none() {
        let routed = Rendezvous.route(&[SegmentCandidates { segment: 1, nodes: vec![] }], &nodes(2));
        assert_eq!(routed, vec![None]);
    }
}
