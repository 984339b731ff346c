//! The oslo.policy rule language's tree (`oslo_policy/_checks.py`): a `Check` and its
//! evaluation against credentials and a target. Reading a check string into one is
//! `parse.rs`'s.
//!
//! Where oslo.policy logs a check string it cannot read and then denies (a word without a
//! colon, a quoted string standing alone, operators out of place), the parser refuses it with
//! the column, so an operator learns of the mistake when the file is loaded, not from a
//! denied request.

pub(super) use super::parse::parse;
use super::{Credential, Credentials, Target};

/// How deep parentheses and `not` may nest in one check string. Evaluation recurses as deep as
/// the tree, and an operator's file must not be able to make that unbounded. Glance's deepest
/// default nests two.
pub(super) const MAX_NESTING: usize = 32;

/// A parsed check string.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Check {
    /// `@`, or the empty check string.
    Always,
    /// `!`.
    Never,
    Not(Box<Check>),
    All(Vec<Check>),
    Any(Vec<Check>),
    /// `rule:<name>`: the named rule's check. `column` is where the reference stands in its
    /// check string, for the error when no rule has that name.
    Rule {
        name: String,
        column: usize,
    },
    /// `role:<match>`: one of the credentials' roles, compared without case.
    Role(Template),
    /// `<literal>:<match>` (`'public':%(visibility)s`, `True:%(x)s`): the match, substituted,
    /// equals the literal as Python's `str(ast.literal_eval(kind))` spells it.
    Literal {
        value: String,
        matcher: Template,
    },
    /// `<key>:<match>` (`project_id:%(owner)s`, `system_scope:all`): the credential named by
    /// the key equals the match, or for a list, one of its elements does.
    Credential {
        key: String,
        matcher: Template,
    },
}

/// Where a check string is wrong: a 1-based column (in characters) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub column: usize,
    pub message: String,
}

/// Resolves `rule:<name>` while evaluating. `Policy` guarantees every name resolves and that
/// the references form no cycle before it evaluates anything.
pub(super) trait Rules {
    fn rule(&self, name: &str) -> Option<&Check>;
}

impl Check {
    pub(super) fn eval<R, T>(&self, rules: &R, creds: &Credentials, target: &T) -> bool
    where
        R: Rules + ?Sized,
        T: Target + ?Sized,
    {
        match self {
            Check::Always => true,
            Check::Never => false,
            Check::Not(check) => !check.eval(rules, creds, target),
            Check::All(checks) => checks.iter().all(|c| c.eval(rules, creds, target)),
            Check::Any(checks) => checks.iter().any(|c| c.eval(rules, creds, target)),
            // oslo.policy falls back to its `default` rule for a name it does not know; a
            // `Policy` refuses such a reference when it is built, so this deny is unreachable.
            Check::Rule { name, .. } => rules
                .rule(name)
                .is_some_and(|check| check.eval(rules, creds, target)),
            Check::Role(matcher) => matcher.render(target).is_some_and(|role| {
                let role = role.to_lowercase();
                creds.roles.iter().any(|held| held.to_lowercase() == role)
            }),
            Check::Literal { value, matcher } => matcher.render(target).as_ref() == Some(value),
            Check::Credential { key, matcher } => matcher.render(target).is_some_and(|wanted| {
                match creds.credential(key) {
                    Credential::Text(held) => held == wanted,
                    Credential::List(held) => held.contains(&wanted),
                    // Python's str(True) and str(False).
                    Credential::Flag(held) => wanted == if held { "True" } else { "False" },
                    Credential::Absent => false,
                }
            }),
        }
    }

    /// Every `rule:<name>` in this check, with its column.
    pub(super) fn references(&self) -> Vec<(&str, usize)> {
        let mut found = Vec::new();
        self.collect_references(&mut found);
        found
    }

    fn collect_references<'a>(&'a self, found: &mut Vec<(&'a str, usize)>) {
        match self {
            Check::Not(check) => check.collect_references(found),
            Check::All(checks) | Check::Any(checks) => {
                for check in checks {
                    check.collect_references(found);
                }
            }
            Check::Rule { name, column } => found.push((name, *column)),
            Check::Always
            | Check::Never
            | Check::Role(_)
            | Check::Literal { .. }
            | Check::Credential { .. } => {}
        }
    }
}

