//! The NATS side of a host agent: connecting (and retrying until NATS is there), answering
//! `start_node` / `stop_node` on `quiver.<cluster>.host.<id>.*`, heartbeats into the hosts
//! registry. It never fails: whoever runs it (`quiver host`, the cluster supervisor) keeps
//! supervising its processes whatever NATS does.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use futures::StreamExt;
use quiver_runtime::{security, Bus, Config, Error, Registry, RequestContext, Result};
use quiver_schemas::protocol::{HostRequest, Service, ServiceRequest};
use quiver_schemas::{Empty, ProtocolError, Subjects};

use super::nodes::HostedNodes;

/// Longest wait between two connection attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A host agent's link to the cluster.
pub struct HostAgent {
    id: String,
    started_ms: u64,
    config: Arc<Config>,
    url: String,
    link: Link,
    heartbeat: tokio::time::Interval,
}

enum Link {
    /// A task connects, opens the registry and subscribes, retrying until it can.
    Connecting(tokio::task::JoinHandle<Box<Connected>>),
    Connected(Box<Connected>),
}

/// What a connected agent holds.
pub struct Connected {
    bus: Bus,
    registry: Registry,
    requests: async_nats::Subscriber,
}

/// What woke the agent up; handled by [`HostAgent::handle`].
pub enum Wake {
    Request(Message),
    Heartbeat,
    Linked(Box<Connected>),
    /// The request subscription ended (the client was closed): connect again.
    Lost,
}

impl HostAgent {
    /// Starts connecting to `url` with `config`'s credentials and TLS, as host `id`; needs a
    /// tokio runtime. Requests are served once [`HostAgent::wake`] is polled.
    pub fn connect(config: Arc<Config>, url: String, id: String) -> HostAgent {
        let task = tokio::spawn(connect_until_linked(config.clone(), url.clone(), id.clone()));
        let mut heartbeat = tokio::time::interval(config.node.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        HostAgent { id, started_ms: crate::process::now_ms(), config, url, link: Link::Connecting(task), heartbeat }
    }

    /// Waits for the next request, heartbeat or connection. Cancel-safe (for `select!`).
    pub async fn wake(&mut self) -> Wake {
        let HostAgent { link, heartbeat, .. } = self;
        match link {
            Link::Connecting(task) => tokio::select! {
                linked = task => match linked {
                    Ok(c) => Wake::Linked(c),
                    // The task panicked: start another.
                    Err(_) => Wake::Lost,
                },
                _ = heartbeat.tick() => Wake::Heartbeat,
            },
            Link::Connected(c) => tokio::select! {
                msg = c.requests.next() => msg.map_or(Wake::Lost, Wake::Request),
                _ = heartbeat.tick() => Wake::Heartbeat,
            },
        }
    }

    /// Does what `wake` asks for: answers a request, sends a heartbeat, takes a new link.
    pub async fn handle(&mut self, wake: Wake, nodes: &mut HostedNodes) {
        match wake {
            Wake::Request(msg) => {
                self.answer(msg, nodes).await;
                // Let the scaler see the change without waiting for the next beat.
                self.beat(nodes).await;
            }
            Wake::Heartbeat => self.beat(nodes).await,
            Wake::Linked(c) => {
                tracing::info!(host = %self.id, "host agent serving start_node and stop_node");
                self.link = Link::Connected(c);
                self.beat(nodes).await;
            }
            Wake::Lost => {
                tracing::warn!(host = %self.id, "host agent lost its NATS subscription; connecting again");
                let task = tokio::spawn(connect_until_linked(self.config.clone(), self.url.clone(), self.id.clone()));
                self.link = Link::Connecting(task);
            }
        }
    }

    async fn answer(&self, msg: Message, nodes: &mut HostedNodes) {
        let Link::Connected(c) = &self.link else { return };
        let method = Subjects::method_of(&msg.subject);
        let result = serve(&msg, method, nodes);
        match &result {
            Ok(_) => tracing::info!(method, "host request done"),
            Err(e) => tracing::warn!(method, error = %e, "host request refused"),
        }
        c.bus.reply(&msg, result).await;
    }

    async fn beat(&self, nodes: &HostedNodes) {
        let Link::Connected(c) = &self.link else { return };
        let status = nodes.status(self.started_ms);
        match tokio::time::timeout(self.config.nats.request_timeout, c.registry.host_heartbeat(&status)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "host heartbeat failed"),
            Err(_) => tracing::warn!("host heartbeat timed out"),
        }
    }

