//! From the syntax tree to [`Expr`]: resolves names against the schema, checks types,
//! folds constants, and rejects values where conditions belong (and the reverse).

use super::lex::Fail;
use super::syntax::Syn;
use super::{ArithOp, CmpOp, ContainsMode, Expr, Field, LikePattern, Operand, PathStep, Value};
use crate::types::{CollectionSchema, DataType};

/// What a value is known to be at parse time. JSON and dynamic values are only typed at
/// evaluation time ([`Ty::Any`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Num,
    Str,
    Any,
}

pub(super) struct Lower<'s> {
    schema: &'s CollectionSchema,
}

impl<'s> Lower<'s> {
    pub(super) fn new(schema: &'s CollectionSchema) -> Self {
        Lower { schema }
    }

    /// Lowers a node that must be a condition.
    pub(super) fn condition(&self, s: &Syn) -> Result<Expr, Fail> {
        match s {
            Syn::Or(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match self.condition(item)? {
                        Expr::Or(inner) => out.extend(inner),
                        e => out.push(e),
                    }
                }
                Ok(Expr::Or(out))
            }
            Syn::And(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match self.condition(item)? {
                        Expr::And(inner) => out.extend(inner),
                        e => out.push(e),
                    }
                }
                Ok(Expr::And(out))
            }
            Syn::Not { inner, .. } => Ok(Expr::Not(Box::new(self.condition(inner)?))),
            Syn::Cmp { first, rest } => self.comparisons(first, rest),
            Syn::In { operand, list, negated } => {
                let o = self.operand(operand)?;
                let Syn::List { items, .. } = list.as_ref() else {
                    return Err(("expected a list `[..]` after `in`".into(), list.pos()));
                };
                let values = self.list(items)?;
                if let (Some(v), Some(item)) = (values.first(), items.first()) {
                    check_comparable(&o, &Operand::Value(v.clone()), item.pos())?;
                }
                Ok(Expr::In { operand: o, values, negated: *negated })
            }
            Syn::Like { operand, pattern, negated } => {
                let field = self.field_of(operand)?;
                if !matches!(ty_of_field(&field), Ty::Str | Ty::Any) {
                    let msg = format!("`like` needs a string field, but {} is not one", describe_field(&field));
                    return Err((msg, operand.pos()));
                }
                let Syn::Str { value, .. } = pattern.as_ref() else {
                    return Err(("`like` needs a quoted pattern, e.g. like \"pre%\"".into(), pattern.pos()));
                };
                Ok(Expr::Like { field, pattern: LikePattern::new(value), negated: *negated })
            }
            Syn::IsNull { operand, negated } => Ok(Expr::IsNull { field: self.field_of(operand)?, negated: *negated }),
            Syn::Exists { target, .. } => {
                let field = self.field_of(target)?;
                if !matches!(field, Field::Json { .. } | Field::Dynamic { .. }) {
                    let msg = format!(
                        "`exists` needs a JSON key or a dynamic field, but {} is neither",
                        describe_field(&field)
                    );
                    return Err((msg, target.pos()));
                }
                Ok(Expr::Exists(field))
            }
            Syn::Call { name, pos, args } => self.call(name, *pos, args),
            Syn::Path { name, pos, steps } => {
                let field = self.field(name, *pos, steps)?;
                if !matches!(ty_of_field(&field), Ty::Bool | Ty::Any) {
                    let msg = format!("{} is not a condition; compare it, e.g. `{name} > 0`", describe_field(&field));
                    return Err((msg, *pos));
                }
                let right = Operand::Value(Value::Bool(true));
                Ok(Expr::Compare { left: Operand::Field(field), op: CmpOp::Eq, right })
            }
            other => Err(("expected a condition (e.g. `age > 18`), found a value".into(), other.pos())),
        }
    }

    fn comparisons(&self, first: &Syn, rest: &[(CmpOp, usize, Syn)]) -> Result<Expr, Fail> {
        let a = self.operand(first)?;
        match rest {
            [(op, op_pos, second)] => {
                let b = self.operand(second)?;
                compare(a, first.pos(), *op, *op_pos, b, second.pos())
            }
            [(op1, pos1, second), (op2, pos2, third)] => {
                let up = |op: CmpOp| matches!(op, CmpOp::Lt | CmpOp::Le);
                let down = |op: CmpOp| matches!(op, CmpOp::Gt | CmpOp::Ge);
                if !((up(*op1) && up(*op2)) || (down(*op1) && down(*op2))) {
                    let msg = "a range must go one way, e.g. `1 < x <= 5` or `5 > x >= 1`";
                    return Err((msg.into(), *pos2));
                }
                let b = self.operand(second)?;
                let c = self.operand(third)?;
                let low = compare(a, first.pos(), *op1, *pos1, b.clone(), second.pos())?;
                let high = compare(b, second.pos(), *op2, *pos2, c, third.pos())?;
                Ok(Expr::And(vec![low, high]))
            }
            [_, _, (_, pos, _), ..] => {
                Err(("at most two comparisons can be chained, as in `1 < x <= 5`; join more with `and`".into(), *pos))
            }
            [] => self.condition(first),
        }
    }

    /// Lowers a node that must be a value (a field, a literal or arithmetic).
    fn operand(&self, s: &Syn) -> Result<Operand, Fail> {
        match s {
            Syn::Int { value, pos } => i64::try_from(*value)
                .map(|i| Operand::Value(Value::Int(i)))
                .map_err(|_| (format!("integer {value} is out of range for Int64"), *pos)),
            Syn::Float { value, .. } => Ok(Operand::Value(Value::Float(*value))),
            Syn::Str { value, .. } => Ok(Operand::Value(Value::Str(value.clone()))),
            Syn::Bool { value, .. } => Ok(Operand::Value(Value::Bool(*value))),
            Syn::Neg { pos, inner } => {
                if let Syn::Int { value, .. } = inner.as_ref() {
                    let v = 0i64.checked_sub_unsigned(*value);
                    return v
                        .map(|i| Operand::Value(Value::Int(i)))
                        .ok_or_else(|| (format!("integer -{value} is out of range for Int64"), *pos));
                }
                let o = self.operand(inner)?;
                let zero = Syn::Int { value: 0, pos: *pos };
                self.arith(ArithOp::Sub, *pos, Operand::Value(Value::Int(0)), &zero, o, inner)
            }
            Syn::Arith { op, pos, left, right } => {
                let l = self.operand(left)?;
                let r = self.operand(right)?;
                self.arith(*op, *pos, l, left, r, right)
            }
            Syn::Path { name, pos, steps } => Ok(Operand::Field(self.field(name, *pos, steps)?)),
            Syn::List { pos, .. } => Err((
                "a list is only allowed after `in` or as the second argument of json_contains_all / _any".into(),
                *pos,
            )),
            other => Err(("expected a value here, found a condition".into(), other.pos())),
        }
    }

    /// `left op right`, checked numeric and folded when both sides are constants.
    fn arith(&self, op: ArithOp, pos: usize, l: Operand, ls: &Syn, r: Operand, rs: &Syn) -> Result<Operand, Fail> {
        for (o, s) in [(&l, ls), (&r, rs)] {
            if !matches!(ty_of(o), Ty::Num | Ty::Any) {
                return Err((format!("`{}` needs numbers, but {} is not a number", op_text(op), describe(o)), s.pos()));
            }
        }
        if matches!(op, ArithOp::Div | ArithOp::Mod) && matches!(r, Operand::Value(Value::Int(0))) {
            return Err(("division by zero".into(), rs.pos()));
        }
        if let (Operand::Value(a), Operand::Value(b)) = (&l, &r) {
            return fold(op, a, b)
                .map(Operand::Value)
                .ok_or_else(|| (format!("`{}` on constants overflows or divides by zero", op_text(op)), pos));
        }
        Ok(Operand::Arith { op, left: Box::new(l), right: Box::new(r) })
    }

    /// The literal elements of a list, all of one type.
    fn list(&self, items: &[Syn]) -> Result<Vec<Value>, Fail> {
        let mut out = Vec::with_capacity(items.len());
        let mut first_ty = None;
        for item in items {
            let Operand::Value(v) = self.operand(item)? else {
                return Err(("list elements must be literal values, e.g. [1, 2, 3]".into(), item.pos()));
            };
            let ty = ty_of_value(&v);
            match first_ty {
                None => first_ty = Some((ty, v.clone())),
                Some((t, ref first)) if t != ty => {
                    let msg = format!("list mixes {} and {}; use one type", describe_value(first), describe_value(&v));
                    return Err((msg, item.pos()));
                }
                Some(_) => {}
            }
            out.push(v);
        }
        Ok(out)
    }

    fn call(&self, name: &str, pos: usize, args: &[Syn]) -> Result<Expr, Fail> {
        let lower = name.to_ascii_lowercase();
        let mode = match lower.as_str() {
            "json_contains" | "array_contains" => ContainsMode::One,
            "json_contains_all" | "array_contains_all" => ContainsMode::All,
            "json_contains_any" | "array_contains_any" => ContainsMode::Any,
            _ => {
                let msg = format!(
                    "unknown function `{name}`; supported: json_contains, json_contains_all, json_contains_any \
                     (and their array_contains* aliases)"
                );
                return Err((msg, pos));
            }
        };
        let [field_arg, value_arg] = args else {
            return Err((format!("`{name}` takes 2 arguments (a field and a value), got {}", args.len()), pos));
        };
        let field = self.field_of(field_arg)?;
        if !matches!(field, Field::Json { .. } | Field::Dynamic { .. }) {
            let msg = format!("`{name}` needs a JSON or dynamic field, but {} is neither", describe_field(&field));
            return Err((msg, field_arg.pos()));
        }
        let values = match (mode, value_arg) {
            (ContainsMode::One, s) => match self.operand(s)? {
                Operand::Value(v) => vec![v],
                _ => return Err((format!("the second argument of `{name}` must be a literal value"), s.pos())),
            },
            (_, Syn::List { items, .. }) => self.list(items)?,
            (_, s) => return Err((format!("the second argument of `{name}` must be a list, e.g. [1, 2]"), s.pos())),
        };
        Ok(Expr::Contains { field, values, mode })
    }

    /// A node that must name a field.
    fn field_of(&self, s: &Syn) -> Result<Field, Fail> {
        match s {
            Syn::Path { name, pos, steps } => self.field(name, *pos, steps),
            other => Err(("expected a field name here".into(), other.pos())),
        }
    }

    fn field(&self, name: &str, pos: usize, steps: &[PathStep]) -> Result<Field, Fail> {
        let schema = self.schema;
        if let Some(f) = schema.fields.iter().find(|f| f.name == name) {
            return match f.data_type {
                DataType::FloatVector => Err((
                    format!("field `{name}` is a vector (FloatVector); vector fields cannot be used in a filter"),
                    pos,
                )),
                DataType::Json => Ok(Field::Json { column: name.to_string(), path: steps.to_vec() }),
                t if !steps.is_empty() => {
                    Err((format!("field `{name}` is {t:?}, not JSON; it cannot be indexed with [..]"), pos))
                }
                t if f.is_primary => Ok(Field::Pk { name: name.to_string(), data_type: t }),
                t => Ok(Field::Column { name: name.to_string(), data_type: t }),
            };
        }
        if !schema.enable_dynamic_field {
            let what = if name == "$meta" { "`$meta` (the dynamic field)".to_string() } else { format!("`{name}`") };
            let msg =
                format!("field {what} does not exist in collection `{}` (and it has no dynamic field)", schema.name);
            return Err((msg, pos));
        }
        if name == "$meta" {
            if !matches!(steps.first(), Some(PathStep::Key(_))) {
                return Err(("`$meta` needs a key, e.g. $meta[\"color\"]".into(), pos));
            }
            return Ok(Field::Dynamic { path: steps.to_vec() });
        }
        let mut path = Vec::with_capacity(1 + steps.len());
        path.push(PathStep::Key(name.to_string()));
        path.extend(steps.iter().cloned());
        Ok(Field::Dynamic { path })
    }
}

