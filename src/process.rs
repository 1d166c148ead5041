//! Child processes kept running: what `quiver cluster supervise` and `quiver host` share.
//!
//! ```text
//!            spawn ok                  exits (any code, any signal)
//!  Waiting ────────────▶ Running ──────────────────────────────▶ Waiting (restart at now + backoff)
//!     ▲   spawn failed       │                                     backoff doubles up to max, back
//!     └──────────────────    │ stop(grace): SIGTERM                to initial after a run of
//!       (counted as an exit) ▼                                     reset_after
//!                        Stopping ── exits ──▶ Finished (never restarted)
//!                            └── still running after grace: SIGKILL
//! ```
//!
//! Children are spawned with `PR_SET_PDEATHSIG = SIGKILL`, which fires when the *thread* that
//! forked them ends: whoever owns [`Process`]es spawns them from a thread that lives as long as
//! it does (the main thread, on a current-thread runtime).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// When a process that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles on each further exit.
    pub backoff_initial: Duration,
    /// Upper bound of the delay.
    pub backoff_max: Duration,
    /// A process that ran at least this long before exiting starts over at `backoff_initial`.
    pub backoff_reset_after: Duration,
}

impl Default for RestartPolicy {
    /// The cluster file's `[supervisor]` defaults.
    fn default() -> Self {
        RestartPolicy {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
        }
    }
}

/// How to start a process: binary, arguments, environment, log.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// Keep this process's own `QUIVER_*` variables in the child's environment (`quiver host`,
    /// whose nodes share its configuration); otherwise they are removed (`quiver cluster`, whose
    /// nodes are configured by the cluster file alone).
    pub inherit_quiver_env: bool,
    /// stdout and stderr, appended to.
    pub log: PathBuf,
    /// Who starts it, in the line written to the log before each start (`quiver cluster`).
    pub starter: &'static str,
}

/// Where a child is put before it runs its program (a sized node of a host agent,
/// `crate::host`): cgroups it joins and CPUs it is confined to. Applied between fork and exec,
/// so the program's first allocation is already charged to its cgroups; the same placement
/// is applied on every restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Cgroup directories the child joins (it writes `0`, itself, into each one's
    /// `cgroup.procs`): one for cgroup v2, one per hierarchy for v1.
    pub cgroups: Vec<PathBuf>,
    /// CPUs the child may run on (`sched_setaffinity`); empty: those of the parent.
    pub cpus: Vec<usize>,
}

impl Placement {
    /// Nothing to do: the child runs where the parent does.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.cpus.is_empty()
    }
}

