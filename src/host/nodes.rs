//! The node processes of a host agent: what `start_node` and `stop_node` change and what the
//! heartbeat reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quiver_runtime::{Config, Error, Result};
use quiver_schemas::{HostStatus, HostedNode, Role, StartNode};

use crate::process::{self, Launch, Process, RestartPolicy};

/// How many ports above the configured one are tried for a node's gRPC or metrics endpoint.
const PORT_SPAN: u16 = 100;

/// How the agent starts a node process.
#[derive(Debug, Clone)]
pub struct NodeLauncher {
    /// The `quiver` binary.
    pub program: PathBuf,
    /// Arguments before `--role <role>`: `run [--config FILE]`.
    pub args: Vec<String>,
    /// Environment of every node, before the per-node variables.
    pub env: Vec<(String, String)>,
    /// Whether nodes keep the agent's own `QUIVER_*` variables (see [`Launch`]).
    pub inherit_quiver_env: bool,
    /// `<dir>/<node id>.log`.
    pub logs_dir: PathBuf,
    /// Written into the logs before each start.
    pub starter: &'static str,
    pub policy: RestartPolicy,
    /// `proxy.grpc_host` of the nodes.
    pub grpc_host: String,
    /// `proxy.grpc_port` of the nodes: the first port tried for a proxy (0: no gRPC API).
    pub grpc_port: u16,
    /// `proxy.http_host` of the nodes.
    pub http_host: String,
    /// `proxy.http_port` of the nodes: the first port tried for a proxy's HTTP admin API (0: off).
    pub http_port: u16,
    /// Host of the nodes' Prometheus endpoints.
    pub metrics_host: String,
    /// `host.metrics_port_base` (0: no endpoint).
    pub metrics_port_base: u16,
}

