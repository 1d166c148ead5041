//! The untyped syntax tree and its precedence parser. Conditions and values share one
//! grammar (`(a > 1)` and `(a + 1) > 2` both start with `(`); [`super::lower`] decides which
//! is which.
//!
//! ```text
//! or        := and (("or" | "||") and)*
//! and       := not (("and" | "&&") not)*
//! not       := ("not" | "!") not | predicate
//! predicate := "exists" sum
//!            | sum (cmp sum)*                      comparisons, chained ranges
//!            | sum ["not"] "in" list | sum ["not"] "like" sum | sum "is" ["not"] "null"
//! sum       := product (("+" | "-") product)*
//! product   := unary (("*" | "/" | "%") unary)*
//! unary     := ("-" | "+") unary | primary
//! primary   := literal | list | name ("[" (string | int) "]")* | name "(" args ")" | "(" or ")"
//! ```

use super::lex::{Fail, Tok, Token};
use super::{ArithOp, CmpOp, PathStep, MAX_LIST_LEN, MAX_NESTING};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Syn {
    Or(Vec<Syn>),
    And(Vec<Syn>),
    Not {
        pos: usize,
        inner: Box<Syn>,
    },
    /// `first op1 second [op2 third ...]`, each operator with its position.
    Cmp {
        first: Box<Syn>,
        rest: Vec<(CmpOp, usize, Syn)>,
    },
    In {
        operand: Box<Syn>,
        list: Box<Syn>,
        negated: bool,
    },
    Like {
        operand: Box<Syn>,
        pattern: Box<Syn>,
        negated: bool,
    },
    IsNull {
        operand: Box<Syn>,
        negated: bool,
    },
    Exists {
        pos: usize,
        target: Box<Syn>,
    },
    Call {
        name: String,
        pos: usize,
        args: Vec<Syn>,
    },
    Arith {
        op: ArithOp,
        pos: usize,
        left: Box<Syn>,
        right: Box<Syn>,
    },
    Neg {
        pos: usize,
        inner: Box<Syn>,
    },
    Int {
        value: u64,
        pos: usize,
    },
    Float {
        value: f64,
        pos: usize,
    },
    Str {
        value: String,
        pos: usize,
    },
    Bool {
        value: bool,
        pos: usize,
    },
    List {
        items: Vec<Syn>,
        pos: usize,
    },
    Path {
        name: String,
        pos: usize,
        steps: Vec<PathStep>,
    },
}

impl Syn {
    /// Character position where this node starts.
    pub(super) fn pos(&self) -> usize {
        match self {
            Syn::Or(v) | Syn::And(v) => v.first().map_or(0, Syn::pos),
            Syn::Cmp { first: operand, .. }
            | Syn::In { operand, .. }
            | Syn::Like { operand, .. }
            | Syn::IsNull { operand, .. } => operand.pos(),
            Syn::Arith { left, .. } => left.pos(),
            Syn::Not { pos, .. }
            | Syn::Exists { pos, .. }
            | Syn::Call { pos, .. }
            | Syn::Neg { pos, .. }
            | Syn::Int { pos, .. }
            | Syn::Float { pos, .. }
            | Syn::Str { pos, .. }
            | Syn::Bool { pos, .. }
            | Syn::List { pos, .. }
            | Syn::Path { pos, .. } => *pos,
        }
    }
}

/// Parses a whole filter.
pub(super) fn parse(tokens: &[Token]) -> Result<Syn, Fail> {
    let mut p = Parser { tokens, at: 0, depth: 0 };
    if p.peek().tok == Tok::Eof {
        return Err(("empty filter".into(), 0));
    }
    let tree = p.or()?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        let msg = if t.tok == Tok::RParen {
            "`)` has no matching `(`".to_string()
        } else {
            format!("expected `and`, `or` or the end of the filter, found `{}`", t.text)
        };
        return Err((msg, t.pos));
    }
    Ok(tree)
}

struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
    depth: usize,
}

const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "like", "is", "null", "exists"];

