//! Glance's defaults as callers meet them (the role matrix), and policy files over them.

use std::collections::HashMap;
use std::path::Path;

use super::*;

const A: &str = "project-a";
const B: &str = "project-b";

/// A project-scoped token. Keystone's implied roles are in the token: an admin is also a member
/// and a reader, a member also a reader.
fn token(roles: &[&str], project: &str) -> Credentials {
    Credentials {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        project_id: Some(project.to_owned()),
        user_id: Some(format!("user-of-{project}")),
        is_admin_project: true,
        ..Credentials::default()
    }
}

fn admin_a() -> Credentials {
    token(&["admin", "member", "reader"], A)
}

fn admin_b() -> Credentials {
    token(&["admin", "member", "reader"], B)
}

fn member_a() -> Credentials {
    token(&["member", "reader"], A)
}

fn reader_a() -> Credentials {
    token(&["reader"], A)
}

fn member_b() -> Credentials {
    token(&["member", "reader"], B)
}

fn reader_b() -> Credentials {
    token(&["reader"], B)
}

/// A service's own user (nova, cinder) with the `service` role in the service project.
fn service_user() -> Credentials {
    token(&["service"], "service")
}

/// A user's token sent with a service token beside it (`X-Service-Token`): the service's
/// roles are in `service_roles`.
fn member_b_with_service_token() -> Credentials {
    Credentials {
        service_roles: vec!["service".to_owned()],
        ..member_b()
    }
}

fn anonymous() -> Credentials {
    Credentials::default()
}

