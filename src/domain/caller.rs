//! Who is asking: the project and roles an auth mode established for a request.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's project; `None` for noauth without a configured project.
    pub project: Option<String>,
    pub user: Option<String>,
    pub is_admin: bool,
    /// Anonymous read-only access (no mutation allowed).
    pub read_only: bool,
}

impl Caller {
    pub fn owns(&self, owner: Option<&str>) -> bool {
        match (&self.project, owner) {
            (Some(project), Some(owner)) => project == owner,
            _ => false,
        }
    }
}