/// `l op r` after checking that at least one side is a field and the types can be compared.
fn compare(l: Operand, lpos: usize, op: CmpOp, op_pos: usize, r: Operand, rpos: usize) -> Result<Expr, Fail> {
    if !has_field(&l) && !has_field(&r) {
        return Err(("comparison has no field; compare a field with a value, e.g. `age > 18`".into(), lpos));
    }
    // Point at the literal side when there is one: that is what the user typed wrong.
    let blame = if matches!(l, Operand::Value(_)) { lpos } else { rpos };
    check_comparable(&l, &r, blame)?;
    if !matches!(op, CmpOp::Eq | CmpOp::Ne) && (ty_of(&l) == Ty::Bool || ty_of(&r) == Ty::Bool) {
        return Err(("booleans can only be compared with `==` or `!=`".into(), op_pos));
    }
    Ok(Expr::Compare { left: l, op, right: r })
}

fn check_comparable(l: &Operand, r: &Operand, pos: usize) -> Result<(), Fail> {
    let (lt, rt) = (ty_of(l), ty_of(r));
    if lt != rt && lt != Ty::Any && rt != Ty::Any {
        return Err((format!("cannot compare {} with {}", describe(l), describe(r)), pos));
    }
    Ok(())
}

fn has_field(o: &Operand) -> bool {
    match o {
        Operand::Field(_) => true,
        Operand::Value(_) => false,
        Operand::Arith { left, right, .. } => has_field(left) || has_field(right),
    }
}

