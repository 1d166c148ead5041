//! A reference filter evaluator: one row at a time, owned values, no compilation, no caching,
//! written from the semantics documented in `quiver_schemas::expr` rather than from the real
//! evaluator's code. The `filter` targets compare it with `quiver_actors::filter::evaluate`.
//!
//! Semantics: three-valued logic (`None` is unknown); a missing value (null column value,
//! absent column or JSON key, a JSON value in a scalar column) compared with anything is
//! unknown; values of different kinds are not comparable (unknown); an integer and a float
//! compare exactly (as numbers, not after rounding the integer to f64); float literals
//! compared with an f32 column are rounded to f32 first; arithmetic stays integral on
//! integers, and overflow, division by zero or a non-finite float result is a missing value.

use std::cmp::Ordering;

use quiver_actors::rows::RowStore;
use quiver_schemas::expr::{ArithOp, CmpOp, ContainsMode, Expr, Field, LikePattern, Operand, PathStep, Value};
use quiver_schemas::{DataType, PrimaryKey, ScalarValue};
use serde_json::Value as Json;

/// A value read from a row or a literal.
#[derive(Debug, Clone)]
pub enum V {
    Missing,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A JSON array or object.
    Container(Json),
}

/// Whether `row` of `rows` matches `e`: `Some(true)`, `Some(false)`, or `None` (unknown).
pub fn eval(e: &Expr, rows: &RowStore, row: usize) -> Option<bool> {
    match e {
        Expr::And(items) => {
            let results: Vec<Option<bool>> = items.iter().map(|i| eval(i, rows, row)).collect();
            if results.contains(&Some(false)) {
                Some(false)
            } else if results.contains(&None) {
                None
            } else {
                Some(true)
            }
        }
        Expr::Or(items) => {
            let results: Vec<Option<bool>> = items.iter().map(|i| eval(i, rows, row)).collect();
            if results.contains(&Some(true)) {
                Some(true)
            } else if results.contains(&None) {
                None
            } else {
                Some(false)
            }
        }
        Expr::Not(inner) => eval(inner, rows, row).map(|b| !b),
        Expr::Partition(ids) => Some(ids.contains(&rows.partitions.get(row).copied().unwrap_or(0))),
        Expr::Compare { left, op, right } => {
            let l = operand(left, rows, row, is_f32_column(right));
            let r = operand(right, rows, row, is_f32_column(left));
            compare(&l, *op, &r)
        }
        Expr::In { operand: o, values, negated } => {
            let v = operand(o, rows, row, false);
            let round = is_f32_column(o);
            let kind_of_list = values.first().map(|l| kind(&literal(l, round)));
            let k = kind(&v);
            if k.is_none() || kind_of_list.is_some_and(|lk| lk != k) {
                return None;
            }
            let found = values.iter().any(|l| compare(&v, CmpOp::Eq, &literal(l, round)) == Some(true));
            Some(found != *negated)
        }
        Expr::Like { field: f, pattern, negated } => match field(f, rows, row) {
            V::Str(s) => Some(like(pattern, &s) != *negated),
            _ => None,
        },
        Expr::IsNull { field: f, negated } => Some(matches!(field(f, rows, row), V::Missing) != *negated),
        Expr::Exists(f) => Some(match f {
            // A key holding JSON null exists.
            Field::Json { .. } | Field::Dynamic { .. } => json_at(f, rows, row).is_some(),
            _ => !matches!(field(f, rows, row), V::Missing),
        }),
        Expr::Contains { field: f, values, mode } => {
            let V::Container(Json::Array(items)) = field(f, rows, row) else { return None };
            let has = |l: &Value| {
                items.iter().any(|item| compare(&of_json(item), CmpOp::Eq, &literal(l, false)) == Some(true))
            };
            Some(match mode {
                ContainsMode::One | ContainsMode::Any => values.iter().any(has),
                ContainsMode::All => values.iter().all(has),
            })
        }
    }
}

fn is_f32_column(o: &Operand) -> bool {
    matches!(o, Operand::Field(Field::Column { data_type: DataType::Float, .. }))
}

fn literal(v: &Value, round_to_f32: bool) -> V {
    match v {
        Value::Bool(b) => V::Bool(*b),
        Value::Int(i) => V::Int(*i),
        Value::Float(f) if round_to_f32 => V::Float(f64::from(*f as f32)),
        Value::Float(f) => V::Float(*f),
        Value::Str(s) => V::Str(s.clone()),
    }
}

fn operand(o: &Operand, rows: &RowStore, row: usize, round_to_f32: bool) -> V {
    match o {
        Operand::Field(f) => field(f, rows, row),
        Operand::Value(v) => literal(v, round_to_f32),
        Operand::Arith { op, left, right } => {
            arith(*op, operand(left, rows, row, false), operand(right, rows, row, false))
        }
    }
}

fn arith(op: ArithOp, a: V, b: V) -> V {
    match (a, b) {
        (V::Int(x), V::Int(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Mod => x.checked_rem(y),
            };
            r.map_or(V::Missing, V::Int)
        }
        (a @ (V::Int(_) | V::Float(_)), b @ (V::Int(_) | V::Float(_))) => {
            let as_f64 = |v: &V| match v {
                V::Int(i) => *i as f64,
                V::Float(f) => *f,
                _ => f64::NAN,
            };
            let (x, y) = (as_f64(&a), as_f64(&b));
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            };
            if r.is_finite() {
                V::Float(r)
            } else {
                V::Missing
            }
        }
        _ => V::Missing,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Num,
    Str,
}

