//! Reading a check string: the tokenizer and the recursive-descent parser of oslo.policy's
//! rule language (`oslo_policy/_parser.py`), with oslo's precedence (`not` > `and` > `or`), into
//! `check::Check`. Errors carry the column. Evaluation is `check`'s, not this file's.

use std::fmt;

use super::check::{Check, MAX_NESTING, SyntaxError, Template};

/// Parses a check string. The empty string allows everyone, as in oslo.policy.
pub(super) fn parse(text: &str) -> Result<Check, SyntaxError> {
    if text.is_empty() {
        return Ok(Check::Always);
    }
    let tokens = tokenize(text)?;
    let end = text.chars().count() + 1;
    if tokens.is_empty() {
        // oslo.policy denies a blank check string after logging that it cannot read it.
        return Err(SyntaxError {
            column: 1,
            message: "the check string is blank: write \"\" or \"@\" to allow everyone, \
                      \"!\" to allow no one"
                .to_owned(),
        });
    }
    let mut parser = Parser {
        tokens: tokens.into(),
        end,
    };
    let check = parser.disjunction(0)?;
    match parser.tokens.front() {
        None => Ok(check),
        Some(token) => Err(SyntaxError {
            column: token.column,
            message: match token.kind {
                Kind::Close => "`)` closes no `(`".to_owned(),
                _ => format!("expected `and`, `or` or the end, found {token}"),
            },
        }),
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    column: usize,
}

#[derive(Debug)]
enum Kind {
    Open,
    Close,
    And,
    Or,
    Not,
    Check { check: Check, text: String },
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Open => f.write_str("`(`"),
            Kind::Close => f.write_str("`)`"),
            Kind::And => f.write_str("`and`"),
            Kind::Or => f.write_str("`or`"),
            Kind::Not => f.write_str("`not`"),
            Kind::Check { text, .. } => write!(f, "`{text}`"),
        }
    }
}

/// oslo.policy's tokenizer: words split on whitespace; a word's leading `(` and trailing `)`
/// are parentheses, so `%(key)s` inside a check survives; `and`, `or`, `not` in any case are
/// operators; anything else is a check.
fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    for (start, word) in words(text) {
        let column = text[..start].chars().count() + 1;
        let rest = word.trim_start_matches('(');
        let opens = word.len() - rest.len();
        tokens.extend((0..opens).map(|i| Token {
            kind: Kind::Open,
            column: column + i,
        }));
        let clean = rest.trim_end_matches(')');
        let closes = rest.len() - clean.len();
        let column = column + opens;
        let kind = match clean.to_lowercase().as_str() {
            "" => None,
            "and" => Some(Kind::And),
            "or" => Some(Kind::Or),
            "not" => Some(Kind::Not),
            _ if is_quoted(rest) => {
                return Err(SyntaxError {
                    column,
                    message: format!(
                        "`{rest}` is a quoted string, not a check: write `'{}':%(key)s` to \
                         compare it with the target",
                        &rest[1..rest.len() - 1]
                    ),
                });
            }
            _ => Some(Kind::Check {
                check: parse_check(clean, column)?,
                text: clean.to_owned(),
            }),
        };
        tokens.extend(kind.map(|kind| Token { kind, column }));
        let column = column + clean.chars().count();
        tokens.extend((0..closes).map(|i| Token {
            kind: Kind::Close,
            column: column + i,
        }));
    }
    Ok(tokens)
}

/// The whitespace-separated words of `text`, each with its byte offset.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, &text[s..]));
    }
    words
}

fn is_quoted(word: &str) -> bool {
    word.len() >= 2
        && ((word.starts_with('\'') && word.ends_with('\''))
            || (word.starts_with('"') && word.ends_with('"')))
}

/// One `kind:match` word, `@` or `!`.
fn parse_check(word: &str, column: usize) -> Result<Check, SyntaxError> {
    match word {
        "@" => return Ok(Check::Always),
        "!" => return Ok(Check::Never),
        _ => {}
    }
    let error = |message: String| SyntaxError { column, message };
    let Some((kind, matched)) = word.split_once(':') else {
        return Err(error(format!(
            "`{word}` is not a check: expected `kind:value`, `@` or `!`"
        )));
    };
    let match_column = column + kind.chars().count() + 1;
    Ok(match kind {
        // oslo.policy looks the name up as written: no substitution.
        "rule" => Check::Rule {
            name: matched.to_owned(),
            column,
        },
        "role" => Check::Role(Template::parse(matched, match_column)?),
        "http" | "https" => {
            return Err(error(format!(
                "`{kind}:` checks ask a remote server, which glint does not do"
            )));
        }
        _ => {
            let matcher = Template::parse(matched, match_column)?;
            match literal(kind) {
                Literal::Value(value) => Check::Literal { value, matcher },
                Literal::Key => Check::Credential {
                    key: kind.to_owned(),
                    matcher,
                },
                Literal::Unsupported => {
                    return Err(error(format!(
                        "`{kind}` is neither a credential name nor a literal glint reads \
                         (a quoted string, an integer, True, False or None)"
                    )));
                }
            }
        }
    })
}

