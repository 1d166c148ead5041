//! `quiver bench-replicas`: search throughput with 1 and 2 in-memory replicas on the same query
//! nodes, and what clients see while a query node is SIGKILLed, in one run (MISSION issue 5,
//! item 8).
//!
//! 1. Raw faiss in-process on the same data, index parameters, queries and client threads: the
//!    baseline ([`super::run_raw`], as `quiver bench` runs it).
//! 2. A local multi-process cluster started the way operators start one, `quiver cluster up`,
//!    from a cluster file written into a temp dir: a managed nats-server on a free port, the
//!    coordinator, a proxy, a data node, an index node and `--query-nodes` query nodes, each
//!    its own process under the cluster supervisor (which restarts a node that dies). Row-count
//!    balancer and no periodic balance moves, so the layout only changes when we change it;
//!    `--segments` sealed segments.
//! 3. Insert, flush, build the index, serve with 1 replica; closed-loop search (the
//!    `quiver bench` driver: one OS thread and NATS connection per client, consistency
//!    Eventually) → QPS, p50/p99, recall@k against exact ground truth.
//! 4. `load_collection(2)`: every segment on two nodes, one per replica group; the same search.
//! 5. Kill phase, with 2 replicas under the same load: SIGKILL one query node process; failed
//!    searches, latency over the phase and right after the kill, a per-second timeline, and
//!    when the node was restarted, registered again and the layout fully replicated again.
//! 6. A markdown report on stdout (and in `--out`).
//!
//! The cluster is stopped with `quiver cluster down` when the bench ends, fails or is
//! interrupted (SIGINT, SIGTERM, SIGHUP). Only a SIGKILL of the bench itself leaves it running
//! (its supervisor is detached, as for operators); the start-up message prints the command
//! that stops it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use quiver_actors::vector::{higher_is_better, set_faiss_threads, VectorIndex};
use quiver_client::{schema, Client, Consistency, Distribution, IndexParams, NodeStatus, SearchParams, SegmentState};
use serde::Deserialize;

use super::{
    available_cores, drive_threads, free_port, ids_of, quiver_threads, retry, run_raw, runtime, search_request,
    wait_quiet, wait_segments, BenchArgs, CpuUsage, Data, LoadResult, Report, Watched, CLUSTER, COLLECTION,
};
use crate::ctl::{parse_index, IndexArgs};

#[derive(Args)]
pub struct BenchReplicasArgs {
    /// Dataset directory with base.fvecs, query.fvecs and (optionally) groundtruth.ivecs
    /// (default: the shared dataset beside the repository, when run from its root).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Base rows to use (default: the whole file). Below the file size, exact ground truth is
    /// recomputed by brute force.
    #[arg(long)]
    rows: Option<usize>,
    /// Query vectors to use (from the start of query.fvecs).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW.
    #[arg(long, default_value = "HNSW")]
    index_type: String,
    /// L2, IP or COSINE.
    #[arg(long, default_value = "IP")]
    metric: String,
    /// HNSW M or PQ sub-quantizers (0 = default).
    #[arg(long, default_value_t = 16)]
    m: u32,
    /// HNSW efConstruction (0 = default).
    #[arg(long, default_value_t = 200)]
    ef_construction: u32,
    /// IVF lists (0 = default).
    #[arg(long, default_value_t = 0)]
    nlist: u32,
    /// PQ bits per code (0 = default).
    #[arg(long, default_value_t = 0)]
    nbits: u32,
    /// HNSW efSearch.
    #[arg(long, default_value_t = 64)]
    ef: u32,
    /// IVF lists probed (0 = default).
    #[arg(long, default_value_t = 0)]
    nprobe: u32,
    /// Hits per query (recall is measured at this k).
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Client thread counts for the raw-faiss, 1-replica and 2-replica rows, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Measured seconds per row.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Unmeasured warm-up seconds before each row and before the kill phase.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Query node processes (qn1, qn2, ...); at least 2, the replicas are 1 and 2 on these.
    #[arg(long, default_value_t = 2)]
    query_nodes: usize,
    /// Sealed segments the data is cut into (datanode.segment_max_rows = ceil(rows / segments)).
    #[arg(long, default_value_t = 8)]
    segments: usize,
    /// Rows per insert call.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Length of the measured kill phase (after its warm-up).
    #[arg(long, default_value_t = 20.0)]
    kill_phase_secs: f64,
    /// When, into the measured kill phase, the query node is SIGKILLed.
    #[arg(long, default_value_t = 5.0)]
    kill_after_secs: f64,
    /// The query node process to SIGKILL (qn1 ... qnN).
    #[arg(long, default_value = "qn1")]
    kill_node: String,
    /// Client threads in the kill phase (default: the largest of --threads).
    #[arg(long)]
    kill_threads: Option<usize>,
    /// The supervisor's delay before it restarts the killed node (`[supervisor] backoff_initial`).
    #[arg(long, default_value_t = 1.0)]
    restart_backoff_secs: f64,
    /// How long after the kill to wait for the layout to be fully replicated again.
    #[arg(long, default_value_t = 120.0)]
    recovery_timeout_secs: f64,
    /// Before each measured row, wait up to this many seconds for the rest of the machine to go
    /// quiet (other processes using under --quiet-cores cores); 0 = don't wait.
    #[arg(long, default_value_t = 120.0)]
    quiet_wait_secs: f64,
    /// Busy cores of other processes that still count as quiet.
    #[arg(long, default_value_t = 0.15)]
    quiet_cores: f64,
    /// Skip the raw faiss baseline.
    #[arg(long)]
    skip_raw: bool,
    /// Extra environment of every node, `KEY=VALUE` (e.g. `QUIVER_PLUGINS__ROUTER=least-loaded`).
    /// Repeatable; written into the cluster file's `[cluster] env`.
    #[arg(long = "node-env", value_name = "KEY=VALUE")]
    node_env: Vec<String>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the cluster's temp dir (cluster file, data, logs) after the run.
    #[arg(long)]
    keep: bool,
}

