//! Authorization policy as Glance enforces it: the oslo.policy rule language (`check`),
//! Glance's default rules (`defaults`), and an operator's policy file laid over them (`file`);
//! and Glance's property protections (`protections`), which say who may touch which custom
//! image property. Pure: it parses text it is handed, does no I/O and imports nothing of the
//! crate.
//!
//! The semantics are oslo.policy's with `enforce_new_defaults` and `enforce_scope` on, as
//! Glance runs since 2023.2: a rule the file does not name has Glance's default check string
//! (never the deprecated one), a rule the file names has the file's, and a rule Glance
//! registers with scope types denies a token of another scope whatever its check string says.
//! Where oslo.policy would log and carry on (a check string it cannot read, `rule:` naming no
//! rule, rules that refer to each other in a cycle), building a `Policy` fails instead.

mod check;
mod defaults;
mod file;
mod parse;
pub mod protections;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use check::Check;

/// How long a chain of `rule:` references may be. Evaluation recurses along it, and an
/// operator's file must not be able to make that unbounded. Glance's longest default chain has
/// three rules.
const MAX_RULE_CHAIN: usize = 16;

/// Who is asking: the values oslo.context's `RequestContext.to_policy_values()` gives
/// oslo.policy, which are all that a Glance check string can read of the caller.
///
/// Checks read them by these names (`project_id:%(owner)s`, `service_roles:service`,
/// `is_admin_project:True`); `system` is also there, as oslo.policy adds it, when
/// `system_scope` is set. `role:<name>` reads `roles` only, without case; `roles:<name>` and
/// `service_roles:<name>` compare exactly. A value that is `None` matches nothing (oslo.policy
/// would compare the text `None`). There is no `is_admin`: oslo.context does not pass it, so
/// `is_admin:True` never holds, in Glance as here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The roles of the token (`X-Roles`), including those Keystone implied (an `admin` token
    /// also holds `member` and `reader`).
    pub roles: Vec<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// Set for a domain-scoped token.
    pub domain_id: Option<String>,
    /// `all` for a system-scoped token.
    pub system_scope: Option<String>,
    /// The roles of the service token (`X-Service-Roles`), which a service sends beside the
    /// user's token. Glance's defaults since 2026.1 no longer read them.
    pub service_roles: Vec<String>,
    /// keystonemiddleware's `X-Is-Admin-Project`; oslo.context takes `true` when the header is
    /// absent.
    pub is_admin_project: bool,
}

/// A credential as a generic check compares it.
enum Credential<'a> {
    Text(&'a str),
    List(&'a [String]),
    Flag(bool),
    Absent,
}

impl Credentials {
    fn credential(&self, key: &str) -> Credential<'_> {
        fn text(value: &Option<String>) -> Credential<'_> {
            value
                .as_deref()
                .map_or(Credential::Absent, Credential::Text)
        }
        match key {
            "roles" => Credential::List(&self.roles),
            "service_roles" => Credential::List(&self.service_roles),
            "project_id" => text(&self.project_id),
            "user_id" => text(&self.user_id),
            "domain_id" => text(&self.domain_id),
            "system_scope" => text(&self.system_scope),
            // oslo.policy copies a non-empty `system_scope` to `system`.
            "system" => match self.system_scope.as_deref() {
                Some(scope) if !scope.is_empty() => Credential::Text(scope),
                _ => Credential::Absent,
            },
            "is_admin_project" => Credential::Flag(self.is_admin_project),
            _ => Credential::Absent,
        }
    }

    /// The token's scope as oslo.policy decides it: system, else domain, else project (an
    /// unscoped or anonymous caller counts as project-scoped).
    fn scope(&self) -> &'static str {
        let set = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
        if set(&self.system_scope) {
            "system"
        } else if set(&self.domain_id) {
            "domain"
        } else {
            "project"
        }
    }
}

/// What is acted on, as `%(key)s` reads it. A key the target does not have makes the check
/// that reads it false.
///
/// Glance's defaults read, for images: `project_id` and `owner` (both the image's owner; for
/// a create, the owner asked for, else the caller's project; for a list, the caller's
/// project), `visibility`, and `member_id` (the caller's project when the image is shared,
/// the caller is not its owner, and the caller is a member: Glance's database only finds a
/// shared image for its members and then sets it; absent otherwise). For metadef resources:
/// `project_id` (the namespace's owner) and `visibility`.
pub trait Target {
    fn get(&self, key: &str) -> Option<String>;
}

impl<S: BuildHasher> Target for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// Every way a policy file is refused, each naming the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file is not YAML, or not a map of rule names to check strings.
    #[error("{}, line {line}: {message}", file.display())]
    File {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// One rule of the file is wrong: its value, its check string, or what it refers to.
    #[error("{}, line {line}: rule `{rule}`: {message}", file.display())]
    Rule {
        file: PathBuf,
        line: usize,
        rule: String,
        message: String,
    },
}

/// The rules in force: Glance's defaults with an operator's file over them.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// The check string as written, for `effective`.
    text: String,
    check: Check,
    /// The scopes Glance registered the rule for; empty for rules Glance does not scope and
    /// for rules only the file defines. A file cannot change them, as in oslo.policy.
    scope_types: &'static [&'static str],
    /// The line of the file that defines it, if the file does.
    line: Option<usize>,
}

impl check::Rules for Policy {
    fn rule(&self, name: &str) -> Option<&Check> {
        self.rules.get(name).map(|rule| &rule.check)
    }
}

