//! Property protections decided as Glance decides them: its sample file, the file its own unit
//! tests use, and the edges of the format.

use std::path::Path;

use super::*;

const ALL: [Operation; 4] = Operation::ALL;

/// Glance's `etc/property-protections-roles.conf.sample`, verbatim.
const GLANCE_SAMPLE: &str = r#"# property-protections-roles.conf.sample
#
# This file is an example config file for when
# property_protection_rule_format=roles is enabled.
#
# Specify regular expression for which properties will be protected in []
# For each section, specify CRUD permissions.
# The property rules will be applied in the order specified. Once
# a match is found the remaining property rules will not be applied.
#
# WARNING:
# * If the reg ex specified below does not compile, then
# glance-api service will not start. (Guide for reg ex python compiler used:
# http://docs.python.org/2/library/re.html#regular-expression-syntax)
# * If an operation(create, read, update, delete) is not specified or misspelt
# then the glance-api service will not start.
# So, remember, with GREAT POWER comes GREAT RESPONSIBILITY!
#
# NOTE: Multiple roles can be specified for a given operation. These roles must
# be comma separated.

[^x_.*]
create = admin,member,_member_
read = admin,member,_member_
update = admin,member,_member_
delete = admin,member,_member_

[.*]
create = admin
read = admin
update = admin
delete = admin
"#;

/// Glance's `glance/tests/etc/property-protections.conf`, which its unit tests
/// (`glance/tests/unit/common/test_property_utils.py`) decide against.
const GLANCE_TEST_FILE: &str = "\
[^x_owner_.*]
create = admin,member
read = admin,member
update = admin,member
delete = admin,member

[spl_create_prop]
create = admin,spl_role
read = admin,spl_role
update = admin
delete = admin

[spl_read_prop]
create = admin,spl_role
read = admin,spl_role
update = admin
delete = admin

[spl_read_only_prop]
create = admin
read = admin,spl_role
update = admin
delete = admin

[spl_update_prop]
create = admin,spl_role
read = admin,spl_role
update = admin,spl_role
delete = admin

[spl_update_only_prop]
create = admin
read = admin
update = admin,spl_role
delete = admin

[spl_delete_prop]
create = admin,spl_role
read = admin,spl_role
update = admin
delete = admin,spl_role

[spl_delete_empty_prop]
create = admin,spl_role
read = admin,spl_role
update = admin
delete = admin,spl_role

[^x_all_permitted.*]
create = @
read = @
update = @
delete = @

[^x_none_permitted.*]
create = !
read = !
update = !
delete = !

[x_none_read]
create = admin,member
read = !
update = !
delete = !

[x_none_update]
create = admin,member
read = admin,member
update = !
delete = admin,member

[x_none_delete]
create = admin,member
read = admin,member
update = admin,member
delete = !

[x_case_insensitive]
create = admin,Member
read = admin,Member
update = admin,Member
delete = admin,Member

[x_foo_matcher]
create = admin
read = admin
update = admin
delete = admin

[x_foo_*]
create = @
read = @
update = @
delete = @

[.*]
create = admin
read = admin
update = admin
delete = admin
";

fn parse(text: &str) -> PropertyProtections {
    PropertyProtections::parse(text, Path::new("protections.conf")).unwrap()
}

fn refuse(text: &str) -> ProtectionsError {
    PropertyProtections::parse(text, Path::new("protections.conf")).unwrap_err()
}

fn roles(roles: &[&str]) -> Credentials {
    Credentials {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Credentials::default()
    }
}

/// Which of the four operations `creds` may do to `property`.
fn ops(p: &PropertyProtections, property: &str, creds: &Credentials) -> [bool; 4] {
    ALL.map(|op| p.allows(property, op, creds))
}

const EVERY: [bool; 4] = [true; 4];
const NONE: [bool; 4] = [false; 4];

/// A section of the given name letting `who` do everything.
fn section(name: &str, who: &str) -> String {
    format!("[{name}]\ncreate = {who}\nread = {who}\nupdate = {who}\ndelete = {who}\n")
}

#[test]
fn protections_glance_sample_decides_as_its_comments_say() {
    let p = parse(GLANCE_SAMPLE);
    // `x_` properties: admin, member and _member_ may do everything.
    for role in ["admin", "member", "_member_"] {
        assert_eq!(ops(&p, "x_foo", &roles(&[role])), EVERY, "{role}");
    }
    assert_eq!(ops(&p, "x_foo", &roles(&["reader"])), NONE);
    assert_eq!(ops(&p, "x_foo", &roles(&[])), NONE);
    // Everything else falls to `[.*]`: admin only.
    for property in ["foo", "hw_disk_bus", "foo_x_bar", "X_foo"] {
        assert_eq!(ops(&p, property, &roles(&["admin"])), EVERY, "{property}");
        assert_eq!(ops(&p, property, &roles(&["member"])), NONE, "{property}");
    }
    // Glance's own properties, through the section it injects first.
    assert_eq!(
        ops(&p, "os_glance_importing_to_stores", &roles(&["reader"])),
        EVERY
    );
}

