//! `quiver-bench standalone`: raw faiss in-process versus Quiver standalone through the NATS
//! SDK (and, with `--milvus`, through pymilvus over the Milvus gRPC API), in one run, on the
//! same data, index parameters, queries and thread counts.
//!
//! 1. Loads base vectors, queries and ground truth (exact ground truth is recomputed by brute
//!    force when only part of the base is used, or the file does not fit the metric / k).
//! 2. Raw faiss: builds the index through [`VectorIndex::build`] (the code Quiver's index node
//!    runs), then searches one query per call from 1 and 2 OS threads.
//! 3. Quiver: starts `quiver standalone` as a child process (the binary
//!    [`quiver_testkit::quiver_bin`] finds; embedded nats-server, free port, temporary data
//!    dir, one segment for the whole base), inserts, flushes, creates the same index, waits
//!    until the query node serves it, then runs the same queries through [`Client::search`].
//! 4. With `--milvus`: the child also serves the Milvus gRPC API on a free port, and the same
//!    queries run through unmodified pymilvus (`MilvusClient.search`, driver
//!    `tools/bench/bench-pymilvus.py`), with the server-side mean per Search read from the
//!    child's metrics endpoint ([`milvus`]).
//!    With `--milvus` also (opt-outs `--no-faiss-cpu`, `--no-milvus-server`), on the same rows,
//!    queries, ground truth, HNSW and search parameters, client counts and windows:
//!    faiss-cpu from PyPI in process, Python threads over its own index ([`faiss_cpu`]), and
//!    Milvus 2.3.5 standalone from PyPI, started by the bench, loaded and searched through the
//!    same pymilvus ([`milvus_server`]). Quiver and Milvus each get one "insert → searchable"
//!    time: first insert call → first search answered with the index built and served.
//! 5. Prints a markdown report (QPS, p50/p99, recall@k, ratios, build/insert times, RSS), with
//!    `--milvus` headed by a summary table of the four systems and the issue's bars.
//!
//! faiss runs with one OpenMP thread everywhere ([`set_faiss_threads`]), as the query node does
//! by default (`querynode.faiss_threads = 1`); in standalone that setting is process-wide, so
//! Quiver's index node builds with one thread too, and so does the raw build here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use quiver_actors::vector::{set_faiss_threads, VectorIndex};
use quiver_client::fvecs::{count_rows, read_fvecs, read_ivecs};
use quiver_client::schema;
use quiver_client::{
    Client, Consistency, IndexParams, IndexType, MetricType, PrimaryKey, Role, SearchParams, SegmentState,
};
use quiver_testkit::{child_pids, free_port, process_name, quiver_bin, Proc};

mod faiss_cpu;
mod milvus;
mod milvus_server;
pub mod replicas;
use milvus::{Measured, MilvusRow, PyInputs, ServerShare};

/// Collection the benchmark creates in its private Quiver.
const COLLECTION: &str = "bench";
/// Cluster name of the private Quiver.
const CLUSTER: &str = "quiverbench";

/// What is searched and how: the dataset, the index and the search parameters. Shared by
/// `quiver-bench standalone` and `quiver-bench replicas`.
#[derive(Args, Clone)]
pub struct Workload {
    /// Dataset directory with base.fvecs, query.fvecs and (optionally) groundtruth.ivecs
    /// (default: the shared dataset beside the repository, when run from its root).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    pub(crate) dataset: PathBuf,
    /// Query vectors to use (from the start of query.fvecs).
    #[arg(long, default_value_t = 1000)]
    pub(crate) queries: usize,
    /// FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ or HNSW.
    #[arg(long, default_value = "HNSW")]
    pub(crate) index_type: String,
    /// L2, IP or COSINE.
    #[arg(long, default_value = "IP")]
    pub(crate) metric: String,
    /// HNSW M or PQ sub-quantizers (0 = default).
    #[arg(long, default_value_t = 16)]
    pub(crate) m: u32,
    /// HNSW efConstruction (0 = default).
    #[arg(long, default_value_t = 200)]
    pub(crate) ef_construction: u32,
    /// IVF lists (0 = default).
    #[arg(long, default_value_t = 0)]
    pub(crate) nlist: u32,
    /// PQ bits per code (0 = default).
    #[arg(long, default_value_t = 0)]
    pub(crate) nbits: u32,
    /// HNSW efSearch.
    #[arg(long, default_value_t = 64)]
    pub(crate) ef: u32,
    /// IVF lists probed (0 = default).
    #[arg(long, default_value_t = 0)]
    pub(crate) nprobe: u32,
    /// Hits per query (recall is measured at this k).
    #[arg(short, long, default_value_t = 10)]
    pub(crate) k: usize,
}

impl Workload {
    /// The index to build and the search parameters, checked.
    pub(crate) fn params(&self) -> anyhow::Result<(IndexParams, SearchParams)> {
        let index = IndexParams {
            nlist: self.nlist,
            m: self.m,
            nbits: self.nbits,
            ef_construction: self.ef_construction,
            ..schema::index_named(&self.index_type, &self.metric)?
        };
        Ok((index, SearchParams { nprobe: self.nprobe, ef: self.ef }))
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub(crate) workload: Workload,
    /// Base vectors to use (default: the whole file). Below the file size, exact ground truth
    /// is recomputed by brute force.
    #[arg(long)]
    base_limit: Option<usize>,
    /// Measured seconds per configuration.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Unmeasured warm-up seconds before each configuration.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Client thread counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Rows per insert call when loading Quiver.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Rows per sealed segment in Quiver (`datanode.segment_max_rows`); 0 = the whole base in
    /// one segment (the same index shape as raw faiss). Smaller measures a search spread over
    /// several segments (raw faiss still searches one index of the whole base).
    #[arg(long, default_value_t = 0)]
    segment_rows: usize,
    /// How Quiver's concurrent clients run: `threads` = one OS thread per client, each with
    /// its own current-thread tokio runtime and its own NATS connection; `tasks` = one task per
    /// client on a multi-thread runtime with that many workers, sharing one connection.
    #[arg(long, value_enum, default_value_t = ClientMode::Threads)]
    client_mode: ClientMode,
    /// Consistency levels to measure Quiver with, comma separated (eventually, bounded, strong).
    #[arg(long, value_delimiter = ',', default_value = "eventually,bounded")]
    consistency: Vec<String>,
    /// Skip the raw faiss half (Quiver rows then have no ratio).
    #[arg(long)]
    skip_raw: bool,
    /// Skip the Quiver half.
    #[arg(long)]
    skip_quiver: bool,
    /// Before each measured configuration, wait up to this many seconds for the rest of the
    /// machine to go quiet (other processes using under --quiet-cores cores); 0 = don't wait.
    /// The CPU table reports what other processes used during each window either way.
    #[arg(long, default_value_t = 120.0)]
    quiet_wait_secs: f64,
    /// Busy cores of other processes that still count as quiet.
    #[arg(long, default_value_t = 0.15)]
    quiet_cores: f64,
    /// Extra environment for the `quiver standalone` child (and so its nats-server), e.g.
    /// `--child-env GOMAXPROCS=1` or `--child-env QUIVER_QUERYNODE__FAISS_THREADS=2`. Repeatable.
    #[arg(long = "child-env", value_name = "KEY=VALUE")]
    child_env: Vec<String>,
    /// Turn tracing on in the Quiver child at this sampling ratio (0 to 1), exporting its spans
    /// over OTLP/gRPC to a collector the bench runs (it decodes and counts every batch, as a
    /// real collector would, on the same machine). Without it, tracing stays off (the default).
    #[arg(long, value_name = "RATIO")]
    tracing_ratio: Option<f64>,
    /// Write the Quiver child's log here (kept after the run) instead of into its temp dir.
    #[arg(long)]
    child_log: Option<PathBuf>,
    /// Run the child on this NATS (comma-separated servers, e.g. a 3-server cluster without
    /// authorization) instead of its embedded nats-server; `--child-env QUIVER_NATS__REPLICAS=3`
    /// then keeps three replicas of every stream.
    #[arg(long)]
    nats_url: Option<String>,
    /// Skip the latency breakdown (NATS echo and direct query-node rows).
    #[arg(long)]
    no_breakdown: bool,
    /// Keep the Quiver child running after the measurements until Enter is pressed (for
    /// attaching a profiler); prints its pid and NATS URL.
    #[arg(long)]
    pause: bool,
    /// Also measure, in the same run, on the same rows, queries, ground truth, HNSW and search
    /// parameters, client counts and windows: (1) unmodified pymilvus (`MilvusClient.search`, one
    /// client per OS process, Eventually) against the child's Milvus gRPC API, after the NATS SDK
    /// rows; (2) faiss-cpu from PyPI in process: Python threads over its own index, built with
    /// every core (opt out: --no-faiss-cpu); (3) Milvus 2.3.5 standalone from PyPI, started by the
    /// bench (temp data dir, free port), loaded through pymilvus and searched by the same driver
    /// (opt out: --no-milvus-server). The report then opens with a summary table (QPS per client
    /// count, p50, recall, insert → searchable) and the bars: Quiver via pymilvus ≥ 2× Milvus' QPS,
    /// Quiver via the NATS SDK ≥ 50% of faiss-cpu's, Quiver's insert → searchable ≤ Milvus'.
    /// (2) and (3) need --index-type HNSW.
    #[arg(long)]
    milvus: bool,
    /// With --milvus: leave out the faiss-cpu (PyPI) leg.
    #[arg(long)]
    no_faiss_cpu: bool,
    /// With --milvus: leave out the Milvus 2.3.5 standalone leg.
    #[arg(long)]
    no_milvus_server: bool,
    /// Python with pymilvus and numpy for --milvus (default: the venv of tests/pymilvus/run.sh,
    /// ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/pymilvus-2.5.14, created when missing).
    #[arg(long, env = "QUIVER_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Python with faiss-cpu and numpy for the faiss-cpu leg (default: the venv `quiver-bench
    /// simd` uses, ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/faiss-cpu-1.15.1, created when missing).
    #[arg(long)]
    faiss_cpu_python: Option<PathBuf>,
    /// Python with the `milvus` package for the Milvus leg (default: the venv
    /// ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/milvus-2.3.5, created when missing).
    #[arg(long)]
    milvus_server_python: Option<PathBuf>,
    /// Seconds Milvus standalone may take to answer its /healthz (unpacking its binaries on a
    /// first run comes on top).
    #[arg(long, default_value_t = 120.0)]
    milvus_server_start_secs: f64,
    /// Filter for the filtered pymilvus rows ("" = no filtered rows). The bench inserts no
    /// scalar field but the primary key, so the default matches every row: it measures the
    /// filter path (parse, pre-filter bitmap, filtered search) at the unfiltered recall.
    #[arg(long, default_value = "id >= 0")]
    milvus_filter: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientMode {
    Threads,
    Tasks,
}

impl ClientMode {
    fn describe(self) -> &'static str {
        match self {
            ClientMode::Threads => {
                "one OS thread per client, each with its own current-thread tokio runtime and NATS connection"
            }
            ClientMode::Tasks => {
                "one tokio task per client on a multi-thread runtime (workers = clients), one shared NATS connection"
            }
        }
    }
}

pub fn bench(args: BenchArgs) -> anyhow::Result<i32> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts, e.g. 1,2");
    }
    if args.workload.k == 0 {
        bail!("-k must be at least 1");
    }
    if args.duration_secs.is_nan() || args.duration_secs <= 0.0 || args.warmup_secs.is_nan() || args.warmup_secs < 0.0 {
        bail!("--duration-secs must be > 0 and --warmup-secs >= 0");
    }
    let consistencies = args.consistency.iter().map(|c| schema::consistency_named(c)).collect::<Result<Vec<_>, _>>()?;
    let (params, search_params) = args.workload.params()?;
    if args.milvus && args.skip_quiver {
        bail!("--milvus needs the Quiver half (drop --skip-quiver)");
    }
    if !(args.milvus_server_start_secs > 0.0 && args.milvus_server_start_secs.is_finite()) {
        bail!("--milvus-server-start-secs must be > 0");
    }
    // The faiss-cpu and Milvus legs build HNSW themselves.
    let hnsw = HnswSettings::of(&params, &search_params);
    let extra_legs_note = match (&hnsw, args.milvus) {
        (None, true) if !(args.no_faiss_cpu && args.no_milvus_server) => Some(format!(
            "the faiss-cpu and Milvus standalone legs build HNSW only; not run for {:?}",
            params.index_type
        )),
        _ => None,
    };
    let with_faiss_cpu = args.milvus && !args.no_faiss_cpu && hnsw.is_some();
    let with_milvus_server = args.milvus && !args.no_milvus_server && hnsw.is_some();
    // Before the long load: a missing python should fail now, not after the index build.
    let python = if args.milvus { Some(milvus::resolve_python(args.python.as_deref())?) } else { None };
    let faiss_python = if with_faiss_cpu {
        let hint = "; pass --faiss-cpu-python with faiss-cpu installed, or --no-faiss-cpu";
        Some(crate::pyvenv::faiss_cpu_python(args.faiss_cpu_python.as_deref(), "faiss-cpu", hint)?)
    } else {
        None
    };
    let server_python = if with_milvus_server {
        let hint = "; pass --milvus-server-python with the milvus package installed, or --no-milvus-server";
        Some(crate::pyvenv::milvus_server_python(args.milvus_server_python.as_deref(), "milvus", hint)?)
    } else {
        None
    };
    let data = Data::load(&args, params.metric)?;
    let mut report = Report::new(&args, &data, &params);
    report.python = python.as_ref().map(|p| p.display().to_string());
    report.extra_legs_note = extra_legs_note;
    let inputs = if args.milvus { Some(PyInputs::write(&data, args.workload.k)?) } else { None };

    let raw_rows =
        if args.skip_raw { Vec::new() } else { run_raw(&args, &data, &params, &search_params, &mut report)? };
    report.raw = raw_rows;
    // The Python legs fail alone: the report shows what failed, the exit status is 1.
    if let (Some(py), Some(inputs), Some(hnsw)) = (faiss_python, &inputs, &hnsw) {
        match run_faiss_cpu(&args, &data, py, inputs, hnsw) {
            Ok(r) => report.faiss_cpu = Some(r),
            Err(e) => report.fail("faiss-cpu (PyPI)", e),
        }
    }
    if !args.skip_quiver {
        let pymilvus = python.clone().zip(inputs.as_ref());
        run_quiver(&args, &data, &params, &search_params, &consistencies, pymilvus, &mut report)?;
    }
    if let (Some(server_py), Some(py), Some(inputs), Some(hnsw)) = (server_python, &python, &inputs, &hnsw) {
        match run_milvus_server(&args, &data, py, server_py, inputs, hnsw, params.metric, &search_params) {
            Ok(r) => report.milvus_server = Some(r),
            Err(e) => report.fail(&format!("Milvus {} standalone", crate::pyvenv::MILVUS_SERVER_VERSION), e),
        }
    }
    print!("{}", report.markdown());
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}

