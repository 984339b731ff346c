//! Property protections as Glance enforces them with `property_protection_rule_format = roles`:
//! which roles may create, read, update and delete which custom image properties, from an
//! operator's `property_protection_file`. Pure: it parses the text it is handed.
//!
//! The semantics are those of Glance's `glance/common/property_utils.py`:
//!
//! - Each section name is a Python regular expression, tried with `re.search`: it may match
//!   anywhere in the property name unless it anchors itself with `^` (and `$`). Sections are
//!   tried in file order and the first that matches decides; a property that no section
//!   matches is denied every operation, to every role.
//! - Each section must have `create`, `read`, `update` and `delete` (or inherit them from
//!   `[DEFAULT]`); each is a comma-separated list of roles, where `@` lets everyone and `!`
//!   no one, and an empty value lets no one. Other keys are ignored.
//! - Glance puts an `[os_glance.*]` section letting everyone do everything before the file's
//!   sections, and drops the file's sections whose names start with `os_glance`, so that its
//!   own `os_glance_*` properties are never protected (Launchpad bug 2085321). Being a
//!   `search`, that section matches any property name that *contains* `os_glance`.
//! - Roles compare without case, as Glance lower-cases the roles of the file and those of the
//!   token; the roles of a service token are not lower-cased and so must be written in lower
//!   case to match.
//!
//! Where Glance would fail to start, `parse` fails, naming file, line and section.

mod ini;
mod pattern;

use std::path::{Path, PathBuf};

use regex::Regex;

use super::Credentials;

/// The section Glance puts first, and the prefix of the file's sections it drops.
const OS_GLANCE_SECTION: &str = "os_glance.*";
const RESERVED_PREFIX: &str = "os_glance";

/// What is done to a property. The order is `Operation::ALL`'s, which indexes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Read,
    Update,
    Delete,
}

impl Operation {
    /// In the order Glance reads them, which decides which missing key is reported.
    const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Read,
        Operation::Update,
        Operation::Delete,
    ];

    /// The key of a section that lists who may do it.
    pub fn key(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Read => "read",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// Every way a property protection file is refused; each is a reason Glance would not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionsError {
    /// The file is not an INI file as Python's configparser reads one.
    #[error("{}, line {line}: {message}", file.display())]
    File {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// One section is wrong: its name as a regular expression, a missing or malformed
    /// operation, a line that is no `key = value`, or the section or a key given twice.
    #[error("{}, line {line}: section [{section}]: {message}", file.display())]
    Section {
        file: PathBuf,
        line: usize,
        section: String,
        message: String,
    },
}

/// The rules of one property protection file, in the order they are tried.
#[derive(Debug, Clone)]
pub struct PropertyProtections {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Regex,
    /// Who may do each operation, indexed as `Operation::ALL`.
    allowed: [Allowed; 4],
}

#[derive(Debug, Clone)]
enum Allowed {
    Everyone,
    NoOne,
    /// Lower-cased, as Glance compares them.
    Roles(Vec<String>),
}

impl PropertyProtections {
    /// The rules of a property protection file in Glance's `roles` format. `file` only names
    /// the file in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PropertyProtections, ProtectionsError> {
        let ini = ini::read(text).map_err(|e| match e.section {
            None => ProtectionsError::File {
                file: file.to_owned(),
                line: e.line,
                message: e.message,
            },
            Some(section) => ProtectionsError::Section {
                file: file.to_owned(),
                line: e.line,
                section,
                message: e.message,
            },
        })?;

        let mut rules = vec![os_glance_rule()];
        // Glance drops these before it looks inside them, so nothing in them is checked.
        for section in ini
            .sections
            .iter()
            .filter(|s| !s.name.starts_with(RESERVED_PREFIX))
        {
            let error = |line: usize, message: String| ProtectionsError::Section {
                file: file.to_owned(),
                line,
                section: section.name.clone(),
                message,
            };
            let pattern = pattern::compile(&section.name).map_err(|m| error(section.line, m))?;
            let mut allowed = std::array::from_fn(|_| Allowed::NoOne);
            for op in Operation::ALL {
                let key = op.key();
                let (value, line) = ini.get(section, key).ok_or_else(|| {
                    error(
                        section.line,
                        format!(
                            "no `{key}`: every section must say who may create, read, update \
                             and delete"
                        ),
                    )
                })?;
                let value = value.map_err(|m| error(line, format!("`{key}`: {m}")))?;
                allowed[op as usize] = Allowed::parse(&value).map_err(|m| error(line, m))?;
            }
            rules.push(Rule { pattern, allowed });
        }
        Ok(PropertyProtections { rules })
    }

    /// Whether `creds` may do `op` to the custom property `property`: the first section whose
    /// expression matches decides; none matching denies.
    pub fn allows(&self, property: &str, op: Operation, creds: &Credentials) -> bool {
        let Some(rule) = self.rules.iter().find(|r| r.pattern.is_match(property)) else {
            return false;
        };
        match &rule.allowed[op as usize] {
            Allowed::Everyone => true,
            Allowed::NoOne => false,
            // Glance's context middleware lower-cases the token's roles and not the service
            // token's, which `check_property_rules` adds to them as they are.
            Allowed::Roles(roles) => {
                creds
                    .roles
                    .iter()
                    .any(|role| roles.contains(&role.to_lowercase()))
                    || creds.service_roles.iter().any(|role| roles.contains(role))
            }
        }
    }
}

/// The section Glance injects: everyone may do everything to its own properties.
fn os_glance_rule() -> Rule {
    let pattern = Regex::new(OS_GLANCE_SECTION).expect("a constant pattern");
    Rule {
        pattern,
        allowed: [
            Allowed::Everyone,
            Allowed::Everyone,
            Allowed::Everyone,
            Allowed::Everyone,
        ],
    }
}

impl Allowed {
    /// One operation's value, split and trimmed as Glance splits it.
    fn parse(value: &str) -> Result<Allowed, String> {
        // Glance logs a warning and lets no one.
        if value.is_empty() {
            return Ok(Allowed::NoOne);
        }
        let roles: Vec<&str> = value.split(',').map(str::trim).collect();
        match (roles.contains(&"@"), roles.contains(&"!")) {
            (true, true) => Err(format!(
                "`{value}`: `@` (everyone) and `!` (no one) exclude each other"
            )),
            // Whatever else is listed beside them.
            (true, false) => Ok(Allowed::Everyone),
            (false, true) => Ok(Allowed::NoOne),
            (false, false) => Ok(Allowed::Roles(
                roles.into_iter().map(str::to_lowercase).collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