impl std::fmt::Display for Placement {
    /// `cgroups /sys/fs/cgroup/x/quiver-h/n, CPUs 0,1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.cgroups.is_empty() {
            let dirs: Vec<String> = self.cgroups.iter().map(|d| d.display().to_string()).collect();
            parts.push(format!("cgroups {}", dirs.join(" ")));
        }
        if !self.cpus.is_empty() {
            let cpus: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
            parts.push(format!("CPUs {}", cpus.join(",")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One supervised child: how to start it, its restart bookkeeping, its running incarnation.
pub struct Process {
    pub name: String,
    pub roles: Vec<String>,
    launch: Launch,
    placement: Placement,
    policy: RestartPolicy,
    child: Option<Child>,
    started: Instant,
    since_ms: u64,
    restarts: u32,
    /// Delay before the next restart.
    backoff: Duration,
    /// When to start again, while not running.
    restart_at: Option<Instant>,
    last_exit: Option<String>,
    /// Told to stop for good: SIGKILL at this instant if still running.
    stopping: Option<Instant>,
}

impl Process {
    /// A process not started yet ([`Process::start`]).
    pub fn new(name: &str, roles: Vec<String>, launch: Launch, policy: RestartPolicy) -> Process {
        Process {
            name: name.into(),
            roles,
            launch,
            placement: Placement::default(),
            policy,
            child: None,
            started: Instant::now(),
            since_ms: now_ms(),
            restarts: 0,
            backoff: policy.backoff_initial,
            restart_at: None,
            last_exit: None,
            stopping: None,
        }
    }

    /// Where every incarnation started from now on is placed (cgroups, CPUs).
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// Pid of the running incarnation.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times it was started again after exiting.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When the current incarnation started, or when the last one exited (Unix ms).
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// How the previous incarnation ended (`exit code 70`, `killed by SIGKILL`, ...).
    pub fn last_exit(&self) -> Option<&str> {
        self.last_exit.as_deref()
    }

    pub fn log(&self) -> &std::path::Path {
        &self.launch.log
    }

    /// Whether it was told to stop for good ([`Process::stop`]).
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Stopped for good and exited.
    pub fn finished(&self) -> bool {
        self.stopping.is_some() && self.child.is_none()
    }

    /// Starts an incarnation; a failure to start counts as an exit (and is retried).
    pub fn start(&mut self) {
        self.started = Instant::now();
        self.since_ms = now_ms();
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

    /// Stops it for good: SIGTERM now (the node drains and exits), SIGKILL once `grace` has
    /// passed ([`Process::poll`] sends it); never restarted.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopping.is_some() {
            return;
        }
        self.restart_at = None;
        self.stopping = Some(Instant::now() + grace);
        if let Some(c) = &self.child {
            tracing::info!(process = %self.name, pid = c.id(), ?grace, "stopping (SIGTERM)");
            signal(c.id(), libc::SIGTERM);
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        use std::io::Write;
        let l = &self.launch;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log)
            .with_context(|| format!("cannot open {}", l.log.display()))?;
        let _ = writeln!(
            log,
            "==== {}: starting {} at {} (restart {}) ====",
            l.starter,
            self.name,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            self.restarts
        );
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if !l.inherit_quiver_env {
            // The nodes' configuration comes from the cluster file alone, not from whatever
            // QUIVER_* variables the shell that ran `cluster up` happened to export.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with(quiver_runtime::config::ENV_PREFIX) {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.envs(l.env.iter().map(|(k, v)| (k, v)));
        let parent = std::process::id();
        // Everything the child needs is made here, before fork: it only opens and writes.
        let procs = self
            .placement
            .cgroups
            .iter()
            .map(|dir| {
                let file = dir.join("cgroup.procs");
                std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                    .with_context(|| format!("{}: not a usable path", file.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cpus = cpu_set(&self.placement.cpus)?;
        // SAFETY: only async-signal-safe calls between fork and exec (prctl, getppid, open,
        // write, close, sched_setaffinity), on data prepared before the fork. The child is
        // SIGKILLed when the thread that spawns every child (the main thread) ends, however
        // it ends; if the parent died before prctl took effect, the child gives up at once.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the supervising process is gone"));
                }
                for file in &procs {
                    // "0": the writing process itself.
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(err);
                    }
                }
                if let Some(set) = &cpus {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn().with_context(|| {
            if self.placement.is_empty() {
                format!("{}", l.program.display())
            } else {
                format!("{} (placed in {})", l.program.display(), self.placement)
            }
        })
    }

    /// Reaps an exited child, starts a due restart, SIGKILLs a stop that ran out of grace;
    /// true if anything changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        if let Some(child) = self.child.as_mut() {
            return match child.try_wait() {
                Ok(None) => {
                    if self.stopping.is_some_and(|kill_at| now >= kill_at) {
                        tracing::warn!(process = %self.name, pid = child.id(), "did not stop in time; SIGKILL");
                        let _ = child.kill();
                        // Reaped (and reported) by the next poll.
                        self.stopping = Some(now + Duration::from_secs(3600));
                    }
                    false
                }
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
        self.since_ms = now_ms();
        self.last_exit = Some(why);
        if self.stopping.is_some() {
            tracing::info!(process = %self.name, "stopped for good");
            return;
        }
        let delay = next_backoff(&mut self.backoff, self.started.elapsed(), &self.policy);
        self.restart_at = Some(Instant::now() + delay);
        tracing::info!(process = %self.name, ?delay, "restart scheduled");
    }
}

/// The affinity mask of `cpus` (None if empty: keep the parent's).
fn cpu_set(cpus: &[usize]) -> anyhow::Result<Option<libc::cpu_set_t>> {
    if cpus.is_empty() {
        return Ok(None);
    }
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus {
        if cpu >= max {
            anyhow::bail!("CPU {cpu} is beyond the {max} an affinity mask holds");
        }
        // SAFETY: `cpu` is within the set (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(Some(set))
}

/// The delay before restarting a process that ran for `ran`, and the one after it in `backoff`.
fn next_backoff(backoff: &mut Duration, ran: Duration, policy: &RestartPolicy) -> Duration {
    if ran >= policy.backoff_reset_after {
        *backoff = policy.backoff_initial;
    }
    let delay = *backoff;
    *backoff = (*backoff * 2).min(policy.backoff_max);
    delay
}

/// SIGTERM to every running process, SIGKILL to those still running after `grace`; reaps all.
/// None is restarted afterwards.
pub async fn stop_all(procs: &mut [&mut Process], grace: Duration) {
    for p in procs.iter_mut() {
        p.restart_at = None;
        p.stopping.get_or_insert(Instant::now() + grace);
        if let Some(c) = &p.child {
            signal(c.id(), libc::SIGTERM);
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
pub fn describe(status: ExitStatus) -> String {
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

/// Sends `signal` to `pid`; false if there is no such process.
pub fn signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid only signals that one process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let policy = RestartPolicy {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            backoff_reset_after: Duration::from_secs(60),
        };
        let mut b = policy.backoff_initial;
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..5).map(|_| next_backoff(&mut b, short, &policy).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(next_backoff(&mut b, Duration::from_secs(60), &policy), Duration::from_secs(1));
        assert_eq!(next_backoff(&mut b, short, &policy), Duration::from_secs(2));
    }

    fn sleeper(dir: &std::path::Path, secs: &str) -> Process {
        let launch = Launch {
            program: "sleep".into(),
            args: vec![secs.into()],
            env: Vec::new(),
            inherit_quiver_env: false,
            log: dir.join("sleep.log"),
            starter: "test",
        };
        Process::new("sleep", Vec::new(), launch, RestartPolicy::default())
    }

    #[test]
    fn a_stopped_process_is_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sleeper(dir.path(), "30");
        p.start();
        assert!(p.pid().is_some());
        p.stop(Duration::from_secs(10));
        let start = Instant::now();
        while !p.finished() {
            assert!(start.elapsed() < Duration::from_secs(5), "sleep did not end on SIGTERM");
            p.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.last_exit(), Some("killed by SIGTERM"));
        p.poll(Instant::now() + Duration::from_secs(100));
        assert!(p.pid().is_none() && p.restarts() == 0);
        assert!(std::fs::read_to_string(dir.path().join("sleep.log")).unwrap().contains("==== test: starting sleep"));
    }

    #[test]
    fn a_placement_is_applied_before_exec_or_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sleeper(dir.path(), "30");
        p.set_placement(Placement { cgroups: Vec::new(), cpus: vec![0] });
        p.start();
        let pid = p.pid().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.lines().any(|l| l.split_whitespace().eq(["Cpus_allowed_list:", "0"])), "{status}");
        p.stop(Duration::from_secs(5));
        while !p.finished() {
            p.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
        // A cgroup that is not there: the start fails (and is retried like an exit).
        let mut p = sleeper(dir.path(), "30");
        let missing = dir.path().join("no-such-cgroup");
        p.set_placement(Placement { cgroups: vec![missing.clone()], cpus: Vec::new() });
        p.start();
        assert!(p.pid().is_none());
        let why = p.last_exit().unwrap();
        assert!(why.starts_with("cannot start: ") && why.contains(&missing.display().to_string()), "{why}");
    }

    #[test]
    fn a_stop_past_its_grace_is_a_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        // A shell that ignores SIGTERM.
        let launch = Launch {
            program: "sh".into(),
            args: vec!["-c".into(), "trap '' TERM; while :; do sleep 0.1; done".into()],
            env: Vec::new(),
            inherit_quiver_env: false,
            log: dir.path().join("sh.log"),
            starter: "test",
        };
        let mut p = Process::new("sh", Vec::new(), launch, RestartPolicy::default());
        p.start();
        // Time for the shell to set its trap.
        std::thread::sleep(Duration::from_millis(300));
        p.stop(Duration::from_millis(200));
        let start = Instant::now();
        while !p.finished() {
            assert!(start.elapsed() < Duration::from_secs(5), "not killed after its grace");
            p.poll(Instant::now());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.last_exit(), Some("killed by SIGKILL"));
    }
}
