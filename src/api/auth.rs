//! Who the caller is, per `auth.mode`: noauth (everyone is admin of one configured project),
//! trusted headers set by an authenticating proxy (Glance's ContextMiddleware), believed
//! only from the peers in `auth.trusted_proxies`, or a Keystone token (`X-Auth-Token`, and
//! a service token in `X-Service-Token`), validated by `crate::auth::Keystone`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::HeaderMap;

use super::{ApiError, PeerAddr};
use crate::auth::{AuthError, Identity, Keystone};
use crate::config::{AuthConfig, AuthMode};
use crate::domain::caller::Caller;

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether the request's headers come from a proxy `auth.trusted_proxies` names. Anyone
/// else who reaches glint could have written X-Identity-Status and X-Roles themselves.
fn from_trusted_proxy(peer: Option<PeerAddr>, auth: &AuthConfig) -> bool {
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.0.ip());
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d, and the list may spell a
    // proxy either way: an IPv4 peer is looked up in both spellings.
    let spellings = match ip.to_canonical() {
        IpAddr::V4(v4) => [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())],
        v6 => [v6, v6],
    };
    auth.trusted_proxies
        .iter()
        .any(|net| spellings.iter().any(|ip| net.contains(ip)))
}

pub fn caller(
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
    auth: &AuthConfig,
) -> Result<Caller, ApiError> {
    match auth.mode {
        AuthMode::Noauth => Ok(Caller {
            project: (!auth.project.is_empty()).then(|| auth.project.clone()),
            user: None,
            is_admin: true,
            roles: vec!["admin".into()],
            service_roles: Vec::new(),
            system_scope: None,
        }),
        AuthMode::TrustedHeaders => {
            if !from_trusted_proxy(peer, auth) {
                // Answered like a request without a confirmed identity: the headers are
                // ignored, not reported, so a prober learns nothing about the proxy.
                tracing::debug!(
                    peer = ?peer.map(|p| p.0),
                    "identity headers ignored: the peer is not in auth.trusted_proxies"
                );
                return Err(ApiError::Unauthorized(String::new()));
            }
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
                roles,
                service_roles: Vec::new(),
                system_scope: None,
            })
        }
        // The generation builds a validator for this mode; `keystone_caller` is asked.
        AuthMode::Keystone => Err(ApiError::Internal(
            "auth.mode = keystone without a Keystone validator".into(),
        )),
    }
}

/// The caller a Keystone token vouches for. No token, or one Keystone refuses: 401 with
/// keystonemiddleware's `WWW-Authenticate`. Keystone not answering: 503.
pub async fn keystone_caller(
    headers: &HeaderMap,
    keystone: &Arc<Keystone>,
) -> Result<Caller, ApiError> {
    let refused = |error: AuthError| match error {
        AuthError::Invalid => ApiError::TokenRequired {
            uri: keystone.www_authenticate_uri().to_string(),
        },
        AuthError::Unavailable(cause) | AuthError::Config(cause) => {
            tracing::warn!(%cause, "token not validated");
            ApiError::Unavailable {
                message: "The identity service is not available; try again later.".into(),
                retry_after: None,
            }
        }
    };
    let Some(token) = header(headers, &["x-auth-token", "x-storage-token"]) else {
        return Err(refused(AuthError::Invalid));
    };
    let identity = keystone.validate(token).await.map_err(refused)?;
    let service_roles = match header(headers, &["x-service-token"]) {
        Some(service) => keystone
            .validate(service)
            .await
            .map_err(refused)?
            .roles
            .clone(),
        None => Vec::new(),
    };
    Ok(caller_of(&identity, service_roles))
}

/// What the token says; what that lets the caller do is the policy's (`is_admin` is set
/// from `context_is_admin` by the caller of this).
fn caller_of(identity: &Identity, service_roles: Vec<String>) -> Caller {
    Caller {
        project: identity.project_id.clone(),
        user: identity.user_id.clone(),
        is_admin: false,
        roles: identity.roles.clone(),
        service_roles,
        system_scope: identity.system_scope.clone(),
    }
}

