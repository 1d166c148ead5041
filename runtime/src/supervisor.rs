//! The supervisor: what actix lacks. Every role runs as an actor on an arbiter (thread) of its
//! own, so a panic stays inside that role. When a role's actor goes away — a panic unwinding
//! through a handler, or the actor stopping itself after an error — its [`LifeGuard`] tells the
//! supervisor, which stops the old arbiter (and every task on it), waits an exponential backoff
//! and starts the role again on a fresh arbiter. More than `max_restarts` failures within
//! `restart_window` escalates: the node is marked unhealthy and the process exits non-zero.
//!
//! ```text
//!   Running ──actor dropped──▶ Backoff(d) ──timer──▶ Running      (d doubles, capped)
//!      │                          │
//!      ├── budget spent ──────────┴──▶ Escalated: unhealthy, exit(70)
//!      └── drained (SIGTERM, drain request) ──▶ Stopped: not restarted; all stopped → exit(0)
//! ```
//!
//! Each role also has a lifecycle state ([`NodeState`]: starting → serving → draining →
//! stopped) in its [`RoleHealth`]; [`SupervisorHandle::ready`] waits for every role to serve,
//! and [`SupervisorHandle::drain`] drains them in dependency order (proxies first, so no new
//! work enters; then the workers, which may still need the coordinator to hand off; the
//! coordinator last), each bounded by the drain timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use quiver_schemas::{NodeState, Role};
use tokio::sync::watch;

use crate::config::SupervisorConfig;
use crate::Shared;

/// Exit code of a node whose restart budget is spent.
pub const EXIT_ESCALATED: i32 = 70;

/// Health counters and lifecycle state of one supervised role, shared with its heartbeat.
#[derive(Debug)]
pub struct RoleHealth {
    pub restarts: AtomicU32,
    pub unhealthy: AtomicBool,
    state: watch::Sender<NodeState>,
    drain: watch::Sender<bool>,
}

impl Default for RoleHealth {
    fn default() -> Self {
        RoleHealth {
            restarts: AtomicU32::new(0),
            unhealthy: AtomicBool::new(false),
            state: watch::channel(NodeState::Starting).0,
            drain: watch::channel(false).0,
        }
    }
}

impl RoleHealth {
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }
    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Where the role is in its life.
    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    /// Moves the role to `state` (the role's actor does this; `Stopped` is final).
    pub fn set_state(&self, state: NodeState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state && *s != NodeState::Stopped;
            if changed {
                *s = state;
            }
            changed
        });
    }

    /// Asks the role to drain (idempotent).
    pub fn request_drain(&self) {
        self.drain.send_replace(true);
    }

    /// Resolves once a drain was requested.
    pub async fn drain_requested(&self) {
        let mut rx = self.drain.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Resolves once the role is in a state `pred` accepts.
    pub async fn wait_state(&self, pred: impl Fn(NodeState) -> bool) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| pred(*s)).await;
    }
}

/// What a role's start function gets: the shared handles, its identity, its health, and the
/// guard it must keep inside its actor.
pub struct RoleContext {
    pub node_id: String,
    pub role: Role,
    pub shared: Shared,
    pub health: Arc<RoleHealth>,
    pub guard: LifeGuard,
}

/// Starts a role's actor on the current arbiter. Called again on every restart.
pub type StartFn = Arc<dyn Fn(RoleContext) + Send + Sync>;

/// One supervised role of this process.
pub struct RoleSpec {
    pub role: Role,
    pub node_id: String,
    pub start: StartFn,
}

/// Held by a role's actor; dropping it (actor stopped or unwound by a panic) reports the exit.
pub struct LifeGuard {
    supervisor: Addr<Supervisor>,
    index: usize,
    generation: u64,
    drained: bool,
}

impl LifeGuard {
    /// The role drained and stops on purpose: it is not restarted.
    pub fn drained(&mut self) {
        self.drained = true;
    }
}

