//! The autoscaler (MISSION S3.3, S3.4, S3.8): a metrics window per role, and every
//! `autoscaling.interval` a size decision by the active autoscaler plugin, which the scaler
//! carries out make-before-break (`scaler.rs`).
//!
//! ```text
//!  every autoscaling.sample_interval, per scalable role (not while it is resizing):
//!    serving nodes' heartbeats ──▶ sample {cores busy per node (mean), memory in use (max),
//!                                          out-of-memory event?}  ──▶ KV autoscaling.window.<role>
//!  every autoscaling.interval, per role in autoscaling.roles (not while it is resizing):
//!    window (CPU in % of the current size) + current size + bounds ──▶ autoscaler plugin
//!      ──▶ failed / out-of-ratio answer: nothing changes ("failed", "refused")
//!      ──▶ same size: "keep";  smaller than an operator's size not yet measured a whole window: "held"
//!      ──▶ otherwise: KV scaling.size.<role> ──▶ scaler replaces the nodes ("resize")
//! ```
//!
//! Samples keep CPU as cores busy, not as a percentage, so that after a resize the samples
//! taken at the old size still say the right thing about the new one (the plugin sees them in
//! percent of the size it is asked about). An out-of-memory event is a query node refusing a
//! load beyond its budget (`NodeStatus::memory_refusals`) or the kernel killing a node at its
//! cgroup limit (`HostedNode::oom_kills`); its sample counts the node's memory as its whole
//! budget, since the workload wanted at least that.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use quiver_policy::autoscaler::{AutoscaleSettings, MetricSample, ReplicaSize};
use quiver_runtime::bus::now_ms;
use quiver_runtime::{Error, JsonBucket, Result};
use quiver_schemas::protocol::keys;
use quiver_schemas::{
    AutoscaleDecision, AutoscaleRequest, AutoscaleStatus, HostStatus, NodeSize, NodeState, Role, RoleAutoscale,
};
use serde::{Deserialize, Serialize};

use super::membership::Verdicts;
use super::scaler::SCALABLE;
use super::Coordinator;

/// Decisions kept for `api.autoscaling` (and persisted).
const DECISIONS_KEPT: usize = 256;

/// One sample of a role: `(at_ms, cores busy per node in thousandths, memory in use, oom)`.
/// A tuple, so a window of thousands of samples stays small in the metadata bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample(u64, u32, u64, bool);

/// A role's persisted window, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Window {
    samples: VecDeque<Sample>,
}

/// An operator's bounds on a role's memory (`quiver ctl autoscale`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Bounds {
    min_memory_bytes: u64,
    max_memory_bytes: u64,
}

/// The autoscaler's state inside the coordinator.
#[derive(Default)]
pub struct Autoscaler {
    windows: RefCell<BTreeMap<&'static str, Window>>,
    bounds: RefCell<BTreeMap<&'static str, Bounds>>,
    decisions: RefCell<VecDeque<AutoscaleDecision>>,
    /// Per node id: memory refusals seen in its last heartbeat.
    refusals_seen: RefCell<HashMap<String, u32>>,
    /// Per (host, process): OOM kills seen in the host's last heartbeat.
    kills_seen: RefCell<HashMap<(String, String), u32>>,
    /// When the last decision round ran.
    decided: std::cell::Cell<Option<std::time::Instant>>,
    /// Per role: whether it was being resized at the last sample, and when its last resize
    /// (or start) finished. A decision waits one `autoscaling.interval` after that, so that
    /// the window holds samples of the nodes of the new size at work.
    resizing: RefCell<BTreeMap<&'static str, (bool, Option<std::time::Instant>)>>,
}

