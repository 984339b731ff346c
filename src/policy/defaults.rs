//! Glance's default policy rules, as data: every rule Glance registers, with its check string
//! and scope types.
//!
//! Taken from openstack/glance master at c76abb08e (2026-07-22, 33.0.0.0b2 and 19 commits;
//! the same rules as the 32.0.0 release, 2026.1, plus `download_from_store`,
//! `list_cached_nodes`, `cache_clean` and `cache_prune`), files glance/policies/*.py, in the
//! order `glance.policies.list_rules()` chains them. The check strings that Glance builds from
//! the constants of base.py (and metadef.py) are kept as constants of the same names, each
//! spelled out as the string it expands to. Deprecated check strings are left out: with
//! `enforce_new_defaults` they are never in force.

/// A rule Glance registers.
pub(super) struct RuleDefault {
    pub name: &'static str,
    pub check: &'static str,
    /// oslo.policy's `scope_types`: the token scopes the rule may be enforced for at all.
    pub scope_types: &'static [&'static str],
}

const fn rule(
    name: &'static str,
    check: &'static str,
    scope_types: &'static [&'static str],
) -> RuleDefault {
    RuleDefault {
        name,
        check,
        scope_types,
    }
}

/// `scope_types=['project']`: every API rule of Glance.
const PROJECT: &[&str] = &["project"];
/// No `scope_types`: the base rules other rules refer to.
const UNSCOPED: &[&str] = &[];

/// `ADMIN` in base.py.
const ADMIN: &str = "rule:context_is_admin";
/// `DEFAULT` in base.py.
const DEFAULT: &str = "rule:default";
/// `ADMIN_OR_PROJECT_MEMBER` in base.py.
const ADMIN_OR_PROJECT_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(project_id)s)";
/// `ADMIN_OR_PROJECT_READER` in base.py.
const ADMIN_OR_PROJECT_READER: &str =
    "rule:context_is_admin or (role:reader and project_id:%(project_id)s)";
/// `ADMIN_OR_PROJECT_READER_GET_IMAGE` in base.py.
const ADMIN_OR_PROJECT_READER_GET_IMAGE: &str = "rule:context_is_admin or (role:reader and (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s or 'public':%(visibility)s or 'shared':%(visibility)s))";
/// `ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE` in base.py.
const ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE: &str = "rule:context_is_admin or (role:member and (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s or 'public':%(visibility)s or 'shared':%(visibility)s))";
/// `ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE` in base.py.
const ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE: &str =
    "rule:context_is_admin or (role:member and project_id:%(project_id)s and project_id:%(owner)s)";
/// `ADMIN_OR_PROJECT_READER_GET_NAMESPACE` in base.py.
const ADMIN_OR_PROJECT_READER_GET_NAMESPACE: &str = "rule:context_is_admin or (role:reader and (project_id:%(project_id)s or 'public':%(visibility)s))";
/// `ADMIN_OR_SHARED_MEMBER` in base.py.
const ADMIN_OR_SHARED_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(member_id)s)";
/// `ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER` in base.py.
const ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER: &str = "rule:context_is_admin or role:reader and (project_id:%(project_id)s or project_id:%(member_id)s)";
/// `SERVICE_OR_PROJECT_MEMBER` in base.py.
const SERVICE_OR_PROJECT_MEMBER: &str =
    "rule:service_api or (role:member and project_id:%(project_id)s and project_id:%(owner)s)";
/// `SERVICE` in base.py.
const SERVICE: &str = "rule:service_api";
/// `ADMIN_OR_SERVICE_ROLE` in base.py.
const ADMIN_OR_SERVICE_ROLE: &str = "rule:context_is_admin or rule:service_api";
/// `METADEF_ADMIN` in metadef.py.
const METADEF_ADMIN: &str = "rule:metadef_admin";

