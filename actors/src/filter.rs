//! Evaluating a parsed filter ([`Expr`]) over the rows of a segment, into a [`Bitmap`] that
//! the vector search uses as a faiss pre-filter ([`crate::vector::VectorIndex::search_selected`]).
//!
//! [`evaluate`] first compiles the expression against the [`RowStore`]: column names become
//! slices, `in` lists become hash sets, float literals compared with `Float` (f32) columns are
//! rounded to f32 as Milvus does. It then runs row at a time without allocating, except to
//! parse JSON: each row's dynamic-field object and each referenced JSON column value is
//! parsed at most once per call, and only when the expression reaches it (`age > 5 and
//! $meta["k"] == 1` parses nothing for rows with `age <= 5`).
//!
//! Logic is three-valued (see [`quiver_schemas::expr`]): comparisons on null or missing
//! values, or on JSON values of another type, are unknown, and only rows that evaluate to
//! true are selected.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::HashSet;

use quiver_schemas::expr::{ArithOp, CmpOp, ContainsMode, Expr, Field, LikePattern, Operand, PathStep, Value};
use quiver_schemas::{DataType, PrimaryKey, ScalarValue};
use serde_json::Value as Json;

use crate::rows::RowStore;

mod index;
mod search;
pub use index::{evaluate_indexed, SegmentIndexes};
pub use search::{search_allowed, SegmentVectors};

/// One bit per row in faiss IDSelectorBitmap layout: row i is bit (bytes[i >> 3] >> (i & 7)) & 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bytes: Vec<u8>,
    len: usize,
}

impl Bitmap {
    /// `len` bits, all set to `value`. Bits past `len` in the last byte are always clear.
    pub fn new(len: usize, value: bool) -> Bitmap {
        let mut bytes = vec![if value { 0xFF } else { 0 }; len.div_ceil(8)];
        if value && !len.is_multiple_of(8) {
            if let Some(last) = bytes.last_mut() {
                *last = (1u8 << (len % 8)) - 1;
            }
        }
        Bitmap { bytes, len }
    }

    /// Number of bits (rows).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the bitmap covers no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`; `false` past the end.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && (self.bytes[i >> 3] >> (i & 7)) & 1 == 1
    }

    /// Sets bit `i` to `v`; ignored past the end.
    pub fn set(&mut self, i: usize, v: bool) {
        if i >= self.len {
            return;
        }
        let mask = 1u8 << (i & 7);
        if v {
            self.bytes[i >> 3] |= mask;
        } else {
            self.bytes[i >> 3] &= !mask;
        }
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.bytes.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The bits, `len.div_ceil(8)` bytes, for faiss' `IDSelectorBitmap`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Clears the bits where `f(i)` is true (e.g. deleted rows). `f` is only called for bits
    /// that are set.
    pub fn and_not(&mut self, f: impl Fn(usize) -> bool) {
        for (byte_index, byte) in self.bytes.iter_mut().enumerate() {
            let mut bits = *byte;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if f(byte_index * 8 + bit) {
                    *byte &= !(1u8 << bit);
                }
            }
        }
    }

    /// Keeps only the bits also set in `other` (of the same length).
    pub fn intersect(&mut self, other: &Bitmap) {
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a &= b;
        }
    }

    /// Sets the bits set in `other` (of the same length).
    pub fn union(&mut self, other: &Bitmap) {
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a |= b;
        }
    }

    /// Offsets of the set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.bytes.iter().enumerate().flat_map(|(byte_index, &byte)| {
            (0..8).filter(move |bit| (byte >> bit) & 1 == 1).map(move |bit| byte_index * 8 + bit)
        })
    }
}

/// Rows of `rows` matching `expr`.
pub fn evaluate(expr: &Expr, rows: &RowStore) -> Bitmap {
    let mut compiler = Compiler { rows, slots: Vec::new() };
    let node = compiler.node(expr);
    let mut cells: Vec<OnceCell<Option<Json>>> = compiler.slots.iter().map(|_| OnceCell::new()).collect();
    let n = rows.len();
    let mut out = Bitmap::new(n, false);
    for (byte_index, byte) in out.bytes.iter_mut().enumerate() {
        let mut acc = 0u8;
        for bit in 0..8 {
            let row = byte_index * 8 + bit;
            if row >= n {
                break;
            }
            for cell in cells.iter_mut() {
                cell.take();
            }
            let ctx = Row { row, rows, slots: &compiler.slots, cells: &cells };
            if node.eval(&ctx) == Tri::True {
                acc |= 1 << bit;
            }
        }
        *byte = acc;
    }
    out
}

