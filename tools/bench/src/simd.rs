//! `quiver-bench simd`: per-query HNSW search in process on each faiss SIMD build Quiver links
//! (generic, avx2, avx512: whichever this CPU runs) against faiss-cpu from PyPI, on the same
//! index, in the same run; and the index build time with 1 vs N OpenMP threads (what
//! `indexnode.build_threads` sets).
//!
//! The HNSW index is built once (best level, every core), written with faiss' `write_index`,
//! and read back by every level and by faiss-cpu (`tools/bench/bench-faiss-cpu.py`), so every
//! contender searches the same graph: the differences are the distance kernels only. Searches
//! are one query per call on one thread (`set_faiss_threads(1)`, `omp_set_num_threads(1)` in
//! Python). The contenders take turns over `--rounds` rounds, so load from other processes
//! hits them alike; the report gives each one's median round and its best.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use quiver_actors::vector::{set_faiss_threads, BuildOptions, FlatVectors, SimdLevel, VectorIndex};
use quiver_client::fvecs::{read_fvecs, read_ivecs};
use quiver_client::{IndexParams, IndexType, MetricType, SearchParams};
use serde::Deserialize;

#[derive(Args)]
pub struct BenchSimdArgs {
    /// Dataset directory (base.fvecs, query.fvecs, groundtruth.ivecs; IP metric).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Base rows indexed (the whole base uses groundtruth.ivecs, fewer an exact scan).
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Queries, each searched once per contender and round.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// HNSW M.
    #[arg(long, default_value_t = 16)]
    m: u32,
    /// HNSW efConstruction.
    #[arg(long, default_value_t = 200)]
    ef_construction: u32,
    /// HNSW efSearch.
    #[arg(long, default_value_t = 64)]
    ef: u32,
    /// Rounds of turns (each contender searches every query once per round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rows of the build-time measurement (0: skip it).
    #[arg(long, default_value_t = 50_000)]
    build_rows: usize,
    /// Thread counts of the build-time measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    build_threads: Vec<usize>,
    /// Python with faiss-cpu and numpy (default: the venv
    /// ${QUIVER_PY_CACHE:-~/.cache/quiver-py}/faiss-cpu-1.15.1, created when missing).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Leave faiss-cpu out.
    #[arg(long)]
    no_faiss_cpu: bool,
}

/// One contender's round.
#[derive(Clone, Copy, Deserialize)]
struct Round {
    p50_us: f64,
    p99_us: f64,
    qps: f64,
    recall: f64,
}

/// What `bench-faiss-cpu.py` prints (one JSON line).
#[derive(Deserialize)]
struct FaissCpuRun {
    version: String,
    compile_options: String,
    rounds: Vec<Round>,
}

