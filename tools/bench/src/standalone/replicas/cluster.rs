//! The bench's cluster: a cluster file in a temp dir, `quiver cluster up` / `down`, the
//! supervisor's state file, and stopping on signals.

use super::*;

/// CPU-table label of the processes that are idle while searching.
const REST: &str = "coord+dn+ixn+supervisor";

/// Node process ids of the cluster file besides the query nodes, with their roles.
const FIXED_NODES: [(&str, &str); 4] =
    [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode")];

/// What differs between the benches' clusters.
pub(super) struct ClusterSpec {
    /// The subcommand (`replicas`, `scale`): names the temp dir and the cluster file's comment.
    pub(super) bench: &'static str,
    /// Query node processes of the cluster file (`qn1`, ...).
    pub(super) query_nodes: Vec<String>,
    pub(super) segment_max_rows: usize,
    /// `[balance] interval`: `1h` keeps the layout still unless the bench changes it.
    pub(super) balance_interval: &'static str,
    /// The supervisor's delay before it restarts a node that died.
    pub(super) restart_backoff_secs: f64,
    /// Keep the temp dir after the run.
    pub(super) keep: bool,
}

/// A `quiver cluster` in a temp dir; stopped with `quiver cluster down` (and the dir removed
/// unless --keep) when dropped, and by a signal handler if the bench is interrupted.
pub(super) struct BenchCluster {
    pub(super) dir: PathBuf,
    pub(super) file: PathBuf,
    pub(super) exe: PathBuf,
    pub(super) url: String,
    pub(super) query_nodes: Vec<String>,
}

/// What the signal handler needs to stop the cluster; taken by whoever stops it first.
static TO_STOP: Mutex<Option<(PathBuf, PathBuf, PathBuf, bool)>> = Mutex::new(None);

impl BenchCluster {
    pub(super) fn create(spec: &ClusterSpec, extra: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "quiver-bench-{}-{}-{}",
            spec.bench,
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
        ));
        let port = free_port().context("cannot find a free port")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("RUST_LOG".into(), "info".into());
        env.insert("QUIVER_DATANODE__SEGMENT_MAX_ROWS".into(), spec.segment_max_rows.to_string());
        // Placement by row count spreads segments deterministically; with a long balance
        // interval the layout changes only when the bench changes it (as in the replicas test).
        env.insert("QUIVER_PLUGINS__BALANCER".into(), "row-count".into());
        env.insert("QUIVER_BALANCE__INTERVAL".into(), spec.balance_interval.into());
        env.insert("QUIVER_PROXY__GRPC_PORT".into(), "0".into());
        env.insert("QUIVER_PROXY__HTTP_PORT".into(), "0".into());
        // Security off, explicitly (loopback only): the bench's clients connect without
        // credentials, and authentication is not what it measures (see `QuiverChild::start`).
        env.insert("QUIVER_SECURITY__ENABLED".into(), "false".into());
        env.extend(extra.iter().cloned());
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut file = String::new();
        let _ = writeln!(file, "# Written by `quiver-bench {}`.\n[cluster]\nname = {}", spec.bench, q(CLUSTER));
        let _ = writeln!(file, "data_dir = {}\n[cluster.env]", q(&dir.join("data").display().to_string()));
        for (k, v) in &env {
            let _ = writeln!(file, "{} = {}", q(k), q(v));
        }
        let _ = writeln!(file, "\n[nats]\nport = {port}\n\n[supervisor]");
        let _ =
            writeln!(file, "backoff_initial = {}", q(&format!("{}ms", (spec.restart_backoff_secs * 1000.0) as u64)));
        let query_nodes = spec.query_nodes.clone();
        let nodes = FIXED_NODES.iter().map(|(id, role)| (id.to_string(), *role));
        for (id, role) in nodes.chain(query_nodes.iter().map(|id| (id.clone(), "querynode"))) {
            let _ = writeln!(file, "\n[[node]]\nid = {}\nroles = [{}]", q(&id), q(role));
        }
        let path = dir.join("cluster.toml");
        std::fs::write(&path, file).with_context(|| format!("cannot write {}", path.display()))?;
        let exe = quiver_bin()?;
        eprintln!("cluster: running {}", exe.display());
        // From here on the dir (and, after `up`, the cluster) is cleaned up however we end.
        if let Ok(mut slot) = TO_STOP.lock() {
            *slot = Some((exe.clone(), path.clone(), dir.clone(), spec.keep));
        }
        let cluster = BenchCluster { dir, file: path, exe, url: format!("nats://127.0.0.1:{port}"), query_nodes };
        stop_on_signal()?;
        Ok(cluster)
    }

    /// `quiver cluster up`: returns once every node is registered and healthy.
    pub(super) fn up(&mut self) -> anyhow::Result<()> {
        eprintln!(
            "cluster: `quiver cluster up --config {}` (NATS {}); if this bench is killed, stop it with \
             `quiver cluster down --config {}`",
            self.file.display(),
            self.url,
            self.file.display()
        );
        let t = Instant::now();
        let out = Command::new(&self.exe)
            .args(["cluster", "up", "--timeout", "180s", "--config"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .output()
            .context("cannot run `quiver cluster up`")?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("`quiver cluster up` failed ({}):\n{text}", out.status);
        }
        eprintln!("cluster: up in {:.1}s\n{}", t.elapsed().as_secs_f64(), text.trim_end());
        Ok(())
    }

    /// `quiver cluster down`, once.
    pub(super) fn down(&mut self) -> anyhow::Result<()> {
        let taken = TO_STOP.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some((exe, file, dir, keep)) => stop_cluster(&exe, &file, &dir, keep),
            None => Ok(()),
        }
    }

    pub(super) fn state(&self) -> anyhow::Result<SupervisorState> {
        let path = self.dir.join("data").join("cluster").join("state.json");
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read the supervisor's {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a cluster state file", path.display()))
    }

    /// Every process of the cluster, by name (`supervisor`, `nats-server`, node ids).
    pub(super) fn processes(&self) -> anyhow::Result<Vec<(String, u32)>> {
        let st = self.state()?;
        let mut out = vec![("supervisor".to_string(), st.supervisor_pid)];
        out.extend(st.nats.iter().chain(&st.nodes).filter_map(|p| p.pid.map(|pid| (p.name.clone(), pid))));
        Ok(out)
    }

    /// This process and every process of the cluster, labelled for the CPU table.
    pub(super) fn watched(&self) -> anyhow::Result<Vec<Watched>> {
        let st = self.state()?;
        let mut out = vec![
            Watched { pid: std::process::id(), label: "bench clients".into() },
            Watched { pid: st.supervisor_pid, label: REST.into() },
        ];
        for p in st.nats.iter().chain(&st.nodes) {
            let label = match p.name.as_str() {
                "nats-server" | "proxy" => p.name.clone(),
                // The file's query nodes, and those the scaler started (`qn-<n>`).
                n if self.query_nodes.iter().any(|q| q == n) || n.starts_with("qn-") => n.to_string(),
                _ => REST.into(),
            };
            if let Some(pid) = p.pid {
                out.push(Watched { pid, label });
            }
        }
        Ok(out)
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("warning: {e:#}");
        }
    }
}