/// Rows among `candidates` where every one of `exprs` is true (all candidates when there are
/// none): the conditions an index could not answer, evaluated only where it left rows.
fn evaluate_among(exprs: &[&Expr], rows: &RowStore, candidates: &Bitmap) -> Bitmap {
    let mut compiler = Compiler { rows, slots: Vec::new() };
    let node = Node::And(exprs.iter().map(|e| compiler.node(e)).collect());
    let mut cells: Vec<OnceCell<Option<Json>>> = compiler.slots.iter().map(|_| OnceCell::new()).collect();
    let mut out = Bitmap::new(rows.len(), false);
    for row in candidates.ones().take_while(|&r| r < rows.len()) {
        for cell in cells.iter_mut() {
            cell.take();
        }
        let ctx = Row { row, rows, slots: &compiler.slots, cells: &cells };
        if node.eval(&ctx) == Tri::True {
            out.set(row, true);
        }
    }
    out
}

/// Whether row `row` of `rows` matches `expr` (`false` past the end).
pub fn matches(expr: &Expr, rows: &RowStore, row: usize) -> bool {
    if row >= rows.len() {
        return false;
    }
    let mut compiler = Compiler { rows, slots: Vec::new() };
    let node = compiler.node(expr);
    let cells: Vec<OnceCell<Option<Json>>> = compiler.slots.iter().map(|_| OnceCell::new()).collect();
    node.eval(&Row { row, rows, slots: &compiler.slots, cells: &cells }) == Tri::True
}

/// A truth value with "unknown" for comparisons on missing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// A value read from a row or a literal, borrowed (no allocation per row).
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// A JSON array or object.
    Json(&'a Json),
}

/// Where JSON documents come from; one per distinct source, each parsed once per row.
enum Slot<'a> {
    Dynamic,
    Column(&'a [ScalarValue]),
}

/// Per-row evaluation context.
struct Row<'a, 'c> {
    row: usize,
    rows: &'a RowStore,
    slots: &'c [Slot<'a>],
    cells: &'c [OnceCell<Option<Json>>],
}

impl<'a, 'c> Row<'a, 'c> {
    /// The parsed JSON document of `slot` for this row, parsed on first use.
    fn doc(&self, slot: usize) -> Option<&'c Json> {
        let cell = self.cells.get(slot)?;
        cell.get_or_init(|| {
            let text = match self.slots.get(slot)? {
                Slot::Dynamic => self.rows.dynamic.get(self.row).map(String::as_str),
                Slot::Column(values) => match values.get(self.row) {
                    Some(ScalarValue::Json(s) | ScalarValue::VarChar(s)) => Some(s.as_str()),
                    _ => None,
                },
            }?;
            if text.is_empty() {
                return None;
            }
            serde_json::from_str(text).ok()
        })
        .as_ref()
    }
}

