//! A section name is a Python regular expression (Glance compiles it with `re.compile` and
//! tries it with `search`); this rewrites it into the `regex` crate's syntax with the meaning
//! Python gives it, or says why it cannot.
//!
//! Most of the syntax is shared; what is rewritten is where the crate would read the same text
//! differently: `\Z` (`\z` here); `$`, which in Python also matches before a final newline;
//! character classes, where `[`, `&&`, `~~` and `--` are literal to Python but nest or combine
//! sets here, and `\b` is a backspace; `\<` and `\>`, literal to Python but word boundaries here;
//! a `{` that does not start a valid repetition, literal to Python but an error here (and
//! `{,n}`, which Python reads as `{0,n}`); escaped non-ASCII characters. Refused: what the
//! crate cannot do (back-references, look-around, octal and `\N{...}` escapes) and what it would
//! do differently (possessive quantifiers, verbose mode). Left as they are, as no rewrite can
//! close the gap: the Unicode tables behind `\w`, `\s`, `\b` and case-insensitive matching
//! differ from Python's on a few exotic characters.

use std::iter::Peekable;
use std::str::Chars;

use regex::Regex;

type Source<'a> = Peekable<Chars<'a>>;

/// The regular expression Python would compile from `python`, ready for `is_match` (Python's
/// `search`: anchored only where the pattern says so).
pub(super) fn compile(python: &str) -> Result<Regex, String> {
    let rust = translate(python)?;
    Regex::new(&rust).map_err(|e| match e {
        // The message ends with its reason; the lines above it quote the rewritten pattern,
        // which would only mislead.
        regex::Error::Syntax(text) => {
            let reason = text.lines().last().unwrap_or_default();
            format!(
                "not a regular expression: {}",
                reason.trim_start_matches("error: ")
            )
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("the regular expression compiles to more than {limit} bytes")
        }
        other => format!("not a regular expression: {other}"),
    })
}

fn translate(python: &str) -> Result<String, String> {
    let mut out = String::with_capacity(python.len() + 8);
    let mut source = python.chars().peekable();
    // Whether the last thing written was a repetition, which a `+` would make possessive.
    let mut after_repetition = false;
    while let Some(c) = source.next() {
        let repetition = match c {
            '\\' => {
                escape(&mut source, &mut out, false)?;
                false
            }
            '[' => {
                class(&mut source, &mut out)?;
                false
            }
            '{' => brace(&mut source, &mut out),
            // Python's `$` (without MULTILINE) also matches before a newline that ends the
            // text. With MULTILINE both already match before every newline, so the added
            // branch changes nothing there.
            '$' => {
                out.push_str(r"(?:$|\n\z)");
                false
            }
            '(' => {
                out.push('(');
                if source.peek() == Some(&'?') {
                    source.next();
                    out.push('?');
                    flags(&mut source, &mut out)?;
                }
                false
            }
            '+' if after_repetition => {
                return Err(
                    "possessive quantifiers (`*+`, `++`, `?+`, `{m,n}+`) are not \
                            supported"
                        .into(),
                );
            }
            // A lazy repetition: what follows it does not make it possessive.
            '?' if after_repetition => {
                out.push('?');
                false
            }
            '*' | '+' | '?' => {
                out.push(c);
                true
            }
            _ => {
                out.push(c);
                false
            }
        };
        after_repetition = repetition;
    }
    Ok(out)
}

/// After `(?`: Python's inline flags pass through, except verbose mode, whose comments and
/// whitespace rules differ between the two.
fn flags(source: &mut Source, out: &mut String) -> Result<(), String> {
    let mut turning_on = true;
    while let Some(&c) = source.peek() {
        if !(c.is_ascii_alphabetic() || c == '-') {
            break;
        }
        source.next();
        if c == '-' {
            turning_on = false;
        } else if c == 'x' && turning_on {
            return Err("verbose mode `(?x)` is not supported".into());
        }
        out.push(c);
    }
    Ok(())
}

/// What a character class holds, one item at a time.
enum Item {
    /// One character, written so the crate reads it as that character; it may end a range.
    Char(String),
    /// `\d`, `\w` and the like, which may not.
    Category(String),
}