impl BenchReplicasArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.threads.is_empty() || self.threads.contains(&0) || self.kill_threads == Some(0) {
            bail!("--threads and --kill-threads need positive thread counts, e.g. --threads 1,2");
        }
        if self.query_nodes < 2 {
            bail!("--query-nodes must be at least 2 (2 replicas need 2 query nodes)");
        }
        if self.segments == 0 || self.k == 0 || self.batch == 0 {
            bail!("--segments, -k and --batch must be at least 1");
        }
        let secs = [
            ("--duration-secs", self.duration_secs, false),
            ("--kill-phase-secs", self.kill_phase_secs, false),
            ("--warmup-secs", self.warmup_secs, true),
            ("--kill-after-secs", self.kill_after_secs, true),
            ("--restart-backoff-secs", self.restart_backoff_secs, true),
            ("--recovery-timeout-secs", self.recovery_timeout_secs, false),
        ];
        for (name, v, zero_ok) in secs {
            if !v.is_finite() || v < 0.0 || (!zero_ok && v == 0.0) {
                bail!(
                    "{name} must be a {} number of seconds, got {v}",
                    if zero_ok { "non-negative" } else { "positive" }
                );
            }
        }
        if self.kill_after_secs >= self.kill_phase_secs {
            bail!(
                "--kill-after-secs ({}) must be below --kill-phase-secs ({})",
                self.kill_after_secs,
                self.kill_phase_secs
            );
        }
        if !self.query_node_ids().contains(&self.kill_node) {
            bail!("--kill-node {:?} is not one of the query nodes {:?}", self.kill_node, self.query_node_ids());
        }
        Ok(())
    }

    fn query_node_ids(&self) -> Vec<String> {
        (1..=self.query_nodes).map(|i| format!("qn{i}")).collect()
    }

    fn kill_threads(&self) -> usize {
        self.kill_threads.unwrap_or_else(|| self.threads.iter().copied().max().unwrap_or(1))
    }

    /// The `quiver bench` arguments the shared pieces (data loading, raw faiss, quiet wait) read.
    fn bench_args(&self) -> anyhow::Result<BenchArgs> {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        let threads = self.threads.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let mut argv = vec![
            "bench".to_string(),
            "--dataset".into(),
            self.dataset.display().to_string(),
            "--queries".into(),
            self.queries.to_string(),
            "--index-type".into(),
            self.index_type.clone(),
            "--metric".into(),
            self.metric.clone(),
            "--m".into(),
            self.m.to_string(),
            "--ef-construction".into(),
            self.ef_construction.to_string(),
            "--nlist".into(),
            self.nlist.to_string(),
            "--nbits".into(),
            self.nbits.to_string(),
            "--ef".into(),
            self.ef.to_string(),
            "--nprobe".into(),
            self.nprobe.to_string(),
            "-k".into(),
            self.k.to_string(),
            "--threads".into(),
            threads,
            "--duration-secs".into(),
            self.duration_secs.to_string(),
            "--warmup-secs".into(),
            self.warmup_secs.to_string(),
            "--quiet-wait-secs".into(),
            self.quiet_wait_secs.to_string(),
            "--quiet-cores".into(),
            self.quiet_cores.to_string(),
        ];
        if let Some(rows) = self.rows {
            argv.extend(["--base-limit".into(), rows.to_string()]);
        }
        let Wrap { args } = <Wrap as clap::Parser>::try_parse_from(argv).context("internal: bench arguments")?;
        Ok(args)
    }
}

pub fn bench_replicas(args: BenchReplicasArgs) -> anyhow::Result<i32> {
    args.check()?;
    let node_env = args
        .node_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--node-env wants KEY=VALUE, got {kv:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bench_args = args.bench_args()?;
    let params = parse_index(&IndexArgs {
        name: COLLECTION.into(),
        index_type: args.index_type.clone(),
        metric: args.metric.clone(),
        nlist: args.nlist,
        m: args.m,
        nbits: args.nbits,
        ef_construction: args.ef_construction,
    })?;
    let search = SearchParams { nprobe: args.nprobe, ef: args.ef };
    let loadavg_start = loadavg();
    let data = Data::load(&bench_args, params.metric)?;
    let mut raw_report = Report::new(&bench_args, &data, &params);
    let raw = match args.skip_raw {
        true => Vec::new(),
        false => run_raw(&bench_args, &data, &params, &search, &mut raw_report)?,
    };
    let segment_max_rows = data.n.div_ceil(args.segments).max(1);
    let raw_segments = match args.skip_raw {
        true => None,
        false => Some(run_raw_segments(&args, &bench_args, &data, &params, &search, segment_max_rows)?),
    };
    let mut report = ReplicaReport {
        command: command_line(),
        cpu: raw_report.cpu.clone(),
        cores: available_cores(),
        loadavg_start,
        loadavg_end: String::new(),
        data_facts: format!(
            "{} — {} base × {} dim, {} queries, k = {}; ground truth: {}",
            args.dataset.display(),
            data.n,
            data.dim,
            data.nq,
            args.k,
            data.truth_source
        ),
        params: params.clone(),
        search,
        k: args.k,
        duration_secs: args.duration_secs,
        warmup_secs: args.warmup_secs,
        raw: raw.into_iter().map(|r| r.result).collect(),
        raw_build: raw_report.raw_build,
        raw_segments,
        segment_max_rows,
        batch: args.batch,
        node_env: node_env.clone(),
        load: ClusterLoad::default(),
        rows: Vec::new(),
        kill: None,
    };

    let mut cluster = BenchCluster::create(&args, segment_max_rows, &node_env)?;
    cluster.up()?;
    run_cluster(&args, &bench_args, &data, &params, &search, &cluster, &mut report)?;
    cluster.down()?;
    report.loadavg_end = loadavg();

    let text = report.markdown();
    print!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("cannot write the report to {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(0)
}

/// What the query nodes compute, without them: raw faiss in-process over the same segments
/// (one index per `segment_max_rows` rows, cut as the data node cuts them), every segment
/// searched for each query one after the other and the hits merged, from the same client
/// threads. Returns the build time and one row per thread count.
fn run_raw_segments(
    args: &BenchReplicasArgs,
    bench_args: &BenchArgs,
    data: &Data,
    params: &IndexParams,
    search: &SearchParams,
    segment_max_rows: usize,
) -> anyhow::Result<(Duration, Vec<LoadResult>)> {
    set_faiss_threads(1);
    let t = Instant::now();
    let mut indexes = Vec::new();
    for start in (0..data.n).step_by(segment_max_rows) {
        let end = (start + segment_max_rows).min(data.n);
        let index = VectorIndex::build(params, data.dim, &data.base[start * data.dim..end * data.dim])
            .map_err(|e| anyhow!("raw faiss build of rows {start}..{end}: {e}"))?;
        indexes.push((start as i64, index));
    }
    let build = t.elapsed();
    eprintln!("raw faiss: built {} segment indexes in {:.1}s (1 faiss thread)", indexes.len(), build.as_secs_f64());
    let higher = higher_is_better(params.metric);
    let (warmup, duration) = (Duration::from_secs_f64(args.warmup_secs), Duration::from_secs_f64(args.duration_secs));
    let me = std::process::id();
    let mut rows = Vec::new();
    for &threads in &args.threads {
        wait_quiet(bench_args, &[Watched { pid: me, label: String::new() }]);
        let watch = [Watched { pid: me, label: "bench (faiss)".into() }];
        let indexes = &indexes;
        let r = drive_threads(data, args.k, threads, warmup, duration, &watch, |_| {
            Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
                let mut hits: Vec<(f32, i64)> = Vec::with_capacity(args.k * indexes.len());
                for (offset, index) in indexes {
                    let (d, l) = index.search(data.query(q), args.k, search).map_err(|e| anyhow!("{e}"))?;
                    hits.extend(d.into_iter().zip(l).filter(|(_, l)| *l >= 0).map(|(d, l)| (d, l + offset)));
                }
                match higher {
                    true => hits.sort_by(|a, b| b.0.total_cmp(&a.0)),
                    false => hits.sort_by(|a, b| a.0.total_cmp(&b.0)),
                }
                Ok(hits.into_iter().take(args.k).map(|h| h.1).collect())
            })
        })?;
        eprintln!(
            "raw faiss, {} segments, {threads} thread(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}",
            indexes.len(),
            r.qps,
            r.p50_us,
            r.p99_us,
            args.k,
            r.recall
        );
        rows.push(r);
    }
    Ok((build, rows))
}