impl NodeLauncher {
    /// A launcher whose ports come from `config` (the nodes' configuration).
    pub fn new(config: &Config, program: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> NodeLauncher {
        let metrics_host = config
            .metrics
            .listen
            .parse::<std::net::SocketAddr>()
            .map_or_else(|_| "127.0.0.1".to_string(), |a| a.ip().to_string());
        NodeLauncher {
            program,
            args,
            env,
            inherit_quiver_env: false,
            logs_dir: config.cluster.data_dir.join("logs"),
            starter: "quiver host",
            policy: RestartPolicy::default(),
            grpc_host: config.proxy.grpc_host.clone(),
            grpc_port: config.proxy.grpc_port,
            http_host: config.proxy.http_host.clone(),
            http_port: config.proxy.http_port,
            metrics_host,
            metrics_port_base: config.host.metrics_port_base,
        }
    }
}

/// One process of the agent.
struct Hosted {
    process: Process,
    /// Started through `start_node` (by the scaler), not from a cluster file.
    managed: bool,
    /// Ports handed to it (gRPC, metrics), so two nodes starting at once do not get the same.
    ports: Vec<u16>,
}

/// The processes a host agent runs.
pub struct HostedNodes {
    host_id: String,
    launcher: NodeLauncher,
    max_nodes: u32,
    stop_grace: Duration,
    nodes: Vec<Hosted>,
}

impl HostedNodes {
    pub fn new(host_id: String, launcher: NodeLauncher, max_nodes: u32, stop_grace: Duration) -> HostedNodes {
        HostedNodes { host_id, launcher, max_nodes, stop_grace, nodes: Vec::new() }
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Takes on a process started by the caller (a node of a cluster file): reported, stopped
    /// by `stop_node`, but not started by the scaler.
    pub fn adopt(&mut self, process: Process) {
        self.nodes.push(Hosted { process, managed: false, ports: Vec::new() });
    }

    /// `start_node`: starts `quiver run --role <role>` as node `node_id`. A node of that id
    /// already here (running, restarting or stopping) is left alone.
    pub fn start(&mut self, req: &StartNode) -> Result<()> {
        let id = &req.node_id;
        if !quiver_runtime::config::is_subject_token(id) || id.len() > 64 {
            return Err(Error::InvalidArgument(format!(
                "node id {id:?}: use 1 to 64 letters, digits, '-' and '_' (it names subjects and files)"
            )));
        }
        if let Some(h) = self.nodes.iter().find(|h| &h.process.name == id) {
            if h.process.roles != [req.role.as_str()] {
                return Err(Error::AlreadyExists(format!(
                    "host {}: node {id} already runs here with roles {:?}; start the {} under another id",
                    self.host_id,
                    h.process.roles,
                    req.role.as_str()
                )));
            }
            return Ok(());
        }
        let running = self.nodes.iter().filter(|h| !h.process.stopping()).count();
        if running >= self.max_nodes as usize {
            return Err(Error::ResourceExhausted(format!(
                "host {} already runs {running} node processes, its host.max_nodes; start the node on another \
                 host, or raise host.max_nodes there",
                self.host_id
            )));
        }
        let l = &self.launcher;
        let taken: Vec<u16> = self.nodes.iter().flat_map(|h| h.ports.iter().copied()).collect();
        let mut ports = Vec::new();
        let mut env = l.env.clone();
        env.push(("QUIVER_NODE__ID".into(), id.clone()));
        env.push(("QUIVER_NODE__HOST_AGENT".into(), self.host_id.clone()));
        if req.role == Role::Proxy {
            // Several proxies may share the machine: each listener gets the first free port
            // at or above the configured one.
            let listeners = [
                (
                    "the proxy's Milvus gRPC API",
                    "proxy.grpc_port",
                    "QUIVER_PROXY__GRPC_PORT",
                    &l.grpc_host,
                    l.grpc_port,
                ),
                ("the proxy's HTTP admin API", "proxy.http_port", "QUIVER_PROXY__HTTP_PORT", &l.http_host, l.http_port),
            ];
            for (what, key, var, host, base) in listeners.into_iter().filter(|(.., base)| *base != 0) {
                let taken: Vec<u16> = taken.iter().chain(&ports).copied().collect();
                let port = free_port(host, base, &taken).ok_or_else(|| {
                    Error::ResourceExhausted(format!(
                        "host {}: no free port for {what} on {host} from {base} to {}; free one or set another {key}",
                        self.host_id,
                        base.saturating_add(PORT_SPAN - 1)
                    ))
                })?;
                ports.push(port);
                env.push((var.into(), port.to_string()));
            }
        }
        let metrics = if l.metrics_port_base == 0 {
            String::new()
        } else {
            let taken: Vec<u16> = taken.iter().chain(&ports).copied().collect();
            let port = free_port(&l.metrics_host, l.metrics_port_base, &taken).ok_or_else(|| {
                Error::ResourceExhausted(format!(
                    "host {}: no free port for a metrics endpoint on {} from host.metrics_port_base {}; free one \
                     or set another base (0 turns the endpoints off)",
                    self.host_id, l.metrics_host, l.metrics_port_base
                ))
            })?;
            ports.push(port);
            format!("{}:{port}", l.metrics_host)
        };
        env.push(("QUIVER_METRICS__LISTEN".into(), metrics));
        let mut args = l.args.clone();
        args.extend(["--role".to_string(), req.role.as_str().to_string()]);
        let launch = Launch {
            program: l.program.clone(),
            args,
            env,
            inherit_quiver_env: l.inherit_quiver_env,
            log: l.logs_dir.join(format!("{id}.log")),
            starter: l.starter,
        };
        let mut process = Process::new(id, vec![req.role.as_str().to_string()], launch, l.policy);
        process.start();
        if process.pid().is_none() {
            let why = process.last_exit().unwrap_or("unknown").to_string();
            return Err(Error::Unavailable(format!(
                "host {}: cannot start node {id}: {why}; see {}",
                self.host_id,
                process.log().display()
            )));
        }
        self.nodes.push(Hosted { process, managed: true, ports });
        Ok(())
    }

    /// `stop_node`: SIGTERM (the node drains and exits), never restarted, SIGKILL after
    /// `host.stop_grace`. An unknown id is no error: it may have gone already.
    pub fn stop(&mut self, node_id: &str) {
        match self.nodes.iter_mut().find(|h| h.process.name == node_id) {
            Some(h) => h.process.stop(self.stop_grace),
            None => tracing::info!(node = node_id, "stop_node for a node not running here; nothing to do"),
        }
    }

    /// Reaps, restarts and kills as due; forgets nodes that were stopped and have exited.
    /// True if anything changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for h in &mut self.nodes {
            changed |= h.process.poll(now);
        }
        let before = self.nodes.len();
        self.nodes.retain(|h| !h.process.finished());
        changed || self.nodes.len() != before
    }

    /// Every process with whether the scaler started it.
    pub fn processes(&self) -> impl Iterator<Item = (&Process, bool)> {
        self.nodes.iter().map(|h| (&h.process, h.managed))
    }

    /// Stops every process (SIGTERM, SIGKILL after `grace`) and waits for them.
    pub async fn stop_all(&mut self, grace: Duration) {
        let mut procs: Vec<&mut Process> = self.nodes.iter_mut().map(|h| &mut h.process).collect();
        process::stop_all(&mut procs, grace).await;
    }