#[test]
fn protections_glance_unit_test_decisions() {
    let p = parse(GLANCE_TEST_FILE);
    let no_role = roles(&[""]);
    let admin = roles(&["admin"]);
    let member = roles(&["member"]);
    let admin_member = roles(&["admin", "member"]);

    // test_check_property_rules_{op}_permitted_admin_role / _specific_role / _unpermitted_role
    assert_eq!(ops(&p, "test_prop", &admin), EVERY);
    assert_eq!(ops(&p, "x_owner_prop", &member), EVERY);
    assert_eq!(ops(&p, "test_prop", &member), NONE);
    // test_check_property_rules_{op}_all_permitted / _none_permitted
    assert_eq!(ops(&p, "x_all_permitted", &no_role), EVERY);
    assert_eq!(ops(&p, "x_none_permitted", &no_role), NONE);
    assert_eq!(ops(&p, "x_none_permitted", &admin), NONE);
    // test_check_property_rules_read_none / update_none / delete_none
    assert!(p.allows("x_none_read", Operation::Create, &admin_member));
    assert_eq!(ops(&p, "x_none_read", &no_role), NONE);
    assert_eq!(
        ops(&p, "x_none_update", &admin_member),
        [true, true, false, true]
    );
    assert!(!p.allows("x_none_update", Operation::Update, &no_role));
    assert_eq!(
        ops(&p, "x_none_delete", &admin_member),
        [true, true, true, false]
    );
    // test_check_return_first_match: `[x_foo_matcher]` comes before `[x_foo_*]`.
    assert_eq!(ops(&p, "x_foo_matcher", &no_role), NONE);
    // test_check_case_insensitive_property_rules: the file says `Member`.
    assert_eq!(ops(&p, "x_case_insensitive", &member), EVERY);
    // The special roles of the `spl_` sections.
    let spl = roles(&["spl_role"]);
    assert_eq!(
        ops(&p, "spl_read_only_prop", &spl),
        [false, true, false, false]
    );
    assert_eq!(
        ops(&p, "spl_update_only_prop", &spl),
        [false, false, true, false]
    );
    assert_eq!(ops(&p, "spl_delete_prop", &spl), [true, true, false, true]);
}

#[test]
fn protections_roles_are_split_on_commas_and_trimmed() {
    // test_property_protection_with_whitespace
    let text = "[^test_prop.*]\ncreate = member ,fake-role\nread = fake-role, member\n\
                update = fake-role,  member\ndelete = fake-role,   member\n";
    let p = parse(text);
    assert_eq!(ops(&p, "test_prop_1", &roles(&["member"])), EVERY);
    assert_eq!(ops(&p, "test_prop_1", &roles(&["fake-role"])), EVERY);
}

#[test]
fn protections_everyone_and_no_one() {
    let text = "[^a]\ncreate = @\nread = member,@\nupdate = !\ndelete = admin, !\n";
    let p = parse(text);
    assert_eq!(ops(&p, "a", &roles(&[])), [true, true, false, false]);
    assert_eq!(ops(&p, "a", &roles(&["admin"])), [true, true, false, false]);

    let error = refuse("[^b]\ncreate = admin\nread = @, !\nupdate = @\ndelete = @\n");
    let ProtectionsError::Section { line, section, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*line, section.as_str()), (3, "^b"));
    assert!(error.to_string().contains("exclude each other"), "{error}");
}

#[test]
fn protections_an_empty_operation_lets_no_one() {
    let p = parse("[^a]\ncreate =\nread = admin\nupdate = admin\ndelete = admin\n");
    assert!(!p.allows("a", Operation::Create, &roles(&["admin"])));
    assert!(p.allows("a", Operation::Read, &roles(&["admin"])));
}

#[test]
fn protections_first_matching_section_decides() {
    let text = section("^x_secret", "!") + &section("^x_", "member") + &section(".*", "@");
    let p = parse(&text);
    let member = roles(&["member"]);
    assert_eq!(ops(&p, "x_secret_key", &member), NONE);
    assert_eq!(ops(&p, "x_other", &member), EVERY);
    assert_eq!(ops(&p, "x_other", &roles(&["reader"])), NONE);
    assert_eq!(ops(&p, "y", &roles(&[])), EVERY);

    // The same sections the other way round: `.*` first shadows the rest.
    let text = section(".*", "@") + &section("^x_secret", "!");
    assert_eq!(ops(&parse(&text), "x_secret_key", &member), EVERY);
}

