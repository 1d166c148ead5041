//! The typed methods of each kind's slot, the checks of each kind's answers, and the
//! self-test every version passes before a slot publishes it.
//!
//! `route`, `place`, `plan`, `classify` and `recommend` never fail: the native built-in
//! answers whenever the plugin cannot. The `try_*` twins call only the Wasm plugin and return
//! its failure instead (for `quiver plugin test`); they count nothing.

use std::sync::Arc;

use quiver_policy::autoscaler::{AutoscaleSettings, Autoscaler, MetricSample, Recommendation, ReplicaSize};
use quiver_policy::balancer::{BalanceSettings, Balancer, ClusterView, PlacementItem, SegmentMove};
use quiver_policy::discovery::{Discovery, DiscoverySettings, Liveness, NodeRecord};
use quiver_policy::router::{RouteRequest, Router};

use super::pool::InstancePool;
use super::samples;
use super::slot::{PluginFailure, PolicySlot};
use super::Kind;

/// The slot of the proxy's router.
pub type RouterSlot = PolicySlot<dyn Router>;
/// The slot of the coordinator's balancer (placement and move plans).
pub type BalancerSlot = PolicySlot<dyn Balancer>;
/// The slot of the coordinator's service discovery.
pub type DiscoverySlot = PolicySlot<dyn Discovery>;
/// The slot of the autoscaler.
pub type AutoscalerSlot = PolicySlot<dyn Autoscaler>;

/// A native policy trait (`dyn Router`, ...) with its kind and its built-ins by name.
pub trait NativePolicy: Send + Sync + 'static {
    /// The policy kind.
    const KIND: Kind;
    /// The built-in called `name`, if there is one.
    fn builtin(name: &str) -> Option<Arc<Self>>;
}

impl NativePolicy for dyn Router {
    const KIND: Kind = Kind::Router;
    fn builtin(name: &str) -> Option<Arc<Self>> {
        quiver_policy::builtin::router(name).map(Arc::from)
    }
}

impl NativePolicy for dyn Balancer {
    const KIND: Kind = Kind::Balancer;
    fn builtin(name: &str) -> Option<Arc<Self>> {
        quiver_policy::builtin::balancer(name).map(Arc::from)
    }
}

impl NativePolicy for dyn Discovery {
    const KIND: Kind = Kind::Discovery;
    fn builtin(name: &str) -> Option<Arc<Self>> {
        quiver_policy::builtin::discovery(name).map(Arc::from)
    }
}

impl NativePolicy for dyn Autoscaler {
    const KIND: Kind = Kind::Autoscaler;
    fn builtin(name: &str) -> Option<Arc<Self>> {
        quiver_policy::builtin::autoscaler(name).map(Arc::from)
    }
}

impl PolicySlot<dyn Router> {
    /// For each segment, the node (index into `request.nodes`) that serves it; see
    /// [`RouteRequest::check`] for what a valid answer is.
    pub fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        self.invoke(|pool| route_on(pool, request), |native| native.route(request))
    }

    /// [`Self::route`] by the Wasm plugin alone.
    pub fn try_route(&self, request: &RouteRequest) -> Result<Vec<Option<u32>>, PluginFailure> {
        self.try_invoke(|pool| route_on(pool, request))
    }
}

impl PolicySlot<dyn Balancer> {
    /// For each item, the node (index into `view.nodes`) that should load it, or `None`.
    pub fn place(&self, view: &ClusterView, items: &[PlacementItem]) -> Vec<Option<u32>> {
        self.invoke(|pool| place_on(pool, view, items), |native| native.place(view, items))
    }

    /// The segment moves to make now (checked by [`ClusterView::check_plan`]).
    pub fn plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Vec<SegmentMove> {
        self.invoke(|pool| plan_on(pool, view, settings), |native| native.plan(view, settings))
    }

    /// [`Self::place`] by the Wasm plugin alone.
    pub fn try_place(&self, view: &ClusterView, items: &[PlacementItem]) -> Result<Vec<Option<u32>>, PluginFailure> {
        self.try_invoke(|pool| place_on(pool, view, items))
    }

    /// [`Self::plan`] by the Wasm plugin alone.
    pub fn try_plan(&self, view: &ClusterView, settings: &BalanceSettings) -> Result<Vec<SegmentMove>, PluginFailure> {
        self.try_invoke(|pool| plan_on(pool, view, settings))
    }
}

impl PolicySlot<dyn Discovery> {
    /// One verdict per node, in order.
    pub fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness> {
        self.invoke(|pool| classify_on(pool, nodes, settings), |native| native.classify(nodes, settings))
    }

