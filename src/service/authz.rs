//! Policy enforcement for the use-cases: a `Caller` as the policy's credentials, an image
//! as its target (Glance's keys: `project_id`/`owner`, `visibility`, `member_id`), and the
//! one place a denied rule becomes Glance's 403. Which rule guards which use-case is said
//! where the use-case is.

use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Visibility};
use crate::policy::protections::Operation;
use crate::policy::{Credentials, Target};

use super::{Catalog, Result};

/// What a rule is checked against: an image as Glance's policy layer describes it.
#[derive(Debug, Clone, Default)]
pub(super) struct ImageTarget {
    owner: Option<String>,
    visibility: Option<&'static str>,
    /// The caller's project, when the image is shared with it (any member status).
    member_id: Option<String>,
}

impl ImageTarget {
    pub(super) fn of(image: &Image, caller: &Caller, member: bool) -> Self {
        ImageTarget {
            owner: image.owner.clone(),
            visibility: Some(image.visibility.as_str()),
            member_id: member.then(|| caller.project.clone()).flatten(),
        }
    }

    /// A new image's target: owned by `owner` (the caller's project unless it asks for
    /// another), with `visibility`.
    pub(super) fn new_image(owner: Option<String>, visibility: Visibility) -> Self {
        ImageTarget {
            owner,
            visibility: Some(visibility.as_str()),
            member_id: None,
        }
    }

    /// The member a members rule is about (`modify_member` reads it as `member_id`).
    pub(super) fn with_member(mut self, member_id: &str) -> Self {
        self.member_id = Some(member_id.to_string());
        self
    }

    /// A metadata definitions namespace as Glance's `MetadefAPIPolicy` describes it: its
    /// owner as `project_id` and its visibility (or the caller's project alone).
    pub(super) fn metadef(owner: Option<String>, visibility: Option<&'static str>) -> Self {
        ImageTarget {
            owner,
            visibility,
            member_id: None,
        }
    }

    /// Rules about the caller's own project (lists, tasks): the project is the target.
    pub(super) fn project_of(caller: &Caller) -> Self {
        ImageTarget {
            owner: caller.project.clone(),
            visibility: None,
            member_id: None,
        }
    }
}

impl Target for ImageTarget {
    fn get(&self, key: &str) -> Option<String> {
        match key {
            "project_id" | "owner" => self.owner.clone(),
            "visibility" => self.visibility.map(str::to_string),
            "member_id" => self.member_id.clone(),
            _ => None,
        }
    }
}

pub(super) fn credentials(caller: &Caller) -> Credentials {
    Credentials {
        roles: caller.roles.clone(),
        project_id: caller.project.clone(),
        user_id: caller.user.clone(),
        system_scope: caller.system_scope.clone(),
        service_roles: caller.service_roles.clone(),
        ..Credentials::default()
    }
}

impl Catalog {
    pub(super) fn permits(&self, caller: &Caller, rule: &str, target: &ImageTarget) -> bool {
        self.policy.enforce(rule, &credentials(caller), target)
    }

    /// Glance's 403 for a rule the caller does not pass.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        rule: &str,
        target: &ImageTarget,
    ) -> Result<()> {
        if self.permits(caller, rule, target) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "You are not authorized to complete {rule} action."
            ))
            .into())
        }
    }

    /// Glance's `context_is_admin`: whether the caller is an admin everywhere (sees every
    /// image, may act for any project).
    pub fn is_admin(&self, caller: &Caller) -> bool {
        self.policy.enforce(
            "context_is_admin",
            &credentials(caller),
            &ImageTarget::default(),
        )
    }

    /// Property protections: the custom properties a caller may not read are left out of
    /// what it is shown.
    pub(super) fn hide_protected(&self, caller: &Caller, image: &mut Image) {
        if let Some(protections) = &self.protections {
            let creds = credentials(caller);
            image
                .properties
                .retain(|key, _| protections.allows(key, Operation::Read, &creds));
        }
    }

    /// Property protections for a change from `before` to `after`'s custom properties: a
    /// new one needs create, a changed one update (create, if the caller cannot read it: it
    /// was never shown to it), a removed one delete. Glance's 403 names the property.
    pub(super) fn check_protected(
        &self,
        caller: &Caller,
        before: &std::collections::BTreeMap<String, String>,
        after: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let Some(protections) = &self.protections else {
            return Ok(());
        };
        let creds = credentials(caller);
        let allows = |key: &str, op| protections.allows(key, op, &creds);
        let refused = |key: &str| {
            Err(DomainError::Forbidden(format!("Property '{key}' is protected")).into())
        };
        for (key, value) in after {
            let allowed = match before.get(key) {
                None => allows(key, Operation::Create),
                Some(old) if old == value => true,
                Some(_) if allows(key, Operation::Read) => allows(key, Operation::Update),
                Some(_) => allows(key, Operation::Create),
            };
            if !allowed {
                return refused(key);
            }
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            if !allows(key, Operation::Delete) {
                return refused(key);
            }
        }
        Ok(())
    }
}
