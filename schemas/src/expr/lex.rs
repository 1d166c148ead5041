//! Tokens of the filter language, each with its character span.

/// A problem and its character position.
pub(super) type Fail = (String, usize);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A name (`age`, `$meta`) or a keyword (`and`, `IN`, `true`; matched case-insensitively
    /// by the parser).
    Ident(String),
    /// An unsigned integer literal (a sign is a separate token, so `-9223372036854775808`
    /// fits).
    Int(u64),
    Float(f64),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    AndAnd,
    OrOr,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    /// Character offsets `[pos, end)` in the text.
    pub pos: usize,
    pub end: usize,
    /// The source text of the token, for messages (`end of the filter` for [`Tok::Eof`]).
    pub text: String,
}

impl Token {
    pub(super) fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s.eq_ignore_ascii_case(word))
    }
}

/// Splits `text` into tokens, ending with [`Tok::Eof`] at the text's length.
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, Fail> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let next = chars.get(i + 1).copied();
        let tok = match c {
            '(' => one(&mut i, Tok::LParen),
            ')' => one(&mut i, Tok::RParen),
            '[' => one(&mut i, Tok::LBracket),
            ']' => one(&mut i, Tok::RBracket),
            ',' => one(&mut i, Tok::Comma),
            '+' => one(&mut i, Tok::Plus),
            '-' => one(&mut i, Tok::Minus),
            '*' => one(&mut i, Tok::Star),
            '/' => one(&mut i, Tok::Slash),
            '%' => one(&mut i, Tok::Percent),
            '=' if next == Some('=') => two(&mut i, Tok::Eq),
            '=' => return Err(("`=` is not an operator; use `==` to compare".into(), start)),
            '!' if next == Some('=') => two(&mut i, Tok::Ne),
            '!' => one(&mut i, Tok::Bang),
            '<' if next == Some('=') => two(&mut i, Tok::Le),
            '<' => one(&mut i, Tok::Lt),
            '>' if next == Some('=') => two(&mut i, Tok::Ge),
            '>' => one(&mut i, Tok::Gt),
            '&' if next == Some('&') => two(&mut i, Tok::AndAnd),
            '&' => return Err(("`&` is not an operator; use `&&` or `and`".into(), start)),
            '|' if next == Some('|') => two(&mut i, Tok::OrOr),
            '|' => return Err(("`|` is not an operator; use `||` or `or`".into(), start)),
            '"' | '\'' => string(&chars, &mut i)?,
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                number(&chars, &mut i)?
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            c => return Err((format!("unexpected character `{c}`"), start)),
        };
        out.push(Token { tok, pos: start, end: i, text: chars[start..i].iter().collect() });
    }
    out.push(Token { tok: Tok::Eof, pos: chars.len(), end: chars.len(), text: "end of the filter".into() });
    Ok(out)
}

fn one(i: &mut usize, tok: Tok) -> Tok {
    *i += 1;
    tok
}

fn two(i: &mut usize, tok: Tok) -> Tok {
    *i += 2;
    tok
}

/// A quoted string starting at `chars[*i]`, with backslash escapes.
fn string(chars: &[char], i: &mut usize) -> Result<Tok, Fail> {
    let start = *i;
    let quote = chars[start];
    let mut s = String::new();
    *i += 1;
    loop {
        let Some(&c) = chars.get(*i) else {
            return Err((format!("string starting here is never closed; add the closing {quote}"), start));
        };
        *i += 1;
        if c == quote {
            return Ok(Tok::Str(s));
        }
        if c != '\\' {
            s.push(c);
            continue;
        }
        let Some(&e) = chars.get(*i) else {
            return Err((format!("string starting here is never closed; add the closing {quote}"), start));
        };
        *i += 1;
        match e {
            'n' => s.push('\n'),
            't' => s.push('\t'),
            'r' => s.push('\r'),
            '0' => s.push('\0'),
            '\\' | '"' | '\'' => s.push(e),
            'u' => {
                let hex: String = chars.iter().skip(*i).take(4).collect();
                let c = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4).and_then(char::from_u32);
                let Some(c) = c else {
                    return Err(("`\\u` must be followed by 4 hex digits of a valid character".into(), *i - 2));
                };
                s.push(c);
                *i += 4;
            }
            // Kept as written, so `like "50\%"` can escape the wildcard.
            other => {
                s.push('\\');
                s.push(other);
            }
        }
    }
}

/// An integer or float literal starting at `chars[*i]`: `12`, `1.5`, `.5`, `1e3`, `2.5E-3`.
fn number(chars: &[char], i: &mut usize) -> Result<Tok, Fail> {
    let start = *i;
    let digits = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_ascii_digit()) {
            *i += 1;
        }
    };
    digits(i);
    let mut float = false;
    if chars.get(*i) == Some(&'.') && chars.get(*i + 1).is_some_and(|c| c.is_ascii_digit()) {
        float = true;
        *i += 1;
        digits(i);
    } else if chars.get(*i) == Some(&'.') && !chars.get(*i + 1).is_some_and(|c| c.is_alphabetic()) {
        float = true;
        *i += 1;
    }
    if matches!(chars.get(*i), Some('e' | 'E')) {
        let mut j = *i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            *i = j;
            digits(i);
        }
    }
    if chars.get(*i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
        return Err(("invalid number: a name cannot start with a digit".into(), start));
    }
    let text: String = chars[start..*i].iter().collect();
    if float {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
            _ => Err((format!("float {text} is out of range"), start)),
        }
    } else {
        text.parse::<u64>().map(Tok::Int).map_err(|_| (format!("integer {text} is out of range for Int64"), start))
    }
}
