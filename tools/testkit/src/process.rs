//! Child processes for tests and benchmarks: start one with its output in a log file, kill or
//! stop it, start it again; find the `quiver` binary and free ports; look at processes in
//! `/proc`. Nothing here panics: the benchmarks report these errors like any other.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `quiver` binary to run: `QUIVER_BIN` when set (`scripts/env.sh` sets it), else `quiver`
/// beside the running executable or one directory up (cargo puts test executables in
/// `deps/`), else `$CARGO_TARGET_DIR/release/quiver`. The integration tests do not ask: they
/// hand the harness the binary cargo built for them.
pub fn quiver_bin() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("QUIVER_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "QUIVER_BIN is {} but there is no such file; build it (cargo build --release -p quiver)",
                    bin.display()
                ),
            )),
        };
    }
    let exe = std::env::current_exe()?;
    let beside = exe.parent().into_iter().flat_map(|dir| [dir.join("quiver"), dir.join("../quiver")]);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("release/quiver"));
    beside.chain(target).find(|p| p.is_file()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "cannot find the quiver binary beside {} or in $CARGO_TARGET_DIR/release: build it (cargo build \
                 --release -p quiver) or set QUIVER_BIN",
                exe.display()
            ),
        )
    })
}

/// A free TCP port on 127.0.0.1 (bound once, then released), below Linux's ephemeral range
/// (32768 and up): a port the kernel picked (`bind(0)`) can be handed to another process's
/// outgoing connection before the server meant for it binds it (seen: a nats-server of a
/// test's NATS cluster whose route port was taken by another server's route connection).
/// Ports are taken in turn from a per-process start, so parallel tests get different ones.
pub fn free_port() -> io::Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port())
}

/// One child process: how to start it, its log file and (while running) its handle.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    without_quiver_env: bool,
    death_signal: libc::c_int,
    child: Option<Child>,
}

impl Proc {
    /// `program` with `args`, this process' environment plus `env`, stdout and stderr appended
    /// to `log` (across restarts too). Not started yet: see [`Proc::spawn`].
    pub fn new(name: &str, program: &Path, args: &[&str], env: Vec<(String, String)>, log: PathBuf) -> Proc {
        Proc {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            log,
            without_quiver_env: false,
            death_signal: libc::SIGKILL,
            child: None,
        }
    }

    /// Leaves this process' `QUIVER_*` variables out of the child's environment, so only what
    /// the caller sets configures it.
    pub fn without_quiver_env(mut self) -> Proc {
        self.without_quiver_env = true;
        self
    }

    /// The signal the child gets when the thread that started it exits (`PR_SET_PDEATHSIG`;
    /// SIGKILL unless set), so nothing outlives its test or benchmark, even a killed one.
    pub fn death_signal(mut self, signal: libc::c_int) -> Proc {
        self.death_signal = signal;
        self
    }

    /// Starts the process.
    pub fn spawn(&mut self) -> io::Result<()> {
        let context = |e: io::Error| {
            io::Error::new(e.kind(), format!("cannot start {} ({}): {e}", self.name, self.program.display()))
        };
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open the log file {}: {e}", self.log.display()))
            })?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone().map_err(context)?).stderr(log);
        if self.without_quiver_env {
            for (k, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("QUIVER_")) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let signal = self.death_signal;
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send `signal` to the
        // child when the spawning thread exits.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, signal);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().map_err(context)?);
        Ok(())
    }

    /// Process id of the started child (also after it exited by itself; not after [`Proc::kill`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is still running (false once it exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The child's exit status once it exited; `None` while it runs (or was never started).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for a clean exit; SIGKILLs (and returns `None`) if it
    /// does not exit in time. A child that already exited is not signalled: its status is
    /// returned.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(Some(status)) = c.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the process again with the same command line (killing it first if it runs).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = std::fs::File::open(&self.log) else { return String::new() };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Children of a process (Linux `/proc/<pid>/task/*/children`).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|s| s.parse::<u32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The command name of a process (`/proc/<pid>/comm`), if it exists.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}
