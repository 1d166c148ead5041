//! `quiver-bench scalar-index`: what a scalar index saves a query node on a selective filter,
//! in process, one thread. One sealed segment of the shared dataset's rows (`id` = row number
//! as VectorDBBench's int filter field, `name` = the package name); per filter, each call uses
//! another value (`{v}` in the template), so the node's filter cache never answers. Measured
//! per call: the filter's row bitmap by the row-by-row evaluator and with the segment's scalar
//! indexes (STL_SORT on `id`, INVERTED on `name`), checked equal; and the whole filtered
//! search of a segment (bitmap + top-k of the matching rows, [`search_allowed`] over the
//! segment's brute-force structure) with each.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use quiver_actors::filter::{evaluate, evaluate_indexed, search_allowed, Bitmap, SegmentIndexes, SegmentVectors};
use quiver_actors::rows::RowStore;
use quiver_actors::vector::{set_faiss_threads, FlatVectors};
use quiver_client::fvecs::read_fvecs;
use quiver_client::{
    CollectionSchema, Column, DataType, FieldSchema, MetricType, PrimaryKey, ScalarIndex, ScalarIndexType, ScalarValue,
    SearchParams,
};

#[derive(Args)]
pub struct BenchScalarIndexArgs {
    /// Dataset directory (base.fvecs, base.tsv, query.fvecs).
    #[arg(long, default_value = "../shared/datasets/pypi-minilm")]
    dataset: PathBuf,
    /// Rows of the one segment.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Calls per filter (each with another value, each with another query vector).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Filter templates: `{v}` becomes a row number drawn per call, `{name}` that row's name.
    #[arg(long, num_args = 1.., default_values_t = [
        "id >= {v}".to_string(),
        "id == {v}".to_string(),
        "id in [{v}, 17, 4242, 99999]".to_string(),
        "{v} <= id < {v} + 1000".to_string(),
        "name == \"{name}\"".to_string(),
        "id >= {v} and name like \"py%\"".to_string(),
        "id >= {v} or name == \"{name}\"".to_string(),
    ])]
    filters: Vec<String>,
}

/// p50 and mean of `lat`, in µs.
fn summary(mut lat: Vec<Duration>) -> (f64, f64) {
    lat.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = lat.get(lat.len() / 2).copied().map_or(0.0, us);
    let mean = lat.iter().map(|d| us(*d)).sum::<f64>() / lat.len().max(1) as f64;
    (p50, mean)
}

