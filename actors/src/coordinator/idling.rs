//! Automatic idling (MISSION S3.6, S3.7): after `idling.after` without a data request the
//! coordinator stops the compute nodes (query, data and index nodes run by host agents); the
//! proxies, the coordinator and NATS keep listening. A proxy that gets a request then asks for a
//! wake (`coord.wake`) and holds the request until the cluster serves again.
//!
//! ```text
//!             no data request for the timeout in force,            coord.wake (a proxy got
//!             ≤ idling.max_parts segments, no compaction            a request)
//!   awake ─────────────────────────────────────────────▶ idle ───────────────────▶ waking
//!     ▲   (wanted counts kept; compute processes stopped;    (the scaler leaves            │
//!     │    writes keep landing in the JetStream logs)         compute roles alone)        │
//!     └──────────── every compute role at its wanted count, everything served ────────────┘
//!                   (the start-up time is measured and kept)
//! ```
//!
//! The timeout in force grows with the measured start-up time ([`timeout_in_force`]), as the
//! seed's table says. The state is persisted (`keys::IDLING`): a restarted coordinator keeps a
//! cluster idle, or goes on waking it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use quiver_runtime::bus::now_ms;
use quiver_runtime::Result;
use quiver_schemas::protocol::keys;
use quiver_schemas::{IdlingStatus, NodeState, Role, SegmentState};
use serde::{Deserialize, Serialize};

use super::scaler::process_id;
use super::Coordinator;

/// The roles idling stops (S3.6: the compute; proxies and the coordinator keep listening).
pub const COMPUTE: [Role; 3] = [Role::QueryNode, Role::DataNode, Role::IndexNode];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Awake,
    Idle,
    Waking,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Awake => "awake",
            State::Idle => "idle",
            State::Waking => "waking",
        }
    }
}

/// Exports the idling state (`quiver_idling_state{state}`, one-hot); None: this coordinator
/// does not act (a standby), all zero.
pub(crate) fn export_idling_state(state: Option<&str>) {
    for s in [State::Awake, State::Idle, State::Waking] {
        let on = if state == Some(s.as_str()) { 1.0 } else { 0.0 };
        metrics::gauge!("quiver_idling_state", "state" => s.as_str()).set(on);
    }
}

/// What is persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    state: State,
    since_ms: u64,
    /// When the wake was asked for (waking).
    wake_ms: u64,
    /// How long the last wake took until the cluster served.
    last_startup_ms: Option<u64>,
    /// The processes stopped for idling (host, process): until they are gone, a registry entry
    /// of theirs does not count as a node that serves again.
    #[serde(default)]
    stopped: Vec<(String, String)>,
}

/// The idler's state inside the coordinator.
#[derive(Default)]
pub struct Idler {
    state: RefCell<Persisted>,
    /// Why the cluster may not idle now.
    blocked: RefCell<String>,
    /// The latest data request any proxy reported.
    last_request_ms: Cell<u64>,
}

impl Idler {
    pub async fn load(meta: &quiver_runtime::JsonBucket) -> Result<Idler> {
        let idler = Idler::default();
        if let Some(p) = meta.get::<Persisted>(keys::IDLING).await? {
            *idler.state.borrow_mut() = p;
        }
        Ok(idler)
    }

    /// Whether the compute roles are stopped for idling (the scaler then leaves them alone).
    pub fn idle(&self) -> bool {
        self.state.borrow().state == State::Idle
    }
}

/// The idle timeout in force (S3.7): the configured one while the cluster starts in under
/// 15 minutes; at least 15 minutes for a start-up of 15–30, 30 for 30–60, an hour beyond. A
/// configured timeout longer than the table's stays.
pub fn timeout_in_force(after: Duration, startup: Option<Duration>) -> Duration {
    const MIN: u64 = 60;
    let floor = match startup.map(|s| s.as_secs()) {
        None => Duration::ZERO,
        Some(s) if s < 15 * MIN => Duration::ZERO,
        Some(s) if s < 30 * MIN => Duration::from_secs(15 * MIN),
        Some(s) if s < 60 * MIN => Duration::from_secs(30 * MIN),
        Some(_) => Duration::from_secs(60 * MIN),
    };
    after.max(floor)
}

/// A host agent's process that idling stops: running compute roles only.
fn stoppable(p: &quiver_schemas::HostedNode) -> bool {
    !p.stopping && p.pid != 0 && !p.roles.is_empty() && p.roles.iter().all(|r| COMPUTE.contains(r))
}

