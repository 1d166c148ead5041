//! An example routing plugin: **avoid slow nodes**.
//!
//! Each sealed segment goes to the holder whose replies to this proxy have been fastest lately
//! (`NodeLoad::latency_us`, smoothed by the proxy). A node whose latency is still unknown (0,
//! e.g. it just joined) counts as average — the mean of the known latencies — so it is neither
//! shunned nor flooded. Ties, including the case where nothing is known yet, are broken by
//! rendezvous hashing, so equal nodes still share segments evenly and each segment keeps
//! hitting the same node while nothing changes.
//!
//! The whole plugin is [`LatencyAware`]'s `Router` impl plus one `export_router!` line; see
//! README.md for building, testing against recorded inputs and loading it into a cluster.

use quiver_plugin_sdk::router::{hrw_score, NodeLoad, RouteRequest, Router};

/// Routes every segment to its holder with the lowest latency; see the crate docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct LatencyAware;

impl Router for LatencyAware {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        let unknown = mean_known_latency(&request.nodes);
        request
            .segments
            .iter()
            .map(|segment| {
                request
                    .holders_of(segment)
                    .iter()
                    .filter_map(|&index| {
                        let node = request.nodes.get(index as usize)?;
                        let latency = if node.latency_us == 0 { unknown } else { f64::from(node.latency_us) };
                        Some((index, latency, hrw_score(segment.id, &node.node_id, node.weight)))
                    })
                    // Lowest latency first; among equals, the highest rendezvous score.
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)))
                    .map(|(index, _, _)| index)
            })
            .collect()
    }
}

/// The mean latency of the nodes whose latency is known, in microseconds (0 when none is).
fn mean_known_latency(nodes: &[NodeLoad]) -> f64 {
    let (sum, count) = nodes
        .iter()
        .filter(|n| n.latency_us > 0)
        .fold((0.0, 0u32), |(sum, count), n| (sum + f64::from(n.latency_us), count + 1));
    if count == 0 {
        0.0
    } else {
        sum / f64::from(count)
    }
}

quiver_plugin_sdk::export_router!(LatencyAware);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::router::Rendezvous;

    fn node(id: &str, latency_us: u32) -> NodeLoad {
        NodeLoad { node_id: id.into(), in_flight: 0, latency_us, weight: 1.0 }
    }

    fn request(nodes: Vec<NodeLoad>) -> RouteRequest {
        RouteRequest { sequence: 1, collection: 100, nodes, ..RouteRequest::default() }
    }

    #[test]
    fn picks_the_fastest_holder() {
        let mut r = request(vec![node("a", 900), node("b", 4000), node("c", 1200)]);
        r.push_segment(1, 1000, [0, 1, 2]);
        r.push_segment(2, 1000, [1, 2]);
        r.push_segment(3, 1000, [1]);
        assert_eq!(LatencyAware.route(&r), vec![Some(0), Some(2), Some(1)]);
    }

    #[test]
    fn unknown_latency_counts_as_the_mean_of_known_ones() {
        // Known: 100 and 300, so the newcomer "b" counts as 200.
        let mut r = request(vec![node("a", 100), node("b", 0), node("c", 300)]);
        r.push_segment(1, 1000, [1, 2]);
        r.push_segment(2, 1000, [0, 1]);
        assert_eq!(LatencyAware.route(&r), vec![Some(1), Some(0)]);
    }

    #[test]
    fn equal_or_unknown_latencies_fall_back_to_rendezvous() {
        for latency in [0, 750] {
            let mut r = request(vec![node("a", latency), node("b", latency), node("c", latency)]);
            for id in 0..50 {
                r.push_segment(1000 + id, 1000, [0, 1, 2]);
            }
            assert_eq!(LatencyAware.route(&r), Rendezvous.route(&r), "latency {latency}");
        }
    }

    #[test]
    fn segments_without_valid_holders_are_left_unrouted() {
        let mut r = request(vec![node("a", 100)]);
        r.push_segment(1, 10, []);
        r.push_segment(2, 10, [7]);
        assert_eq!(LatencyAware.route(&r), vec![None, None]);
    }

    /// One line of `inputs/route.jsonl`, the recorded inputs `quiver plugin test` replays.
    #[derive(serde::Deserialize)]
    struct Recorded {
        route: RouteRequest,
    }

    #[test]
    fn recorded_inputs_get_valid_answers() -> Result<(), String> {
        let lines = include_str!("../inputs/route.jsonl");
        let mut replayed = 0;
        for (number, line) in lines.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let recorded: Recorded =
                serde_json::from_str(line).map_err(|e| format!("inputs/route.jsonl line {}: {e}", number + 1))?;
            let r = recorded.route;
            let routes = LatencyAware.route(&r);
            assert_eq!(r.check(&routes), Ok(()), "line {}", number + 1);
            // Every answer is a fastest holder of its segment.
            let unknown = mean_known_latency(&r.nodes);
            let latency = |i: u32| match r.nodes[i as usize].latency_us {
                0 => unknown,
                l => f64::from(l),
            };
            for (segment, route) in r.segments.iter().zip(&routes) {
                if let Some(chosen) = route {
                    assert!(r.holders_of(segment).iter().all(|&h| latency(*chosen) <= latency(h)));
                }
            }
            replayed += 1;
        }
        assert!(replayed >= 3);
        Ok(())
    }
}