pub fn bench_scalar_index(args: BenchScalarIndexArgs) -> anyhow::Result<()> {
    set_faiss_threads(1);
    let (dim, base) = read_fvecs(&args.dataset.join("base.fvecs"), args.rows)?;
    let n = base.len() / dim;
    let (_, queries) = read_fvecs(&args.dataset.join("query.fvecs"), args.calls)?;
    let tsv = std::fs::read_to_string(args.dataset.join("base.tsv"))?;
    let names: Vec<String> =
        tsv.lines().take(n).map(|l| l.split_once('\t').map_or(l, |(name, _)| name).to_string()).collect();
    // `id`: the row number in a shuffled order, so matching rows are spread over the segment.
    let mut ids: Vec<i64> = (0..n as i64).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..ids.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let rows = RowStore {
        partitions: Default::default(),
        dim,
        pks: (0..n as i64).map(PrimaryKey::Int64).collect(),
        seqs: vec![1; n],
        vectors: base.clone(),
        columns: vec![
            Column { name: "id".into(), values: ids.iter().map(|&i| ScalarValue::Int64(i)).collect() },
            Column { name: "name".into(), values: names.iter().map(|s| ScalarValue::VarChar(s.clone())).collect() },
        ],
        dynamic: Vec::new(),
    };
    let field = |name: &str, data_type| FieldSchema {
        name: name.into(),
        data_type,
        is_primary: name == "pk",
        auto_id: false,
        dim: if data_type == DataType::FloatVector { dim as u32 } else { 0 },
        max_length: 0,
        description: String::new(),
    };
    let schema = CollectionSchema {
        name: "bench".into(),
        description: String::new(),
        fields: vec![
            field("pk", DataType::Int64),
            field("vector", DataType::FloatVector),
            field("id", DataType::Int64),
            field("name", DataType::VarChar),
        ],
        enable_dynamic_field: false,
        num_shards: 1,
        consistency: Default::default(),
    };
    let defined = [
        ScalarIndex {
            name: "id_sort_idx".into(),
            field: "id".into(),
            index_type: ScalarIndexType::StlSort,
            params: vec![],
        },
        ScalarIndex {
            name: "name_idx".into(),
            field: "name".into(),
            index_type: ScalarIndexType::Inverted,
            params: vec![],
        },
    ];
    let built = Instant::now();
    let indexes = SegmentIndexes::build(&rows, &defined, "pk");
    let build_ms = built.elapsed().as_secs_f64() * 1e3;
    let none = SegmentIndexes::default();
    let flat = FlatVectors::from_vec(dim, MetricType::Ip, base.clone()).map_err(|e| anyhow!("{e}"))?;
    let seg = SegmentVectors { rows: &rows, index: None, flat: Some(&flat) };
    let sp = SearchParams { nprobe: 0, ef: 64 };

    println!(
        "quiver-bench scalar-index: one segment of {n} rows × {dim}, {} calls per filter (a new value each), \
         k={}, 1 thread; indexes built in {build_ms:.1} ms",
        args.calls, args.k
    );
    println!(
        "{:<44} {:>8} | {:>21} {:>21} {:>7} | {:>23} {:>23} {:>7}",
        "filter", "match", "bitmap µs p50/mean", "indexed p50/mean", "×", "search µs p50/mean", "indexed p50/mean", "×"
    );
    let value = |call: usize| ((call as u64 * 2_654_435_761) % n as u64) as usize;
    for template in &args.filters {
        let mut plain = (Vec::new(), Vec::new());
        let mut indexed = (Vec::new(), Vec::new());
        let mut matched = 0usize;
        for call in 0..args.calls {
            let v = value(call);
            // `id >= {v}` over the top 1% of ids: VectorDBBench's selective int filter.
            let v_num = if template.starts_with("id >=") { n - 1 - v % (n / 100).max(1) } else { v };
            let text = template.replace("{v}", &v_num.to_string()).replace("{name}", &names[v]);
            let expr = quiver_client::expr::parse(&text, &schema).map_err(|e| anyhow!("{e}"))?;
            let q = queries.chunks_exact(dim).nth(call % (queries.len() / dim).max(1)).unwrap_or(&[]);
            for (with, out) in [(&none, &mut plain), (&indexes, &mut indexed)] {
                let t = Instant::now();
                let bitmap: Bitmap = evaluate_indexed(&expr, &rows, with);
                out.0.push(t.elapsed());
                search_allowed(&seg, &bitmap, q, args.k, &sp, MetricType::Ip)?;
                out.1.push(t.elapsed());
            }
            let want = evaluate(&expr, &rows);
            let got = evaluate_indexed(&expr, &rows, &indexes);
            if got != want {
                return Err(anyhow!("{text}: the indexed answer differs from the row-by-row one"));
            }
            matched += want.count_ones();
        }
        let (bp, bm) = summary(plain.0);
        let (ip, im) = summary(indexed.0);
        let (sp50, sm) = summary(plain.1);
        let (sip, sim) = summary(indexed.1);
        println!(
            "{:<44} {:>8} | {:>10.0} {:>10.0} {:>10.1} {:>10.1} {:>7.1} | {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>7.1}",
            template,
            matched / args.calls.max(1),
            bp,
            bm,
            ip,
            im,
            bm / im.max(1e-9),
            sp50,
            sm,
            sip,
            sim,
            sm / sim.max(1e-9)
        );
    }
    Ok(())
}
