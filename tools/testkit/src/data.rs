//! Test data: slices of the pypi-minilm dataset (real 384-d sentence embeddings, L2-normalised,
//! so inner product = cosine), exact ground truth by brute force, recall, and small client
//! helpers shared by the tests. Row `i` of the base file is always inserted with key `i`.
//!
//! Like the harness, these fail the calling test (panic) instead of returning errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use quiver_client::{
    fvecs, schema, Client, Consistency, Distribution, IndexParams, IndexType, MetricType, PrimaryKey, Query,
    ScalarValue, Search, SearchParams, SearchResults, SegmentState,
};

use crate::harness::{eventually, retry};

/// Base rows loaded from the dataset (all of it: 100k × 384).
pub const BASE_ROWS: usize = 100_000;
/// Query rows loaded from the dataset.
pub const QUERY_ROWS: usize = 100;

pub struct Dataset {
    pub dim: usize,
    /// `BASE_ROWS × dim`, row-major.
    pub base: Vec<f32>,
    /// `QUERY_ROWS × dim`, row-major.
    pub queries: Vec<f32>,
}

impl Dataset {
    pub fn dim32(&self) -> u32 {
        self.dim as u32
    }

    /// Base rows `[start, end)` as one flat vector.
    pub fn rows(&self, start: usize, end: usize) -> Vec<f32> {
        self.base[start * self.dim..end * self.dim].to_vec()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.base[i * self.dim..(i + 1) * self.dim]
    }

    /// The first `n` queries as one flat vector.
    pub fn queries(&self, n: usize) -> Vec<f32> {
        self.queries[..n * self.dim].to_vec()
    }
}

/// `QUIVER_IT_DATASET`, else `shared/datasets/pypi-minilm` beside the repository this crate
/// was compiled in (two levels above it), else beside the one the tests run in (the working
/// directory or a folder above it): a target directory shared by two clones may hold this
/// crate compiled in the other one.
fn dataset_dir() -> PathBuf {
    const SHARED: &str = "shared/datasets/pypi-minilm";
    if let Some(dir) = std::env::var_os("QUIVER_IT_DATASET") {
        return PathBuf::from(dir);
    }
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..").join(SHARED);
    if compiled.exists() {
        return compiled;
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors().map(|d| d.join(SHARED)).find(|d| d.exists()).unwrap_or(compiled)
}

/// Exactly `rows` rows of a TEXMEX `.fvecs` file.
fn read_fvecs(path: &std::path::Path, rows: usize) -> (usize, Vec<f32>) {
    let (dim, out) = fvecs::read_fvecs(path, rows).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), rows * dim, "{} has fewer than {rows} rows", path.display());
    (dim, out)
}

/// The shared dataset slice (loaded once per test binary).
pub fn dataset() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = dataset_dir();
        let (dim, base) = read_fvecs(&dir.join("base.fvecs"), BASE_ROWS);
        let (qdim, queries) = read_fvecs(&dir.join("query.fvecs"), QUERY_ROWS);
        assert_eq!(dim, qdim);
        Dataset { dim, base, queries }
    })
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact top-`k` of each query over base rows `0..n` by inner product: `(key, score)`, best first.
pub fn exact_top_k(n: usize, queries: &[f32], k: usize) -> Vec<Vec<(i64, f32)>> {
    let ds = dataset();
    queries
        .chunks_exact(ds.dim)
        .map(|q| {
            let mut scored: Vec<(i64, f32)> = (0..n).map(|i| (i as i64, dot(q, ds.row(i)))).collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            scored.truncate(k);
            scored
        })
        .collect()
}