/// HNSW parameters spelled out for the Python legs (faiss-cpu, Milvus), which have no
/// "0 = default": Quiver's defaults filled in.
pub(super) struct HnswSettings {
    /// Milvus' spelling (IP, L2, COSINE), which the faiss-cpu driver reads too.
    pub metric: &'static str,
    pub m: u32,
    pub ef_construction: u32,
    pub ef: u32,
}

impl HnswSettings {
    /// `None` unless the index is HNSW.
    fn of(params: &IndexParams, search: &SearchParams) -> Option<HnswSettings> {
        use quiver_actors::vector::{DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_HNSW_M};
        let or = |v: u32, default: usize| if v == 0 { u32::try_from(default).unwrap_or(u32::MAX) } else { v };
        (params.index_type == IndexType::Hnsw).then(|| HnswSettings {
            metric: milvus::metric_name(params.metric),
            m: or(params.m, DEFAULT_HNSW_M),
            ef_construction: or(params.ef_construction, DEFAULT_EF_CONSTRUCTION),
            ef: or(search.ef, DEFAULT_EF_SEARCH),
        })
    }
}

/// `<dataset>/base.fvecs` as an absolute path (the Python legs read the same rows themselves).
fn base_file(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let base = args.workload.dataset.join("base.fvecs");
    std::fs::canonicalize(&base).with_context(|| format!("cannot resolve {}", base.display()))
}

// ---------------------------------------------------------------- data

struct Data {
    dim: usize,
    base: Vec<f32>,
    n: usize,
    queries: Vec<f32>,
    nq: usize,
    /// Exact top-k ids per query.
    truth: Vec<Vec<i64>>,
    truth_source: String,
}

impl Data {
    fn load(args: &BenchArgs, metric: MetricType) -> anyhow::Result<Data> {
        let base_path = args.workload.dataset.join("base.fvecs");
        let file_rows = count_rows(&base_path)?;
        let limit = args.base_limit.unwrap_or(usize::MAX);
        let t = Instant::now();
        let (dim, base) = read_fvecs(&base_path, limit)?;
        let n = base.len() / dim;
        let (qdim, queries) = read_fvecs(&args.workload.dataset.join("query.fvecs"), args.workload.queries)?;
        if qdim != dim {
            bail!("query.fvecs has dim {qdim} but base.fvecs has dim {dim}");
        }
        let nq = queries.len() / dim;
        if n == 0 || nq == 0 {
            bail!("need at least one base vector and one query (got {n} and {nq})");
        }
        eprintln!("loaded {n} base vectors and {nq} queries (dim {dim}) in {:.1}s", t.elapsed().as_secs_f64());
        let gt_path = args.workload.dataset.join("groundtruth.ivecs");
        // The shipped ground truth is by inner product over the whole base; the vectors are
        // L2-normalised, so it also holds for COSINE (and L2 ranks the same way up to ties,
        // but we recompute for L2 to be exact).
        let file_fits = n == file_rows && metric != MetricType::L2 && gt_path.exists();
        let mut from_file = None;
        if file_fits {
            let (gdim, ids) = read_ivecs(&gt_path, nq)?;
            if gdim >= args.workload.k && ids.len() / gdim == nq {
                from_file = Some(
                    (0..nq)
                        .map(|q| ids[q * gdim..q * gdim + args.workload.k].iter().map(|v| i64::from(*v)).collect())
                        .collect(),
                );
            }
        }
        let (truth, truth_source) = match from_file {
            Some(t) => (t, format!("{} (first {} of each row)", gt_path.display(), args.workload.k)),
            None => {
                let t = Instant::now();
                let truth = exact_truth(dim, &base, &queries, args.workload.k, metric)?;
                eprintln!("computed exact ground truth by brute force in {:.1}s", t.elapsed().as_secs_f64());
                (truth, format!("exact brute force ({metric:?}) over the {n} base vectors used"))
            }
        };
        Ok(Data { dim, base, n, queries, nq, truth, truth_source })
    }

    fn query(&self, q: usize) -> &[f32] {
        &self.queries[q * self.dim..(q + 1) * self.dim]
    }
}

/// Exact top-k by brute force (faiss flat index, batched, all cores).
fn exact_truth(
    dim: usize,
    base: &[f32],
    queries: &[f32],
    k: usize,
    metric: MetricType,
) -> anyhow::Result<Vec<Vec<i64>>> {
    set_faiss_threads(available_cores());
    let flat = IndexParams {
        index_type: IndexType::Flat,
        metric,
        nlist: 0,
        m: 0,
        nbits: 0,
        ef_construction: 0,
        auto: false,
        name: String::new(),
    };
    let index = VectorIndex::build(&flat, dim, base).map_err(|e| anyhow!("flat index: {e}"))?;
    let mut truth = Vec::with_capacity(queries.len() / dim);
    for chunk in queries.chunks(dim * 256) {
        let (_, labels) = index.search(chunk, k, &SearchParams::default()).map_err(|e| anyhow!("flat search: {e}"))?;
        truth.extend(labels.chunks(k).map(<[i64]>::to_vec));
    }
    set_faiss_threads(1);
    Ok(truth)
}

/// The CPU's model name from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------- load driver

/// Outcome of one configuration.
struct LoadResult {
    threads: usize,
    calls: usize,
    errors: usize,
    first_error: Option<String>,
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    recall: f64,
    queries_seen: usize,
    cpu: Option<CpuUsage>,
}

/// Per-worker measurements.
struct Recorder {
    warm_end: Instant,
    end: Instant,
    latencies_ns: Vec<u64>,
    last_end: Option<Instant>,
    /// Hits in the ground truth, from the first answer to each query.
    correct: Vec<Option<u32>>,
    errors: usize,
    first_error: Option<String>,
}

/// Abort a configuration after this many failed calls (per worker).
const MAX_ERRORS: usize = 1000;

impl Recorder {
    fn new(nq: usize, warmup: Duration, duration: Duration) -> Recorder {
        let now = Instant::now();
        Recorder {
            warm_end: now + warmup,
            end: now + warmup + duration,
            latencies_ns: Vec::with_capacity(64 * 1024),
            last_end: None,
            correct: vec![None; nq],
            errors: 0,
            first_error: None,
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.end && self.errors < MAX_ERRORS
    }

    fn record(&mut self, q: usize, t0: Instant, t1: Instant, result: anyhow::Result<Vec<i64>>, truth: &[i64]) {
        match result {
            Ok(ids) => {
                if t0 >= self.warm_end {
                    self.latencies_ns.push(t1.duration_since(t0).as_nanos() as u64);
                    self.last_end = Some(t1);
                }
                if let Some(slot) = self.correct.get_mut(q) {
                    if slot.is_none() {
                        let gt: HashSet<i64> = truth.iter().copied().collect();
                        *slot = Some(ids.iter().take(truth.len()).filter(|id| gt.contains(id)).count() as u32);
                    }
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
}

fn summarize(threads: usize, k: usize, recorders: Vec<Recorder>) -> anyhow::Result<LoadResult> {
    let warm_end = recorders.iter().map(|r| r.warm_end).min().ok_or_else(|| anyhow!("no workers ran"))?;
    let last = recorders.iter().filter_map(|r| r.last_end).max();
    let mut lat: Vec<u64> = recorders.iter().flat_map(|r| r.latencies_ns.iter().copied()).collect();
    lat.sort_unstable();
    let errors: usize = recorders.iter().map(|r| r.errors).sum();
    let first_error = recorders.iter().find_map(|r| r.first_error.clone());
    let nq = recorders.first().map_or(0, |r| r.correct.len());
    let mut seen = 0usize;
    let mut hits = 0u64;
    for q in 0..nq {
        if let Some(c) = recorders.iter().find_map(|r| r.correct[q]) {
            seen += 1;
            hits += u64::from(c);
        }
    }
    let elapsed = last.map_or(0.0, |l| l.duration_since(warm_end).as_secs_f64());
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1] as f64 / 1000.0
    };
    Ok(LoadResult {
        threads,
        calls: lat.len(),
        errors,
        first_error,
        qps: if elapsed > 0.0 { lat.len() as f64 / elapsed } else { 0.0 },
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        mean_us: if lat.is_empty() { f64::NAN } else { lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0 },
        recall: if seen > 0 { hits as f64 / (seen * k) as f64 } else { f64::NAN },
        queries_seen: seen,
        cpu: None,
    })
}

/// Runs `threads` OS threads; each calls `setup(thread)` once to get its search function,
/// then, after all are ready, searches queries round-robin (each thread starting at its own
/// offset) through warm-up and the measured window.
fn drive_threads<S, Q>(
    data: &Data,
    k: usize,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    watch: &[Watched],
    setup: S,
) -> anyhow::Result<LoadResult>
where
    S: Fn(usize) -> anyhow::Result<Q> + Sync,
    Q: FnMut(usize) -> anyhow::Result<Vec<i64>>,
{
    drive_threads_until(data, k, threads, warmup, duration, &AtomicBool::new(false), watch, setup)
}

/// [`drive_threads`] that also ends when `stop` is set: the measured window then runs from the
/// warm-up's end until `stop` (at most `duration`).
#[allow(clippy::too_many_arguments)]
fn drive_threads_until<S, Q>(
    data: &Data,
    k: usize,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    stop: &AtomicBool,
    watch: &[Watched],
    setup: S,
) -> anyhow::Result<LoadResult>
where
    S: Fn(usize) -> anyhow::Result<Q> + Sync,
    Q: FnMut(usize) -> anyhow::Result<Vec<i64>>,
{
    // The workers and this thread start together; this thread samples CPU use over the
    // measured window.
    let barrier = Barrier::new(threads + 1);
    let failed = AtomicBool::new(false);
    let (outcomes, cpu) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, failed, setup) = (&barrier, &failed, &setup);
                s.spawn(move || -> anyhow::Result<Recorder> {
                    // A panicking setup must still reach the barrier, or the others wait forever.
                    let search = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup(t)))
                        .unwrap_or_else(|_| Err(anyhow!("benchmark worker setup panicked")));
                    if search.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    barrier.wait();
                    let mut search = search?;
                    if failed.load(Ordering::SeqCst) {
                        bail!("another worker failed to start");
                    }
                    let mut rec = Recorder::new(data.nq, warmup, duration);
                    let mut i = t * data.nq / threads;
                    while rec.running() && !stop.load(Ordering::Relaxed) {
                        let q = i % data.nq;
                        let t0 = Instant::now();
                        let result = search(q);
                        let t1 = Instant::now();
                        rec.record(q, t0, t1, result, &data.truth[q]);
                        i += 1;
                    }
                    Ok(rec)
                })
            })
            .collect();
        barrier.wait();
        let cpu = if failed.load(Ordering::SeqCst) {
            None
        } else {
            std::thread::sleep(warmup);
            let before = CpuSnap::take(watch);
            let end = Instant::now() + duration;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(end.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            }
            Some(CpuSnap::take(watch).since(&before, watch))
        };
        let outcomes: Vec<anyhow::Result<Recorder>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a benchmark worker thread panicked"))))
            .collect();
        (outcomes, cpu)
    });
    let recorders = outcomes.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let mut result = summarize(threads, k, recorders)?;
    result.cpu = cpu;
    Ok(result)
}

// ---------------------------------------------------------------- CPU accounting

/// A process whose CPU time is tracked, with a label for the report.
#[derive(Clone)]
struct Watched {
    pid: u32,
    label: String,
}

/// Busy CPU time of the machine and of each watched process, in clock ticks.
struct CpuSnap {
    at: Instant,
    busy: u64,
    procs: Vec<u64>,
}

/// CPU use over a window, in cores (1.0 = one core fully busy).
struct CpuUsage {
    parts: Vec<(String, f64)>,
    /// Everything else on the machine (other processes, kernel work not charged to ours).
    other: f64,
}

