//! The Milvus leg of `quiver-bench standalone --milvus`: Milvus 2.3.5 standalone from PyPI (the
//! `milvus` package, venv [`crate::pyvenv::milvus_server_python`]), loaded and searched through
//! the same pymilvus as Quiver's Milvus gRPC API.
//!
//! 1. [`MilvusServer::start`]: `tools/bench/bench-milvus-server.py` starts the server through the
//!    package's module API (`milvus.default_server`) with its data, etcd and logs in a temp dir
//!    and gRPC on a free port, in a process group of its own. The bench waits a bounded time for
//!    its /healthz (a clear error with the log dir otherwise), and stops the group on every way
//!    out: drop (SIGTERM to the launcher, which stops the server; SIGKILL to the group after a
//!    grace period), Ctrl-C / SIGTERM of the bench (a signal handler kills the group; the next
//!    run removes the temp dir left behind, [`super::milvus::temp_dir`]), and the bench dying
//!    outright (the launcher has PR_SET_PDEATHSIG, the server binary too).
//! 2. [`load`]: `tools/bench/bench-milvus-load.py` (pymilvus venv) creates the collection, inserts
//!    the base rows in the bench's batches, flushes, creates the HNSW index, loads, and times
//!    first insert → first search answered with the index built and loaded ([`MilvusLoad`]).
//! 3. The pymilvus driver (`bench-pymilvus.py`, [`super::milvus::Driver`]) runs against it at each
//!    client count, as against Quiver.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use super::milvus::PyInputs;
use super::HnswSettings;

/// Process group of the running Milvus server (0: none), for the signal handler.
static SERVER_GROUP: AtomicI32 = AtomicI32::new(0);

/// What the launcher prints, one JSON object per line.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub(super) enum LauncherEvent {
    /// The server binary runs.
    Spawned { pid: u32, port: u16, webservice_port: u16, logs: PathBuf },
    /// Its /healthz answered OK after `secs` (unpacking the binaries included).
    Ready { secs: f64 },
    /// It could not start (the launcher exits).
    Failed { error: String, logs: Option<PathBuf> },
}

impl LauncherEvent {
    pub(super) fn parse(line: &str) -> anyhow::Result<LauncherEvent> {
        serde_json::from_str(line.trim())
            .with_context(|| format!("cannot parse the Milvus launcher's output line {:?}", line.trim()))
    }
}

/// The running server: the launcher (its process group leader) and its data dir.
pub(super) struct MilvusServer {
    launcher: Child,
    stdin: Option<ChildStdin>,
    /// The temp dir with configs, data, etcd and logs (kept when the start fails).
    dir: Option<tempfile::TempDir>,
    /// The `milvus` binary's pid.
    pub pid: u32,
    /// gRPC (what pymilvus connects to).
    pub port: u16,
    pub logs: PathBuf,
    /// Launcher start → /healthz OK.
    pub startup: Duration,
    pub python: PathBuf,
}

/// How to start the server.
pub(super) struct ServerOptions<'a> {
    pub python: PathBuf,
    pub inputs: &'a PyInputs,
    /// Where the package's binaries are unpacked once for every run.
    pub bin_cache: Option<PathBuf>,
    /// How long /healthz may take.
    pub start_limit: Duration,
    /// Extra milvus.yaml settings (`dotted.key=value`).
    pub config: Vec<String>,
}

