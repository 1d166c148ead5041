//! `quiver-bench replicas`: search throughput with 1 and 2 in-memory replicas on the same query
//! nodes, and what clients see while a query node is SIGKILLed, in one run (MISSION issue 5,
//! item 8).
//!
//! 1. Raw faiss in-process on the same data, index parameters, queries and client threads: the
//!    baseline ([`super::run_raw`], as `quiver-bench standalone` runs it).
//! 2. A local multi-process cluster started the way operators start one, `quiver cluster up`,
//!    from a cluster file written into a temp dir: a managed nats-server on a free port, the
//!    coordinator, a proxy, a data node, an index node and `--query-nodes` query nodes, each
//!    its own process under the cluster supervisor (which restarts a node that dies). Row-count
//!    balancer and no periodic balance moves, so the layout only changes when we change it;
//!    `--segments` sealed segments.
//! 3. Insert, flush, build the index, serve with 1 replica; closed-loop search (the
//!    `quiver-bench standalone` driver: one OS thread and NATS connection per client, consistency
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
//!
//! - `cluster.rs`: the cluster file, `quiver cluster up` / `down`, the supervisor's state file.
//! - `kill.rs`: the kill phase and the recovery monitor.
//! - `report.rs`: the markdown report.
//! - `scale.rs`, `scale_report.rs`: `quiver-bench scale` (query nodes scaled 1 → N → 1 through
//!   the API under search load), on the same cluster, data loading and sampled clients.

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
    available_cores, cpu_model, drive_threads, drive_threads_until, free_port, ids_of, quiver_bin, quiver_threads,
    retry, run_raw, runtime, search_request, wait_quiet, wait_segments, BenchArgs, CpuUsage, Data, LoadResult, Report,
    Watched, Workload, CLUSTER, COLLECTION,
};

#[derive(Args)]
pub struct BenchReplicasArgs {
    #[command(flatten)]
    workload: Workload,
    /// Base rows to use (default: the whole file). Below the file size, exact ground truth is
    /// recomputed by brute force.
    #[arg(long)]
    rows: Option<usize>,
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
    #[command(flatten)]
    run: ClusterRunArgs,
}

/// The cluster benches' node environment, report file and temp dir.
#[derive(Args)]
pub struct ClusterRunArgs {
    /// Extra environment of every node, `KEY=VALUE` (e.g. `QUIVER_PLUGINS__ROUTER=least-loaded`).
    /// Repeatable; written into the cluster file's `[cluster] env`, after the bench's own
    /// settings, so it can override them.
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
        if self.segments == 0 || self.workload.k == 0 || self.batch == 0 {
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

    /// The `quiver-bench standalone` arguments the shared pieces (data loading, raw faiss, quiet wait) read.
    fn bench_args(&self) -> anyhow::Result<BenchArgs> {
        let threads = self.threads.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        standalone_args(
            &self.workload,
            self.rows,
            &[
                "--threads",
                &threads,
                "--duration-secs",
                &self.duration_secs.to_string(),
                "--warmup-secs",
                &self.warmup_secs.to_string(),
                "--quiet-wait-secs",
                &self.quiet_wait_secs.to_string(),
                "--quiet-cores",
                &self.quiet_cores.to_string(),
            ],
        )
    }
}

/// `quiver-bench standalone` arguments for the shared pieces: the workload, `--base-limit rows`
/// and `flags`.
pub(super) fn standalone_args(workload: &Workload, rows: Option<usize>, flags: &[&str]) -> anyhow::Result<BenchArgs> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }
    let mut argv = vec!["bench".to_string()];
    argv.extend(flags.iter().map(|f| f.to_string()));
    if let Some(rows) = rows {
        argv.extend(["--base-limit".into(), rows.to_string()]);
    }
    let Wrap { mut args } = <Wrap as clap::Parser>::try_parse_from(argv).context("internal: bench arguments")?;
    args.workload = workload.clone();
    Ok(args)
}

/// `--node-env KEY=VALUE` pairs.
pub(super) fn parse_node_env(node_env: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    node_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--node-env wants KEY=VALUE, got {kv:?}"))
        })
        .collect()
}

