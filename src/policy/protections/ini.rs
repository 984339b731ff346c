//! Reading a property protection file the way Glance does: Python's `configparser.ConfigParser()`
//! with its defaults, each section and option with its line, and `%` interpolation on the
//! values Glance asks for.
//!
//! What those defaults mean, and so what this reads: `[name]` headers (the name runs to the
//! *last* `]` of the line, so a regular expression may hold `]`); `key = value` or
//! `key: value`, split at the first `=` or `:`, the key lower-cased; whole-line comments
//! starting `#` or `;` (not after a value: `admin # x` is the value); a line indented deeper
//! than its option's continues the value, and blank lines do not end a value; `[DEFAULT]`
//! gives every section the options it lacks. A section or an option given twice, text before
//! the first header and a line that is neither header nor option are refused, as
//! `configparser`'s strict mode refuses them.

use std::collections::HashSet;

/// The section whose options every other section inherits.
const DEFAULT_SECTION: &str = "DEFAULT";

/// `configparser`'s `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// How many `%(name)s` one value may expand through. Python has no such bound: nested
/// references can multiply without end, and refusing the file beats hanging on it.
const MAX_REFERENCES: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct Ini {
    defaults: Vec<Entry>,
    pub sections: Vec<Section>,
}

#[derive(Debug)]
pub(super) struct Section {
    pub name: String,
    /// The 1-based line of its header.
    pub line: usize,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: String,
    /// Its lines as read, joined by `\n` once the file is read.
    lines: Vec<String>,
    line: usize,
}

/// Why the file cannot be read, and where; `section` when it concerns one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IniError {
    pub line: usize,
    pub section: Option<String>,
    pub message: String,
}

/// Where options go as the file is read.
#[derive(Clone, Copy)]
enum Target {
    Defaults,
    Section(usize),
}

pub(super) fn read(text: &str) -> Result<Ini, IniError> {
    let mut ini = Ini::default();
    let mut target: Option<Target> = None;
    // The option whose value a deeper-indented line continues.
    let mut open: Option<usize> = None;
    let mut indent_level = 0;
    let mut sections_seen = HashSet::new();
    let mut options_seen = HashSet::new();
    // configparser reports a malformed line only once the whole file is read, so a duplicate
    // further down wins over it, as here.
    let mut malformed: Option<IniError> = None;

    // Python reads the file with universal newlines: `\r\n` and a lone `\r` end lines too.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for (index, line) in text.lines().enumerate() {
        let lineno = index + 1;
        let stripped = line.trim();
        let comment = stripped.starts_with('#') || stripped.starts_with(';');
        if comment || stripped.is_empty() {
            // A blank line belongs to the value being read (trailing ones are trimmed at the
            // end); a comment line is skipped without ending it.
            if let (false, Some(target), Some(open)) = (comment, target, open) {
                ini.entries_mut(target)[open].lines.push(String::new());
            }
            continue;
        }

        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if let (Some(target), Some(open), true) = (target, open, indent > indent_level) {
            ini.entries_mut(target)[open]
                .lines
                .push(stripped.to_owned());
            continue;
        }
        indent_level = indent;

        if let Some(name) = header(stripped) {
            open = None;
            if name == DEFAULT_SECTION {
                target = Some(Target::Defaults);
            } else if !sections_seen.insert(name.to_owned()) {
                return Err(IniError {
                    line: lineno,
                    section: Some(name.to_owned()),
                    message: "the section is given twice".into(),
                });
            } else {
                ini.sections.push(Section {
                    name: name.to_owned(),
                    line: lineno,
                    entries: Vec::new(),
                });
                target = Some(Target::Section(ini.sections.len() - 1));
            }
            continue;
        }

        let Some(target) = target else {
            return Err(IniError {
                line: lineno,
                section: None,
                message: "text before the first `[section]` header".into(),
            });
        };
        let section_name = match target {
            Target::Defaults => DEFAULT_SECTION,
            Target::Section(i) => &ini.sections[i].name,
        }
        .to_owned();
        let Some((key, value)) = option(stripped) else {
            malformed.get_or_insert(IniError {
                line: lineno,
                section: Some(section_name),
                message: "neither a `[section]` header nor `key = value`".into(),
            });
            continue;
        };
        if key.is_empty() {
            malformed.get_or_insert(IniError {
                line: lineno,
                section: Some(section_name.clone()),
                message: "an option with no name before its `=` or `:`".into(),
            });
        }
        if !options_seen.insert((section_name.clone(), key.clone())) {
            return Err(IniError {
                line: lineno,
                section: Some(section_name),
                message: format!("option `{key}` is given twice"),
            });
        }
        let entries = ini.entries_mut(target);
        entries.push(Entry {
            key,
            lines: vec![value.to_owned()],
            line: lineno,
        });
        open = Some(entries.len() - 1);
    }

    match malformed {
        Some(error) => Err(error),
        None => Ok(ini),
    }
}