    /// The heartbeat's list of processes.
    pub fn hosted(&self) -> Vec<HostedNode> {
        self.nodes
            .iter()
            .map(|h| HostedNode {
                node_id: h.process.name.clone(),
                roles: h.process.roles.iter().filter_map(|r| Role::parse(r)).collect(),
                pid: h.process.pid().unwrap_or(0),
                restarts: h.process.restarts(),
                managed: h.managed,
                stopping: h.process.stopping(),
                last_exit: h.process.last_exit().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The agent's registry entry as of now.
    pub fn status(&self, started_ms: u64) -> HostStatus {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        HostStatus {
            host_id: self.host_id.clone(),
            hostname: quiver_runtime::telemetry::hostname(),
            pid: std::process::id(),
            cpus,
            mem_total: quiver_runtime::telemetry::machine_memory(),
            mem_available: quiver_runtime::telemetry::machine_memory_available(),
            max_nodes: self.max_nodes,
            nodes: self.hosted(),
            started_ms,
            heartbeat_ms: process::now_ms(),
        }
    }
}

/// The first port at or above `base` (trying [`PORT_SPAN`]) that is not in `taken` and can be
/// bound on `host` now.
pub fn free_port(host: &str, base: u16, taken: &[u16]) -> Option<u16> {
    (0..PORT_SPAN)
        .filter_map(|i| base.checked_add(i))
        .filter(|p| !taken.contains(p))
        .find(|p| std::net::TcpListener::bind((host, *p)).is_ok())
}

/// The agent's id: `host.id`, else the hostname with every character that cannot be in a
/// subject token replaced by '-'.
pub fn host_id(config: &Config) -> String {
    if !config.host.id.is_empty() {
        return config.host.id.clone();
    }
    let name: String = quiver_runtime::telemetry::hostname()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn free_port_skips_bound_and_taken_ports() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        if port > u16::MAX - 10 {
            return;
        }
        let got = free_port("127.0.0.1", port, &[]).unwrap();
        assert!(got > port, "{got} is bound");
        let next = free_port("127.0.0.1", port, &[got]).unwrap();
        assert!(next > got, "{next} was taken");
        assert_eq!(free_port("127.0.0.1", u16::MAX, &[u16::MAX]), None);
    }

    #[test]
    fn the_id_is_a_subject_token() {
        let mut c = Config::default();
        assert!(quiver_runtime::config::is_subject_token(&host_id(&c)), "{}", host_id(&c));
        c.host.id = "rack-1".into();
        assert_eq!(host_id(&c), "rack-1");
    }

    fn table(dir: &std::path::Path, max_nodes: u32) -> HostedNodes {
        let mut config = Config::default();
        config.cluster.data_dir = dir.into();
        // A stand-in node: `sh -c 'exec sleep 30' sh --role <role>`.
        let args = vec!["-c".into(), "exec sleep 30".into(), "sh".into()];
        let launcher = NodeLauncher::new(&config, "sh".into(), args, Vec::new());
        std::fs::create_dir_all(&launcher.logs_dir).unwrap();
        HostedNodes::new("h1".into(), launcher, max_nodes, Duration::from_secs(5))
    }

    #[test]
    fn start_is_idempotent_bounded_and_stop_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = table(dir.path(), 1);
        let req = StartNode { node_id: "qn-1".into(), role: Role::QueryNode };
        t.start(&req).unwrap();
        t.start(&req).unwrap();
        assert_eq!(t.hosted().len(), 1);
        let other = StartNode { node_id: "qn-2".into(), role: Role::QueryNode };
        assert!(matches!(t.start(&other), Err(Error::ResourceExhausted(_))));
        let clash = StartNode { node_id: "qn-1".into(), role: Role::DataNode };
        assert!(matches!(t.start(&clash), Err(Error::AlreadyExists(_))));
        let bad = StartNode { node_id: "a.b".into(), role: Role::DataNode };
        assert!(matches!(t.start(&bad), Err(Error::InvalidArgument(_))));
        let s = t.status(1);
        assert!(s.nodes[0].pid != 0 && s.nodes[0].managed && s.nodes[0].roles == [Role::QueryNode]);
        t.stop("qn-1");
        t.stop("unknown");
        assert!(t.hosted()[0].stopping);
        let start = Instant::now();
        while !t.hosted().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "not gone after SIGTERM");
            t.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Room again once it is gone.
        t.start(&other).unwrap();
        let env = std::fs::read_to_string(dir.path().join("logs/qn-2.log")).unwrap();
        assert!(env.contains("==== quiver host: starting qn-2"), "{env}");
    }
}
