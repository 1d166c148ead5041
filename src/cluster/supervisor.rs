//! `quiver cluster supervise`: the background process `cluster up` starts. It runs the
//! nats-server (if the cluster file manages one) and every node as child processes, restarts
//! any that exits (`crate::process`), and keeps the state file current; on SIGTERM or SIGINT
//! it stops them all.
//!
//! It is also a host agent (`crate::host`): once its nats-server is up it serves
//! `start_node` / `stop_node` as host `[cluster] host_id` (default `<name>-local`), with the
//! file's nodes as its unmanaged processes and the scaler's as managed ones. The agent's NATS
//! side retries until NATS is reachable and never stops the supervisor.
//!
//! Everything runs on the main thread: children are spawned from it, and `PR_SET_PDEATHSIG`
//! fires when the *thread* that forked a child ends, so that thread must live as long as the
//! supervisor does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::spec::{ClusterSpec, NatsSpec};
use super::state::{self, ProcessState, State, SupervisorLock};
use crate::host::{HostAgent, HostedNodes, NodeLauncher};
use crate::process::{stop_all, Launch, Process};
/// Name of the managed nats-server in logs, the state file and `status`.
pub const NATS: &str = "nats-server";

/// How often children are checked.
const POLL: Duration = Duration::from_millis(200);

pub fn supervise(spec: ClusterSpec) -> anyhow::Result<i32> {
    std::fs::create_dir_all(spec.state_dir())
        .with_context(|| format!("cannot create {}", spec.state_dir().display()))?;
    std::fs::create_dir_all(spec.logs_dir()).with_context(|| format!("cannot create {}", spec.logs_dir().display()))?;
    let Some(_lock) = SupervisorLock::acquire(&spec.lock_file(), Duration::from_secs(2))? else {
        bail!(
            "cluster {:?} already has a supervisor (lock {} is held); not starting a second one",
            spec.name,
            spec.lock_file().display()
        );
    };
    // A current-thread runtime: only for the signal streams and the timer, so every child is
    // still spawned from this (the main) thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    rt.block_on(run(spec))
}

async fn run(spec: ClusterSpec) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let program = std::env::current_exe().context("cannot find the quiver binary to start nodes with")?;
    // Checked when the file was loaded (the defaults only if the node config file has broken since).
    let shared = spec.shared_config().unwrap_or_default();
    let launcher = scaled_node_launcher(&spec, &shared, program.clone());
    // How the sizes of the nodes the scaler starts here are held (an explicit mode that does
    // not work on this machine stops the supervisor now).
    let enforcement = crate::host::Enforcement::detect(&shared.host.enforcement)?;
    let mut sup = Supervision {
        state: State {
            cluster: spec.name.clone(),
            supervisor_pid: std::process::id(),
            started_ms: state::now_ms(),
            stopping: false,
            nats: None,
            more_nats: Vec::new(),
            nodes: Vec::new(),
        },
        nats: Vec::new(),
        nodes: HostedNodes::new(
            spec.host_id.clone(),
            launcher,
            shared.host.max_nodes,
            shared.host.stop_grace,
            enforcement,
        ),
        state_file: spec.state_file(),
    };
    tracing::info!(
        cluster = %spec.name,
        file = %spec.file.display(),
        pid = std::process::id(),
        "cluster supervisor starting"
    );

    if let NatsSpec::Managed { port, server_bin, sync_interval, servers, route_port } = &spec.nats {
        let ports: Vec<u16> = (*port..*port + servers).collect();
        // A server already on a port would be used by the nodes while ours fails to bind:
        // refuse instead of silently joining someone else's NATS.
        if let Some(taken) = ports
            .iter()
            .chain(&(*route_port..*route_port + servers).collect::<Vec<_>>())
            .find(|p| port_open(**p) && (*servers > 1 || ports.contains(p)))
        {
            bail!(
                "port {taken} is already in use, so a nats-server cannot be started there; pick another \
                 [nats] port (or route_port), or set [nats] url to use the server that listens there"
            );
        }
        let extra = quiver_runtime::security::nats_server_conf(&spec.shared_config()?)?;
        for (i, client_port) in ports.iter().enumerate() {
            // One server keeps its store and configuration where earlier versions put them.
            let (name, store) = match servers {
                1 => (NATS.to_string(), spec.nats_store()),
                _ => (format!("{NATS}-{i}"), spec.nats_store().join(i.to_string())),
            };
            quiver_runtime::disk::create_dir_all(&store)
                .with_context(|| format!("cannot create {}", store.display()))?;
            let conf = store.join("nats-server.conf");
            // Large insert batches travel as single messages: raise the 1 MiB default payload
            // (as the embedded server of `quiver standalone` does).
            let mut text = format!(
                "server_name: \"{name}\"\nlisten: \"127.0.0.1:{client_port}\"\nmax_payload: 8MB\n{}",
                quiver_runtime::nats_server::jetstream_block(&store, *sync_interval)
            );
            if *servers > 1 {
                let routes: Vec<String> =
                    (0..*servers).map(|j| format!("\"nats-route://127.0.0.1:{}\"", route_port + j)).collect();
                text.push_str(&format!(
                    "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    spec.name,
                    route_port + i as u16,
                    routes.join(", ")
                ));
            }
            // Authorization (credentials generated on the first start) and TLS, as in standalone;
            // owner-only, since the authorization block holds passwords.
            quiver_runtime::security::write_private(&conf, &format!("{text}{extra}"))?;
            let launch = Launch {
                program: PathBuf::from(server_bin),
                args: vec!["-c".into(), conf.display().to_string()],
                env: Vec::new(),
                inherit_quiver_env: false,
                log: spec.log_file(&name),
                starter: STARTER,
            };
            let mut nats = Process::new(&name, Vec::new(), launch, spec.restart_policy());
            nats.start();
            sup.nats.push(nats);
        }
        sup.write_state();
        let ready = Instant::now();
        while !ports.iter().all(|p| port_open(*p)) && ready.elapsed() < Duration::from_secs(15) {
            for n in sup.nats.iter_mut() {
                n.poll(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if ports.iter().all(|p| port_open(*p)) {
            tracing::info!(?ports, "nats-server is up");
        } else {
            // The nodes retry their connection (and are restarted if they give up): go on.
            tracing::warn!(?ports, logs = %spec.logs_dir().display(), "nats-server is not listening after 15 s");
        }
    }
    for node in &spec.nodes {
        let launch = Launch {
            program: program.clone(),
            args: spec.node_args(node),
            env: spec.node_env(node),
            inherit_quiver_env: false,
            log: spec.log_file(&node.id),
            starter: STARTER,
        };
        let mut p = Process::new(&node.id, node.role_names(), launch, spec.restart_policy());
        p.start();
        sup.nodes.adopt(p);
    }
    sup.write_state();
    let mut agent = host_agent(&spec);

    loop {
        let wake = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping the cluster"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping the cluster"); break; }
            _ = tokio::time::sleep(POLL) => None,
            wake = async {
                match agent.as_mut() {
                    Some(a) => a.wake().await,
                    None => std::future::pending().await,
                }
            } => Some(wake),
        };
        let mut changed = false;
        if let (Some(wake), Some(a)) = (wake, agent.as_mut()) {
            a.handle(wake, &mut sup.nodes).await;
            changed = true;
        }
        let now = Instant::now();
        for p in sup.nats.iter_mut() {
            changed |= p.poll(now);
        }
        changed |= sup.nodes.poll(now);
        if changed {
            sup.write_state();
        }
    }

    sup.state.stopping = true;
    sup.write_state();
    // Nodes first, so they can still reach NATS while they drain; the server last.
    sup.nodes.stop_all(spec.supervisor.stop_grace).await;
    if let Some(a) = &agent {
        a.deregister().await;
    }
    if !sup.nats.is_empty() {
        let mut servers: Vec<&mut Process> = sup.nats.iter_mut().collect();
        stop_all(&mut servers, spec.supervisor.stop_grace).await;
    }
    if let Err(e) = std::fs::remove_file(&sup.state_file) {
        tracing::warn!(error = %e, "cannot remove the state file");
    }
    tracing::info!(cluster = %spec.name, "cluster stopped");
    Ok(0)
}

