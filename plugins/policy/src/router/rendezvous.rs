//! Weighted rendezvous (HRW) hashing at segment level, the default router (MISSION S4.4).

use super::{RouteRequest, Router};
use crate::fnv1a;

/// Every segment goes to the holder with the highest [`hrw_score`], so adding or removing a
/// node moves only that node's segments, and equal weights spread segments evenly.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rendezvous;

/// Weighted HRW score of `(segment, node)`: `-weight / ln(u)` with `u` uniform in (0, 1).
pub fn hrw_score(segment: u64, node_id: &str, weight: f64) -> f64 {
    let h = fnv1a(node_id.as_bytes()) ^ segment.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser, so near-identical keys spread over the unit interval.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight.max(f64::MIN_POSITIVE) / u.ln()
}

impl Router for Rendezvous {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        request
            .segments
            .iter()
            .map(|s| {
                request
                    .holders_of(s)
                    .iter()
                    .filter_map(|&i| request.nodes.get(i as usize).map(|n| (i, hrw_score(s.id, &n.node_id, n.weight))))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            })
            .collect()
    }
}
