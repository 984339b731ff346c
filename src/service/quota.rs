//! Glance's unified limits (`use_keystone_limits`): the project's limits come from a
//! `LimitSource` (Keystone's limits API, wired in by the app), its usage from the catalogue,
//! and a use-case that would go past one is refused with oslo.limit's message (413). Also
//! what `GET /v2/info/usage` reports. Where the limits come from is not this file's business.

use std::collections::HashMap;

use futures_util::future::BoxFuture;

use super::{Catalog, Result, ServiceError};
use crate::db::ProjectUsage;
use crate::domain::DomainError;
use crate::domain::caller::Caller;

/// Glance's four resources, in the order `/v2/info/usage` lists them.
pub const RESOURCES: [&str; 4] = [
    "image_size_total",
    "image_stage_total",
    "image_count_total",
    "image_count_uploading",
];

/// Where a project's limits come from: resource name → limit.
pub trait LimitSource: Send + Sync {
    fn limits<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, std::result::Result<HashMap<String, i64>, String>>;
}

/// The usage of `resource` as Glance counts it (sizes in MiB, rounded up).
fn used(usage: &ProjectUsage, resource: &str) -> i64 {
    let mib = |bytes: u64| i64::try_from(bytes.div_ceil(1 << 20)).unwrap_or(i64::MAX);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match resource {
        "image_size_total" => mib(usage.stored_bytes),
        "image_stage_total" => mib(usage.staged_bytes),
        "image_count_total" => count(usage.images),
        "image_count_uploading" => count(usage.uploading),
        _ => 0,
    }
}

impl Catalog {
    /// The caller project's limits and usage; `None` without unified limits or a project.
    async fn limits_and_usage<'a>(
        &self,
        caller: &'a Caller,
    ) -> Result<Option<(&'a str, HashMap<String, i64>, ProjectUsage)>> {
        let (Some(source), Some(project)) = (&self.limits, caller.project.as_deref()) else {
            return Ok(None);
        };
        let limits = source.limits(project).await.map_err(|e| {
            ServiceError::Unavailable(format!("Project limits could not be read: {e}"))
        })?;
        let usage = self.db.usage(project).await?;
        Ok(Some((project, limits, usage)))
    }

    /// Refuses what would take the caller's project past a limit: each of `deltas` is a
    /// resource and what the use-case adds to it. Without unified limits, or without a
    /// project, nothing is limited.
    pub(super) async fn enforce_limits(
        &self,
        caller: &Caller,
        deltas: &[(&str, i64)],
    ) -> Result<()> {
        let Some((project, limits, usage)) = self.limits_and_usage(caller).await? else {
            return Ok(());
        };
        let over: Vec<String> = deltas
            .iter()
            .filter_map(|(resource, delta)| {
                let limit = *limits.get(*resource)?;
                let current = used(&usage, resource);
                (current.saturating_add(*delta) > limit).then(|| {
                    format!(
                        "Resource {resource} is over limit of {limit} due to current usage \
                         {current} and delta {delta}"
                    )
                })
            })
            .collect();
        if over.is_empty() {
            return Ok(());
        }
        Err(DomainError::OverLimit(format!(
            "Project {project} is over a limit for [{}]",
            over.join(", ")
        ))
        .into())
    }

    /// `GET /v2/info/usage`: limit and usage of each resource for the caller's project;
    /// empty without unified limits.
    pub async fn usage(&self, caller: &Caller) -> Result<Vec<(&'static str, i64, i64)>> {
        let Some((_, limits, usage)) = self.limits_and_usage(caller).await? else {
            return Ok(Vec::new());
        };
        Ok(RESOURCES
            .iter()
            .filter_map(|r| limits.get(*r).map(|limit| (*r, *limit, used(&usage, r))))
            .collect())
    }
}
