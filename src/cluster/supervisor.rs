//! `quiver cluster supervise`: the background process `cluster up` starts. It runs the
//! nats-server (if the cluster file manages one) and every node as child processes, restarts
//! any that exits, and keeps the state file current; on SIGTERM or SIGINT it stops them all.
//!
//! ```text
//!            spawn ok                  exits (any code, any signal)
//!  Waiting ────────────▶ Running ──────────────────────────────▶ Waiting (restart at now + backoff)
//!     ▲   spawn failed                                             backoff doubles up to backoff_max,
//!     └──────────────────  (counted as an exit)                    back to backoff_initial after a
//!                                                                  run of backoff_reset_after
//! ```
//!
//! Everything runs on the main thread: children are spawned from it, and `PR_SET_PDEATHSIG`
//! fires when the *thread* that forked a child ends, so that thread must live as long as the
//! supervisor does.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::spec::{ClusterSpec, NatsSpec};
use super::state::{self, ProcessState, State, SupervisorLock};

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
    let mut sup = Supervision {
        state: State {
            cluster: spec.name.clone(),
            supervisor_pid: std::process::id(),
            started_ms: state::now_ms(),
            stopping: false,
            nats: None,
            nodes: Vec::new(),
        },
        nats: None,
        nodes: Vec::new(),
        state_file: spec.state_file(),
    };
    tracing::info!(
        cluster = %spec.name,
        file = %spec.file.display(),
        pid = std::process::id(),
        "cluster supervisor starting"
    );

    if let NatsSpec::Managed { port, server_bin, sync_interval } = &spec.nats {
        // A server already on the port would be used by the nodes while ours fails to bind:
        // refuse instead of silently joining someone else's NATS.
        if port_open(*port) {
            bail!(
                "port {port} is already in use, so a nats-server cannot be started there; pick another \
                 [nats] port, or set [nats] url to use the server that listens there"
            );
        }
        let store = spec.nats_store();
        quiver_runtime::disk::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
        let conf = store.join("nats-server.conf");
        // Large insert batches travel as single messages: raise the 1 MiB default payload
        // (as the embedded server of `quiver standalone` does).
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\n{}",
            quiver_runtime::nats_server::jetstream_block(&store, *sync_interval)
        );
        // Authorization (credentials generated on the first start) and TLS, as in standalone;
        // owner-only, since the authorization block holds passwords.
        let extra = quiver_runtime::security::nats_server_conf(&spec.shared_config()?)?;
        quiver_runtime::security::write_private(&conf, &format!("{text}{extra}"))?;
        let mut nats = Process::new(
            NATS,
            Vec::new(),
            PathBuf::from(server_bin),
            vec!["-c".into(), conf.display().to_string()],
            Vec::new(),
            spec.log_file(NATS),
            &spec,
        );
        nats.start();
        sup.nats = Some(nats);
        sup.write_state();
        let ready = Instant::now();
        while !port_open(*port) && ready.elapsed() < Duration::from_secs(15) {
            if let Some(n) = sup.nats.as_mut() {
                n.poll(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if port_open(*port) {
            tracing::info!(port, "nats-server is up");
        } else {
            // The nodes retry their connection (and are restarted if they give up): go on.
            tracing::warn!(port, log = %spec.log_file(NATS).display(), "nats-server is not listening after 15 s");
        }
    }
    for node in &spec.nodes {
        let mut p = Process::new(
            &node.id,
            node.role_names(),
            program.clone(),
            spec.node_args(node),
            spec.node_env(node),
            spec.log_file(&node.id),
            &spec,
        );
        p.start();
        sup.nodes.push(p);
    }
    sup.write_state();

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping the cluster"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping the cluster"); break; }
            _ = tokio::time::sleep(POLL) => {}
        }
        let now = Instant::now();
        let mut changed = false;
        for p in sup.nats.iter_mut().chain(sup.nodes.iter_mut()) {
            changed |= p.poll(now);
        }
        if changed {
            sup.write_state();
        }
    }

    sup.state.stopping = true;
    sup.write_state();
    // Nodes first, so they can still reach NATS while they drain; the server last.
    stop_all(&mut sup.nodes, spec.supervisor.stop_grace).await;
    stop_all(sup.nats.as_mut().map(std::slice::from_mut).unwrap_or_default(), spec.supervisor.stop_grace).await;
    if let Err(e) = std::fs::remove_file(&sup.state_file) {
        tracing::warn!(error = %e, "cannot remove the state file");
    }
    tracing::info!(cluster = %spec.name, "cluster stopped");
    Ok(0)
}

/// The supervisor's children and the state file that mirrors them.
struct Supervision {
    state: State,
    nats: Option<Process>,
    nodes: Vec<Process>,
    state_file: PathBuf,
}

impl Supervision {
    fn write_state(&mut self) {
        self.state.nats = self.nats.as_ref().map(Process::snapshot);
        self.state.nodes = self.nodes.iter().map(Process::snapshot).collect();
        if let Err(e) = self.state.write(&self.state_file) {
            tracing::warn!(error = format!("{e:#}"), "cannot write the state file");
        }
    }
}