fn target(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An image of project A as Glance's `ImageTarget` shows it to a caller that is not a member.
fn image_of_a(visibility: &str) -> HashMap<String, String> {
    target(&[("project_id", A), ("owner", A), ("visibility", visibility)])
}

/// A's image shared with B, as B sees it: Glance sets `member_id` to the caller's project.
fn shared_with_b() -> HashMap<String, String> {
    target(&[
        ("project_id", A),
        ("owner", A),
        ("visibility", "shared"),
        ("member_id", B),
    ])
}

/// The target Glance builds for a create (and a list): owner asked for, else the caller's.
fn new_image(owner: &str) -> HashMap<String, String> {
    target(&[
        ("project_id", owner),
        ("owner", owner),
        ("visibility", "private"),
    ])
}

fn who(creds: &Credentials) -> String {
    format!("{:?} of {:?}", creds.roles, creds.project_id)
}

/// Asserts `rule` on `target` for every caller: `allowed` are let through, `denied` are not.
fn check(
    policy: &Policy,
    rule: &str,
    target: &HashMap<String, String>,
    allowed: &[Credentials],
    denied: &[Credentials],
) {
    for creds in allowed {
        assert!(
            policy.enforce(rule, creds, target),
            "{rule} should allow {} on {target:?}",
            who(creds)
        );
    }
    for creds in denied {
        assert!(
            !policy.enforce(rule, creds, target),
            "{rule} should deny {} on {target:?}",
            who(creds)
        );
    }
}

#[test]
fn add_image_is_for_members_creating_for_their_own_project() {
    let p = Policy::glance_defaults();
    check(
        &p,
        "add_image",
        &new_image(A),
        &[admin_a(), admin_b(), member_a()],
        &[reader_a(), member_b(), service_user(), anonymous()],
    );
    // Glance's create target has owner = project_id = the owner asked for.
    check(&p, "add_image", &new_image(B), &[admin_a()], &[member_a()]);
}

#[test]
fn get_image_by_visibility_and_membership() {
    let p = Policy::glance_defaults();
    check(
        &p,
        "get_image",
        &image_of_a("private"),
        &[admin_a(), admin_b(), member_a(), reader_a()],
        &[member_b(), reader_b(), service_user(), anonymous()],
    );
    check(
        &p,
        "get_image",
        &shared_with_b(),
        &[member_b(), reader_b(), member_a(), admin_b()],
        &[service_user(), anonymous()],
    );
    for visibility in ["public", "community"] {
        check(
            &p,
            "get_image",
            &image_of_a(visibility),
            &[member_b(), reader_b(), reader_a()],
            &[service_user(), anonymous()],
        );
    }
    // The check string lets any reader see any shared image: Glance relies on its database,
    // which finds a shared image only for its owner and members, to answer 404 first.
    check(
        &p,
        "get_image",
        &image_of_a("shared"),
        &[reader_b()],
        &[anonymous()],
    );
}

#[test]
fn get_images_is_for_readers_of_their_own_project() {
    let p = Policy::glance_defaults();
    check(
        &p,
        "get_images",
        &new_image(A),
        &[admin_b(), member_a(), reader_a()],
        &[reader_b(), service_user(), anonymous()],
    );
}

#[test]
fn changing_an_image_is_for_members_of_its_owner() {
    let p = Policy::glance_defaults();
    for rule in [
        "modify_image",
        "delete_image",
        "upload_image",
        "communitize_image",
        "deactivate",
        "reactivate",
        "set_image_location",
        "add_member",
        "delete_member",
    ] {
        check(
            &p,
            rule,
            &image_of_a("private"),
            // An admin of any project is an admin everywhere: context_is_admin is role:admin.
            &[admin_a(), admin_b(), member_a()],
            &[reader_a(), member_b(), service_user(), anonymous()],
        );
        check(&p, rule, &shared_with_b(), &[admin_b()], &[member_b()]);
    }
}

#[test]
fn publicizing_copying_and_deleting_locations_are_for_admins() {
    let p = Policy::glance_defaults();
    for rule in ["publicize_image", "copy_image", "delete_image_location"] {
        check(
            &p,
            rule,
            &image_of_a("private"),
            &[admin_a(), admin_b()],
            &[
                member_a(),
                reader_a(),
                member_b(),
                service_user(),
                anonymous(),
            ],
        );
    }
}

#[test]
fn download_needs_the_member_role_even_for_ones_own_image() {
    let p = Policy::glance_defaults();
    check(
        &p,
        "download_image",
        &image_of_a("private"),
        &[admin_b(), member_a()],
        &[reader_a(), member_b(), service_user(), anonymous()],
    );
    check(
        &p,
        "download_image",
        &shared_with_b(),
        &[member_b()],
        &[reader_b()],
    );
    check(
        &p,
        "download_image",
        &image_of_a("public"),
        &[member_b()],
        &[reader_b(), reader_a(), anonymous()],
    );
    check(
        &p,
        "download_image",
        &image_of_a("community"),
        &[member_b()],
        &[reader_b()],
    );
}

#[test]
fn reading_locations_of_ones_own_image_is_for_readers() {
    let p = Policy::glance_defaults();
    check(
        &p,
        "get_image_location",
        &image_of_a("public"),
        &[admin_b(), reader_a()],
        &[reader_b(), service_user(), anonymous()],
    );
}

#[test]
fn members_are_seen_by_the_owner_and_the_member_and_changed_by_the_member() {
    let p = Policy::glance_defaults();
    for rule in ["get_members", "get_member"] {
        check(
            &p,
            rule,
            &shared_with_b(),
            &[admin_a(), reader_a(), member_b(), reader_b()],
            &[service_user(), anonymous()],
        );
        check(
            &p,
            rule,
            &image_of_a("shared"),
            &[reader_a()],
            &[member_b(), reader_b()],
        );
    }
    // Accepting or rejecting is the member's, not the owner's: from the owner's side Glance's
    // target has no member_id.
    check(
        &p,
        "modify_member",
        &shared_with_b(),
        &[admin_a(), member_b()],
        &[reader_b(), reader_a(), anonymous()],
    );
    check(
        &p,
        "modify_member",
        &image_of_a("shared"),
        &[admin_a()],
        &[member_a(), member_b()],
    );
}

#[test]
fn tasks_are_gated_by_tasks_api_access_alone() {
    let p = Policy::glance_defaults();
    let none = target(&[]);
    check(
        &p,
        "tasks_api_access",
        &none,
        &[admin_a()],
        &[member_a(), reader_a(), service_user(), anonymous()],
    );
    // get_task, get_tasks, add_task and modify_task are `rule:default`, which is "".
    for rule in ["get_task", "get_tasks", "add_task", "modify_task"] {
        check(
            &p,
            rule,
            &none,
            &[admin_a(), member_a(), reader_b(), anonymous()],
            &[],
        );
    }
}

#[test]
fn location_api_is_for_the_service_role_and_admins_not_service_tokens() {
    let p = Policy::glance_defaults();
    // service_api is `role:service or role:admin`: the role of the user's token. Since Glance
    // 2026.1 the roles of a service token (service_roles) count for nothing.
    check(
        &p,
        "fetch_image_location",
        &image_of_a("private"),
        &[service_user(), admin_b()],
        &[
            member_a(),
            reader_a(),
            member_b(),
            member_b_with_service_token(),
            anonymous(),
        ],
    );
    // Adding a location is also open to members of the owner.
    check(
        &p,
        "add_image_location",
        &image_of_a("private"),
        &[service_user(), admin_b(), member_a()],
        &[
            reader_a(),
            member_b(),
            member_b_with_service_token(),
            anonymous(),
        ],
    );
    check(
        &p,
        "stores_info_detail",
        &target(&[]),
        &[service_user(), admin_a()],
        &[member_a(), member_b_with_service_token()],
    );
}

#[test]
fn cache_and_metadef_writes_are_for_admins() {
    let p = Policy::glance_defaults();
    let none = target(&[]);
    for rule in [
        "cache_image",
        "cache_list",
        "cache_delete",
        "cache_clean",
        "cache_prune",
        "list_cached_nodes",
        "manage_image_cache",
        "add_metadef_namespace",
        "modify_metadef_object",
        "delete_metadef_tags",
        "add_metadef_resource_type_association",
    ] {
        check(
            &p,
            rule,
            &none,
            &[admin_a()],
            &[member_a(), service_user(), anonymous()],
        );
    }
}

#[test]
fn metadef_reads_follow_the_namespace() {
    let p = Policy::glance_defaults();
    let public = target(&[("project_id", A), ("visibility", "public")]);
    let private = target(&[("project_id", A), ("visibility", "private")]);
    for rule in [
        "get_metadef_namespace",
        "get_metadef_tags",
        "list_metadef_resource_types",
    ] {
        check(&p, rule, &public, &[reader_b(), reader_a()], &[anonymous()]);
        check(&p, rule, &private, &[reader_a(), admin_b()], &[reader_b()]);
    }
}

#[test]
fn scoped_rules_deny_system_and_domain_tokens() {
    let p = Policy::glance_defaults();
    let system_admin = Credentials {
        project_id: None,
        system_scope: Some("all".to_owned()),
        ..admin_a()
    };
    let domain_admin = Credentials {
        project_id: None,
        domain_id: Some("default".to_owned()),
        ..admin_a()
    };
    for creds in [&system_admin, &domain_admin] {
        for rule in [
            "get_image",
            "add_image",
            "publicize_image",
            "tasks_api_access",
        ] {
            assert!(!p.enforce(rule, creds, &image_of_a("public")), "{rule}");
        }
        // The base rules have no scope types: Glance's is_admin check passes.
        assert!(p.enforce("context_is_admin", creds, &target(&[])));
    }
}

#[test]
fn an_unknown_rule_is_denied() {
    let p = Policy::glance_defaults();
    assert!(!p.enforce("no_such_rule", &admin_a(), &target(&[])));
}

#[test]
fn every_rule_glance_registers_is_there() {
    let p = Policy::glance_defaults();
    let names: Vec<String> = p.effective().into_iter().map(|(name, _)| name).collect();
    for name in [
        "default",
        "context_is_admin",
        "service_api",
        "add_image",
        "delete_image",
        "get_image",
        "get_images",
        "modify_image",
        "publicize_image",
        "communitize_image",
        "download_image",
        "download_from_store",
        "upload_image",
        "delete_image_location",
        "get_image_location",
        "set_image_location",
        "add_image_location",
        "fetch_image_location",
        "add_member",
        "delete_member",
        "get_member",
        "get_members",
        "modify_member",
        "manage_image_cache",
        "deactivate",
        "reactivate",
        "copy_image",
        "list_cached_nodes",
        "get_task",
        "get_tasks",
        "add_task",
        "modify_task",
        "tasks_api_access",
        "metadef_default",
        "metadef_admin",
        "cache_image",
        "cache_list",
        "cache_delete",
        "cache_clean",
        "cache_prune",
        "stores_info_detail",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} is missing");
    }
    assert_eq!(
        names.len(),
        defaults::GLANCE.len(),
        "a name is defined twice"
    );
    assert_eq!(names.len(), 67);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(
        p.effective()
            .into_iter()
            .find(|(name, _)| name == "get_member"),
        Some((
            "get_member".to_owned(),
            "rule:context_is_admin or role:reader and (project_id:%(project_id)s or \
             project_id:%(member_id)s)"
                .to_owned()
        ))
    );
}

