//! Who the caller is, per `auth.mode`: noauth (everyone is admin of one configured project)
//! or trusted headers set by an authenticating proxy (Glance's ContextMiddleware).

use http::HeaderMap;

use super::ApiError;
use crate::config::{AuthConfig, AuthMode};
use crate::domain::caller::Caller;

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn caller(headers: &HeaderMap, auth: &AuthConfig) -> Result<Caller, ApiError> {
    match auth.mode {
        AuthMode::Noauth => Ok(Caller {
            project: (!auth.project.is_empty()).then(|| auth.project.clone()),
            user: None,
            is_admin: true,
            read_only: false,
        }),
        AuthMode::TrustedHeaders => {
            if header(headers, &["x-identity-status"]) != Some("Confirmed") {
                return Err(ApiError::Unauthorized(String::new()));
            }
            let roles: Vec<String> = header(headers, &["x-roles", "x-role"])
                .unwrap_or("")
                .split(',')
                .map(|r| r.trim().to_lowercase())
                .filter(|r| !r.is_empty())
                .collect();
            Ok(Caller {
                project: header(headers, &["x-project-id", "x-tenant-id", "x-tenant"])
                    .map(String::from),
                user: header(headers, &["x-user-id", "x-user"]).map(String::from),
                is_admin: roles.iter().any(|r| r == "admin"),
                read_only: false,
            })
        }
    }
}

/// In trusted-headers mode Glance reuses a client's request id (at most 64 characters).
pub fn client_request_id(headers: &HeaderMap, auth: &AuthConfig) -> Option<String> {
    if auth.mode != AuthMode::TrustedHeaders {
        return None;
    }
    let id = header(headers, &["x-openstack-request-id"])?;
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(if id.starts_with("req-") {
        id.to_string()
    } else {
        format!("req-{id}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::TrustedHeaders,
            ..AuthConfig::default()
        }
    }

    #[test]
    fn trusted_headers_need_a_confirmed_identity() {
        let mut headers = HeaderMap::new();
        assert!(caller(&headers, &trusted()).is_err());
        headers.insert("x-identity-status", "Confirmed".parse().unwrap());
        headers.insert("x-roles", "Member, ADMIN".parse().unwrap());
        headers.insert("x-tenant-id", "p1".parse().unwrap());
        let c = caller(&headers, &trusted()).unwrap();
        assert!(c.is_admin);
        assert_eq!(c.project.as_deref(), Some("p1"));
    }

    #[test]
    fn noauth_is_admin_of_the_configured_project() {
        let mut auth = AuthConfig::default();
        assert_eq!(caller(&HeaderMap::new(), &auth).unwrap().project, None);
        auth.project = "p".into();
        let c = caller(&HeaderMap::new(), &auth).unwrap();
        assert!(c.is_admin);
        assert_eq!(c.project.as_deref(), Some("p"));
    }
}
