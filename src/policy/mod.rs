//! Authorization policy as Glance enforces it: the oslo.policy rule language (`check`) and
//! Glance's default rules (`defaults`). Pure: it does no I/O and imports nothing of the crate.
//!
//! The semantics are oslo.policy's with `enforce_new_defaults` and `enforce_scope` on, as
//! Glance runs since 2023.2: a rule has Glance's default check string (never the deprecated
//! one), and a rule Glance registers with scope types denies a token of another scope whatever
//! its check string says.

mod check;
mod defaults;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use check::Check;

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

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// The check string as written, for `effective`.
    text: String,
    check: Check,
    /// The scopes Glance registered the rule for; empty for rules Glance does not scope.
    scope_types: &'static [&'static str],
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
                };
                (default.name.to_owned(), rule)
            })
            .collect();
        Policy { rules }
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
}

#[cfg(test)]
mod tests;
