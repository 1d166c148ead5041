//! `quiver host`: the host agent. It runs on a machine (or in a pod) with room for nodes and
//! starts and stops node processes there when the coordinator's scaler asks
//! (`quiver.<cluster>.host.<id>.start_node | stop_node`), restarts those that exit, and
//! reports the machine and its processes in the hosts registry every heartbeat.
//!
//! - `nodes.rs`: the agent's processes: `start_node` (ports, environment, log file),
//!   `stop_node` (drain, no restart, SIGKILL after `host.stop_grace`), the heartbeat's view.
//! - `agent.rs`: the NATS side: connecting (retried), answering requests, heartbeats.
//! - `sizing.rs`: sized nodes held to their size (`host.enforcement`: cgroups, CPU affinity,
//!   memory budgets and thread counts).
//! - `crate::process`: the child-process machinery shared with `quiver cluster`, which is a
//!   host agent too (`cluster/supervisor.rs`).
//!
//! Operator documentation: `docs/hosts.md`.

mod agent;
mod nodes;
mod sizing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quiver_runtime::Config;

pub use agent::HostAgent;
pub use nodes::{host_id, HostedNodes, NodeLauncher};
pub use sizing::Enforcement;

/// How often the processes are checked.
const POLL: Duration = Duration::from_millis(200);

#[derive(Args)]
pub struct HostArgs {
    /// The node configuration file (as for `quiver run`): NATS, credentials, data dir, `[host]`.
    /// The nodes the agent starts load it too.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The agent's id (overrides `host.id`; default: the hostname).
    #[arg(long)]
    id: Option<String>,
}

/// Runs the agent until SIGTERM or SIGINT; then stops its nodes and deregisters.
pub fn host(args: HostArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(id) = args.id {
        if !quiver_runtime::config::is_subject_token(&id) {
            bail!("--id {id:?}: use only letters, digits, '-' and '_' (the id is part of NATS subjects)");
        }
        config.host.id = id;
    }
    if config.nats.url.is_empty() {
        bail!("`quiver host` needs nats.url (or QUIVER_NATS__URL): the NATS of the cluster its nodes join");
    }
    let id = host_id(&config);
    // Before any thread is started: under cgroup v2 the agent may move itself into a leaf
    // cgroup (see `sizing`), and an explicit mode that does not work here stops it now.
    let enforcement = Enforcement::detect(&config.host.enforcement)?;
    let program = std::env::current_exe().context("cannot find the quiver binary to start nodes with")?;
    let mut run = vec!["run".to_string()];
    if let Some(file) = &args.config {
        let file = std::path::absolute(file).with_context(|| format!("cannot resolve {}", file.display()))?;
        run.extend(["--config".to_string(), file.display().to_string()]);
    }
    let env = vec![("QUIVER_CLUSTER__NAME".to_string(), config.cluster.name.clone())];
    let mut launcher = NodeLauncher::new(&config, program, run, env);
    // The nodes share the agent's configuration, environment overrides included.
    launcher.inherit_quiver_env = true;
    quiver_runtime::disk::create_dir_all(&launcher.logs_dir)
        .with_context(|| format!("cannot create {}", launcher.logs_dir.display()))?;
    // A current-thread runtime on the main thread: every child is forked from this thread,
    // and PR_SET_PDEATHSIG kills them when it ends (see `crate::process`).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    rt.block_on(serve(config, id, launcher, enforcement))
}

async fn serve(config: Config, id: String, launcher: NodeLauncher, enforcement: Enforcement) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tracing::info!(
        host = %id,
        cluster = %config.cluster.name,
        nats = %config.nats.url,
        max_nodes = config.host.max_nodes,
        enforcement = enforcement.name(),
        pid = std::process::id(),
        "host agent starting"
    );
    let mut nodes = HostedNodes::new(id.clone(), launcher, config.host.max_nodes, config.host.stop_grace, enforcement);
    let shutdown_grace = config.host.shutdown_grace;
    let url = config.nats.url.clone();
    let mut agent = HostAgent::connect(Arc::new(config), url, id.clone());
    loop {
        let wake = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping the nodes"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping the nodes"); break; }
            _ = tokio::time::sleep(POLL) => None,
            wake = agent.wake() => Some(wake),
        };
        if let Some(wake) = wake {
            agent.handle(wake, &mut nodes).await;
        }
        nodes.poll(Instant::now());
    }
    nodes.stop_all(shutdown_grace).await;
    agent.deregister().await;
    tracing::info!(host = %id, "host agent stopped");
    Ok(0)
}
