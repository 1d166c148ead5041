//! Bindings of the four `quiver:policy` worlds (generated from `wit/`) and the conversions
//! between them and the `quiver-policy` types the rest of Quiver uses.
//!
//! Parameters are generated borrowing (`&str`, `&[T]`), so a call copies the request straight
//! from the caller's structures into the guest without building owned intermediates. The
//! router, called once per search, takes the faster path of `fast_route`.

use quiver_policy::autoscaler as pa;
use quiver_policy::balancer as pb;
use quiver_policy::discovery as pd;
use quiver_policy::router as pr;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::fast_route::RouteFunc;
use super::sandbox::Sandbox;
use super::Kind;

mod router_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "router-policy",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod balancer_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "balancer-policy",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod discovery_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "discovery-policy",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod autoscaler_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "autoscaler-policy",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use autoscaler_world::exports::quiver::policy::autoscaler as wa;
use balancer_world::exports::quiver::policy::balancer as wb;
use discovery_world::exports::quiver::policy::discovery as wd;
pub(crate) use router_world::exports::quiver::policy::router as wr;

/// A component checked against the world of its kind, ready to instantiate.
#[derive(Clone)]
pub(crate) enum KindPre {
    Router(router_world::RouterPolicyPre<Sandbox>),
    Balancer(balancer_world::BalancerPolicyPre<Sandbox>),
    Discovery(discovery_world::DiscoveryPolicyPre<Sandbox>),
    Autoscaler(autoscaler_world::AutoscalerPolicyPre<Sandbox>),
}