pub fn bench_replicas(args: BenchReplicasArgs) -> anyhow::Result<i32> {
    args.check()?;
    let node_env = parse_node_env(&args.run.node_env)?;
    let bench_args = args.bench_args()?;
    let (params, search) = args.workload.params()?;
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
        facts: RunFacts {
            loadavg_start,
            ..RunFacts::new(raw_report.cpu.clone(), &args.workload, &data, &params, search)
        },
        k: args.workload.k,
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

    let spec = ClusterSpec {
        bench: "replicas",
        query_nodes: args.query_node_ids(),
        segment_max_rows,
        balance_interval: "1h",
        restart_backoff_secs: args.restart_backoff_secs,
        keep: args.run.keep,
    };
    let mut cluster = BenchCluster::create(&spec, &node_env)?;
    cluster.up()?;
    run_cluster(&args, &bench_args, &data, &params, &search, &cluster, &mut report)?;
    cluster.down()?;
    report.facts.finish();
    print_report(&report.markdown(), args.run.out.as_deref())?;
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
        let r = drive_threads(data, args.workload.k, threads, warmup, duration, &watch, |_| {
            Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
                let mut hits: Vec<(f32, i64)> = Vec::with_capacity(args.workload.k * indexes.len());
                for (offset, index) in indexes {
                    let (d, l) = index.search(data.query(q), args.workload.k, search).map_err(|e| anyhow!("{e}"))?;
                    hits.extend(d.into_iter().zip(l).filter(|(_, l)| *l >= 0).map(|(d, l)| (d, l + offset)));
                }
                match higher {
                    true => hits.sort_by(|a, b| b.0.total_cmp(&a.0)),
                    false => hits.sort_by(|a, b| a.0.total_cmp(&b.0)),
                }
                Ok(hits.into_iter().take(args.workload.k).map(|h| h.1).collect())
            })
        })?;
        eprintln!(
            "raw faiss, {} segments, {threads} thread(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}",
            indexes.len(),
            r.qps,
            r.p50_us,
            r.p99_us,
            args.workload.k,
            r.recall
        );
        rows.push(r);
    }
    Ok((build, rows))
}

mod cluster;
mod elastic;
mod kill;
mod report;
mod scale;
mod scale_report;

use cluster::{BenchCluster, ClusterSpec};
pub use elastic::{bench_elastic, BenchElasticArgs};
use kill::kill_phase;
use report::{loadavg, print_report, ReplicaReport, RunFacts};
pub use scale::{bench_scale, BenchScaleArgs};

/// What loading the cluster took and how it served the data.
#[derive(Default)]
pub(super) struct ClusterLoad {
    pub(super) insert: Duration,
    pub(super) flush_served: Duration,
    pub(super) index_built: Duration,
    pub(super) segment_rows: Vec<u64>,
    /// (replicas, seconds from load_collection to fully replicated, layout)
    pub(super) loads: Vec<(u32, f64, String)>,
    /// Processes and pids at the start of the searches.
    pub(super) processes: Vec<(String, u32)>,
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
    let client = connect(&rt, &cluster.url)?;
    load_data(&rt, &client, data, params, args.batch, report.segment_max_rows, &mut report.load)?;

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
                args.workload.k,
                *search,
                Consistency::Eventually,
                threads,
                warmup,
                duration,
                &watch,
            )?;
            eprintln!(
                "quiver {replicas} replica(s), {threads} client(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}, {} errors",
                r.qps, r.p50_us, r.p99_us, args.workload.k, r.recall, r.errors
            );
            report.rows.push((replicas, r));
        }
    }

    let watch = cluster.watched()?;
    wait_quiet(bench_args, &watch);
    report.kill = Some(kill_phase(args, data, search, cluster, &watch)?);
    Ok(())
}

/// A client of the cluster at `url`.
pub(super) fn connect(rt: &tokio::runtime::Runtime, url: &str) -> anyhow::Result<Client> {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), Client::connect(url, CLUSTER))
            .await
            .with_context(|| format!("connecting to {url} timed out"))?
            .context("cannot connect to the cluster")
    })
}

/// Creates the collection (1 shard), inserts the data in `segment_max_rows` segments, flushes,
/// builds the index, and releases the collection, so that the next `load_collection` loads
/// every segment with its index; fills in `load`'s times and segment sizes.
pub(super) fn load_data(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    data: &Data,
    params: &IndexParams,
    batch: usize,
    segment_max_rows: usize,
    load: &mut ClusterLoad,
) -> anyhow::Result<()> {
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
            let end = (start + batch).min(boundary).min(data.n);
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
        wait_segments(client, data.n as u64, false, Duration::from_secs(600)).await?;
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
        load.segment_rows = wait_segments(client, data.n as u64, true, Duration::from_secs(7200)).await?;
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
    Ok(())
}

/// `load_collection(replicas)` and wait until the layout is fully replicated with all `rows`
/// in Indexed segments; returns the seconds it took and the layout.
pub(super) async fn load_replicas(client: &Client, replicas: u32, rows: u64) -> anyhow::Result<(f64, String)> {
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
