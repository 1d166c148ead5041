//! The actor every role runs as. A role supplies a [`RoleHandler`]: its request enum (which
//! fixes the subjects it serves), how it answers a request, which background loops it runs,
//! how it drains and what its heartbeat says. [`RoleActor`] does the rest: subscribing,
//! decoding each message once into the role's request enum with its [`RequestContext`],
//! running it as a concurrent future inside the actor's context, replying, the node controls
//! every node answers (drain, fault injection for tests), heartbeats into the registry, the
//! lifecycle, and stopping itself when a background loop fails, so the supervisor restarts it.
//!
//! Lifecycle ([`NodeState`]):
//!
//! ```text
//!   Starting ──subscribed──▶ Serving ──drain──▶ Draining ──────────────────────────▶ Stopped
//!                                                 │ leave the queue group (no new work)
//!                                                 │ RoleHandler::drain (hand off / finish what it holds)
//!                                                 │ wait for in-flight requests
//!                                                 └ deregister, tell the supervisor (no restart)
//! ```
//!
//! A drain comes from the supervisor (SIGTERM) or a `drain` request on the node's subject
//! (`quiver ctl drain NODE`); it is bounded by `node.drain_timeout`.
//!
//! Where requests run: on the role's arbiter by default (its state is single-threaded). A role
//! whose state is `Send + Sync` (the proxy) offers a [`ConcurrentHandler`]: its service's
//! requests are then decoded and served on the process's multi-threaded I/O runtime, side by
//! side on every core, without a hop through the arbiter. Node calls from roles of the same
//! process arrive in memory ([`quiver_runtime::bus::LocalRequest`], `node.local_calls`) and are
//! served exactly like the ones from NATS.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::{Message, Subject};
use bytes::Bytes;
use futures::future::{BoxFuture, LocalBoxFuture};
use futures::{FutureExt, StreamExt};
use quiver_runtime::bus::{Bus, LocalRequest, LocalServer, RequestContext};
use quiver_runtime::{bus, telemetry, trace, Error, LifeGuard, Result, RoleContext, RoleHealth, Shared};
use quiver_schemas::protocol::{NodeControlRequest, ProtocolError, Service, ServiceRequest};
use quiver_schemas::{Empty, NodeState, NodeStatus, Role, Subjects, Wire};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Identity and shared handles of a running role.
#[derive(Clone)]
pub struct Node {
    pub id: String,
    pub role: Role,
    pub shared: Shared,
    pub health: Arc<RoleHealth>,
    pub started_ms: u64,
    failures: mpsc::UnboundedSender<String>,
}

