//! Milvus boolean filter expressions (`search(filter=...)`, `query(filter=...)`,
//! `delete(filter=...)`), parsed once on the proxy against the collection schema and shipped
//! to query nodes as a serde-serialisable [`Expr`].
//!
//! Layout: [`lex`] turns the text into tokens with character positions, [`syntax`] parses
//! them into an untyped tree by precedence (`or` < `and` < `not` < comparisons / `in` /
//! `like` / `is null` < `+ -` < `* / %` < unary minus), and [`lower`] resolves field names
//! against the schema, checks types and folds constants into the [`Expr`] the query nodes
//! evaluate.
//!
//! Evaluation semantics (implemented by the query nodes) are three-valued: a comparison on a
//! missing value (a null column value, an absent JSON / dynamic key, a JSON value of another
//! type) is *unknown*; `not unknown` is unknown, `false and unknown` is false, `true or
//! unknown` is true, and only rows whose result is *true* match. So `x != 1`, `x not in [..]`
//! and `not (x == 1)` never match a row where `x` is missing, as in Milvus.

mod lex;
mod lower;
mod syntax;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::types::{CollectionSchema, DataType, PrimaryKey};

/// Most levels of parentheses, `not` and unary minus a filter may nest.
pub const MAX_NESTING: usize = 64;
/// Most elements of one `in [..]` list (pymilvus' `get(ids)` sends its ids as one list).
pub const MAX_LIST_LEN: usize = 1 << 20;
/// Longest accepted filter text, in characters.
pub const MAX_TEXT_CHARS: usize = 16 << 20;
/// Deepest accepted expression tree, counted as nesting of its JSON form. serde_json refuses
/// to deserialise documents nested deeper than 128, and query nodes receive [`Expr`] as JSON.
pub const MAX_JSON_DEPTH: usize = 120;

/// A parsed filter: field references resolved against the schema, literals typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// All must hold (flattened: no direct `And` child).
    And(Vec<Expr>),
    /// Any must hold (flattened: no direct `Or` child).
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `left op right`; at least one side refers to a field. A chained range `1 < x <= 5`
    /// becomes `And([1 < x, x <= 5])`.
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    /// `operand [not] in [values]`; an empty list matches nothing (`not in []`: every row
    /// whose value is present).
    In {
        operand: Operand,
        values: Vec<Value>,
        negated: bool,
    },
    /// `field [not] like "pattern"`; only `%` is a wildcard.
    Like {
        field: Field,
        pattern: LikePattern,
        negated: bool,
    },
    /// `field is [not] null`: a null column value, or a missing / JSON-null key.
    IsNull {
        field: Field,
        negated: bool,
    },
    /// `exists field`: the JSON / dynamic key is present.
    Exists(Field),
    /// `json_contains(field, v)` (one value), `json_contains_all(field, [..])`,
    /// `json_contains_any(field, [..])` (`array_contains*` are aliases): the value at
    /// `field` is an array holding the value(s).
    Contains {
        field: Field,
        values: Vec<Value>,
        mode: ContainsMode,
    },
    /// The row belongs to one of these partitions. Never parsed from a filter: the proxy adds
    /// it for a read that names partitions, or while some partition's rows must stay unread
    /// (released or dropped).
    Partition(Vec<u32>),
}