/// Who starts the processes, in their logs.
const STARTER: &str = "quiver cluster";

/// The supervisor's children and the state file that mirrors them.
struct Supervision {
    state: State,
    /// The managed nats-servers (none with `[nats] url`).
    nats: Vec<Process>,
    /// The cluster file's nodes and those the scaler started.
    nodes: HostedNodes,
    state_file: PathBuf,
}

impl Supervision {
    fn write_state(&mut self) {
        self.state.nats = self.nats.first().map(|p| snapshot(p, false));
        self.state.more_nats = self.nats.iter().skip(1).map(|p| snapshot(p, false)).collect();
        self.state.nodes = self.nodes.processes().map(|(p, managed)| snapshot(p, managed)).collect();
        if let Err(e) = self.state.write(&self.state_file) {
            tracing::warn!(error = format!("{e:#}"), "cannot write the state file");
        }
    }
}

fn snapshot(p: &Process, managed: bool) -> ProcessState {
    ProcessState {
        name: p.name.clone(),
        roles: p.roles.clone(),
        pid: p.pid(),
        restarts: p.restarts(),
        since_ms: p.since_ms(),
        last_exit: p.last_exit().map(str::to_string),
        log: p.log().to_path_buf(),
        managed,
        stopping: p.stopping(),
    }
}

/// How nodes the scaler asks for are started: as the file's nodes (cluster-level environment,
/// the shared node config file), ports from the cluster's node configuration.
fn scaled_node_launcher(spec: &ClusterSpec, config: &quiver_runtime::Config, program: PathBuf) -> NodeLauncher {
    let mut launcher = NodeLauncher::new(config, program, spec.scaled_node_args(), spec.scaled_node_env());
    launcher.logs_dir = spec.logs_dir();
    launcher.starter = STARTER;
    launcher.policy = spec.restart_policy();
    launcher
}

/// The supervisor's host agent, connecting as the `node` principal (unless security is off)
/// to the cluster's NATS; `None` (and a warning) if the cluster's node configuration cannot be
/// loaded, since the agent then cannot know how to connect.
fn host_agent(spec: &ClusterSpec) -> Option<HostAgent> {
    match spec.shared_config() {
        Ok(config) => {
            tracing::info!(host = %spec.host_id, "serving as host agent {}", spec.host_id);
            Some(HostAgent::connect(Arc::new(config), spec.nats_url(), spec.host_id.clone()))
        }
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "no host agent: the scaler cannot start nodes here");
            None
        }
    }
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
