//! The actor every role runs as. A role supplies a [`RoleHandler`]: which subjects it serves,
//! how it answers a message, which background loops it runs and what its heartbeat says.
//! [`RoleActor`] does the rest: subscribing, dispatching each message as a concurrent future
//! inside the actor's context, heartbeats into the registry, fault injection for tests, and
//! stopping itself when a background loop fails, so the supervisor restarts the role.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use async_nats::Message;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use quiver_runtime::{bus, telemetry, Error, LifeGuard, Result, RoleContext, RoleHealth, Shared};
use quiver_schemas::{NodeStatus, Role, Wire};
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

    /// The subject of one of this node's own methods.
    pub fn subject(&self, method: &str) -> String {
        self.shared.bus.subjects().node(&self.id, method)
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
        }
    }

    /// Decodes the request, runs `f` and replies with its outcome.
    pub async fn serve<Req, Resp, F, Fut>(&self, msg: &Message, f: F)
    where
        Req: Wire,
        Resp: Wire,
        F: FnOnce(Req) -> Fut,
        Fut: Future<Output = Result<Resp>>,
    {
        // A request whose caller has already given up is not worth serving.
        let expired = bus::deadline_of(msg).is_some_and(|d| bus::now_ms() > d);
        let result = match bus::decode::<Req>(msg) {
            _ if expired => Err(Error::DeadlineExceeded(format!("{} arrived after its deadline", msg.subject))),
            Ok(req) => f(req).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(subject = %msg.subject, error = %e, "request failed");
        }
        self.shared.bus.reply(msg, result).await;
    }

    /// Replies that the method is unknown.
    pub async fn unknown_method(&self, msg: &Message) {
        let err = Error::InvalidArgument(format!("unknown method on subject {}", msg.subject));
        self.shared.bus.reply::<quiver_schemas::Empty>(msg, Err(err)).await;
    }
}

/// What a role plugs into [`RoleActor`].
pub trait RoleHandler: 'static {
    /// Subjects to subscribe to, each with an optional queue group.
    fn subscriptions(&self, node: &Node) -> Vec<(String, Option<String>)>;
    /// Answers one message; runs concurrently with other messages.
    fn handle(self: Rc<Self>, msg: Message) -> LocalBoxFuture<'static, ()>;
    /// Starts background loops (with [`Node::spawn_loop`]).
    fn start(self: Rc<Self>) {}
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
    _guard: LifeGuard,
}

/// Starts `init`'s role as an actor on the current arbiter. Used as a [`quiver_runtime::StartFn`].
pub fn start_role<H: RoleHandler>(rc: RoleContext, init: Init<H>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let fault_injection = rc.shared.config.debug.fault_injection;
    let node = Node {
        id: rc.node_id,
        role: rc.role,
        shared: rc.shared,
        health: rc.health,
        started_ms: bus::now_ms(),
        failures: tx,
    };
    RoleActor { node, init: Some(init), handler: None, failures: Some(rx), fault_injection, _guard: rc.guard }.start();
}

struct Ready<H>(Rc<H>, Vec<async_nats::Subscriber>);

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
            let mut subs = Vec::new();
            let mut subjects = handler.subscriptions(&node);
            subjects.push((node.shared.bus.subjects().node(&node.id, "debug.panic"), None));
            for (subject, group) in subjects {
                let sub = match group {
                    Some(g) => node.shared.bus.queue_subscribe(subject, &g).await?,
                    None => node.shared.bus.subscribe(subject).await?,
                };
                subs.push(sub);
            }
            Ok::<_, Error>(Ready(handler, subs))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ready(handler, subs)) => {
                for sub in subs {
                    ctx.add_stream(sub);
                }
                handler.clone().start();
                act.handler = Some(handler);
                act.heartbeat_now();
                let interval = act.node.shared.config.node.heartbeat_interval;
                ctx.run_interval(interval, |act, _| act.heartbeat_now());
                tracing::info!(node = %act.node.id, role = act.node.role.as_str(), "role ready");
            }
            Err(e) => {
                tracing::error!(node = %act.node.id, role = act.node.role.as_str(), error = %e, "role failed to start");
                ctx.stop();
            }
        }));
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
}

impl<H: RoleHandler> StreamHandler<Message> for RoleActor<H> {
    fn handle(&mut self, msg: Message, ctx: &mut Context<Self>) {
        if msg.subject.ends_with(".debug.panic") {
            if self.fault_injection {
                self.injected_panic();
            }
            return;
        }
        let Some(handler) = self.handler.clone() else { return };
        ctx.spawn(handler.handle(msg).into_actor(self));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!(node = %self.node.id, "subscription closed; stopping role");
        ctx.stop();
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