impl Policy {
    /// Glance's rules as it ships them.
    pub fn glance_defaults() -> Policy {
        let rules = defaults::GLANCE
            .iter()
            .map(|default| {
                let check = check::parse(default.check).unwrap_or_else(|e| {
                    panic!("Glance's default `{}` does not parse: {e:?}", default.name)
                });
                let rule = Rule {
                    text: default.check.to_owned(),
                    check,
                    scope_types: default.scope_types,
                    line: None,
                };
                (default.name.to_owned(), rule)
            })
            .collect();
        Policy { rules }
    }

    /// Glance's rules with those of a policy file (oslo.policy's YAML, which JSON also is: a
    /// map of rule names to check strings) in their place. `file` only names the file in
    /// errors. The file may define rules Glance does not know, for other rules to refer to;
    /// every `rule:` must name a rule that exists, and no rule may depend on itself.
    pub fn with_overrides(text: &str, file: &Path) -> Result<Policy, PolicyError> {
        let entries = file::read(text).map_err(|e| match e.rule {
            None => PolicyError::File {
                file: file.to_owned(),
                line: e.line,
                message: e.message,
            },
            Some(rule) => PolicyError::Rule {
                file: file.to_owned(),
                line: e.line,
                rule,
                message: e.message,
            },
        })?;
        let rule_error = |entry: &file::Entry, message: String| PolicyError::Rule {
            file: file.to_owned(),
            line: entry.line,
            rule: entry.name.clone(),
            message,
        };

        let mut policy = Policy::glance_defaults();
        for entry in &entries {
            let check = check::parse(&entry.check)
                .map_err(|e| rule_error(entry, format!("column {}: {}", e.column, e.message)))?;
            let scope_types = policy
                .rules
                .get(&entry.name)
                .map_or(&[][..], |rule| rule.scope_types);
            let rule = Rule {
                text: entry.check.clone(),
                check,
                scope_types,
                line: Some(entry.line),
            };
            policy.rules.insert(entry.name.clone(), rule);
        }

        // Only the file's rules can name a rule that does not exist: Glance's name their own.
        for entry in &entries {
            let Some(rule) = policy.rules.get(&entry.name) else {
                continue;
            };
            if let Some((name, column)) = rule
                .check
                .references()
                .into_iter()
                .find(|(name, _)| !policy.rules.contains_key(*name))
            {
                return Err(rule_error(
                    entry,
                    format!("column {column}: `rule:{name}` names no rule"),
                ));
            }
        }

        policy
            .check_chains()
            .map_err(|(rule, line, message)| PolicyError::Rule {
                file: file.to_owned(),
                line,
                rule,
                message,
            })?;
        Ok(policy)
    }

    /// Whether `creds` may do what `rule` guards to `target`. A rule Glance scopes denies a
    /// token of another scope first. A rule name the policy does not have is denied (Glance
    /// raises `PolicyNotRegistered` for it).
    pub fn enforce<T: Target + ?Sized>(&self, rule: &str, creds: &Credentials, target: &T) -> bool {
        let Some(found) = self.rules.get(rule) else {
            return false;
        };
        if !found.scope_types.is_empty() && !found.scope_types.contains(&creds.scope()) {
            return false;
        }
        found.check.eval(self, creds, target)
    }

    /// Every rule and the check string in force for it, sorted by name.
    pub fn effective(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|(name, rule)| (name.clone(), rule.text.clone()))
            .collect()
    }

    /// Refuses `rule:` references that form a cycle or a chain longer than
    /// `MAX_RULE_CHAIN`. Glance's defaults have neither, so the culprit is always a rule of the
    /// file: the error names the file's first rule (in file order) that leads to it.
    fn check_chains(&self) -> Result<(), (String, usize, String)> {
        let mut file_rules: Vec<(&String, usize)> = self
            .rules
            .iter()
            .filter_map(|(name, rule)| rule.line.map(|line| (name, line)))
            .collect();
        file_rules.sort_by_key(|(_, line)| *line);
        let mut heights = HashMap::new();
        for (name, line) in file_rules {
            let mut path = Vec::new();
            self.height(name, &mut path, &mut heights)
                .map_err(|message| (name.clone(), line, message))?;
        }
        Ok(())
    }

    /// The length of the longest chain of references below `name`, memoized in `heights`
    /// (`None` while `name` is being walked, which is how a cycle shows). `path` is the chain
    /// from where the walk started.
    fn height<'a>(
        &'a self,
        name: &'a str,
        path: &mut Vec<&'a str>,
        heights: &mut HashMap<&'a str, Option<usize>>,
    ) -> Result<usize, String> {
        match heights.get(name) {
            Some(Some(height)) if path.len() + height < MAX_RULE_CHAIN => return Ok(*height),
            Some(None) => {
                let start = path.iter().position(|p| *p == name).unwrap_or(0);
                let cycle: Vec<&str> = path[start..].iter().copied().chain([name]).collect();
                return Err(format!(
                    "rules refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ));
            }
            _ => {}
        }
        if path.len() >= MAX_RULE_CHAIN {
            return Err(format!(
                "`rule:` references chain more than {MAX_RULE_CHAIN} rules deep: {} -> ...",
                path.join(" -> ")
            ));
        }
        let Some(rule) = self.rules.get(name) else {
            return Ok(0);
        };
        heights.insert(name, None);
        path.push(name);
        let mut height = 0;
        for (referred, _) in rule.check.references() {
            height = height.max(1 + self.height(referred, path, heights)?);
        }
        path.pop();
        heights.insert(name, Some(height));
        Ok(height)
    }
}

#[cfg(test)]
mod tests;