    /// Removes the agent's registry entry (a clean stop); gives up after a few seconds.
    pub async fn deregister(&self) {
        match &self.link {
            Link::Connected(c) => {
                let gone = tokio::time::timeout(Duration::from_secs(3), c.registry.host_deregister(&self.id)).await;
                if !matches!(gone, Ok(Ok(()))) {
                    tracing::warn!(host = %self.id, "cannot remove the host's registry entry; it expires on its own");
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), c.bus.flush()).await;
            }
            Link::Connecting(task) => task.abort(),
        }
    }
}

/// Decodes one request and applies it to `nodes`; the encoded reply or the error to send.
fn serve(msg: &Message, method: &str, nodes: &mut HostedNodes) -> Result<Vec<u8>> {
    RequestContext::of(msg).check(format_args!("{method} reached host {}", nodes.host_id()))?;
    let req = HostRequest::decode(method, &msg.payload).map_err(|e| match e {
        ProtocolError::UnknownMethod { .. } => {
            Error::InvalidArgument(format!("unknown method {method:?} on subject {}", msg.subject))
        }
        ProtocolError::Decode(e) => Error::Decode(e),
    })?;
    let empty = || quiver_schemas::Wire::to_bytes(&Empty {});
    match req {
        HostRequest::StartNode(r) => {
            let body = r.into_body();
            tracing::info!(node = %body.node_id, role = body.role.as_str(), "start_node");
            nodes.start(&body).map(|()| empty())
        }
        HostRequest::StopNode(r) => {
            let body = r.into_body();
            tracing::info!(node = %body.node_id, "stop_node");
            nodes.stop(&body.node_id);
            Ok(empty())
        }
    }
}

/// Connects, opens the registry and subscribes to the agent's subjects, retrying (with a
/// growing pause) until all three work.
async fn connect_until_linked(config: Arc<Config>, url: String, id: String) -> Box<Connected> {
    let mut pause = Duration::from_secs(1);
    let wait = |pause: &mut Duration| {
        let now = *pause;
        *pause = (*pause * 2).min(RETRY_MAX);
        tokio::time::sleep(now)
    };
    loop {
        // The client reconnects by itself once it exists: it is kept across the retries below.
        let bus = match connect(&config, &url, &id).await {
            Ok(bus) => bus,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "host agent cannot connect to NATS");
                wait(&mut pause).await;
                continue;
            }
        };
        loop {
            match open(&config, &bus, &id).await {
                Ok(c) => return Box::new(c),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "host agent cannot use NATS yet");
                    wait(&mut pause).await;
                }
            }
        }
    }
}

async fn connect(config: &Config, url: &str, id: &str) -> Result<Bus> {
    let options = security::nats_connect_options(config, async_nats::ConnectOptions::new()).await?;
    Bus::connect_with(url, &config.cluster.name, &format!("quiver-host-{id}"), config.nats.request_timeout, options)
        .await
}

async fn open(config: &Config, bus: &Bus, id: &str) -> Result<Connected> {
    let opened = tokio::time::timeout(
        config.nats.request_timeout,
        Registry::open(bus, config.node.heartbeat_ttl, config.nats.replicas),
    )
    .await;
    let registry = match opened {
        Ok(r) => r?,
        Err(_) => return Err(Error::Unavailable("no answer from JetStream (is NATS up?)".into())),
    };
    let (subject, _) = bus.subjects().serve(Service::Host, id);
    let requests = bus.subscribe(subject).await?;
    bus.flush().await?;
    Ok(Connected { bus: bus.clone(), registry, requests })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_has_both_methods() {
        assert_eq!(HostRequest::METHODS, ["start_node", "stop_node"]);
    }
}