    /// [`Self::classify`] by the Wasm plugin alone.
    pub fn try_classify(
        &self,
        nodes: &[NodeRecord],
        settings: &DiscoverySettings,
    ) -> Result<Vec<Liveness>, PluginFailure> {
        self.try_invoke(|pool| classify_on(pool, nodes, settings))
    }
}

impl PolicySlot<dyn Autoscaler> {
    /// The size every replica should have, within the settings' memory bounds.
    pub fn recommend(
        &self,
        window: &[MetricSample],
        current: &ReplicaSize,
        settings: &AutoscaleSettings,
    ) -> Recommendation {
        self.invoke(
            |pool| recommend_on(pool, window, current, settings),
            |native| native.recommend(window, current, settings),
        )
    }

    /// [`Self::recommend`], except that a failing call of the Wasm plugin is an error rather
    /// than the native built-in's answer: the coordinator then changes no size.
    pub fn recommend_strict(
        &self,
        window: &[MetricSample],
        current: &ReplicaSize,
        settings: &AutoscaleSettings,
    ) -> Result<Recommendation, PluginFailure> {
        self.invoke_strict(
            |pool| recommend_on(pool, window, current, settings),
            |native| native.recommend(window, current, settings),
        )
    }

    /// [`Self::recommend`] by the Wasm plugin alone.
    pub fn try_recommend(
        &self,
        window: &[MetricSample],
        current: &ReplicaSize,
        settings: &AutoscaleSettings,
    ) -> Result<Recommendation, PluginFailure> {
        self.try_invoke(|pool| recommend_on(pool, window, current, settings))
    }
}

pub(crate) fn route_on(pool: &InstancePool, request: &RouteRequest) -> Result<Vec<Option<u32>>, PluginFailure> {
    pool.call(|exports, store| exports.route(store, request), |routes| request.check(routes))
}

fn place_on(
    pool: &InstancePool,
    view: &ClusterView,
    items: &[PlacementItem],
) -> Result<Vec<Option<u32>>, PluginFailure> {
    pool.call(|exports, store| exports.place(store, view, items), |placed| view.check_placement(items, placed))
}

fn plan_on(
    pool: &InstancePool,
    view: &ClusterView,
    settings: &BalanceSettings,
) -> Result<Vec<SegmentMove>, PluginFailure> {
    pool.call(|exports, store| exports.plan(store, view, settings), |moves| view.check_plan(settings, moves))
}

fn classify_on(
    pool: &InstancePool,
    nodes: &[NodeRecord],
    settings: &DiscoverySettings,
) -> Result<Vec<Liveness>, PluginFailure> {
    pool.call(
        |exports, store| exports.classify(store, nodes, settings),
        |verdicts| match verdicts.len() == nodes.len() {
            true => Ok(()),
            false => Err(format!("returned {} verdicts for {} nodes", verdicts.len(), nodes.len())),
        },
    )
}

/// Longest `reason` kept from a recommendation; the rest is cut (it only goes to logs).
const REASON_MAX: usize = 1024;

fn recommend_on(
    pool: &InstancePool,
    window: &[MetricSample],
    current: &ReplicaSize,
    settings: &AutoscaleSettings,
) -> Result<Recommendation, PluginFailure> {
    let check = |r: &Recommendation| {
        let memory = r.size.memory_bytes;
        if memory < settings.min_memory_bytes || memory > settings.max_memory_bytes {
            return Err(format!(
                "recommended {memory} bytes of memory, outside the bounds {} ..= {}",
                settings.min_memory_bytes, settings.max_memory_bytes
            ));
        }
        if r.size.cpu_millis == 0 {
            return Err("recommended 0 CPU".into());
        }
        Ok(())
    };
    let mut recommendation = pool.call(|exports, store| exports.recommend(store, window, current, settings), check)?;
    if recommendation.reason.len() > REASON_MAX {
        let mut cut = REASON_MAX;
        while !recommendation.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        recommendation.reason.truncate(cut);
    }
    Ok(recommendation)
}

/// Runs the built-in sample inputs of `kind` through the plugin: every call must answer, in
/// time, within the memory cap, and validly.
pub(crate) fn self_test(kind: Kind, pool: &InstancePool) -> Result<(), PluginFailure> {
    match kind {
        Kind::Router => {
            for request in samples::route_requests() {
                route_on(pool, &request)?;
            }
        }
        Kind::Balancer => {
            let (view, items) = samples::cluster_view();
            place_on(pool, &view, &items)?;
            plan_on(pool, &view, &BalanceSettings::default())?;
        }
        Kind::Discovery => {
            let (nodes, settings) = samples::node_records();
            classify_on(pool, &nodes, &settings)?;
        }
        Kind::Autoscaler => {
            let (window, current, settings) = samples::metrics_window();
            recommend_on(pool, &window, &current, &settings)?;
        }
    }
    Ok(())
}
