//! Who is asking: the project and roles an auth mode established for a request.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// The caller's project; `None` for noauth without a configured project.
    pub project: Option<String>,
    pub user: Option<String>,
    /// Glance's `context_is_admin`, as the policy decided it for this caller: sees every
    /// image and may act for any project.
    pub is_admin: bool,
    /// Role names, lowercased, as the identity service gave them.
    pub roles: Vec<String>,
    /// `Some("all")` for a system-scoped token.
    pub system_scope: Option<String>,
    /// The roles of a service token sent beside the user's (`X-Service-Token`).
    pub service_roles: Vec<String>,
}

impl Caller {
    pub fn owns(&self, owner: Option<&str>) -> bool {
        match (&self.project, owner) {
            (Some(project), Some(owner)) => project == owner,
            _ => false,
        }
    }
}
