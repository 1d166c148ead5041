//! `quiver-bench filter`: filtered vector search on the shared dataset, in process, one query per
//! call on one thread: the query node's filtered path ([`search_allowed`]: the filter's bitmap
//! as the faiss ID selector, or an exact scan when few rows match) against raw faiss searching
//! with the same bitmap selector on the same index, and the unfiltered faiss search as the
//! reference. The filter is evaluated once per filter, as the query node's filter cache does,
//! and each call copies the bitmap, as the node does to mask deletes; only the cache lookup (a
//! lock and a string comparison) is not timed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use quiver_actors::filter::{evaluate, search_allowed, SegmentVectors};
use quiver_actors::rows::RowStore;
use quiver_actors::vector::{set_faiss_threads, VectorIndex};
use quiver_client::{
    CollectionSchema, Column, DataType, FieldSchema, IndexParams, IndexType, MetricType, PrimaryKey, ScalarValue,
    SearchParams,
};

use quiver_client::fvecs::read_fvecs;

#[derive(Args)]
pub struct BenchFilterArgs {
    /// Dataset directory (base.fvecs, base.tsv, query.fvecs).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Base rows in the one segment searched.
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Query vectors (each searched once per filter and method).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// HNSW efSearch.
    #[arg(long, default_value_t = 64)]
    ef: u32,
    /// Filters to measure (Milvus expressions over `id`, `n` = row number, `name`, `summary`).
    #[arg(long, num_args = 1.., default_values_t = [
        "n % 2 == 0".to_string(),
        "n % 10 == 0".to_string(),
        "n % 100 == 0".to_string(),
        "name like \"py%\"".to_string(),
        "summary like \"%database%\"".to_string(),
        "n < 15000 and (name like \"%django%\" or summary like \"%web%\")".to_string(),
    ])]
    filters: Vec<String>,
}

struct Measured {
    p50_us: f64,
    p99_us: f64,
    qps: f64,
    recall: f64,
}

fn measure(
    queries: &[f32],
    dim: usize,
    truth: &[Vec<i64>],
    mut run: impl FnMut(&[f32]) -> anyhow::Result<Vec<i64>>,
) -> anyhow::Result<Measured> {
    let mut lat = Vec::with_capacity(truth.len());
    let mut hits = 0usize;
    let mut wanted = 0usize;
    let started = Instant::now();
    for (q, gt) in queries.chunks_exact(dim).zip(truth) {
        let t = Instant::now();
        let got = run(q)?;
        lat.push(t.elapsed());
        hits += got.iter().filter(|l| **l >= 0 && gt.contains(l)).count();
        wanted += gt.len();
    }
    let total = started.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied();
    let us = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    Ok(Measured {
        p50_us: us(pct(0.5)),
        p99_us: us(pct(0.99)),
        qps: lat.len() as f64 / total.as_secs_f64().max(1e-9),
        recall: if wanted == 0 { 1.0 } else { hits as f64 / wanted as f64 },
    })
}

/// Exact top-k by inner product among the allowed rows.
fn exact_top_k(base: &[f32], dim: usize, allowed: &[usize], q: &[f32], k: usize) -> Vec<i64> {
    let mut scored: Vec<(f32, usize)> =
        allowed.iter().map(|&r| (base[r * dim..(r + 1) * dim].iter().zip(q).map(|(a, b)| a * b).sum(), r)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, r)| r as i64).collect()
}