impl Drop for LifeGuard {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        let drained = self.drained && !panicked;
        self.supervisor.do_send(ChildExited { index: self.index, generation: self.generation, panicked, drained });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct ChildExited {
    index: usize,
    generation: u64,
    panicked: bool,
    drained: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct StartChild {
    index: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Shutdown;

struct Child {
    spec: RoleSpec,
    arbiter: Option<Arbiter>,
    generation: u64,
    failures: VecDeque<Instant>,
    health: Arc<RoleHealth>,
    /// Drained and stopped for good.
    stopped: bool,
}

/// Supervises the roles of one process.
pub struct Supervisor {
    children: Vec<Child>,
    shared: Shared,
    config: SupervisorConfig,
    stopping: bool,
    exit: tokio::sync::watch::Sender<Option<i32>>,
}

/// Handle on a running supervisor.
pub struct SupervisorHandle {
    addr: Addr<Supervisor>,
    exit: tokio::sync::watch::Receiver<Option<i32>>,
    /// Node id, role and health of each child.
    pub roles: Vec<(String, Role, Arc<RoleHealth>)>,
}

impl SupervisorHandle {
    /// Resolves once every role serves (or the supervisor gave up on one: then `false`).
    pub async fn ready(&self) -> bool {
        let mut exit = self.exit.clone();
        let all = futures_all(self.roles.iter().map(|(_, _, h)| {
            let h = h.clone();
            async move { h.wait_state(|s| s != NodeState::Starting).await }
        }));
        tokio::select! {
            _ = all => true,
            _ = exit.wait_for(Option::is_some) => false,
        }
    }

    /// Drains every role in dependency order: proxies (no new work comes in), then query,
    /// data and index nodes (they hand off or finish what they hold), then the coordinator.
    /// Each phase waits up to `timeout` for its roles to stop; then the rest is shut down.
    pub async fn drain(&self, timeout: Duration) {
        let phases: [&[Role]; 3] =
            [&[Role::Proxy], &[Role::QueryNode, Role::DataNode, Role::IndexNode], &[Role::Coordinator]];
        for phase in phases {
            let health: Vec<Arc<RoleHealth>> =
                self.roles.iter().filter(|(_, r, _)| phase.contains(r)).map(|(_, _, h)| h.clone()).collect();
            if health.is_empty() {
                continue;
            }
            for h in &health {
                h.request_drain();
            }
            let stopped = futures_all(health.iter().map(|h| h.wait_state(|s| s == NodeState::Stopped)));
            // A role gives up on its own drain after `timeout` and then still answers what it
            // cut off: a moment more for that before the phase is abandoned.
            if tokio::time::timeout(timeout + Duration::from_secs(1), stopped).await.is_err() {
                tracing::warn!(roles = ?phase.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ?timeout,
                    "roles did not finish draining in time; stopping them anyway");
            }
        }
        self.shutdown().await;
    }

    /// Resolves with the exit code once the supervisor gives up (budget spent, 70) or every
    /// role drained and stopped (0).
    pub async fn exited(&mut self) -> i32 {
        loop {
            if let Some(code) = *self.exit.borrow() {
                return code;
            }
            if self.exit.changed().await.is_err() {
                return EXIT_ESCALATED;
            }
        }
    }

    /// Stops every role and waits for their arbiters to finish.
    pub async fn shutdown(&self) {
        let _ = self.addr.send(Shutdown).await;
    }
}

async fn futures_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    for f in futures {
        f.await;
    }
}

impl Supervisor {
    /// Starts the supervisor and every role. Must run inside an actix `System`.
    pub fn start(specs: Vec<RoleSpec>, shared: Shared, config: SupervisorConfig) -> SupervisorHandle {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let children: Vec<Child> = specs
            .into_iter()
            .map(|spec| Child {
                spec,
                arbiter: None,
                generation: 0,
                failures: VecDeque::new(),
                health: Arc::new(RoleHealth::default()),
                stopped: false,
            })
            .collect();
        let roles = children.iter().map(|c| (c.spec.node_id.clone(), c.spec.role, c.health.clone())).collect();
        let addr = Supervisor { children, shared, config, stopping: false, exit: tx }.start();
        SupervisorHandle { addr, exit: rx, roles }
    }

    fn spawn_child(&mut self, index: usize, me: Addr<Supervisor>) {
        let shared = self.shared.clone();
        let Some(child) = self.children.get_mut(index) else { return };
        child.generation += 1;
        let arbiter = Arbiter::new();
        let ctx = RoleContext {
            node_id: child.spec.node_id.clone(),
            role: child.spec.role,
            shared,
            health: child.health.clone(),
            guard: LifeGuard { supervisor: me, index, generation: child.generation, drained: false },
        };
        let start = child.spec.start.clone();
        let role = child.spec.role.as_str();
        if !arbiter.spawn_fn(move || start(ctx)) {
            tracing::error!(role, "could not start arbiter");
        }
        tracing::info!(role, node = %child.spec.node_id, generation = child.generation, "role started");
        child.arbiter = Some(arbiter);
    }

    fn backoff(&self, recent_failures: usize) -> Duration {
        let exp = recent_failures.saturating_sub(1).min(20) as u32;
        self.config.backoff_initial.saturating_mul(2u32.saturating_pow(exp)).min(self.config.backoff_max)
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        for index in 0..self.children.len() {
            self.spawn_child(index, me.clone());
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let window = self.config.restart_window;
        let max = self.config.max_restarts as usize;
        let Some(child) = self.children.get_mut(msg.index) else { return };
        if child.generation != msg.generation {
            return; // an older incarnation finishing late
        }
        let role = child.spec.role.as_str();
        let node = child.spec.node_id.clone();
        if let Some(arbiter) = child.arbiter.take() {
            arbiter.stop();
        }
        if msg.drained {
            child.stopped = true;
            child.health.set_state(NodeState::Stopped);
            tracing::info!(role, node = %node, "role drained and stopped");
            if self.children.iter().all(|c| c.stopped) {
                let _ = self.exit.send(Some(0));
            }
            return;
        }
        child.health.set_state(NodeState::Starting);
        let now = Instant::now();
        child.failures.push_back(now);
        while child.failures.front().is_some_and(|t| now.duration_since(*t) > window) {
            child.failures.pop_front();
        }
        let recent = child.failures.len();
        metrics::counter!("quiver_role_failures_total", "role" => role).increment(1);
        if recent > max {
            child.health.unhealthy.store(true, Ordering::Relaxed);
            tracing::error!(
                role, node = %node, failures = recent, window = ?window,
                "restart budget spent; node is unhealthy and exits with code {EXIT_ESCALATED}"
            );
            metrics::counter!("quiver_role_escalations_total", "role" => role).increment(1);
            let _ = self.exit.send(Some(EXIT_ESCALATED));
            return;
        }
        child.health.restarts.fetch_add(1, Ordering::Relaxed);
        let delay = self.backoff(recent);
        let cause = if msg.panicked { "panicked" } else { "stopped" };
        tracing::warn!(role, node = %node, cause, restart_in = ?delay, failures = recent, "role failed; restarting");
        metrics::counter!("quiver_role_restarts_total", "role" => role).increment(1);
        ctx.notify_later(StartChild { index: msg.index }, delay);
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StartChild, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.spawn_child(msg.index, ctx.address());
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let arbiters: Vec<Arbiter> = self.children.iter_mut().filter_map(|c| c.arbiter.take()).collect();
        let registry = self.shared.registry.clone();
        let nodes: Vec<String> = self.children.iter().map(|c| c.spec.node_id.clone()).collect();
        Box::pin(async move {
            for arbiter in &arbiters {
                arbiter.stop();
            }
            let _ = tokio::task::spawn_blocking(move || {
                for arbiter in arbiters {
                    let _ = arbiter.join();
                }
            })
            .await;
            for node in nodes {
                let _ = registry.deregister(&node).await;
            }
        })
    }
}
