//! Built-in sample inputs: the self-test of every plugin version before a slot publishes it,
//! the inputs the tests compare Wasm plugins with their native twins on, and what
//! `quiver plugin sample` prints for plugin authors.

use quiver_policy::autoscaler::{AutoscaleSettings, MetricSample, ReplicaSize, GIB};
use quiver_policy::balancer::{ClusterView, NodeUsage, PlacementItem, SegmentLoad};
use quiver_policy::discovery::{DiscoverySettings, NodeRecord};
use quiver_policy::router::{NodeLoad, RouteRequest};

/// A request of `segments` segments over `nodes` nodes, each segment held by every node.
pub fn route_request(segments: usize, nodes: usize) -> RouteRequest {
    let mut request = RouteRequest { sequence: 1, collection: 42, ..Default::default() };
    request.nodes = (0..nodes).map(|i| NodeLoad::idle(format!("querynode-{i}"))).collect();
    for s in 0..segments as u64 {
        request.push_segment(450_000_000_000 + s, 100_000, 0..nodes as u32);
    }
    request
}

/// Routing questions: replicas on some nodes only, a segment without holders, loads that
/// differ, and an empty search.
pub fn route_requests() -> Vec<RouteRequest> {
    let mut mixed = RouteRequest { sequence: 7, collection: 0, ..Default::default() };
    mixed.nodes = vec![
        NodeLoad { node_id: "querynode-a".into(), in_flight: 3, latency_us: 900, weight: 1.0 },
        NodeLoad { node_id: "querynode-b".into(), in_flight: 0, latency_us: 400, weight: 2.0 },
        NodeLoad { node_id: "querynode-c".into(), in_flight: 1, latency_us: 0, weight: 1.0 },
    ];
    for s in 0..12u64 {
        let holders: Vec<u32> = match s % 4 {
            0 => vec![0, 1],
            1 => vec![1, 2],
            2 => vec![2],
            _ => vec![0, 1, 2],
        };
        mixed.push_segment(1000 + s, 10_000 * (s + 1), holders);
    }
    mixed.push_segment(2000, 5, Vec::new());
    let mut many = route_request(100, 3);
    many.sequence = u64::MAX;
    vec![mixed, many, RouteRequest::default()]
}

/// Three query nodes, the first much fuller; segments of two collections; three items to
/// place (the last a shard leader, sizes 0).
pub fn cluster_view() -> (ClusterView, Vec<PlacementItem>) {
    const MIB: u64 = 1 << 20;
    let nodes = vec![
        NodeUsage { node_id: "querynode-a".into(), memory_used: 0, memory_capacity: 8 * GIB, rows: 0, segments: 0 },
        NodeUsage { node_id: "querynode-b".into(), memory_used: 0, memory_capacity: 8 * GIB, rows: 0, segments: 0 },
        NodeUsage { node_id: "querynode-c".into(), memory_used: 0, memory_capacity: 4 * GIB, rows: 0, segments: 0 },
    ];
    let mut view = ClusterView { nodes, segments: Vec::new() };
    let placement = [0u32, 0, 0, 0, 0, 0, 1, 1, 2, 0];
    for (i, &node) in placement.iter().enumerate() {
        let id = 500 + i as u64;
        let memory_size = (200 + 50 * i as u64) * MIB;
        let rows = 50_000 + 1_000 * i as u64;
        view.segments.push(SegmentLoad { id, collection: 1 + (i as u64 % 2), node, memory_size, rows });
        let n = &mut view.nodes[node as usize];
        n.memory_used += memory_size;
        n.rows += rows;
        n.segments += 1;
    }
    // The first node also holds a second copy of segment 506 (a replica).
    view.segments.push(SegmentLoad { id: 506, collection: 1, node: 0, memory_size: 500 * MIB, rows: 56_000 });
    view.nodes[0].memory_used += 500 * MIB;
    let items = vec![
        PlacementItem { id: 900, memory_size: 300 * MIB, rows: 60_000 },
        PlacementItem { id: 901, memory_size: 3 * GIB, rows: 900_000 },
        PlacementItem { id: 902, memory_size: 0, rows: 0 },
    ];
    (view, items)
}

/// Registrations with fresh, late and silent heartbeats, and settings with a static list.
pub fn node_records() -> (Vec<NodeRecord>, DiscoverySettings) {
    let now = 1_700_000_100_000;
    let record = |id: &str, role: &str, silent_ms: u64| NodeRecord {
        node_id: id.into(),
        role: role.into(),
        started_ms: now - 60_000,
        last_heartbeat_ms: now - silent_ms,
    };
    let nodes = vec![
        record("querynode-a", "querynode", 200),
        record("querynode-b", "querynode", 3_500),
        record("querynode-c", "querynode", 9_000),
        record("datanode-a", "datanode", 0),
        record("proxy-x", "proxy", 4_000),
    ];
    let settings = DiscoverySettings {
        now_ms: now,
        heartbeat_interval_ms: 1_000,
        suspect_after_ms: 3_000,
        dead_after_ms: 5_000,
        static_nodes: vec!["querynode-a".into(), "querynode-b".into(), "datanode-a".into()],
    };
    (nodes, settings)
}

/// A window of busy samples with one out-of-memory event, a current size and the defaults.
pub fn metrics_window() -> (Vec<MetricSample>, ReplicaSize, AutoscaleSettings) {
    let window = (0..12u64)
        .map(|i| MetricSample {
            at_ms: 1_700_000_000_000 + i * 10_000,
            cpu_percent: 60.0 + 3.0 * i as f64,
            memory_used: 5 * GIB + i * (GIB / 8),
            oom: i == 7,
        })
        .collect();
    let current = ReplicaSize { cpu_millis: 2_000, memory_bytes: 8 * GIB };
    (window, current, AutoscaleSettings::default())
}

/// Other autoscaling cases: idle, pinned size (min = max), and an empty window.
pub fn metrics_windows() -> Vec<(Vec<MetricSample>, ReplicaSize, AutoscaleSettings)> {
    let idle: Vec<MetricSample> =
        (0..6u64).map(|i| MetricSample { at_ms: i * 10_000, cpu_percent: 5.0, memory_used: GIB, oom: false }).collect();
    let current = ReplicaSize { cpu_millis: 4_000, memory_bytes: 16 * GIB };
    let pinned = AutoscaleSettings { min_memory_bytes: 8 * GIB, max_memory_bytes: 8 * GIB, ..Default::default() };
    vec![
        metrics_window(),
        (idle.clone(), current, AutoscaleSettings::default()),
        (idle, current, pinned),
        (Vec::new(), current, AutoscaleSettings::default()),
    ]
}
