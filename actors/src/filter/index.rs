//! Scalar-field indexes of one sealed segment, and answering filters with them.
//!
//! A Milvus client defines them per field (`STL_SORT`, `INVERTED`, `BITMAP`, `Trie`,
//! `AUTOINDEX`; [`quiver_schemas::ScalarIndex`]); a query node builds them for each sealed
//! segment when it loads (and when an index is defined on a loaded collection). One structure
//! serves every type: the field's distinct values in ascending order, each with its rows —
//! for `STL_SORT` that is the segment's sorted permutation (rows in value order, runs of equal
//! values), for `INVERTED`/`BITMAP`/`Trie` each value's posting list. A lookup is a binary
//! search over the distinct values, so `field == v`, `field in [..]`, ranges, `!=` and
//! `like "pre%"` cost O(log distinct + matching rows) instead of a pass over every row.
//!
//! [`evaluate_indexed`] answers the parts of a filter the indexes cover exactly (comparisons
//! with a literal, `in` lists, `like`, and `and`/`or` of those) and evaluates the rest of a
//! top-level `and` row by row over the rows the indexed parts left. Its answer is always the
//! one [`super::evaluate`] gives: values the indexes leave out (null, NaN) are the values no
//! comparison selects, literals are rounded to f32 for `Float` fields as the evaluator
//! rounds them, and a field whose values are not all of one kind is not indexed at all.
//! JSON fields and dynamic keys are not indexed (their definitions are kept, unused).

use std::cmp::Ordering;

use quiver_schemas::expr::{CmpOp, Expr, Field, LikePattern, Operand, Value};
use quiver_schemas::{PrimaryKey, ScalarIndex, ScalarIndexType, ScalarValue};

use super::{evaluate, evaluate_among, kind, literal, order, Bitmap, Val};
use crate::rows::RowStore;

/// One distinct value of an indexed field.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

impl Term {
    fn val(&self) -> Val<'_> {
        match self {
            Term::Bool(b) => Val::Bool(*b),
            Term::Int(i) => Val::Int(*i),
            Term::Float(f) => Val::Float(*f),
            Term::Str(s) => Val::Str(s),
        }
    }

    /// The term of a stored value; `None` for values no comparison selects (null, NaN) and
    /// for JSON.
    fn of(v: &ScalarValue) -> Option<Term> {
        match v {
            ScalarValue::Bool(b) => Some(Term::Bool(*b)),
            ScalarValue::Int64(i) => Some(Term::Int(*i)),
            ScalarValue::Float(f) if !f.is_nan() => Some(Term::Float(f64::from(*f))),
            ScalarValue::Double(f) if !f.is_nan() => Some(Term::Float(*f)),
            ScalarValue::VarChar(s) => Some(Term::Str(s.as_str().into())),
            _ => None,
        }
    }

    fn of_pk(pk: &PrimaryKey) -> Term {
        match pk {
            PrimaryKey::Int64(i) => Term::Int(*i),
            PrimaryKey::VarChar(s) => Term::Str(s.as_str().into()),
        }
    }
}

/// One field's index over one segment: distinct values ascending; the rows of `terms[i]` are
/// `rows[starts[i]..starts[i + 1]]`, ascending.
#[derive(Debug)]
pub struct FieldIndex {
    field: String,
    index_type: ScalarIndexType,
    /// The field holds `Float` (f32) values: literals compared with it are rounded to f32.
    is_f32: bool,
    terms: Vec<Term>,
    starts: Vec<u32>,
    rows: Vec<u32>,
}

impl FieldIndex {
    /// Indexes `values` (row i holds `values[i]`); `None` when they are not all of one kind
    /// (then comparisons would not be monotone over the sorted values).
    fn build(field: &str, index_type: ScalarIndexType, is_f32: bool, values: Vec<(Term, u32)>) -> Option<FieldIndex> {
        let mut values = values;
        let first = values.first().map(|(t, _)| kind(t.val()));
        if values.iter().any(|(t, _)| Some(kind(t.val())) != first) {
            return None;
        }
        // Stable: rows stay ascending within a value.
        values.sort_by(|a, b| order(a.0.val(), b.0.val()).unwrap_or(Ordering::Equal));
        let mut index = FieldIndex {
            field: field.to_string(),
            index_type,
            is_f32,
            terms: Vec::new(),
            starts: Vec::new(),
            rows: Vec::with_capacity(values.len()),
        };
        for (term, row) in values {
            if index.terms.last() != Some(&term) {
                index.starts.push(index.rows.len() as u32);
                index.terms.push(term);
            }
            index.rows.push(row);
        }
        index.starts.push(index.rows.len() as u32);
        Some(index)
    }