/// One supervised child: how to start it, its restart bookkeeping, its running incarnation.
struct Process {
    name: String,
    roles: Vec<String>,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    started: Instant,
    since_ms: u64,
    restarts: u32,
    /// Delay before the next restart.
    backoff: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    backoff_reset_after: Duration,
    /// When to start again, while not running.
    restart_at: Option<Instant>,
    last_exit: Option<String>,
}

impl Process {
    fn new(
        name: &str,
        roles: Vec<String>,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
        spec: &ClusterSpec,
    ) -> Process {
        let s = &spec.supervisor;
        Process {
            name: name.into(),
            roles,
            program,
            args,
            env,
            log,
            child: None,
            started: Instant::now(),
            since_ms: state::now_ms(),
            restarts: 0,
            backoff: s.backoff_initial,
            backoff_initial: s.backoff_initial,
            backoff_max: s.backoff_max,
            backoff_reset_after: s.backoff_reset_after,
            restart_at: None,
            last_exit: None,
        }
    }

    /// Starts an incarnation; a failure to start counts as an exit (and is retried).
    fn start(&mut self) {
        self.started = Instant::now();
        self.since_ms = state::now_ms();
        match self.spawn() {
            Ok(child) => {
                tracing::info!(process = %self.name, pid = child.id(), restarts = self.restarts, "started");
                self.child = Some(child);
                self.restart_at = None;
            }
            Err(e) => {
                let why = format!("cannot start: {e:#}");
                tracing::error!(process = %self.name, error = %why, "start failed");
                self.exited(why);
            }
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let _ = writeln!(
            log,
            "==== quiver cluster: starting {} at {} (restart {}) ====",
            self.name,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            self.restarts
        );
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // The nodes' configuration comes from the cluster file alone, not from whatever
        // QUIVER_* variables the shell that ran `cluster up` happened to export.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with(quiver_runtime::config::ENV_PREFIX) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls between fork and exec. The child is SIGKILLed
        // when the supervisor's main thread (which spawns every child) ends, however it ends;
        // if the supervisor died before prctl took effect, the child gives up at once.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the cluster supervisor is gone"));
                }
                Ok(())
            });
        }
        cmd.spawn().with_context(|| format!("{}", self.program.display()))
    }

    /// Reaps an exited child and starts a due restart; true if anything changed.
    fn poll(&mut self, now: Instant) -> bool {
        if let Some(child) = self.child.as_mut() {
            return match child.try_wait() {
                Ok(None) => false,
                Ok(Some(status)) => {
                    let pid = child.id();
                    self.child = None;
                    let why = describe(status);
                    tracing::warn!(process = %self.name, pid, exit = %why, ran = ?self.started.elapsed(), "exited");
                    self.exited(why);
                    true
                }
                Err(e) => {
                    tracing::warn!(process = %self.name, error = %e, "cannot check the process");
                    false
                }
            };
        }
        match self.restart_at {
            Some(at) if at <= now => {
                self.restarts += 1;
                self.start();
                true
            }
            _ => false,
        }
    }

    fn exited(&mut self, why: String) {
        if self.started.elapsed() >= self.backoff_reset_after {
            self.backoff = self.backoff_initial;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        self.restart_at = Some(Instant::now() + delay);
        self.since_ms = state::now_ms();
        self.last_exit = Some(why);
        tracing::info!(process = %self.name, ?delay, "restart scheduled");
    }

    fn snapshot(&self) -> ProcessState {
        ProcessState {
            name: self.name.clone(),
            roles: self.roles.clone(),
            pid: self.child.as_ref().map(Child::id),
            restarts: self.restarts,
            since_ms: self.since_ms,
            last_exit: self.last_exit.clone(),
            log: self.log.clone(),
        }
    }
}

/// SIGTERM to every running process, SIGKILL to those still running after `grace`; reaps all.
async fn stop_all(procs: &mut [Process], grace: Duration) {
    for p in procs.iter_mut() {
        p.restart_at = None;
        if let Some(c) = &p.child {
            state::signal(c.id(), libc::SIGTERM);
        }
    }
    let start = Instant::now();
    loop {
        let mut running = 0;
        for p in procs.iter_mut() {
            if let Some(c) = p.child.as_mut() {
                match c.try_wait() {
                    Ok(None) => running += 1,
                    Ok(Some(status)) => {
                        tracing::info!(process = %p.name, exit = %describe(status), "stopped");
                        p.child = None;
                    }
                    // Cannot tell: counts as running, so it gets SIGKILL after the grace period.
                    Err(_) => running += 1,
                }
            }
        }
        if running == 0 {
            return;
        }
        if start.elapsed() >= grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in procs.iter_mut() {
        if let Some(mut c) = p.child.take() {
            tracing::warn!(process = %p.name, pid = c.id(), ?grace, "did not stop in time; SIGKILL");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `exit code 70`, `killed by SIGKILL`, ...
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(libc::SIGKILL) => "killed by SIGKILL".into(),
        Some(libc::SIGTERM) => "killed by SIGTERM".into(),
        Some(libc::SIGINT) => "killed by SIGINT".into(),
        Some(libc::SIGSEGV) => "killed by SIGSEGV".into(),
        Some(libc::SIGABRT) => "killed by SIGABRT".into(),
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("{status}"),
    }
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