fn overrides(text: &str) -> Result<Policy, PolicyError> {
    Policy::with_overrides(text, Path::new("/etc/glint/policy.yaml"))
}

#[test]
fn a_file_replaces_the_rules_it_names() {
    let p = overrides("# let members publish\npublicize_image: role:member\n").unwrap();
    check(
        &p,
        "publicize_image",
        &image_of_a("private"),
        &[member_a(), member_b()],
        &[reader_a(), anonymous()],
    );
    // Everything else keeps Glance's default.
    check(
        &p,
        "copy_image",
        &image_of_a("private"),
        &[admin_a()],
        &[member_a()],
    );
    let effective = p.effective();
    assert!(effective.contains(&("publicize_image".to_owned(), "role:member".to_owned())));
    assert!(effective.contains(&("copy_image".to_owned(), "rule:context_is_admin".to_owned())));
}

#[test]
fn overriding_a_base_rule_changes_every_rule_that_refers_to_it() {
    let p = overrides("context_is_admin: role:cloud-admin\ndefault: role:admin\n").unwrap();
    let cloud_admin = token(&["cloud-admin"], B);
    check(
        &p,
        "delete_image",
        &image_of_a("private"),
        &[cloud_admin.clone(), member_a()],
        &[admin_b()],
    );
    check(
        &p,
        "get_tasks",
        &target(&[]),
        &[admin_a()],
        &[member_a(), cloud_admin],
    );
}

