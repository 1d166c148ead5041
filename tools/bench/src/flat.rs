//! `quiver-bench flat`: brute-force search of rows that have no index yet (growing rows and
//! sealed segments whose index is not built), in process on one thread: the query node's
//! kernel ([`FlatVectors::search`]) against raw faiss `IndexFlat` (through [`VectorIndex`],
//! FLAT) on the same rows and queries, for single queries and for batches. Both run with one
//! OpenMP / BLAS thread, as each task of the query node's search pool does. The top-k of both
//! is compared (the share of Quiver's hits that faiss returns too).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;
use quiver_actors::vector::{set_faiss_threads, FlatVectors, VectorIndex};
use quiver_client::fvecs::read_fvecs;
use quiver_client::schema;
use quiver_client::SearchParams;

#[derive(Args)]
pub struct BenchFlatArgs {
    /// Dataset directory (base.fvecs, query.fvecs).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Base rows searched.
    #[arg(long, default_value_t = 50_000)]
    rows: usize,
    /// Queries per search call to measure, comma separated (queries beyond query.fvecs repeat it).
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    nq: Vec<usize>,
    /// Queries measured in total per batch size (at least one call).
    #[arg(long, default_value_t = 2000)]
    total: usize,
    /// IP, L2 or COSINE.
    #[arg(long, default_value = "IP")]
    metric: String,
    #[arg(short, long, default_value_t = 10)]
    k: usize,
}

/// Per-call timings of one method at one batch size.
struct Timed {
    ms_per_call: f64,
    us_per_query: f64,
    labels: Vec<i64>,
}

fn time_calls(
    queries: &[f32],
    dim: usize,
    nq: usize,
    calls: usize,
    mut search: impl FnMut(&[f32]) -> anyhow::Result<Vec<i64>>,
) -> anyhow::Result<Timed> {
    let available = queries.len() / dim;
    let mut labels = Vec::new();
    let mut took = Vec::with_capacity(calls);
    for c in 0..calls {
        let batch: Vec<f32> =
            (0..nq).flat_map(|i| queries[((c * nq + i) % available) * dim..][..dim].iter().copied()).collect();
        let t0 = Instant::now();
        let l = search(&batch)?;
        took.push(t0.elapsed().as_secs_f64());
        if c == 0 {
            labels = l;
        }
    }
    took.sort_by(f64::total_cmp);
    let median = took[took.len() / 2];
    Ok(Timed { ms_per_call: median * 1e3, us_per_query: median * 1e6 / nq as f64, labels })
}

pub fn bench_flat(args: BenchFlatArgs) -> anyhow::Result<()> {
    set_faiss_threads(1);
    let (dim, base) = read_fvecs(&args.dataset.join("base.fvecs"), args.rows)?;
    let n = base.len() / dim;
    let (qdim, queries) = read_fvecs(&args.dataset.join("query.fvecs"), 1000)?;
    if qdim != dim || queries.is_empty() {
        return Err(anyhow!("query dimension {qdim} differs from base dimension {dim}, or no queries"));
    }
    let params = schema::index_named("FLAT", &args.metric)?;
    let flat = FlatVectors::from_vec(dim, params.metric, base.clone())?;
    let t0 = Instant::now();
    let index = VectorIndex::build(&params, dim, &base)?;
    let built = t0.elapsed();
    let k = args.k;
    println!("## Brute force: {n} rows × {dim}, {}, k = {k}, one thread\n", args.metric);
    println!("- faiss IndexFlat built in {:.2} s; median of the calls; 'same hits' = share of Quiver's top-{k} that faiss returns too", built.as_secs_f64());
    println!();
    println!("| nq per call | calls | Quiver FlatVectors ms/call | µs/query | raw faiss IndexFlat ms/call | µs/query | Quiver / faiss time | same hits |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &nq in &args.nq {
        if nq == 0 {
            return Err(anyhow!("--nq needs positive batch sizes"));
        }
        let calls = args.total.div_ceil(nq).max(1);
        let ours = time_calls(&queries, dim, nq, calls, |q| Ok(flat.search(q, k, &|_| false).1))?;
        let sp = SearchParams::default();
        let raw = time_calls(&queries, dim, nq, calls, |q| Ok(index.search(q, k, &sp)?.1))?;
        let same: usize = ours
            .labels
            .chunks(k)
            .zip(raw.labels.chunks(k))
            .map(|(a, b)| a.iter().filter(|l| **l >= 0 && b.contains(l)).count())
            .sum();
        println!(
            "| {nq} | {calls} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.3} |",
            ours.ms_per_call,
            ours.us_per_query,
            raw.ms_per_call,
            raw.us_per_query,
            ours.ms_per_call / raw.ms_per_call,
            same as f64 / ours.labels.len().max(1) as f64,
        );
    }
    Ok(())
}