/// configparser's `\[(?P<header>.+)\]` matched at the start of the stripped line: the name
/// runs to the last `]`, and whatever follows that `]` is ignored.
fn header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

/// configparser's `(?P<option>.*?)\s*(?P<vi>=|:)\s*(?P<value>.*)$`: split at the first `=` or
/// `:`; the key is lower-cased (`optionxform`).
fn option(line: &str) -> Option<(String, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim_end().to_lowercase();
    Some((key, line[at + 1..].trim()))
}

impl Ini {
    fn entries_mut(&mut self, target: Target) -> &mut Vec<Entry> {
        match target {
            Target::Defaults => &mut self.defaults,
            Target::Section(i) => &mut self.sections[i].entries,
        }
    }

    /// The option `key` of `section`, else of `[DEFAULT]`: its raw value and its line.
    fn lookup(&self, section: &Section, key: &str) -> Option<(String, usize)> {
        section
            .entries
            .iter()
            .chain(&self.defaults)
            .find(|entry| entry.key == key)
            // configparser joins a value's lines and trims the blank ones at its end.
            .map(|entry| (entry.lines.join("\n").trim_end().to_owned(), entry.line))
    }

    /// What `ConfigParser.get(section, key)` returns: the value with its `%%` and `%(name)s`
    /// interpolated, and the line of the option. `None` when neither the section nor
    /// `[DEFAULT]` has the option; `Err` says what is wrong with a `%`.
    pub fn get(&self, section: &Section, key: &str) -> Option<(Result<String, String>, usize)> {
        let (raw, line) = self.lookup(section, key)?;
        let mut value = String::new();
        let mut budget = MAX_REFERENCES;
        let result = self
            .interpolate(section, &raw, 1, &mut value, &mut budget)
            .map(|()| value);
        Some((result, line))
    }