/// A field, resolved against the row store.
enum Src<'a> {
    Pk(&'a [PrimaryKey]),
    Column(&'a [ScalarValue]),
    /// A column this segment does not have (added to the schema later): always null.
    Missing,
    Json {
        slot: usize,
        path: &'a [PathStep],
    },
}

impl<'a> Src<'a> {
    /// The JSON value at this source's path, `None` when absent.
    fn json<'c>(slot: usize, path: &[PathStep], ctx: &Row<'a, 'c>) -> Option<&'c Json> {
        let mut v = ctx.doc(slot)?;
        for step in path {
            v = match (step, v) {
                (PathStep::Key(k), Json::Object(map)) => map.get(k.as_str())?,
                (PathStep::Index(i), Json::Array(items)) => items.get(usize::try_from(*i).ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    fn get<'c>(&self, ctx: &Row<'a, 'c>) -> Val<'c>
    where
        'a: 'c,
    {
        match self {
            Src::Pk(pks) => match pks.get(ctx.row) {
                Some(PrimaryKey::Int64(i)) => Val::Int(*i),
                Some(PrimaryKey::VarChar(s)) => Val::Str(s),
                None => Val::Null,
            },
            Src::Column(values) => match values.get(ctx.row) {
                None | Some(ScalarValue::Null) => Val::Null,
                Some(ScalarValue::Bool(b)) => Val::Bool(*b),
                Some(ScalarValue::Int64(i)) => Val::Int(*i),
                Some(ScalarValue::Float(f)) => Val::Float(f64::from(*f)),
                Some(ScalarValue::Double(f)) => Val::Float(*f),
                Some(ScalarValue::VarChar(s)) => Val::Str(s),
                // A JSON value in a scalar column is not expected; treat it as missing.
                Some(ScalarValue::Json(_)) => Val::Null,
            },
            Src::Missing => Val::Null,
            Src::Json { slot, path } => Src::json(*slot, path, ctx).map_or(Val::Null, json_val),
        }
    }

    /// `is null`: a null column value, or an absent / JSON-null key.
    fn is_null(&self, ctx: &Row<'a, '_>) -> bool {
        match self {
            Src::Json { slot, path } => matches!(Src::json(*slot, path, ctx), None | Some(Json::Null)),
            _ => matches!(self.get(ctx), Val::Null),
        }
    }
}

fn json_val(v: &Json) -> Val<'_> {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => n.as_f64().map_or(Val::Null, Val::Float),
        },
        Json::String(s) => Val::Str(s),
        Json::Array(_) | Json::Object(_) => Val::Json(v),
    }
}

fn literal(v: &Value) -> Val<'_> {
    match v {
        Value::Bool(b) => Val::Bool(*b),
        Value::Int(i) => Val::Int(*i),
        Value::Float(f) => Val::Float(*f),
        Value::Str(s) => Val::Str(s),
    }
}

enum Opnd<'a> {
    Src(Src<'a>),
    Lit(Val<'a>),
    Arith(ArithOp, Box<Opnd<'a>>, Box<Opnd<'a>>),
}

impl<'a> Opnd<'a> {
    fn get<'c>(&self, ctx: &Row<'a, 'c>) -> Val<'c>
    where
        'a: 'c,
    {
        match self {
            Opnd::Src(s) => s.get(ctx),
            Opnd::Lit(v) => *v,
            Opnd::Arith(op, l, r) => arith(*op, l.get(ctx), r.get(ctx)),
        }
    }
}

/// `a op b`; integers stay integral (`/` truncates); overflow, division by zero and
/// non-numbers give null.
fn arith<'c>(op: ArithOp, a: Val<'c>, b: Val<'c>) -> Val<'c> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => {
            let v = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Mod => x.checked_rem(y),
            };
            v.map_or(Val::Null, Val::Int)
        }
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            let (x, y) = (num(a), num(b));
            let v = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            };
            if v.is_finite() {
                Val::Float(v)
            } else {
                Val::Null
            }
        }
        _ => Val::Null,
    }
}

fn num(v: Val<'_>) -> f64 {
    match v {
        Val::Int(i) => i as f64,
        Val::Float(f) => f,
        _ => f64::NAN,
    }
}

/// Ordering of two values of comparable types; `None` for null, JSON containers, NaN or
/// different types. Integers and floats compare exactly, as numbers.
fn order(a: Val<'_>, b: Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Int(x), Val::Float(y)) => int_vs_float(x, y),
        (Val::Float(x), Val::Int(y)) => int_vs_float(y, x).map(Ordering::reverse),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(&y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(&y)),
        _ => None,
    }
}

fn compare(a: Val<'_>, op: CmpOp, b: Val<'_>) -> Tri {
    let Some(ord) = order(a, b) else { return Tri::Unknown };
    Tri::of(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

/// The literals of an `in` list, hashed by kind.
struct ValueSet<'a> {
    kind: Option<Kind>,
    ints: HashSet<i64>,
    /// Bit patterns of the non-integral floats.
    floats: HashSet<u64>,
    strs: HashSet<&'a str>,
    bools: [bool; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Num,
    Str,
}

fn kind(v: Val<'_>) -> Option<Kind> {
    match v {
        Val::Bool(_) => Some(Kind::Bool),
        Val::Int(_) | Val::Float(_) => Some(Kind::Num),
        Val::Str(_) => Some(Kind::Str),
        Val::Null | Val::Json(_) => None,
    }
}

/// 2^63: the smallest float above every i64 (and -2^63 is `i64::MIN`).
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// The order of integer `i` and float `f`, without rounding `i` to f64 (which would make
/// 2^53 + 1 equal to 2^53, and `x == 2.0^53` disagree with `x in [2.0^53]` and with the
/// primary-key fast path); `None` for NaN.
fn int_vs_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= I64_END {
        return Some(Ordering::Less);
    }
    if f < -I64_END {
        return Some(Ordering::Greater);
    }
    // `f` is within i64's range: its integer part converts exactly.
    let whole = f.trunc();
    Some(i.cmp(&(whole as i64)).then_with(|| 0.0.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal)))
}