fn ty_of(o: &Operand) -> Ty {
    match o {
        Operand::Field(f) => ty_of_field(f),
        Operand::Value(v) => ty_of_value(v),
        Operand::Arith { .. } => Ty::Num,
    }
}

fn ty_of_field(f: &Field) -> Ty {
    match f {
        Field::Pk { data_type, .. } | Field::Column { data_type, .. } => match data_type {
            DataType::Bool => Ty::Bool,
            DataType::Int64 | DataType::Float | DataType::Double => Ty::Num,
            DataType::VarChar => Ty::Str,
            DataType::Json | DataType::FloatVector => Ty::Any,
        },
        Field::Json { .. } | Field::Dynamic { .. } => Ty::Any,
    }
}

fn ty_of_value(v: &Value) -> Ty {
    match v {
        Value::Bool(_) => Ty::Bool,
        Value::Int(_) | Value::Float(_) => Ty::Num,
        Value::Str(_) => Ty::Str,
    }
}

fn describe(o: &Operand) -> String {
    match o {
        Operand::Field(f) => describe_field(f),
        Operand::Value(v) => describe_value(v),
        Operand::Arith { .. } => "an arithmetic expression (a number)".into(),
    }
}

fn describe_field(f: &Field) -> String {
    match f {
        Field::Pk { name, data_type } => format!("primary key `{name}` ({data_type:?})"),
        Field::Column { name, data_type } => format!("field `{name}` ({data_type:?})"),
        Field::Json { column, .. } => format!("JSON field `{column}`"),
        Field::Dynamic { .. } => "a dynamic field key".into(),
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Bool(b) => format!("boolean {b}"),
        Value::Int(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Str(s) if s.chars().count() > 40 => format!("string {:?}…", s.chars().take(40).collect::<String>()),
        Value::Str(s) => format!("string {s:?}"),
    }
}

fn op_text(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Mod => "%",
    }
}

/// `a op b` on numeric constants; `None` on overflow or division by zero.
pub(super) fn fold(op: ArithOp, a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let v = match op {
                ArithOp::Add => x.checked_add(*y),
                ArithOp::Sub => x.checked_sub(*y),
                ArithOp::Mul => x.checked_mul(*y),
                ArithOp::Div => x.checked_div(*y),
                ArithOp::Mod => x.checked_rem(*y),
            };
            v.map(Value::Int)
        }
        _ => {
            let x = as_f64(a)?;
            let y = as_f64(b)?;
            let v = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            };
            v.is_finite().then_some(Value::Float(v))
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}
