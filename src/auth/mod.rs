//! Who is calling, as an identity service vouches for it: Keystone tokens today. The API
//! layer hands it tokens and gets an `Identity` back; what the identity may do is not
//! decided here (that is the policy's), and no HTTP type is named here.

mod keystone;

pub use keystone::Keystone;

/// What a validated token says of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub project_domain_id: Option<String>,
    /// Role names, lowercased.
    pub roles: Vec<String>,
    /// `Some("all")` for a system-scoped token.
    pub system_scope: Option<String>,
    pub is_admin_project: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is unknown, revoked or expired.
    #[error("The request you have made requires authentication.")]
    Invalid,
    /// Keystone did not answer (in time), or refused glint's own credentials.
    #[error("Keystone is unavailable: {0}")]
    Unavailable(String),
    #[error("cannot build the Keystone client: {0}")]
    Config(String),
}