/// Why the cluster may not idle (S3.7), if something keeps it awake.
pub fn blocker(segments: u64, max_parts: u64, compactions: usize, index_builds: usize) -> Option<String> {
    if segments > max_parts {
        return Some(format!("{segments} segments, more than idling.max_parts = {max_parts}"));
    }
    if compactions > 0 {
        return Some(format!("{compactions} compaction tasks running or queued"));
    }
    if index_builds > 0 {
        return Some(format!("{index_builds} index builds running"));
    }
    None
}

impl Coordinator {
    pub(super) async fn idling_loop(self: Rc<Self>) -> Result<()> {
        let every = self.node.shared.config.scaling.interval;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.idle_once().await {
                metrics::counter!("quiver_idling_failures_total").increment(1);
                tracing::warn!(error = %e, "idling round failed; will retry");
            }
            export_idling_state(Some(self.idler.state.borrow().state.as_str()));
        }
    }

    async fn idle_once(&self) -> Result<()> {
        let config = &self.node.shared.config.idling;
        let nodes = self.node.shared.registry.nodes().await?;
        let latest = nodes.iter().filter(|n| n.role == Role::Proxy).map(|n| n.last_request_ms).max().unwrap_or(0);
        self.idler.last_request_ms.set(self.idler.last_request_ms.get().max(latest));
        let state = self.idler.state.borrow().clone();
        match state.state {
            State::Awake if config.enabled => {
                // Activity: the last request, else when the cluster woke or this coordinator started.
                let last = self.idler.last_request_ms.get().max(state.since_ms).max(self.node.started_ms);
                let timeout = timeout_in_force(config.after, state.last_startup_ms.map(Duration::from_millis));
                let segments = {
                    let catalog = self.catalog.lock().await;
                    catalog
                        .segments
                        .values()
                        .flat_map(|s| s.values())
                        .filter(|s| s.state != SegmentState::Dropped)
                        .count() as u64
                };
                // What idling would stop, from one read of the hosts: the check that there is
                // something to stop and the stop itself see the same processes.
                let hosts = self.node.shared.registry.hosts().await?;
                let targets: Vec<(String, String)> = hosts
                    .iter()
                    .flat_map(|h| {
                        h.nodes.iter().filter(|p| stoppable(p)).map(|p| (h.host_id.clone(), p.node_id.clone()))
                    })
                    .collect();
                let (compactions, builds) = (self.compactions.borrow().in_progress(), self.building.borrow().len());
                let blocked = blocker(segments, config.max_parts, compactions, builds).or_else(|| {
                    targets.is_empty().then(|| {
                        "nothing to stop: no query, data or index node runs alone under a host agent".to_string()
                    })
                });
                *self.idler.blocked.borrow_mut() = blocked.clone().unwrap_or_default();
                if now_ms().saturating_sub(last) >= timeout.as_millis() as u64 && blocked.is_none() {
                    self.go_idle(timeout, targets).await?;
                }
            }
            State::Waking => self.follow_wake(&state).await?,
            _ => {}
        }
        Ok(())
    }

    /// Stops `targets` (the compute processes of every host agent: (host, process)), keeping
    /// each role's wanted count (set to what runs now where none was set) for the wake.
    async fn go_idle(&self, timeout: Duration, targets: Vec<(String, String)>) -> Result<()> {
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        for role in COMPUTE {
            let serving = verdicts.members(role).alive.iter().filter(|n| n.state == NodeState::Serving).count() as u32;
            self.keep_wanted_count(role, serving).await?;
        }
        self.idler.state.borrow_mut().stopped = targets.clone();
        self.set_idle_state(State::Idle).await?;
        for (host, process) in &targets {
            self.stop_process(host, process).await;
        }
        let stopped = targets.len();
        let idle_for = format!("{:?}", Duration::from_secs(timeout.as_secs()));
        self.record_scaling(
            Role::QueryNode,
            "idle",
            format!("no data request for {idle_for}: {stopped} compute processes stopped"),
        );
        tracing::info!(stopped, timeout = %idle_for, "cluster idle: compute nodes stopped until the next request");
        Ok(())
    }

    /// `coord.wake`: a proxy got a request while the cluster idles.
    pub(super) async fn wake(&self) -> Result<IdlingStatus> {
        if self.idler.idle() {
            self.idler.state.borrow_mut().wake_ms = now_ms();
            self.set_idle_state(State::Waking).await?;
            self.record_scaling(Role::QueryNode, "wake", "a request arrived: starting the compute nodes".into());
            tracing::info!("waking the cluster: a request arrived");
            self.scaler.wake.notify_one();
        }
        Ok(self.idling_status())
    }

    /// Waking → awake once every compute role has its wanted count serving, nothing starting,
    /// and everything served; the start-up time is measured then.
    async fn follow_wake(&self, state: &Persisted) -> Result<()> {
        let hosts = self.node.shared.registry.hosts().await?;
        // Stopped processes that have exited deregistered: membership forgets them at once, so
        // their nodes' work moves to the new ones now.
        let verdicts = self.membership.refresh(&self.node, &self.policies.discovery).await?;
        // The processes stopped for idling must be gone first (a wake right after the cluster
        // went idle finds them draining): until then the layout still counts them as holders.
        let stopped = |host: &str, process: &str| state.stopped.iter().any(|(h, p)| h == host && p == process);
        let exiting = hosts.iter().any(|h| h.nodes.iter().any(|p| p.pid != 0 && stopped(&h.host_id, &p.node_id)));
        let listed = COMPUTE.iter().any(|&role| {
            verdicts
                .members(role)
                .alive
                .iter()
                .any(|n| stopped(&n.host_agent, process_id(&n.node_id, role)) && n.started_ms < state.wake_ms)
        });
        if exiting || listed {
            return Ok(());
        }
        for role in COMPUTE {
            let want = self.wanted_count(role);
            let c = self.role_counts(&verdicts, role, &hosts);
            if c.fresh() < want || !c.starting.is_empty() {
                return Ok(());
            }
        }
        if self.not_settled(&verdicts).await.is_some() {
            return Ok(());
        }
        let took = now_ms().saturating_sub(state.wake_ms);
        self.idler.state.borrow_mut().last_startup_ms = Some(took);
        self.set_idle_state(State::Awake).await?;
        self.record_scaling(Role::QueryNode, "awake", format!("woke in {:.1} s", took as f64 / 1000.0));
        tracing::info!(took_ms = took, "cluster awake");
        Ok(())
    }

    async fn set_idle_state(&self, state: State) -> Result<()> {
        let persisted = {
            let mut p = self.idler.state.borrow_mut();
            p.state = state;
            p.since_ms = now_ms();
            p.clone()
        };
        self.meta.put(keys::IDLING, &persisted).await?;
        Ok(())
    }

    /// `coord.idling` / `api.idling`.
    pub(super) fn idling_status(&self) -> IdlingStatus {
        let config = &self.node.shared.config.idling;
        let p = self.idler.state.borrow().clone();
        IdlingStatus {
            enabled: config.enabled,
            state: p.state.as_str().into(),
            since_ms: p.since_ms,
            last_request_ms: self.idler.last_request_ms.get(),
            after_ms: config.after.as_millis() as u64,
            timeout_ms: timeout_in_force(config.after, p.last_startup_ms.map(Duration::from_millis)).as_millis() as u64,
            last_startup_ms: p.last_startup_ms.unwrap_or(0),
            blocked: self.idler.blocked.borrow().clone(),
            // Set with the state, so a status never says idle with nothing stopped.
            stopped: p.stopped.len() as u32,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_grows_with_start_up_time_as_the_seed_says() {
        let after = Duration::from_secs(5 * 60);
        let min = |m: u64| Duration::from_secs(m * 60);
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(timeout_in_force(after, None), after, "nothing measured yet: the configured timeout");
        assert_eq!(timeout_in_force(after, secs(14 * 60 + 59)), after);
        assert_eq!(timeout_in_force(after, secs(15 * 60)), min(15));
        assert_eq!(timeout_in_force(after, secs(30 * 60 - 1)), min(15));
        assert_eq!(timeout_in_force(after, secs(30 * 60)), min(30));
        assert_eq!(timeout_in_force(after, secs(60 * 60 - 1)), min(30));
        assert_eq!(timeout_in_force(after, secs(60 * 60)), min(60));
        assert_eq!(timeout_in_force(after, secs(5 * 3600)), min(60));
        // A configured timeout above the table's stays.
        assert_eq!(timeout_in_force(min(120), secs(20 * 60)), min(120));
    }

    #[test]
    fn too_many_parts_or_a_compaction_keep_the_cluster_awake() {
        assert_eq!(blocker(10_000, 10_000, 0, 0), None, "at the maximum: may idle");
        assert_eq!(blocker(10_001, 10_000, 0, 0).unwrap(), "10001 segments, more than idling.max_parts = 10000");
        assert_eq!(blocker(3, 10_000, 2, 0).unwrap(), "2 compaction tasks running or queued");
        assert_eq!(blocker(3, 10_000, 0, 1).unwrap(), "1 index builds running");
        assert_eq!(blocker(0, 0, 0, 0), None);
    }
}