impl Node {
    /// Runs `fut` on this role's arbiter. If it panics or returns an error, the role stops and
    /// the supervisor restarts it: background loops must not die silently.
    pub fn spawn_loop<F>(&self, name: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = Result<()>> + 'static,
    {
        actix::spawn(reporting(name, self.failures.clone(), fut))
    }

    /// Runs `fut` on the process's I/O runtime (any of its threads), with the same failure
    /// rule as [`Node::spawn_loop`]: for servers whose requests run side by side on every
    /// core (the proxy's Milvus gRPC and HTTP servers).
    pub fn spawn_io_loop<F>(&self, name: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        self.shared.io.spawn(reporting(name, self.failures.clone(), fut))
    }

    /// The cluster's subject scheme.
    pub fn subjects(&self) -> &Subjects {
        self.shared.bus.subjects()
    }

    /// Whether the role is draining (it takes no new work).
    pub fn draining(&self) -> bool {
        self.health.state() == NodeState::Draining
    }

    /// Whether another healthy node of this role serves (could take this one's work over).
    pub async fn has_serving_peer(&self) -> bool {
        let nodes = self.shared.registry.nodes().await.unwrap_or_default();
        nodes.iter().any(|n| n.role == self.role && n.node_id != self.id && n.healthy && n.state == NodeState::Serving)
    }

    /// A heartbeat status with this node's identity filled in.
    pub fn status(&self, segments: u32, detail: String) -> NodeStatus {
        let capacity = match self.shared.config.node.memory_limit_mb {
            0 => telemetry::machine_memory(),
            mb => mb * 1024 * 1024,
        };
        NodeStatus {
            node_id: self.id.clone(),
            role: self.role,
            host: telemetry::hostname(),
            pid: std::process::id(),
            healthy: self.health.healthy(),
            mem_used: telemetry::process_rss(),
            mem_capacity: capacity,
            segments,
            restarts: self.health.restarts(),
            started_ms: self.started_ms,
            heartbeat_ms: bus::now_ms(),
            detail,
            state: self.health.state(),
            cpu_cores: telemetry::cpu_cores_allowed(),
            cpu_busy: telemetry::process_cpu_busy(),
            host_agent: self.shared.config.node.host_agent.clone(),
            faiss_simd: crate::vector::simd_level().name().into(),
            memory_refusals: self.shared.memory.refusals(),
            last_request_ms: crate::proxy::last_request_ms(),
        }
    }
}

/// Every role state, for the one-hot `quiver_node_state` gauge.
const STATES: [NodeState; 5] =
    [NodeState::Starting, NodeState::Serving, NodeState::Draining, NodeState::Stopped, NodeState::Standby];

/// Sets the Prometheus gauges of a heartbeat: the role's state (one series per state, 1 for the
/// current one), health and segments (label `role`), and the process's memory and CPU (the
/// same for every role of a process, so without a role label).
pub fn export_gauges(status: &NodeStatus) {
    let role = status.role.as_str();
    for state in STATES {
        let on = if state == status.state { 1.0 } else { 0.0 };
        metrics::gauge!("quiver_node_state", "role" => role, "state" => state.as_str()).set(on);
    }
    metrics::gauge!("quiver_node_healthy", "role" => role).set(if status.healthy { 1.0 } else { 0.0 });
    metrics::gauge!("quiver_node_segments", "role" => role).set(f64::from(status.segments));
    metrics::gauge!("quiver_process_resident_memory_bytes").set(status.mem_used as f64);
    metrics::gauge!("quiver_process_memory_capacity_bytes").set(status.mem_capacity as f64);
    metrics::gauge!("quiver_process_cpu_cores_busy").set(f64::from(status.cpu_busy));
    metrics::gauge!("quiver_process_cpu_cores_allowed").set(f64::from(status.cpu_cores));
    if matches!(status.role, Role::DataNode | Role::QueryNode) {
        let lag = crate::dml::max_lag(role).unwrap_or(0);
        metrics::gauge!("quiver_dml_lag_entries", "role" => role).set(lag as f64);
    }
}

/// `fut` as a loop of a role: its error or panic is reported to the role, which stops.
async fn reporting<F>(name: &'static str, failures: mpsc::UnboundedSender<String>, fut: F)
where
    F: Future<Output = Result<()>>,
{
    let reason = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("{name} failed: {e}"),
        Err(_) => format!("{name} panicked"),
    };
    let _ = failures.send(reason);
}

/// What a role plugs into [`RoleActor`].
pub trait RoleHandler: 'static {
    /// The role's closed request enum: its service decides the subjects the role serves.
    type Request: ServiceRequest + Send;
    /// Event subjects the role also listens to (no reply expected).
    fn events(&self, _node: &Node) -> Vec<String> {
        Vec::new()
    }
    /// Answers one request with its encoded reply; runs concurrently with other requests.
    fn handle(self: Rc<Self>, req: Self::Request, ctx: RequestContext) -> LocalBoxFuture<'static, Result<Vec<u8>>>;
    /// Handles one event message.
    fn event(self: Rc<Self>, _msg: Message) -> LocalBoxFuture<'static, ()> {
        Box::pin(async {})
    }
    /// Starts background loops (with [`Node::spawn_loop`]).
    fn start(self: Rc<Self>) {}
    /// Once the role takes no new work: finishes or hands off what it holds, resolving when
    /// the role may stop (requests still running are waited for afterwards).
    fn drain(self: Rc<Self>) -> LocalBoxFuture<'static, ()> {
        Box::pin(async {})
    }
    /// Segment count and a one-line detail for the heartbeat.
    fn heartbeat(&self) -> (u32, String) {
        (0, String::new())
    }
    /// The role's service requests served off the arbiter, on the I/O runtime's threads
    /// (`None`: on the arbiter, through [`RoleHandler::handle`]). Called once, when the role
    /// subscribes.
    fn concurrent(&self) -> Option<Arc<dyn ConcurrentHandler<Self::Request>>> {
        None
    }
}