impl Autoscaler {
    /// Reads the persisted windows, bounds and decisions.
    pub async fn load(meta: &JsonBucket) -> Result<Autoscaler> {
        let a = Autoscaler::default();
        for role in SCALABLE {
            if let Some(w) = meta.get::<Window>(&keys::autoscale_window(role)).await? {
                a.windows.borrow_mut().insert(role.as_str(), w);
            }
            if let Some(b) = meta.get::<Bounds>(&keys::autoscale_bounds(role)).await? {
                a.bounds.borrow_mut().insert(role.as_str(), b);
            }
        }
        if let Some(d) = meta.get::<VecDeque<AutoscaleDecision>>(keys::AUTOSCALE_DECISIONS).await? {
            *a.decisions.borrow_mut() = d;
        }
        Ok(a)
    }
}

/// Converts a size to the plugin's type.
fn replica(size: NodeSize) -> ReplicaSize {
    ReplicaSize { cpu_millis: size.cpu_millis, memory_bytes: size.memory_bytes }
}

impl Coordinator {
    /// The bounds in force for `role`: the operator's, else the configured ones.
    fn autoscale_bounds(&self, role: Role) -> Bounds {
        let config = &self.node.shared.config.autoscaling;
        self.autoscaler.bounds.borrow().get(role.as_str()).copied().unwrap_or(Bounds {
            min_memory_bytes: config.min_memory_mb << 20,
            max_memory_bytes: config.max_memory_mb << 20,
        })
    }

    fn autoscale_settings(&self, role: Role) -> AutoscaleSettings {
        let config = &self.node.shared.config;
        let b = self.autoscale_bounds(role);
        AutoscaleSettings {
            min_memory_bytes: b.min_memory_bytes,
            max_memory_bytes: b.max_memory_bytes,
            cpu_upper_percent: config.autoscaling.cpu_upper_percent,
            memory_headroom_percent: config.autoscaling.memory_headroom_percent,
            oom_headroom_percent: config.autoscaling.oom_headroom_percent,
            memory_per_cpu_bytes: config.scaling.memory_per_cpu_mb << 20,
        }
    }

    /// Whether the autoscaler sizes `role`.
    fn autoscaled(&self, role: Role) -> bool {
        let config = &self.node.shared.config.autoscaling;
        config.enabled && config.roles.iter().any(|r| Role::parse(r) == Some(role))
    }

    /// The size the autoscaler starts from: the role's, or the smallest allowed while unsized.
    fn current_size(&self, role: Role) -> NodeSize {
        let size = self.scaler.size_of(role);
        if !size.is_unsized() {
            return size;
        }
        let s = self.autoscale_settings(role);
        let min = s.min_memory_bytes;
        let millis = (u128::from(min) * 1000 / u128::from(s.memory_per_cpu_bytes.max(1))).min(u128::from(u32::MAX));
        NodeSize { cpu_millis: millis as u32, memory_bytes: min }
    }