impl MilvusServer {
    pub(super) fn start(opts: ServerOptions<'_>) -> anyhow::Result<MilvusServer> {
        let dir = super::milvus::temp_dir("quiver-bench-milvus-")?;
        let port = quiver_testkit::free_port().context("cannot find a free port")?;
        let script = opts.inputs.path("bench-milvus-server.py");
        let mut cmd = Command::new(&opts.python);
        cmd.arg(&script).arg("--dir").arg(dir.path()).args([
            "--port",
            &port.to_string(),
            "--start-secs",
            &opts.start_limit.as_secs_f64().to_string(),
        ]);
        if let Some(cache) = &opts.bin_cache {
            cmd.arg("--bin-cache").arg(cache);
        }
        for kv in &opts.config {
            cmd.arg("--config").arg(kv);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM (the
        // launcher then stops the server) when the thread that spawned it exits.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        install_signal_handler();
        let started = Instant::now();
        let mut launcher =
            cmd.spawn().with_context(|| format!("cannot run {} {}", opts.python.display(), script.display()))?;
        if let Ok(pgid) = i32::try_from(launcher.id()) {
            SERVER_GROUP.store(pgid, Ordering::SeqCst);
        }
        let stdin = launcher.stdin.take();
        let stdout = launcher.stdout.take();
        let mut server = MilvusServer {
            launcher,
            stdin,
            dir: Some(dir),
            pid: 0,
            port,
            logs: PathBuf::new(),
            startup: Duration::ZERO,
            python: opts.python,
        };
        server.logs = server.dir.as_ref().map_or_else(PathBuf::new, |d| d.path().join("logs"));
        let stdout = stdout.ok_or_else(|| anyhow!("the Milvus launcher has no stdout"))?;
        // Its lines arrive on a channel, so the wait below is bounded even if it hangs.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The launcher bounds /healthz by the limit; unpacking ~250 MB of binaries on a first
        // run comes on top.
        let deadline = started + opts.start_limit + Duration::from_secs(90);
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(line) => match LauncherEvent::parse(&line) {
                    Ok(LauncherEvent::Spawned { pid, port, logs, .. }) => {
                        server.pid = pid;
                        server.port = port;
                        server.logs = logs;
                        eprintln!("milvus: server pid {pid} on 127.0.0.1:{port}, logs in {}", server.logs.display());
                    }
                    Ok(LauncherEvent::Ready { secs }) => break Ok(secs),
                    Ok(LauncherEvent::Failed { error, logs }) => {
                        if let Some(l) = logs {
                            server.logs = l;
                        }
                        break Err(anyhow!("{error}"));
                    }
                    // Anything else (a stray print) is shown, not fatal.
                    Err(_) => eprintln!("milvus launcher: {line}"),
                },
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break Err(anyhow!("not healthy after {:.0} s", started.elapsed().as_secs_f64()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.launcher.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                    break Err(anyhow!("the launcher exited ({status}) before the server was ready"));
                }
            }
        };
        match outcome {
            Ok(secs) => {
                server.startup = Duration::from_secs_f64(secs);
                Ok(server)
            }
            Err(e) => {
                server.stop();
                // Keep the logs for the reader.
                let kept = server.dir.take().map(tempfile::TempDir::keep);
                bail!(
                    "Milvus {} standalone did not start: {e:#}; its logs: {} (milvus-stdout.log, milvus-stderr.log, \
                     standalone-1.log, etcd.log there; data dir {} kept until the next run)",
                    crate::pyvenv::MILVUS_SERVER_VERSION,
                    server.logs.display(),
                    kept.map_or_else(|| "?".to_string(), |p| p.display().to_string())
                );
            }
        }
    }

    /// Errors if the server or its launcher has exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.launcher.try_wait()? {
            bail!("the Milvus launcher exited with {status}; logs in {}", self.logs.display());
        }
        if self.pid != 0 && !quiver_testkit::process_alive(self.pid) {
            bail!("the Milvus server (pid {}) is gone; logs in {}", self.pid, self.logs.display());
        }
        Ok(())
    }

    /// The launcher's pid (the process group).
    pub(super) fn launcher_pid(&self) -> u32 {
        self.launcher.id()
    }

    /// Closes the launcher's stdin and SIGTERMs it (it stops the server: SIGTERM, SIGKILL after
    /// 10 s); SIGKILLs the whole group if that takes over 30 s. Idempotent.
    pub(super) fn stop(&mut self) {
        drop(self.stdin.take());
        let group = i32::try_from(self.launcher.id()).unwrap_or(0);
        if let Ok(None) = self.launcher.try_wait() {
            if group > 0 {
                // SAFETY: kill only sends a signal to our own child.
                unsafe { libc::kill(group, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.launcher.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Whatever is left of the group (the launcher, the server, anything they started).
        if group > 0 {
            // SAFETY: kill only sends a signal to the process group we made.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.launcher.wait();
        let _ = SERVER_GROUP.compare_exchange(group, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl Drop for MilvusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ctrl-C / SIGTERM of the bench: SIGKILL the server's process group, then die of the signal as
/// before (the handler is installed once and only kills when a server runs).
fn install_signal_handler() {
    extern "C" fn on_signal(signal: libc::c_int) {
        let group = SERVER_GROUP.load(Ordering::SeqCst);
        // SAFETY: kill, signal and raise are async-signal-safe.
        unsafe {
            if group > 0 {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: installs a handler that only makes async-signal-safe calls.
            unsafe {
                libc::signal(signal, on_signal as *const () as libc::sighandler_t);
            }
        }
    });
}

/// What bench-milvus-load.py prints (times in seconds).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(super) struct MilvusLoad {
    pub server_version: String,
    pub rows: usize,
    pub dim: usize,
    pub insert_secs: f64,
    pub flush_secs: f64,
    pub index_secs: f64,
    pub indexed_rows: Option<u64>,
    pub load_secs: f64,
    pub first_search_secs: f64,
    pub search_attempts: u32,
    /// First insert call → first search answered with the index built and loaded.
    pub searchable_secs: f64,
    /// Rows of each loaded segment, when the server could tell.
    pub segments: Option<Vec<u64>>,
}

impl MilvusLoad {
    pub(super) fn parse(stdout: &str) -> anyhow::Result<MilvusLoad> {
        let line = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| anyhow!("the Milvus loader printed nothing on stdout"))?;
        serde_json::from_str(line).with_context(|| format!("cannot parse the Milvus loader's output {line:?}"))
    }
}

/// How the loader loads.
pub(super) struct LoadOptions<'a> {
    /// The pymilvus venv's python.
    pub python: &'a Path,
    pub inputs: &'a PyInputs,
    pub port: u16,
    pub collection: &'a str,
    /// .fvecs base file and the rows of it to insert.
    pub base: &'a Path,
    pub rows: usize,
    pub k: usize,
    pub batch: usize,
    pub hnsw: &'a HnswSettings,
}

/// Runs bench-milvus-load.py against the server: create, insert, flush, index, load, first search.
pub(super) fn load(opts: &LoadOptions<'_>) -> anyhow::Result<MilvusLoad> {
    let script = opts.inputs.path("bench-milvus-load.py");
    let h = opts.hnsw;
    let out = Command::new(opts.python)
        .arg(&script)
        .args(["--uri", &format!("http://127.0.0.1:{}", opts.port), "--collection", opts.collection])
        .arg("--base")
        .arg(opts.base)
        .args(["--rows", &opts.rows.to_string(), "--batch", &opts.batch.to_string()])
        .arg("--queries")
        .arg(opts.inputs.path("queries.npy"))
        .args(["--k", &opts.k.to_string(), "--metric", h.metric])
        .args(["--m", &h.m.to_string(), "--ef-construction", &h.ef_construction.to_string()])
        .args(["--ef", &h.ef.to_string(), "--shards", "1"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {} {}", opts.python.display(), script.display()))?;
    if !out.status.success() {
        bail!("the Milvus loader failed ({}); stdout: {}", out.status, String::from_utf8_lossy(&out.stdout).trim());
    }
    MilvusLoad::parse(&String::from_utf8_lossy(&out.stdout))
}

/// `dataCoord.segment.maxSize` (MB) that keeps `rows` vectors of `dim` floats in one segment,
/// like Quiver's single segment: Milvus seals a growing segment at `sealProportion` (0.23) of
/// maxSize, estimating a row as its vector plus the int64 key; 25 % headroom; never below the
/// default 512.
pub(super) fn one_segment_max_mb(rows: usize, dim: usize) -> u64 {
    const SEAL_PROPORTION: f64 = 0.23;
    let bytes = rows as f64 * (dim as f64 * 4.0 + 8.0);
    let mb = (bytes * 1.25 / SEAL_PROPORTION / (1024.0 * 1024.0)).ceil() as u64;
    mb.max(512)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_launcher_events() {
        let spawned = LauncherEvent::parse(
            r#"{"event": "spawned", "pid": 32564, "port": 19777, "webservice_port": 9091, "logs": "/tmp/d/logs"}"#,
        )
        .unwrap();
        assert_eq!(
            spawned,
            LauncherEvent::Spawned { pid: 32564, port: 19777, webservice_port: 9091, logs: "/tmp/d/logs".into() }
        );
        assert_eq!(
            LauncherEvent::parse("{\"event\": \"ready\", \"secs\": 8.5}\n").unwrap(),
            LauncherEvent::Ready { secs: 8.5 }
        );
        assert_eq!(
            LauncherEvent::parse(r#"{"event": "failed", "error": "TimeoutError: x", "logs": "/l"}"#).unwrap(),
            LauncherEvent::Failed { error: "TimeoutError: x".into(), logs: Some("/l".into()) }
        );
        assert_eq!(
            LauncherEvent::parse(r#"{"event": "failed", "error": "bad --config"}"#).unwrap(),
            LauncherEvent::Failed { error: "bad --config".into(), logs: None }
        );
        assert!(LauncherEvent::parse(r#"{"event": "exploded"}"#).is_err());
        assert!(LauncherEvent::parse("Welcome to use Milvus!").is_err());
    }

    #[test]
    fn parses_the_loader_output() {
        let out = "noise\n{\"server_version\": \"v2.3.5-lite\", \"rows\": 3000, \"dim\": 384, \"insert_secs\": 0.9, \
                   \"flush_secs\": 0.6, \"index_secs\": 1.2, \"indexed_rows\": 3000, \"load_secs\": 3.1, \
                   \"first_search_secs\": 0.01, \"search_attempts\": 1, \"searchable_secs\": 5.81, \"segments\": [3000]}\n";
        let l = MilvusLoad::parse(out).unwrap();
        assert_eq!((l.rows, l.dim, l.indexed_rows, l.search_attempts), (3000, 384, Some(3000), 1));
        assert_eq!(l.segments, Some(vec![3000]));
        assert!((l.searchable_secs - 5.81).abs() < 1e-9);
        let without = out.replace("\"indexed_rows\": 3000", "\"indexed_rows\": null").replace("[3000]", "null");
        let l = MilvusLoad::parse(&without).unwrap();
        assert_eq!((l.indexed_rows, l.segments), (None, None));
        assert!(MilvusLoad::parse("\n").is_err());
        assert!(MilvusLoad::parse(r#"{"rows": 1}"#).is_err());
    }

    #[test]
    fn one_segment_sizes() {
        // The default holds small bases already.
        assert_eq!(one_segment_max_mb(3000, 384), 512);
        // 100k × 384: 147 MiB of rows, sealed at 0.23 × maxSize, plus headroom.
        let mb = one_segment_max_mb(100_000, 384);
        assert!(mb as f64 * 0.23 > 100_000.0 * 1544.0 / 1048576.0 * 1.2, "{mb}");
        assert!(mb < 1000, "{mb}");
    }
}
