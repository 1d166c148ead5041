//! Segment files as a query node reads them from the object store (`rows::decode_segment`):
//! arbitrary bytes must be refused or decode into rows that everything downstream can use
//! without panicking (key index, output columns, get-by-key batches, filters, brute-force
//! search), and a decoded segment must re-encode to one that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_actors::filter::evaluate;
use quiver_actors::rows::{decode_segment, encode_segment};
use quiver_actors::vector::FlatVectors;
use quiver_fuzz::{fixtures, same_debug};
use quiver_schemas::MetricType;

fuzz_target!(|data: &[u8]| {
    let Ok((info, rows)) = decode_segment(data) else { return };
    let n = rows.len();
    let all: Vec<usize> = (0..n).collect();
    let mut names: Vec<String> = rows.columns.iter().map(|c| c.name.clone()).collect();
    names.extend(["$meta".to_string(), "k".to_string()]);
    let _ = rows.pk_index();
    let _ = rows.output_columns(&all, &names);
    let _ = rows.to_batch(&all, &names);
    let _ = rows.slice(0, n);
    let _ = rows.slice(n / 2, n);
    let _ = rows.mem_bytes();
    let schema = fixtures::schema();
    for text in ["i > 0 or s like \"a%\"", "meta[\"a\"] == 1 and not flag", "k in [1, 2] or exists o[\"p\"]"] {
        if let Ok(expr) = quiver_schemas::expr::parse(text, &schema) {
            assert_eq!(evaluate(&expr, &rows).len(), n);
        }
    }
    if rows.dim > 0 && rows.dim <= 4096 {
        if let Ok(flat) = FlatVectors::from_vec(rows.dim, MetricType::L2, rows.vectors.clone()) {
            let query = vec![0.5; rows.dim];
            let _ = flat.search(&query, 3, &|_| false);
        }
    }
    let bytes = encode_segment(&info, &rows).unwrap_or_else(|e| panic!("a decoded segment cannot be re-encoded: {e}"));
    let (info2, rows2) = decode_segment(&bytes).unwrap_or_else(|e| panic!("a re-encoded segment does not decode: {e}"));
    same_debug("segment info", &info, &info2);
    same_debug("segment rows", &rows, &rows2);
});