/// A role's request handler that may run on any thread, several requests at once.
pub trait ConcurrentHandler<R: ServiceRequest>: Send + Sync + 'static {
    /// Whether requests of `method` are served here (the others, and node controls, go to the
    /// role's actor). Every method of the service by default.
    fn serves(&self, method: &str) -> bool {
        R::known_method(method).is_some()
    }
    /// Answers one request with its encoded reply.
    fn handle(&self, req: R, ctx: RequestContext) -> BoxFuture<'static, Result<Vec<u8>>>;
}

/// A request to the role, from NATS or in memory from a role of this process.
struct Request {
    subject: Subject,
    payload: Bytes,
    ctx: RequestContext,
    reply: Reply,
    /// How often the caller wants word while the request is worked on (a long call over NATS).
    progress: Option<Duration>,
}

/// Where a request's answer goes.
#[derive(Clone)]
enum Reply {
    /// A NATS reply subject (none: the caller wants no answer).
    Nats(Option<Subject>),
    /// The caller in this process (whoever answers first takes it: the request, or a drain
    /// that runs out of time).
    Local(LocalCaller),
}

type LocalCaller = Arc<Mutex<Option<tokio::sync::oneshot::Sender<Result<Vec<u8>>>>>>;

impl Request {
    fn nats(msg: Message) -> Request {
        Request {
            ctx: RequestContext::of(&msg),
            progress: bus::progress_of(&msg),
            subject: msg.subject,
            payload: msg.payload,
            reply: Reply::Nats(msg.reply),
        }
    }

    fn local(req: LocalRequest) -> Request {
        let reply = Reply::Local(Arc::new(Mutex::new(Some(req.reply))));
        Request { subject: Subject::from(req.subject), payload: req.payload, ctx: req.ctx, reply, progress: None }
    }

    fn method(&self) -> &str {
        Subjects::method_of(&self.subject)
    }
}

impl Reply {
    async fn send(self, bus: &Bus, result: Result<Vec<u8>>) {
        match self {
            Reply::Nats(Some(to)) => bus.reply_to(to, result).await,
            Reply::Nats(None) => {}
            Reply::Local(caller) => {
                if let Some(caller) = caller.lock().ok().and_then(|mut c| c.take()) {
                    let _ = caller.send(result);
                }
            }
        }
    }
}

/// Requests being answered (a drain waits for them) by arrival number, with where their
/// answers go; the concurrency limit; the fault-injection stall. Shared by the arbiter and, for
/// a [`ConcurrentHandler`], the I/O runtime's threads.
#[derive(Clone, Default)]
struct Serving {
    in_flight: Arc<Mutex<HashMap<u64, Reply>>>,
    arrivals: Arc<AtomicU64>,
    /// Fault injection: requests wait this many milliseconds before they are served.
    stall_ms: Arc<AtomicU64>,
    /// Fault injection: requests that arrive over NATS before this time (unix ms) are dropped.
    lose_until_ms: Arc<AtomicU64>,
}

impl Serving {
    fn len(&self) -> usize {
        self.in_flight.lock().map_or(0, |m| m.len())
    }

    fn stall(&self) -> Duration {
        Duration::from_millis(self.stall_ms.load(Ordering::Relaxed))
    }