pub fn bench_simd(args: BenchSimdArgs) -> anyhow::Result<()> {
    let levels: Vec<SimdLevel> = SimdLevel::ALL.into_iter().filter(|l| l.is_available()).collect();
    let python = if args.no_faiss_cpu { None } else { Some(resolve_python(args.python.as_deref())?) };
    let (dim, base) = read_fvecs(&args.dataset.join("base.fvecs"), args.rows)?;
    let rows = base.len() / dim;
    let query_path = args.dataset.join("query.fvecs");
    let (qdim, queries) = read_fvecs(&query_path, args.queries)?;
    if qdim != dim {
        bail!("query dimension {qdim} differs from base dimension {dim}");
    }
    let nq = queries.len() / dim;
    let truth = ground_truth(&args, &base, dim, rows, &queries, nq)?;
    let params = IndexParams {
        index_type: IndexType::Hnsw,
        metric: MetricType::Ip,
        nlist: 0,
        m: args.m,
        nbits: 0,
        ef_construction: args.ef_construction,
        auto: false,
        name: String::new(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    eprintln!("simd: building HNSW over {rows} rows ({}, {cores} threads)...", SimdLevel::best());
    let started = Instant::now();
    let built = VectorIndex::build_with(&BuildOptions { simd: None, threads: Some(cores) }, &params, dim, &base)
        .map_err(|e| anyhow!("build: {e}"))?;
    let build_all = started.elapsed();
    let bytes = built.to_bytes().map_err(|e| anyhow!("write: {e}"))?;
    let faiss_file = tempfile::NamedTempFile::new().context("temporary index file")?;
    std::fs::write(faiss_file.path(), built.faiss_bytes().map_err(|e| anyhow!("write_index: {e}"))?)
        .context("writing the faiss index file")?;
    drop(built);

    set_faiss_threads(1);
    let indexes = levels
        .iter()
        .map(|&l| VectorIndex::from_bytes_on(l, &bytes).map_err(|e| anyhow!("{l}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let search = SearchParams { ef: args.ef, nprobe: 0 };
    let mut ours: Vec<Vec<Round>> = vec![Vec::new(); levels.len()];
    let mut pypi: Option<FaissCpuRun> = None;
    for round in 0..args.rounds {
        for (i, index) in indexes.iter().enumerate() {
            let r = measure(index, &queries, dim, args.k, &search, &truth)?;
            eprintln!("simd: round {} {}: {:.0} QPS, p50 {:.0} µs", round + 1, levels[i], r.qps, r.p50_us);
            ours[i].push(r);
        }
        if let Some(py) = &python {
            let run = faiss_cpu(py, &args, faiss_file.path(), &query_path, nq, &truth)?;
            if let Some(r) = run.rounds.first() {
                eprintln!("simd: round {} faiss-cpu: {:.0} QPS, p50 {:.0} µs", round + 1, r.qps, r.p50_us);
            }
            match &mut pypi {
                Some(all) => all.rounds.extend(run.rounds),
                None => pypi = Some(run),
            }
        }
    }

    let mut builds = Vec::new();
    if args.build_rows > 0 {
        let n = args.build_rows.min(rows);
        for &threads in &args.build_threads {
            eprintln!("simd: building HNSW over {n} rows with {threads} thread(s)...");
            let started = Instant::now();
            let options = BuildOptions { simd: None, threads: Some(threads) };
            VectorIndex::build_with(&options, &params, dim, &base[..n * dim]).map_err(|e| anyhow!("build: {e}"))?;
            builds.push((threads, started.elapsed()));
        }
    }
    print!("{}", report(&args, rows, nq, build_all, cores, &levels, &ours, pypi.as_ref(), &builds));
    Ok(())
}

/// Top-k ids per query: groundtruth.ivecs for the whole base, an exact scan otherwise.
fn ground_truth(
    args: &BenchSimdArgs,
    base: &[f32],
    dim: usize,
    rows: usize,
    queries: &[f32],
    nq: usize,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let gt_path = args.dataset.join("groundtruth.ivecs");
    let full = quiver_client::fvecs::count_rows(&args.dataset.join("base.fvecs"))? == rows;
    if full && gt_path.exists() {
        let (gdim, ids) = read_ivecs(&gt_path, nq)?;
        if gdim >= args.k {
            return Ok(ids.chunks_exact(gdim).map(|c| c[..args.k].iter().map(|&i| i64::from(i)).collect()).collect());
        }
    }
    set_faiss_threads(std::thread::available_parallelism().map_or(1, |c| c.get()));
    let flat = FlatVectors::from_vec(dim, MetricType::Ip, base.to_vec()).map_err(|e| anyhow!("{e}"))?;
    let (_, labels) = flat.search(queries, args.k, &|_| false);
    Ok(labels.chunks_exact(args.k).map(<[i64]>::to_vec).collect())
}

fn measure(
    index: &VectorIndex,
    queries: &[f32],
    dim: usize,
    k: usize,
    params: &SearchParams,
    truth: &[Vec<i64>],
) -> anyhow::Result<Round> {
    // Warm the caches and the lock paths first, untimed.
    for q in queries.chunks_exact(dim).take(50) {
        index.search(q, k, params).map_err(|e| anyhow!("search: {e}"))?;
    }
    let mut lat = Vec::with_capacity(truth.len());
    let mut hits = 0usize;
    let started = Instant::now();
    for (q, gt) in queries.chunks_exact(dim).zip(truth) {
        let t = Instant::now();
        let (_, labels) = index.search(q, k, params).map_err(|e| anyhow!("search: {e}"))?;
        lat.push(t.elapsed());
        hits += labels.iter().filter(|l| **l >= 0 && gt.contains(l)).count();
    }
    let total = started.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied();
    let us = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    Ok(Round {
        p50_us: us(pct(0.5)),
        p99_us: us(pct(0.99)),
        qps: lat.len() as f64 / total.as_secs_f64().max(1e-9),
        recall: hits as f64 / (truth.len() * k).max(1) as f64,
    })
}

/// One round of faiss-cpu on the same index file and queries.
fn faiss_cpu(
    python: &Path,
    args: &BenchSimdArgs,
    index: &Path,
    queries: &Path,
    nq: usize,
    truth: &[Vec<i64>],
) -> anyhow::Result<FaissCpuRun> {
    let truth_file = tempfile::NamedTempFile::new().context("temporary ground-truth file")?;
    let text: String =
        truth.iter().map(|t| t.iter().map(i64::to_string).collect::<Vec<_>>().join(" ") + "\n").collect();
    std::fs::write(truth_file.path(), text).context("writing the ground truth")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-faiss-cpu.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(index)
        .arg(queries)
        .arg(truth_file.path())
        .args([nq.to_string(), args.k.to_string(), args.ef.to_string(), "1".to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading {}'s output {line:?}", script.display()))
}

/// `--python`, else the faiss-cpu venv under the Python cache (created when missing).
fn resolve_python(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    crate::pyvenv::faiss_cpu_python(given, "simd", "; pass --python with faiss-cpu installed, or --no-faiss-cpu")
}

fn median_and_best(rounds: &[Round]) -> Option<(Round, Round)> {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.qps.total_cmp(&b.qps));
    let median = *sorted.get(sorted.len() / 2)?;
    Some((median, *sorted.last()?))
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &BenchSimdArgs,
    rows: usize,
    nq: usize,
    build_all: Duration,
    cores: usize,
    levels: &[SimdLevel],
    ours: &[Vec<Round>],
    pypi: Option<&FaissCpuRun>,
    builds: &[(usize, Duration)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "HNSW M={} efConstruction={} IP over {rows} rows × {} dims; efSearch {}, k {}, {nq} queries one per call, \
         1 thread; {} rounds of turns, one index (built in {:.1} s with {cores} threads on {}) read by every contender.\n",
        args.m,
        args.ef_construction,
        args.dataset.display(),
        args.ef,
        args.k,
        args.rounds,
        build_all.as_secs_f64(),
        SimdLevel::best(),
    );
    let _ = writeln!(
        s,
        "| contender | QPS (median round) | p50 µs | p99 µs | best round QPS | recall@{} | vs generic |",
        args.k
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let generic = ours.first().and_then(|r| median_and_best(r)).map(|(m, _)| m.p50_us);
    let mut row = |name: String, rounds: &[Round]| {
        if let Some((m, best)) = median_and_best(rounds) {
            let ratio = generic.map_or("—".to_string(), |g| format!("{:.2}× faster", g / m.p50_us.max(1e-9)));
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.4} | {ratio} |",
                m.qps, m.p50_us, m.p99_us, best.qps, m.recall
            );
        }
    };
    for (level, rounds) in levels.iter().zip(ours) {
        row(format!("Quiver faiss 1.12, {level}"), rounds);
    }
    if let Some(p) = pypi {
        row(format!("faiss-cpu {} (PyPI; {})", p.version, p.compile_options.trim()), &p.rounds);
    }
    if !builds.is_empty() {
        let _ = writeln!(
            s,
            "\nHNSW build (train + add) of the first {} rows on {}, by OpenMP threads:\n",
            args.build_rows.min(rows),
            SimdLevel::best()
        );
        let _ = writeln!(s, "| threads | build s | speed-up |");
        let _ = writeln!(s, "|---|---|---|");
        let one = builds.first().map(|b| b.1.as_secs_f64());
        for (threads, took) in builds {
            let up = one.map_or(1.0, |o| o / took.as_secs_f64().max(1e-9));
            let _ = writeln!(s, "| {threads} | {:.1} | {up:.2}× |", took.as_secs_f64());
        }
    }
    s
}