impl CpuSnap {
    fn take(watch: &[Watched]) -> CpuSnap {
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                let line = t.lines().next()?.to_string();
                let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                Some(v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| *x).sum())
            })
            .unwrap_or(0);
        let procs = watch.iter().map(|w| proc_ticks(w.pid)).collect();
        CpuSnap { at: Instant::now(), busy, procs }
    }

    fn since(&self, before: &CpuSnap, watch: &[Watched]) -> CpuUsage {
        let hz = clock_ticks_per_sec();
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |ticks: u64| ticks as f64 / hz / wall;
        let mut ours = 0u64;
        let mut parts: Vec<(String, f64)> = Vec::new();
        for (w, (a, b)) in watch.iter().zip(self.procs.iter().zip(&before.procs)) {
            let d = a.saturating_sub(*b);
            ours += d;
            match parts.iter_mut().find(|p| p.0 == w.label) {
                Some(p) => p.1 += cores(d),
                None => parts.push((w.label.clone(), cores(d))),
            }
        }
        CpuUsage { parts, other: cores(self.busy.saturating_sub(before.busy).saturating_sub(ours)) }
    }
}

/// Waits (up to --quiet-wait-secs) until processes other than `ours` use under
/// --quiet-cores cores over a 1 s sample.
fn wait_quiet(args: &BenchArgs, ours: &[Watched]) {
    if args.quiet_wait_secs <= 0.0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.quiet_wait_secs);
    let mut announced = false;
    loop {
        let before = CpuSnap::take(ours);
        std::thread::sleep(Duration::from_secs(1));
        let other = CpuSnap::take(ours).since(&before, ours).other;
        if other < args.quiet_cores {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("machine still busy ({other:.2} cores used by other processes); measuring anyway");
            return;
        }
        if !announced {
            eprintln!("waiting for the machine to go quiet ({other:.2} cores used by other processes)...");
            announced = true;
        }
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
fn proc_ticks(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

// ---------------------------------------------------------------- raw faiss

struct RawRow {
    result: LoadResult,
}

fn run_raw(
    args: &BenchArgs,
    data: &Data,
    params: &IndexParams,
    search_params: &SearchParams,
    report: &mut Report,
) -> anyhow::Result<Vec<RawRow>> {
    set_faiss_threads(1);
    let before = proc_mem(std::process::id());
    eprintln!(
        "raw faiss: building {:?} {:?} over {} vectors (1 faiss thread)...",
        params.index_type, params.metric, data.n
    );
    let t = Instant::now();
    let index = VectorIndex::build(params, data.dim, &data.base).map_err(|e| anyhow!("raw faiss build: {e}"))?;
    let build = t.elapsed();
    let after = proc_mem(std::process::id());
    eprintln!("raw faiss: built in {:.1}s ({:?}, {} rows)", build.as_secs_f64(), index.index_type(), index.len());
    report.raw_build = Some(build);
    report.raw_index_type = Some(index.index_type());
    report.raw_rss = Some((before, after, index.mem_bytes()));
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let index = &index;
        wait_quiet(args, &[Watched { pid: std::process::id(), label: String::new() }]);
        let watch = [Watched { pid: std::process::id(), label: "bench (faiss)".into() }];
        let result = drive_threads(data, args.workload.k, threads, warmup, duration, &watch, |_| {
            Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
                let (_, labels) =
                    index.search(data.query(q), args.workload.k, search_params).map_err(|e| anyhow!("{e}"))?;
                Ok(labels)
            })
        })?;
        eprintln!(
            "raw faiss, {threads} thread(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}",
            result.qps, result.p50_us, result.p99_us, args.workload.k, result.recall
        );
        rows.push(RawRow { result });
    }
    Ok(rows)
}

// ---------------------------------------------------------------- faiss-cpu and Milvus 2.3.5

/// What the faiss-cpu leg measured.
struct FaissCpuReport {
    python: PathBuf,
    built: faiss_cpu::Built,
    rows: Vec<LoadResult>,
}

/// What the Milvus standalone leg measured.
struct MilvusServerReport {
    python: PathBuf,
    /// Launcher start → /healthz OK.
    startup: Duration,
    /// `dataCoord.segment.maxSize` it ran with.
    segment_max_mb: u64,
    load: milvus_server::MilvusLoad,
    rows: Vec<LoadResult>,
    /// (pid, name, VmRSS, VmHWM) of the launcher and the server after the load, and at the end.
    rss: Vec<(u32, String, u64, u64)>,
    rss_end: Vec<(u32, String, u64, u64)>,
}

/// faiss-cpu from PyPI in process (Python threads), on the same rows, queries and parameters.
fn run_faiss_cpu(
    args: &BenchArgs,
    data: &Data,
    python: PathBuf,
    inputs: &PyInputs,
    hnsw: &HnswSettings,
) -> anyhow::Result<FaissCpuReport> {
    let base = base_file(args)?;
    eprintln!(
        "faiss-cpu: building HNSW M={} efConstruction={} {} over {} rows with {} threads ({})...",
        hnsw.m,
        hnsw.ef_construction,
        hnsw.metric,
        data.n,
        available_cores(),
        python.display()
    );
    let mut driver = faiss_cpu::FaissCpu::start(python, inputs, &base, data.n, args.workload.k, hnsw)?;
    eprintln!(
        "faiss-cpu {}: built in {:.1}s ({} threads)",
        driver.built.version, driver.built.build_secs, driver.built.build_threads
    );
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let watch = [
            Watched { pid: std::process::id(), label: String::new() },
            Watched { pid: driver.pid(), label: String::new() },
        ];
        wait_quiet(args, &watch);
        let r = driver.run(threads, warmup, duration)?.into_load_result();
        eprintln!(
            "faiss-cpu, {threads} thread(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}{}",
            r.qps,
            r.p50_us,
            r.p99_us,
            args.workload.k,
            r.recall,
            if r.errors > 0 { format!(", {} errors", r.errors) } else { String::new() }
        );
        rows.push(r);
    }
    let built = driver.built.clone();
    Ok(FaissCpuReport { python: driver.python.clone(), built, rows })
}

/// Milvus 2.3.5 standalone: started here, loaded through pymilvus (timed insert → searchable),
/// searched by the pymilvus driver at each client count, stopped.
#[allow(clippy::too_many_arguments)]
fn run_milvus_server(
    args: &BenchArgs,
    data: &Data,
    pymilvus: &Path,
    server_python: PathBuf,
    inputs: &PyInputs,
    hnsw: &HnswSettings,
    metric: MetricType,
    search_params: &SearchParams,
) -> anyhow::Result<MilvusServerReport> {
    let version = crate::pyvenv::MILVUS_SERVER_VERSION;
    let bin_cache = crate::pyvenv::cache_dir().ok().map(|c| c.join(format!("milvus-{version}-bin")));
    let segment_max_mb = milvus_server::one_segment_max_mb(data.n, data.dim);
    eprintln!("milvus: starting Milvus {version} standalone ({})...", server_python.display());
    let mut server = milvus_server::MilvusServer::start(milvus_server::ServerOptions {
        python: server_python,
        inputs,
        bin_cache,
        start_limit: Duration::from_secs_f64(args.milvus_server_start_secs),
        config: vec![format!("dataCoord.segment.maxSize={segment_max_mb}")],
    })?;
    eprintln!("milvus: healthy after {:.1}s", server.startup.as_secs_f64());
    milvus::wait_listening(std::net::SocketAddr::from(([127, 0, 0, 1], server.port)), Duration::from_secs(30))?;
    let base = base_file(args)?;
    let load = milvus_server::load(&milvus_server::LoadOptions {
        python: pymilvus,
        inputs,
        port: server.port,
        collection: COLLECTION,
        base: &base,
        rows: data.n,
        k: args.workload.k,
        batch: args.batch.max(1),
        hnsw,
    })?;
    server.check_alive()?;
    eprintln!(
        "milvus: insert → searchable with the index {:.1}s (insert {:.1}s, flush {:.1}s, index {:.1}s, load {:.1}s, \
         first search {:.2}s)",
        load.searchable_secs,
        load.insert_secs,
        load.flush_secs,
        load.index_secs,
        load.load_secs,
        load.first_search_secs
    );
    let rss = tree_mem(server.launcher_pid());
    let driver = milvus::Driver::new(
        pymilvus.to_path_buf(),
        format!("http://127.0.0.1:{}", server.port),
        COLLECTION,
        inputs,
        milvus::DriverSearch { k: args.workload.k, metric, ef: search_params.ef, nprobe: search_params.nprobe },
    );
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let mut watch = vec![Watched { pid: std::process::id(), label: String::new() }];
    watch.extend(rss.iter().map(|(pid, _, _, _)| Watched { pid: *pid, label: String::new() }));
    let mut rows = Vec::new();
    for &threads in &args.threads {
        wait_quiet(args, &watch);
        let r = driver.run(threads, "", warmup, duration)?.into_load_result();
        eprintln!(
            "milvus {version} (pymilvus), {threads} client(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}{}",
            r.qps,
            r.p50_us,
            r.p99_us,
            args.workload.k,
            r.recall,
            if r.errors > 0 { format!(", {} errors", r.errors) } else { String::new() }
        );
        rows.push(r);
        server.check_alive()?;
    }
    let rss_end = tree_mem(server.launcher_pid());
    server.stop();
    eprintln!("milvus: stopped");
    Ok(MilvusServerReport {
        python: server.python.clone(),
        startup: server.startup,
        segment_max_mb,
        load,
        rows,
        rss,
        rss_end,
    })
}

// ---------------------------------------------------------------- Quiver

/// The `quiver standalone` child and its data dir; stopped and removed on drop.
struct QuiverChild {
    proc: Proc,
    /// The `quiver` binary it runs.
    bin: PathBuf,
    dir: PathBuf,
    url: String,
    /// The Prometheus endpoint (`/metrics`).
    metrics: std::net::SocketAddr,
    /// The Milvus gRPC API, when started with one.
    grpc: Option<std::net::SocketAddr>,
}

impl QuiverChild {
    /// `grpc`: serve the Milvus gRPC API on a free port (else it is off).
    fn start(
        segment_max_rows: usize,
        extra_env: &[(String, String)],
        log: Option<&Path>,
        grpc: bool,
    ) -> anyhow::Result<QuiverChild> {
        let free_port = || free_port().context("cannot find a free port");
        let port = free_port()?;
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let grpc = if grpc { Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?))) } else { None };
        let dir = std::env::temp_dir().join(format!(
            "quiver-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = log.map_or_else(|| dir.join("quiver.log"), Path::to_path_buf);
        // A fresh log per run: the child appends to it.
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let bin = quiver_bin()?;
        let mut env: Vec<(String, String)> = [
            ("QUIVER_NATS__URL", "\"\"".to_string()),
            ("QUIVER_NATS__EMBEDDED_PORT", port.to_string()),
            ("QUIVER_CLUSTER__NAME", CLUSTER.to_string()),
            ("QUIVER_CLUSTER__DATA_DIR", dir.join("data").display().to_string()),
            ("QUIVER_STORAGE__URL", "\"\"".to_string()),
            // Metrics stay on, as in a default deployment, on a free port (read by --milvus).
            ("QUIVER_METRICS__LISTEN", metrics.to_string()),
            ("QUIVER_DATANODE__SEGMENT_MAX_ROWS", segment_max_rows.to_string()),
            ("QUIVER_PROXY__GRPC_HOST", "127.0.0.1".to_string()),
            ("QUIVER_PROXY__GRPC_PORT", grpc.map_or(0, |a| a.port()).to_string()),
            ("QUIVER_PROXY__HTTP_PORT", "0".to_string()),
            // Security off, explicitly: the bench measures the data path on loopback (its raw
            // bus connections for the latency breakdown are neither node nor client), as the
            // published numbers were; authentication costs only at connect time on NATS and a
            // digest per gRPC call. (`--child-env QUIVER_SECURITY__ENABLED=true` would lock the
            // bench's own clients out.)
            ("QUIVER_SECURITY__ENABLED", "false".to_string()),
            ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra_env.iter().cloned());
        // Spawned from the main thread, so the death signal (SIGTERM: a clean stop) only fires
        // if the bench exits.
        let mut proc = Proc::new("quiver standalone", &bin, &["standalone"], env, log).death_signal(libc::SIGTERM);
        proc.spawn()?;
        // The child's NATS: its embedded server, unless the environment names another.
        let url = extra_env
            .iter()
            .rev()
            .find(|(k, _)| k == "QUIVER_NATS__URL")
            .map_or_else(|| format!("nats://127.0.0.1:{port}"), |(_, url)| url.clone());
        Ok(QuiverChild { proc, bin, dir, url, metrics, grpc })
    }

    fn pid(&self) -> u32 {
        self.proc.pid().unwrap_or(0)
    }

    /// Errors if the child has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.proc.try_wait()? {
            bail!("`quiver standalone` exited with {status}; last log lines:\n{}", self.proc.log_tail(30));
        }
        Ok(())
    }

    /// SIGTERM, wait up to 20 s (then SIGKILL), remove the data dir.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let running = self.proc.pid().is_some();
        let status = self.proc.terminate(Duration::from_secs(20));
        if running && status.is_none() {
            eprintln!("quiver standalone did not stop within 20 s; killed it");
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("warning: cannot remove {}: {e}", self.dir.display());
            }
        }
        status
    }
}