    /// Whether fault injection drops `req` unanswered (it came over NATS while told to).
    fn loses(&self, req: &Request) -> bool {
        // 0 unless fault injection was used: no clock read per request otherwise.
        let until = self.lose_until_ms.load(Ordering::Relaxed);
        let lost = until != 0 && matches!(req.reply, Reply::Nats(_)) && bus::now_ms() < until;
        if lost {
            tracing::info!(subject = %req.subject, "fault injection: request dropped unanswered");
        }
        lost
    }

    /// Counts `req` in, or refuses it at once, before decoding, when the node already works on
    /// `limits.max_concurrent_requests`: a crowd of requests must not queue without bound in
    /// this process (each holds its payload and, soon, its working memory).
    fn admit(&self, node: &Node, req: &Request) -> Result<InFlight> {
        let limit = node.shared.config.limits.max_concurrent_requests;
        let mut set = self.in_flight.lock().map_err(|_| Error::Internal("in-flight set poisoned".into()))?;
        if set.len() >= limit {
            metrics::counter!("quiver_admission_refused_total", "reason" => "concurrency").increment(1);
            return Err(Error::ResourceExhausted(format!(
                "node {} already works on {limit} requests (limits.max_concurrent_requests); retry later",
                node.id
            )));
        }
        let key = self.arrivals.fetch_add(1, Ordering::Relaxed);
        set.insert(key, req.reply.clone());
        Ok(InFlight(self.in_flight.clone(), key))
    }

    /// Serves `req` on the I/O runtime with `handler` (see [`ConcurrentHandler`]).
    fn serve_concurrently<R>(&self, node: &Node, handler: &Arc<dyn ConcurrentHandler<R>>, req: Request)
    where
        R: ServiceRequest + Send,
    {
        if self.loses(&req) {
            return;
        }
        let (node, io) = (node.clone(), node.shared.io.clone());
        match self.admit(&node, &req) {
            Err(refused) => {
                io.spawn(async move { req.reply.send(&node.shared.bus, Err(refused)).await });
            }
            Ok(in_flight) => {
                let handler = handler.clone();
                let stall = self.stall();
                io.spawn(async move {
                    let _in_flight = in_flight;
                    serve::<R, _, _>(&node, req, stall, |r, ctx| handler.handle(r, ctx)).await;
                });
            }
        }
    }
}

/// Builds a role's handler once the actor is running (may do I/O).
pub type Init<H> = Box<dyn FnOnce(Node) -> LocalBoxFuture<'static, Result<H>>>;

/// The actix actor of a role.
pub struct RoleActor<H: RoleHandler> {
    node: Node,
    init: Option<Init<H>>,
    handler: Option<Rc<H>>,
    failures: Option<mpsc::UnboundedReceiver<String>>,
    fault_injection: bool,
    serving: Serving,
    /// Stops the service subscription's pump (the queue group is left) when draining.
    leave_queue: Option<tokio::sync::oneshot::Sender<()>>,
    /// Told when the queue subscription's last request has reached the actor.
    queue_left: Option<tokio::sync::oneshot::Sender<()>>,
    /// Pumps running on the I/O runtime, stopped (their subscriptions dropped) with the actor.
    io_pumps: Vec<AbortOnDrop>,
    guard: LifeGuard,
}

/// Aborts a task of another runtime when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `init`'s role as an actor on the current arbiter. Used as a [`quiver_runtime::StartFn`].
pub fn start_role<H: RoleHandler>(rc: RoleContext, init: Init<H>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let fault_injection = rc.shared.config.debug.fault_injection;
    rc.health.set_state(NodeState::Starting);
    let node = Node {
        id: rc.node_id,
        role: rc.role,
        shared: rc.shared,
        health: rc.health,
        started_ms: bus::now_ms(),
        failures: tx,
    };
    RoleActor {
        node,
        init: Some(init),
        handler: None,
        failures: Some(rx),
        fault_injection,
        serving: Serving::default(),
        leave_queue: None,
        queue_left: None,
        io_pumps: Vec::new(),
        guard: rc.guard,
    }
    .start();
}