    pub(super) async fn autoscale_loop(self: Rc<Self>) -> Result<()> {
        let every = self.node.shared.config.autoscaling.sample_interval;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.autoscale_once().await {
                tracing::warn!(error = %e, "autoscaler round failed; will retry");
            }
        }
    }

    /// One round: a sample per role; a decision per autoscaled role when one is due.
    async fn autoscale_once(&self) -> Result<()> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let hosts = self.node.shared.registry.hosts().await?;
        for role in SCALABLE {
            self.sample(role, &verdicts, &hosts).await?;
        }
        let config = &self.node.shared.config.autoscaling;
        let due = self.autoscaler.decided.get().is_none_or(|at| at.elapsed() >= config.interval);
        if config.enabled && due {
            self.autoscaler.decided.set(Some(std::time::Instant::now()));
            for role in SCALABLE.into_iter().filter(|&r| self.autoscaled(r)) {
                self.decide(role, &verdicts, &hosts).await?;
            }
        }
        Ok(())
    }

    /// Adds a sample of `role` to its window (and persists the window). No sample while the
    /// role has no serving node or is being resized (its nodes are then of two sizes).
    async fn sample(&self, role: Role, verdicts: &Verdicts, hosts: &[HostStatus]) -> Result<()> {
        let counts = self.role_counts(verdicts, role, hosts);
        let nodes: Vec<_> = verdicts
            .members(role)
            .alive
            .iter()
            .filter(|n| n.state == NodeState::Serving || n.state == NodeState::Starting)
            .cloned()
            .collect();
        // OOM events since the last sample: new memory refusals of a node, new kernel kills
        // of a process of this role. Counted even while resizing, so none is missed.
        let mut oom_budget = None;
        {
            let mut seen = self.autoscaler.refusals_seen.borrow_mut();
            let coordinator_started = self.node.started_ms;
            for n in &nodes {
                let before = match seen.get(&n.node_id) {
                    Some(&b) => b,
                    // A node first seen: its refusals count if it started after this
                    // coordinator (else they may be old news from before a restart).
                    None if n.started_ms >= coordinator_started => 0,
                    None => n.memory_refusals,
                };
                if n.memory_refusals > before {
                    oom_budget = Some(oom_budget.unwrap_or(0).max(n.mem_capacity));
                }
                seen.insert(n.node_id.clone(), n.memory_refusals);
            }
            seen.retain(|id, _| {
                verdicts.members(role).alive.iter().any(|n| &n.node_id == id) || !id.ends_with(role.as_str())
            });
        }
        {
            let mut seen = self.autoscaler.kills_seen.borrow_mut();
            for h in hosts {
                for p in h.nodes.iter().filter(|p| p.roles == [role]) {
                    let key = (h.host_id.clone(), p.node_id.clone());
                    let before = seen.insert(key, p.oom_kills).unwrap_or(0);
                    if p.oom_kills > before {
                        oom_budget = Some(oom_budget.unwrap_or(0).max(p.size.memory_bytes));
                    }
                }
            }
        }
        let serving: Vec<_> = counts.serving.iter().collect();
        let resizing = !counts.stale.is_empty() || !counts.starting.is_empty();
        {
            let mut states = self.autoscaler.resizing.borrow_mut();
            let state = states.entry(role.as_str()).or_insert((false, None));
            if state.0 && !resizing {
                state.1 = Some(std::time::Instant::now());
            }
            state.0 = resizing;
        }
        if serving.is_empty() || (resizing && oom_budget.is_none()) {
            return Ok(());
        }
        let busy = serving.iter().map(|n| f64::from(n.cpu_busy)).sum::<f64>() / serving.len() as f64;
        let memory = serving.iter().map(|n| n.mem_used).max().unwrap_or(0);
        let sample =
            Sample(now_ms(), (busy * 1000.0).round() as u32, memory.max(oom_budget.unwrap_or(0)), oom_budget.is_some());
        let window_ms = self.node.shared.config.autoscaling.window.as_millis() as u64;
        let window = {
            let mut windows = self.autoscaler.windows.borrow_mut();
            let w = windows.entry(role.as_str()).or_default();
            w.samples.push_back(sample);
            let cut = sample.0.saturating_sub(window_ms);
            while w.samples.front().is_some_and(|s| s.0 < cut) {
                w.samples.pop_front();
            }
            w.clone()
        };
        self.meta.put(&keys::autoscale_window(role), &window).await?;
        Ok(())
    }

    /// Asks the autoscaler plugin for `role`'s size and carries its answer out.
    async fn decide(&self, role: Role, verdicts: &Verdicts, hosts: &[HostStatus]) -> Result<()> {
        let counts = self.role_counts(verdicts, role, hosts);
        if !counts.stale.is_empty() || !counts.starting.is_empty() || counts.serving.is_empty() {
            // A resize (or start) under way: decide on what it leads to, later.
            return Ok(());
        }
        let interval = self.node.shared.config.autoscaling.interval;
        let just_resized = self.autoscaler.resizing.borrow().get(role.as_str()).and_then(|s| s.1);
        if just_resized.is_some_and(|at| at.elapsed() < interval) {
            return Ok(());
        }
        let current = self.current_size(role);
        let settings = self.autoscale_settings(role);
        let window = self.plugin_window(role, current);
        let slot = &self.policies.autoscaler;
        let source = slot.source();
        let plugin = format!("{}@{}", source.name, source.version);
        let actual = self.scaler.size_of(role);
        let mut decision = AutoscaleDecision {
            at_ms: now_ms(),
            role,
            from: actual,
            to: actual,
            reason: String::new(),
            plugin,
            action: String::new(),
        };
        match slot.recommend_strict(&window, &replica(current), &settings) {
            Err(failure) => {
                decision.action = "failed".into();
                decision.reason = format!("the autoscaler failed ({}): the size stays", failure.detail);
            }
            Ok(r) => {
                let to = NodeSize { cpu_millis: r.size.cpu_millis, memory_bytes: r.size.memory_bytes };
                decision.to = to;
                decision.reason = r.reason;
                let per_cpu = settings.memory_per_cpu_bytes;
                let ratio_memory = u128::from(to.cpu_millis) * u128::from(per_cpu) / 1000;
                let held_until = self.held_until(role);
                if ratio_memory.abs_diff(u128::from(to.memory_bytes)) > u128::from(per_cpu / 1000).max(1 << 20) {
                    decision.action = "refused".into();
                    decision.reason.push_str(&format!(
                        "; refused: {to} breaks the {} MiB per CPU of scaling.memory_per_cpu_mb, the size stays",
                        per_cpu >> 20
                    ));
                    decision.to = actual;
                } else if to == actual {
                    decision.action = "keep".into();
                } else if to.memory_bytes < current.memory_bytes && held_until > decision.at_ms {
                    decision.action = "held".into();
                    decision.reason.push_str(&format!(
                        "; held: an operator asked for {current}, kept until a whole window has been measured at it \
                         ({} s from now)",
                        (held_until - decision.at_ms) / 1000
                    ));
                    decision.to = actual;
                } else {
                    decision.action = "resize".into();
                    self.scaler.set_size(&self.meta, role, to, false).await?;
                }
            }
        }
        tracing::info!(
            role = role.as_str(),
            action = %decision.action,
            from = %decision.from,
            to = %decision.to,
            plugin = %decision.plugin,
            reason = %decision.reason,
            "autoscaler"
        );
        metrics::counter!("quiver_autoscaler_decisions_total", "role" => role.as_str(), "action" => decision.action.clone())
            .increment(1);
        self.remember(decision).await
    }

    /// When an operator's size of `role` may be shrunk by the autoscaler (0: not held).
    fn held_until(&self, role: Role) -> u64 {
        let window_ms = self.node.shared.config.autoscaling.window.as_millis() as u64;
        match self.scaler.size_setting(role) {
            Some(s) if s.by_operator => s.requested_ms.saturating_add(window_ms),
            _ => 0,
        }
    }

    /// The window as the plugin sees it: CPU in percent of `size`.
    fn plugin_window(&self, role: Role, size: NodeSize) -> Vec<MetricSample> {
        let windows = self.autoscaler.windows.borrow();
        let cpu = f64::from(size.cpu_millis.max(1));
        windows
            .get(role.as_str())
            .map(|w| {
                w.samples
                    .iter()
                    .map(|s| MetricSample {
                        at_ms: s.0,
                        cpu_percent: f64::from(s.1) * 100.0 / cpu,
                        memory_used: s.2,
                        oom: s.3,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lists and persists a decision. A decision that repeats the role's last one (the same
    /// action and size) replaces it, so a steady size does not push the history out.
    async fn remember(&self, decision: AutoscaleDecision) -> Result<()> {
        let list = {
            let mut decisions = self.autoscaler.decisions.borrow_mut();
            let repeat = decisions.iter().rposition(|d| d.role == decision.role).filter(|&i| {
                let d = &decisions[i];
                d.action == decision.action && d.to == decision.to && d.from == decision.from
            });
            match repeat {
                Some(i) if decision.action != "resize" => decisions[i] = decision,
                _ => decisions.push_back(decision),
            }
            while decisions.len() > DECISIONS_KEPT {
                decisions.pop_front();
            }
            decisions.clone()
        };
        self.meta.put(keys::AUTOSCALE_DECISIONS, &list).await?;
        Ok(())
    }

    /// `api.autoscale`: sets (or resets) a role's bounds.
    pub(super) async fn autoscale(&self, req: AutoscaleRequest) -> Result<AutoscaleStatus> {
        let role = match Role::parse(req.role.trim()) {
            Some(r) if SCALABLE.contains(&r) => r,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown role {:?}: the roles that autoscale are proxy, datanode, indexnode and querynode",
                    req.role
                )))
            }
        };
        let meta = &self.meta;
        if req.reset {
            if req.min_memory_bytes != 0 || req.max_memory_bytes != 0 {
                return Err(Error::InvalidArgument(
                    "reset goes back to the configured bounds: give no bounds with it".into(),
                ));
            }
            meta.delete(&keys::autoscale_bounds(role)).await?;
            self.autoscaler.bounds.borrow_mut().remove(role.as_str());
            return self.autoscaling_status().await;
        }
        if req.min_memory_bytes == 0 && req.max_memory_bytes == 0 {
            return Err(Error::InvalidArgument("give a min memory, a max memory, or both (or reset)".into()));
        }
        let now = self.autoscale_bounds(role);
        let pick = |v: u64, old: u64| if v == 0 { old } else { v };
        let bounds = Bounds {
            min_memory_bytes: pick(req.min_memory_bytes, now.min_memory_bytes),
            max_memory_bytes: pick(req.max_memory_bytes, now.max_memory_bytes),
        };
        if bounds.min_memory_bytes > bounds.max_memory_bytes {
            return Err(Error::InvalidArgument(format!(
                "min memory {} MiB is above max memory {} MiB (min = max pins the size)",
                bounds.min_memory_bytes >> 20,
                bounds.max_memory_bytes >> 20
            )));
        }
        if bounds.min_memory_bytes < 64 << 20 || bounds.max_memory_bytes > 1 << 50 {
            return Err(Error::InvalidArgument("memory bounds must lie between 64 MiB and 1 PiB".into()));
        }
        meta.put(&keys::autoscale_bounds(role), &bounds).await?;
        self.autoscaler.bounds.borrow_mut().insert(role.as_str(), bounds);
        tracing::info!(
            role = role.as_str(),
            min_mib = bounds.min_memory_bytes >> 20,
            max_mib = bounds.max_memory_bytes >> 20,
            "autoscaling bounds set"
        );
        self.autoscaling_status().await
    }

    /// `api.autoscaling`: settings, every role's window, the decisions.
    pub(super) async fn autoscaling_status(&self) -> Result<AutoscaleStatus> {
        let config = &self.node.shared.config.autoscaling;
        let roles = SCALABLE
            .into_iter()
            .map(|role| {
                let b = self.autoscale_bounds(role);
                let size = self.scaler.size_of(role);
                let window = self.plugin_window(role, self.current_size(role));
                RoleAutoscale {
                    role,
                    enabled: self.autoscaled(role) && b.min_memory_bytes < b.max_memory_bytes,
                    min_memory_bytes: b.min_memory_bytes,
                    max_memory_bytes: b.max_memory_bytes,
                    size,
                    samples: window.len() as u32,
                    peak_cpu_percent: window.iter().map(|s| s.cpu_percent).fold(0.0, f64::max),
                    peak_memory_bytes: window.iter().map(|s| s.memory_used).max().unwrap_or(0),
                    ooms: window.iter().filter(|s| s.oom).count() as u32,
                    held_until_ms: Some(self.held_until(role)).filter(|&t| t > now_ms()).unwrap_or(0),
                }
            })
            .collect();
        Ok(AutoscaleStatus {
            enabled: config.enabled,
            interval_ms: config.interval.as_millis() as u64,
            window_ms: config.window.as_millis() as u64,
            roles,
            decisions: self.autoscaler.decisions.borrow().iter().cloned().collect(),
        })
    }
}