fn stop_cluster(exe: &Path, file: &Path, dir: &Path, keep: bool) -> anyhow::Result<()> {
    eprintln!("cluster: `quiver cluster down`");
    let status = Command::new(exe)
        .args(["cluster", "down", "--config"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("cannot run `quiver cluster down`")?;
    if !status.success() {
        bail!("`quiver cluster down --config {}` failed ({status}); the cluster may still run", file.display());
    }
    if keep {
        eprintln!("cluster: kept {} (cluster file, data, logs)", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("warning: cannot remove {}: {e}", dir.display());
    }
    Ok(())
}

/// On SIGINT, SIGTERM or SIGHUP: stop the cluster (its supervisor is detached and would
/// outlive us) and exit 130.
fn stop_on_signal() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    // Registered here, before `up`, so no signal falls between `up` and the handler.
    let (mut int, mut term, mut hup) = rt.block_on(async {
        anyhow::Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::hangup())?))
    })?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            });
            eprintln!("quiver-bench: interrupted; stopping the cluster");
            if let Some((exe, file, dir, keep)) = TO_STOP.lock().ok().and_then(|mut s| s.take()) {
                if let Err(e) = stop_cluster(&exe, &file, &dir, keep) {
                    eprintln!("error: {e:#}");
                }
            }
            std::process::exit(130);
        })
        .context("cannot start the signal thread")?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// The parts of the supervisor's `<data_dir>/cluster/state.json` (docs/cluster.md) we read.
#[derive(Deserialize)]
pub(super) struct SupervisorState {
    pub(super) supervisor_pid: u32,
    pub(super) nats: Option<SupervisedProcess>,
    pub(super) nodes: Vec<SupervisedProcess>,
}

#[derive(Deserialize)]
pub(super) struct SupervisedProcess {
    pub(super) name: String,
    pub(super) pid: Option<u32>,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<String>,
}

impl SupervisorState {
    pub(super) fn node(&self, name: &str) -> Option<&SupervisedProcess> {
        self.nodes.iter().find(|p| p.name == name)
    }
}