/// A message that arrived on one of the role's subscriptions.
enum Incoming {
    /// On the role's service or node subject, or in memory from this process: a request.
    Request(Request),
    /// On an event subject.
    Event(Message),
    /// The service's queue subscription has ended (drained): every request NATS delivered to
    /// this node before it left the queue group came before this.
    QueueLeft,
}

struct Ready<H>(Rc<H>, Vec<(async_nats::Subscriber, bool, bool, bool)>);

impl<H: RoleHandler> Actor for RoleActor<H> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(rx) = self.failures.take() {
            ctx.add_stream(tokio_stream_from(rx));
        }
        let Some(init) = self.init.take() else { return };
        let node = self.node.clone();
        let fut = async move {
            let handler = Rc::new(init(node.clone()).await?);
            let subjects = node.subjects();
            let service = H::Request::SERVICE;
            let (subject, group) = subjects.serve(service, &node.id);
            // (subscription, is the service's queue subscription, carries events, carries the
            // service's requests)
            let mut subs = Vec::new();
            let service_sub = match group {
                Some(g) => node.shared.bus.queue_subscribe(subject, g).await?,
                None => node.shared.bus.subscribe(subject).await?,
            };
            subs.push((service_sub, group.is_some(), false, true));
            if group.is_some() {
                // Queue services get the node controls on the node's own subjects.
                let (control, _) = subjects.serve(Service::NodeControl, &node.id);
                subs.push((node.shared.bus.subscribe(control).await?, false, false, false));
            }
            for event in handler.events(&node) {
                subs.push((node.shared.bus.subscribe(event).await?, false, true, false));
            }
            Ok::<_, Error>(Ready(handler, subs))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ready(handler, subs)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let concurrent = handler.concurrent();
                for (sub, queue, events, service) in subs {
                    let leave = if queue {
                        let (leave, left) = tokio::sync::oneshot::channel();
                        act.leave_queue = Some(leave);
                        Some(left)
                    } else {
                        None
                    };
                    let to_actor = tx.clone();
                    match &concurrent {
                        // The requests the handler serves are served where they arrive (the
                        // I/O runtime); the rest (node controls on a node subject) and the
                        // queue-left signal go to the actor.
                        Some(handler) if service => {
                            let (node, serving, handler) = (act.node.clone(), act.serving.clone(), handler.clone());
                            let deliver = move |incoming| match incoming {
                                Incoming::Request(req) if handler.serves(req.method()) => {
                                    serving.serve_concurrently(&node, &handler, req);
                                    true
                                }
                                other => to_actor.send(other).is_ok(),
                            };
                            let io = act.node.shared.io.clone();
                            act.io_pumps.push(AbortOnDrop(io.spawn(pump(sub, events, deliver, leave))));
                        }
                        _ => {
                            let deliver = move |incoming| to_actor.send(incoming).is_ok();
                            actix::spawn(pump(sub, events, deliver, leave));
                        }
                    }
                }
                let mut rx = rx;
                ctx.add_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
                // Node calls from roles of this process, in memory: the ones the concurrent
                // handler serves are started in the caller's thread, the rest reach the actor.
                let (local, mut inbox) = mpsc::unbounded_channel();
                let direct = concurrent.clone().map(|handler| {
                    let (node, serving) = (act.node.clone(), act.serving.clone());
                    let direct: Arc<quiver_runtime::bus::DirectServe> = Arc::new(move |req: LocalRequest| {
                        if !handler.serves(Subjects::method_of(&req.subject)) {
                            return Some(req);
                        }
                        serving.serve_concurrently(&node, &handler, Request::local(req));
                        None
                    });
                    direct
                });
                if act.node.shared.bus.serve_locally(&act.node.id, LocalServer { actor: local, direct }) {
                    ctx.add_stream(
                        futures::stream::poll_fn(move |cx| inbox.poll_recv(cx))
                            .map(|req| Incoming::Request(Request::local(req))),
                    );
                }
                handler.clone().start();
                act.handler = Some(handler);
                act.node.health.set_state(NodeState::Serving);
                act.heartbeat_now();
                let interval = act.node.shared.config.node.heartbeat_interval;
                ctx.run_interval(interval, |act, _| act.heartbeat_now());
                let health = act.node.health.clone();
                ctx.spawn(async move { health.drain_requested().await }.into_actor(act).map(|(), act, ctx| {
                    act.begin_drain(ctx);
                }));
                tracing::info!(node = %act.node.id, role = act.node.role.as_str(), "role ready");
            }
            Err(e) => {
                tracing::error!(node = %act.node.id, role = act.node.role.as_str(), error = %e, "role failed to start");
                ctx.stop();
            }
        }));
    }
}