    /// Rows of the terms in `range` (indexes into `terms`) set in `out`.
    fn mark(&self, range: std::ops::Range<usize>, out: &mut Bitmap) {
        let (Some(&from), Some(&to)) = (self.starts.get(range.start), self.starts.get(range.end)) else { return };
        for &row in self.rows.get(from as usize..to as usize).unwrap_or(&[]) {
            out.set(row as usize, true);
        }
    }

    /// First term not below `lit` and first term above it; `None` when `lit` does not compare
    /// with this field's values (another kind, NaN): the comparison is then unknown for every
    /// row and selects none.
    fn bounds(&self, lit: Val<'_>) -> Option<(usize, usize)> {
        order(self.terms.first()?.val(), lit)?;
        let lo = self.terms.partition_point(|t| order(t.val(), lit) == Some(Ordering::Less));
        let hi = self.terms.partition_point(|t| order(t.val(), lit) != Some(Ordering::Greater));
        Some((lo, hi))
    }

    /// The literal as the evaluator compares it with this field.
    fn literal<'v>(&self, v: &'v Value) -> Val<'v> {
        match v {
            Value::Float(f) if self.is_f32 => Val::Float(f64::from(*f as f32)),
            other => literal(other),
        }
    }

    /// Rows where `field op v` is true.
    fn compare(&self, op: CmpOp, v: &Value, out: &mut Bitmap) {
        let Some((lo, hi)) = self.bounds(self.literal(v)) else { return };
        let n = self.terms.len();
        match op {
            CmpOp::Eq => self.mark(lo..hi, out),
            CmpOp::Ne => {
                self.mark(0..lo, out);
                self.mark(hi..n, out);
            }
            CmpOp::Lt => self.mark(0..lo, out),
            CmpOp::Le => self.mark(0..hi, out),
            CmpOp::Gt => self.mark(hi..n, out),
            CmpOp::Ge => self.mark(lo..n, out),
        }
    }

    /// Rows where `field in values` is true: as the evaluator's value set, only literals of
    /// the list's kind (its first literal's) count.
    fn any_of(&self, values: &[Value], out: &mut Bitmap) {
        let Some(list_kind) = values.first().map(|v| kind(literal(v))) else { return };
        for v in values.iter().filter(|v| kind(literal(v)) == list_kind) {
            self.compare(CmpOp::Eq, v, out);
        }
    }

    /// Rows where `field like pattern` is true: the terms sharing the pattern's fixed prefix,
    /// each matched once.
    fn like(&self, pattern: &LikePattern, out: &mut Bitmap) {
        if !matches!(self.terms.first(), Some(Term::Str(_))) {
            return;
        }
        let prefix = pattern.parts.first().map(String::as_str).unwrap_or("");
        let lo = self.terms.partition_point(|t| order(t.val(), Val::Str(prefix)) == Some(Ordering::Less));
        for (i, term) in self.terms.iter().enumerate().skip(lo) {
            let Term::Str(s) = term else { break };
            if !s.starts_with(prefix) {
                break;
            }
            if pattern.matches(s) {
                self.mark(i..i + 1, out);
            }
        }
    }
}

/// The scalar indexes of one sealed segment.
#[derive(Debug, Default)]
pub struct SegmentIndexes {
    rows: usize,
    fields: Vec<FieldIndex>,
    /// The definitions these were built for (a changed list means rebuild).
    defined: Vec<ScalarIndex>,
}