/// A field reference, resolved at parse time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Field {
    /// The primary key (stored apart from the scalar columns).
    Pk { name: String, data_type: DataType },
    /// A scalar column of the schema (never JSON or a vector).
    Column { name: String, data_type: DataType },
    /// A JSON column, optionally with a path into the document (`meta["a"][0]`).
    Json { column: String, path: Vec<PathStep> },
    /// A key of the dynamic field (`$meta["k"]`, or a bare name not in the schema), with an
    /// optional deeper path (`k["sub"]`). Never empty.
    Dynamic { path: Vec<PathStep> },
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathStep {
    Key(String),
    Index(u64),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operand {
    Field(Field),
    Value(Value),
    /// Arithmetic over numbers; integer operations stay integral (`/` truncates) and an
    /// overflow or a division by zero makes the result unknown.
    Arith {
        op: ArithOp,
        left: Box<Operand>,
        right: Box<Operand>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainsMode {
    One,
    All,
    Any,
}

/// A `like` pattern split at its `%` wildcards: the text must start with the first part
/// (unless the pattern starts with `%`), end with the last (unless it ends with `%`), and
/// contain the parts in between in order. Without `%` it is an exact match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikePattern {
    pub parts: Vec<String>,
}

/// Why a filter was rejected: what was wrong, and where (a character offset into the text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid filter `{}` at position {position}: {message}", excerpt(text, *position))]
pub struct ExprError {
    pub message: String,
    /// Character (not byte) offset of the problem in `text`; `text`'s length at the end.
    pub position: usize,
    /// The filter text, for the message (long texts are shown around `position` only).
    pub text: String,
}

/// The filter text as shown in errors: whole when short, else the 80 characters around `pos`.
fn excerpt(text: &str, pos: usize) -> String {
    const SHOWN: usize = 80;
    let n = text.chars().count();
    if n <= SHOWN {
        return text.to_string();
    }
    let start = pos.saturating_sub(SHOWN / 2).min(n - SHOWN);
    let body: String = text.chars().skip(start).take(SHOWN).collect();
    let pre = if start > 0 { "…" } else { "" };
    let post = if start + SHOWN < n { "…" } else { "" };
    format!("{pre}{body}{post} (characters {start}..{})", start + SHOWN)
}

/// Parses `text` against `schema`. Empty or whitespace-only text is an error ("empty
/// filter"): callers treat it as "no filter" before calling.
pub fn parse(text: &str, schema: &CollectionSchema) -> Result<Expr, ExprError> {
    let fail = |message: String, position: usize| ExprError { message, position, text: text.to_string() };
    if text.chars().take(MAX_TEXT_CHARS + 1).count() > MAX_TEXT_CHARS {
        return Err(fail(format!("filter is longer than {MAX_TEXT_CHARS} characters; split the request"), 0));
    }
    let tokens = lex::tokenize(text).map_err(|(m, p)| fail(m, p))?;
    let tree = syntax::parse(&tokens).map_err(|(m, p)| fail(m, p))?;
    let expr = lower::Lower::new(schema).condition(&tree).map_err(|(m, p)| fail(m, p))?;
    let depth = expr.json_depth();
    if depth > MAX_JSON_DEPTH {
        return Err(fail(
            format!("filter is nested too deeply ({depth} levels, at most {MAX_JSON_DEPTH}); simplify it"),
            0,
        ));
    }
    Ok(expr)
}

impl Expr {
    /// When the expression only selects primary keys (`pk in [..]`, `pk == v`, ORs of those),
    /// the keys (deduplicated, in order) — the fast path for get/delete by id. Literals that
    /// cannot be keys (`pk == 1.5`) select nothing and are left out.
    pub fn primary_keys(&self) -> Option<Vec<PrimaryKey>> {
        let mut keys = Vec::new();
        self.collect_primary_keys(&mut keys)?;
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
        Some(keys)
    }

    fn collect_primary_keys(&self, out: &mut Vec<PrimaryKey>) -> Option<()> {
        match self {
            Expr::Or(children) => children.iter().try_for_each(|c| c.collect_primary_keys(out)),
            Expr::Compare { left, op: CmpOp::Eq, right } => match (left, right) {
                (Operand::Field(Field::Pk { data_type, .. }), Operand::Value(v))
                | (Operand::Value(v), Operand::Field(Field::Pk { data_type, .. })) => {
                    out.extend(pk_of(*data_type, v));
                    Some(())
                }
                _ => None,
            },
            Expr::In { operand: Operand::Field(Field::Pk { data_type, .. }), values, negated: false } => {
                out.extend(values.iter().filter_map(|v| pk_of(*data_type, v)));
                Some(())
            }
            _ => None,
        }
    }

    /// Nesting depth of this expression's JSON (serde) form.
    pub fn json_depth(&self) -> usize {
        match self {
            Expr::And(c) | Expr::Or(c) => 2 + c.iter().map(Expr::json_depth).max().unwrap_or(0),
            Expr::Not(e) => 1 + e.json_depth(),
            Expr::Compare { left, right, .. } => 2 + left.json_depth().max(right.json_depth()),
            Expr::In { operand, .. } => 2 + operand.json_depth().max(3),
            Expr::Like { .. } | Expr::IsNull { .. } | Expr::Exists(_) | Expr::Contains { .. } => 2 + FIELD_JSON_DEPTH,
            Expr::Partition(_) => 3,
        }
    }
}

/// JSON depth of any [`Field`] (`{"Dynamic":{"path":[{"Key":..}]}}`).
const FIELD_JSON_DEPTH: usize = 4;

impl Operand {
    fn json_depth(&self) -> usize {
        match self {
            Operand::Field(_) => 1 + FIELD_JSON_DEPTH,
            Operand::Value(_) => 2,
            Operand::Arith { left, right, .. } => 2 + left.json_depth().max(right.json_depth()),
        }
    }
}

/// 2^63: the smallest float above every i64.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// `v` as a key of a primary field of type `pk_type`, if it can be one.
fn pk_of(pk_type: DataType, v: &Value) -> Option<PrimaryKey> {
    match (pk_type, v) {
        (DataType::Int64, Value::Int(i)) => Some(PrimaryKey::Int64(*i)),
        // Exactly the floats equal to an i64 (as the query nodes compare them).
        (DataType::Int64, Value::Float(f)) if f.fract() == 0.0 && (-I64_END..I64_END).contains(f) => {
            Some(PrimaryKey::Int64(*f as i64))
        }
        (DataType::VarChar, Value::Str(s)) => Some(PrimaryKey::VarChar(s.clone())),
        _ => None,
    }
}

impl LikePattern {
    /// Splits a pattern at unescaped `%`; `\%` is a literal percent sign.
    pub fn new(pattern: &str) -> LikePattern {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'%') => {
                    chars.next();
                    current.push('%');
                }
                '%' => parts.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        parts.push(current);
        LikePattern { parts }
    }

    /// Whether `s` matches the pattern.
    pub fn matches(&self, s: &str) -> bool {
        let parts = &self.parts;
        let Some((first, rest)) = parts.split_first() else { return true };
        let Some((last, middle)) = rest.split_last() else { return s == first };
        let Some(mut s) = s.strip_prefix(first.as_str()) else { return false };
        for part in middle {
            match s.find(part.as_str()) {
                Some(at) => s = &s[at + part.len()..],
                None => return false,
            }
        }
        s.ends_with(last.as_str())
    }
}