// ---------------------------------------------------------------- the cluster

/// CPU-table label of the processes that are idle while searching.
const REST: &str = "coord+dn+ixn+supervisor";

/// Node process ids of the cluster file besides the query nodes, with their roles.
const FIXED_NODES: [(&str, &str); 4] =
    [("coord", "coordinator"), ("proxy", "proxy"), ("dn", "datanode"), ("ixn", "indexnode")];

/// A `quiver cluster` in a temp dir; stopped with `quiver cluster down` (and the dir removed
/// unless --keep) when dropped, and by a signal handler if the bench is interrupted.
struct BenchCluster {
    dir: PathBuf,
    file: PathBuf,
    exe: PathBuf,
    url: String,
    query_nodes: Vec<String>,
}

/// What the signal handler needs to stop the cluster; taken by whoever stops it first.
static TO_STOP: Mutex<Option<(PathBuf, PathBuf, PathBuf, bool)>> = Mutex::new(None);

impl BenchCluster {
    fn create(args: &BenchReplicasArgs, segment_max_rows: usize, extra: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "quiver-bench-replicas-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
        ));
        let port = free_port()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("RUST_LOG".into(), "info".into());
        env.insert("QUIVER_DATANODE__SEGMENT_MAX_ROWS".into(), segment_max_rows.to_string());
        // Placement by row count spreads segments deterministically, and no periodic balance
        // moves: the layout changes only when the bench changes it (as in the replicas test).
        env.insert("QUIVER_PLUGINS__BALANCER".into(), "row-count".into());
        env.insert("QUIVER_BALANCE__INTERVAL".into(), "1h".into());
        env.insert("QUIVER_PROXY__GRPC_PORT".into(), "0".into());
        env.extend(extra.iter().cloned());
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut file = String::new();
        let _ = writeln!(file, "# Written by `quiver bench-replicas`.\n[cluster]\nname = {}", q(CLUSTER));
        let _ = writeln!(file, "data_dir = {}\n[cluster.env]", q(&dir.join("data").display().to_string()));
        for (k, v) in &env {
            let _ = writeln!(file, "{} = {}", q(k), q(v));
        }
        let _ = writeln!(file, "\n[nats]\nport = {port}\n\n[supervisor]");
        let _ =
            writeln!(file, "backoff_initial = {}", q(&format!("{}ms", (args.restart_backoff_secs * 1000.0) as u64)));
        let query_nodes = args.query_node_ids();
        let nodes = FIXED_NODES.iter().map(|(id, role)| (id.to_string(), *role));
        for (id, role) in nodes.chain(query_nodes.iter().map(|id| (id.clone(), "querynode"))) {
            let _ = writeln!(file, "\n[[node]]\nid = {}\nroles = [{}]", q(&id), q(role));
        }
        let path = dir.join("cluster.toml");
        std::fs::write(&path, file).with_context(|| format!("cannot write {}", path.display()))?;
        // /proc/self/exe still names this very binary if a rebuild replaced the file meanwhile.
        let exe = match Path::new("/proc/self/exe").exists() {
            true => PathBuf::from("/proc/self/exe"),
            false => std::env::current_exe().context("cannot find the quiver executable")?,
        };
        // From here on the dir (and, after `up`, the cluster) is cleaned up however we end.
        if let Ok(mut slot) = TO_STOP.lock() {
            *slot = Some((exe.clone(), path.clone(), dir.clone(), args.keep));
        }
        let cluster = BenchCluster { dir, file: path, exe, url: format!("nats://127.0.0.1:{port}"), query_nodes };
        stop_on_signal()?;
        Ok(cluster)
    }

    /// `quiver cluster up`: returns once every node is registered and healthy.
    fn up(&mut self) -> anyhow::Result<()> {
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
    fn down(&mut self) -> anyhow::Result<()> {
        let taken = TO_STOP.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some((exe, file, dir, keep)) => stop_cluster(&exe, &file, &dir, keep),
            None => Ok(()),
        }
    }

    fn state(&self) -> anyhow::Result<SupervisorState> {
        let path = self.dir.join("data").join("cluster").join("state.json");
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read the supervisor's {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a cluster state file", path.display()))
    }

    /// Every process of the cluster, by name (`supervisor`, `nats-server`, node ids).
    fn processes(&self) -> anyhow::Result<Vec<(String, u32)>> {
        let st = self.state()?;
        let mut out = vec![("supervisor".to_string(), st.supervisor_pid)];
        out.extend(st.nats.iter().chain(&st.nodes).filter_map(|p| p.pid.map(|pid| (p.name.clone(), pid))));
        Ok(out)
    }

    /// This process and every process of the cluster, labelled for the CPU table.
    fn watched(&self) -> anyhow::Result<Vec<Watched>> {
        let st = self.state()?;
        let mut out = vec![
            Watched { pid: std::process::id(), label: "bench clients".into() },
            Watched { pid: st.supervisor_pid, label: REST.into() },
        ];
        for p in st.nats.iter().chain(&st.nodes) {
            let label = match p.name.as_str() {
                "nats-server" | "proxy" => p.name.clone(),
                n if self.query_nodes.iter().any(|q| q == n) => n.to_string(),
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
            eprintln!("bench-replicas: interrupted; stopping the cluster");
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
struct SupervisorState {
    supervisor_pid: u32,
    nats: Option<SupervisedProcess>,
    nodes: Vec<SupervisedProcess>,
}

#[derive(Deserialize)]
struct SupervisedProcess {
    name: String,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
}

impl SupervisorState {
    fn node(&self, name: &str) -> Option<&SupervisedProcess> {
        self.nodes.iter().find(|p| p.name == name)
    }
}

// ---------------------------------------------------------------- phases

/// What loading the cluster took and how it served the data.
#[derive(Default)]
struct ClusterLoad {
    insert: Duration,
    flush_served: Duration,
    index_built: Duration,
    segment_rows: Vec<u64>,
    /// (replicas, seconds from load_collection to fully replicated, layout)
    loads: Vec<(u32, f64, String)>,
    /// Processes and pids at the start of the searches.
    processes: Vec<(String, u32)>,
}

fn run_cluster(
    args: &BenchReplicasArgs,
    bench_args: &BenchArgs,
    data: &Data,
    params: &IndexParams,
    search: &SearchParams,
    cluster: &BenchCluster,
    report: &mut ReplicaReport,
) -> anyhow::Result<()> {
    let rt = runtime(2)?;
    let client = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), Client::connect(&cluster.url, CLUSTER))
            .await
            .with_context(|| format!("connecting to {} timed out", cluster.url))?
            .context("cannot connect to the cluster")
    })?;
    let segment_max_rows = report.segment_max_rows;
    let load = &mut report.load;
    rt.block_on(async {
        let mut s = schema::simple(COLLECTION, data.dim as u32);
        s.num_shards = 1;
        retry("create_collection", || client.create_collection(s.clone())).await?;
        let t = Instant::now();
        // A segment is sealed after the insert that fills it: batches never cross a segment
        // boundary, so every segment holds exactly segment_max_rows rows.
        let mut start = 0;
        while start < data.n {
            let boundary = (start / segment_max_rows + 1) * segment_max_rows;
            let end = (start + args.batch).min(boundary).min(data.n);
            let rows = schema::rows(
                start as i64..end as i64,
                data.dim as u32,
                data.base[start * data.dim..end * data.dim].to_vec(),
            );
            client.insert(COLLECTION, rows).await.with_context(|| format!("insert rows {start}..{end}"))?;
            start = end;
        }
        load.insert = t.elapsed();
        eprintln!("quiver: inserted {} rows in {:.1}s", data.n, load.insert.as_secs_f64());
        let t = Instant::now();
        retry("flush", || client.flush(COLLECTION)).await?;
        wait_segments(&client, data.n as u64, false, Duration::from_secs(600)).await?;
        load.flush_served = t.elapsed();
        eprintln!("quiver: flushed; sealed segments served after {:.1}s", load.flush_served.as_secs_f64());
        anyhow::Ok(())
    })?;

    // The index: every segment Indexed in the catalog; then release and load again, so that
    // every holder loads its segments with their index (a holder confirms only what the
    // coordinator sent after the release, when the catalog already names the indexes).
    rt.block_on(async {
        let t = Instant::now();
        retry("create_index", || client.create_index(COLLECTION, params.clone())).await?;
        eprintln!("quiver: index defined; waiting for the index node...");
        load.segment_rows = wait_segments(&client, data.n as u64, true, Duration::from_secs(7200)).await?;
        load.index_built = t.elapsed();
        eprintln!(
            "quiver: {} segments {:?} Indexed after {:.1}s; releasing to load them again with their indexes",
            load.segment_rows.len(),
            load.segment_rows,
            load.index_built.as_secs_f64()
        );
        retry("release_collection", || client.release_collection(COLLECTION)).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let d = retry("distribution", || client.distribution(COLLECTION)).await?;
            if d.released && d.replicas.is_empty() && d.segments.iter().all(|s| s.nodes.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the collection is not released 2 minutes after release_collection: {}", layout_summary(&d));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })?;

    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    for replicas in [1u32, 2] {
        let (secs, layout) = rt.block_on(load_replicas(&client, replicas, data.n as u64))?;
        eprintln!("quiver: {replicas} replica(s) fully loaded after {secs:.1}s: {layout}");
        report.load.loads.push((replicas, secs, layout));
        // Proxies refetch the layout on the coordinator's event; give them a moment.
        std::thread::sleep(Duration::from_secs(2));
        let watch = cluster.watched()?;
        report.load.processes = cluster.processes()?;
        for &threads in &args.threads {
            wait_quiet(bench_args, &watch);
            let r = quiver_threads(
                &cluster.url,
                data,
                args.k,
                *search,
                Consistency::Eventually,
                threads,
                warmup,
                duration,
                &watch,
            )?;
            eprintln!(
                "quiver {replicas} replica(s), {threads} client(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}, {} errors",
                r.qps, r.p50_us, r.p99_us, args.k, r.recall, r.errors
            );
            report.rows.push((replicas, r));
        }
    }

    let watch = cluster.watched()?;
    wait_quiet(bench_args, &watch);
    report.kill = Some(kill_phase(args, data, search, cluster, &watch)?);
    Ok(())
}

/// `load_collection(replicas)` and wait until the layout is fully replicated with all `rows`
/// in Indexed segments; returns the seconds it took and the layout.
async fn load_replicas(client: &Client, replicas: u32, rows: u64) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    retry("load_collection", || client.load_collection(COLLECTION, replicas)).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = retry("distribution", || client.distribution(COLLECTION)).await?;
        let served: u64 =
            d.segments.iter().filter(|s| s.segment.state == SegmentState::Indexed).map(|s| s.segment.rows).sum();
        let check = fully_replicated(&d, replicas as usize).and_then(|()| match served == rows {
            true => Ok(()),
            false => Err(format!("{served} of {rows} rows in served Indexed segments")),
        });
        match check {
            Ok(()) => return Ok((t.elapsed().as_secs_f64(), layout_summary(&d))),
            Err(why) if Instant::now() > deadline => {
                bail!("{replicas} replica(s) not fully loaded after 10 minutes: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every replica group has nodes, every shard a leader in every group, every live sealed
/// segment one holder in every group (the check of the replicas integration test).
fn fully_replicated(d: &Distribution, replicas: usize) -> Result<(), String> {
    if d.replicas.len() != replicas {
        return Err(format!("{} replica groups", d.replicas.len()));
    }
    let group_of: BTreeMap<&str, u32> =
        d.replicas.iter().flat_map(|g| g.nodes.iter().map(move |n| (n.as_str(), g.id))).collect();
    if let Some(g) = d.replicas.iter().find(|g| g.nodes.is_empty()) {
        return Err(format!("replica group {} has no node", g.id));
    }
    let mut shards: Vec<u32> = d.shards.iter().map(|s| s.shard).collect();
    shards.sort_unstable();
    shards.dedup();
    for shard in shards {
        let mut groups: Vec<u32> =
            d.leaders_of(shard).filter_map(|l| group_of.get(l.leader.as_str()).copied()).collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() != replicas {
            return Err(format!("shard {shard} has leaders in groups {groups:?}"));
        }
    }
    for s in d.segments.iter().filter(|s| s.segment.state != SegmentState::Dropped) {
        let mut groups: Vec<u32> = s.nodes.iter().filter_map(|n| group_of.get(n.as_str()).copied()).collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() != replicas || s.nodes.len() != replicas {
            return Err(format!("segment {} is held by {:?}", s.segment.id, s.nodes));
        }
    }
    Ok(())
}

/// `g0 [qn1] g1 [qn2]; segments by holders: 2 → 8`, for the report and the kill timeline.
fn layout_summary(d: &Distribution) -> String {
    let short = |n: &str| n.trim_end_matches("-querynode").to_string();
    let groups: Vec<String> = d
        .replicas
        .iter()
        .map(|g| format!("g{} [{}]", g.id, g.nodes.iter().map(|n| short(n)).collect::<Vec<_>>().join(" ")))
        .collect();
    let mut by_holders: BTreeMap<usize, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for s in d.segments.iter().filter(|s| s.segment.state != SegmentState::Dropped) {
        *by_holders.entry(s.nodes.len()).or_default() += 1;
        for n in &s.nodes {
            *per_node.entry(short(n)).or_default() += 1;
        }
    }
    let holders: Vec<String> = by_holders.iter().map(|(h, n)| format!("{n} with {h}")).collect();
    let nodes: Vec<String> = per_node.iter().map(|(n, c)| format!("{n} {c}")).collect();
    format!(
        "{}; segments: {} holder(s); held: {}",
        if groups.is_empty() { "no groups".into() } else { groups.join(", ") },
        holders.join(", "),
        nodes.join(", ")
    )
}

// ---------------------------------------------------------------- kill phase

/// One search of the kill phase.
#[derive(Clone, Copy)]
struct Sample {
    start: Instant,
    end: Instant,
    ok: bool,
    /// Hits in the exact top-k.
    hits: u32,
}

/// What the layout monitor saw after the kill (instants).
#[derive(Default)]
struct Recovery {
    killed_at: Option<Instant>,
    /// The supervisor's state file shows a new pid for the node.
    restarted_at: Option<Instant>,
    new_pid: Option<u32>,
    last_exit: Option<String>,
    /// The registry lists the node with the new pid, healthy.
    rejoined_at: Option<Instant>,
    /// The coordinator took the dead process's segments out of the layout (or the node out of
    /// its group).
    dropped_at: Option<Instant>,
    /// Fully replicated again, with the killed node (if in a group) back as a new process that
    /// holds what the layout says.
    replicated_at: Option<Instant>,
    /// Layout changes: (when, summary).
    events: Vec<(Instant, String)>,
    poll_errors: usize,
}

struct KillReport {
    node: String,
    old_pid: u32,
    threads: usize,
    phase: Duration,
    kill_after: Duration,
    result: LoadResult,
    samples: Vec<Sample>,
    window_start: Instant,
    recovery: Recovery,
    layout_before: String,
    recovery_timeout: Duration,
}

fn kill_phase(
    args: &BenchReplicasArgs,
    data: &Data,
    search: &SearchParams,
    cluster: &BenchCluster,
    watch: &[Watched],
) -> anyhow::Result<KillReport> {
    let threads = args.kill_threads();
    let node = args.kill_node.clone();
    let registry_id = format!("{node}-querynode");
    let st = cluster.state()?;
    let old_pid = st
        .node(&node)
        .and_then(|p| p.pid)
        .ok_or_else(|| anyhow!("the supervisor's state lists no running process for {node}"))?;
    let rt = runtime(1)?;
    let client = rt.block_on(Client::connect(&cluster.url, CLUSTER))?.with_timeout(Duration::from_secs(5));
    let (registered, d) = rt.block_on(async {
        let status = client.status().await?;
        let d = client.distribution(COLLECTION).await?;
        anyhow::Ok((status.nodes.into_iter().find(|n| n.node_id == registry_id).map(|n| n.pid), d))
    })?;
    let layout_before = layout_summary(&d);
    let held_before = d.segments.iter().filter(|s| s.nodes.contains(&registry_id)).count();
    if registered != Some(old_pid) {
        bail!("{registry_id}: the supervisor runs pid {old_pid} but the registry lists {registered:?}");
    }
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let phase = Duration::from_secs_f64(args.kill_phase_secs);
    let kill_after = Duration::from_secs_f64(args.kill_after_secs);
    let recovery_timeout = Duration::from_secs_f64(args.recovery_timeout_secs);
    eprintln!(
        "kill phase: {threads} client(s), {:.0}s measured; SIGKILL {node} (pid {old_pid}) after {:.0}s; layout {layout_before}",
        phase.as_secs_f64(),
        kill_after.as_secs_f64()
    );

    let started: OnceLock<Instant> = OnceLock::new();
    let done = AtomicBool::new(false);
    let samples: Vec<Mutex<Vec<Sample>>> = (0..threads).map(|_| Mutex::new(Vec::with_capacity(64 * 1024))).collect();
    let (result, recovery) = std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            let ctx = Monitor {
                rt: &rt,
                client: &client,
                cluster,
                node: &node,
                registry_id: &registry_id,
                old_pid,
                held_before,
                done: &done,
                recovery_timeout,
            };
            ctx.run(&started, warmup + kill_after)
        });
        let result = drive_threads(data, args.k, threads, warmup, phase, watch, |t| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let client = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), Client::connect(&cluster.url, CLUSTER)).await
                })
                .context("connecting a benchmark client timed out")??;
            let (slot, started, k, search) = (&samples[t], &started, args.k, *search);
            Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
                let req = search_request(data, q, k, search, Consistency::Eventually);
                let t0 = Instant::now();
                started.get_or_init(|| t0);
                let res = rt.block_on(client.search(&req));
                let end = Instant::now();
                let ids = res.map(ids_of);
                let hits = ids
                    .as_ref()
                    .map_or(0, |ids| ids.iter().take(k).filter(|id| data.truth[q].contains(*id)).count() as u32);
                if let Ok(mut v) = slot.lock() {
                    v.push(Sample { start: t0, end, ok: ids.is_ok(), hits });
                }
                Ok(ids?)
            })
        });
        done.store(true, Ordering::SeqCst);
        let recovery = monitor.join().unwrap_or_else(|_| Err(anyhow!("the layout monitor panicked")));
        (result, recovery)
    });
    let result = result?;
    let recovery = recovery?;
    let mut all: Vec<Sample> = samples.into_iter().flat_map(|m| m.into_inner().unwrap_or_default()).collect();
    all.sort_by_key(|s| s.start);
    let window_start = started.get().copied().unwrap_or_else(Instant::now) + warmup;
    Ok(KillReport {
        node,
        old_pid,
        threads,
        phase,
        kill_after,
        result,
        samples: all,
        window_start,
        recovery,
        layout_before,
        recovery_timeout,
    })
}

