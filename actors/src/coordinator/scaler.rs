//! The scaler (MISSION S0.1–S0.4, S3.1, S3.2): the wanted number of nodes per role, and the
//! loop that makes the cluster match it by asking host agents to start and stop node
//! processes.
//!
//! ```text
//!  api.scale (ctl scale, PATCH /v1/roles/{role}) ──▶ KV scaling.desired.<role>   (the last request wins)
//!
//!  every scaling.interval, per role:
//!   serving + starting < wanted ──▶ choose a host ──▶ host.<h>.start_node ──▶ starting
//!                                      starting ──registered and serving──▶ serving (counted only now)
//!                                      starting ──not serving within scaling.start_timeout──▶ stopped, replaced
//!   serving > wanted, cluster fully served, nothing starting, draining or being removed
//!     ──▶ choose the node with the least to move ──▶ host.<h>.stop_node (SIGTERM: the node drains)
//!     ──▶ removing ──deregistered and exited──▶ settling
//!     ──every shard owned and led, every segment served in every replica group──▶ done: next
//! ```
//!
//! One node is removed at a time, cluster-wide (S0.4). Requests only change the wanted count,
//! so repeated or concurrent requests need no coordination: whatever the loop is doing, it next
//! compares the cluster with the latest count (S3.2). Everything the scaler does is an event
//! (`api.events`, `quiver ctl events`) and a log line.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use quiver_runtime::bus::{now_ms, CallOptions};
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::{host, keys};
use quiver_schemas::{
    ClusterEvents, HostStatus, NodeSize, NodeState, NodeStatus, Role, RoleScaling, ScaleReply, ScaleRequest,
    ScalingEvent, ScalingStatus, SegmentChangeInfo, SegmentState, StartNode, StopNode,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::membership::Verdicts;
use super::{Catalog, Coordinator};

/// The roles the scaler manages (S0.1); the coordinator is a singleton (S0.2).
pub const SCALABLE: [Role; 4] = [Role::Proxy, Role::DataNode, Role::IndexNode, Role::QueryNode];

/// Events kept for `api.events`.
const EVENTS_KEPT: usize = 256;

/// How long after a query node starts serving the scaler keeps asking the balancer for moves
/// (instead of waiting for `[balance] interval`), so a new node gets its share soon.
const JOIN_BALANCE_WINDOW: Duration = Duration::from_secs(60);

/// Least time between two of those balance rounds.
const JOIN_BALANCE_EVERY: Duration = Duration::from_secs(2);

/// The persisted wanted count of a role (`keys::desired_replicas`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Desired {
    replicas: u32,
    requested_ms: u64,
}

/// The persisted size of a role's nodes (`keys::role_size`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct SizeSetting {
    pub size: NodeSize,
    pub requested_ms: u64,
    /// Asked for by an operator (`ctl scale --memory`), not by the autoscaler: the autoscaler
    /// does not shrink it before a whole metrics window has been measured at it (S3.8).
    pub by_operator: bool,
}

/// Smallest node size: below this a node cannot hold its own runtime.
const MIN_NODE_MEMORY: u64 = 64 << 20;

/// A node process the scaler asked a host to start, until it serves.
#[derive(Debug, Clone)]
struct Starting {
    role: Role,
    host: String,
    since: Instant,
    size: NodeSize,
}

/// The one node being removed.
#[derive(Debug, Clone)]
struct Removal {
    role: Role,
    /// The process (host agent's node id).
    process: String,
    /// Its role's registry id (`<process>-<role>`).
    node_id: String,
    host: String,
    since: Instant,
    /// When it had deregistered and exited; from then on the cluster settles.
    gone: Option<Instant>,
    /// A node of another size than its role's, replaced by a resize.
    resized: bool,
}

/// The scaler's state inside the coordinator.
#[derive(Default)]
pub struct Scaler {
    desired: RefCell<BTreeMap<&'static str, u32>>,
    sizes: RefCell<BTreeMap<&'static str, SizeSetting>>,
    starting: RefCell<BTreeMap<String, Starting>>,
    removal: RefCell<Option<Removal>>,
    /// What the scaler is doing per role, for status.
    activity: RefCell<BTreeMap<&'static str, String>>,
    events: RefCell<VecDeque<ScalingEvent>>,
    handoffs: RefCell<VecDeque<SegmentChangeInfo>>,
    /// Query nodes that serve, as of the last round, and when each started serving.
    query_serving: RefCell<BTreeMap<String, Instant>>,
    last_join_balance: Cell<Option<Instant>>,
    /// Scale requests one at a time, so the persisted and the in-memory count are the same
    /// request's (the last one wins in both).
    requests: tokio::sync::Mutex<()>,
    /// Wakes the loop at once (a scale request).
    pub wake: Notify,
}

/// The registry id of `process`'s `role`.
pub(super) fn registry_id(process: &str, role: Role) -> String {
    format!("{process}-{}", role.as_str())
}

/// The process of `role`'s registry id `node_id` (the inverse of [`registry_id`]).
pub(super) fn process_id(node_id: &str, role: Role) -> &str {
    node_id.strip_suffix(&format!("-{}", role.as_str())).unwrap_or(node_id)
}

/// The host agent's process of node `n` of `role`, if its host agent lists it.
fn host_process<'h>(n: &NodeStatus, role: Role, hosts: &'h [HostStatus]) -> Option<&'h quiver_schemas::HostedNode> {
    let process = process_id(&n.node_id, role);
    hosts.iter().find(|h| h.host_id == n.host_agent)?.nodes.iter().find(|p| p.node_id == process)
}

/// Short prefix of the processes the scaler names (`qn-7`).
fn short(role: Role) -> &'static str {
    match role {
        Role::Coordinator => "co",
        Role::Proxy => "px",
        Role::DataNode => "dn",
        Role::IndexNode => "ix",
        Role::QueryNode => "qn",
    }
}