fn kind(v: &V) -> Option<Kind> {
    match v {
        V::Bool(_) => Some(Kind::Bool),
        V::Int(_) | V::Float(_) => Some(Kind::Num),
        V::Str(_) => Some(Kind::Str),
        V::Missing | V::Container(_) => None,
    }
}

/// The exact order of integer `i` and float `f`, by splitting `f` into integer and fraction
/// in 128-bit arithmetic.
fn int_vs_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f.is_infinite() || f.abs() >= 1e20 {
        return Some(if f > 0.0 { Ordering::Less } else { Ordering::Greater });
    }
    let whole = f.trunc() as i128;
    let frac = f - f.trunc();
    Some(match i128::from(i).cmp(&whole) {
        Ordering::Equal if frac > 0.0 => Ordering::Less,
        Ordering::Equal if frac < 0.0 => Ordering::Greater,
        other => other,
    })
}

fn compare(a: &V, op: CmpOp, b: &V) -> Option<bool> {
    let ord = match (a, b) {
        (V::Int(x), V::Int(y)) => x.cmp(y),
        (V::Int(x), V::Float(y)) => int_vs_float(*x, *y)?,
        (V::Float(x), V::Int(y)) => int_vs_float(*y, *x)?.reverse(),
        (V::Float(x), V::Float(y)) => x.partial_cmp(y)?,
        (V::Str(x), V::Str(y)) => x.cmp(y),
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        _ => return None,
    };
    Some(match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::Ne => ord.is_ne(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::Le => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::Ge => ord.is_ge(),
    })
}

fn of_scalar(v: &ScalarValue) -> V {
    match v {
        ScalarValue::Null | ScalarValue::Json(_) => V::Missing,
        ScalarValue::Bool(b) => V::Bool(*b),
        ScalarValue::Int64(i) => V::Int(*i),
        ScalarValue::Float(f) => V::Float(f64::from(*f)),
        ScalarValue::Double(d) => V::Float(*d),
        ScalarValue::VarChar(s) => V::Str(s.clone()),
    }
}

fn of_json(j: &Json) -> V {
    match j {
        Json::Null => V::Missing,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                V::Int(i)
            } else {
                n.as_f64().map_or(V::Missing, V::Float)
            }
        }
        Json::String(s) => V::Str(s.clone()),
        Json::Array(_) | Json::Object(_) => V::Container(j.clone()),
    }
}

fn column<'r>(rows: &'r RowStore, name: &str) -> Option<&'r [ScalarValue]> {
    rows.columns.iter().find(|c| c.name == name).map(|c| c.values.as_slice())
}

/// The JSON value a JSON or dynamic field names in `row`, `None` when absent.
fn json_at(f: &Field, rows: &RowStore, row: usize) -> Option<Json> {
    let (text, path) = match f {
        Field::Json { column: name, path } => match column(rows, name)?.get(row)? {
            ScalarValue::Json(t) | ScalarValue::VarChar(t) => (t.as_str(), path),
            _ => return None,
        },
        Field::Dynamic { path } => (rows.dynamic.get(row)?.as_str(), path),
        _ => return None,
    };
    let mut v: Json = serde_json::from_str(text).ok()?;
    for step in path {
        v = match (step, v) {
            (PathStep::Key(k), Json::Object(mut map)) => map.remove(k)?,
            (PathStep::Index(i), Json::Array(items)) => items.into_iter().nth(usize::try_from(*i).ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn field(f: &Field, rows: &RowStore, row: usize) -> V {
    match f {
        Field::Pk { .. } => match rows.pks.get(row) {
            Some(PrimaryKey::Int64(i)) => V::Int(*i),
            Some(PrimaryKey::VarChar(s)) => V::Str(s.clone()),
            None => V::Missing,
        },
        Field::Column { name, .. } => column(rows, name).and_then(|c| c.get(row)).map_or(V::Missing, of_scalar),
        Field::Json { .. } | Field::Dynamic { .. } => json_at(f, rows, row).as_ref().map_or(V::Missing, of_json),
    }
}

/// `like`, by dynamic programming over characters: `%` (a part boundary) matches any run.
fn like(pattern: &LikePattern, s: &str) -> bool {
    // Tokens: Some(c) a literal character, None a wildcard.
    let mut tokens: Vec<Option<char>> = Vec::new();
    for (i, part) in pattern.parts.iter().enumerate() {
        if i > 0 {
            tokens.push(None);
        }
        tokens.extend(part.chars().map(Some));
    }
    let text: Vec<char> = s.chars().collect();
    // can[j]: the tokens so far match text[..j].
    let mut can = vec![false; text.len() + 1];
    can[0] = true;
    for t in &tokens {
        let mut next = vec![false; text.len() + 1];
        match t {
            None => {
                let mut any = false;
                for j in 0..=text.len() {
                    any |= can[j];
                    next[j] = any;
                }
            }
            Some(c) => {
                for j in 1..=text.len() {
                    next[j] = can[j - 1] && text[j - 1] == *c;
                }
            }
        }
        can = next;
    }
    can[text.len()]
}