impl Drop for QuiverChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the Quiver half measured besides search rows.
#[derive(Default)]
struct QuiverLoad {
    startup: Duration,
    insert: Duration,
    flush_served: Duration,
    segments: usize,
    segment_rows: Vec<u64>,
    brute_force_p50_us: f64,
    index_built: Duration,
    index_live: Duration,
    index_live_note: String,
    /// When the first insert call started.
    insert_started: Option<Instant>,
    /// The bench's brute-force probe and load-count settling between flush and create_index (the
    /// bench's, not Quiver's work).
    probe: Duration,
    /// First insert call → first search answered with the index served, less `probe`.
    searchable: Option<Duration>,
    /// Whether `searchable` was observed (false: an upper bound, after a fixed wait).
    searchable_exact: bool,
    /// (pid, name, VmRSS, VmHWM) of the child and its descendants after load + index ...
    rss: Vec<(u32, String, u64, u64)>,
    /// ... and after the search runs.
    rss_end: Vec<(u32, String, u64, u64)>,
}

/// Latency decomposition: the same queries over shorter paths (1 client, Eventually).
struct Breakdown {
    /// bench → nats-server → echo responder (own thread + connection) → back; search-sized payload.
    echo: LoadResult,
    echo_bytes: usize,
    /// bench → query node directly (`NodeSearch`, skipping the proxy).
    querynode: LoadResult,
    /// The full SDK path measured right after, for a like-for-like comparison.
    full: LoadResult,
}

struct QuiverRow {
    consistency: Consistency,
    result: LoadResult,
    /// The proxy's own time per NATS search (`quiver_request_seconds{role="proxy",method="search"}`).
    server: Option<ServerShare>,
}

/// The proxy's NATS search handler time (dispatch to reply sent).
const NATS_SEARCH: Measured<'static> =
    Measured { histogram: "quiver_request_seconds", counter: None, method: "search", role: Some("proxy") };
/// The Milvus gRPC API's Search handler time (tonic handler entry to reply built).
const MILVUS_SEARCH: Measured<'static> = Measured {
    histogram: "quiver_milvus_request_seconds",
    counter: Some("quiver_milvus_requests_total"),
    method: "Search",
    role: None,
};

/// Runs `window`, and reads the child's metrics before and after it for `m`'s server-side
/// share; a failed scrape only loses the share (with a warning).
fn with_server_share<T>(
    metrics: std::net::SocketAddr,
    m: Measured<'_>,
    window: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Option<ServerShare>)> {
    let before = milvus::scrape(metrics);
    let out = window()?;
    let share = match (before, milvus::scrape(metrics)) {
        (Ok(b), Ok(a)) => Some(milvus::server_share(&b, &a, m)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("warning: no server-side share for this row: {e:#}");
            None
        }
    };
    Ok((out, share))
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).enable_all().build()?)
}