/// Kills the node at the right moment, then polls the supervisor's state, the registry and the
/// layout until the layout is fully replicated again (or the recovery timeout passes).
struct Monitor<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    cluster: &'a BenchCluster,
    node: &'a str,
    registry_id: &'a str,
    old_pid: u32,
    /// Segments the node held before the kill.
    held_before: usize,
    done: &'a AtomicBool,
    recovery_timeout: Duration,
}

/// Layout poll interval after the kill (a status and a distribution call to the proxy each).
const POLL: Duration = Duration::from_millis(100);

impl Monitor<'_> {
    fn run(&self, started: &OnceLock<Instant>, kill_at: Duration) -> anyhow::Result<Recovery> {
        let mut rec = Recovery::default();
        // The first search marks the start; give the clients 60 s to connect.
        let t = Instant::now();
        let first = loop {
            if let Some(s) = started.get() {
                break *s;
            }
            if self.done.load(Ordering::SeqCst) || t.elapsed() > Duration::from_secs(60) {
                return Ok(rec);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        std::thread::sleep((first + kill_at).saturating_duration_since(Instant::now()));
        sigkill_query_node(self.old_pid)?;
        let killed = Instant::now();
        rec.killed_at = Some(killed);
        eprintln!("kill phase: SIGKILLed {} (pid {})", self.node, self.old_pid);
        let mut last_summary = String::new();
        while killed.elapsed() < self.recovery_timeout {
            let now = Instant::now();
            if rec.restarted_at.is_none() {
                if let Some(p) = self.cluster.state().ok().as_ref().and_then(|st| st.node(self.node)) {
                    if p.pid.is_some_and(|pid| pid != self.old_pid) {
                        rec.restarted_at = Some(now);
                        rec.new_pid = p.pid;
                        rec.last_exit = p.last_exit.clone();
                        eprintln!(
                            "kill phase: supervisor restarted {} as pid {:?} after {:.2}s (restarts {}, last exit {:?})",
                            self.node,
                            p.pid,
                            now.duration_since(killed).as_secs_f64(),
                            p.restarts,
                            p.last_exit
                        );
                    }
                }
            }
            match self.rt.block_on(self.poll()) {
                Ok((back, d)) => {
                    if back.as_ref().is_some_and(|b| b.healthy) && rec.rejoined_at.is_none() {
                        rec.rejoined_at = Some(now);
                    }
                    let summary = layout_summary(&d);
                    if summary != last_summary {
                        rec.events.push((now, summary.clone()));
                        last_summary = summary;
                    }
                    let in_group = d.replicas.iter().any(|g| g.nodes.iter().any(|n| n == self.registry_id));
                    let held = d.segments.iter().filter(|s| s.nodes.iter().any(|n| n == self.registry_id)).count();
                    if rec.dropped_at.is_none() && (!in_group || held < self.held_before) {
                        rec.dropped_at = Some(now);
                    }
                    // Until the coordinator notices, the layout still lists the dead process as
                    // a holder. Its holdings count once the coordinator dropped and re-confirmed
                    // them, or once the new process itself reports holding as many segments
                    // (heartbeat, so up to node.heartbeat_interval late).
                    let node_ok = !in_group
                        || back.is_some_and(|b| b.healthy && (rec.dropped_at.is_some() || b.segments as usize == held));
                    if node_ok && fully_replicated(&d, 2).is_ok() {
                        rec.replicated_at = Some(now);
                        eprintln!(
                            "kill phase: fully replicated again {:.2}s after the kill",
                            now.duration_since(killed).as_secs_f64()
                        );
                        break;
                    }
                }
                Err(_) => rec.poll_errors += 1,
            }
            std::thread::sleep(POLL.saturating_sub(now.elapsed()));
        }
        Ok(rec)
    }

    /// The registry entry of the node's new process, if any; and the layout.
    async fn poll(&self) -> anyhow::Result<(Option<NodeStatus>, Distribution)> {
        let status = self.client.status().await?;
        let back = status.nodes.into_iter().find(|n| n.node_id == self.registry_id && n.pid != self.old_pid);
        Ok((back, self.client.distribution(COLLECTION).await?))
    }
}

/// SIGKILL, after checking that the pid is still a query node process.
fn sigkill_query_node(pid: u32) -> anyhow::Result<()> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).with_context(|| format!("no process {pid}"))?;
    if !String::from_utf8_lossy(&cmdline).contains("querynode") {
        bail!("process {pid} is not a query node any more; not killing it");
    }
    let p = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) with a positive pid only signals that one process.
    if p <= 0 || unsafe { libc::kill(p, libc::SIGKILL) } != 0 {
        bail!("cannot SIGKILL {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Latency statistics of some samples, in µs.
struct Stats {
    calls: usize,
    failed: usize,
    p50: f64,
    p99: f64,
    max: f64,
    recall: f64,
}

fn stats<'a>(samples: impl Iterator<Item = &'a Sample>, k: usize) -> Stats {
    let (mut lat, mut failed, mut hits) = (Vec::new(), 0, 0u64);
    for s in samples {
        if s.ok {
            lat.push(s.end.duration_since(s.start).as_nanos() as u64);
            hits += u64::from(s.hits);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| match lat.len() {
        0 => f64::NAN,
        n => lat[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0,
    };
    Stats {
        calls: lat.len() + failed,
        failed,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        recall: if lat.is_empty() { f64::NAN } else { hits as f64 / (lat.len() * k) as f64 },
    }
}

// ---------------------------------------------------------------- report

struct ReplicaReport {
    command: String,
    cpu: String,
    cores: usize,
    loadavg_start: String,
    loadavg_end: String,
    data_facts: String,
    params: IndexParams,
    search: SearchParams,
    k: usize,
    duration_secs: f64,
    warmup_secs: f64,
    raw: Vec<LoadResult>,
    raw_build: Option<Duration>,
    /// Raw faiss over the same segments: (build time, rows).
    raw_segments: Option<(Duration, Vec<LoadResult>)>,
    segment_max_rows: usize,
    batch: usize,
    node_env: Vec<(String, String)>,
    load: ClusterLoad,
    /// (replicas, result)
    rows: Vec<(u32, LoadResult)>,
    kill: Option<KillReport>,
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.0}")
    }
}

fn cpu_cell(cpu: Option<&CpuUsage>) -> String {
    let Some(cpu) = cpu else { return "—".into() };
    let mut parts: Vec<String> = cpu.parts.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
    parts.push(format!("**other processes {:.2}**", cpu.other));
    parts.join(", ")
}

impl ReplicaReport {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(s, "## quiver bench-replicas\n\n```sh\n{}\n```\n", self.command);
        let _ = writeln!(
            s,
            "- machine: {} × {} cores; load average {} at the start, {} at the end",
            self.cpu, self.cores, self.loadavg_start, self.loadavg_end
        );
        let _ = writeln!(s, "- dataset: {}", self.data_facts);
        let _ = writeln!(
            s,
            "- index: {:?} {:?} (M {}, efConstruction {}, nlist {}, nbits {}; 0 = default); search ef {}, nprobe {}; faiss threads 1 (query nodes and raw)",
            p.index_type, p.metric, p.m, p.ef_construction, p.nlist, p.nbits, self.search.ef, self.search.nprobe
        );
        let _ = writeln!(
            s,
            "- load: closed loop, one query per call, consistency Eventually, one OS thread and NATS connection per client; {} s warm-up + {} s measured per row",
            self.warmup_secs, self.duration_secs
        );
        let l = &self.load;
        let procs: Vec<String> = l.processes.iter().map(|(name, pid)| format!("{name} {pid}")).collect();
        let _ = writeln!(
            s,
            "- cluster: `quiver cluster up` — nats-server, coordinator, proxy, data node, index node, {} query nodes, each its own process (pids: {}); 1 shard; datanode.segment_max_rows = {} → {} sealed segments {:?}; balancer row-count, balance interval 1h; proxy router {}{}",
            l.processes.iter().filter(|(name, _)| name.starts_with("qn")).count(),
            procs.join(", "),
            self.segment_max_rows,
            l.segment_rows.len(),
            l.segment_rows,
            self.node_env
                .iter()
                .rev()
                .find(|(k, _)| k == "QUIVER_PLUGINS__ROUTER")
                .map_or("rendezvous (the default)".to_string(), |(_, v)| v.clone()),
            if self.node_env.is_empty() {
                String::new()
            } else {
                format!(
                    "; extra node env `{}`",
                    self.node_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                )
            }
        );
        let _ = writeln!(
            s,
            "- load: insert {} (batches of ≤ {} rows, cut at segment boundaries), flush → served {}, create_index → all segments Indexed {} (raw faiss, 1 thread: whole base {}, the same segments {}); then release and load again, so every holder loads its segments with their index",
            secs(l.insert),
            self.batch,
            secs(l.flush_served),
            secs(l.index_built),
            self.raw_build.map_or("—".into(), secs),
            self.raw_segments.as_ref().map_or("—".into(), |(b, _)| secs(*b))
        );
        for (replicas, t, layout) in &l.loads {
            let _ = writeln!(s, "- load_collection({replicas}) → fully replicated in {t:.1} s: {layout}");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| system | client threads | calls | QPS | p50 µs | p99 µs | mean µs | recall@{} | errors | QPS / raw | QPS / raw segments | QPS / 1 replica |",
            self.k
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let ratio = |a: f64, b: Option<&LoadResult>| {
            b.filter(|b| b.qps > 0.0).map_or("—".into(), |b| format!("{:.0}%", 100.0 * a / b.qps))
        };
        let raw_for = |t: usize| self.raw.iter().find(|r| r.threads == t);
        let seg_rows = self.raw_segments.as_ref().map_or(&[][..], |(_, rows)| rows.as_slice());
        let seg_for = |t: usize| seg_rows.iter().find(|r| r.threads == t);
        let one_for = |t: usize| self.rows.iter().find(|(n, r)| *n == 1 && r.threads == t).map(|(_, r)| r);
        let mut row = |name: &str, r: &LoadResult, one: Option<&LoadResult>| {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {:.0} | {} | {} | {} | {:.4} | {} | {} | {} | {} |",
                r.threads,
                r.calls,
                r.qps,
                us(r.p50_us),
                us(r.p99_us),
                us(r.mean_us),
                r.recall,
                r.errors,
                ratio(r.qps, raw_for(r.threads)),
                ratio(r.qps, seg_for(r.threads)),
                ratio(r.qps, one)
            );
        };
        for r in &self.raw {
            row("raw faiss, 1 index of the whole base (in-process)", r, None);
        }
        for r in seg_rows {
            row(&format!("raw faiss, {} segment indexes searched in turn (in-process)", l.segment_rows.len()), r, None);
        }
        for (n, r) in &self.rows {
            row(&format!("Quiver, {n} replica{}", if *n == 1 { "" } else { "s" }), r, one_for(r.threads));
        }
        let _ = writeln!(s);
        for (n, r) in &self.rows {
            if let Some(e) = &r.first_error {
                let _ = writeln!(s, "- errors, {n} replica(s), {} threads: {} (first: {e})", r.threads, r.errors);
            }
        }
        let _ = writeln!(
            s,
            "CPU in cores (1.0 = one core busy) per process over each measured window, from /proc; \"other processes\" is the rest of the machine (other users, kernel work not charged to ours):\n"
        );
        let _ = writeln!(s, "| system | client threads | CPU |");
        let _ = writeln!(s, "|---|---:|---|");
        for r in &self.raw {
            let _ = writeln!(s, "| raw faiss, 1 index | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
        }
        if let Some((_, rows)) = &self.raw_segments {
            for r in rows {
                let _ = writeln!(s, "| raw faiss, segments | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
            }
        }
        for (n, r) in &self.rows {
            let _ = writeln!(s, "| Quiver, {n} replica(s) | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
        }
        if let Some(k) = &self.kill {
            let _ = writeln!(s, "| kill phase (2 replicas) | {} | {} |", k.threads, cpu_cell(k.result.cpu.as_ref()));
        }
        let _ = writeln!(s);
        if let Some(k) = &self.kill {
            let _ = writeln!(
                s,
                "In the kill phase `{}` is the killed process; its restarted successor (loading its segments again) is not watched, so its CPU counts under \"other processes\".\n",
                k.node
            );
        }
        if let Some(k) = &self.kill {
            k.markdown(&mut s, self.k);
        }
        s
    }
}

impl KillReport {
    fn markdown(&self, s: &mut String, k: usize) {
        let _ = writeln!(
            s,
            "### Query-node kill with 2 replicas\n\n{} client threads, {} measured after the warm-up; SIGKILL of `{}` (pid {}) {} into it. Layout before: {}.\n",
            self.threads,
            secs(self.phase),
            self.node,
            self.old_pid,
            secs(self.kill_after),
            self.layout_before
        );
        let end = self.window_start + self.phase;
        let in_window: Vec<&Sample> =
            self.samples.iter().filter(|x| x.start >= self.window_start && x.start < end).collect();
        let rec = &self.recovery;
        let Some(killed) = rec.killed_at else {
            let _ = writeln!(s, "- the node was **not** killed (the load did not start)\n");
            return;
        };
        let whole = stats(in_window.iter().copied(), k);
        let before = stats(in_window.iter().copied().filter(|x| x.start < killed), k);
        let after_to = killed + Duration::from_secs(2);
        // Every call that overlapped the 2 s after the kill, including those in flight at it.
        let after = stats(in_window.iter().copied().filter(|x| x.end >= killed && x.start < after_to), k);
        let rest = stats(in_window.iter().copied().filter(|x| x.start >= after_to), k);
        let _ = writeln!(s, "| window | calls | failed | p50 µs | p99 µs | max µs | recall@{k} (every answer) |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, st) in [
            ("whole phase", &whole),
            ("calls started before the kill", &before),
            ("2 s after the kill (calls overlapping it)", &after),
            ("from 2 s after the kill to the end", &rest),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {:.4} |",
                st.calls,
                st.failed,
                us(st.p50),
                us(st.p99),
                us(st.max),
                st.recall
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- failed searches: **{}** of {} in the phase{}; QPS over the phase {:.0}",
            whole.failed,
            whole.calls,
            self.result.first_error.as_ref().map_or(String::new(), |e| format!(" (first: {e})")),
            self.result.qps
        );
        let at = |t: Option<Instant>| {
            t.map_or_else(
                || "not seen".to_string(),
                |t| format!("{:.2} s", t.saturating_duration_since(killed).as_secs_f64()),
            )
        };
        let _ = writeln!(
            s,
            "- after the kill: supervisor restarted the process at {}{}; registered again (new pid, healthy) at {}; coordinator took the dead process's segments out of the layout at {}; **fully replicated again at {}**{}",
            at(rec.restarted_at),
            rec.new_pid.map_or(String::new(), |p| format!(
                " (pid {p}, last exit: {})",
                rec.last_exit.as_deref().unwrap_or("?")
            )),
            at(rec.rejoined_at),
            at(rec.dropped_at),
            at(rec.replicated_at),
            if rec.replicated_at.is_none() {
                format!(" (gave up after {})", secs(self.recovery_timeout))
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "- layout polled every {} ms through the proxy (status + distribution){}",
            POLL.as_millis(),
            if rec.poll_errors > 0 { format!("; {} polls failed", rec.poll_errors) } else { String::new() }
        );
        for (t, summary) in &rec.events {
            let _ = writeln!(s, "  - +{:.2} s: {summary}", t.saturating_duration_since(killed).as_secs_f64());
        }
        let _ = writeln!(s, "\nPer second of the phase (by call start; ◀ kill):\n");
        let _ = writeln!(s, "| second | calls | failed | p50 µs | p99 µs | max µs | recall@{k} |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
        let kill_sec = killed.saturating_duration_since(self.window_start).as_secs();
        for sec in 0..self.phase.as_secs_f64().ceil() as u64 {
            let from = self.window_start + Duration::from_secs(sec);
            let to = from + Duration::from_secs(1);
            let st = stats(in_window.iter().copied().filter(|x| x.start >= from && x.start < to), k);
            let _ = writeln!(
                s,
                "| {sec}{} | {} | {} | {} | {} | {} | {:.4} |",
                if sec == kill_sec { " ◀" } else { "" },
                st.calls,
                st.failed,
                us(st.p50),
                us(st.p99),
                us(st.max),
                st.recall
            );
        }
        let _ = writeln!(s);
    }
}
