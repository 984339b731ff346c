//! Keystone token validation, as keystonemiddleware does it and tighter: glint's own service
//! token (renewed before it expires), `GET /v3/auth/tokens?nocatalog` for each new token,
//! answers believed for at most `cache_ttl` and never past the token's `expires_at`, one
//! validation for concurrent requests with the same new token, and every call bounded by
//! `timeout`. It knows tokens and identities, not HTTP requests or policies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{AuthError, Identity};
use crate::config::KeystoneConfig;
use crate::http_client;

/// Renew the service token when it has less than this left, so no validation ever goes
/// out with a token that expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(120);
/// More cached answers than this: the expired ones are swept out first.
const CACHE_SWEEP_AT: usize = 10_000;

type TokenKey = [u8; 32];
/// A project's unified limits: resource name → limit.
pub type Limits = Arc<HashMap<String, i64>>;

/// What Keystone said of a token; answers it could not give are not cached.
#[derive(Clone)]
enum Answer {
    Valid(Arc<Identity>),
    Invalid,
}

struct Cached {
    answer: Answer,
    /// Believed until then: `cache_ttl` after the answer, or the token's expiry if sooner.
    until: Instant,
    /// The token's own expiry (for a refused token, `until`).
    expires: Instant,
}

struct ServiceToken {
    token: String,
    renew_at: Instant,
}

pub struct Keystone {
    config: KeystoneConfig,
    /// Unified limits by project, believed for `cache_ttl`.
    limits: Mutex<HashMap<String, (Limits, Instant)>>,
    /// The id of the image service in Keystone's catalogue, found once.
    image_service: tokio::sync::Mutex<Option<String>>,
    /// `auth_url` without a trailing slash.
    base: String,
    client: reqwest::Client,
    service: tokio::sync::Mutex<Option<ServiceToken>>,
    cache: Mutex<HashMap<TokenKey, Cached>>,
    pending: Mutex<HashMap<TokenKey, Arc<OnceCell<Cached>>>>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    #[serde(default)]
    roles: Vec<Named>,
    user: Option<Named>,
    project: Option<Project>,
    #[serde(default)]
    system: Option<serde_json::Value>,
    #[serde(default)]
    is_admin_project: Option<bool>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    id: String,
    #[serde(default)]
    domain: Option<Named>,
}

fn unavailable(what: impl std::fmt::Display) -> AuthError {
    AuthError::Unavailable(what.to_string())
}