fn run_quiver(
    args: &BenchArgs,
    data: &Data,
    params: &IndexParams,
    search_params: &SearchParams,
    consistencies: &[Consistency],
    pymilvus: Option<(PathBuf, &PyInputs)>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let segment_max_rows = match args.segment_rows {
        0 => data.n.max(200_000),
        rows => rows,
    };
    report.segment_max_rows = segment_max_rows;
    let started = Instant::now();
    let extra_env = args
        .child_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--child-env wants KEY=VALUE, got {kv:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut extra_env = extra_env;
    if let Some(url) = &args.nats_url {
        extra_env.push(("QUIVER_NATS__URL".into(), url.clone()));
    }
    // Tracing on: a collector on a runtime of its own (one thread) takes the child's spans.
    let collector = match args.tracing_ratio {
        Some(ratio) => {
            let sink_rt = runtime(1)?;
            let collector = sink_rt.block_on(quiver_testkit::otlp::Collector::start(false))?;
            extra_env.push(("QUIVER_TRACING__ENDPOINT".into(), collector.endpoint()));
            extra_env.push(("QUIVER_TRACING__SAMPLING_RATIO".into(), ratio.to_string()));
            Some((sink_rt, collector, ratio))
        }
        None => None,
    };
    let mut child = QuiverChild::start(segment_max_rows, &extra_env, args.child_log.as_deref(), args.milvus)?;
    eprintln!(
        "quiver: started `{} standalone` (pid {}) on {}, data in {}",
        child.bin.display(),
        child.pid(),
        child.url,
        child.dir.display()
    );
    let rt = runtime(2)?;
    let mut load = QuiverLoad::default();
    let client = rt.block_on(wait_ready(&mut child))?;
    load.startup = started.elapsed();
    eprintln!("quiver: ready in {:.1}s", load.startup.as_secs_f64());

    // Load: create, insert in batches, flush, wait until the sealed segment is served.
    rt.block_on(async {
        let mut s = schema::simple(COLLECTION, data.dim as u32);
        s.num_shards = 1;
        client.create_collection(s).await?;
        let t = Instant::now();
        load.insert_started = Some(t);
        let batch = args.batch.max(1);
        let mut start = 0;
        while start < data.n {
            let end = (start + batch).min(data.n);
            let rows = schema::rows(
                start as i64..end as i64,
                data.dim as u32,
                data.base[start * data.dim..end * data.dim].to_vec(),
            );
            client.insert(COLLECTION, rows).await.with_context(|| format!("insert rows {start}..{end}"))?;
            start = end;
        }
        load.insert = t.elapsed();
        eprintln!(
            "quiver: inserted {} rows in {:.1}s ({:.0} rows/s)",
            data.n,
            load.insert.as_secs_f64(),
            data.n as f64 / load.insert.as_secs_f64().max(1e-9)
        );
        let t = Instant::now();
        retry("flush", || client.flush(COLLECTION)).await?;
        wait_segments(&client, data.n as u64, false, Duration::from_secs(600)).await?;
        load.flush_served = t.elapsed();
        eprintln!("quiver: flushed; sealed segment(s) served after {:.1}s", load.flush_served.as_secs_f64());
        anyhow::Ok(())
    })?;
    child.check_alive()?;

    // Brute-force latency before the index exists: the yardstick for "index is live".
    let probe_n = data.nq.min(20);
    let probe_started = Instant::now();
    load.brute_force_p50_us = rt.block_on(probe_p50(&client, data, search_params, args.workload.k, probe_n))?;
    eprintln!("quiver: brute-force search (no index yet) p50 {:.0} µs", load.brute_force_p50_us);
    // The query node's completed loads once the flush's have settled: with one segment it
    // serves the index after LOADS_TO_SERVE_INDEX more.
    let loads_before = match settled_querynode_loads(child.metrics) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("warning: cannot read the query node's loads ({e:#}); index serving is judged by latency");
            None
        }
    };
    // The probe and the settling are the bench's, not Quiver's work: not in insert → searchable.
    load.probe = probe_started.elapsed();

    // Index: create, wait until every segment is Indexed, then until the query node serves it.
    let metrics = child.metrics;
    rt.block_on(async {
        let t = Instant::now();
        retry("create_index", || client.create_index(COLLECTION, params.clone())).await?;
        eprintln!("quiver: index defined; waiting for the index node...");
        let dist = wait_segments(&client, data.n as u64, true, Duration::from_secs(7200)).await?;
        load.index_built = t.elapsed();
        load.segments = dist.len();
        load.segment_rows = dist;
        eprintln!("quiver: all {} segment(s) Indexed after {:.1}s", load.segments, load.index_built.as_secs_f64());
        // The first search known to be answered with the index.
        let mut served_at = None;
        if let Some(before) = loads_before.filter(|_| load.segments == 1) {
            let target = before + f64::from(LOADS_TO_SERVE_INDEX);
            if wait_querynode_loads(metrics, target, Duration::from_secs(600)).await? {
                probe_p50(&client, data, search_params, args.workload.k, 1).await?;
                served_at = Some(Instant::now());
                load.searchable_exact = true;
                load.index_live_note = "the query node finished its second load since create_index (the index \
                                         definition's, then the built index's; quiver_requests_total{role=\"querynode\",\
                                         method=\"load\"})"
                    .into();
            } else {
                eprintln!("warning: the query node did not finish {LOADS_TO_SERVE_INDEX} loads after create_index within 600 s; judging by latency");
            }
        }
        // Brute force over the whole base is far slower than an index search; when it is
        // clearly slow, the index is live once the probe latency falls to a third of it.
        // Only for one segment: several segments' index searches add up and may not fall that low.
        let threshold = (load.brute_force_p50_us >= 3000.0 && load.segments == 1).then_some(load.brute_force_p50_us / 3.0);
        match (served_at, threshold) {
            (Some(_), _) => {}
            (None, Some(th)) => {
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    let p50 = probe_p50(&client, data, search_params, args.workload.k, probe_n).await?;
                    if p50 < th {
                        served_at = Some(Instant::now());
                        load.searchable_exact = true;
                        load.index_live_note = format!(
                            "probe p50 {p50:.0} µs fell below {th:.0} µs, a third of the brute-force p50"
                        );
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("the query node still searches by brute force 10 minutes after the index was built (probe p50 {p50:.0} µs)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (None, None) => {
                // Brute force is fast (small base): latency cannot tell, so give the
                // coordinator two reconcile rounds to hand the index to the query node.
                tokio::time::sleep(Duration::from_secs(5)).await;
                probe_p50(&client, data, search_params, args.workload.k, 1).await?;
                served_at = Some(Instant::now());
                load.index_live_note = "fixed 5 s wait after Indexed (brute force not distinguishable by latency)".into();
            }
        }
        load.index_live = t.elapsed();
        load.searchable = served_at
            .zip(load.insert_started)
            .map(|(at, from)| at.duration_since(from).saturating_sub(load.probe));
        eprintln!("quiver: index serving on the query node after {:.1}s ({})", load.index_live.as_secs_f64(), load.index_live_note);
        if let Some(d) = load.searchable {
            eprintln!(
                "quiver: insert → searchable with the index {:.1}s{}",
                d.as_secs_f64(),
                if load.searchable_exact { "" } else { " (upper bound)" }
            );
        }
        anyhow::Ok(())
    })?;
    child.check_alive()?;
    load.rss = tree_mem(child.pid());
    relabel(&mut load.rss, child.pid());

    // Searches. CPU is tracked for this process (the clients), the Quiver child and its
    // descendants (the nats-server).
    let mut watch = vec![Watched { pid: std::process::id(), label: "bench client".into() }];
    for (pid, name, _, _) in &load.rss {
        watch.push(Watched { pid: *pid, label: name.clone() });
    }
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    for &consistency in consistencies {
        for &threads in &args.threads {
            wait_quiet(args, &watch);
            let (result, server) = with_server_share(child.metrics, NATS_SEARCH, || match args.client_mode {
                ClientMode::Threads => quiver_threads(
                    &child.url,
                    data,
                    args.workload.k,
                    *search_params,
                    consistency,
                    threads,
                    warmup,
                    duration,
                    &watch,
                ),
                ClientMode::Tasks => quiver_tasks(
                    &child.url,
                    data,
                    args.workload.k,
                    *search_params,
                    consistency,
                    threads,
                    warmup,
                    duration,
                    &watch,
                ),
            })?;
            eprintln!(
                "quiver {consistency:?}, {threads} client(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}{}",
                result.qps,
                result.p50_us,
                result.p99_us,
                args.workload.k,
                result.recall,
                if result.errors > 0 { format!(", {} errors", result.errors) } else { String::new() }
            );
            report.quiver.push(QuiverRow { consistency, result, server });
            child.check_alive()?;
        }
    }
    if !args.no_breakdown {
        wait_quiet(args, &watch);
        match rt.block_on(breakdown_setup(&client)) {
            Ok(target) => {
                let b = run_breakdown(
                    &child.url,
                    data,
                    args.workload.k,
                    *search_params,
                    warmup,
                    duration,
                    &watch,
                    &target,
                )?;
                eprintln!(
                    "breakdown p50: echo {:.0} µs, query node direct {:.0} µs, full SDK {:.0} µs",
                    b.echo.p50_us, b.querynode.p50_us, b.full.p50_us
                );
                report.breakdown = Some(b);
            }
            Err(e) => eprintln!("warning: no latency breakdown: {e:#}"),
        }
    }
    if let (Some((python, inputs)), Some(grpc)) = (pymilvus, child.grpc) {
        report.milvus = run_pymilvus(args, params.metric, search_params, python, inputs, grpc, &mut child, &watch)?;
    }
    // Again after the search load (VmHWM there is the peak over the whole run).
    load.rss_end = tree_mem(child.pid());
    relabel(&mut load.rss_end, child.pid());
    if args.pause {
        eprintln!(
            "quiver: paused; pid {} at {} (cluster {CLUSTER}, collection {COLLECTION}). Press Enter to stop.",
            child.pid(),
            child.url
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    drop(client);
    drop(rt);
    let status = child.stop();
    eprintln!("quiver: stopped ({})", status.map_or("unknown status".into(), |s| s.to_string()));
    report.quiver_load = Some(load);
    // The child sent its last spans as it stopped.
    report.tracing = collector.map(|(_sink_rt, collector, ratio)| (ratio, collector.count()));
    Ok(())
}

/// The pymilvus rows: every client count unfiltered, then with --milvus-filter.
#[allow(clippy::too_many_arguments)]
fn run_pymilvus(
    args: &BenchArgs,
    metric: MetricType,
    search_params: &SearchParams,
    python: PathBuf,
    inputs: &PyInputs,
    grpc: std::net::SocketAddr,
    child: &mut QuiverChild,
    watch: &[Watched],
) -> anyhow::Result<Vec<MilvusRow>> {
    milvus::wait_listening(grpc, Duration::from_secs(30))?;
    let driver = milvus::Driver::new(
        python,
        format!("http://{grpc}"),
        COLLECTION,
        inputs,
        milvus::DriverSearch { k: args.workload.k, metric, ef: search_params.ef, nprobe: search_params.nprobe },
    );
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let mut filters = vec![String::new()];
    if !args.milvus_filter.trim().is_empty() {
        filters.push(args.milvus_filter.clone());
    }
    let mut rows = Vec::new();
    for filter in filters {
        for &threads in &args.threads {
            wait_quiet(args, watch);
            let (out, server) =
                with_server_share(child.metrics, MILVUS_SEARCH, || driver.run(threads, &filter, warmup, duration))?;
            let p90_us = out.p90_us.unwrap_or(f64::NAN);
            let result = out.into_load_result();
            eprintln!(
                "pymilvus{}, {threads} client(s): {:.0} QPS, p50 {:.0} µs, p99 {:.0} µs, recall@{} {:.4}, server mean {}{}",
                if filter.is_empty() { String::new() } else { format!(" (filter {filter:?})") },
                result.qps,
                result.p50_us,
                result.p99_us,
                args.workload.k,
                result.recall,
                server.as_ref().map_or("?".into(), |s| format!("{:.0} µs", s.mean_us)),
                if result.errors > 0 { format!(", {} errors", result.errors) } else { String::new() }
            );
            rows.push(MilvusRow { filter: filter.clone(), result, p90_us, server });
            child.check_alive()?;
        }
    }
    Ok(rows)
}

/// Connects and waits until every role reports healthy.
async fn wait_ready(child: &mut QuiverChild) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(120);
    // The embedded nats-server first: the SDK would otherwise keep retrying in the background.
    let first = child.url.split(',').next().unwrap_or_default();
    let addr = first.trim().trim_start_matches("nats://").to_string();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        child.check_alive()?;
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 120 s; log:\n{}", child.proc.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = tokio::time::timeout(Duration::from_secs(10), Client::connect(&child.url, CLUSTER))
        .await
        .with_context(|| format!("connecting to {} timed out", child.url))??
        .with_timeout(Duration::from_secs(120));
    loop {
        child.check_alive()?;
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), client.status()).await {
            let healthy: Vec<Role> = status.nodes.iter().filter(|n| n.healthy).map(|n| n.role).collect();
            if Role::ALL.iter().all(|r| healthy.contains(r)) {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "Quiver did not report all {} roles healthy within 120 s; log:\n{}",
                Role::ALL.len(),
                child.proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries a call that failed with a retryable error (Unavailable, Timeout) for up to 60 s.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, quiver_client::ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::debug!(what, error = %e, "retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(anyhow!("{what}: {e}")),
        }
    }
}

/// Loads a query node completes after `create_index` until it serves a single segment's index:
/// the coordinator sends one when the index is defined (its digest covers the definition, and
/// it starts the build in the same reconcile round) and one when the segment is Indexed (the
/// new index path); loads are serial, and a load is counted once applied.
const LOADS_TO_SERVE_INDEX: u32 = 2;

/// Query-node loads completed so far, from a metrics scrape.
fn querynode_loads(metrics: &str) -> f64 {
    milvus::prom_value(metrics, "quiver_requests_total", &[("role", "querynode"), ("method", "load")])
}

/// The query nodes' completed loads once the count has not moved for 200 ms (a layout change
/// makes the coordinator reconcile at once, so the loads a flush causes follow each other
/// closely); errors if it keeps moving for 10 s.
fn settled_querynode_loads(metrics: std::net::SocketAddr) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = querynode_loads(&milvus::scrape(metrics)?);
    let mut same = 0;
    while same < 2 {
        std::thread::sleep(Duration::from_millis(100));
        let now = querynode_loads(&milvus::scrape(metrics)?);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if Instant::now() > deadline {
            bail!("the query node's load count kept changing for 10 s");
        }
    }
    Ok(last)
}

/// Polls the child's metrics (every 20 ms) until the query nodes have completed `target` loads;
/// false if they have not within `limit`.
async fn wait_querynode_loads(metrics: std::net::SocketAddr, target: f64, limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let text = tokio::task::spawn_blocking(move || milvus::scrape(metrics))
            .await
            .map_err(|e| anyhow!("metrics scrape task: {e}"))??;
        if querynode_loads(&text) >= target {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the served segments hold `rows` rows (and, with `indexed`, are all Indexed).
/// Returns the rows per segment.
async fn wait_segments(client: &Client, rows: u64, indexed: bool, limit: Duration) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + limit;
    loop {
        let d = retry("distribution", || client.distribution(COLLECTION)).await?;
        let live: Vec<_> = d.segments.iter().filter(|s| s.segment.state != SegmentState::Dropped).collect();
        let total: u64 = live.iter().map(|s| s.segment.rows).sum();
        let served = live.iter().all(|s| !s.nodes.is_empty());
        let all_indexed = live.iter().all(|s| s.segment.state == SegmentState::Indexed);
        if total == rows && served && (!indexed || all_indexed) {
            return Ok(live.iter().map(|s| s.segment.rows).collect());
        }
        if Instant::now() > deadline {
            bail!(
                "after {limit:?}: {} segment(s) served with {total} of {rows} rows, states {:?}",
                live.len(),
                live.iter().map(|s| s.segment.state).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn search_request(
    data: &Data,
    q: usize,
    k: usize,
    params: SearchParams,
    consistency: Consistency,
) -> quiver_client::Search {
    let mut req = schema::search(COLLECTION, data.dim as u32, data.query(q).to_vec(), k as u32);
    req.params = params;
    req.consistency = consistency;
    req
}

fn ids_of(res: quiver_client::SearchResults) -> Vec<i64> {
    res.results
        .into_iter()
        .next()
        .map(|h| h.pks.into_iter().filter_map(|p| if let PrimaryKey::Int64(v) = p { Some(v) } else { None }).collect())
        .unwrap_or_default()
}

/// Median latency of `n` sequential Eventually searches.
async fn probe_p50(client: &Client, data: &Data, params: &SearchParams, k: usize, n: usize) -> anyhow::Result<f64> {
    let mut lat = Vec::with_capacity(n);
    for q in 0..n {
        let req = search_request(data, q, k, *params, Consistency::Eventually);
        let t = Instant::now();
        client.search(&req).await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    Ok(lat.get(lat.len() / 2).copied().unwrap_or(0) as f64 / 1000.0)
}

#[allow(clippy::too_many_arguments)]
fn quiver_threads(
    url: &str,
    data: &Data,
    k: usize,
    params: SearchParams,
    consistency: Consistency,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    watch: &[Watched],
) -> anyhow::Result<LoadResult> {
    drive_threads(data, k, threads, warmup, duration, watch, |_| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), Client::connect(url, CLUSTER)).await })
            .context("connecting a benchmark client timed out")??;
        Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
            let req = search_request(data, q, k, params, consistency);
            Ok(ids_of(rt.block_on(client.search(&req))?))
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn quiver_tasks(
    url: &str,
    data: &Data,
    k: usize,
    params: SearchParams,
    consistency: Consistency,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    watch: &[Watched],
) -> anyhow::Result<LoadResult> {
    let rt = runtime(threads)?;
    rt.block_on(async {
        let client = tokio::time::timeout(Duration::from_secs(10), Client::connect(url, CLUSTER))
            .await
            .context("connecting the benchmark client timed out")??;
        // The tasks need 'static data: share the queries and ground truth through an Arc.
        let shared = std::sync::Arc::new((data.queries.clone(), data.truth.clone(), data.dim, data.nq));
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let client = client.clone();
            let shared = shared.clone();
            handles.push(tokio::spawn(async move {
                let (queries, truth, dim, nq) = (&shared.0, &shared.1, shared.2, shared.3);
                let mut rec = Recorder::new(nq, warmup, duration);
                let mut i = t * nq / threads;
                while rec.running() {
                    let q = i % nq;
                    let mut req =
                        schema::search(COLLECTION, dim as u32, queries[q * dim..(q + 1) * dim].to_vec(), k as u32);
                    req.params = params;
                    req.consistency = consistency;
                    let t0 = Instant::now();
                    let result = client.search(&req).await.map(ids_of).map_err(anyhow::Error::from);
                    let t1 = Instant::now();
                    rec.record(q, t0, t1, result, &truth[q]);
                    i += 1;
                }
                rec
            }));
        }
        tokio::time::sleep(warmup).await;
        let before = CpuSnap::take(watch);
        tokio::time::sleep(duration).await;
        let cpu = CpuSnap::take(watch).since(&before, watch);
        let mut recorders = Vec::with_capacity(threads);
        for h in handles {
            recorders.push(h.await.map_err(|e| anyhow!("benchmark task failed: {e}"))?);
        }
        let mut result = summarize(threads, k, recorders)?;
        result.cpu = Some(cpu);
        Ok(result)
    })
}

/// Where a direct query-node search goes: the node's subject and the collection's layout.
struct DirectTarget {
    subject: String,
    dist: quiver_client::Distribution,
}

async fn breakdown_setup(client: &Client) -> anyhow::Result<DirectTarget> {
    let dist = client.distribution(COLLECTION).await?;
    let mut nodes: Vec<&String> = dist.segments.iter().flat_map(|s| s.nodes.iter()).collect();
    nodes.extend(dist.shards.iter().map(|s| &s.leader));
    nodes.sort();
    nodes.dedup();
    let [node] = nodes.as_slice() else {
        bail!("the collection is served by {} query nodes; the direct path needs exactly one", nodes.len());
    };
    let subject = quiver_runtime::Subjects::new(CLUSTER).node_call::<quiver_schemas::protocol::querynode::Search>(node);
    Ok(DirectTarget { subject, dist })
}

async fn connect_bus(url: &str, name: &str) -> anyhow::Result<quiver_runtime::Bus> {
    tokio::time::timeout(
        Duration::from_secs(10),
        quiver_runtime::Bus::connect(url, CLUSTER, name, Duration::from_secs(60)),
    )
    .await
    .context("connecting to NATS timed out")?
    .map_err(|e| anyhow!("{e}"))
}

#[allow(clippy::too_many_arguments)]
fn run_breakdown(
    url: &str,
    data: &Data,
    k: usize,
    params: SearchParams,
    warmup: Duration,
    duration: Duration,
    watch: &[Watched],
    target: &DirectTarget,
) -> anyhow::Result<Breakdown> {
    use futures::StreamExt;
    use quiver_client::Wire;
    let opts = quiver_runtime::bus::CallOptions::default();
    // Echo responder: its own thread, runtime and connection, like a role on its arbiter.
    let echo_subject = format!("quiver.{CLUSTER}.bench.echo");
    let payload = search_request(data, 0, k, params, Consistency::Eventually).to_bytes();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let responder = {
        let (url, subject) = (url.to_string(), echo_subject.clone());
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let setup = async {
                    let bus = connect_bus(&url, "bench-echo").await?;
                    let sub = bus.subscribe(subject).await.map_err(|e| anyhow!("{e}"))?;
                    bus.flush().await.map_err(|e| anyhow!("{e}"))?;
                    anyhow::Ok((bus, sub))
                };
                let (bus, mut sub) = match setup.await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut stop = stop_rx;
                loop {
                    tokio::select! {
                        msg = sub.next() => {
                            let Some(msg) = msg else { break };
                            if let Some(reply) = msg.reply {
                                let _ = bus.client().publish(reply, msg.payload).await;
                            }
                        }
                        _ = &mut stop => break,
                    }
                }
            });
        })
    };
    ready_rx.recv().map_err(|_| anyhow!("echo responder thread died"))??;
    let echo = drive_threads(data, k, 1, warmup, duration, watch, |_| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let bus = rt.block_on(connect_bus(url, "bench-echo-client"))?;
        let (subject, payload, opts) = (echo_subject.clone(), payload.clone(), opts.clone());
        Ok(move |_q: usize| -> anyhow::Result<Vec<i64>> {
            rt.block_on(bus.request_bytes(subject.clone(), payload.clone().into(), &opts))
                .map_err(|e| anyhow!("{e}"))?;
            Ok(Vec::new())
        })
    });
    let _ = stop_tx.send(());
    let _ = responder.join();
    let echo = echo?;
    let querynode = drive_threads(data, k, 1, warmup, duration, watch, |_| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let bus = rt.block_on(connect_bus(url, "bench-direct"))?;
        let opts = opts.clone();
        Ok(move |q: usize| -> anyhow::Result<Vec<i64>> {
            let msg = quiver_client::NodeSearch {
                collection: target.dist.collection.id,
                search: search_request(data, q, k, params, Consistency::Eventually),
                segments: target.dist.segments.iter().map(|s| s.segment.id).collect(),
                growing: target.dist.shards.clone(),
                guarantee_ts: 0,
                filter: String::new(),
            };
            let reply = rt
                .block_on(bus.request_bytes(target.subject.clone(), msg.to_bytes().into(), &opts))
                .map_err(|e| anyhow!("{e}"))?;
            let part = quiver_schemas::NodeSearchResults::from_bytes(&reply)?;
            Ok(ids_of(quiver_client::SearchResults { results: part.results }))
        })
    })?;
    let full = quiver_threads(url, data, k, params, Consistency::Eventually, 1, warmup, duration, watch)?;
    Ok(Breakdown { echo, echo_bytes: payload.len(), querynode, full })
}

// ---------------------------------------------------------------- memory