    /// configparser's `BasicInterpolation._interpolate_some`.
    fn interpolate(
        &self,
        section: &Section,
        mut rest: &str,
        depth: usize,
        out: &mut String,
        budget: &mut usize,
    ) -> Result<(), String> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(format!(
                "`%(name)s` references nest more than {MAX_INTERPOLATION_DEPTH} deep"
            ));
        }
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("%(") {
                let name = after
                    .find(')')
                    .filter(|&close| close > 0 && after[close + 1..].starts_with('s'))
                    .map(|close| (&after[..close], &after[close + 2..]));
                let Some((name, after)) = name else {
                    return Err(format!("bad `%(name)s` reference at `{rest}`"));
                };
                let name = name.to_lowercase();
                let Some((value, _)) = self.lookup(section, &name) else {
                    return Err(format!(
                        "`%({name})s` names no option of the section or of [DEFAULT]"
                    ));
                };
                *budget = budget.checked_sub(1).ok_or_else(|| {
                    format!("`%(name)s` references expand more than {MAX_REFERENCES} times")
                })?;
                if value.contains('%') {
                    self.interpolate(section, &value, depth + 1, out, budget)?;
                } else {
                    out.push_str(&value);
                }
                rest = after;
            } else {
                return Err(format!(
                    "`%` must be followed by `%` or `(` (write `%%` for a `%`), found `{rest}`"
                ));
            }
        }
        out.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(ini: &Ini, section: &str, key: &str) -> Option<Result<String, String>> {
        let section = ini.sections.iter().find(|s| s.name == section).unwrap();
        ini.get(section, key).map(|(value, _)| value)
    }

    fn value(ini: &Ini, section: &str, key: &str) -> String {
        get(ini, section, key).unwrap().unwrap()
    }

    #[test]
    fn protections_ini_sections_keep_file_order_and_lines() {
        let ini = read("# c\n[b]\nx = 1\n\n[a]\ny: 2\n").unwrap();
        let names: Vec<(&str, usize)> = ini
            .sections
            .iter()
            .map(|s| (s.name.as_str(), s.line))
            .collect();
        assert_eq!(names, [("b", 2), ("a", 5)]);
        assert_eq!(value(&ini, "a", "y"), "2");
    }

    #[test]
    fn protections_ini_header_runs_to_the_last_bracket() {
        let ini = read("[[a-z]]_x] trailing\nk = v\n[ spaced ]\nk = v\n").unwrap();
        assert_eq!(ini.sections[0].name, "[a-z]]_x");
        assert_eq!(ini.sections[1].name, " spaced ");
        // `[]` has nothing between the brackets: not a header.
        assert_eq!(read("[]\n").unwrap_err().line, 1);
    }

    #[test]
    fn protections_ini_options_split_at_the_first_delimiter_and_lower_keys() {
        let ini = read("[s]\nCreate : a=b:c\nread=   x , y  \n").unwrap();
        assert_eq!(value(&ini, "s", "create"), "a=b:c");
        assert_eq!(value(&ini, "s", "read"), "x , y");
    }

    #[test]
    fn protections_ini_comments_are_whole_lines_only() {
        let ini = read("[s]\n  ; note\ncreate = admin # not a comment\n").unwrap();
        assert_eq!(value(&ini, "s", "create"), "admin # not a comment");
    }

    #[test]
    fn protections_ini_indented_lines_continue_a_value_across_blank_lines() {
        let text = "[s]\ncreate = admin,\n  member\n\n  # skipped\n\n    reader\n\nread = x\n";
        let ini = read(text).unwrap();
        assert_eq!(value(&ini, "s", "create"), "admin,\nmember\n\n\nreader");
        assert_eq!(value(&ini, "s", "read"), "x");
        // An indented option after a header is not a continuation: nothing is open.
        let ini = read("[s]\n  create = a\nread = b\n").unwrap();
        assert_eq!(value(&ini, "s", "create"), "a");
        assert_eq!(value(&ini, "s", "read"), "b");
    }

    #[test]
    fn protections_ini_default_fills_missing_options() {
        let ini =
            read("[DEFAULT]\ndelete = admin\n[s]\ncreate = x\n[DEFAULT]\nread = y\n").unwrap();
        assert_eq!(ini.sections.len(), 1);
        assert_eq!(value(&ini, "s", "delete"), "admin");
        assert_eq!(value(&ini, "s", "read"), "y");
        assert_eq!(value(&ini, "s", "create"), "x");
        assert!(get(&ini, "s", "update").is_none());
    }

    #[test]
    fn protections_ini_refusals_name_the_line() {
        let cases = [
            ("create = a\n[s]\n", 1, None),
            ("[s]\ncreate = a\n[s]\n", 3, Some("s")),
            ("[s]\ncreate = a\nCREATE = b\n", 3, Some("s")),
            ("[DEFAULT]\nx = 1\n[DEFAULT]\nx = 2\n", 4, Some("DEFAULT")),
            ("[s]\njust words\n", 2, Some("s")),
            ("[s]\n= admin\n", 2, Some("s")),
        ];
        for (text, line, section) in cases {
            let error = read(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error:?}");
            assert_eq!(error.section.as_deref(), section, "{text:?}");
        }
        // A duplicate further down is reported before an earlier malformed line, as
        // configparser raises it at once and the malformed line only at the end.
        assert_eq!(read("[s]\nwords\n[s]\n").unwrap_err().line, 3);
    }

    #[test]
    fn protections_ini_carriage_returns_end_lines() {
        let ini = read("[s]\r\ncreate = a\rread = b\r\n").unwrap();
        assert_eq!(value(&ini, "s", "create"), "a");
        assert_eq!(value(&ini, "s", "read"), "b");
    }

    #[test]
    fn protections_ini_interpolation_is_configparsers() {
        let text = "[DEFAULT]\nops = admin\n[s]\nbase = %(OPS)s,member\n\
                    create = %(base)s\nread = 100%%\nupdate = 5%\ndelete = %(nope)s\n\
                    a = %(a)s\nb = %(x\nc = %(ops)d\n";
        let ini = read(text).unwrap();
        assert_eq!(value(&ini, "s", "create"), "admin,member");
        assert_eq!(value(&ini, "s", "read"), "100%");
        for key in ["update", "delete", "a", "b", "c"] {
            assert!(get(&ini, "s", key).unwrap().is_err(), "{key}");
        }
    }

    #[test]
    fn protections_ini_interpolation_that_multiplies_is_bounded() {
        let mut text = String::from("[s]\nl0 =\n");
        for level in 1..=9 {
            let refs = format!("%(l{})s", level - 1).repeat(30);
            text.push_str(&format!("l{level} = {refs}\n"));
        }
        let ini = read(&text).unwrap();
        let error = get(&ini, "s", "l9").unwrap().unwrap_err();
        assert!(error.contains("expand more than"), "{error}");
    }
}
