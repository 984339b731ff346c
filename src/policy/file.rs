//! Reading an oslo.policy file: a YAML (or JSON, which YAML reads) map of rule names to check
//! strings, each with the line it stands on. Read from the parser's events because a YAML
//! value tree keeps no lines.
//!
//! Stricter than oslo.policy's `yaml.safe_load`, which takes the last of two entries with one
//! name, treats a null value as "allow everyone" and a list as the old list-of-lists form: each
//! of those is refused here, naming the line.

use std::collections::HashMap;

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One rule of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub name: String,
    pub check: String,
    /// The 1-based line of its name.
    pub line: usize,
}

/// Why the file cannot be read, and where; `rule` when it concerns one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileError {
    pub line: usize,
    pub rule: Option<String>,
    pub message: String,
}

impl FileError {
    fn at(mark: Marker, message: impl Into<String>) -> FileError {
        FileError {
            line: mark.line(),
            rule: None,
            message: message.into(),
        }
    }
}

/// The entries of a policy file in file order. An empty file, or one of comments only (as
/// Glance's generated sample is), has none.
pub(super) fn read(text: &str) -> Result<Vec<Entry>, FileError> {
    let mut parser = Parser::new_from_str(text);
    let mut next = move || {
        parser.next_token().map_err(|e| {
            FileError::at(
                *e.marker(),
                format!("column {}: not YAML: {}", e.marker().col() + 1, e.info()),
            )
        })
    };
    let mut entries = Vec::new();
    let mut documents = 0;
    loop {
        let (event, mark) = next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(entries),
            Event::DocumentStart if documents > 0 => {
                return Err(FileError::at(mark, "a policy file holds one YAML document"));
            }
            Event::DocumentStart => {
                documents += 1;
                match next()? {
                    (Event::MappingStart(..), _) => entries = read_map(&mut next)?,
                    // A document with nothing in it (`---` alone).
                    (Event::Scalar(value, TScalarStyle::Plain, ..), _)
                        if Yaml::from_str(&value).is_null() => {}
                    (_, mark) => {
                        return Err(FileError::at(
                            mark,
                            "a policy file must be a map of rule names to check strings",
                        ));
                    }
                }
            }
            _ => {
                return Err(FileError::at(mark, "unexpected YAML outside a document"));
            }
        }
    }
}

/// The pairs of the top-level map, up to its end.
fn read_map(
    next: &mut impl FnMut() -> Result<(Event, Marker), FileError>,
) -> Result<Vec<Entry>, FileError> {
    let mut entries = Vec::new();
    let mut lines = HashMap::new();
    loop {
        let (event, mark) = next()?;
        let name = match event {
            Event::MappingEnd => return Ok(entries),
            Event::Scalar(name, ..) => name,
            _ => return Err(FileError::at(mark, "a rule name must be a string")),
        };
        let line = mark.line();
        let error = |message: String| FileError {
            line,
            rule: Some(name.clone()),
            message,
        };
        if let Some(first) = lines.insert(name.clone(), line) {
            return Err(error(format!("defined again (first on line {first})")));
        }
        let check = match next()?.0 {
            Event::Scalar(_, _, _, Some(_)) => {
                return Err(error("YAML tags are not supported here".to_owned()));
            }
            Event::Scalar(value, TScalarStyle::Plain, ..) => match Yaml::from_str(&value) {
                Yaml::String(_) => value,
                Yaml::Null => {
                    return Err(error(
                        "has no check string: write \"\" to allow everyone or \"!\" to allow \
                         no one"
                            .to_owned(),
                    ));
                }
                _ => return Err(error(format!("`{value}` is not a string: quote it"))),
            },
            Event::Scalar(value, ..) => value,
            Event::SequenceStart(..) => {
                return Err(error(
                    "is a list: write the check string (oslo.policy's old list-of-lists form \
                     is not supported)"
                        .to_owned(),
                ));
            }
            _ => return Err(error("must be a check string".to_owned())),
        };
        entries.push(Entry { name, check, line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, check: &str, line: usize) -> Entry {
        Entry {
            name: name.to_owned(),
            check: check.to_owned(),
            line,
        }
    }

    fn refused(text: &str) -> FileError {
        read(text).unwrap_err()
    }

    #[test]
    fn rules_come_in_file_order_with_their_lines() {
        let text = "\
# glance policy
\"publicize_image\": \"role:member\"

get_image: rule:context_is_admin or (role:reader and project_id:%(project_id)s)
communitize_image: '!'
\"add_image\": ''
modify_image: >-
  role:admin
  or role:member
";
        assert_eq!(
            read(text).unwrap(),
            vec![
                entry("publicize_image", "role:member", 2),
                entry(
                    "get_image",
                    "rule:context_is_admin or (role:reader and project_id:%(project_id)s)",
                    4
                ),
                entry("communitize_image", "!", 5),
                entry("add_image", "", 6),
                entry("modify_image", "role:admin or role:member", 7),
            ]
        );
    }

    #[test]
    fn json_is_read_too() {
        let text = "{\n  \"a\": \"role:x\",\n  \"b\": \"@\"\n}\n";
        assert_eq!(
            read(text).unwrap(),
            vec![entry("a", "role:x", 2), entry("b", "@", 3)]
        );
    }

    #[test]
    fn a_file_without_rules_has_none() {
        for text in [
            "",
            "\n\n",
            "# every rule commented out\n#\"add_image\": \"\"\n",
            "---\n",
            "{}",
        ] {
            assert_eq!(read(text).unwrap(), vec![], "{text:?}");
        }
    }

    #[test]
    fn broken_yaml_names_the_line() {
        let e = refused("a: role:x\nb: \"role:y\nc: role:z\n");
        assert_eq!((e.line, e.rule.as_deref()), (2, None));
        assert!(e.message.starts_with("column 4: not YAML"), "{e:?}");
        let e = refused("a: role:x\n  b: role:y\n");
        assert_eq!(e.line, 2, "{e:?}");
        assert!(e.message.contains("not YAML"), "{e:?}");
    }

    #[test]
    fn the_file_must_be_one_map() {
        let e = refused("- role:x\n");
        assert_eq!((e.line, e.rule.as_deref()), (1, None));
        assert!(e.message.contains("must be a map"), "{e:?}");
        assert!(refused("role:x\n").message.contains("must be a map"));
        let e = refused("a: role:x\n---\nb: role:y\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("one YAML document"), "{e:?}");
    }

    #[test]
    fn values_must_be_check_strings() {
        let e = refused("a: role:x\nb:\n");
        assert_eq!((e.line, e.rule.as_deref()), (2, Some("b")));
        assert!(e.message.contains("no check string"), "{e:?}");
        let e = refused("a: [\"role:x\"]\n");
        assert_eq!((e.line, e.rule.as_deref()), (1, Some("a")));
        assert!(e.message.contains("list-of-lists"), "{e:?}");
        let e = refused("a:\n  b: role:x\n");
        assert!(e.message.contains("must be a check string"), "{e:?}");
        let e = refused("a: true\n");
        assert!(e.message.contains("quote it"), "{e:?}");
        assert_eq!(read("a: 'true'\n").unwrap(), vec![entry("a", "true", 1)]);
        let e = refused("a: !!str role:x\n");
        assert!(e.message.contains("tags"), "{e:?}");
    }

    #[test]
    fn a_rule_named_twice_is_refused() {
        let e = refused("a: role:x\nb: role:y\na: role:z\n");
        assert_eq!((e.line, e.rule.as_deref()), (3, Some("a")));
        assert!(e.message.contains("first on line 1"), "{e:?}");
    }
}