/// Forwards a subscription's messages to the actor. The service's queue subscription stops
/// when `leave` fires: it is drained (unsubscribed, with the messages NATS already delivered
/// still forwarded and answered), so no request sent to this node is lost.
async fn pump(
    mut sub: async_nats::Subscriber,
    events: bool,
    mut deliver: impl FnMut(Incoming) -> bool,
    leave: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let wrap = |msg| if events { Incoming::Event(msg) } else { Incoming::Request(Request::nats(msg)) };
    if let Some(mut leave) = leave {
        loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => if !deliver(wrap(msg)) { return },
                    None => return,
                },
                _ = &mut leave => break,
            }
        }
        if let Err(e) = sub.drain().await {
            tracing::warn!(error = %e, "could not leave the queue group cleanly");
        }
        while let Some(msg) = sub.next().await {
            if !deliver(wrap(msg)) {
                return;
            }
        }
        deliver(Incoming::QueueLeft);
        return;
    }
    while let Some(msg) = sub.next().await {
        if !deliver(wrap(msg)) {
            return;
        }
    }
}

impl<H: RoleHandler> RoleActor<H> {
    fn heartbeat_now(&self) {
        let Some(handler) = &self.handler else { return };
        let (segments, detail) = handler.heartbeat();
        let status = self.node.status(segments, detail);
        export_gauges(&status);
        let registry = self.node.shared.registry.clone();
        actix::spawn(async move {
            if let Err(e) = registry.heartbeat(&status).await {
                tracing::debug!(error = %e, "heartbeat failed");
            }
        });
    }

    #[allow(clippy::panic)]
    fn injected_panic(&self) -> ! {
        // Deliberate: lets tests prove that a panicking role is contained and restarted.
        panic!("injected fault in {} ({})", self.node.id, self.node.role.as_str());
    }

    /// Draining: leave the queue group, let the role hand off or finish what it holds, wait
    /// for running requests, deregister and stop for good. Bounded by `node.drain_timeout`.
    fn begin_drain(&mut self, ctx: &mut Context<Self>) {
        if self.node.health.state() != NodeState::Serving {
            return;
        }
        let Some(handler) = self.handler.clone() else { return };
        tracing::info!(node = %self.node.id, role = self.node.role.as_str(), "draining");
        self.node.health.set_state(NodeState::Draining);
        self.heartbeat_now();
        // Requests NATS delivered before the queue group was left are still answered: the
        // drain waits until the last of them has reached the actor.
        let left = self.leave_queue.take().map(|leave| {
            let _ = leave.send(());
            let (tell, told) = tokio::sync::oneshot::channel();
            self.queue_left = Some(tell);
            told
        });
        let timeout = self.node.shared.config.node.drain_timeout;
        let in_flight = self.serving.in_flight.clone();
        let node = self.node.clone();
        let waiting = self.serving.clone();
        let work = async move {
            let started = Instant::now();
            if let Some(left) = left {
                let _ = left.await;
            }
            handler.drain().await;
            while waiting.len() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.elapsed()
        };
        let fut = async move {
            match tokio::time::timeout(timeout, work).await {
                Ok(took) => tracing::info!(node = %node.id, role = node.role.as_str(), ?took, "drained"),
                Err(_) => {
                    // Callers of what is still running learn at once that they should retry
                    // elsewhere, instead of waiting for their own timeouts.
                    let cut: Vec<Reply> = in_flight
                        .lock()
                        .map(|mut set| set.drain().map(|(_, reply)| reply).collect())
                        .unwrap_or_default();
                    tracing::warn!(node = %node.id, role = node.role.as_str(), ?timeout, cut_off = cut.len(),
                        "drain did not finish within node.drain_timeout; stopping anyway");
                    for reply in cut {
                        let gone = Error::Unavailable(format!(
                            "node {} stopped (drain timeout) before answering; retry",
                            node.id
                        ));
                        reply.send(&node.shared.bus, Err(gone)).await;
                    }
                }
            }
            if let Err(e) = node.shared.registry.deregister(&node.id).await {
                tracing::debug!(error = %e, "could not deregister");
            }
        };
        ctx.spawn(fut.into_actor(self).map(|(), act, ctx| {
            act.guard.drained();
            act.node.health.set_state(NodeState::Stopped);
            ctx.stop();
        }));
    }