/// recall@k of `results` against `truth` (from [`exact_top_k`]). A hit counts when its key is
/// in the exact top-k, or when its exact score ties the k-th best (within 1e-5), so ties at
/// the boundary do not count as misses. Keys are base row numbers.
pub fn recall(results: &SearchResults, queries: &[f32], truth: &[Vec<(i64, f32)>], k: usize) -> f64 {
    let ds = dataset();
    assert_eq!(results.results.len(), truth.len(), "one result list per query");
    let mut good = 0usize;
    for (q, (hits, exact)) in results.results.iter().zip(truth).enumerate() {
        let query = &queries[q * ds.dim..(q + 1) * ds.dim];
        let kth = exact[k - 1].1;
        let mut seen = std::collections::HashSet::new();
        for pk in hits.pks.iter().take(k) {
            let PrimaryKey::Int64(id) = pk else { panic!("unexpected key {pk:?}") };
            if !seen.insert(*id) {
                continue;
            }
            let in_truth = exact.iter().any(|(t, _)| t == id);
            let ties = (*id as usize) < ds.base.len() / ds.dim && dot(query, ds.row(*id as usize)) >= kth - 1e-5;
            if in_truth || ties {
                good += 1;
            }
        }
    }
    good as f64 / (truth.len() * k) as f64
}

/// A top-k search with explicit knobs.
pub fn search(collection: &str, queries: Vec<f32>, k: u32, params: SearchParams, consistency: Consistency) -> Search {
    let mut s = schema::search(collection, dataset().dim32(), queries, k);
    s.params = params;
    s.consistency = consistency;
    s
}

/// Index parameters.
pub fn index(index_type: IndexType, metric: MetricType, nlist: u32, m: u32, ef_construction: u32) -> IndexParams {
    IndexParams { index_type, metric, nlist, m, nbits: 0, ef_construction, auto: false, name: String::new() }
}

/// Inserts base rows `[start, end)` with keys = row numbers, `batch` rows per call.
pub async fn insert_rows(client: &Client, collection: &str, start: usize, end: usize, batch: usize) {
    let ds = dataset();
    let mut at = start;
    while at < end {
        let to = (at + batch).min(end);
        let rows = schema::rows(at as i64..to as i64, ds.dim32(), ds.rows(at, to));
        let res = retry("insert", Duration::from_secs(10), || client.insert(collection, rows.clone())).await;
        assert_eq!(res.pks.len(), to - at, "insert acknowledged every row");
        at = to;
    }
}

/// Creates `schema::simple(name, dim)` (retrying while the cluster is still coming up).
pub async fn create_simple(client: &Client, name: &str) {
    let dim = dataset().dim32();
    retry("create_collection", Duration::from_secs(10), || client.create_collection(schema::simple(name, dim))).await;
}

/// `count(*)` of a collection with Strong consistency (retrying what the client calls
/// retryable for up to 30 s, e.g. right after a restart).
pub async fn count(client: &Client, collection: &str) -> i64 {
    let q = Query {
        partitions: Default::default(),
        collection: collection.into(),
        filter: String::new(),
        output_fields: vec!["count(*)".into()],
        limit: 0,
        offset: 0,
        consistency: Consistency::Strong,
    };
    let rows = retry("count(*)", Duration::from_secs(30), || client.query(&q)).await;
    match rows.rows.columns.first().map(|c| c.values.as_slice()) {
        Some([ScalarValue::Int64(n)]) => *n,
        other => panic!("count(*) of {collection} answered {other:?}"),
    }
}

/// `n` pseudo-random vectors of `dim` components in [-0.5, 0.5) (xorshift from `seed`): rows
/// of any dimension without the dataset, e.g. large ones that fill memory fast.
pub fn noise(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Flushes (retrying what the client calls retryable for up to 20 s: a flush waits up to 10 s
/// for a data node itself, and a cluster can take longer to start); returns the new segments.
pub async fn flush(client: &Client, collection: &str) -> Vec<u64> {
    retry("flush", Duration::from_secs(20), || client.flush(collection)).await.segments
}

/// Waits until the served layout covers `rows` rows in sealed segments, all in state `state`.
pub async fn wait_segments(
    client: &Client,
    collection: &str,
    rows: u64,
    state: SegmentState,
    limit: Duration,
) -> Distribution {
    eventually(&format!("{collection}: {rows} rows in {state:?} segments"), limit, || async {
        let d = client.distribution(collection).await.map_err(|e| e.to_string())?;
        let served: u64 = d.segments.iter().map(|s| s.segment.rows).sum();
        let states: Vec<SegmentState> = d.segments.iter().map(|s| s.segment.state).collect();
        if served == rows && states.iter().all(|s| *s == state) {
            Ok(d)
        } else {
            Err(format!("{served} rows served, states {states:?}"))
        }
    })
    .await
}
