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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::Message;
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt};
use quiver_runtime::bus::RequestContext;
use quiver_runtime::{bus, telemetry, Error, LifeGuard, Result, RoleContext, RoleHealth, Shared};
use quiver_schemas::protocol::{NodeControlRequest, ProtocolError, Service, ServiceRequest};
use quiver_schemas::{Empty, NodeState, NodeStatus, Role, Subjects, Wire};
use tokio::sync::mpsc;

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
        let failures = self.failures.clone();
        actix::spawn(async move {
            let outcome = AssertUnwindSafe(fut).catch_unwind().await;
            let reason = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{name} failed: {e}"),
                Err(_) => format!("{name} panicked"),
            };
            let _ = failures.send(reason);
        })
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
        }
    }
}

/// What a role plugs into [`RoleActor`].
pub trait RoleHandler: 'static {
    /// The role's closed request enum: its service decides the subjects the role serves.
    type Request: ServiceRequest;
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
    /// Requests being answered (a drain waits for them), by arrival number, with their reply
    /// subjects.
    in_flight: Rc<RefCell<HashMap<u64, Option<async_nats::Subject>>>>,
    arrivals: u64,
    /// Fault injection: requests wait this long before they are served.
    stall: Rc<Cell<Duration>>,
    /// Stops the service subscription's pump (the queue group is left) when draining.
    leave_queue: Option<tokio::sync::oneshot::Sender<()>>,
    /// Told when the queue subscription's last request has reached the actor.
    queue_left: Option<tokio::sync::oneshot::Sender<()>>,
    guard: LifeGuard,
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
        in_flight: Rc::default(),
        arrivals: 0,
        stall: Rc::default(),
        leave_queue: None,
        queue_left: None,
        guard: rc.guard,
    }
    .start();
}

/// A message that arrived on one of the role's subscriptions.
enum Incoming {
    /// On the role's service or node subject: a request.
    Request(Message),
    /// On an event subject.
    Event(Message),
    /// The service's queue subscription has ended (drained): every request NATS delivered to
    /// this node before it left the queue group came before this.
    QueueLeft,
}

struct Ready<H>(Rc<H>, Vec<(async_nats::Subscriber, bool, bool)>);

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
            // (subscription, is the service's queue subscription, carries events)
            let mut subs = Vec::new();
            let service_sub = match group {
                Some(g) => node.shared.bus.queue_subscribe(subject, g).await?,
                None => node.shared.bus.subscribe(subject).await?,
            };
            subs.push((service_sub, group.is_some(), false));
            if group.is_some() {
                // Queue services get the node controls on the node's own subjects.
                let (control, _) = subjects.serve(Service::NodeControl, &node.id);
                subs.push((node.shared.bus.subscribe(control).await?, false, false));
            }
            for event in handler.events(&node) {
                subs.push((node.shared.bus.subscribe(event).await?, false, true));
            }
            Ok::<_, Error>(Ready(handler, subs))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ready(handler, subs)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                for (sub, queue, events) in subs {
                    let leave = if queue {
                        let (leave, left) = tokio::sync::oneshot::channel();
                        act.leave_queue = Some(leave);
                        Some(left)
                    } else {
                        None
                    };
                    actix::spawn(pump(sub, events, tx.clone(), leave));
                }
                let mut rx = rx;
                ctx.add_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
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
    tx: mpsc::UnboundedSender<Incoming>,
    leave: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let wrap = |msg| if events { Incoming::Event(msg) } else { Incoming::Request(msg) };
    if let Some(mut leave) = leave {
        loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => if tx.send(wrap(msg)).is_err() { return },
                    None => return,
                },
                _ = &mut leave => break,
            }
        }
        if let Err(e) = sub.drain().await {
            tracing::warn!(error = %e, "could not leave the queue group cleanly");
        }
        while let Some(msg) = sub.next().await {
            if tx.send(wrap(msg)).is_err() {
                return;
            }
        }
        let _ = tx.send(Incoming::QueueLeft);
        return;
    }
    while let Some(msg) = sub.next().await {
        if tx.send(wrap(msg)).is_err() {
            return;
        }
    }
}