enum Literal {
    /// What Python's `str(ast.literal_eval(kind))` gives.
    Value(String),
    /// Not a Python literal: oslo.policy reads the kind as a credential name.
    Key,
    /// A literal (or broken one) that glint does not evaluate: a float, a list, escapes.
    Unsupported,
}

/// Reads the kind of a generic check as oslo.policy does, by trying it as a Python literal.
/// Only the literals a policy can sensibly compare against are supported.
fn literal(kind: &str) -> Literal {
    if matches!(kind, "True" | "False" | "None") {
        return Literal::Value(kind.to_owned());
    }
    if let Some(quote) = kind.chars().next().filter(|c| matches!(c, '\'' | '"')) {
        let inner = &kind[1..];
        return match inner.strip_suffix(quote) {
            Some(inner) if !inner.contains(quote) && !inner.contains('\\') => {
                Literal::Value(inner.to_owned())
            }
            _ => Literal::Unsupported,
        };
    }
    let digits = kind.strip_prefix(['-', '+']).unwrap_or(kind);
    if digits.starts_with(|c: char| c.is_ascii_digit()) {
        // Python refuses leading zeros on a non-zero integer; str() drops a sign of zero.
        let plain = digits.bytes().all(|b| b.is_ascii_digit())
            && (!digits.starts_with('0') || digits.bytes().all(|b| b == b'0'));
        return match kind.parse::<i128>() {
            Ok(n) if plain => Literal::Value(n.to_string()),
            _ => Literal::Unsupported,
        };
    }
    if kind.is_empty() || kind.starts_with(['[', '{', '.']) {
        return Literal::Unsupported;
    }
    Literal::Key
}

/// Recursive descent with oslo.policy's precedence: `not` over `and` over `or`. oslo.policy
/// reduces greedily on a stack, but builds the same trees for every string it accepts.
struct Parser {
    tokens: std::collections::VecDeque<Token>,
    end: usize,
}

impl Parser {
    fn disjunction(&mut self, depth: usize) -> Result<Check, SyntaxError> {
        let first = self.conjunction(depth)?;
        if !self.next_is(|k| matches!(k, Kind::Or)) {
            return Ok(first);
        }
        let mut any = vec![first];
        while self.eat(|k| matches!(k, Kind::Or)) {
            any.push(self.conjunction(depth)?);
        }
        Ok(Check::Any(any))
    }

    fn conjunction(&mut self, depth: usize) -> Result<Check, SyntaxError> {
        let first = self.negation(depth)?;
        if !self.next_is(|k| matches!(k, Kind::And)) {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.eat(|k| matches!(k, Kind::And)) {
            all.push(self.negation(depth)?);
        }
        Ok(Check::All(all))
    }

    fn negation(&mut self, depth: usize) -> Result<Check, SyntaxError> {
        let Some(token) = self.tokens.pop_front() else {
            return Err(SyntaxError {
                column: self.end,
                message: "the check string ends where a check should follow".to_owned(),
            });
        };
        match token.kind {
            Kind::Check { check, .. } => Ok(check),
            Kind::Not => {
                Self::nest(&token, depth)?;
                Ok(Check::Not(Box::new(self.negation(depth + 1)?)))
            }
            Kind::Open => {
                Self::nest(&token, depth)?;
                let inner = self.disjunction(depth + 1)?;
                match self.tokens.pop_front() {
                    Some(Token {
                        kind: Kind::Close, ..
                    }) => Ok(inner),
                    Some(other) => Err(SyntaxError {
                        column: other.column,
                        message: format!("expected `and`, `or` or `)`, found {other}"),
                    }),
                    None => Err(SyntaxError {
                        column: token.column,
                        message: "this `(` is never closed".to_owned(),
                    }),
                }
            }
            Kind::Close | Kind::And | Kind::Or => Err(SyntaxError {
                column: token.column,
                message: format!("expected a check, found {token}"),
            }),
        }
    }

    fn nest(token: &Token, depth: usize) -> Result<(), SyntaxError> {
        if depth < MAX_NESTING {
            return Ok(());
        }
        Err(SyntaxError {
            column: token.column,
            message: format!("parentheses and `not` nest deeper than {MAX_NESTING}"),
        })
    }

    fn next_is(&self, wanted: impl Fn(&Kind) -> bool) -> bool {
        self.tokens.front().is_some_and(|t| wanted(&t.kind))
    }

    fn eat(&mut self, wanted: impl Fn(&Kind) -> bool) -> bool {
        let found = self.next_is(wanted);
        if found {
            self.tokens.pop_front();
        }
        found
    }
}