/// In trusted-headers mode Glance reuses a client's request id (at most 64 characters),
/// when the trusted proxy passed it on: from anyone else it could forge log lines.
pub fn client_request_id(
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
    auth: &AuthConfig,
) -> Option<String> {
    if auth.mode != AuthMode::TrustedHeaders || !from_trusted_proxy(peer, auth) {
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

    fn peer(addr: &str) -> Option<PeerAddr> {
        Some(PeerAddr(addr.parse().unwrap()))
    }

    fn confirmed() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-identity-status", "Confirmed".parse().unwrap());
        headers.insert("x-roles", "Member, ADMIN".parse().unwrap());
        headers.insert("x-tenant-id", "p1".parse().unwrap());
        headers.insert("x-openstack-request-id", "req-from-proxy".parse().unwrap());
        headers
    }

    #[test]
    fn trusted_headers_need_a_confirmed_identity() {
        assert!(caller(&HeaderMap::new(), None, &trusted()).is_err());
        let c = caller(&confirmed(), None, &trusted()).unwrap();
        assert!(c.is_admin);
        assert_eq!(c.project.as_deref(), Some("p1"));
    }

    #[test]
    fn identity_headers_are_believed_only_from_a_trusted_proxy() {
        let mut auth = trusted();
        // The default: loopback only; a request built in-process counts as loopback.
        for from in [
            None,
            peer("127.0.0.1:50000"),
            peer("127.9.9.9:50000"),
            peer("[::1]:50000"),
            peer("[::ffff:127.0.0.1]:50000"),
        ] {
            assert!(caller(&confirmed(), from, &auth).is_ok(), "{from:?}");
            assert_eq!(
                client_request_id(&confirmed(), from, &auth).as_deref(),
                Some("req-from-proxy")
            );
        }
        for from in [peer("10.0.0.5:50000"), peer("[2001:db8::5]:50000")] {
            assert!(
                matches!(
                    caller(&confirmed(), from, &auth),
                    Err(ApiError::Unauthorized(_))
                ),
                "{from:?}"
            );
            assert_eq!(client_request_id(&confirmed(), from, &auth), None);
        }
        auth.trusted_proxies = vec!["10.0.0.0/24".parse().unwrap()];
        for from in [peer("10.0.0.5:50000"), peer("[::ffff:10.0.0.5]:50000")] {
            assert!(caller(&confirmed(), from, &auth).is_ok(), "{from:?}");
            assert!(client_request_id(&confirmed(), from, &auth).is_some());
        }
        for from in [None, peer("127.0.0.1:50000"), peer("10.0.1.5:50000")] {
            assert!(caller(&confirmed(), from, &auth).is_err(), "{from:?}");
            assert_eq!(client_request_id(&confirmed(), from, &auth), None);
        }
        // A mapped spelling in the list matches the peer however the socket reports it.
        auth.trusted_proxies = vec!["::ffff:10.0.0.5/128".parse().unwrap()];
        for from in [peer("10.0.0.5:50000"), peer("[::ffff:10.0.0.5]:50000")] {
            assert!(caller(&confirmed(), from, &auth).is_ok(), "{from:?}");
        }
    }

    #[test]
    fn noauth_is_admin_of_the_configured_project() {
        let mut auth = AuthConfig::default();
        assert_eq!(
            caller(&HeaderMap::new(), None, &auth).unwrap().project,
            None
        );
        auth.project = "p".into();
        // noauth has no identity headers to believe: the peer does not matter.
        let c = caller(&HeaderMap::new(), peer("192.0.2.1:1"), &auth).unwrap();
        assert!(c.is_admin);
        assert_eq!(c.project.as_deref(), Some("p"));
        assert_eq!(client_request_id(&confirmed(), None, &auth), None);
    }
}