pub(super) const GLANCE: &[RuleDefault] = &[
    // glance/policies/base.py
    rule("default", "", UNSCOPED),
    rule("context_is_admin", "role:admin", UNSCOPED),
    rule("service_api", "role:service or role:admin", UNSCOPED),
    // glance/policies/image.py
    rule("add_image", ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE, PROJECT),
    rule("delete_image", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("get_image", ADMIN_OR_PROJECT_READER_GET_IMAGE, PROJECT),
    rule("get_images", ADMIN_OR_PROJECT_READER, PROJECT),
    rule("modify_image", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("publicize_image", ADMIN, PROJECT),
    rule("communitize_image", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule(
        "download_image",
        ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
        PROJECT,
    ),
    rule(
        "download_from_store",
        ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
        PROJECT,
    ),
    rule("upload_image", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("delete_image_location", ADMIN, PROJECT),
    rule("get_image_location", ADMIN_OR_PROJECT_READER, PROJECT),
    rule("set_image_location", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("add_image_location", SERVICE_OR_PROJECT_MEMBER, PROJECT),
    rule("fetch_image_location", SERVICE, PROJECT),
    rule("add_member", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("delete_member", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule(
        "get_member",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        PROJECT,
    ),
    rule(
        "get_members",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        PROJECT,
    ),
    rule("modify_member", ADMIN_OR_SHARED_MEMBER, PROJECT),
    rule("manage_image_cache", ADMIN, PROJECT),
    rule("deactivate", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("reactivate", ADMIN_OR_PROJECT_MEMBER, PROJECT),
    rule("copy_image", ADMIN, PROJECT),
    rule("list_cached_nodes", ADMIN, PROJECT),
    // glance/policies/tasks.py
    rule("get_task", DEFAULT, PROJECT),
    rule("get_tasks", DEFAULT, PROJECT),
    rule("add_task", DEFAULT, PROJECT),
    rule("modify_task", DEFAULT, PROJECT),
    rule("tasks_api_access", ADMIN, PROJECT),
    // glance/policies/metadef.py
    rule("metadef_default", "", UNSCOPED),
    rule("metadef_admin", ADMIN, UNSCOPED),
    rule(
        "get_metadef_namespace",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule("get_metadef_namespaces", ADMIN_OR_PROJECT_READER, PROJECT),
    rule("modify_metadef_namespace", METADEF_ADMIN, PROJECT),
    rule("add_metadef_namespace", METADEF_ADMIN, PROJECT),
    rule("delete_metadef_namespace", METADEF_ADMIN, PROJECT),
    rule(
        "get_metadef_object",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule(
        "get_metadef_objects",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule("modify_metadef_object", METADEF_ADMIN, PROJECT),
    rule("add_metadef_object", METADEF_ADMIN, PROJECT),
    rule("delete_metadef_object", METADEF_ADMIN, PROJECT),
    rule(
        "list_metadef_resource_types",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule(
        "get_metadef_resource_type",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule(
        "add_metadef_resource_type_association",
        METADEF_ADMIN,
        PROJECT,
    ),
    rule(
        "remove_metadef_resource_type_association",
        METADEF_ADMIN,
        PROJECT,
    ),
    rule(
        "get_metadef_property",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule(
        "get_metadef_properties",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule("modify_metadef_property", METADEF_ADMIN, PROJECT),
    rule("add_metadef_property", METADEF_ADMIN, PROJECT),
    rule("remove_metadef_property", METADEF_ADMIN, PROJECT),
    rule(
        "get_metadef_tag",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule(
        "get_metadef_tags",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        PROJECT,
    ),
    rule("modify_metadef_tag", METADEF_ADMIN, PROJECT),
    rule("add_metadef_tag", METADEF_ADMIN, PROJECT),
    rule("add_metadef_tags", METADEF_ADMIN, PROJECT),
    rule("delete_metadef_tag", METADEF_ADMIN, PROJECT),
    rule("delete_metadef_tags", METADEF_ADMIN, PROJECT),
    // glance/policies/cache.py
    rule("cache_image", ADMIN, PROJECT),
    rule("cache_list", ADMIN, PROJECT),
    rule("cache_delete", ADMIN, PROJECT),
    rule("cache_clean", ADMIN, PROJECT),
    rule("cache_prune", ADMIN, PROJECT),
    // glance/policies/discovery.py
    rule("stores_info_detail", ADMIN_OR_SERVICE_ROLE, PROJECT),
];