/// An integral float as the i64 equal to it, if there is one.
fn integral(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && (-I64_END..I64_END).contains(&f)).then_some(f as i64)
}

impl<'a> ValueSet<'a> {
    /// `f32`: the operand is a Float (f32) column, so float literals are rounded to f32.
    fn new(values: &'a [Value], f32: bool) -> Self {
        let mut set = ValueSet {
            kind: values.first().and_then(|v| kind(literal(v))),
            ints: HashSet::new(),
            floats: HashSet::new(),
            strs: HashSet::new(),
            bools: [false; 2],
        };
        for v in values {
            match v {
                Value::Int(i) => {
                    set.ints.insert(*i);
                }
                Value::Float(f) => {
                    let f = if f32 { f64::from(*f as f32) } else { *f };
                    match integral(f) {
                        Some(i) => set.ints.insert(i),
                        None => set.floats.insert((f + 0.0).to_bits()),
                    };
                }
                Value::Str(s) => {
                    set.strs.insert(s);
                }
                Value::Bool(b) => set.bools[usize::from(*b)] = true,
            }
        }
        set
    }

    /// Whether `v` is in the set; unknown for null or a value of another kind than the list.
    fn contains(&self, v: Val<'_>) -> Tri {
        let Some(k) = kind(v) else { return Tri::Unknown };
        if self.kind.is_some_and(|own| own != k) {
            return Tri::Unknown;
        }
        Tri::of(match v {
            Val::Int(i) => self.ints.contains(&i),
            Val::Float(f) => match integral(f) {
                Some(i) => self.ints.contains(&i),
                None => self.floats.contains(&(f + 0.0).to_bits()),
            },
            Val::Str(s) => self.strs.contains(s),
            Val::Bool(b) => self.bools[usize::from(b)],
            Val::Null | Val::Json(_) => false,
        })
    }
}