/// A `[...]` read as Python's `sre_parse` reads it: `]` first is literal, `-` makes a range
/// between two characters and is literal before the closing `]`, and everything else is
/// one character or an escape. The crate's class syntax is then written with every literal
/// escaped, so none of its nesting or set operations can arise.
fn class(source: &mut Source, out: &mut String) -> Result<(), String> {
    const UNCLOSED: &str = "a `[` character class is never closed";
    out.push('[');
    if source.peek() == Some(&'^') {
        source.next();
        out.push('^');
    }
    let mut first = true;
    loop {
        let c = source.next().ok_or(UNCLOSED)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        let low = class_item(c, source)?;
        if source.peek() != Some(&'-') {
            out.push_str(low.text());
            continue;
        }
        source.next();
        match source.next().ok_or(UNCLOSED)? {
            ']' => {
                out.push_str(low.text());
                out.push_str(r"\-");
                break;
            }
            c => match (low, class_item(c, source)?) {
                (Item::Char(low), Item::Char(high)) => {
                    out.push_str(&low);
                    out.push('-');
                    out.push_str(&high);
                }
                _ => return Err("a range in a character class must be between characters".into()),
            },
        }
    }
    out.push(']');
    Ok(())
}

impl Item {
    fn text(&self) -> &str {
        match self {
            Item::Char(text) | Item::Category(text) => text,
        }
    }
}

fn class_item(c: char, source: &mut Source) -> Result<Item, String> {
    if c != '\\' {
        return Ok(Item::Char(literal(c)));
    }
    let mut text = String::new();
    let category = escape(source, &mut text, true)?;
    Ok(if category {
        Item::Category(text)
    } else {
        Item::Char(text)
    })
}

/// After a `\`: writes the escape as the crate must read it, in a class or not. Returns
/// whether it is a category (`\d`, `\s`, `\w` and their negations).
fn escape(source: &mut Source, out: &mut String, in_class: bool) -> Result<bool, String> {
    let c = source.next().ok_or("the pattern ends in a lone `\\`")?;
    match c {
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
            out.push('\\');
            out.push(c);
            return Ok(true);
        }
        // A backspace in a class, a word boundary outside one, in both.
        'b' if in_class => out.push_str(r"\x08"),
        'A' | 'b' | 'B' | 'z' if !in_class => {
            out.push('\\');
            out.push(c);
        }
        'Z' if !in_class => out.push_str(r"\z"),
        'a' | 'f' | 'n' | 'r' | 't' | 'v' => {
            out.push('\\');
            out.push(c);
        }
        'x' | 'u' | 'U' => {
            let digits = match c {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            out.push('\\');
            out.push(c);
            for _ in 0..digits {
                match source.next_if(char::is_ascii_hexdigit) {
                    Some(digit) => out.push(digit),
                    None => return Err(format!("`\\{c}` needs exactly {digits} hex digits")),
                }
            }
        }
        '0'..='9' => {
            return Err(
                "back-references and octal escapes are not supported (write `\\xNN` for a \
                 character)"
                    .into(),
            );
        }
        'N' => {
            return Err("`\\N{...}` is not supported (write the character or `\\uXXXX`)".into());
        }
        c if c.is_ascii_alphabetic() => {
            return Err(format!("`\\{c}` is not an escape Python knows"));
        }
        // Python reads any other escaped character as itself.
        c => out.push_str(&literal(c)),
    }
    Ok(false)
}

/// After a `{`: Python reads `{m}`, `{m,}`, `{,n}`, `{m,n}` and `{,}` as a repetition and
/// any other `{` as itself. Returns whether it was a repetition.
fn brace(source: &mut Source, out: &mut String) -> bool {
    let mut ahead = source.clone();
    let low: String = std::iter::from_fn(|| ahead.next_if(char::is_ascii_digit)).collect();
    let comma = ahead.next_if_eq(&',').is_some();
    let high: String = if comma {
        std::iter::from_fn(|| ahead.next_if(char::is_ascii_digit)).collect()
    } else {
        String::new()
    };
    let empty = low.is_empty() && !comma;
    if empty || ahead.next_if_eq(&'}').is_none() {
        out.push_str(r"\{");
        return false;
    }
    *source = ahead;
    let low = if low.is_empty() { "0" } else { &low };
    if comma {
        out.push_str(&format!("{{{low},{high}}}"));
    } else {
        out.push_str(&format!("{{{low}}}"));
    }
    true
}

