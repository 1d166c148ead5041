//! `quiver cluster up | status | down --config FILE`: a multi-process cluster on one machine,
//! each node its own OS process, kept running by a background supervisor.
//!
//! - `spec.rs`: the cluster file (format, defaults, checks).
//! - `supervisor.rs`: the hidden `quiver cluster supervise` process that `up` starts detached:
//!   runs nats-server and the nodes as children, restarts them, writes the state file.
//!   It is a host agent too (`crate::host`): the coordinator's scaler starts and stops nodes
//!   through it.
//! - `state.rs`: the lock and state file under `<data_dir>/cluster`, process probes, log tails.
//! - this file: the commands, which only read the lock, the state file and the cluster's own
//!   registry (`quiver_client::Client::status`), and signal the supervisor.
//!
//! Operator documentation: `docs/cluster.md`.

mod spec;
mod state;
mod supervisor;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use quiver_client::{Client, ClusterStatus, NodeStatus};

use spec::{ClusterSpec, NatsSpec};
use state::{State, Supervisor};

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start the cluster in the background and wait until every node is registered and healthy.
    Up {
        /// The cluster file (see examples/cluster.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// How long to wait for every node to be healthy (the cluster keeps running either way).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// The supervisor, each process (pid, restarts) and what the cluster's registry says.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stop every process of the cluster and its supervisor; waits until all are gone.
    Down {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The background supervisor started by `up` (not for direct use).
    #[command(hide = true)]
    Supervise {
        #[arg(long, short)]
        config: PathBuf,
    },
}

impl ClusterArgs {
    /// Whether this is the long-running supervisor (which logs what it does).
    pub fn is_supervisor(&self) -> bool {
        matches!(self.command, ClusterCommand::Supervise { .. })
    }
}

/// Exit code of `status` for a cluster that is not running (as `systemctl status` does).
const NOT_RUNNING: i32 = 3;

/// Lines of a log printed when something fails.
const TAIL: usize = 20;

pub fn cluster(args: ClusterArgs) -> anyhow::Result<i32> {
    match args.command {
        ClusterCommand::Up { config, timeout } => up(&config, timeout),
        ClusterCommand::Status { config } => status(&config),
        ClusterCommand::Down { config } => down(&config),
        ClusterCommand::Supervise { config } => supervisor::supervise(ClusterSpec::load(&config)?),
    }
}

fn up(config: &Path, timeout: Duration) -> anyhow::Result<i32> {
    let spec = ClusterSpec::load(config)?;
    if let Supervisor::Running(pid) = state::probe(&spec.lock_file())? {
        eprintln!(
            "cluster {:?} is already running (supervisor pid {}); not starting a second one.\n\
             `quiver cluster status --config {}` shows it, `quiver cluster down --config {}` stops it.",
            spec.name,
            pid.map_or_else(|| "?".into(), |p| p.to_string()),
            config.display(),
            config.display()
        );
        return Ok(1);
    }
    for dir in [spec.state_dir(), spec.logs_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Left by a supervisor that was killed (its processes died with it).
    let _ = std::fs::remove_file(spec.state_file());
    let mut supervisor = spawn_supervisor(&spec)?;
    eprintln!(
        "cluster {}: supervisor started (pid {}, log {}); waiting up to {} for {} nodes",
        spec.name,
        supervisor.id(),
        spec.log_file("supervisor").display(),
        humantime::format_duration(timeout),
        spec.nodes.len()
    );
    runtime()?.block_on(wait_ready(&spec, config, &mut supervisor, timeout))
}

/// Starts `quiver cluster supervise` in a session of its own (so neither Ctrl-C on `up` nor
/// a closing terminal reaches it), output appended to `<data_dir>/logs/supervisor.log`.
fn spawn_supervisor(spec: &ClusterSpec) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the quiver binary")?;
    let path = spec.log_file("supervisor");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(["cluster", "supervise", "--config"])
        .arg(&spec.file)
        .current_dir(&spec.data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("cannot start the cluster supervisor")
}

async fn wait_ready(spec: &ClusterSpec, config: &Path, supervisor: &mut Child, limit: Duration) -> anyhow::Result<i32> {
    let start = Instant::now();
    let mut client: Option<Client> = None;
    loop {
        if let Ok(Some(exit)) = supervisor.try_wait() {
            eprintln!(
                "the cluster supervisor exited ({exit}); last lines of {}:\n{}",
                spec.log_file("supervisor").display(),
                state::log_tail(&spec.log_file("supervisor"), TAIL)
            );
            return Ok(1);
        }
        let st = State::read(&spec.state_file()).ok().flatten();
        if client.is_none() {
            client = connect(spec, Duration::from_secs(2)).await.ok();
        }
        let registry = match &client {
            Some(c) => registry(c).await,
            None => Err(format!("no NATS server answers at {}", spec.nats_url())),
        };
        let waiting = match (&st, &registry) {
            (Some(st), Ok(reg)) => not_ready(spec, st, reg),
            (None, _) => vec![("supervisor".to_string(), "no state file yet".to_string())],
            (_, Err(e)) => vec![("registry".to_string(), e.clone())],
        };
        if waiting.is_empty() {
            print_status(spec, Supervisor::Running(Some(supervisor.id())), st.as_ref(), &registry);
            return Ok(0);
        }
        if start.elapsed() >= limit {
            report_timeout(spec, config, st.as_ref(), &registry, &waiting, limit);
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `(node, why)` for every node that is not running with all its roles registered healthy
/// by that very process (entries a killed incarnation left behind do not count).
fn not_ready(spec: &ClusterSpec, st: &State, reg: &ClusterStatus) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for node in &spec.nodes {
        let Some(p) = st.nodes.iter().find(|p| p.name == node.id) else {
            out.push((node.id.clone(), "not started yet".into()));
            continue;
        };
        let Some(pid) = p.pid else {
            let last = p.last_exit.as_deref().unwrap_or("?");
            out.push((node.id.clone(), format!("not running (last exit: {last}; restarted {} times)", p.restarts)));
            continue;
        };
        for role in &node.roles {
            let id = node.registry_id(*role);
            let why = match reg.nodes.iter().find(|n| n.node_id == id) {
                None => format!("{id} is not registered"),
                Some(n) if n.pid != pid => format!("{id} is registered by an old process (pid {})", n.pid),
                Some(n) if !n.healthy => format!("{id} is unhealthy: {}", n.detail),
                Some(_) => continue,
            };
            out.push((node.id.clone(), why));
        }
    }
    out
}

fn report_timeout(
    spec: &ClusterSpec,
    config: &Path,
    st: Option<&State>,
    registry: &Result<ClusterStatus, String>,
    waiting: &[(String, String)],
    limit: Duration,
) {
    eprintln!("cluster {} is not ready after {}:", spec.name, humantime::format_duration(limit));
    for (node, why) in waiting {
        eprintln!("  {node}: {why}");
    }
    // Whose log explains it: the nodes that are not ready; without an answer from the registry,
    // the NATS server and the proxies (the registry is read through them).
    let mut logs: Vec<(String, PathBuf)> = Vec::new();
    if registry.is_err() {
        if let NatsSpec::Managed { servers, .. } = spec.nats {
            let names: Vec<String> = match servers {
                1 => vec![supervisor::NATS.into()],
                _ => (0..servers).map(|i| format!("{}-{i}", supervisor::NATS)).collect(),
            };
            logs.extend(names.into_iter().map(|n| (n.clone(), spec.log_file(&n))));
        }
        for n in spec.nodes.iter().filter(|n| n.roles.contains(&quiver_client::Role::Proxy)) {
            logs.push((n.id.clone(), spec.log_file(&n.id)));
        }
    } else {
        for (node, _) in waiting {
            if !logs.iter().any(|(n, _)| n == node) {
                logs.push((node.clone(), spec.log_file(node)));
            }
        }
    }
    if st.is_none() {
        logs.push(("supervisor".into(), spec.log_file("supervisor")));
    }
    for (name, path) in logs {
        eprintln!("---- last lines of {name} ({}) ----\n{}", path.display(), state::log_tail(&path, TAIL));
    }
    eprintln!(
        "the cluster is still running and its supervisor keeps restarting what exits; \
         `quiver cluster status --config {0}` shows it, `quiver cluster down --config {0}` stops it",
        config.display()
    );
}

fn status(config: &Path) -> anyhow::Result<i32> {
    let spec = ClusterSpec::load(config)?;
    let sup = state::probe(&spec.lock_file())?;
    let st = match State::read(&spec.state_file()) {
        Ok(st) => st,
        Err(e) => {
            println!("note: {e:#}");
            None
        }
    };
    if sup == Supervisor::Stopped {
        println!("cluster {}: not running (no supervisor for {})", spec.name, spec.data_dir.display());
        if let Some(st) = st {
            println!(
                "note: a state file of supervisor pid {} is left over: it was killed, and its processes with it",
                st.supervisor_pid
            );
        }
        return Ok(NOT_RUNNING);
    }
    let registry = runtime()?.block_on(async {
        match connect(&spec, Duration::from_secs(3)).await {
            Ok(c) => registry(&c).await,
            Err(e) => Err(e),
        }
    });
    print_status(&spec, sup, st.as_ref(), &registry);
    Ok(0)
}

fn down(config: &Path) -> anyhow::Result<i32> {
    let spec = ClusterSpec::load(config)?;
    let pid = match state::probe(&spec.lock_file())? {
        Supervisor::Stopped => {
            if let Ok(Some(st)) = State::read(&spec.state_file()) {
                // Its children got SIGKILL with it (PR_SET_PDEATHSIG); only say if one is left.
                let left: Vec<u32> = st.pids().into_iter().filter(|p| state::alive(*p)).collect();
                if !left.is_empty() {
                    eprintln!("warning: pids {left:?} listed by the killed supervisor still exist; check them");
                }
                let _ = std::fs::remove_file(spec.state_file());
            }
            println!("cluster {} is not running", spec.name);
            return Ok(0);
        }
        Supervisor::Running(Some(pid)) => pid,
        // It has the lock but has not written its pid yet: it is just starting.
        Supervisor::Running(None) => {
            std::thread::sleep(Duration::from_millis(500));
            match state::probe(&spec.lock_file())? {
                Supervisor::Running(Some(pid)) => pid,
                Supervisor::Stopped => {
                    println!("cluster {} is not running", spec.name);
                    return Ok(0);
                }
                Supervisor::Running(None) => anyhow::bail!(
                    "a supervisor holds {} but wrote no pid into it; stop it by hand",
                    spec.lock_file().display()
                ),
            }
        }
    };
    let children = State::read(&spec.state_file()).ok().flatten().map(|s| s.pids()).unwrap_or_default();
    eprintln!("stopping cluster {} (supervisor pid {pid}, {} processes)", spec.name, children.len());
    state::signal(pid, libc::SIGTERM);
    // The supervisor gives the nodes, then the nats-server, `stop_grace` each.
    let limit = spec.supervisor.stop_grace * 2 + Duration::from_secs(10);
    let gone = |spec: &ClusterSpec| {
        matches!(state::probe(&spec.lock_file()), Ok(Supervisor::Stopped)) && !children.iter().any(|p| state::alive(*p))
    };
    let start = Instant::now();
    while !gone(&spec) {
        if start.elapsed() >= limit {
            eprintln!("the supervisor did not stop within {}; SIGKILL", humantime::format_duration(limit));
            state::signal(pid, libc::SIGKILL);
            // Its children get SIGKILL from the kernel when it dies (PR_SET_PDEATHSIG).
            let killed = Instant::now();
            while !gone(&spec) {
                if killed.elapsed() >= Duration::from_secs(10) {
                    anyhow::bail!("cluster {} did not stop: processes {children:?} are still there", spec.name);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(spec.state_file());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("cluster {} stopped", spec.name);
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")
}

async fn connect(spec: &ClusterSpec, limit: Duration) -> Result<Client, String> {
    let url = spec.nats_url();
    let options = spec.client_options().map_err(|e| format!("{e:#}"))?;
    match tokio::time::timeout(limit, Client::connect_with(&url, &spec.name, &options)).await {
        Ok(Ok(c)) => Ok(c.with_timeout(Duration::from_secs(3))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no NATS server answered at {url} within {limit:?}")),
    }
}

async fn registry(client: &Client) -> Result<ClusterStatus, String> {
    client.status().await.map_err(|e| e.to_string())
}

fn print_status(spec: &ClusterSpec, sup: Supervisor, st: Option<&State>, registry: &Result<ClusterStatus, String>) {
    let now = state::now_ms();
    let pid = match sup {
        Supervisor::Running(Some(p)) => p.to_string(),
        _ => "?".into(),
    };
    let since = st.map(|s| format!(" for {}", age(now, s.started_ms))).unwrap_or_default();
    let stopping = if st.is_some_and(|s| s.stopping) { " (stopping)" } else { "" };
    println!("cluster {}: supervisor pid {pid}{since}{stopping}; NATS {}", spec.name, spec.nats_url());
    println!("data dir {} (logs in {})", spec.data_dir.display(), spec.logs_dir().display());
    let Some(st) = st else {
        println!("note: no state file yet ({}); the supervisor is starting", spec.state_file().display());
        return;
    };
    println!(
        "{:<16} {:<12} {:>8} {:<10} {:>8} {:>7}  {:<10} {:>11} {:>8}  LAST EXIT",
        "PROCESS", "ROLE", "PID", "RUNNING", "RESTARTS", "SINCE", "REGISTRY", "MEMORY", "SEGMENTS"
    );
    let reg = registry.as_ref().ok();
    let row = |p: &state::ProcessState, role: &str, entry: Option<Option<&NodeStatus>>| {
        let running = match p.pid {
            Some(pid) if p.stopping && state::alive(pid) => "stopping",
            Some(pid) if state::alive(pid) => "yes",
            Some(_) => "no",
            None if st.stopping => "stopped",
            None => "restarting",
        };
        // `None`: not a registering process (nats-server) or no registry answer.
        let (health, mem, segments) = match entry {
            None => ("-".to_string(), "-".to_string(), "-".to_string()),
            Some(None) => ("missing".into(), "-".into(), "-".into()),
            Some(Some(n)) if Some(n.pid) != p.pid => ("old pid".into(), "-".into(), "-".into()),
            Some(Some(n)) => (
                if n.healthy { "healthy" } else { "UNHEALTHY" }.to_string(),
                crate::ctl::human_bytes(n.mem_used),
                n.segments.to_string(),
            ),
        };
        println!(
            "{:<16} {:<12} {:>8} {:<10} {:>8} {:>7}  {:<10} {:>11} {:>8}  {}",
            if p.managed { format!("{}*", p.name) } else { p.name.clone() },
            role,
            p.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            running,
            p.restarts,
            age(now, p.since_ms),
            health,
            mem,
            segments,
            p.last_exit.as_deref().unwrap_or("-")
        );
    };
    for n in st.nats.iter().chain(&st.more_nats) {
        row(n, "-", None);
    }
    for node in &spec.nodes {
        let Some(p) = st.nodes.iter().find(|p| p.name == node.id) else {
            println!(
                "{:<16} (not in the supervisor's state: stopped for good by the scaler, or the cluster file \
                 changed since `up`)",
                node.id
            );
            continue;
        };
        for role in &node.roles {
            let id = node.registry_id(*role);
            row(p, role.as_str(), reg.map(|r| r.nodes.iter().find(|n| n.node_id == id)));
        }
    }
    // Nodes the coordinator's scaler started through the supervisor's host agent.
    let scaled: Vec<&state::ProcessState> = st.nodes.iter().filter(|p| p.managed).collect();
    for p in &scaled {
        for role in &p.roles {
            let id = format!("{}-{role}", p.name);
            row(p, role, reg.map(|r| r.nodes.iter().find(|n| n.node_id == id)));
        }
    }
    if !scaled.is_empty() {
        println!("(* started by the scaler through host agent {})", spec.host_id);
    }
    match registry {
        Err(e) => println!("note: registry unavailable ({e}); health, memory and segments not shown"),
        Ok(r) => {
            let mut known: Vec<String> =
                spec.nodes.iter().flat_map(|n| n.roles.iter().map(|r| n.registry_id(*r))).collect();
            known.extend(scaled.iter().flat_map(|p| p.roles.iter().map(|r| format!("{}-{r}", p.name))));
            for n in r.nodes.iter().filter(|n| !known.contains(&n.node_id)) {
                println!(
                    "note: {} (pid {}, {}) is registered in cluster {} but not in the cluster file",
                    n.node_id,
                    n.pid,
                    if n.healthy { "healthy" } else { "unhealthy" },
                    spec.name
                );
            }
        }
    }
}

/// `now - then` as `45s`, `3m12s`, `2h5m`, `3d4h`.
fn age(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_are_compact() {
        assert_eq!(age(5_000, 0), "5s");
        assert_eq!(age(192_000, 0), "3m12s");
        assert_eq!(age(7_500_000, 0), "2h5m");
        assert_eq!(age(0, 10), "0s");
    }
}