/// The compiled expression.
enum Node<'a> {
    And(Vec<Node<'a>>),
    Or(Vec<Node<'a>>),
    Not(Box<Node<'a>>),
    Cmp(Opnd<'a>, CmpOp, Opnd<'a>),
    In(Opnd<'a>, ValueSet<'a>, bool),
    Like(Src<'a>, &'a LikePattern, bool),
    IsNull(Src<'a>, bool),
    Exists(Src<'a>),
    Contains(Src<'a>, &'a [Value], ContainsMode),
    /// The row's partition is one of these (a handful: a linear scan beats hashing).
    Partition(&'a [u32]),
}

impl<'a> Node<'a> {
    fn eval(&self, ctx: &Row<'a, '_>) -> Tri {
        match self {
            Node::And(items) => {
                let mut out = Tri::True;
                for item in items {
                    match item.eval(ctx) {
                        Tri::False => return Tri::False,
                        Tri::Unknown => out = Tri::Unknown,
                        Tri::True => {}
                    }
                }
                out
            }
            Node::Or(items) => {
                let mut out = Tri::False;
                for item in items {
                    match item.eval(ctx) {
                        Tri::True => return Tri::True,
                        Tri::Unknown => out = Tri::Unknown,
                        Tri::False => {}
                    }
                }
                out
            }
            Node::Not(inner) => inner.eval(ctx).not(),
            Node::Cmp(l, op, r) => compare(l.get(ctx), *op, r.get(ctx)),
            Node::In(o, set, negated) => {
                let t = set.contains(o.get(ctx));
                if *negated {
                    t.not()
                } else {
                    t
                }
            }
            Node::Like(src, pattern, negated) => match src.get(ctx) {
                Val::Str(s) => Tri::of(pattern.matches(s) != *negated),
                _ => Tri::Unknown,
            },
            Node::IsNull(src, negated) => Tri::of(src.is_null(ctx) != *negated),
            Node::Exists(src) => Tri::of(match src {
                Src::Json { slot, path } => Src::json(*slot, path, ctx).is_some(),
                other => !matches!(other.get(ctx), Val::Null),
            }),
            Node::Partition(ids) => Tri::of(ids.contains(&ctx.rows.partition(ctx.row))),
            Node::Contains(src, values, mode) => {
                let Val::Json(Json::Array(items)) = src.get(ctx) else { return Tri::Unknown };
                let has =
                    |v: &Value| items.iter().any(|item| compare(json_val(item), CmpOp::Eq, literal(v)) == Tri::True);
                Tri::of(match mode {
                    ContainsMode::One | ContainsMode::Any => values.iter().any(has),
                    ContainsMode::All => values.iter().all(has),
                })
            }
        }
    }
}

/// Resolves an [`Expr`] against one row store.
struct Compiler<'a> {
    rows: &'a RowStore,
    slots: Vec<Slot<'a>>,
}

impl<'a> Compiler<'a> {
    fn node(&mut self, e: &'a Expr) -> Node<'a> {
        match e {
            Expr::And(items) => Node::And(items.iter().map(|i| self.node(i)).collect()),
            Expr::Or(items) => Node::Or(items.iter().map(|i| self.node(i)).collect()),
            Expr::Not(inner) => Node::Not(Box::new(self.node(inner))),
            Expr::Compare { left, op, right } => {
                // Milvus compares Float (f32) columns with literals cast to f32.
                let (l32, r32) = (is_f32(left), is_f32(right));
                Node::Cmp(self.operand(left, r32), *op, self.operand(right, l32))
            }
            Expr::In { operand, values, negated } => {
                Node::In(self.operand(operand, false), ValueSet::new(values, is_f32(operand)), *negated)
            }
            Expr::Like { field, pattern, negated } => Node::Like(self.src(field), pattern, *negated),
            Expr::IsNull { field, negated } => Node::IsNull(self.src(field), *negated),
            Expr::Exists(field) => Node::Exists(self.src(field)),
            Expr::Contains { field, values, mode } => Node::Contains(self.src(field), values, *mode),
            Expr::Partition(ids) => Node::Partition(ids),
        }
    }

    fn operand(&mut self, o: &'a Operand, round_to_f32: bool) -> Opnd<'a> {
        match o {
            Operand::Field(f) => Opnd::Src(self.src(f)),
            Operand::Value(Value::Float(f)) if round_to_f32 => Opnd::Lit(Val::Float(f64::from(*f as f32))),
            Operand::Value(v) => Opnd::Lit(literal(v)),
            Operand::Arith { op, left, right } => {
                Opnd::Arith(*op, Box::new(self.operand(left, false)), Box::new(self.operand(right, false)))
            }
        }
    }

    fn src(&mut self, f: &'a Field) -> Src<'a> {
        match f {
            Field::Pk { .. } => Src::Pk(&self.rows.pks),
            Field::Column { name, .. } => match self.column(name) {
                Some(values) => Src::Column(values),
                None => Src::Missing,
            },
            Field::Json { column, path } => match self.column(column) {
                Some(values) => Src::Json { slot: self.slot(Slot::Column(values)), path },
                None => Src::Missing,
            },
            Field::Dynamic { path } => Src::Json { slot: self.slot(Slot::Dynamic), path },
        }
    }

    fn column(&self, name: &str) -> Option<&'a [ScalarValue]> {
        self.rows.columns.iter().find(|c| c.name == name).map(|c| c.values.as_slice())
    }

    /// The slot index of a JSON source, shared by every reference to it.
    fn slot(&mut self, slot: Slot<'a>) -> usize {
        let same = |a: &Slot<'a>| match (a, &slot) {
            (Slot::Dynamic, Slot::Dynamic) => true,
            (Slot::Column(x), Slot::Column(y)) => std::ptr::eq(*x, *y),
            _ => false,
        };
        if let Some(i) = self.slots.iter().position(same) {
            return i;
        }
        self.slots.push(slot);
        self.slots.len() - 1
    }
}

fn is_f32(o: &Operand) -> bool {
    matches!(o, Operand::Field(Field::Column { data_type: DataType::Float, .. }))
}

#[cfg(test)]
mod tests;