#[test]
fn a_file_may_define_rules_of_its_own() {
    let text = "\
owner_member: role:member and project_id:%(project_id)s
delete_image: rule:owner_member and not 'community':%(visibility)s
";
    let p = overrides(text).unwrap();
    check(
        &p,
        "delete_image",
        &image_of_a("private"),
        &[member_a()],
        &[admin_b()],
    );
    check(
        &p,
        "delete_image",
        &image_of_a("community"),
        &[],
        &[member_a()],
    );
    assert!(p.effective().iter().any(|(name, _)| name == "owner_member"));
    // A rule only the file defines has no scope types, and can be enforced by name.
    assert!(p.enforce("owner_member", &member_a(), &image_of_a("private")));
}

#[test]
fn an_override_keeps_glances_scope_types() {
    let p = overrides("add_image: '@'\n").unwrap();
    assert!(p.enforce("add_image", &anonymous(), &new_image(A)));
    let system_admin = Credentials {
        system_scope: Some("all".to_owned()),
        ..admin_a()
    };
    assert!(!p.enforce("add_image", &system_admin, &new_image(A)));
}

#[test]
fn glances_generated_sample_changes_nothing() {
    let text = "\
# Create new image
# POST  /v2/images
#\"add_image\": \"rule:context_is_admin or (role:member and project_id:%(project_id)s and project_id:%(owner)s)\"
";
    let p = overrides(text).unwrap();
    assert_eq!(p.effective(), Policy::glance_defaults().effective());
}

#[test]
fn a_yaml_error_names_file_and_line() {
    let e = overrides("publicize_image: role:member\ncopy_image: \"role:admin\n").unwrap_err();
    let PolicyError::File { file, line, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(
        (file.as_path(), *line),
        (Path::new("/etc/glint/policy.yaml"), 2)
    );
    assert!(
        e.to_string()
            .starts_with("/etc/glint/policy.yaml, line 2: "),
        "{e}"
    );
}

#[test]
fn a_reference_to_no_rule_names_file_line_and_rule() {
    let text = "\
publicize_image: role:admin
copy_image: role:admin or rule:nonexistent
";
    let e = overrides(text).unwrap_err();
    assert_eq!(
        e,
        PolicyError::Rule {
            file: "/etc/glint/policy.yaml".into(),
            line: 2,
            rule: "copy_image".to_owned(),
            message: "column 15: `rule:nonexistent` names no rule".to_owned(),
        }
    );
    assert_eq!(
        e.to_string(),
        "/etc/glint/policy.yaml, line 2: rule `copy_image`: column 15: `rule:nonexistent` \
         names no rule"
    );
}

#[test]
fn a_check_string_error_names_file_line_rule_and_column() {
    let e = overrides("a: role:x\n\npublicize_image: role:admin or\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/glint/policy.yaml, line 3: rule `publicize_image`: column 14: the check string \
         ends where a check should follow"
    );
    let e = overrides("publicize_image: ''\ncopy_image: role:admin or\n").unwrap_err();
    assert!(matches!(e, PolicyError::Rule { line: 2, .. }), "{e:?}");
}

#[test]
fn an_entry_error_names_the_rule() {
    let e = overrides("publicize_image:\n").unwrap_err();
    assert!(
        matches!(&e, PolicyError::Rule { line: 1, rule, .. } if rule == "publicize_image"),
        "{e:?}"
    );
}

#[test]
fn rules_that_refer_to_each_other_in_a_cycle_are_refused() {
    let e = overrides("x: role:a\ncontext_is_admin: rule:add_image\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/glint/policy.yaml, line 2: rule `context_is_admin`: rules refer to each other in \
         a cycle: context_is_admin -> add_image -> context_is_admin"
    );
    let e = overrides("a: rule:a\n").unwrap_err();
    assert!(e.to_string().contains("cycle: a -> a"), "{e}");
}

#[test]
fn chains_of_references_are_bounded() {
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("r{i}: rule:r{}\n", i + 1));
    }
    text.push_str("r30: '@'\n");
    let e = overrides(&text).unwrap_err();
    assert!(
        e.to_string().contains("chain more than 16 rules deep"),
        "{e}"
    );
    assert!(matches!(e, PolicyError::Rule { line: 1, .. }), "{e:?}");

    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!("r{i}: rule:r{}\n", i + 1));
    }
    text.push_str("r10: role:member\n");
    let p = overrides(&text).unwrap();
    assert!(p.enforce("r0", &member_a(), &target(&[])));
}
