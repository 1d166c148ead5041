//! Shared pieces of Quiver's fuzz targets (docs/fuzzing.md):
//!
//! - [`fixtures`]: the fixed collection, schema and rows the targets run against;
//! - [`reference`]: a deliberately simple filter evaluator, the oracle the real one
//!   (`quiver_actors::filter::evaluate`) is compared with row by row;
//! - [`structured`]: filter expressions built from fuzzer bytes (`arbitrary`) and rendered to
//!   filter text, so the parser and evaluator see mostly valid, deep input;
//! - [`same_debug`]: the round-trip comparison (by `Debug` text, so NaN equals NaN).

pub mod fixtures;
pub mod reference;
pub mod structured;

/// Panics (a fuzz finding) when `a` and `b` differ, printing both: used for round trips, where
/// `PartialEq` would call two NaNs different.
pub fn same_debug<T: std::fmt::Debug>(what: &str, a: &T, b: &T) {
    let (x, y) = (format!("{a:?}"), format!("{b:?}"));
    if x != y {
        panic!("{what}: round trip changed the value\n before: {x}\n after:  {y}");
    }
}

/// The `filter` targets' check of one filter text: whatever parses must survive the JSON trip
/// to the query nodes unchanged, and the real evaluator must agree with [`reference`] on every
/// fixture row, with `filter::matches`, and with the primary-key fast path.
pub fn check_filter(text: &str) {
    use quiver_actors::filter::{evaluate, matches};
    use quiver_schemas::expr::{parse, Expr};
    use std::sync::OnceLock;

    static FIXTURE: OnceLock<(quiver_schemas::CollectionSchema, quiver_actors::rows::RowStore)> = OnceLock::new();
    let (schema, rows) = FIXTURE.get_or_init(|| (fixtures::schema(), fixtures::rows()));
    let Ok(expr) = parse(text, schema) else { return };
    // The proxy sends the parsed filter to query nodes as JSON.
    let json =
        serde_json::to_string(&expr).unwrap_or_else(|e| panic!("filter {text:?}: cannot serialize {expr:?}: {e}"));
    let back: Expr = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("filter {text:?}: its JSON form {json} does not read back: {e}"));
    assert_eq!(back, expr, "filter {text:?}: JSON round trip changed the expression ({json})");
    let bitmap = evaluate(&back, rows);
    assert_eq!(bitmap.len(), rows.len());
    for row in 0..rows.len() {
        let want = reference::eval(&expr, rows, row);
        if bitmap.get(row) != (want == Some(true)) {
            panic!(
                "filter {text:?} on row {row}: evaluate says {}, the reference says {want:?}\n expr: {expr:?}",
                bitmap.get(row)
            );
        }
        assert_eq!(matches(&expr, rows, row), bitmap.get(row), "filter {text:?}: matches() differs on row {row}");
    }
    assert_eq!(bitmap.count_ones(), bitmap.ones().count());
    if let Some(keys) = expr.primary_keys() {
        for (row, pk) in rows.pks.iter().enumerate() {
            assert_eq!(
                keys.contains(pk),
                bitmap.get(row),
                "filter {text:?}: the primary-key fast path ({keys:?}) and evaluate disagree on row {row} ({pk:?})"
            );
        }
    }
}