    /// Handles a node control, with its answer unless it sends that itself; `None` when
    /// `method` is not one.
    /// Handles `req` if it is a node control (answering it), else gives it back.
    fn control(&mut self, req: Request, ctx: &mut Context<Self>) -> Option<Request> {
        let method = req.method();
        if NodeControlRequest::known_method(method).is_none() {
            return Some(req);
        }
        let bus = self.node.shared.bus.clone();
        let outcome = match NodeControlRequest::decode(method, &req.payload) {
            Err(e) => Err(Error::InvalidArgument(e.to_string())),
            Ok(NodeControlRequest::Drain(_)) => {
                // Answered first, then drained: a drain that ends at once stops the actor, and
                // the answer must not be lost with it.
                let answered = async move { req.reply.send(&bus, Ok(Empty {}.to_bytes())).await };
                ctx.spawn(answered.into_actor(self).map(|(), act, ctx| act.begin_drain(ctx)));
                return None;
            }
            Ok(NodeControlRequest::DebugPanic(_)) if self.fault_injection => self.injected_panic(),
            Ok(NodeControlRequest::DebugStall(stall)) if self.fault_injection => {
                self.serving.stall_ms.store(stall.into_body().millis, Ordering::Relaxed);
                Ok(Empty {}.to_bytes())
            }
            Ok(NodeControlRequest::DebugLose(lose)) if self.fault_injection => {
                let until = bus::now_ms().saturating_add(lose.into_body().millis);
                self.serving.lose_until_ms.store(until, Ordering::Relaxed);
                Ok(Empty {}.to_bytes())
            }
            Ok(_) => Err(Error::InvalidArgument("fault injection is off (debug.fault_injection)".into())),
        };
        ctx.spawn(async move { req.reply.send(&bus, outcome).await }.into_actor(self));
        None
    }
}

impl<H: RoleHandler> StreamHandler<Incoming> for RoleActor<H> {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        let Some(handler) = self.handler.clone() else { return };
        let req = match incoming {
            Incoming::Event(msg) => {
                ctx.spawn(handler.event(msg).into_actor(self));
                return;
            }
            Incoming::Request(req) => req,
            Incoming::QueueLeft => {
                if let Some(tell) = self.queue_left.take() {
                    let _ = tell.send(());
                }
                return;
            }
        };
        let Some(req) = self.control(req, ctx) else { return };
        if self.serving.loses(&req) {
            return;
        }
        let node = self.node.clone();
        let in_flight = match self.serving.admit(&node, &req) {
            Ok(in_flight) => in_flight,
            Err(refused) => {
                ctx.spawn(async move { req.reply.send(&node.shared.bus, Err(refused)).await }.into_actor(self));
                return;
            }
        };
        let stall = self.serving.stall();
        ctx.spawn(
            async move {
                let _in_flight = in_flight;
                serve::<H::Request, _, _>(&node, req, stall, |r, ctx| handler.handle(r, ctx)).await;
            }
            .into_actor(self),
        );
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.node.health.state() == NodeState::Serving {
            tracing::warn!(node = %self.node.id, "subscriptions closed; stopping role");
            ctx.stop();
        }
    }
}