/// When `expires_at` (Keystone's ISO 8601) is, on the monotonic clock.
fn deadline_of(expires_at: &str) -> Option<Instant> {
    let at = time::OffsetDateTime::parse(
        expires_at,
        &time::format_description::well_known::Iso8601::DEFAULT,
    )
    .ok()?;
    let at = SystemTime::from(at);
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

impl Keystone {
    pub fn new(config: &KeystoneConfig) -> Result<Keystone, AuthError> {
        let client = http_client::build(|| {
            reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
        })
        .map_err(|e| AuthError::Config(crate::chain(&e)))?;
        Ok(Keystone {
            base: config.auth_url.trim_end_matches('/').to_string(),
            config: config.clone(),
            client,
            service: tokio::sync::Mutex::new(None),
            limits: Mutex::default(),
            image_service: tokio::sync::Mutex::new(None),
            cache: Mutex::default(),
            pending: Mutex::default(),
        })
    }

    /// Whether this validator was built from `config` (a reload keeps it, and its cache,
    /// when nothing it uses changed).
    pub fn built_from(&self, config: &KeystoneConfig) -> bool {
        self.config == *config
    }

    /// What keystonemiddleware names in `WWW-Authenticate`: Keystone's base URL.
    pub fn www_authenticate_uri(&self) -> &str {
        self.base.strip_suffix("/v3").unwrap_or(&self.base)
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<TokenKey, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<TokenKey, Arc<OnceCell<Cached>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Who `token` belongs to, from the cache while its answer is fresh, else from
    /// Keystone; `Invalid` for a token Keystone refuses, `Unavailable` when Keystone does
    /// not answer within `timeout`. A busy token is asked about again shortly before its
    /// answer goes stale, in the background, so its requests never queue behind Keystone.
    pub async fn validate(self: &Arc<Self>, token: &str) -> Result<Arc<Identity>, AuthError> {
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let hit = self
            .cache()
            .get(&key)
            .filter(|c| c.until > now)
            .map(|c| (c.answer.clone(), c.until, c.expires));
        if let Some((answer, until, expires)) = hit {
            crate::metrics::global().record_keystone_cache_hit();
            let ending = until.saturating_duration_since(now) < self.config.cache_ttl / 4;
            if ending && until < expires && !self.pending().contains_key(&key) {
                let this = self.clone();
                let token = token.to_string();
                tokio::spawn(async move {
                    let _ = this.fetch(key, &token).await;
                });
            }
            return match answer {
                Answer::Valid(identity) => Ok(identity),
                Answer::Invalid => Err(AuthError::Invalid),
            };
        }
        match self.fetch(key, token).await? {
            Answer::Valid(identity) => Ok(identity),
            Answer::Invalid => Err(AuthError::Invalid),
        }
    }

    /// Asks Keystone once for every caller that wants `token` now, and caches the answer.
    async fn fetch(&self, key: TokenKey, token: &str) -> Result<Answer, AuthError> {
        let cell = self.pending().entry(key).or_default().clone();
        let asked = cell
            .get_or_try_init(|| async {
                let asked = tokio::time::timeout(self.config.timeout, self.ask(token))
                    .await
                    .map_err(|_| {
                        unavailable("Keystone did not answer within auth.keystone.timeout")
                    })
                    .and_then(|answer| answer);
                crate::metrics::global().record_keystone_validation(match &asked {
                    Ok(Cached {
                        answer: Answer::Valid(_),
                        ..
                    }) => "valid",
                    Ok(_) => "invalid",
                    Err(_) => "unavailable",
                });
                asked
            })
            .await
            .map(|cached| (cached.answer.clone(), cached.until, cached.expires));
        // Cached before the question is retired: a request arriving in between finds one
        // or the other, and never asks again.
        if let Ok((answer, until, expires)) = &asked {
            let mut cache = self.cache();
            if cache.len() >= CACHE_SWEEP_AT {
                let now = Instant::now();
                cache.retain(|_, c| c.until > now);
            }
            cache.insert(
                key,
                Cached {
                    answer: answer.clone(),
                    until: *until,
                    expires: *expires,
                },
            );
        }
        {
            let mut pending = self.pending();
            if pending.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                pending.remove(&key);
            }
        }
        let (answer, _, _) = asked?;
        Ok(answer)
    }

    /// Asks Keystone about `token` with the service token, renewing that once if Keystone
    /// no longer takes it.
    async fn ask(&self, token: &str) -> Result<Cached, AuthError> {
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await?;
            let response = self
                .client
                .get(format!("{}/auth/tokens?nocatalog", self.base))
                .header("X-Auth-Token", service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| unavailable(format!("Keystone: {e}")))?;
            let status = response.status();
            if status.as_u16() == 401 && attempt == 0 {
                continue;
            }
            let ttl_end = Instant::now() + self.config.cache_ttl;
            if matches!(status.as_u16(), 401 | 403 | 404) {
                return Ok(Cached {
                    answer: Answer::Invalid,
                    until: ttl_end,
                    expires: ttl_end,
                });
            }
            if !status.is_success() {
                return Err(unavailable(format!("Keystone answered {status}")));
            }
            let body: TokenBody = response
                .json()
                .await
                .map_err(|e| unavailable(format!("Keystone's token body: {e}")))?;
            let Some(expires) = deadline_of(&body.token.expires_at) else {
                return Err(unavailable("Keystone's token has no valid expires_at"));
            };
            if expires <= Instant::now() {
                return Ok(Cached {
                    answer: Answer::Invalid,
                    until: ttl_end,
                    expires: ttl_end,
                });
            }
            let info = body.token;
            let identity = Identity {
                user_id: info.user.and_then(|u| u.id),
                project_id: info.project.as_ref().map(|p| p.id.clone()),
                project_domain_id: info.project.and_then(|p| p.domain).and_then(|d| d.id),
                roles: info
                    .roles
                    .into_iter()
                    .filter_map(|r| r.name)
                    .map(|r| r.to_lowercase())
                    .collect(),
                system_scope: info
                    .system
                    .as_ref()
                    .and_then(|s| s.get("all"))
                    .and_then(serde_json::Value::as_bool)
                    .filter(|all| *all)
                    .map(|_| "all".to_string()),
                is_admin_project: info.is_admin_project.unwrap_or(true),
            };
            return Ok(Cached {
                answer: Answer::Valid(Arc::new(identity)),
                until: ttl_end.min(expires),
                expires,
            });
        }
        Err(unavailable("Keystone refused glint's own service token"))
    }

    /// The unified limits of `project_id` for the image service (Keystone's limits API):
    /// resource name → limit, a project's own limit over the registered default. Believed
    /// for `cache_ttl`; bounded by `timeout`.
    pub async fn limits(&self, project_id: &str) -> Result<Limits, AuthError> {
        let now = Instant::now();
        let cached = self
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project_id)
            .filter(|(_, until)| *until > now)
            .map(|(limits, _)| limits.clone());
        if let Some(limits) = cached {
            return Ok(limits);
        }
        let fetched = tokio::time::timeout(self.config.timeout, self.fetch_limits(project_id))
            .await
            .map_err(|_| unavailable("Keystone did not answer within auth.keystone.timeout"))??;
        let fetched = Arc::new(fetched);
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                project_id.to_string(),
                (fetched.clone(), Instant::now() + self.config.cache_ttl),
            );
        Ok(fetched)
    }

    async fn fetch_limits(&self, project_id: &str) -> Result<HashMap<String, i64>, AuthError> {
        let service = self.service_token(false).await?;
        let image_service = self.image_service_id(&service).await?;
        let registered: serde_json::Value = self
            .get_json(
                &service,
                &format!("{}/registered_limits?service_id={image_service}", self.base),
            )
            .await?;
        let own: serde_json::Value = self
            .get_json(
                &service,
                &format!(
                    "{}/limits?service_id={image_service}&project_id={project_id}",
                    self.base
                ),
            )
            .await?;
        let mut limits = HashMap::new();
        let entries = |value: &serde_json::Value, list: &str, field: &str| {
            value
                .get(list)
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    Some((
                        entry.get("resource_name")?.as_str()?.to_string(),
                        entry.get(field)?.as_i64()?,
                    ))
                })
                .collect::<Vec<_>>()
        };
        limits.extend(entries(&registered, "registered_limits", "default_limit"));
        // A project's own limit wins over the registered default.
        limits.extend(entries(&own, "limits", "resource_limit"));
        Ok(limits)
    }

    async fn image_service_id(&self, service: &str) -> Result<String, AuthError> {
        let mut known = self.image_service.lock().await;
        if let Some(id) = known.as_ref() {
            return Ok(id.clone());
        }
        let services = self
            .get_json(service, &format!("{}/services?type=image", self.base))
            .await?;
        let id = services
            .get("services")
            .and_then(serde_json::Value::as_array)
            .and_then(|list| list.first())
            .and_then(|s| s.get("id"))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| unavailable("Keystone's catalogue has no image service"))?
            .to_string();
        *known = Some(id.clone());
        Ok(id)
    }

    async fn get_json(&self, service: &str, url: &str) -> Result<serde_json::Value, AuthError> {
        let response = self
            .client
            .get(url)
            .header("X-Auth-Token", service)
            .send()
            .await
            .map_err(|e| unavailable(format!("Keystone: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!("Keystone answered {status} for {url}")));
        }
        response
            .json()
            .await
            .map_err(|e| unavailable(format!("Keystone's answer to {url}: {e}")))
    }

    /// glint's own token, fetched when missing, close to expiry, or refused (`renew`).
    async fn service_token(&self, renew: bool) -> Result<String, AuthError> {
        let mut service = self.service.lock().await;
        if let Some(current) = service
            .as_ref()
            .filter(|s| !renew && s.renew_at > Instant::now())
        {
            return Ok(current.token.clone());
        }
        let config = &self.config;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": config.username,
                "domain": {"name": config.user_domain_name},
                "password": config.password,
            }}},
            "scope": {"project": {
                "name": config.project_name,
                "domain": {"name": config.project_domain_name},
            }},
        }});
        let response = self
            .client
            .post(format!("{}/auth/tokens?nocatalog", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(format!("Keystone: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            tracing::error!(%status, user = %config.username, "Keystone refused glint's service credentials (auth.keystone)");
            return Err(unavailable(format!(
                "Keystone refused glint's service credentials: {status}"
            )));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| unavailable("Keystone's answer has no X-Subject-Token"))?;
        let body: TokenBody = response
            .json()
            .await
            .map_err(|e| unavailable(format!("Keystone's token body: {e}")))?;
        let expires = deadline_of(&body.token.expires_at)
            .ok_or_else(|| unavailable("Keystone's token has no valid expires_at"))?;
        let renew_at = expires
            .checked_sub(RENEW_BEFORE)
            .unwrap_or_else(Instant::now);
        *service = Some(ServiceToken {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }
}