#[test]
fn protections_sections_search_anywhere_unless_anchored() {
    let p = parse(&section("x_owner_.*", "member"));
    let member = roles(&["member"]);
    assert_eq!(ops(&p, "x_owner_foo", &member), EVERY);
    // Glance uses `re.search`, not `re.match`: an unanchored section matches inside a name.
    assert_eq!(ops(&p, "foo_x_owner_bar", &member), EVERY);

    let p = parse(&section("^x_owner_.*", "member"));
    assert_eq!(ops(&p, "x_owner_foo", &member), EVERY);
    assert_eq!(ops(&p, "foo_x_owner_bar", &member), NONE);

    // Nor is a section anchored at the end unless it says `$`.
    let p = parse(&(section("^size", "member") + &section("^name$", "member")));
    assert_eq!(ops(&p, "size_in_mb", &member), EVERY);
    assert_eq!(ops(&p, "name", &member), EVERY);
    assert_eq!(ops(&p, "name2", &member), NONE);
}

#[test]
fn protections_a_property_no_section_matches_is_denied() {
    let p = parse(&section("^x_", "@"));
    assert_eq!(ops(&p, "y", &roles(&["admin"])), NONE);
    // A file with no section protects every property but Glance's own.
    let p = parse("# nothing\n");
    assert_eq!(ops(&p, "anything", &roles(&["admin"])), NONE);
    assert_eq!(ops(&p, "os_glance_failed_import", &roles(&[])), EVERY);
}

#[test]
fn protections_os_glance_properties_stay_open() {
    // The file's own `os_glance` sections are dropped unread, even a malformed one.
    let text = section("os_glance_.*", "!") + "[os_glance_(]\ncreate = @\n" + &section(".*", "!");
    let p = parse(&text);
    assert_eq!(ops(&p, "os_glance_importing_to_stores", &roles(&[])), EVERY);
    assert_eq!(ops(&p, "x_foo", &roles(&["admin"])), NONE);
    // Glance's section is `os_glance.*` tried with `search`: it matches anywhere in a name.
    assert_eq!(ops(&p, "x_os_glance", &roles(&[])), EVERY);
    // A section anchoring the prefix is not dropped, but Glance's comes first.
    let p = parse(&(section("^os_glance", "!") + &section(".*", "!")));
    assert_eq!(ops(&p, "os_glance_foo", &roles(&[])), EVERY);
}

#[test]
fn protections_roles_compare_without_case_except_service_roles() {
    let p = parse(&section("^x_", "Admin, service"));
    assert_eq!(ops(&p, "x_a", &roles(&["ADMIN"])), EVERY);
    assert_eq!(ops(&p, "x_a", &roles(&["SERVICE"])), EVERY);
    let service = |role: &str| Credentials {
        service_roles: vec![role.to_owned()],
        ..roles(&["reader"])
    };
    assert_eq!(ops(&p, "x_a", &service("service")), EVERY);
    // Glance lower-cases the token's roles, not the service token's.
    assert_eq!(ops(&p, "x_a", &service("Service")), NONE);
}

#[test]
fn protections_default_section_supplies_missing_operations() {
    let text = "[DEFAULT]\nread = @\nupdate = admin\ndelete = !\n[^x_]\ncreate = member\n";
    let p = parse(text);
    assert_eq!(
        ops(&p, "x_a", &roles(&["member"])),
        [true, true, false, false]
    );
}

#[test]
fn protections_invalid_regex_is_refused_naming_the_section() {
    let text = section("^x_", "@") + "\n" + &section("^[0-9)", "admin");
    let error = refuse(&text);
    let ProtectionsError::Section { line, section, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*line, section.as_str()), (7, "^[0-9)"));
    assert!(
        error
            .to_string()
            .starts_with("protections.conf, line 7: section [^[0-9)]: "),
        "{error}"
    );
}

#[test]
fn protections_missing_or_misspelt_operation_is_refused_naming_the_section() {
    // test_property_protection_with_missing_operation / _with_misspelt_operation
    for text in [
        "[^[0-9]]\ncreate = r\nupdate = r\ndelete = r\n",
        "[^[0-9]]\ncreate = r\nrade = r\nupdate = r\ndelete = r\n",
    ] {
        let error = refuse(&(section("^x_", "@") + text));
        let ProtectionsError::Section { line, section, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!((*line, section.as_str()), (6, "^[0-9]"));
        assert!(error.to_string().contains("no `read`"), "{error}");
    }
}

#[test]
fn protections_malformed_files_are_refused_naming_the_line() {
    let error = refuse("create = admin\n");
    assert!(
        matches!(error, ProtectionsError::File { line: 1, .. }),
        "{error:?}"
    );
    let error = refuse(&(section("^a", "@") + &section("^a", "@")));
    assert!(
        matches!(&error, ProtectionsError::Section { line: 6, section, .. } if section == "^a"),
        "{error:?}"
    );
    let error = refuse("[^a]\ncreate = 50%\nread = @\nupdate = @\ndelete = @\n");
    assert!(
        matches!(&error, ProtectionsError::Section { line: 2, .. }),
        "{error:?}"
    );
}