impl<'t> Parser<'t> {
    fn peek(&self) -> &'t Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.at.min(last)]
    }

    fn peek2(&self) -> &'t Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.at + 1).min(last)]
    }

    fn bump(&mut self) -> &'t Token {
        let t = self.peek();
        if t.tok != Tok::Eof {
            self.at += 1;
        }
        t
    }

    fn prev_text(&self) -> Option<&'t str> {
        self.at.checked_sub(1).map(|i| self.tokens[i].text.as_str())
    }

    fn enter(&mut self, pos: usize) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            let msg = format!("filter nests more than {MAX_NESTING} levels (parentheses, `not`, lists, arithmetic)");
            return Err((format!("{msg}; simplify it"), pos));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn or(&mut self) -> Result<Syn, Fail> {
        let mut items = vec![self.and()?];
        while self.peek().tok == Tok::OrOr || self.peek().is_keyword("or") {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Syn::Or(items) })
    }

    fn and(&mut self) -> Result<Syn, Fail> {
        let mut items = vec![self.not()?];
        while self.peek().tok == Tok::AndAnd || self.peek().is_keyword("and") {
            self.bump();
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Syn::And(items) })
    }

    fn not(&mut self) -> Result<Syn, Fail> {
        let t = self.peek();
        if t.tok == Tok::Bang || t.is_keyword("not") {
            self.bump();
            self.enter(t.pos)?;
            let inner = self.not()?;
            self.leave();
            return Ok(Syn::Not { pos: t.pos, inner: Box::new(inner) });
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Syn, Fail> {
        let t = self.peek();
        if t.is_keyword("exists") {
            self.bump();
            let target = self.sum()?;
            return Ok(Syn::Exists { pos: t.pos, target: Box::new(target) });
        }
        let first = self.sum()?;
        let t = self.peek();
        let negated = t.is_keyword("not") && (self.peek2().is_keyword("in") || self.peek2().is_keyword("like"));
        if negated {
            self.bump();
        }
        let t = self.peek();
        if t.is_keyword("in") {
            self.bump();
            if self.peek().tok != Tok::LBracket {
                return Err((
                    format!("expected a list `[..]` after `{}`, found `{}`", t.text, self.peek().text),
                    self.peek().pos,
                ));
            }
            let list = self.primary()?;
            return Ok(Syn::In { operand: Box::new(first), list: Box::new(list), negated });
        }
        if t.is_keyword("like") {
            self.bump();
            let pattern = self.sum()?;
            return Ok(Syn::Like { operand: Box::new(first), pattern: Box::new(pattern), negated });
        }
        if t.is_keyword("is") {
            self.bump();
            let negated = self.peek().is_keyword("not");
            if negated {
                self.bump();
            }
            let n = self.peek();
            if !n.is_keyword("null") {
                return Err((format!("expected `null` after `{}`, found `{}`", t.text, n.text), n.pos));
            }
            self.bump();
            return Ok(Syn::IsNull { operand: Box::new(first), negated });
        }
        let mut rest = Vec::new();
        while let Some(op) = cmp_op(&self.peek().tok) {
            let pos = self.bump().pos;
            rest.push((op, pos, self.sum()?));
        }
        Ok(if rest.is_empty() { first } else { Syn::Cmp { first: Box::new(first), rest } })
    }

    fn sum(&mut self) -> Result<Syn, Fail> {
        let mut left = self.product()?;
        let depth = self.depth;
        let result = loop {
            let op = match self.peek().tok {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => break Ok(left),
            };
            let pos = self.bump().pos;
            // Each operator nests the tree one level deeper (`a + b + c` is `(a + b) + c`).
            if let Err(e) = self.enter(pos) {
                break Err(e);
            }
            match self.product() {
                Ok(right) => left = Syn::Arith { op, pos, left: Box::new(left), right: Box::new(right) },
                Err(e) => break Err(e),
            }
        };
        self.depth = depth;
        result
    }

    fn product(&mut self) -> Result<Syn, Fail> {
        let mut left = self.unary()?;
        let depth = self.depth;
        let result = loop {
            let op = match self.peek().tok {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                Tok::Percent => ArithOp::Mod,
                _ => break Ok(left),
            };
            let pos = self.bump().pos;
            if let Err(e) = self.enter(pos) {
                break Err(e);
            }
            match self.unary() {
                Ok(right) => left = Syn::Arith { op, pos, left: Box::new(left), right: Box::new(right) },
                Err(e) => break Err(e),
            }
        };
        self.depth = depth;
        result
    }

    fn unary(&mut self) -> Result<Syn, Fail> {
        let t = self.peek();
        if matches!(t.tok, Tok::Minus | Tok::Plus) {
            self.bump();
            self.enter(t.pos)?;
            let inner = self.unary()?;
            self.leave();
            return Ok(if t.tok == Tok::Minus { Syn::Neg { pos: t.pos, inner: Box::new(inner) } } else { inner });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Syn, Fail> {
        let t = self.peek();
        let pos = t.pos;
        match &t.tok {
            Tok::Int(v) => {
                self.bump();
                Ok(Syn::Int { value: *v, pos })
            }
            Tok::Float(v) => {
                self.bump();
                Ok(Syn::Float { value: *v, pos })
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Syn::Str { value: s.clone(), pos })
            }
            Tok::LParen => {
                self.bump();
                self.enter(pos)?;
                let inner = self.or()?;
                self.leave();
                self.expect_close(Tok::RParen, ")", "(", pos)?;
                Ok(inner)
            }
            Tok::LBracket => {
                self.bump();
                self.enter(pos)?;
                let mut items = Vec::new();
                while self.peek().tok != Tok::RBracket {
                    if items.len() >= MAX_LIST_LEN {
                        return Err((format!("list has more than {MAX_LIST_LEN} elements; split the request"), pos));
                    }
                    items.push(self.or()?);
                    if self.peek().tok != Tok::Comma {
                        break;
                    }
                    self.bump();
                }
                self.leave();
                self.expect_close(Tok::RBracket, "]", "[", pos)?;
                Ok(Syn::List { items, pos })
            }
            Tok::Ident(name) if is_bool(name) => {
                self.bump();
                Ok(Syn::Bool { value: name.eq_ignore_ascii_case("true"), pos })
            }
            Tok::Ident(name) if !KEYWORDS.iter().any(|k| name.eq_ignore_ascii_case(k)) => {
                self.bump();
                if self.peek().tok == Tok::LParen {
                    return self.call(name, pos);
                }
                let mut steps = Vec::new();
                while self.peek().tok == Tok::LBracket {
                    let open = self.bump().pos;
                    let key = self.bump();
                    match &key.tok {
                        Tok::Str(s) => steps.push(PathStep::Key(s.clone())),
                        Tok::Int(i) => steps.push(PathStep::Index(*i)),
                        _ => {
                            return Err((
                                format!(
                                    "expected a \"key\" or an index inside `[..]` after `{name}`, found `{}`",
                                    key.text
                                ),
                                key.pos,
                            ))
                        }
                    }
                    self.expect_close(Tok::RBracket, "]", "[", open)?;
                }
                Ok(Syn::Path { name: name.clone(), pos, steps })
            }
            _ => {
                let msg = match (self.prev_text(), &t.tok) {
                    (None, Tok::Eof) => "empty filter".to_string(),
                    (None, _) => format!("expected a condition, found `{}`", t.text),
                    (Some(prev), Tok::Eof) => format!("expected a value after `{prev}`"),
                    (Some(prev), _) => format!("expected a value after `{prev}`, found `{}`", t.text),
                };
                Err((msg, pos))
            }
        }
    }

    fn call(&mut self, name: &str, pos: usize) -> Result<Syn, Fail> {
        let open = self.bump().pos;
        self.enter(open)?;
        let mut args = Vec::new();
        while self.peek().tok != Tok::RParen {
            args.push(self.or()?);
            if self.peek().tok != Tok::Comma {
                break;
            }
            self.bump();
        }
        self.leave();
        self.expect_close(Tok::RParen, ")", "(", open)?;
        Ok(Syn::Call { name: name.to_string(), pos, args })
    }

    fn expect_close(&mut self, tok: Tok, close: &str, open: &str, open_pos: usize) -> Result<(), Fail> {
        let t = self.peek();
        if t.tok == tok {
            self.bump();
            return Ok(());
        }
        let found = if t.tok == Tok::Eof { String::new() } else { format!(", found `{}`", t.text) };
        Err((format!("expected `{close}` to close the `{open}` at position {open_pos}{found}"), t.pos))
    }
}

fn is_bool(name: &str) -> bool {
    matches!(name, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

fn cmp_op(tok: &Tok) -> Option<CmpOp> {
    Some(match tok {
        Tok::Eq => CmpOp::Eq,
        Tok::Ne => CmpOp::Ne,
        Tok::Lt => CmpOp::Lt,
        Tok::Le => CmpOp::Le,
        Tok::Gt => CmpOp::Gt,
        Tok::Ge => CmpOp::Ge,
        _ => return None,
    })
}