impl KindPre {
    /// Checks that the component's export has the types of `kind`'s world.
    pub(crate) fn new(kind: Kind, pre: InstancePre<Sandbox>) -> wasmtime::Result<KindPre> {
        Ok(match kind {
            Kind::Router => KindPre::Router(router_world::RouterPolicyPre::new(pre)?),
            Kind::Balancer => KindPre::Balancer(balancer_world::BalancerPolicyPre::new(pre)?),
            Kind::Discovery => KindPre::Discovery(discovery_world::DiscoveryPolicyPre::new(pre)?),
            Kind::Autoscaler => KindPre::Autoscaler(autoscaler_world::AutoscalerPolicyPre::new(pre)?),
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<KindExports> {
        Ok(match self {
            KindPre::Router(pre) => {
                let instance = pre.instance_pre().instantiate(&mut *store)?;
                KindExports::Router(RouteFunc::new(store, &instance)?)
            }
            KindPre::Balancer(pre) => KindExports::Balancer(pre.instantiate(store)?),
            KindPre::Discovery(pre) => KindExports::Discovery(pre.instantiate(store)?),
            KindPre::Autoscaler(pre) => KindExports::Autoscaler(pre.instantiate(store)?),
        })
    }
}

/// The exports of one live instance.
pub(crate) enum KindExports {
    Router(RouteFunc),
    Balancer(balancer_world::BalancerPolicy),
    Discovery(discovery_world::DiscoveryPolicy),
    Autoscaler(autoscaler_world::AutoscalerPolicy),
}

fn wrong_kind(wanted: Kind) -> wasmtime::Error {
    wasmtime::Error::msg(format!("internal: called a {wanted} function on a plugin of another kind"))
}

impl KindExports {
    pub(crate) fn route(
        &self,
        store: &mut Store<Sandbox>,
        request: &pr::RouteRequest,
    ) -> wasmtime::Result<Vec<Option<u32>>> {
        let KindExports::Router(route) = self else { return Err(wrong_kind(Kind::Router)) };
        route.call(store, request)
    }

    pub(crate) fn place(
        &self,
        store: &mut Store<Sandbox>,
        view: &pb::ClusterView,
        items: &[pb::PlacementItem],
    ) -> wasmtime::Result<Vec<Option<u32>>> {
        let KindExports::Balancer(balancer) = self else { return Err(wrong_kind(Kind::Balancer)) };
        let (nodes, segments) = cluster_view(view);
        let items: Vec<wb::PlacementItem> =
            items.iter().map(|i| wb::PlacementItem { id: i.id, memory_size: i.memory_size, rows: i.rows }).collect();
        let wire = wb::ClusterView { nodes: &nodes, segments: &segments };
        balancer.quiver_policy_balancer().call_place(store, wire, &items)
    }

    pub(crate) fn plan(
        &self,
        store: &mut Store<Sandbox>,
        view: &pb::ClusterView,
        settings: &pb::BalanceSettings,
    ) -> wasmtime::Result<Vec<pb::SegmentMove>> {
        let KindExports::Balancer(balancer) = self else { return Err(wrong_kind(Kind::Balancer)) };
        let (nodes, segments) = cluster_view(view);
        let wire = wb::ClusterView { nodes: &nodes, segments: &segments };
        let settings = wb::BalanceSettings {
            overloaded_memory_threshold_percentage: settings.overloaded_memory_threshold_percentage,
            memory_usage_max_difference_percentage: settings.memory_usage_max_difference_percentage,
            max_moves: settings.max_moves,
        };
        let moves = balancer.quiver_policy_balancer().call_plan(store, wire, settings)?;
        Ok(moves
            .into_iter()
            .map(|m| pb::SegmentMove { segment: m.segment, source: m.source, target: m.target })
            .collect())
    }

    pub(crate) fn classify(
        &self,
        store: &mut Store<Sandbox>,
        nodes: &[pd::NodeRecord],
        settings: &pd::DiscoverySettings,
    ) -> wasmtime::Result<Vec<pd::Liveness>> {
        let KindExports::Discovery(discovery) = self else { return Err(wrong_kind(Kind::Discovery)) };
        let records: Vec<wd::NodeRecord<'_>> = nodes
            .iter()
            .map(|n| wd::NodeRecord {
                node_id: &n.node_id,
                role: &n.role,
                started_ms: n.started_ms,
                last_heartbeat_ms: n.last_heartbeat_ms,
            })
            .collect();
        let static_nodes: Vec<&str> = settings.static_nodes.iter().map(String::as_str).collect();
        let wire = wd::DiscoverySettings {
            now_ms: settings.now_ms,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            suspect_after_ms: settings.suspect_after_ms,
            dead_after_ms: settings.dead_after_ms,
            static_nodes: &static_nodes,
        };
        let verdicts = discovery.quiver_policy_discovery().call_classify(store, &records, wire)?;
        Ok(verdicts
            .into_iter()
            .map(|v| match v {
                wd::Liveness::Alive => pd::Liveness::Alive,
                wd::Liveness::Suspect => pd::Liveness::Suspect,
                wd::Liveness::Dead => pd::Liveness::Dead,
            })
            .collect())
    }

    pub(crate) fn recommend(
        &self,
        store: &mut Store<Sandbox>,
        window: &[pa::MetricSample],
        current: &pa::ReplicaSize,
        settings: &pa::AutoscaleSettings,
    ) -> wasmtime::Result<pa::Recommendation> {
        let KindExports::Autoscaler(autoscaler) = self else { return Err(wrong_kind(Kind::Autoscaler)) };
        let window: Vec<wa::MetricSample> = window
            .iter()
            .map(|s| wa::MetricSample {
                at_ms: s.at_ms,
                cpu_percent: s.cpu_percent,
                memory_used: s.memory_used,
                oom: s.oom,
            })
            .collect();
        let current = wa::ReplicaSize { cpu_millis: current.cpu_millis, memory_bytes: current.memory_bytes };
        let settings = wa::AutoscaleSettings {
            min_memory_bytes: settings.min_memory_bytes,
            max_memory_bytes: settings.max_memory_bytes,
            cpu_upper_percent: settings.cpu_upper_percent,
            memory_headroom_percent: settings.memory_headroom_percent,
            oom_headroom_percent: settings.oom_headroom_percent,
            memory_per_cpu_bytes: settings.memory_per_cpu_bytes,
        };
        let r = autoscaler.quiver_policy_autoscaler().call_recommend(store, &window, current, settings)?;
        Ok(pa::Recommendation {
            size: pa::ReplicaSize { cpu_millis: r.size.cpu_millis, memory_bytes: r.size.memory_bytes },
            reason: r.reason,
        })
    }
}

fn cluster_view(view: &pb::ClusterView) -> (Vec<wb::NodeUsage<'_>>, Vec<wb::SegmentLoad>) {
    let nodes = view
        .nodes
        .iter()
        .map(|n| wb::NodeUsage {
            node_id: &n.node_id,
            memory_used: n.memory_used,
            memory_capacity: n.memory_capacity,
            rows: n.rows,
            segments: n.segments,
        })
        .collect();
    let segments = view
        .segments
        .iter()
        .map(|s| wb::SegmentLoad {
            id: s.id,
            collection: s.collection,
            node: s.node,
            memory_size: s.memory_size,
            rows: s.rows,
        })
        .collect();
    (nodes, segments)
}