pub fn bench_filter(args: BenchFilterArgs) -> anyhow::Result<()> {
    set_faiss_threads(1);
    let (dim, base) = read_fvecs(&args.dataset.join("base.fvecs"), args.rows)?;
    let n = base.len() / dim;
    let (qdim, queries) = read_fvecs(&args.dataset.join("query.fvecs"), args.queries)?;
    if qdim != dim {
        return Err(anyhow!("query dimension {qdim} differs from base dimension {dim}"));
    }
    let tsv = std::fs::read_to_string(args.dataset.join("base.tsv")).context("cannot read base.tsv")?;
    let (mut names, mut summaries) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for line in tsv.lines().take(n) {
        let (name, summary) = line.split_once('\t').unwrap_or((line, ""));
        names.push(ScalarValue::VarChar(name.to_string()));
        summaries.push(ScalarValue::VarChar(summary.to_string()));
    }
    let rows = RowStore {
        partitions: Default::default(),
        dim,
        pks: (0..n as i64).map(PrimaryKey::Int64).collect(),
        seqs: vec![1; n],
        vectors: base.clone(),
        columns: vec![
            Column { name: "n".into(), values: (0..n as i64).map(ScalarValue::Int64).collect() },
            Column { name: "name".into(), values: names },
            Column { name: "summary".into(), values: summaries },
        ],
        dynamic: Vec::new(),
    };
    let field = |name: &str, data_type| FieldSchema {
        name: name.into(),
        data_type,
        is_primary: name == "id",
        auto_id: false,
        dim: if data_type == DataType::FloatVector { dim as u32 } else { 0 },
        max_length: 0,
        description: String::new(),
    };
    let schema = CollectionSchema {
        name: "bench".into(),
        description: String::new(),
        fields: vec![
            field("id", DataType::Int64),
            field("vector", DataType::FloatVector),
            field("n", DataType::Int64),
            field("name", DataType::VarChar),
            field("summary", DataType::VarChar),
        ],
        enable_dynamic_field: false,
        num_shards: 1,
        consistency: Default::default(),
    };
    let params = IndexParams {
        index_type: IndexType::Hnsw,
        metric: MetricType::Ip,
        nlist: 0,
        m: 16,
        nbits: 0,
        ef_construction: 200,
        auto: false,
        name: String::new(),
    };
    eprintln!("building HNSW M16 efC200 IP over {n} rows of {dim} dimensions…");
    let built = Instant::now();
    let index = VectorIndex::build(&params, dim, &base)?;
    eprintln!("built in {:.1}s", built.elapsed().as_secs_f64());
    // An indexed sealed segment as the query node holds it (no brute-force structure).
    let seg = SegmentVectors { rows: &rows, index: Some(&index), flat: None };
    let sp = SearchParams { nprobe: 0, ef: args.ef };
    let k = args.k;
    let nq = queries.len() / dim;

    println!("quiver-bench filter: {n} rows × {dim}, {nq} queries, k={k}, HNSW M16 efC200 IP ef={}, 1 thread", args.ef);
    println!(
        "{:<58} {:>8} {:>9} | {:>27} | {:>27}",
        "filter", "match", "eval µs", "raw faiss + bitmap: p50 p99 QPS recall", "Quiver filtered: p50 p99 QPS recall"
    );
    let all: Vec<usize> = (0..n).collect();
    let truth: Vec<Vec<i64>> = queries.chunks_exact(dim).map(|q| exact_top_k(&base, dim, &all, q, k)).collect();
    let plain = measure(&queries, dim, &truth, |q| Ok(index.search(q, k, &sp)?.1))?;
    println!(
        "{:<58} {:>8} {:>9} | {:>7.0} {:>7.0} {:>6.0} {:>5.3} |",
        "(no filter: faiss search)", n, "-", plain.p50_us, plain.p99_us, plain.qps, plain.recall
    );
    for text in &args.filters {
        let expr = quiver_client::expr::parse(text, &schema).map_err(|e| anyhow!("{e}"))?;
        let t = Instant::now();
        let bitmap = evaluate(&expr, &rows);
        let eval_us = t.elapsed().as_secs_f64() * 1e6;
        let allowed: Vec<usize> = bitmap.ones().collect();
        let truth: Vec<Vec<i64>> = queries.chunks_exact(dim).map(|q| exact_top_k(&base, dim, &allowed, q, k)).collect();
        let raw = measure(&queries, dim, &truth, |q| Ok(index.search_selected(q, k, &sp, bitmap.as_bytes())?.1))?;
        let ours = measure(&queries, dim, &truth, |q| {
            let allowed = bitmap.clone();
            Ok(search_allowed(&seg, &allowed, q, k, &sp, MetricType::Ip)?.1)
        })?;
        println!(
            "{:<58} {:>8} {:>9.0} | {:>7.0} {:>7.0} {:>6.0} {:>5.3} | {:>7.0} {:>7.0} {:>6.0} {:>5.3}",
            text,
            allowed.len(),
            eval_us,
            raw.p50_us,
            raw.p99_us,
            raw.qps,
            raw.recall,
            ours.p50_us,
            ours.p99_us,
            ours.qps,
            ours.recall
        );
    }
    Ok(())
}