impl Scaler {
    /// Reads the persisted wanted counts.
    pub async fn load(meta: &quiver_runtime::JsonBucket) -> Result<Scaler> {
        let scaler = Scaler::default();
        for role in SCALABLE {
            if let Some(d) = meta.get::<Desired>(&keys::desired_replicas(role)).await? {
                scaler.desired.borrow_mut().insert(role.as_str(), d.replicas);
            }
            if let Some(s) = meta.get::<SizeSetting>(&keys::role_size(role)).await? {
                scaler.sizes.borrow_mut().insert(role.as_str(), s);
            }
        }
        Ok(scaler)
    }

    fn record(&self, role: Role, node_id: &str, action: &'static str, detail: String) {
        tracing::info!(role = role.as_str(), node = node_id, action, detail = %detail, "scaler");
        metrics::counter!("quiver_scaling_actions_total", "role" => role.as_str(), "action" => action).increment(1);
        let mut events = self.events.borrow_mut();
        events.push_back(ScalingEvent {
            at_ms: now_ms(),
            role,
            node_id: node_id.to_string(),
            action: action.to_string(),
            detail,
        });
        while events.len() > EVENTS_KEPT {
            events.pop_front();
        }
    }

    /// Remembers a hand-off (S1.4) for `api.events`.
    pub fn record_handoff(&self, change: SegmentChangeInfo) {
        let mut handoffs = self.handoffs.borrow_mut();
        handoffs.push_back(change);
        while handoffs.len() > EVENTS_KEPT {
            handoffs.pop_front();
        }
    }

    /// `node` confirmed a load of `collection` sent at `sent_ms`: it holds nothing else of it
    /// any more, so hand-offs away from it announced before then are complete.
    pub fn handoffs_released(&self, node: &str, collection: u64, sent_ms: u64) {
        let now = now_ms();
        for h in self.handoffs.borrow_mut().iter_mut() {
            if h.released_ms == 0 && h.offline_node_id == node && h.collection == collection && h.at_ms <= sent_ms {
                h.released_ms = now;
            }
        }
    }

    pub fn events(&self) -> ClusterEvents {
        ClusterEvents {
            handoffs: self.handoffs.borrow().iter().cloned().collect(),
            scaling: self.events.borrow().iter().cloned().collect(),
        }
    }

    fn set_activity(&self, role: Role, text: impl Into<String>) {
        self.activity.borrow_mut().insert(role.as_str(), text.into());
    }

    /// The size the nodes of `role` should have, if one was set.
    pub(super) fn size_setting(&self, role: Role) -> Option<SizeSetting> {
        self.sizes.borrow().get(role.as_str()).copied()
    }

    /// The size the nodes of `role` should have ([`NodeSize::UNSIZED`] if none was set).
    pub(super) fn size_of(&self, role: Role) -> NodeSize {
        self.size_setting(role).map_or(NodeSize::UNSIZED, |s| s.size)
    }

    /// Persists a new size for `role` (the scaler then replaces its nodes make-before-break);
    /// returns the size before.
    pub(super) async fn set_size(
        &self,
        meta: &quiver_runtime::JsonBucket,
        role: Role,
        size: NodeSize,
        by_operator: bool,
    ) -> Result<NodeSize> {
        let setting = SizeSetting { size, requested_ms: now_ms(), by_operator };
        meta.put(&keys::role_size(role), &setting).await?;
        let before = self.sizes.borrow_mut().insert(role.as_str(), setting).map_or(NodeSize::UNSIZED, |s| s.size);
        if before != size {
            let who = if by_operator { "requested" } else { "autoscaled" };
            self.record(role, "", who, format!("size {before} → {size}"));
            self.wake.notify_one();
        }
        Ok(before)
    }

    /// Whether `node_id` is the node being removed (its hand-offs are a scale-in).
    pub fn removing(&self, node_id: &str) -> bool {
        self.removal.borrow().as_ref().is_some_and(|r| r.node_id == node_id)
    }
}

/// Nodes of one role, by what they are doing.
pub(super) struct Counts {
    pub serving: Vec<NodeStatus>,
    /// Registered but not serving yet, or asked for and not registered yet.
    pub starting: BTreeSet<String>,
    pub draining: u32,
    /// Serving nodes of another size than the role's, which the scaler replaces
    /// (make-before-break): their registry ids.
    pub stale: BTreeSet<String>,
}

impl Counts {
    /// Serving nodes of the role's size (or that cannot be resized).
    pub fn fresh(&self) -> u32 {
        (self.serving.len() - self.stale.len()) as u32
    }
}

/// The process of a serving node that the scaler can stop and replace: one that runs this one
/// role under a host agent. Nodes started by hand, or sharing a process with other roles, are
/// counted but never stopped (nor resized).
fn hosted_process<'h>(n: &NodeStatus, role: Role, hosts: &'h [HostStatus]) -> Option<&'h quiver_schemas::HostedNode> {
    host_process(n, role, hosts).filter(|p| p.roles == [role] && !p.stopping)
}

fn counts(
    verdicts: &Verdicts,
    role: Role,
    starting: &BTreeMap<String, Starting>,
    hosts: &[HostStatus],
    size: NodeSize,
) -> Counts {
    let members = verdicts.members(role);
    // A node whose host agent is stopping it is on its way out, whatever its last heartbeat said.
    let stopping = |n: &NodeStatus| host_process(n, role, hosts).is_some_and(|p| p.stopping);
    let serving: Vec<NodeStatus> = members
        .alive
        .iter()
        .filter(|n| n.state == NodeState::Serving && !orphaned(n, role, hosts) && !stopping(n))
        .cloned()
        .collect();
    let leaving = members.alive.iter().filter(|n| n.state == NodeState::Serving && stopping(n)).count() as u32;
    let mut pending: BTreeSet<String> =
        members.alive.iter().filter(|n| n.state == NodeState::Starting).map(|n| n.node_id.clone()).collect();
    for process in starting.iter().filter(|(_, s)| s.role == role).map(|(p, _)| p) {
        let id = registry_id(process, role);
        if !serving.iter().any(|n| n.node_id == id) {
            pending.insert(id);
        }
    }
    let stale = serving
        .iter()
        .filter(|n| hosted_process(n, role, hosts).is_some_and(|p| p.size != size))
        .map(|n| n.node_id.clone())
        .collect();
    Counts { serving, starting: pending, draining: members.draining.len() as u32 + leaving, stale }
}

