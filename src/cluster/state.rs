//! What the supervisor leaves on disk for the other `quiver cluster` commands, and how they
//! look at processes.
//!
//! - `<data_dir>/cluster/supervisor.lock`: held (`flock`, exclusive) by the supervisor for its
//!   whole life and holding its pid. The kernel drops the lock when the process dies, however
//!   it dies, so "the lock is held" is the test for "a supervisor runs" — never a stale pid.
//! - `<data_dir>/cluster/state.json`: the supervisor's view (pids, restarts, since when),
//!   rewritten (atomically) whenever a process starts or exits; removed on a clean stop.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use crate::process::{now_ms, signal};

/// The supervisor's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub cluster: String,
    pub supervisor_pid: u32,
    /// When the supervisor started (Unix ms).
    pub started_ms: u64,
    /// The supervisor is stopping its processes.
    pub stopping: bool,
    /// The managed nats-server, if the cluster file starts one (the first of several).
    pub nats: Option<ProcessState>,
    /// The other managed nats-servers of a NATS cluster (`[nats] servers = 3`).
    #[serde(default)]
    pub more_nats: Vec<ProcessState>,
    /// The nodes, in cluster-file order.
    pub nodes: Vec<ProcessState>,
}

/// One supervised process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    /// Node id, or `nats-server`.
    pub name: String,
    pub roles: Vec<String>,
    /// Pid of the running incarnation; `None` while waiting to be restarted.
    pub pid: Option<u32>,
    /// How many times it was started again after exiting.
    pub restarts: u32,
    /// When the current incarnation started, or when the last one exited (Unix ms).
    pub since_ms: u64,
    /// How the previous incarnation ended (`exit code 70`, `killed by SIGKILL`, ...).
    pub last_exit: Option<String>,
    pub log: PathBuf,
    /// Started by the coordinator's scaler through the supervisor's host agent (not listed in
    /// the cluster file).
    #[serde(default)]
    pub managed: bool,
    /// Told to stop for good (`stop_node` from the scaler): drains, exits, is not restarted.
    #[serde(default)]
    pub stopping: bool,
}

impl State {
    /// Reads the state file; `None` if there is none.
    pub fn read(path: &Path) -> anyhow::Result<Option<State>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a cluster state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file atomically (temp file + rename), so readers never see half of it.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Pids of every process the state lists as running.
    pub fn pids(&self) -> Vec<u32> {
        self.nats.iter().chain(&self.more_nats).chain(&self.nodes).filter_map(|p| p.pid).collect()
    }
}

/// The supervisor's exclusive lock; released when dropped or when the process dies.
pub struct SupervisorLock {
    _file: File,
}

impl SupervisorLock {
    /// Takes the lock and writes our pid into it. Retries for up to `wait` (a `status` or
    /// `down` may hold a shared lock for an instant); `Ok(None)` if another process holds it.
    pub fn acquire(path: &Path, wait: Duration) -> anyhow::Result<Option<SupervisorLock>> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let start = Instant::now();
        while !try_flock(&file, libc::LOCK_EX)? {
            if start.elapsed() >= wait {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Some(SupervisorLock { _file: file }))
    }
}

/// Whether a supervisor runs for this data dir.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Supervisor {
    /// Running; its pid once it has written it (it does right after taking the lock).
    Running(Option<u32>),
    Stopped,
}

/// Looks at the supervisor lock without disturbing a running supervisor (a shared lock,
/// released at once).
pub fn probe(lock: &Path) -> anyhow::Result<Supervisor> {
    let mut file = match File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Supervisor::Stopped),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", lock.display())),
    };
    if try_flock(&file, libc::LOCK_SH)? {
        return Ok(Supervisor::Stopped);
    }
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("cannot read {}", lock.display()))?;
    Ok(Supervisor::Running(text.trim().parse().ok()))
}

/// `flock(fd, mode | LOCK_NB)`: `Ok(true)` if taken, `Ok(false)` if someone else holds it.
fn try_flock(file: &File, mode: libc::c_int) -> anyhow::Result<bool> {
    // SAFETY: flock(2) on a descriptor we own for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err).context("flock on the supervisor lock failed")
    }
}

/// Whether a process exists and is not a zombie (Linux `/proc`).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}

/// The last `lines` lines of a log file (at most its last 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return format!("(no log at {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_probe_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.lock");
        assert_eq!(probe(&path).unwrap(), Supervisor::Stopped);
        let lock = SupervisorLock::acquire(&path, Duration::ZERO).unwrap().unwrap();
        assert_eq!(probe(&path).unwrap(), Supervisor::Running(Some(std::process::id())));
        assert!(SupervisorLock::acquire(&path, Duration::from_millis(100)).unwrap().is_none());
        drop(lock);
        // A process another test forks at this moment holds a copy of the lock's descriptor
        // until it execs (close-on-exec), so the lock may outlive `drop` by that long.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe(&path).unwrap() != Supervisor::Stopped && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(probe(&path).unwrap(), Supervisor::Stopped);
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(State::read(&path).unwrap().is_none());
        let p = ProcessState {
            name: "q".into(),
            roles: vec!["querynode".into()],
            pid: Some(7),
            restarts: 1,
            since_ms: 5,
            last_exit: Some("killed by SIGKILL".into()),
            log: "q.log".into(),
            managed: false,
            stopping: false,
        };
        let s = State {
            cluster: "c".into(),
            supervisor_pid: 1,
            started_ms: 2,
            stopping: false,
            nats: None,
            more_nats: Vec::new(),
            nodes: vec![p],
        };
        s.write(&path).unwrap();
        let back = State::read(&path).unwrap().unwrap();
        assert_eq!(back.pids(), vec![7]);
        assert_eq!(back.nodes[0].last_exit.as_deref(), Some("killed by SIGKILL"));
    }
}