/// (VmRSS, VmHWM) of a process in bytes.
fn proc_mem(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// (pid, name, VmRSS, VmHWM) of a process and all its descendants.
fn tree_mem(root: u32) -> Vec<(u32, String, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let (rss, hwm) = proc_mem(pid);
        out.push((pid, process_name(pid).unwrap_or_else(|| "?".into()), rss, hwm));
        stack.extend(child_pids(pid));
    }
    out
}

/// Names the Quiver child "quiver", whatever its binary is called (`QUIVER_BIN` may name any file).
fn relabel(list: &mut [(u32, String, u64, u64)], quiver: u32) {
    for e in list.iter_mut().filter(|e| e.0 == quiver) {
        e.1 = "quiver".into();
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

// ---------------------------------------------------------------- report

struct Report {
    cpu: String,
    cores: usize,
    dataset: String,
    n: usize,
    nq: usize,
    dim: usize,
    k: usize,
    truth_source: String,
    params: IndexParams,
    search: SearchParams,
    duration_secs: f64,
    warmup_secs: f64,
    client_mode: ClientMode,
    raw_build: Option<Duration>,
    raw_index_type: Option<IndexType>,
    /// ((rss, hwm) before, (rss, hwm) after, estimated index bytes)
    #[allow(clippy::type_complexity)] // (RSS, HWM) before and after the raw build, index bytes
    raw_rss: Option<((u64, u64), (u64, u64), u64)>,
    raw: Vec<RawRow>,
    segment_max_rows: usize,
    batch: usize,
    child_env: Vec<String>,
    /// --tracing-ratio, and the spans the bench's collector received.
    tracing: Option<(f64, u64)>,
    quiver_load: Option<QuiverLoad>,
    quiver: Vec<QuiverRow>,
    breakdown: Option<Breakdown>,
    /// The python that ran the pymilvus driver (--milvus).
    python: Option<String>,
    milvus: Vec<MilvusRow>,
    /// Client counts measured (the summary's columns).
    threads: Vec<usize>,
    faiss_cpu: Option<FaissCpuReport>,
    milvus_server: Option<MilvusServerReport>,
    /// Why --milvus' faiss-cpu and Milvus legs did not run, when they could not.
    extra_legs_note: Option<String>,
    /// Legs that failed (name, error): shown in the report; the exit status is then 1.
    failures: Vec<(String, String)>,
}

impl Report {
    fn new(args: &BenchArgs, data: &Data, params: &IndexParams) -> Report {
        Report {
            cpu: cpu_model(),
            cores: available_cores(),
            dataset: args.workload.dataset.display().to_string(),
            n: data.n,
            nq: data.nq,
            dim: data.dim,
            k: args.workload.k,
            truth_source: data.truth_source.clone(),
            params: params.clone(),
            search: SearchParams { nprobe: args.workload.nprobe, ef: args.workload.ef },
            duration_secs: args.duration_secs,
            warmup_secs: args.warmup_secs,
            client_mode: args.client_mode,
            raw_build: None,
            raw_index_type: None,
            raw_rss: None,
            raw: Vec::new(),
            segment_max_rows: 0,
            batch: args.batch,
            child_env: args.child_env.clone(),
            tracing: None,
            quiver_load: None,
            quiver: Vec::new(),
            breakdown: None,
            python: None,
            milvus: Vec::new(),
            threads: args.threads.clone(),
            faiss_cpu: None,
            milvus_server: None,
            extra_legs_note: None,
            failures: Vec::new(),
        }
    }

    /// Records a failed leg (and says so at once).
    fn fail(&mut self, leg: &str, e: anyhow::Error) {
        eprintln!("error: {leg}: {e:#}");
        self.failures.push((leg.to_string(), format!("{e:#}")));
    }

    fn raw_for(&self, threads: usize) -> Option<&LoadResult> {
        self.raw.iter().map(|r| &r.result).find(|r| r.threads == threads)
    }

    /// The --milvus summary: faiss-cpu, Milvus 2.3.5, Quiver through pymilvus and through the NATS
    /// SDK side by side, and the issue's bars.
    fn summary_markdown(&self, s: &mut String) {
        use std::fmt::Write;
        if self.python.is_none() {
            return;
        }
        let version = crate::pyvenv::MILVUS_SERVER_VERSION;
        let _ = writeln!(s, "### Summary: faiss-cpu, Milvus {version} standalone and Quiver\n");
        if let Some(note) = &self.extra_legs_note {
            let _ = writeln!(s, "- note: {note}");
        }
        for (leg, e) in &self.failures {
            let _ = writeln!(s, "- **{leg} failed**: {e}");
        }
        let by_threads = |results: Vec<&LoadResult>| -> Vec<Option<SummaryCell>> {
            self.threads.iter().map(|t| results.iter().find(|r| r.threads == *t).map(|r| SummaryCell::of(r))).collect()
        };
        let quiver_searchable = self.quiver_load.as_ref().and_then(|l| l.searchable.map(|d| (d, l.searchable_exact)));
        let quiver_cell = match quiver_searchable {
            Some((d, true)) => format!("{:.1} s", d.as_secs_f64()),
            Some((d, false)) => format!("≤ {:.1} s (fixed wait)", d.as_secs_f64()),
            None => "—".into(),
        };
        let faiss = self.faiss_cpu.as_ref();
        let server = self.milvus_server.as_ref();
        let quiver_grpc: Vec<&LoadResult> =
            self.milvus.iter().filter(|m| m.filter.is_empty()).map(|m| &m.result).collect();
        let quiver_nats: Vec<&LoadResult> =
            self.quiver.iter().filter(|q| q.consistency == Consistency::Eventually).map(|q| &q.result).collect();
        let rows = [
            SummaryRow {
                system: format!(
                    "faiss-cpu {} (PyPI, in-process)",
                    faiss.map_or(crate::pyvenv::FAISS_CPU_VERSION, |f| f.built.version.as_str())
                ),
                by_threads: by_threads(faiss.map(|f| f.rows.iter().collect()).unwrap_or_default()),
                searchable: faiss.map_or("—".into(), |f| {
                    format!(
                        "— (no insert path; HNSW build {:.1} s, {} threads)",
                        f.built.build_secs, f.built.build_threads
                    )
                }),
            },
            SummaryRow {
                system: format!("Milvus {version} standalone (pymilvus)"),
                by_threads: by_threads(server.map(|m| m.rows.iter().collect()).unwrap_or_default()),
                searchable: server.map_or("—".into(), |m| format!("{:.1} s", m.load.searchable_secs)),
            },
            SummaryRow {
                system: "Quiver (pymilvus, gRPC)".into(),
                by_threads: by_threads(quiver_grpc),
                searchable: quiver_cell.clone(),
            },
            SummaryRow {
                system: "Quiver (NATS SDK)".into(),
                by_threads: by_threads(quiver_nats),
                searchable: quiver_cell,
            },
        ];
        s.push_str(&summary_table(self.k, &self.threads, &rows));
        let _ = writeln!(s);
        let qps = |row: &SummaryRow, i: usize| row.by_threads.get(i).and_then(|r| r.as_ref()).map(|r| r.qps);
        // (what, our row, their row, bar, as a percentage)
        let bars = [
            (format!("Quiver (pymilvus) / Milvus {version} QPS"), 2, 1, 2.0, false),
            ("Quiver (NATS SDK) / faiss-cpu QPS".to_string(), 3, 0, 0.5, true),
        ];
        for (what, ours, theirs, bar, percent) in &bars {
            for (i, &t) in self.threads.iter().enumerate() {
                let what = format!("{what}, {}", clients(t));
                let line = qps_bar(&what, qps(&rows[*ours], i), qps(&rows[*theirs], i), *bar, *percent);
                let _ = writeln!(s, "- {line}");
            }
        }
        let _ = writeln!(s, "- {}", searchable_bar(quiver_searchable, server.map(|m| m.load.searchable_secs)));
        let hnsw = HnswSettings::of(&self.params, &self.search);
        let _ = writeln!(
            s,
            "\nSame rows, queries, ground truth, HNSW (M {}, efConstruction {}, ef {}), k, one query per call, windows. \
             QPS at N clients: N OS processes with one `MilvusClient` each (pymilvus), N OS threads with one connection \
             each (NATS SDK), N Python threads with one OpenMP thread each (faiss-cpu). p50 and recall at {}. \
             insert → searchable: first insert call → first search answered with the index built and served, on a \
             fresh collection; Quiver: insert, flush, create_index, until the query node serves the index (details \
             below); Milvus: pymilvus insert, flush, create_index (until Finished), load_collection (until Loaded), \
             first search — pymilvus' own wait loops poll every 0.1 s here, as the Quiver side does.\n",
            hnsw.as_ref().map_or(self.params.m, |h| h.m),
            hnsw.as_ref().map_or(self.params.ef_construction, |h| h.ef_construction),
            hnsw.as_ref().map_or(self.search.ef, |h| h.ef),
            clients(self.threads.first().copied().unwrap_or(1)),
        );
    }

    /// The Milvus gRPC section: pymilvus rows against raw faiss and the NATS SDK, with the
    /// server-side means that split the gRPC path from the client.
    fn milvus_markdown(&self, s: &mut String) {
        use std::fmt::Write;
        if self.milvus.is_empty() {
            return;
        }
        let _ = writeln!(s, "### Milvus gRPC API: pymilvus {} `MilvusClient.search`\n", milvus::PYMILVUS_VERSION);
        let _ = writeln!(
            s,
            "One query per call, consistency Eventually, `search_params` {{metric_type, ef/nprobe as above}}, one `MilvusClient` per client process ({}). \
             \"server mean\" is the handler time from the server's own histogram (`quiver_milvus_request_seconds{{method=\"Search\"}}` for gRPC, \
             `quiver_request_seconds{{role=\"proxy\",method=\"search\"}}` for the proxy's NATS handler), as _sum/_count read before and after the row \
             (warm-up and set-up calls included); \"client side\" = client mean − server mean (client library, serialization, transport).\n",
            self.python.as_deref().unwrap_or("python")
        );
        let _ = writeln!(
            s,
            "| client | filter | client threads | QPS | p50 µs | p90 µs | p99 µs | mean µs | recall@{} | added p50 vs raw µs | server mean µs | client side µs | other RPCs / errors |",
            self.k
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let row = |s: &mut String,
                   client: &str,
                   filter: &str,
                   r: &LoadResult,
                   p90: f64,
                   server: Option<&ServerShare>| {
            let added = self.raw_for(r.threads).map_or("—".into(), |b| format!("{:+.0}", r.p50_us - b.p50_us));
            let (mean, side, other) = match server {
                Some(sh) => {
                    let mut other: Vec<String> = sh.other.iter().map(|(m, n)| format!("{m} ×{n:.0}")).collect();
                    if sh.errors > 0.0 {
                        other.push(format!("{:.0} errors", sh.errors));
                    }
                    (
                        format!("{:.0}", sh.mean_us),
                        format!("{:.0}", r.mean_us - sh.mean_us),
                        if other.is_empty() { "—".to_string() } else { other.join(", ") },
                    )
                }
                None => ("?".into(), "?".into(), "?".into()),
            };
            let p90 = if p90.is_nan() { "—".into() } else { format!("{p90:.0}") };
            let _ = writeln!(
                s,
                "| {client} | {filter} | {} | {:.0} | {:.0} | {p90} | {:.0} | {:.0} | {:.4} | {added} | {mean} | {side} | {other} |",
                r.threads, r.qps, r.p50_us, r.p99_us, r.mean_us, r.recall
            );
        };
        for q in self.quiver.iter().filter(|q| q.consistency == Consistency::Eventually) {
            row(s, "NATS SDK (Rust)", "—", &q.result, f64::NAN, q.server.as_ref());
        }
        for m in &self.milvus {
            let filter = if m.filter.is_empty() { "—".to_string() } else { format!("`{}`", m.filter) };
            row(s, "pymilvus (gRPC)", &filter, &m.result, m.p90_us, m.server.as_ref());
        }
        let _ = writeln!(s);
        for m in self.milvus.iter().filter(|m| m.filter.is_empty()) {
            if let Some(raw) = self.raw_for(m.result.threads) {
                let added = m.result.p50_us - raw.p50_us;
                let _ = writeln!(
                    s,
                    "- {} client(s): pymilvus p50 {:.0} µs vs raw faiss {:.0} µs: {added:+.0} µs — bar (≤ +250 µs p50) {}",
                    m.result.threads,
                    m.result.p50_us,
                    raw.p50_us,
                    if added <= 250.0 { "met" } else { "not met" }
                );
            }
        }
        let _ = writeln!(s);
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(s, "## quiver-bench standalone\n");
        let _ = writeln!(s, "- machine: {} × {} cores", self.cpu, self.cores);
        let _ = writeln!(
            s,
            "- dataset: {} — {} base × {} dim, {} queries, k = {}",
            self.dataset, self.n, self.dim, self.nq, self.k
        );
        let _ = writeln!(s, "- ground truth: {}", self.truth_source);
        let _ = writeln!(
            s,
            "- index: {:?} {:?} (M/m {}, efConstruction {}, nlist {}, nbits {}; 0 = default); search ef {}, nprobe {} (0 = default); faiss threads 1",
            p.index_type, p.metric, p.m, p.ef_construction, p.nlist, p.nbits, self.search.ef, self.search.nprobe
        );
        let _ = writeln!(
            s,
            "- one query per call; {} s warm-up + {} s measured per row",
            self.warmup_secs, self.duration_secs
        );
        let _ = writeln!(s, "- Quiver clients: {}", self.client_mode.describe());
        if !self.child_env.is_empty() {
            let _ = writeln!(s, "- extra environment of the Quiver child: `{}`", self.child_env.join(" "));
        }
        match self.tracing {
            Some((ratio, spans)) => {
                let _ = writeln!(
                    s,
                    "- tracing on, sampling ratio {ratio}: {spans} spans exported to the bench's OTLP collector"
                );
            }
            None => {
                let _ = writeln!(s, "- tracing off (the default)");
            }
        }
        if self.segment_max_rows > 0 {
            let _ = writeln!(
                s,
                "- Quiver: `quiver standalone` child, 1 shard, datanode.segment_max_rows = {} ({}); security.enabled = false (loopback only)",
                self.segment_max_rows,
                match self.quiver_load.as_ref().map_or(1, |l| l.segments) {
                    0 | 1 => "the whole base is one segment: same index shape as raw faiss".to_string(),
                    n => format!("{n} segments, one index each; raw faiss searches one index of the whole base"),
                }
            );
        }
        let _ = writeln!(s);
        self.summary_markdown(&mut s);
        let _ = writeln!(s, "| system | consistency | client threads | calls | QPS | p50 µs | p99 µs | mean µs | recall@{} | QPS / raw | added p50 µs |", self.k);
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let fmt_row = |s: &mut String, system: &str, cons: &str, r: &LoadResult, raw: Option<&LoadResult>| {
            let (ratio, added) = match raw {
                Some(b) if b.qps > 0.0 => {
                    (format!("{:.0}%", 100.0 * r.qps / b.qps), format!("{:+.0}", r.p50_us - b.p50_us))
                }
                _ => ("—".into(), "—".into()),
            };
            let errors = if r.errors > 0 { format!(" ({} errors)", r.errors) } else { String::new() };
            let _ = writeln!(
                s,
                "| {system} | {cons} | {} | {} | {:.0}{errors} | {:.0} | {:.0} | {:.0} | {:.4} | {ratio} | {added} |",
                r.threads, r.calls, r.qps, r.p50_us, r.p99_us, r.mean_us, r.recall
            );
        };
        for r in &self.raw {
            fmt_row(&mut s, "raw faiss (in-process)", "—", &r.result, None);
        }
        for q in &self.quiver {
            let cons = format!("{:?}", q.consistency);
            fmt_row(&mut s, "Quiver standalone (NATS SDK)", &cons, &q.result, self.raw_for(q.result.threads));
        }
        for m in &self.milvus {
            let cons =
                if m.filter.is_empty() { "Eventually".to_string() } else { format!("Eventually, `{}`", m.filter) };
            fmt_row(&mut s, "Quiver standalone (pymilvus, gRPC)", &cons, &m.result, self.raw_for(m.result.threads));
        }
        if let Some(f) = &self.faiss_cpu {
            let system = format!("faiss-cpu {} (PyPI, in-process, Python threads)", f.built.version);
            for r in &f.rows {
                fmt_row(&mut s, &system, "—", r, self.raw_for(r.threads));
            }
        }
        if let Some(m) = &self.milvus_server {
            let system = format!("Milvus {} standalone (pymilvus, gRPC)", crate::pyvenv::MILVUS_SERVER_VERSION);
            for r in &m.rows {
                fmt_row(&mut s, &system, "Eventually", r, self.raw_for(r.threads));
            }
        }
        let _ = writeln!(s);
        let mut named: Vec<(&str, &LoadResult)> = Vec::new();
        named.extend(self.raw.iter().map(|r| ("raw faiss", &r.result)));
        named.extend(self.quiver.iter().map(|q| ("Quiver (NATS SDK)", &q.result)));
        named.extend(self.milvus.iter().map(|m| ("Quiver (pymilvus)", &m.result)));
        named.extend(self.faiss_cpu.iter().flat_map(|f| &f.rows).map(|r| ("faiss-cpu", r)));
        named.extend(self.milvus_server.iter().flat_map(|m| &m.rows).map(|r| ("Milvus", r)));
        let mut noted = false;
        for (system, r) in named {
            if r.queries_seen < self.nq {
                let _ = writeln!(
                    s,
                    "- note: a {system} {}-thread row saw only {} of {} queries (recall over those)",
                    r.threads, r.queries_seen, self.nq
                );
                noted = true;
            }
            if let Some(e) = &r.first_error {
                let _ = writeln!(s, "- errors in a {system} {}-thread row: {} (first: {e})", r.threads, r.errors);
                noted = true;
            }
        }
        if noted {
            let _ = writeln!(s);
        }
        self.milvus_markdown(&mut s);
        if let Some(b) = &self.breakdown {
            let raw = self.raw_for(1);
            let _ = writeln!(s, "### Where the time goes (1 client, Eventually)\n");
            let _ = writeln!(s, "| path | p50 µs | p99 µs | mean µs | QPS |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            let row = |s: &mut String, name: &str, r: &LoadResult| {
                let _ = writeln!(s, "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |", r.p50_us, r.p99_us, r.mean_us, r.qps);
            };
            if let Some(r) = raw {
                row(&mut s, "raw faiss search, in-process", r);
            }
            row(
                &mut s,
                &format!("NATS echo: request/reply of {} B through nats-server to a responder thread (1 round trip, no work)", b.echo_bytes),
                &b.echo,
            );
            row(
                &mut s,
                "query node directly: NodeSearch request → query node → faiss → reply (1 round trip)",
                &b.querynode,
            );
            row(&mut s, "full SDK search: client → proxy → query node → proxy → client (2 round trips)", &b.full);
            let _ = writeln!(s);
            if let Some(r) = raw {
                let qn_over = b.querynode.p50_us - r.p50_us - b.echo.p50_us;
                let proxy = b.full.p50_us - b.querynode.p50_us;
                let _ = writeln!(
                    s,
                    "p50 decomposition: faiss {:.0} µs + NATS round trip {:.0} µs + query-node work beyond faiss (decode, dispatch, spawn_blocking, encode) {:.0} µs = query node direct {:.0} µs; the proxy hop adds {:.0} µs (of which one more NATS round trip ≈ {:.0} µs, proxy work ≈ {:.0} µs).\n",
                    r.p50_us,
                    b.echo.p50_us,
                    qn_over,
                    b.querynode.p50_us,
                    proxy,
                    b.echo.p50_us,
                    proxy - b.echo.p50_us
                );
            }
        }
        let _ = writeln!(s, "### CPU during the measured windows\n");
        let _ = writeln!(
            s,
            "Cores busy (1.0 = one core) per process from /proc/<pid>/stat, and CPU µs per query; \"other\" is the rest of the machine's busy time (/proc/stat) — other processes and kernel work not charged to ours.\n"
        );
        let _ = writeln!(s, "| system | consistency | client threads | CPU by process: cores (µs per query) | total µs/query | other (cores) |");
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|");
        let cpu_row = |s: &mut String, system: &str, cons: &str, r: &LoadResult| {
            let Some(cpu) = &r.cpu else { return };
            let per_q = |cores: f64| if r.qps > 0.0 { cores / r.qps * 1e6 } else { f64::NAN };
            let parts: Vec<String> =
                cpu.parts.iter().map(|(name, c)| format!("{name} {c:.2} ({:.0})", per_q(*c))).collect();
            let total: f64 = cpu.parts.iter().map(|p| p.1).sum();
            let _ = writeln!(
                s,
                "| {system} | {cons} | {} | {} | {:.0} | {:.2} |",
                r.threads,
                parts.join(", "),
                per_q(total),
                cpu.other
            );
        };
        for r in &self.raw {
            cpu_row(&mut s, "raw faiss", "—", &r.result);
        }
        for q in &self.quiver {
            cpu_row(&mut s, "Quiver", &format!("{:?}", q.consistency), &q.result);
        }
        if let Some(b) = &self.breakdown {
            cpu_row(&mut s, "NATS echo", "—", &b.echo);
            cpu_row(&mut s, "query node direct", "Eventually", &b.querynode);
            cpu_row(&mut s, "Quiver (breakdown run)", "Eventually", &b.full);
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "### Build, load and memory\n");
        if let Some(b) = self.raw_build {
            let built = self.raw_index_type.map_or(String::new(), |t| format!(" (built as {t:?})"));
            let _ = writeln!(s, "- raw faiss build: {:.1} s{built}", b.as_secs_f64());
        }
        if let Some(((rb, _), (ra, ha), est)) = self.raw_rss {
            let _ = writeln!(
                s,
                "- raw faiss RSS: bench process {} before build → {} after (index ≈ {} by RSS delta; estimate {}; peak {})",
                mib(rb),
                mib(ra),
                mib(ra.saturating_sub(rb)),
                mib(est),
                mib(ha)
            );
        }
        if let Some(l) = &self.quiver_load {
            let _ = writeln!(s, "- Quiver startup (spawn → 5 healthy roles): {:.1} s", l.startup.as_secs_f64());
            let _ = writeln!(
                s,
                "- Quiver insert: {} rows in {:.1} s = {:.0} rows/s (SDK, batches of {}); flush → segment served {:.1} s",
                self.n,
                l.insert.as_secs_f64(),
                self.n as f64 / l.insert.as_secs_f64().max(1e-9),
                self.batch,
                l.flush_served.as_secs_f64()
            );
            let _ = writeln!(s, "- Quiver segments: {} with rows {:?}", l.segments, l.segment_rows);
            let _ = writeln!(
                s,
                "- Quiver brute-force search before the index (p50, 1 client): {:.0} µs",
                l.brute_force_p50_us
            );
            let _ = writeln!(
                s,
                "- Quiver index build (create_index → all segments Indexed): {:.1} s; serving on the query node after {:.1} s ({})",
                l.index_built.as_secs_f64(),
                l.index_live.as_secs_f64(),
                l.index_live_note
            );
            if let Some(d) = l.searchable {
                let _ = writeln!(
                    s,
                    "- Quiver insert → searchable with the index: {:.1} s{} (first insert call → first search answered \
                     with the index served, less {:.2} s of the bench's own between flush and create_index: its brute-force \
                     probe and waiting for the query node's loads to settle)",
                    d.as_secs_f64(),
                    if l.searchable_exact { "" } else { " — an upper bound (fixed wait)" },
                    l.probe.as_secs_f64()
                );
            }
            rss_lines(&mut s, "Quiver", &[("after load + index", &l.rss), ("after the search runs", &l.rss_end)]);
        }
        if let Some(f) = &self.faiss_cpu {
            let _ = writeln!(
                s,
                "- faiss-cpu {} (PyPI; {}; {}): its own HNSW built in {:.1} s with {} OpenMP threads; searches with 1 \
                 OpenMP thread per Python thread",
                f.built.version,
                f.built.compile_options,
                f.python.display(),
                f.built.build_secs,
                f.built.build_threads
            );
        }
        if let Some(m) = &self.milvus_server {
            let l = &m.load;
            let _ = writeln!(
                s,
                "- Milvus {} standalone ({}; server {}): healthy {:.1} s after launch; dataCoord.segment.maxSize = {} MB \
                 (the whole base in one segment, as in Quiver); segments loaded: {}",
                crate::pyvenv::MILVUS_SERVER_VERSION,
                m.python.display(),
                l.server_version,
                m.startup.as_secs_f64(),
                m.segment_max_mb,
                l.segments.as_ref().map_or("unknown".to_string(), |v| format!("{} with rows {v:?}", v.len()))
            );
            let _ = writeln!(
                s,
                "- Milvus insert → searchable with the index: {:.1} s = insert {:.1} s ({:.0} rows/s, pymilvus, batches \
                 of {}) + flush {:.1} s + create_index until Finished {:.1} s ({} of {} rows indexed) + load {:.1} s + \
                 first search {:.2} s ({} attempt(s))",
                l.searchable_secs,
                l.insert_secs,
                l.rows as f64 / l.insert_secs.max(1e-9),
                self.batch,
                l.flush_secs,
                l.index_secs,
                l.indexed_rows.map_or("?".to_string(), |r| r.to_string()),
                l.rows,
                l.load_secs,
                l.first_search_secs,
                l.search_attempts
            );
            rss_lines(&mut s, "Milvus", &[("after load + index", &m.rss), ("after the search runs", &m.rss_end)]);
        }
        s
    }
}

/// What the summary shows of one configuration.
#[derive(Clone, Copy)]
struct SummaryCell {
    qps: f64,
    errors: usize,
    p50_us: f64,
    recall: f64,
}

impl SummaryCell {
    fn of(r: &LoadResult) -> SummaryCell {
        SummaryCell { qps: r.qps, errors: r.errors, p50_us: r.p50_us, recall: r.recall }
    }
}

/// One system of the --milvus summary: its result at each client count (None: not measured).
struct SummaryRow {
    system: String,
    by_threads: Vec<Option<SummaryCell>>,
    /// The insert → searchable cell.
    searchable: String,
}

/// "1 client", "2 clients".
fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

/// system | QPS per client count | p50 and recall at the first count | insert → searchable.
fn summary_table(k: usize, threads: &[usize], rows: &[SummaryRow]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let first = clients(threads.first().copied().unwrap_or(1));
    let _ = write!(s, "| system |");
    for &t in threads {
        let _ = write!(s, " QPS, {} |", clients(t));
    }
    let _ = writeln!(s, " p50 µs, {first} | recall@{k}, {first} | insert → searchable |");
    let _ = writeln!(s, "|---|{}---:|---:|---|", "---:|".repeat(threads.len()));
    for row in rows {
        let _ = write!(s, "| {} |", row.system);
        for r in &row.by_threads {
            match r {
                Some(r) if r.errors > 0 => {
                    let _ = write!(s, " {:.0} ({} errors) |", r.qps, r.errors);
                }
                Some(r) => {
                    let _ = write!(s, " {:.0} |", r.qps);
                }
                None => s.push_str(" — |"),
            }
        }
        match row.by_threads.first().and_then(Option::as_ref) {
            Some(r) => {
                let _ = write!(s, " {:.0} | {:.4} |", r.p50_us, r.recall);
            }
            None => s.push_str(" — | — |"),
        }
        let _ = writeln!(s, " {} |", row.searchable);
    }
    s
}

/// `what: ours / theirs = ratio — bar ≥ bar: met | not met` (as a percentage with `percent`).
fn qps_bar(what: &str, ours: Option<f64>, theirs: Option<f64>, bar: f64, percent: bool) -> String {
    let show = |r: f64| if percent { format!("{:.0}%", r * 100.0) } else { format!("{r:.2}×") };
    match (ours, theirs) {
        (Some(o), Some(t)) if t > 0.0 => {
            let r = o / t;
            format!(
                "{what}: {o:.0} / {t:.0} = {} — bar ≥ {}: {}",
                show(r),
                show(bar),
                if r >= bar { "met" } else { "not met" }
            )
        }
        _ => format!("{what}: not measured — bar ≥ {}: not checked", show(bar)),
    }
}

/// Quiver's insert → searchable against Milvus' (`quiver`: the time and whether it was observed
/// rather than bounded by a fixed wait).
fn searchable_bar(quiver: Option<(Duration, bool)>, milvus: Option<f64>) -> String {
    let what = "insert → searchable with the index";
    match (quiver, milvus) {
        (Some((q, exact)), Some(m)) => {
            let q = q.as_secs_f64();
            let verdict = match (q <= m, exact) {
                (true, _) => "met",
                (false, true) => "not met",
                (false, false) => "inconclusive (Quiver's time is an upper bound from a fixed wait)",
            };
            format!("{what}: Quiver {q:.1} s vs Milvus {m:.1} s ({:.2}×) — bar ≤: {verdict}", q / m.max(1e-9))
        }
        _ => format!("{what}: not measured for both — bar ≤: not checked"),
    }
}

/// "- {system} RSS {when}: total (peak) = per process" lines.
#[allow(clippy::type_complexity)] // (pid, name, VmRSS, VmHWM) as tree_mem returns them
fn rss_lines(s: &mut String, system: &str, lists: &[(&str, &Vec<(u32, String, u64, u64)>)]) {
    use std::fmt::Write;
    for (when, list) in lists {
        let total: u64 = list.iter().map(|e| e.2).sum();
        let peak: u64 = list.iter().map(|e| e.3).sum();
        let parts: Vec<String> = list
            .iter()
            .map(|(pid, name, rss, hwm)| format!("{name} (pid {pid}) {} (peak {})", mib(*rss), mib(*hwm)))
            .collect();
        let _ = writeln!(s, "- {system} RSS {when}: {} (peak {}) = {}", mib(total), mib(peak), parts.join(" + "));
    }
}

/// End-to-end search throughput with the router running as a Wasm plugin vs natively
/// (`quiver-bench plugins --e2e`): one standalone child holding a slice of the dataset in many
/// small segments (so the router has work on every search); between measured windows the
/// router is switched at runtime between `rendezvous@builtin` (Wasm) and `rendezvous@native`,
/// so both engines are measured in the same process on the same data, alternately.
pub struct RouterE2e {
    pub dataset: PathBuf,
    pub rows: usize,
    pub segment_rows: usize,
    pub threads: usize,
    pub duration: Duration,
    pub rounds: usize,
}

/// The router slot of every proxy, as the cluster's plugin listing reports them.
async fn router_slots(client: &Client) -> anyhow::Result<Vec<quiver_runtime::plugin::SlotStatus>> {
    let listing: quiver_runtime::plugin::CatalogListing = serde_json::from_str(&client.plugin_list().await?)?;
    Ok(listing.nodes.into_iter().flat_map(|n| n.slots).filter(|s| s.kind.as_str() == "router").collect())
}

/// Switches the router of every proxy to `rendezvous@version` and waits until the proxy runs it.
async fn switch_router(client: &Client, version: &str) -> anyhow::Result<()> {
    client.plugin_activate("rendezvous", version).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let slots = router_slots(client).await?;
        if slots.iter().all(|s| s.version.to_string() == version && s.name == "rendezvous") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the proxy did not switch to rendezvous@{version} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn router_e2e(cfg: &RouterE2e) -> anyhow::Result<String> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }
    let Wrap { args } = <Wrap as clap::Parser>::try_parse_from([
        "bench".to_string(),
        "--dataset".into(),
        cfg.dataset.display().to_string(),
        "--base-limit".into(),
        cfg.rows.to_string(),
        "--queries".into(),
        "200".into(),
    ])?;
    let data = Data::load(&args, MetricType::Ip)?;
    let rt = runtime(2)?;
    let mut child = QuiverChild::start(cfg.segment_rows, &[], None, false)?;
    let client = rt.block_on(wait_ready(&mut child))?;
    let segments = rt.block_on(async {
        let mut s = schema::simple(COLLECTION, data.dim as u32);
        s.num_shards = 1;
        client.create_collection(s).await?;
        // One insert per segment: a segment is sealed after the log entry that fills it.
        let batch = cfg.segment_rows;
        for start in (0..data.n).step_by(batch) {
            let end = (start + batch).min(data.n);
            let rows = schema::rows(
                start as i64..end as i64,
                data.dim as u32,
                data.base[start * data.dim..end * data.dim].to_vec(),
            );
            client.insert(COLLECTION, rows).await?;
        }
        retry("flush", || client.flush(COLLECTION)).await?;
        wait_segments(&client, data.n as u64, false, Duration::from_secs(300)).await
    })?;
    eprintln!("router e2e: {} rows in {} segments", data.n, segments.len());
    let mut rows: Vec<(&str, usize, LoadResult)> = Vec::new();
    for round in 0..cfg.rounds {
        // Alternate which engine goes first, so an order effect cancels out.
        let mut order = [("wasm", "builtin"), ("native", "native")];
        if round % 2 == 1 {
            order.reverse();
        }
        for (engine, version) in order {
            child.check_alive()?;
            rt.block_on(switch_router(&client, version))?;
            let r = quiver_threads(
                &child.url,
                &data,
                10,
                SearchParams::default(),
                Consistency::Eventually,
                cfg.threads,
                Duration::from_secs(1),
                cfg.duration,
                &[],
            )?;
            eprintln!(
                "router e2e round {round} {engine}: {:.0} QPS p50 {:.0} µs, {} errors",
                r.qps, r.p50_us, r.errors
            );
            rows.push((engine, round, r));
        }
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{} rows of {} in {} segments (≤ {} rows each), brute force, 1 shard, Eventually, top-10, {} client threads, \
         {:.0} s per window; one `quiver standalone`, router switched between rendezvous@builtin (Wasm) and \
         rendezvous@native before each window (wasm first in even rounds, native first in odd ones)\n\n",
        data.n,
        cfg.dataset.display(),
        segments.len(),
        cfg.segment_rows,
        cfg.threads,
        cfg.duration.as_secs_f64()
    ));
    out.push_str(
        "| router engine | round | QPS | p50 µs | p99 µs | recall@10 | errors |\n|---|---|---|---|---|---|---|\n",
    );
    for (engine, round, r) in &rows {
        out.push_str(&format!(
            "| {engine} | {round} | {:.0} | {:.0} | {:.0} | {:.4} | {} |\n",
            r.qps, r.p50_us, r.p99_us, r.recall, r.errors
        ));
    }
    let mean = |e: &str| {
        let qps: Vec<f64> = rows.iter().filter(|r| r.0 == e).map(|r| r.2.qps).collect();
        qps.iter().sum::<f64>() / qps.len().max(1) as f64
    };
    let (wasm, native) = (mean("wasm"), mean("native"));
    // Paired per round (adjacent windows), so slow drifts of the machine cancel out.
    let mut ratios: Vec<f64> = (0..cfg.rounds)
        .filter_map(|round| {
            let of = |e: &str| rows.iter().find(|r| r.0 == e && r.1 == round).map(|r| r.2.qps);
            Some(of("wasm")? / of("native")?.max(1e-9))
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(1.0);
    out.push_str(&format!(
        "\nMean QPS: wasm {wasm:.0}, native {native:.0} ({:+.2}%); median of the per-round wasm/native ratios \
         {median:.4} ({:+.2}%). Bar: the Wasm router costs ≤ 2% of QPS.\n",
        (wasm / native.max(1e-9) - 1.0) * 100.0,
        (median - 1.0) * 100.0
    ));
    for s in rt.block_on(router_slots(&client)).unwrap_or_default() {
        out.push_str(&format!(
            "Router slot at the end: {}@{} engine {}, generation {}, {} fallbacks.\n",
            s.name, s.version, s.engine, s.generation, s.fallbacks
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cell(qps: f64, errors: usize) -> Option<SummaryCell> {
        Some(SummaryCell { qps, errors, p50_us: 250.4, recall: 0.98765 })
    }

    #[test]
    fn hnsw_settings_fill_in_quivers_defaults() {
        let mut params = schema::index_named("HNSW", "IP").unwrap();
        params.m = 0;
        params.ef_construction = 0;
        let h = HnswSettings::of(&params, &SearchParams { ef: 0, nprobe: 0 }).unwrap();
        assert_eq!((h.metric, h.m, h.ef_construction, h.ef), ("IP", 16, 200, 64));
        params.m = 32;
        params.ef_construction = 100;
        params.metric = MetricType::Cosine;
        let h = HnswSettings::of(&params, &SearchParams { ef: 128, nprobe: 0 }).unwrap();
        assert_eq!((h.metric, h.m, h.ef_construction, h.ef), ("COSINE", 32, 100, 128));
        let flat = schema::index_named("IVF_FLAT", "L2").unwrap();
        assert!(HnswSettings::of(&flat, &SearchParams::default()).is_none());
    }

    #[test]
    fn summary_table_has_a_column_per_client_count() {
        let rows = [
            SummaryRow {
                system: "A".into(),
                by_threads: vec![cell(1000.4, 0), cell(1900.0, 3)],
                searchable: "5.0 s".into(),
            },
            SummaryRow { system: "B".into(), by_threads: vec![None, cell(10.0, 0)], searchable: "—".into() },
        ];
        let t = summary_table(10, &[1, 2], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| system | QPS, 1 client | QPS, 2 clients | p50 µs, 1 client | recall@10, 1 client | insert → searchable |"
        );
        assert_eq!(lines[1], "|---|---:|---:|---:|---:|---|");
        assert_eq!(lines[2], "| A | 1000 | 1900 (3 errors) | 250 | 0.9877 | 5.0 s |");
        // Not measured at the first count: no p50 or recall either.
        assert_eq!(lines[3], "| B | — | 10 | — | — | — |");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn qps_bars_say_met_or_not() {
        assert_eq!(qps_bar("x", Some(300.0), Some(100.0), 2.0, false), "x: 300 / 100 = 3.00× — bar ≥ 2.00×: met");
        assert_eq!(qps_bar("x", Some(150.0), Some(100.0), 2.0, false), "x: 150 / 100 = 1.50× — bar ≥ 2.00×: not met");
        assert_eq!(qps_bar("y", Some(50.0), Some(100.0), 0.5, true), "y: 50 / 100 = 50% — bar ≥ 50%: met");
        assert_eq!(qps_bar("y", Some(49.0), Some(100.0), 0.5, true), "y: 49 / 100 = 49% — bar ≥ 50%: not met");
        assert_eq!(qps_bar("z", None, Some(100.0), 2.0, false), "z: not measured — bar ≥ 2.00×: not checked");
        assert_eq!(qps_bar("z", Some(1.0), Some(0.0), 0.5, true), "z: not measured — bar ≥ 50%: not checked");
    }

    #[test]
    fn searchable_bar_is_honest_about_upper_bounds() {
        let s = |secs: f64, exact: bool| Some((Duration::from_secs_f64(secs), exact));
        assert!(searchable_bar(s(10.0, true), Some(20.0)).ends_with("bar ≤: met"));
        assert!(searchable_bar(s(10.0, false), Some(20.0)).ends_with("bar ≤: met"));
        assert!(searchable_bar(s(30.0, true), Some(20.0)).ends_with("bar ≤: not met"));
        assert!(searchable_bar(s(30.0, false), Some(20.0)).contains("inconclusive"));
        assert!(searchable_bar(None, Some(20.0)).ends_with("not checked"));
        assert!(searchable_bar(s(10.0, true), Some(20.0)).contains("Quiver 10.0 s vs Milvus 20.0 s (0.50×)"));
    }

    #[test]
    fn counts_the_query_nodes_loads() {
        let text = "quiver_requests_total{method=\"load\",role=\"querynode\"} 3\n\
                    quiver_requests_total{method=\"search\",role=\"querynode\"} 40\n\
                    quiver_requests_total{method=\"load\",role=\"proxy\"} 7\n";
        assert_eq!(querynode_loads(text), 3.0);
        assert_eq!(querynode_loads(""), 0.0);
    }
}