/// The right-hand side of a check: text with `%(key)s` substitutions from the target, as
/// Python's `match % target` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Key(String),
}

impl Template {
    /// `column` is where `text` starts in its check string.
    pub(super) fn parse(text: &str, column: usize) -> Result<Template, SyntaxError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices();
        while let Some((at, c)) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let error = |message: &str| SyntaxError {
                column: column + text[..at].chars().count(),
                message: message.to_owned(),
            };
            match chars.next() {
                Some((_, '%')) => literal.push('%'),
                Some((_, '(')) => {
                    // Python takes the key up to the matching parenthesis, counting nested ones.
                    let mut depth = 1;
                    let mut key = String::new();
                    loop {
                        let Some((_, ch)) = chars.next() else {
                            return Err(error("`%(` is never closed"));
                        };
                        match ch {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        if depth == 0 {
                            break;
                        }
                        key.push(ch);
                    }
                    if !matches!(chars.next(), Some((_, 's'))) {
                        return Err(error("only `%(key)s` substitutions are supported"));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Key(key));
                }
                _ => return Err(error("a `%` must begin `%(key)s` or be doubled as `%%`")),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The text with each key replaced by the target's value; `None` when the target lacks a
    /// key, which makes the check false (oslo.policy's `KeyError` branch).
    fn render<T: Target + ?Sized>(&self, target: &T) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Key(key) => out.push_str(&target.get(key)?),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct NoRules;

    impl Rules for NoRules {
        fn rule(&self, _: &str) -> Option<&Check> {
            None
        }
    }

    fn text(s: &str) -> Template {
        Template(vec![Piece::Text(s.to_owned())])
    }

    fn key(s: &str) -> Template {
        Template(vec![Piece::Key(s.to_owned())])
    }

    fn role(name: &str) -> Check {
        Check::Role(text(name))
    }

    fn error(check: &str) -> SyntaxError {
        parse(check).unwrap_err()
    }

    fn creds(roles: &[&str], project: &str) -> Credentials {
        Credentials {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            project_id: Some(project.to_owned()),
            ..Credentials::default()
        }
    }

    fn target(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn holds(check: &str, creds: &Credentials, target: &HashMap<String, String>) -> bool {
        parse(check).unwrap().eval(&NoRules, creds, target)
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("role:a or role:b and role:c").unwrap(),
            Check::Any(vec![role("a"), Check::All(vec![role("b"), role("c")])])
        );
        assert_eq!(
            parse("role:a and role:b or role:c and role:d and role:e").unwrap(),
            Check::Any(vec![
                Check::All(vec![role("a"), role("b")]),
                Check::All(vec![role("c"), role("d"), role("e")]),
            ])
        );
    }

    #[test]
    fn not_binds_tighter_than_and() {
        assert_eq!(
            parse("not role:a and role:b").unwrap(),
            Check::All(vec![Check::Not(Box::new(role("a"))), role("b")])
        );
        assert_eq!(
            parse("role:a or not not role:b").unwrap(),
            Check::Any(vec![
                role("a"),
                Check::Not(Box::new(Check::Not(Box::new(role("b")))))
            ])
        );
    }

    #[test]
    fn parentheses_group_and_may_touch_the_words() {
        assert_eq!(
            parse("(role:a or role:b) and role:c").unwrap(),
            Check::All(vec![Check::Any(vec![role("a"), role("b")]), role("c")])
        );
        assert_eq!(
            parse("not (role:a and role:b)").unwrap(),
            Check::Not(Box::new(Check::All(vec![role("a"), role("b")])))
        );
        assert_eq!(parse("((role:a))").unwrap(), role("a"));
        assert_eq!(parse(" ( role:a ) ").unwrap(), role("a"));
    }

    #[test]
    fn operators_ignore_case() {
        assert_eq!(
            parse("NOT role:a AND role:b Or role:c").unwrap(),
            parse("not role:a and role:b or role:c").unwrap()
        );
    }

    #[test]
    fn always_never_and_the_empty_string() {
        assert_eq!(parse("").unwrap(), Check::Always);
        assert_eq!(parse("@").unwrap(), Check::Always);
        assert_eq!(parse("!").unwrap(), Check::Never);
        assert_eq!(
            parse("! or (@)").unwrap(),
            Check::Any(vec![Check::Never, Check::Always])
        );
        let anyone = Credentials::default();
        assert!(holds("", &anyone, &target(&[])));
        assert!(holds("@", &anyone, &target(&[])));
        assert!(!holds("!", &anyone, &target(&[])));
        assert!(holds("not !", &anyone, &target(&[])));
    }

    #[test]
    fn the_kinds_of_check() {
        assert_eq!(
            parse("rule:context_is_admin").unwrap(),
            Check::Rule {
                name: "context_is_admin".to_owned(),
                column: 1
            }
        );
        assert_eq!(
            parse("project_id:%(owner)s").unwrap(),
            Check::Credential {
                key: "project_id".to_owned(),
                matcher: key("owner")
            }
        );
        assert_eq!(
            parse("'public':%(visibility)s").unwrap(),
            Check::Literal {
                value: "public".to_owned(),
                matcher: key("visibility")
            }
        );
        assert_eq!(
            parse("\"public\":%(visibility)s").unwrap(),
            parse("'public':%(visibility)s").unwrap()
        );
        // Only the first colon splits: the rest is the match.
        assert_eq!(parse("role:compute:admin").unwrap(), role("compute:admin"));
        assert_eq!(
            parse("user_id:a%%b%(x)sc").unwrap(),
            Check::Credential {
                key: "user_id".to_owned(),
                matcher: Template(vec![
                    Piece::Text("a%b".to_owned()),
                    Piece::Key("x".to_owned()),
                    Piece::Text("c".to_owned()),
                ])
            }
        );
    }

    #[test]
    fn kinds_that_are_python_literals() {
        let literal = |check: &str| match parse(check).unwrap() {
            Check::Literal { value, .. } => value,
            other => panic!("{check} parsed as {other:?}"),
        };
        assert_eq!(literal("True:%(enabled)s"), "True");
        assert_eq!(literal("None:%(x)s"), "None");
        assert_eq!(literal("20:%(x)s"), "20");
        assert_eq!(literal("+20:%(x)s"), "20");
        assert_eq!(literal("-0:%(x)s"), "0");
        assert_eq!(literal("'a-b':x"), "a-b");
        // Words split on whitespace before anything else, quotes or not.
        assert!(parse("'a b':x").is_err());
        for unsupported in ["1.5:x", "007:x", "'a\\'b':x", "'open:x", "[1]:x", ":x"] {
            assert!(parse(unsupported).is_err(), "{unsupported}");
        }
        // Not literals: names, as oslo.policy reads them when literal_eval fails.
        assert!(matches!(
            parse("is_admin:True").unwrap(),
            Check::Credential { .. }
        ));
        assert!(matches!(
            parse("user.enabled:True").unwrap(),
            Check::Credential { .. }
        ));
    }

    #[test]
    fn errors_name_the_column() {
        let e = error("role:a or");
        assert_eq!(e.column, 10);
        assert!(
            e.message.contains("ends where a check should follow"),
            "{e:?}"
        );

        let e = error("role:a )");
        assert_eq!((e.column, e.message.as_str()), (8, "`)` closes no `(`"));

        let e = error("role:a and (role:b or role:c");
        assert_eq!(e.column, 12);
        assert!(e.message.contains("never closed"), "{e:?}");

        let e = error("role:a role:b");
        assert_eq!(e.column, 8);
        assert!(e.message.contains("found `role:b`"), "{e:?}");

        let e = error("role:a and or role:b");
        assert_eq!(e.column, 12);
        assert!(e.message.contains("found `or`"), "{e:?}");

        let e = error("role:a or admin");
        assert_eq!(e.column, 11);
        assert!(e.message.contains("`admin` is not a check"), "{e:?}");

        let e = error("role:a or 'admin'");
        assert_eq!(e.column, 11);
        assert!(e.message.contains("quoted string"), "{e:?}");

        let e = error("()");
        assert_eq!(
            (e.column, e.message.as_str()),
            (2, "expected a check, found `)`")
        );

        // Columns count characters, not bytes.
        let e = error("role:é or");
        assert_eq!(e.column, 10);

        let e = error("   ");
        assert!(e.message.contains("blank"), "{e:?}");
    }

    #[test]
    fn substitutions_are_checked_when_parsed() {
        let e = error("project_id:%(owner)d");
        assert_eq!(e.column, 12);
        assert!(e.message.contains("%(key)s"), "{e:?}");
        assert_eq!(error("role:x and project_id:%(owner").column, 23);
        assert_eq!(error("user_id:50%").column, 11);
        assert!(
            error("http://example.com/check")
                .message
                .contains("remote server")
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}role:a{}", "(".repeat(40), ")".repeat(40));
        let e = error(&deep);
        assert!(e.message.contains("nest deeper"), "{e:?}");
        assert_eq!(e.column, MAX_NESTING + 1);
        let shallow = format!("{}role:a{}", "(".repeat(10), ")".repeat(10));
        assert_eq!(parse(&shallow).unwrap(), role("a"));
        let nots = format!("{}role:a", "not ".repeat(40));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn roles_compare_without_case_and_only_the_token_roles() {
        let c = Credentials {
            roles: vec!["Member".to_owned()],
            service_roles: vec!["service".to_owned()],
            ..Credentials::default()
        };
        let t = target(&[("r", "MEMBER")]);
        assert!(holds("role:member", &c, &t));
        assert!(holds("role:%(r)s", &c, &t));
        assert!(!holds("role:service", &c, &t));
        // A generic check on a list compares exactly, element by element.
        assert!(holds("service_roles:service", &c, &t));
        assert!(holds("roles:Member", &c, &t));
        assert!(!holds("roles:member", &c, &t));
    }

    #[test]
    fn generic_checks_read_credentials_and_the_target() {
        let c = Credentials {
            user_id: Some("u1".to_owned()),
            system_scope: Some("all".to_owned()),
            is_admin_project: true,
            ..creds(&["reader"], "p1")
        };
        let t = target(&[("owner", "p1"), ("visibility", "public"), ("user", "u1")]);
        assert!(holds("project_id:%(owner)s", &c, &t));
        assert!(holds("user_id:%(user)s", &c, &t));
        assert!(holds("project_id:p1", &c, &t));
        assert!(
            !holds("project_id:'p1'", &c, &t),
            "the match is not unquoted"
        );
        assert!(holds("system_scope:all", &c, &t));
        assert!(holds("system:all", &c, &t));
        assert!(holds("is_admin_project:True", &c, &t));
        assert!(!holds("is_admin_project:true", &c, &t));
        assert!(holds("'public':%(visibility)s", &c, &t));
        assert!(!holds("'shared':%(visibility)s", &c, &t));
        // A key the target lacks, or a credential that is not there, makes the check false.
        assert!(!holds("project_id:%(member_id)s", &c, &t));
        assert!(holds("not project_id:%(member_id)s", &c, &t));
        assert!(!holds("domain_id:%(owner)s", &c, &t));
        assert!(!holds("is_admin:True", &c, &t));
        assert!(!holds("project.id:p1", &c, &t));
    }

    #[test]
    fn evaluation_follows_the_tree() {
        let c = creds(&["a"], "p");
        let t = target(&[]);
        assert!(holds("role:a or role:b and role:c", &c, &t));
        assert!(!holds("(role:a or role:b) and role:c", &c, &t));
        assert!(holds("not role:b and role:a", &c, &t));
        assert!(!holds("not (role:b or role:a)", &c, &t));
    }

    #[test]
    fn references_are_listed_with_their_columns() {
        let check = parse("rule:a or (role:x and not rule:b)").unwrap();
        assert_eq!(check.references(), vec![("a", 1), ("b", 27)]);
    }
}