/// Whether `node` was started by a host agent that runs and no longer lists its process: the
/// process died with an earlier incarnation of the agent, and its registry entry has not
/// expired yet. It does not count as serving (nor as a node to remove).
fn orphaned(node: &NodeStatus, role: Role, hosts: &[HostStatus]) -> bool {
    let Some(host) = hosts.iter().find(|h| !node.host_agent.is_empty() && h.host_id == node.host_agent) else {
        return false;
    };
    let process = process_id(&node.node_id, role);
    !host.nodes.iter().any(|p| p.node_id == process && p.pid != 0) && host.started_ms > node.started_ms
}

impl Coordinator {
    /// `api.scale`: validates and persists a role's wanted node count; the loop converges on it.
    pub(super) async fn scale(&self, req: ScaleRequest) -> Result<ScaleReply> {
        let max = self.node.shared.config.scaling.max_replicas;
        let role = match Role::parse(req.role.trim()) {
            Some(Role::Coordinator) => {
                return Err(Error::InvalidArgument(
                    "the coordinator cannot be scaled: a cluster runs exactly one active coordinator (MISSION \
                     S0.2), which hands out timestamps and ids and owns placement; scale proxy, datanode, \
                     indexnode or querynode"
                        .into(),
                ))
            }
            Some(role) => role,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "unknown role {:?}: the roles that scale are proxy, datanode, indexnode and querynode",
                    req.role
                )))
            }
        };
        let per_cpu = self.node.shared.config.scaling.memory_per_cpu_mb << 20;
        let size = match req.size.is_unsized() {
            true => None,
            false => Some(normalize_size(req.size, per_cpu)?),
        };
        if req.replicas == 0 && size.is_none() {
            return Err(Error::InvalidArgument(format!(
                "replicas must be at least 1 (a cluster needs a {}; stop the whole cluster to run none), or give \
                 a size (CPU or memory) to resize the nodes and keep their count",
                role.as_str()
            )));
        }
        if req.replicas > max {
            return Err(Error::InvalidArgument(format!(
                "replicas {} is more than the most a role can have, scaling.max_replicas = {max}",
                req.replicas
            )));
        }
        if role == Role::QueryNode && req.replicas > 0 {
            let catalog = self.catalog.lock().await;
            let most = catalog
                .collections
                .iter()
                .filter_map(|(name, info)| Some((name, catalog.layouts.get(&info.id)?)))
                .filter(|(_, l)| !l.released)
                .max_by_key(|(_, l)| l.wanted_replicas());
            if let Some((name, layout)) = most.filter(|(_, l)| l.wanted_replicas() > req.replicas as usize) {
                return Err(Error::InvalidArgument(format!(
                    "{} query nodes cannot serve collection {name:?}, loaded with {} in-memory replicas on                      disjoint nodes; load it with fewer replicas (or release it) first",
                    req.replicas,
                    layout.wanted_replicas()
                )));
            }
        }
        let _one_at_a_time = self.scaler.requests.lock().await;
        let meta = &self.meta;
        let previous = self.scaler.desired.borrow().get(role.as_str()).copied().unwrap_or(0);
        // A resize alone keeps the count; a role never scaled keeps the nodes it runs.
        let replicas = match req.replicas {
            0 if previous > 0 => previous,
            0 => {
                let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
                let starting = self.scaler.starting.borrow().clone();
                let hosts = self.node.shared.registry.hosts().await?;
                (counts(&verdicts, role, &starting, &hosts, NodeSize::UNSIZED).serving.len() as u32).max(1)
            }
            n => n,
        };
        if replicas != previous {
            meta.put(&keys::desired_replicas(role), &Desired { replicas, requested_ms: now_ms() }).await?;
            self.scaler.desired.borrow_mut().insert(role.as_str(), replicas);
        }
        let previous_size = self.scaler.size_of(role);
        let mut warnings = Vec::new();
        if let Some(size) = size {
            self.scaler.set_size(meta, role, size, true).await?;
            let hosts = self.node.shared.registry.hosts().await.unwrap_or_default();
            if !hosts.is_empty() && !hosts.iter().any(|h| fits(h, size)) {
                let biggest =
                    hosts.iter().map(|h| format!("{} ({} CPUs, {} MiB)", h.host_id, h.cpus, h.mem_total >> 20));
                warnings.push(format!(
                    "no host agent can hold a node of {size}: {}; nodes of this size start once one can, the \
                     current ones keep serving until then",
                    biggest.collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if replicas == 1 {
            warnings.push(format!(
                "one {role}: while that node restarts or fails, nothing takes over its work (run at least 2 \
                 for availability)",
                role = role.as_str()
            ));
        }
        match self.node.shared.registry.hosts().await {
            Ok(hosts) if hosts.is_empty() => warnings.push(
                "no host agent is registered, so no node can be started or stopped until one runs \
                 (`quiver host`, or `quiver cluster up`)"
                    .into(),
            ),
            _ => {}
        }
        if req.replicas > 0 {
            let before = if previous == 0 { "(not set)".to_string() } else { previous.to_string() };
            self.scaler.record(role, "", "requested", format!("{before} → {replicas} {}s", role.as_str()));
        }
        self.scaler.wake.notify_one();
        Ok(ScaleReply {
            role,
            replicas,
            previous,
            warning: warnings.join("; "),
            size: self.scaler.size_of(role),
            previous_size,
        })
    }

    /// Lists a scaling step that is not about one node (idling, waking).
    pub(super) fn record_scaling(&self, role: Role, action: &'static str, detail: String) {
        self.scaler.record(role, "", action, detail);
    }

    /// The wanted node count of `role` (0: none set).
    pub(super) fn wanted_count(&self, role: Role) -> u32 {
        self.scaler.desired.borrow().get(role.as_str()).copied().unwrap_or(0)
    }

    /// Sets `role`'s wanted count to `serving` if none was set, so that what runs now comes
    /// back after idling.
    pub(super) async fn keep_wanted_count(&self, role: Role, serving: u32) -> Result<()> {
        if self.wanted_count(role) > 0 || serving == 0 {
            return Ok(());
        }
        let _one_at_a_time = self.scaler.requests.lock().await;
        let d = Desired { replicas: serving, requested_ms: now_ms() };
        self.meta.put(&keys::desired_replicas(role), &d).await?;
        self.scaler.desired.borrow_mut().insert(role.as_str(), serving);
        Ok(())
    }

    /// `role`'s nodes by what they are doing, as the scaler sees them now.
    pub(super) fn role_counts(&self, verdicts: &Verdicts, role: Role, hosts: &[HostStatus]) -> Counts {
        let starting = self.scaler.starting.borrow().clone();
        counts(verdicts, role, &starting, hosts, self.scaler.size_of(role))
    }

    /// `api.scaling`: every scalable role's wanted and actual count, and the host agents.
    pub(super) async fn scaling_status(&self) -> Result<ScalingStatus> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let hosts = self.node.shared.registry.hosts().await?;
        let starting = self.scaler.starting.borrow().clone();
        let roles = SCALABLE
            .iter()
            .map(|&role| {
                let size = self.scaler.size_of(role);
                let c = counts(&verdicts, role, &starting, &hosts, size);
                let desired = self.scaler.desired.borrow().get(role.as_str()).copied().unwrap_or(0);
                let removing = self.scaler.removal.borrow().as_ref().is_some_and(|r| r.role == role);
                let serving = c.serving.len() as u32;
                let resizing = c.stale.len() as u32;
                RoleScaling {
                    size,
                    resizing,
                    role,
                    desired,
                    serving,
                    starting: c.starting.len() as u32,
                    draining: c.draining,
                    converged: (desired == 0 || serving == desired)
                        && c.starting.is_empty()
                        && c.draining == 0
                        && resizing == 0
                        && !removing,
                    activity: match self.scaler.activity.borrow().get(role.as_str()) {
                        // Not stale from the last step: the loop updates it a round later.
                        _ if desired > 0
                            && serving == desired
                            && c.starting.is_empty()
                            && c.draining == 0
                            && resizing == 0
                            && !removing =>
                        {
                            format!("{serving} of {desired} serve")
                        }
                        Some(a) => a.clone(),
                        None => String::new(),
                    },
                }
            })
            .collect();
        Ok(ScalingStatus { roles, hosts })
    }

    pub(super) async fn scaler_loop(self: Rc<Self>) -> Result<()> {
        let interval = self.node.shared.config.scaling.interval;
        loop {
            tokio::select! {
                _ = self.scaler.wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.scale_once().await {
                tracing::warn!(error = %e, "scaler round failed; will retry");
            }
        }
    }

    /// One round: follow starting nodes and the removal, then start or remove per role.
    async fn scale_once(self: &Rc<Self>) -> Result<()> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        let hosts = self.node.shared.registry.hosts().await?;
        let registered: BTreeSet<String> =
            self.node.shared.registry.nodes().await?.into_iter().map(|n| n.node_id).collect();
        self.follow_starting(&verdicts, &hosts).await;
        self.follow_query_joins(&verdicts).await;
        let removal_done = self.follow_removal(&registered, &hosts).await;
        let desired = self.scaler.desired.borrow().clone();
        for role in SCALABLE {
            let Some(&want) = desired.get(role.as_str()) else { continue };
            if self.idler.idle() && super::idling::COMPUTE.contains(&role) {
                self.scaler.set_activity(role, "idle: stopped until the next request wakes the cluster");
                continue;
            }
            let size = self.scaler.size_of(role);
            // Starts of another size than wanted now are no use: a later request changed it.
            self.cancel_resized_starts(role, size).await;
            let starting = self.scaler.starting.borrow().clone();
            let c = counts(&verdicts, role, &starting, &hosts, size);
            let (serving, pending, fresh) = (c.serving.len() as u32, c.starting.len() as u32, c.fresh());
            export_scaling(role, want, serving, pending, c.draining, size);
            // Make-before-break (S3.5): nodes of the wanted size are started while those of
            // another size keep serving; only when `want` of the new size serve are the old
            // ones drained, one at a time, like a scale-in.
            if fresh + pending < want {
                let count = want - fresh - pending;
                let span = tracing::debug_span!("scaling_step", role = role.as_str(), action = "start", count);
                self.start_nodes(role, count, size, &hosts).instrument(span).await?;
                if !c.stale.is_empty() {
                    self.scaler.set_activity(
                        role,
                        format!(
                            "resizing to {size}: {fresh} of {want} serve at the new size, {pending} starting, {} of \
                             another size serve until then",
                            c.stale.len()
                        ),
                    );
                }
            } else if fresh + pending > want && pending > 0 {
                self.cancel_starts(role, fresh + pending - want).await;
            } else if serving > want {
                if !removal_done || self.scaler.removal.borrow().is_some() {
                    continue;
                }
                // A node of the old size goes as soon as `want` of the new size serve and the
                // previous one has exited: its drain hands its work to them before it exits,
                // and it may be what keeps the cluster from settling (a node too small to load
                // its segments). A node removed to scale in waits until the cluster is fully
                // served, so that nothing is lost with it.
                let resize = !c.stale.is_empty() && c.draining == 0;
                if let Some(why) = self.not_settled(&verdicts).await.filter(|_| !resize) {
                    self.scaler.set_activity(role, format!("{serving} serve, {want} wanted: waiting until {why}"));
                    continue;
                }
                let span = tracing::debug_span!("scaling_step", role = role.as_str(), action = "remove", count = 1);
                self.remove_one(role, &c.serving, &c.stale, &hosts).instrument(span).await;
            } else if c.draining == 0 && pending == 0 {
                self.scaler.set_activity(role, format!("{serving} of {want} serve"));
            }
        }
        Ok(())
    }

    /// Drops starting nodes that serve now (they count from here on) or whose host is gone,
    /// and stops those that did not serve in time (they are replaced by the next round).
    async fn follow_starting(&self, verdicts: &Verdicts, hosts: &[HostStatus]) {
        let timeout = self.node.shared.config.scaling.start_timeout;
        let starting = self.scaler.starting.borrow().clone();
        for (process, s) in starting {
            let id = registry_id(&process, s.role);
            let serves =
                verdicts.members(s.role).alive.iter().any(|n| n.node_id == id && n.state == NodeState::Serving);
            if serves {
                self.scaler.starting.borrow_mut().remove(&process);
                self.scaler.record(
                    s.role,
                    &id,
                    "serving",
                    format!("on host {} after {:.1} s", s.host, s.since.elapsed().as_secs_f32()),
                );
            } else if !hosts.iter().any(|h| h.host_id == s.host) {
                self.scaler.starting.borrow_mut().remove(&process);
                self.scaler.record(s.role, &id, "lost", format!("host {} stopped answering while it started", s.host));
            } else if s.since.elapsed() > timeout {
                self.scaler.starting.borrow_mut().remove(&process);
                self.scaler.record(
                    s.role,
                    &id,
                    "start-timeout",
                    format!("did not serve within scaling.start_timeout ({timeout:?}); stopping it"),
                );
                self.stop_process(&s.host, &process).await;
            }
        }
    }

    /// While query nodes have joined recently, asks the balancer for moves every few seconds
    /// rather than every `[balance] interval`, so a new node soon serves its share (S0.3).
    async fn follow_query_joins(&self, verdicts: &Verdicts) {
        let now = Instant::now();
        let serving: Vec<String> = verdicts
            .members(Role::QueryNode)
            .alive
            .iter()
            .filter(|n| n.state == NodeState::Serving)
            .map(|n| n.node_id.clone())
            .collect();
        let recent = {
            let mut known = self.scaler.query_serving.borrow_mut();
            let first_round = known.is_empty();
            known.retain(|id, _| serving.contains(id));
            for id in &serving {
                // Nodes present when the coordinator started are not "new".
                let since = if first_round { now - JOIN_BALANCE_WINDOW } else { now };
                known.entry(id.clone()).or_insert(since);
            }
            known.values().any(|&at| now.duration_since(at) < JOIN_BALANCE_WINDOW)
        };
        let due = self.scaler.last_join_balance.get().is_none_or(|at| now.duration_since(at) >= JOIN_BALANCE_EVERY);
        if recent && due {
            self.scaler.last_join_balance.set(Some(now));
            match self.balance_once().await {
                Ok(moves) if !moves.is_empty() => self.reconcile.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "balance round for a new query node failed"),
            }
        }
    }

    /// Follows the node being removed; true when no removal is in progress (any more).
    async fn follow_removal(&self, registered: &BTreeSet<String>, hosts: &[HostStatus]) -> bool {
        let Some(mut removal) = self.scaler.removal.borrow().clone() else { return true };
        if removal.gone.is_none() {
            let running = hosts
                .iter()
                .filter(|h| h.host_id == removal.host)
                .flat_map(|h| &h.nodes)
                .any(|n| n.node_id == removal.process && n.pid != 0);
            if registered.contains(&removal.node_id) || running {
                self.scaler.set_activity(
                    removal.role,
                    format!("draining {} ({:.0} s)", removal.node_id, removal.since.elapsed().as_secs_f32()),
                );
                return false;
            }
            removal.gone = Some(Instant::now());
            self.scaler.record(
                removal.role,
                &removal.node_id,
                "stopped",
                format!("drained and exited after {:.1} s", removal.since.elapsed().as_secs_f32()),
            );
            *self.scaler.removal.borrow_mut() = Some(removal.clone());
            self.reconcile.notify_one();
            if removal.resized {
                // Its work was handed over by its drain; the next node of the old size may go,
                // from the next round on (this round's view of the members still has this one).
                *self.scaler.removal.borrow_mut() = None;
                return false;
            }
        }
        let verdicts = match self.membership.refresh(&self.node, &self.policies.discovery).await {
            Ok(v) => v,
            Err(_) => return false,
        };
        if let Some(why) = self.not_settled(&verdicts).await {
            self.scaler.set_activity(removal.role, format!("{} removed; waiting until {why}", removal.node_id));
            return false;
        }
        self.scaler.record(
            removal.role,
            &removal.node_id,
            "removed",
            format!("cluster fully served again {:.1} s after the drain began", removal.since.elapsed().as_secs_f32()),
        );
        *self.scaler.removal.borrow_mut() = None;
        true
    }

    /// Why the cluster is not fully served, if it is not: a draining node, a shard without a
    /// data node or a confirmed leader, a segment not served in some replica group.
    pub(super) async fn not_settled(&self, verdicts: &Verdicts) -> Option<String> {
        for role in Role::ALL {
            if let Some(n) = verdicts.members(role).draining.first() {
                return Some(format!("{} has drained", n.node_id));
            }
        }
        let datas: Vec<String> = verdicts.members(Role::DataNode).alive.iter().map(|n| n.node_id.clone()).collect();
        let catalog = self.catalog.lock().await;
        unserved(&catalog, &datas)
    }

    /// Asks hosts to start `count` nodes of `role` of `size`, spreading them over the hosts
    /// with room that can hold that size.
    async fn start_nodes(&self, role: Role, count: u32, size: NodeSize, hosts: &[HostStatus]) -> Result<()> {
        // Running processes per host, including what this round already asked for.
        let mut load: BTreeMap<&str, usize> =
            hosts.iter().map(|h| (h.host_id.as_str(), h.nodes.iter().filter(|n| !n.stopping).count())).collect();
        for s in self.scaler.starting.borrow().values() {
            if let Some(l) = load.get_mut(s.host.as_str()) {
                *l += 1;
            }
        }
        for _ in 0..count {
            let host = hosts
                .iter()
                .filter(|h| load.get(h.host_id.as_str()).copied().unwrap_or(0) < h.max_nodes as usize)
                .filter(|h| fits(h, size))
                .min_by_key(|h| (load.get(h.host_id.as_str()).copied().unwrap_or(0), u64::MAX - h.mem_available));
            let Some(host) = host else {
                let note = if hosts.is_empty() {
                    "no host agent is registered to start nodes on".to_string()
                } else if !hosts.iter().any(|h| fits(h, size)) {
                    format!(
                        "no host agent can hold a node of {size} (the largest has {} CPUs)",
                        hosts.iter().map(|h| h.cpus).max().unwrap_or(0)
                    )
                } else {
                    format!("every host agent is full ({} hosts at their host.max_nodes)", hosts.len())
                };
                self.scaler.set_activity(role, format!("cannot start a {}: {note}", role.as_str()));
                return Ok(());
            };
            let process = self.next_process_id(role, hosts).await?;
            let opts = CallOptions { timeout: Some(Duration::from_secs(10)), ..Default::default() };
            let req = StartNode { node_id: process.clone(), role, size };
            match self.node.shared.bus.call_node::<host::StartNode>(&host.host_id, &req, &opts).await {
                Ok(_) => {
                    *load.entry(host.host_id.as_str()).or_default() += 1;
                    self.scaler.starting.borrow_mut().insert(
                        process.clone(),
                        Starting { role, host: host.host_id.clone(), since: Instant::now(), size },
                    );
                    self.scaler
                        .set_activity(role, format!("starting {} on {}", registry_id(&process, role), host.host_id));
                    let sized = if size.is_unsized() { String::new() } else { format!(", {size}") };
                    self.scaler.record(
                        role,
                        &registry_id(&process, role),
                        "start",
                        format!("on host {}{sized}", host.host_id),
                    );
                }
                Err(e) => {
                    self.scaler.record(
                        role,
                        &registry_id(&process, role),
                        "start-failed",
                        format!("host {}: {e}", host.host_id),
                    );
                    // Next round tries again (maybe elsewhere); do not hammer the same host now.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The scaler names processes `<short>-<n>` with `n` from a persisted counter, skipping
    /// names some process already uses.
    async fn next_process_id(&self, role: Role, hosts: &[HostStatus]) -> Result<String> {
        let meta = &self.meta;
        let mut seq: u64 = meta.get(keys::SCALING_SEQ).await?.unwrap_or(1);
        let taken = |p: &str| hosts.iter().flat_map(|h| &h.nodes).any(|n| n.node_id == p);
        let mut name = format!("{}-{seq}", short(role));
        while taken(&name) || self.scaler.starting.borrow().contains_key(&name) {
            seq += 1;
            name = format!("{}-{seq}", short(role));
        }
        meta.put(keys::SCALING_SEQ, &(seq + 1)).await?;
        Ok(name)
    }

    /// Stops the nodes of `role` still starting with another size than `size` (the wanted
    /// size changed before they served).
    async fn cancel_resized_starts(&self, role: Role, size: NodeSize) {
        let resized: Vec<(String, Starting)> = self
            .scaler
            .starting
            .borrow()
            .iter()
            .filter(|(_, s)| s.role == role && s.size != size)
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        for (process, s) in resized {
            self.scaler.starting.borrow_mut().remove(&process);
            self.scaler.record(
                role,
                &registry_id(&process, role),
                "cancel",
                format!("{size} is wanted now, not {}", s.size),
            );
            self.stop_process(&s.host, &process).await;
        }
    }

    /// Stops the newest `count` nodes of `role` still starting (the wanted count went down
    /// before they served).
    async fn cancel_starts(&self, role: Role, count: u32) {
        let mut mine: Vec<(String, Starting)> = self
            .scaler
            .starting
            .borrow()
            .iter()
            .filter(|(_, s)| s.role == role)
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        mine.sort_by_key(|(_, s)| std::cmp::Reverse(s.since));
        for (process, s) in mine.into_iter().take(count as usize) {
            self.scaler.starting.borrow_mut().remove(&process);
            self.scaler.record(role, &registry_id(&process, role), "cancel", "fewer nodes wanted now".into());
            self.stop_process(&s.host, &process).await;
        }
    }

    /// Chooses the serving node of `role` to remove and asks its host to stop it (the node
    /// drains first: its work moves to the others): a node of another size than the role's
    /// first (a resize), then the one with the least to move.
    async fn remove_one(&self, role: Role, serving: &[NodeStatus], stale: &BTreeSet<String>, hosts: &[HostStatus]) {
        let cost = self.removal_costs(role, serving).await;
        let mut candidates: Vec<(&NodeStatus, String, (u64, u64))> = serving
            .iter()
            .filter_map(|n| {
                let process = hosted_process(n, role, hosts)?.node_id.clone();
                Some((n, process, cost.get(&n.node_id).copied().unwrap_or((0, 0))))
            })
            .collect();
        // Another size, then least data to move, then a node the scaler started, then the newest.
        candidates.sort_by_key(|(n, _, c)| {
            let managed = hosts.iter().flat_map(|h| &h.nodes).any(|p| n.node_id.starts_with(&p.node_id) && p.managed);
            (!stale.contains(&n.node_id), *c, !managed, std::cmp::Reverse(n.started_ms))
        });
        let Some((victim, process, (units, rows))) = candidates.first().cloned() else {
            self.scaler.set_activity(
                role,
                format!(
                    "cannot remove a {}: none of the {} serving runs alone in a process of a host agent \
                     (nodes started by hand or sharing a process with other roles are never stopped)",
                    role.as_str(),
                    serving.len()
                ),
            );
            return;
        };
        let what = match role {
            Role::QueryNode => format!("{units} segments and shard leads, {rows} rows"),
            Role::DataNode => format!("{units} shards"),
            _ => "no data".into(),
        };
        let why = if stale.contains(&victim.node_id) {
            let old = hosted_process(victim, role, hosts).map_or(NodeSize::UNSIZED, |p| p.size);
            format!("resize: {old} is replaced by {}, which serves now", self.scaler.size_of(role))
        } else {
            format!("least to move of {} serving", serving.len())
        };
        let detail = format!("{why}: {what}; draining on host {}", victim.host_agent);
        *self.scaler.removal.borrow_mut() = Some(Removal {
            role,
            process: process.clone(),
            node_id: victim.node_id.clone(),
            host: victim.host_agent.clone(),
            since: Instant::now(),
            gone: None,
            resized: stale.contains(&victim.node_id),
        });
        self.scaler.record(role, &victim.node_id, "drain", detail);
        self.scaler.set_activity(role, format!("draining {}", victim.node_id));
        self.stop_process(&victim.host_agent, &process).await;
    }

    /// Per node of `role`: (work units to move, rows to move): query nodes' segments and
    /// leads, data nodes' shards.
    async fn removal_costs(&self, role: Role, serving: &[NodeStatus]) -> BTreeMap<String, (u64, u64)> {
        let catalog = self.catalog.lock().await;
        let mut cost: BTreeMap<String, (u64, u64)> = serving.iter().map(|n| (n.node_id.clone(), (0, 0))).collect();
        for (cid, layout) in &catalog.layouts {
            match role {
                Role::QueryNode => {
                    let segments = catalog.segments.get(cid);
                    for (sid, holders) in &layout.holders {
                        let rows = segments.and_then(|s| s.get(sid)).map_or(0, |s| s.rows);
                        for h in holders {
                            if let Some(c) = cost.get_mut(h) {
                                c.0 += 1;
                                c.1 += rows;
                            }
                        }
                    }
                    for group in &layout.replicas {
                        for leader in &group.leaders {
                            if let Some(c) = cost.get_mut(&leader.node) {
                                c.0 += 1;
                            }
                        }
                    }
                }
                Role::DataNode => {
                    for shard in &layout.shards {
                        if let Some(c) = cost.get_mut(&shard.channel_owner) {
                            c.0 += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        cost
    }

    pub(super) async fn stop_process(&self, host_id: &str, process: &str) {
        let opts = CallOptions { timeout: Some(Duration::from_secs(10)), ..Default::default() };
        let req = StopNode { node_id: process.to_string() };
        if let Err(e) = self.node.shared.bus.call_node::<host::StopNode>(host_id, &req, &opts).await {
            tracing::warn!(host = host_id, process, error = %e, "host agent did not take the stop; will retry");
        }
    }
}

/// Whether host `h` can hold a node of `size` at all (its cores and memory; what other nodes
/// take is not counted: sizes may overcommit a host, as CPU quotas do).
fn fits(h: &HostStatus, size: NodeSize) -> bool {
    u64::from(size.cpu_millis) <= u64::from(h.cpus) * 1000 && size.memory_bytes <= h.mem_total
}

/// The size asked for, with the CPU or memory not given derived from the other at
/// `per_cpu` bytes per core (MISSION S3.3: they move together); refused when both are given
/// out of that ratio, or out of bounds.
pub(super) fn normalize_size(size: NodeSize, per_cpu: u64) -> Result<NodeSize> {
    let memory_for = |millis: u32| (u128::from(millis) * u128::from(per_cpu) / 1000).min(u128::from(u64::MAX)) as u64;
    let millis_for =
        |bytes: u64| (u128::from(bytes) * 1000 / u128::from(per_cpu.max(1))).min(u128::from(u32::MAX)) as u32;
    let size = match (size.cpu_millis, size.memory_bytes) {
        (0, bytes) => NodeSize { cpu_millis: millis_for(bytes), memory_bytes: bytes },
        (millis, 0) => NodeSize { cpu_millis: millis, memory_bytes: memory_for(millis) },
        (millis, bytes) => {
            if memory_for(millis).abs_diff(bytes) > 1 << 20 {
                return Err(Error::InvalidArgument(format!(
                    "{} CPU and {} MiB do not go together: sizes move CPU and memory together at \
                     scaling.memory_per_cpu_mb = {} MiB per CPU, so {} CPU comes with {} MiB; give the CPU or the \
                     memory alone",
                    f64::from(millis) / 1000.0,
                    bytes >> 20,
                    per_cpu >> 20,
                    f64::from(millis) / 1000.0,
                    memory_for(millis) >> 20
                )));
            }
            NodeSize { cpu_millis: millis, memory_bytes: bytes }
        }
    };
    if size.memory_bytes < MIN_NODE_MEMORY || size.cpu_millis < 10 {
        return Err(Error::InvalidArgument(format!(
            "a node of {size} is too small: at least {} MiB and 0.01 CPU",
            MIN_NODE_MEMORY >> 20
        )));
    }
    if size.cpu_millis > 1_000_000 || size.memory_bytes > 1 << 50 {
        return Err(Error::InvalidArgument(format!("a node of {size} is too large: at most 1000 CPU and 1 PiB")));
    }
    Ok(size)
}

/// Why some loaded collection is not fully served, if one is not: a shard without a live data
/// node, a replica group without a confirmed leader for a shard, or a sealed segment that a
/// group does not serve from its target yet.
fn unserved(catalog: &Catalog, datas: &[String]) -> Option<String> {
    for (name, info) in &catalog.collections {
        let Some(layout) = catalog.layouts.get(&info.id) else { continue };
        for shard in &layout.shards {
            if !datas.contains(&shard.channel_owner) {
                return Some(format!("shard {} of {name:?} has a data node", shard.shard));
            }
        }
        if layout.released {
            continue;
        }
        if layout.replicas.len() < layout.wanted_replicas() {
            return Some(format!("{name:?} has all its replica groups"));
        }
        // Segments readers are served from (at or below their shard's served position); newer
        // ones are still served from the leaders' growing rows while they load.
        let served_seq: BTreeMap<u32, u64> = layout.shards.iter().map(|s| (s.shard, s.served_seq)).collect();
        let segments: Vec<&quiver_schemas::SegmentInfo> = catalog
            .segments
            .get(&info.id)
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|s| s.state != SegmentState::Dropped && served_seq.get(&s.shard).is_some_and(|&q| s.end_seq <= q))
            .collect();
        for group in &layout.replicas {
            if group.leaders.len() < layout.shards.len() || group.leaders.iter().any(|l| !l.confirmed) {
                return Some(format!("every shard of {name:?} has a serving leader in replica group {}", group.id));
            }
            for seg in &segments {
                let served = group
                    .targets
                    .get(&seg.id)
                    .is_some_and(|t| layout.holders.get(&seg.id).is_some_and(|h| h.contains(t)));
                if !served {
                    return Some(format!("segment {} of {name:?} is served in replica group {}", seg.id, group.id));
                }
            }
        }
    }
    None
}

/// The scaler's view of a role (`quiver_scaling_nodes{role, state}`: wanted, serving, starting,
/// draining; `quiver_scaling_node_size_*{role}`: the size every node of it should have, 0 when
/// unsized), exported each round by the active coordinator.
fn export_scaling(role: Role, want: u32, serving: u32, starting: u32, draining: u32, size: NodeSize) {
    let role = role.as_str();
    for (state, n) in [("wanted", want), ("serving", serving), ("starting", starting), ("draining", draining)] {
        metrics::gauge!("quiver_scaling_nodes", "role" => role, "state" => state).set(f64::from(n));
    }
    metrics::gauge!("quiver_scaling_node_size_memory_bytes", "role" => role).set(size.memory_bytes as f64);
    metrics::gauge!("quiver_scaling_node_size_cpu_cores", "role" => role).set(f64::from(size.cpu_millis) / 1000.0);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::catalog::{Layout, ReplicaLayout, ShardLeader};
    use super::*;
    use quiver_schemas::{CollectionInfo, CollectionSchema, Consistency, SegmentInfo};

    fn catalog() -> Catalog {
        let info = CollectionInfo {
            partitions: Default::default(),
            id: 1,
            schema: CollectionSchema {
                name: "docs".into(),
                description: String::new(),
                fields: Vec::new(),
                enable_dynamic_field: false,
                num_shards: 1,
                consistency: Consistency::Bounded,
            },
            index: None,
            created_ts: 0,
            scalar_indexes: Vec::new(),
        };
        let mut layout = Layout::new(1);
        layout.shards[0].channel_owner = "d1".into();
        layout.shards[0].served_seq = 100;
        layout.replicas = vec![ReplicaLayout {
            id: 0,
            nodes: vec!["q1".into(), "q2".into()],
            leaders: vec![ShardLeader { node: "q1".into(), confirmed: true }],
            targets: [(5, "q2".to_string()), (6, "q1".to_string())].into_iter().collect(),
        }];
        layout.holders.insert(5, vec!["q2".into()]);
        layout.holders.insert(6, vec!["q1".into()]);
        let segment = |id: u64, end_seq: u64| SegmentInfo {
            partitions: Default::default(),
            id,
            collection: 1,
            shard: 0,
            rows: 10,
            start_seq: end_seq - 9,
            end_seq,
            data_path: String::new(),
            index_path: None,
            state: SegmentState::Flushed,
            mem_size: 0,
            delete_seq: 0,
            compacted_from: Vec::new(),
        };
        let mut c = Catalog::default();
        c.segments.insert(1, [(5, segment(5, 50)), (6, segment(6, 100)), (7, segment(7, 150))].into_iter().collect());
        c.layouts.insert(1, layout);
        c.collections.insert("docs".into(), info);
        c
    }

    #[test]
    fn sizes_move_cpu_and_memory_together() {
        const GIB: u64 = 1 << 30;
        let per_cpu = 4 * GIB;
        let size = |cpu_millis, memory_bytes| NodeSize { cpu_millis, memory_bytes };
        assert_eq!(normalize_size(size(2_000, 0), per_cpu).unwrap(), size(2_000, 8 * GIB));
        assert_eq!(normalize_size(size(0, 8 * GIB), per_cpu).unwrap(), size(2_000, 8 * GIB));
        assert_eq!(normalize_size(size(500, 2 * GIB), per_cpu).unwrap(), size(500, 2 * GIB));
        let e = normalize_size(size(1_000, 8 * GIB), per_cpu).unwrap_err().to_string();
        assert!(e.contains("do not go together") && e.contains("1 CPU comes with 4096 MiB"), "{e}");
        assert!(normalize_size(size(0, 1 << 20), per_cpu).unwrap_err().to_string().contains("too small"));
        assert!(normalize_size(size(2_000_000, 0), per_cpu).unwrap_err().to_string().contains("too large"));
        let host = HostStatus { cpus: 2, mem_total: 8 * GIB, ..HostStatus::default() };
        assert!(
            fits(&host, size(2_000, 8 * GIB)) && !fits(&host, size(2_001, GIB)) && !fits(&host, size(1_000, 9 * GIB))
        );
    }

    #[test]
    fn the_cluster_is_settled_only_when_every_shard_and_served_segment_has_its_node() {
        let mut c = catalog();
        // Segment 7 lies beyond the served position: the leader serves it from growing rows.
        assert_eq!(unserved(&c, &["d1".into()]), None);
        assert!(unserved(&c, &["d2".into()]).unwrap().contains("shard 0"), "its data node is gone");
        let layout = c.layouts.get_mut(&1).unwrap();
        layout.replicas[0].targets.insert(5, "q1".into());
        assert!(unserved(&c, &["d1".into()]).unwrap().contains("segment 5"), "the new target has not loaded it");
        let layout = c.layouts.get_mut(&1).unwrap();
        layout.holders.insert(5, vec!["q2".into(), "q1".into()]);
        layout.replicas[0].leaders[0].confirmed = false;
        assert!(unserved(&c, &["d1".into()]).unwrap().contains("leader"));
        c.layouts.get_mut(&1).unwrap().released = true;
        assert_eq!(unserved(&c, &["d1".into()]), None, "a released collection needs its data node only");
    }
}