/// `c` as the crate reads a literal character, in a class or not.
fn literal(c: char) -> String {
    regex::escape(c.encode_utf8(&mut [0; 4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether Python's `re.compile(pattern).search(text)` would find a match, as the
    /// translation decides it.
    fn search(pattern: &str, text: &str) -> bool {
        compile(pattern).unwrap().is_match(text)
    }

    #[test]
    fn protections_pattern_search_is_unanchored_unless_the_pattern_anchors() {
        assert!(search("x_owner_.*", "x_owner_foo"));
        assert!(search("x_owner_.*", "foo_x_owner_bar"));
        assert!(search("^x_owner_.*", "x_owner_foo"));
        assert!(!search("^x_owner_.*", "foo_x_owner_bar"));
        // Not anchored at the end either.
        assert!(search("^spl_create_prop", "spl_create_prop_more"));
        assert!(!search("^spl_create_prop$", "spl_create_prop_more"));
    }

    #[test]
    fn protections_pattern_dollar_matches_before_a_final_newline() {
        assert!(search("^secret$", "secret"));
        assert!(search("^secret$", "secret\n"));
        assert!(!search("^secret$", "secret\n\n"));
        assert!(!search("^secret$", "secret\nx"));
        assert!(search(r"^secret\Z", "secret"));
        assert!(!search(r"^secret\Z", "secret\n"));
        assert!(search("(?m)^a$", "a\nb"));
    }

    #[test]
    fn protections_pattern_classes_read_as_python_reads_them() {
        // `[[:alpha:]]` is the set `[:alph` followed by a literal `]`.
        assert!(search("^[[:alpha:]]$", "a]"));
        assert!(search("^[[:alpha:]]$", "[]"));
        assert!(!search("^[[:alpha:]]$", "b]"));
        // `&&`, `~~` and `--` are literal (the last a range from `+` to `-`).
        assert!(search("^[a&&b]$", "&"));
        assert!(search("^[a~~b]$", "~"));
        assert!(search("^[+--]$", ","));
        assert!(!search("^[+--]$", "a"));
        // `]` first is literal; `-` before the closing `]` is literal.
        assert!(search("^[]a]$", "]"));
        assert!(search("^[^]a]$", "b"));
        assert!(search("^[a-]$", "-"));
        assert!(search("^[a-c]$", "b"));
        assert!(search(r"^[\b]$", "\u{8}"));
        assert!(search(r"^[\d_]+$", "1_2"));
        assert!(search(r"^[\]\\]+$", "]\\"));
    }

    #[test]
    fn protections_pattern_escapes_read_as_python_reads_them() {
        assert!(search(r"^\<a\>$", "<a>"));
        assert!(search(r"^\é\_\ \-$", "é_ -"));
        assert!(search(r"^\x41\u0042\U00000043$", "ABC"));
        assert!(search(r"\ba\b", "x a y"));
        assert!(search(r"a\b{start}$", "a{start}"));
        assert!(!search(r"^\b{start}$", "{start}"));
    }

    #[test]
    fn protections_pattern_braces_that_do_not_repeat_are_literal() {
        assert!(search("^{foo}$", "{foo}"));
        assert!(search("^x{}$", "x{}"));
        assert!(search("^a{1,2$", "a{1,2"));
        assert!(search("^a{,2}$", "aa"));
        assert!(search("^a{,2}$", ""));
        assert!(!search("^a{,2}$", "aaa"));
        assert!(search("^a{2,}$", "aaaa"));
        assert!(search("^a{2}$", "aa"));
        assert!(search("^a{,}$", "aaaa"));
        assert!(search("^a{1,2}?b$", "ab"));
    }

    #[test]
    fn protections_pattern_refusals_say_why() {
        let cases = [
            ("^[0-9)", "never closed"),
            ("(", "not a regular expression"),
            ("a*+", "possessive"),
            ("a{2}+", "possessive"),
            ("(?x)a b", "verbose"),
            (r"(a)\1", "back-references"),
            (r"\0", "octal"),
            (r"\N{EM DASH}", r"\N{...}"),
            (r"\q", "not an escape"),
            (r"[\A]", "not an escape"),
            (r"\x4", "hex digits"),
            (r"[\d-z]", "between characters"),
            ("(?=a)", "not a regular expression"),
            ("a\\", "lone"),
        ];
        for (pattern, reason) in cases {
            let error = compile(pattern).unwrap_err();
            assert!(error.contains(reason), "{pattern}: {error}");
            assert!(!error.contains('\n'), "{pattern}: {error}");
        }
    }

    #[test]
    fn protections_pattern_lazy_repetition_is_not_possessive() {
        assert!(search("^a+?b$", "aab"));
        assert!(search("(?i)^X_", "x_y"));
        assert!(search("^(?P<n>a)b", "ab"));
    }
}
