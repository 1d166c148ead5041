//! Filter expressions generated from fuzzer bytes with `arbitrary` and rendered as filter text
//! over [`crate::fixtures::schema`]: most of them parse, so the evaluator comparison runs on
//! deep, varied expressions instead of on whatever byte strings happen to be valid text.
//! Literals are drawn mostly from values that sit on the fixture rows' edges (2^53, 2^63, ±0,
//! f32 rounding points) so that exactness bugs are found.

use std::fmt::Write;

use arbitrary::Arbitrary;

/// Deepest nesting rendered; deeper nodes become leaves.
const MAX_DEPTH: usize = 12;

#[derive(Arbitrary, Debug)]
pub enum Cond {
    /// Listed first: once the input is used up, `arbitrary` picks the first variant.
    IsNull(FieldRef, bool),
    Cmp(Term, Op, Term),
    Range(Term, bool, Op, Term, Op, Term),
    In(Term, Vec<Lit>, bool),
    Like(FieldRef, Vec<PatternPart>, bool),
    Exists(FieldRef),
    Contains(u8, FieldRef, Vec<Lit>),
    Bare(FieldRef),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Paren(Box<Cond>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Arbitrary, Debug)]
pub enum Term {
    Lit(Lit),
    Field(FieldRef),
    Arith(Box<Term>, ArithOp, Box<Term>),
    Neg(Box<Term>),
    Paren(Box<Term>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Arbitrary, Debug)]
pub enum FieldRef {
    /// A schema field or a dynamic key, by index into [`NAMES`].
    Name(u8),
    /// A path into the JSON column or a dynamic key.
    Path(u8, Vec<Step>),
    /// `$meta["k"]...`.
    Meta(Vec<Step>),
}

#[derive(Arbitrary, Debug)]
pub enum Step {
    Key(u8),
    Index(u8),
}

#[derive(Arbitrary, Debug)]
pub enum Lit {
    Int(u8),
    AnyInt(i64),
    Float(u8),
    AnyFloat(f64),
    Str(u8),
    AnyStr(String),
    Bool(bool),
}

#[derive(Arbitrary, Debug)]
pub enum PatternPart {
    Wildcard,
    Text(u8),
    EscapedPercent,
}

/// Field names: the schema's (including the vector, which must be refused) and dynamic keys.
const NAMES: &[&str] = &["id", "flag", "i", "f", "d", "s", "meta", "late", "emb", "k", "arr", "o", "u", "nope"];
const KEYS: &[&str] = &["a", "b", "c", "d", "e", "k", "arr", "o", "p", "u", "s", "x"];
const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    42,
    i64::MAX,
    i64::MIN,
    1 << 53,
    (1 << 53) + 1,
    (1 << 53) - 1,
    16_777_216,
    16_777_217,
    9_223_372_036_854_775_000,
];
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.1,
    1.5,
    2.0,
    2.5,
    -2.5,
    -3.25,
    1e300,
    1e-40,
    0.30000000000000004,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    9.223_372_036_854_776e18,
    9.2e18,
    16_777_217.0,
    3.402_823_466_385_288_6e38,
    0.1000000014901161193847656,
];
const STRS: &[&str] = &["", "abc", "a%c", "ab\\%", "héllo", "z", "1", "s", "q", "x", "ab", "%"];
const TEXTS: &[&str] = &["a", "b", "c", "ab", "abc", "h", "é", "llo", "z", "%", "\\"];

/// Renders `c` as filter text.
pub fn render(c: &Cond) -> String {
    let mut out = String::new();
    cond(&mut out, c, 0);
    out
}

fn pick<T: Copy>(table: &[T], i: u8) -> T {
    table[usize::from(i) % table.len()]
}