impl SegmentIndexes {
    /// Builds the indexes `defined` for the rows of a segment. The primary key is indexed from
    /// the keys; fields this segment lacks, JSON fields and fields of mixed kinds are left out.
    pub fn build(rows: &RowStore, defined: &[ScalarIndex], pk_field: &str) -> SegmentIndexes {
        let mut fields = Vec::new();
        for def in defined {
            let (values, is_f32): (Vec<(Term, u32)>, bool) = if def.field == pk_field {
                (rows.pks.iter().enumerate().map(|(r, pk)| (Term::of_pk(pk), r as u32)).collect(), false)
            } else {
                let Some(column) = rows.columns.iter().find(|c| c.name == def.field) else { continue };
                if column.values.iter().any(|v| matches!(v, ScalarValue::Json(_))) {
                    continue;
                }
                let is_f32 = column.values.iter().any(|v| matches!(v, ScalarValue::Float(_)));
                let values =
                    column.values.iter().enumerate().filter_map(|(r, v)| Some((Term::of(v)?, r as u32))).collect();
                (values, is_f32)
            };
            fields.extend(FieldIndex::build(&def.field, def.index_type, is_f32, values));
        }
        SegmentIndexes { rows: rows.len(), fields, defined: defined.to_vec() }
    }

    /// Whether these were built for exactly `defined`.
    pub fn built_for(&self, defined: &[ScalarIndex]) -> bool {
        self.defined == defined
    }

    /// Fields indexed, with the kind each was defined as.
    pub fn fields(&self) -> impl Iterator<Item = (&str, ScalarIndexType)> {
        self.fields.iter().map(|f| (f.field.as_str(), f.index_type))
    }

    fn field(&self, f: &Field) -> Option<&FieldIndex> {
        let name = match f {
            Field::Pk { name, .. } | Field::Column { name, .. } => name,
            Field::Json { .. } | Field::Dynamic { .. } => return None,
        };
        self.fields.iter().find(|i| i.field == *name)
    }

    /// The rows where `e` is true, if the indexes cover all of `e`.
    fn answer(&self, e: &Expr) -> Option<Bitmap> {
        let mut out = Bitmap::new(self.rows, false);
        match e {
            Expr::Compare { left: Operand::Field(f), op, right: Operand::Value(v) } => {
                self.field(f)?.compare(*op, v, &mut out)
            }
            Expr::Compare { left: Operand::Value(v), op, right: Operand::Field(f) } => {
                self.field(f)?.compare(flipped(*op), v, &mut out)
            }
            Expr::In { operand: Operand::Field(f), values, negated: false } => self.field(f)?.any_of(values, &mut out),
            Expr::Like { field, pattern, negated: false } => self.field(field)?.like(pattern, &mut out),
            Expr::And(items) => {
                let mut parts = items.iter().map(|i| self.answer(i));
                out = parts.next()??;
                for part in parts {
                    out.intersect(&part?);
                }
            }
            Expr::Or(items) => {
                for item in items {
                    out.union(&self.answer(item)?);
                }
            }
            _ => return None,
        }
        Some(out)
    }
}

/// `v op field` as `field op' v`.
fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        same => same,
    }
}