/// Decodes one request, runs it (`handle`) within its caller's deadline and replies.
async fn serve<R, F, Fut>(node: &Node, req: Request, stall: Duration, handle: F)
where
    R: ServiceRequest,
    F: FnOnce(R, RequestContext) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let Request { subject, payload, mut ctx, reply, progress } = req;
    let method = Subjects::method_of(&subject);
    let label = R::known_method(method).unwrap_or("unknown");
    let role = node.role.as_str();
    let started = Instant::now();
    // The request's server span, a child of the caller's span when it sent one: made only when
    // tracing is on and the request is traced (its caller's sampled flag, else the ratio).
    let span = match trace::sampling(ctx.traceparent.as_deref()) {
        trace::Sampling::Traced(parent) => {
            let span = tracing::debug_span!(
                "request",
                otel.name = %format_args!("{role}.{label}"),
                otel.kind = "server",
                node = %node.id,
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty,
            );
            trace::set_remote_parent(&span, parent);
            span
        }
        trace::Sampling::Untraced(unsampled) => {
            ctx.traceparent = Some(unsampled);
            tracing::Span::none()
        }
        trace::Sampling::Off => tracing::Span::none(),
    };
    let _in_flight = RequestGauge::start(role);
    let result = async {
        if !stall.is_zero() {
            // Fault injection: a node too slow to answer. What it would do after the stall is
            // still bounded by the caller's deadline, like everything else.
            ctx.bound("a stalled request", async {
                tokio::time::sleep(stall).await;
                Ok(())
            })
            .await?;
        }
        // A request whose caller has already given up is not worth serving.
        ctx.check(format_args!("{method} started on {}", node.id))?;
        let req = R::decode(method, &payload).map_err(|e| match e {
            ProtocolError::UnknownMethod { .. } => {
                Error::InvalidArgument(format!("unknown method {method:?} on subject {subject}"))
            }
            ProtocolError::Decode(e) => Error::Decode(e),
        })?;
        handle(req, ctx.clone()).await
    }
    .instrument(span.clone());
    let result = match (&reply, progress) {
        (Reply::Nats(Some(to)), Some(every)) => node.shared.bus.with_progress(to, every, result).await,
        _ => result.await,
    };
    if let Err(e) = &result {
        trace::record_error(&span, e);
        let code = e.code().name();
        metrics::counter!("quiver_request_errors_total", "role" => role, "method" => label, "code" => code)
            .increment(1);
        if matches!(e, Error::DeadlineExceeded(_)) {
            metrics::counter!("quiver_requests_abandoned_total", "role" => role, "method" => label).increment(1);
        }
        tracing::debug!(subject = %subject, error = %e, "request failed");
    }
    metrics::histogram!("quiver_request_seconds", "role" => role, "method" => label)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("quiver_requests_total", "role" => role, "method" => label).increment(1);
    reply.send(&node.shared.bus, result).await;
}

/// Counts a request in `quiver_requests_in_flight{role}` until dropped (also when the request's
/// future is dropped unfinished).
struct RequestGauge(&'static str);

impl RequestGauge {
    fn start(role: &'static str) -> RequestGauge {
        metrics::gauge!("quiver_requests_in_flight", "role" => role).increment(1.0);
        RequestGauge(role)
    }
}

impl Drop for RequestGauge {
    fn drop(&mut self) {
        metrics::gauge!("quiver_requests_in_flight", "role" => self.0).decrement(1.0);
    }
}

/// Keeps a request in the node's in-flight set until dropped.
struct InFlight(Arc<Mutex<HashMap<u64, Reply>>>, u64);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

/// A background loop's failure report.
struct Failure(String);

impl<H: RoleHandler> StreamHandler<Failure> for RoleActor<H> {
    fn handle(&mut self, msg: Failure, ctx: &mut Context<Self>) {
        tracing::error!(node = %self.node.id, reason = %msg.0, "background task failed; stopping role");
        ctx.stop();
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<String>) -> impl futures::Stream<Item = Failure> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Failure)))
}