impl<H: RoleHandler> RoleActor<H> {
    fn heartbeat_now(&self) {
        let Some(handler) = &self.handler else { return };
        let (segments, detail) = handler.heartbeat();
        let status = self.node.status(segments, detail);
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
        let in_flight = self.in_flight.clone();
        let node = self.node.clone();
        let waiting = in_flight.clone();
        let work = async move {
            let started = Instant::now();
            if let Some(left) = left {
                let _ = left.await;
            }
            handler.drain().await;
            while !waiting.borrow().is_empty() {
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
                    let cut: Vec<async_nats::Subject> =
                        in_flight.borrow_mut().drain().filter_map(|(_, reply)| reply).collect();
                    tracing::warn!(node = %node.id, role = node.role.as_str(), ?timeout, cut_off = cut.len(),
                        "drain did not finish within node.drain_timeout; stopping anyway");
                    for reply_to in cut {
                        let gone = Error::Unavailable(format!(
                            "node {} stopped (drain timeout) before answering; retry",
                            node.id
                        ));
                        node.shared.bus.reply_to(reply_to, Err(gone)).await;
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
    fn control(&mut self, msg: &Message, ctx: &mut Context<Self>) -> Option<Option<Result<Vec<u8>>>> {
        let method = Subjects::method_of(&msg.subject);
        NodeControlRequest::known_method(method)?;
        let outcome = match NodeControlRequest::decode(method, &msg.payload) {
            Err(e) => Err(Error::InvalidArgument(e.to_string())),
            Ok(NodeControlRequest::Drain(_)) => {
                // Answered first, then drained: a drain that ends at once stops the actor, and
                // the answer must not be lost with it.
                let bus = self.node.shared.bus.clone();
                let msg = msg.clone();
                let answered = async move { bus.reply(&msg, Ok(Empty {}.to_bytes())).await };
                ctx.spawn(answered.into_actor(self).map(|(), act, ctx| act.begin_drain(ctx)));
                return Some(None);
            }
            Ok(NodeControlRequest::DebugPanic(_)) if self.fault_injection => self.injected_panic(),
            Ok(NodeControlRequest::DebugStall(req)) if self.fault_injection => {
                self.stall.set(Duration::from_millis(req.into_body().millis));
                Ok(Empty {}.to_bytes())
            }
            Ok(_) => Err(Error::InvalidArgument("fault injection is off (debug.fault_injection)".into())),
        };
        Some(Some(outcome))
    }
}

impl<H: RoleHandler> StreamHandler<Incoming> for RoleActor<H> {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        let Some(handler) = self.handler.clone() else { return };
        let msg = match incoming {
            Incoming::Event(msg) => {
                ctx.spawn(handler.event(msg).into_actor(self));
                return;
            }
            Incoming::Request(msg) => msg,
            Incoming::QueueLeft => {
                if let Some(tell) = self.queue_left.take() {
                    let _ = tell.send(());
                }
                return;
            }
        };
        if let Some(outcome) = self.control(&msg, ctx) {
            if let Some(outcome) = outcome {
                let bus = self.node.shared.bus.clone();
                ctx.spawn(async move { bus.reply(&msg, outcome).await }.into_actor(self));
            }
            return;
        }
        let limit = self.node.shared.config.limits.max_concurrent_requests;
        if self.in_flight.borrow().len() >= limit {
            // Refused at once, before decoding: a crowd of requests must not queue without
            // bound in this process (each holds its payload and, soon, its working memory).
            metrics::counter!("quiver_admission_refused_total", "reason" => "concurrency").increment(1);
            let refused = Err(Error::ResourceExhausted(format!(
                "node {} already works on {limit} requests (limits.max_concurrent_requests); retry later",
                self.node.id
            )));
            let bus = self.node.shared.bus.clone();
            ctx.spawn(async move { bus.reply(&msg, refused).await }.into_actor(self));
            return;
        }
        let node = self.node.clone();
        let stall = self.stall.get();
        self.arrivals += 1;
        let in_flight = InFlight::new(self.in_flight.clone(), self.arrivals, &msg);
        ctx.spawn(
            async move {
                let _in_flight = in_flight;
                serve::<H>(&node, handler, &msg, stall).await;
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

/// Decodes one request, runs it within its caller's deadline and replies.
async fn serve<H: RoleHandler>(node: &Node, handler: Rc<H>, msg: &Message, stall: Duration) {
    let ctx = RequestContext::of(msg);
    let method = Subjects::method_of(&msg.subject);
    let label = H::Request::known_method(method).unwrap_or("unknown");
    let role = node.role.as_str();
    let started = Instant::now();
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
        let req = H::Request::decode(method, &msg.payload).map_err(|e| match e {
            ProtocolError::UnknownMethod { .. } => {
                Error::InvalidArgument(format!("unknown method {method:?} on subject {}", msg.subject))
            }
            ProtocolError::Decode(e) => Error::Decode(e),
        })?;
        handler.handle(req, ctx.clone()).await
    }
    .await;
    if let Err(e) = &result {
        if matches!(e, Error::DeadlineExceeded(_)) {
            metrics::counter!("quiver_requests_abandoned_total", "role" => role, "method" => label).increment(1);
        }
        tracing::debug!(subject = %msg.subject, error = %e, "request failed");
    }
    metrics::histogram!("quiver_request_seconds", "role" => role, "method" => label)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("quiver_requests_total", "role" => role, "method" => label).increment(1);
    node.shared.bus.reply(msg, result).await;
}

/// Keeps a request in the node's in-flight set until dropped.
struct InFlight(Rc<RefCell<HashMap<u64, Option<async_nats::Subject>>>>, u64);

impl InFlight {
    fn new(set: Rc<RefCell<HashMap<u64, Option<async_nats::Subject>>>>, key: u64, msg: &Message) -> InFlight {
        set.borrow_mut().insert(key, msg.reply.clone());
        InFlight(set, key)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.borrow_mut().remove(&self.1);
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