fn cond(out: &mut String, c: &Cond, depth: usize) {
    let deep = depth >= MAX_DEPTH;
    match c {
        Cond::Not(inner) if !deep => {
            out.push_str("not (");
            cond(out, inner, depth + 1);
            out.push(')');
        }
        Cond::And(a, b) | Cond::Or(a, b) if !deep => {
            out.push('(');
            cond(out, a, depth + 1);
            out.push_str(if matches!(c, Cond::And(..)) { ") and (" } else { ") || (" });
            cond(out, b, depth + 1);
            out.push(')');
        }
        Cond::Paren(inner) if !deep => {
            out.push('(');
            cond(out, inner, depth + 1);
            out.push(')');
        }
        Cond::Cmp(a, op, b) => {
            term(out, a, depth + 1);
            push_op(out, *op);
            term(out, b, depth + 1);
        }
        Cond::Range(a, up, op1, b, op2, c) => {
            // Ranges must go one way; `up` chooses which.
            let fix = |op: Op| match (up, op) {
                (true, Op::Lt | Op::Eq | Op::Gt) => Op::Lt,
                (true, _) => Op::Le,
                (false, Op::Gt | Op::Eq | Op::Lt) => Op::Gt,
                (false, _) => Op::Ge,
            };
            term(out, a, depth + 1);
            push_op(out, fix(*op1));
            term(out, b, depth + 1);
            push_op(out, fix(*op2));
            term(out, c, depth + 1);
        }
        Cond::In(t, values, negated) => {
            term(out, t, depth + 1);
            out.push_str(if *negated { " not in " } else { " in " });
            list(out, values);
        }
        Cond::Like(f, parts, negated) => {
            field(out, f);
            out.push_str(if *negated { " not like \"" } else { " like \"" });
            for p in parts {
                match p {
                    PatternPart::Wildcard => out.push('%'),
                    PatternPart::Text(i) => escape_into(out, pick(TEXTS, *i)),
                    PatternPart::EscapedPercent => out.push_str("\\%"),
                }
            }
            out.push('"');
        }
        Cond::Exists(f) => {
            out.push_str("exists ");
            field(out, f);
        }
        Cond::Contains(mode, f, values) => {
            let name =
                ["json_contains", "json_contains_all", "json_contains_any", "array_contains", "ARRAY_CONTAINS_ANY"]
                    [usize::from(*mode) % 5];
            out.push_str(name);
            out.push('(');
            field(out, f);
            out.push_str(", ");
            match (name.ends_with("contains"), values.first()) {
                (true, Some(v)) => lit(out, v),
                (true, None) => out.push('1'),
                (false, _) => list(out, values),
            }
            out.push(')');
        }
        Cond::Bare(f) => field(out, f),
        // Too deep, or a leaf: a condition that always parses.
        Cond::IsNull(f, negated) => {
            field(out, f);
            out.push_str(if *negated { " is not null" } else { " is null" });
        }
        _ => out.push_str("flag == true"),
    }
}

fn push_op(out: &mut String, op: Op) {
    out.push_str(match op {
        Op::Eq => " == ",
        Op::Ne => " != ",
        Op::Lt => " < ",
        Op::Le => " <= ",
        Op::Gt => " > ",
        Op::Ge => " >= ",
    });
}

fn term(out: &mut String, t: &Term, depth: usize) {
    let deep = depth >= MAX_DEPTH;
    match t {
        Term::Lit(l) => lit(out, l),
        Term::Field(f) => field(out, f),
        Term::Arith(a, op, b) if !deep => {
            term(out, a, depth + 1);
            out.push_str(match op {
                ArithOp::Add => " + ",
                ArithOp::Sub => " - ",
                ArithOp::Mul => " * ",
                ArithOp::Div => " / ",
                ArithOp::Mod => " % ",
            });
            term(out, b, depth + 1);
        }
        Term::Neg(inner) if !deep => {
            out.push_str("-(");
            term(out, inner, depth + 1);
            out.push(')');
        }
        Term::Paren(inner) if !deep => {
            out.push('(');
            term(out, inner, depth + 1);
            out.push(')');
        }
        _ => out.push('i'),
    }
}

fn field(out: &mut String, f: &FieldRef) {
    match f {
        FieldRef::Name(i) => out.push_str(pick(NAMES, *i)),
        FieldRef::Path(i, steps) => {
            out.push_str(if i % 2 == 0 { "meta" } else { pick(NAMES, *i / 2) });
            path(out, steps);
        }
        FieldRef::Meta(steps) => {
            out.push_str("$meta[\"k\"]");
            path(out, steps);
        }
    }
}

fn path(out: &mut String, steps: &[Step]) {
    for s in steps.iter().take(4) {
        match s {
            Step::Key(k) => {
                let _ = write!(out, "[\"{}\"]", pick(KEYS, *k));
            }
            Step::Index(i) => {
                let _ = write!(out, "[{}]", i % 8);
            }
        }
    }
}

fn list(out: &mut String, values: &[Lit]) {
    out.push('[');
    for (n, v) in values.iter().take(8).enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        lit(out, v);
    }
    out.push(']');
}

fn lit(out: &mut String, l: &Lit) {
    match l {
        Lit::Int(i) => {
            let _ = write!(out, "{}", pick(INTS, *i));
        }
        Lit::AnyInt(i) => {
            let _ = write!(out, "{i}");
        }
        Lit::Float(i) => float(out, pick(FLOATS, *i)),
        Lit::AnyFloat(f) if f.is_finite() => float(out, *f),
        Lit::AnyFloat(_) => out.push_str("1.5"),
        Lit::Str(i) => {
            out.push('"');
            escape_into(out, pick(STRS, *i));
            out.push('"');
        }
        Lit::AnyStr(s) => {
            out.push('\'');
            escape_into(out, s);
            out.push('\'');
        }
        Lit::Bool(b) => out.push_str(if *b { "true" } else { "False" }),
    }
}

/// A float as the lexer reads it (`{:?}` is the shortest text that reads back exactly).
fn float(out: &mut String, f: f64) {
    let text = format!("{f:?}");
    out.push_str(&text);
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