/// Rows of `rows` matching `expr`, as [`evaluate`] answers, using `indexes` for the parts
/// they cover: the whole filter, or some conditions of a top-level `and` (the others are then
/// evaluated only on the rows those left).
pub fn evaluate_indexed(expr: &Expr, rows: &RowStore, indexes: &SegmentIndexes) -> Bitmap {
    if indexes.fields.is_empty() || indexes.rows != rows.len() {
        return evaluate(expr, rows);
    }
    if let Some(all) = indexes.answer(expr) {
        return all;
    }
    if let Expr::And(items) = expr {
        let mut candidates: Option<Bitmap> = None;
        let mut rest = Vec::new();
        for item in items {
            match indexes.answer(item) {
                Some(b) => match candidates.as_mut() {
                    Some(c) => c.intersect(&b),
                    None => candidates = Some(b),
                },
                None => rest.push(item),
            }
        }
        if let Some(candidates) = candidates {
            return evaluate_among(&rest, rows, &candidates);
        }
    }
    evaluate(expr, rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quiver_schemas::{expr, CollectionSchema, Column, DataType};

    use super::super::tests::field;
    use super::*;

    fn schema() -> CollectionSchema {
        CollectionSchema {
            name: "c".into(),
            description: String::new(),
            fields: vec![
                field("id", DataType::Int64, true),
                field("age", DataType::Int64, false),
                field("score", DataType::Float, false),
                field("w", DataType::Double, false),
                field("tag", DataType::VarChar, false),
                field("flag", DataType::Bool, false),
                field("v", DataType::FloatVector, false),
            ],
            enable_dynamic_field: true,
            num_shards: 1,
            consistency: Default::default(),
        }
    }

    /// Rows with nulls, NaN, duplicates and negative values, in a fixed pseudo-random order.
    fn rows(n: usize) -> RowStore {
        let mut store = RowStore::new(2);
        let mut x: u64 = 7;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as i64
        };
        let mut cols: Vec<Column> = ["age", "score", "w", "tag", "flag"]
            .iter()
            .map(|c| Column { name: c.to_string(), values: vec![] })
            .collect();
        for i in 0..n {
            store.pks.push(PrimaryKey::Int64(i as i64 * 3 - 50));
            store.seqs.push(1);
            store.vectors.extend([0.0, 0.0]);
            let r = next();
            let null = r % 11 == 0;
            let pick = |v: ScalarValue| if null { ScalarValue::Null } else { v };
            cols[0].values.push(pick(ScalarValue::Int64(r % 40 - 10)));
            let f = if r % 37 == 1 { f32::NAN } else { (r % 100) as f32 / 10.0 + 0.1 };
            cols[1].values.push(pick(ScalarValue::Float(f)));
            cols[2].values.push(pick(ScalarValue::Double((r % 17) as f64 - 2.5)));
            cols[3].values.push(pick(ScalarValue::VarChar(format!("t{}", r % 23))));
            cols[4].values.push(pick(ScalarValue::Bool(r % 3 == 0)));
            store.dynamic.push(String::new());
        }
        store.columns = cols;
        store
    }

    fn all_indexes() -> Vec<ScalarIndex> {
        let def = |f: &str, t| ScalarIndex { name: format!("{f}_idx"), field: f.into(), index_type: t, params: vec![] };
        vec![
            def("id", ScalarIndexType::StlSort),
            def("age", ScalarIndexType::StlSort),
            def("score", ScalarIndexType::Inverted),
            def("w", ScalarIndexType::StlSort),
            def("tag", ScalarIndexType::Trie),
            def("flag", ScalarIndexType::Bitmap),
        ]
    }

    #[test]
    fn indexed_answers_equal_the_row_by_row_answers() {
        let store = rows(2000);
        let schema = schema();
        let indexes = SegmentIndexes::build(&store, &all_indexes(), "id");
        assert_eq!(indexes.fields().count(), 6);
        let filters = [
            "age == 5",
            "age != 5",
            "age < 0",
            "age <= -3",
            "age > 20",
            "age >= 29",
            "3 < age",
            "-5 >= age",
            "10 <= age < 20",
            "age == 5.0",
            "age < 5.5",
            "age > -2.5",
            "age in [1, 2, 3, 100]",
            "age in [1, 2.0, 2.5]",
            "age in []",
            "id > 1000",
            "id in [-50, -47, 4, 5]",
            "id < 0 or id > 5900",
            "score == 0.3",
            "score > 5.1",
            "score <= 2",
            "score in [0.3, 1.1, 9]",
            "w == -2.5",
            "w > 3",
            "w != 0.5",
            "tag == \"t3\"",
            "tag in [\"t1\", \"t22\", \"zz\"]",
            "tag > \"t2\"",
            "tag like \"t1%\"",
            "tag like \"t%2\"",
            "tag like \"t1\"",
            "flag == true",
            "flag != false",
            "age > 5 and tag == \"t3\"",
            "age > 5 and id % 2 == 0",
            "age in [1, 2] and not (flag == true)",
            "(age < 0 or tag == \"t4\") and w > 1",
            "age > 5 or id % 2 == 0",
            "not (age > 5)",
            "age is null",
        ];
        for f in filters {
            let expr = expr::parse(f, &schema).unwrap();
            let want = evaluate(&expr, &store);
            let got = evaluate_indexed(&expr, &store, &indexes);
            assert_eq!(got, want, "{f}: {} vs {} rows", got.count_ones(), want.count_ones());
        }
    }

    #[test]
    fn mixed_kinds_and_json_are_not_indexed() {
        let mut store = rows(10);
        store.columns[0].values[3] = ScalarValue::VarChar("x".into());
        let indexes = SegmentIndexes::build(&store, &all_indexes(), "id");
        assert!(indexes.fields().all(|(f, _)| f != "age"));
        assert!(indexes.built_for(&all_indexes()));
        assert!(!indexes.built_for(&[]));
    }
}
