//! Image use-cases: the one place where callers, domain rules and the repository meet.
//! The data path (claim → receive → commit or undo, and downloads) is in `data`; import
//! and its background tasks are in `import`, `import_task`, `tasks` and `fetch`. It names
//! no HTTP type.

mod authz;
mod cache;
mod data;
mod fetch;
mod formats;
pub mod handover;
mod import;
mod import_data;
mod import_task;
mod locations;
mod metadefs;
mod nodes;
mod pages;
mod quota;
mod tasks;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::cache::ImageCache;
use crate::db::{Database, DbError};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{self, Image, Quotas, Status, Visibility, check_value, new_image};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::patch::{self, Dialect};
use crate::domain::query::ListQuery;
use crate::domain::time;
use crate::policy::Policy;
use crate::policy::protections::PropertyProtections;
use crate::store::{StoreError, Stores};
use authz::ImageTarget;

pub use cache::{CacheState, ClearTarget};
pub use data::{Copies, Download, TransferSlots};
use data::{blocking, data_of};
pub use fetch::{FetchError, WebDownload};
pub use formats::FormatRules;
pub use import::{ImportSettings, Inject};
pub use metadefs::{NamespacePage, NewNamespace};
pub use nodes::node_id;
pub use quota::LimitSource;
use tasks::Executor;
pub use tasks::TaskBoard;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Db(DbError),
    /// The metadata database is down, restarting, out of connections or too slow (the
    /// cause is logged here, not shown to clients). Nothing was written.
    #[error("The metadata database is unavailable; try again.")]
    DatabaseUnavailable,
    #[error(transparent)]
    Store(StoreError),
    /// An object store does not answer or is failing (the cause is logged here).
    #[error("Image store {store} is unavailable; try again.")]
    StoreUnavailable { store: String },
    /// A service glint needs (the limits API) did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Every transfer slot stayed taken for `server.transfer_wait`.
    #[error("glint is busy with other transfers; try again in {} s", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
}

impl From<DbError> for ServiceError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(_) | DbError::Contention(_) | DbError::CommitUnknown(_) => {
                tracing::warn!(error = %error, "request failed: database unavailable");
                ServiceError::DatabaseUnavailable
            }
            DbError::Invalid(reason) => {
                DomainError::Invalid(format!("The value cannot be stored: {reason}")).into()
            }
            other => ServiceError::Db(other),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { store, cause } => {
                tracing::warn!(%store, %cause, "request failed: store unavailable");
                ServiceError::StoreUnavailable { store }
            }
            other => ServiceError::Store(other),
        }
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    /// A writer thread that panicked or was cancelled fails like an I/O error.
    fn from(error: tokio::task::JoinError) -> Self {
        StoreError::Io {
            path: "writer thread".into(),
            source: std::io::Error::other(error.to_string()),
        }
        .into()
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A store as clients are told of it.
pub struct StoreInfo {
    pub id: String,
    pub description: Option<String>,
    pub default: bool,
    pub read_only: bool,
    pub detail: StoreDetail,
}

/// What a store keeps its data in, as admins are told of it.
pub enum StoreDetail {
    /// Each data directory with its priority, highest first.
    Files(Vec<(std::path::PathBuf, i64)>),
    /// Never the credentials.
    Objects {
        endpoint: Option<String>,
        bucket: String,
        prefix: String,
        part_size: u64,
    },
}

/// One page of a listing; `full` when the repository returned `limit` rows, which is
/// when Glance offers a `next` link.
pub struct Page {
    pub images: Vec<Image>,
    pub full: bool,
}

/// What `Catalog::list_written` answers.
pub enum Listed {
    /// Written before for the same query and caller, and nothing committed since.
    Written(bytes::Bytes),
    /// Read now: `keep` keeps the form the API writes it in for the next such request.
    Read { page: Page, keep: KeepWritten },
}

pub struct KeepWritten {
    catalog: Catalog,
    /// `None`: the database cannot say when it changes; nothing is kept.
    commits: Option<crate::db::CommitMarker>,
    key: pages::PageKey,
}

impl KeepWritten {
    pub fn keep(self, written: bytes::Bytes) {
        if let Some(commits) = self.commits {
            self.catalog.recent_pages.put(commits, self.key, written);
        }
    }
}

/// The catalogue of one generation: a handle, cloned per request and per task, over the
/// generation's settings (one `Arc`, since a clone per request of every field cost a quarter
/// of a /versions request).
#[derive(Clone)]
pub struct Catalog(std::sync::Arc<CatalogState>);

pub struct CatalogState {
    db: Database,
    stores: Stores,
    size_cap: u64,
    /// Per-project data quota in bytes; 0 = unlimited.
    storage_quota: u64,
    import: std::sync::Arc<ImportSettings>,
    executor: Executor,
    /// How long a client's transfer waits for a slot before a 503.
    transfer_wait: Duration,
    policy: std::sync::Arc<Policy>,
    protections: Option<std::sync::Arc<PropertyProtections>>,
    quotas: Quotas,
    /// Unified limits (`images.use_keystone_limits`), when on.
    limits: Option<std::sync::Arc<dyn LimitSource>>,
    /// `images.show_multiple_locations`: locations are shown and may be patched.
    show_locations: bool,
    format_rules: std::sync::Arc<FormatRules>,
    formats: image::Formats,
    /// `database.lease_time`: how long this node's claims and task leases last unrenewed.
    lease: Duration,
    /// This node's image cache, when `cache.enabled`.
    cache: Option<std::sync::Arc<ImageCache>>,
    /// `cache.max_size` and `cache.stall_time`, applied when this generation serves.
    cache_limits: (u64, Duration),
    /// List pages as the API wrote them since the last commit (where the engine says when
    /// one happened).
    recent_pages: pages::RecentPages,
}

impl std::ops::Deref for Catalog {
    type Target = CatalogState;

    fn deref(&self) -> &CatalogState {
        &self.0
    }
}

/// What a catalogue is built from (one generation's settings).
pub struct CatalogParts {
    pub db: Database,
    pub stores: Stores,
    pub size_cap: u64,
    pub storage_quota: u64,
    pub import: ImportSettings,
    pub transfer_wait: Duration,
    pub policy: std::sync::Arc<Policy>,
    pub protections: Option<std::sync::Arc<PropertyProtections>>,
    pub quotas: Quotas,
    pub limits: Option<std::sync::Arc<dyn LimitSource>>,
    pub show_locations: bool,
    pub format_rules: FormatRules,
    pub formats: image::Formats,
    pub lease: Duration,
    pub cache: Option<std::sync::Arc<ImageCache>>,
    pub cache_limits: (u64, Duration),
    pub board: std::sync::Arc<TaskBoard>,
    pub tracker: tokio_util::task::TaskTracker,
    pub cut: tokio_util::sync::CancellationToken,
}

/// How often a save that lost a race with an upload or import is retried on fresh data.
const SAVE_ATTEMPTS: usize = 8;

/// Data needs both formats first; `message` has a `{}` for the missing names.
fn require_formats(image: &Image, message: &str) -> Result<()> {
    let missing: Vec<&str> = [
        ("disk_format", &image.disk_format),
        ("container_format", &image.container_format),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_none())
    .map(|(k, _)| k)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (noun, names) = if missing.len() == 1 {
        ("Property", missing[0].to_string())
    } else {
        ("Properties", missing.join(", "))
    };
    Err(DomainError::Invalid(
        message
            .replacen("Properties", noun, 1)
            .replacen("{}", &names, 1),
    )
    .into())
}

fn forbidden(message: impl Into<String>) -> ServiceError {
    DomainError::Forbidden(message.into()).into()
}

impl Catalog {
    /// Whether the metadata database answers now (`/healthcheck`).
    pub async fn database_health(&self) -> Result<()> {
        Ok(self.db.ping().await?)
    }

    pub fn new(parts: CatalogParts) -> Self {
        Catalog(std::sync::Arc::new(CatalogState {
            db: parts.db,
            stores: parts.stores,
            size_cap: parts.size_cap,
            storage_quota: parts.storage_quota,
            import: std::sync::Arc::new(parts.import),
            executor: Executor::new(parts.board, parts.tracker, parts.cut),
            transfer_wait: parts.transfer_wait,
            policy: parts.policy,
            protections: parts.protections,
            quotas: parts.quotas,
            limits: parts.limits,
            show_locations: parts.show_locations,
            format_rules: std::sync::Arc::new(parts.format_rules),
            formats: parts.formats,
            lease: parts.lease,
            cache: parts.cache,
            cache_limits: parts.cache_limits,
            recent_pages: pages::RecentPages::default(),
        }))
    }

    /// The disk and container formats images may have.
    pub fn formats(&self) -> &image::Formats {
        &self.formats
    }

    /// What `/v2/info/stores` shows of each store.
    pub fn store_infos(&self) -> Vec<StoreInfo> {
        let default = self.stores.default_id();
        self.stores
            .all()
            .iter()
            .map(|store| StoreInfo {
                id: store.id.clone(),
                description: store.description.clone(),
                default: store.id == default,
                read_only: store.read_only(),
                detail: match store.object_spec() {
                    Some(spec) => StoreDetail::Objects {
                        endpoint: spec.endpoint.clone(),
                        bucket: spec.bucket.clone(),
                        prefix: spec.prefix.clone(),
                        part_size: spec.part_size,
                    },
                    None => StoreDetail::Files(
                        store
                            .dirs()
                            .iter()
                            .map(|d| (d.path.clone(), d.priority))
                            .collect(),
                    ),
                },
            })
            .collect()
    }

    pub async fn create(&self, caller: &Caller, attributes: Map<String, Value>) -> Result<Image> {
        for (key, value) in &attributes {
            self.formats.check(key, value)?;
        }
        let image = new_image(
            attributes,
            caller,
            time::now(),
            uuid::Uuid::new_v4().to_string(),
            &self.quotas,
        )?;
        let target = ImageTarget::new_image(image.owner.clone(), image.visibility);
        self.authorize(caller, "add_image", &target)?;
        self.authorize_visibility(caller, None, image.visibility, &target)?;
        self.check_protected(caller, &Default::default(), &image.properties)?;
        self.enforce_limits(caller, &[("image_count_total", 1)])
            .await?;
        match self.db.insert_image(&image).await {
            Ok(()) => {
                let mut shown = image;
                self.hide_protected(caller, &mut shown);
                Ok(shown)
            }
            Err(DbError::Duplicate) => {
                Err(DomainError::Conflict(format!("Image ID {} already exists!", image.id)).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The image if the caller may see it (`get_image`); otherwise the same 404 as for a
    /// missing one.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Image> {
        let mut image = self.get_seen(caller, id).await?.0;
        self.hide_protected(caller, &mut image);
        Ok(image)
    }

    /// The image a caller may see, with the policy target it is for that caller.
    async fn get_seen(&self, caller: &Caller, id: &str) -> Result<(Image, ImageTarget)> {
        let not_found = || ServiceError::from(Image::not_found(id));
        if id.len() > 36 {
            return Err(not_found());
        }
        let image = self.db.get_image(id).await?.ok_or_else(not_found)?;
        let membership = self.membership(caller, &image).await?;
        let target = ImageTarget::of(&image, caller, membership.is_some());
        if image.visible_to(caller, membership.as_ref().map(|m| m.status.as_str()))
            && self.permits(caller, "get_image", &target)
        {
            Ok((image, target))
        } else {
            Err(not_found())
        }
    }

    /// Making an image public or community is a rule of its own (`publicize_image`,
    /// `communitize_image`); staying so is not.
    fn authorize_visibility(
        &self,
        caller: &Caller,
        from: Option<Visibility>,
        to: Visibility,
        target: &ImageTarget,
    ) -> Result<()> {
        match to {
            _ if from == Some(to) => Ok(()),
            Visibility::Public => self.authorize(caller, "publicize_image", target),
            Visibility::Community => self.authorize(caller, "communitize_image", target),
            _ => Ok(()),
        }
    }

    async fn membership(&self, caller: &Caller, image: &Image) -> Result<Option<Member>> {
        match (&caller.project, image.visibility) {
            (Some(project), Visibility::Shared) => Ok(self.db.member(&image.id, project).await?),
            _ => Ok(None),
        }
    }

    /// The image if the caller passes `rule` for it: invisible is 404, visible but not
    /// allowed 403.
    async fn get_modifiable(&self, caller: &Caller, id: &str, rule: &str) -> Result<Image> {
        let (image, target) = self.get_seen(caller, id).await?;
        self.authorize(caller, rule, &target)?;
        Ok(image)
    }

    /// The page `query` gives `caller`, read from the database (`list_written` has checked
    /// that the caller may list).
    async fn read_page(&self, caller: &Caller, query: &ListQuery) -> Result<Page> {
        let marker =
            match &query.marker {
                Some(id) => Some(self.get(caller, id).await.map_err(|_| {
                    DomainError::Invalid(format!("marker {id} could not be found."))
                })?),
                None => None,
            };
        let mut images = self.db.list_images(query, caller, marker.as_ref()).await?;
        let full = query.limit > 0 && images.len() == query.limit as usize;
        for image in &mut images {
            self.hide_protected(caller, image);
        }
        Ok(Page { images, full })
    }

    /// The list page for `query` (`raw_query` as the client sent it) as the API last wrote
    /// it for the same caller, if nothing was committed since; otherwise the page read now,
    /// with what keeps the form the API writes it in.
    pub async fn list_written(
        &self,
        caller: &Caller,
        query: &ListQuery,
        raw_query: &str,
    ) -> Result<Listed> {
        self.authorize(caller, "get_images", &ImageTarget::project_of(caller))?;
        let commits = self.db.commit_marker().await;
        let key = pages::PageKey {
            query: raw_query.to_string(),
            project: caller.project.clone(),
            is_admin: caller.is_admin,
            roles: caller.roles.clone(),
        };
        if let Some(written) = commits.and_then(|c| self.recent_pages.get(c, &key)) {
            return Ok(Listed::Written(written));
        }
        let page = self.read_page(caller, query).await?;
        Ok(Listed::Read {
            page,
            keep: KeepWritten {
                catalog: self.clone(),
                commits,
                key,
            },
        })
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        dialect: Dialect,
    ) -> Result<Image> {
        let patch = patch::parse_patch(body, dialect, self.show_locations)?;
        let operations = patch.operations;
        patch::check_formats(&operations, &self.formats)?;
        let mut saved = None;
        if !operations.is_empty() || patch.locations.is_empty() {
            let image = self
                .modify(caller, id, "modify_image", |image| {
                    let before = image.visibility;
                    let properties = image.properties.clone();
                    patch::apply(image, &operations, dialect, caller, &self.quotas)?;
                    let target = ImageTarget::new_image(image.owner.clone(), image.visibility);
                    self.authorize_visibility(caller, Some(before), image.visibility, &target)?;
                    self.check_protected(caller, &properties, &image.properties)?;
                    Ok(true)
                })
                .await?;
            saved = Some(image);
        }
        for change in &patch.locations {
            self.change_location(caller, id, change).await?;
        }
        // The image as saved is the answer: reading it back could fail (the database going
        // away right after the commit) and answer 503 for a change that was made.
        match saved {
            Some(mut image) if patch.locations.is_empty() => {
                self.hide_protected(caller, &mut image);
                Ok(image)
            }
            _ => self.get(caller, id).await,
        }
    }

    /// Reads the image, lets `edit` change it (returning whether it did) and saves it.
    /// When an upload or import moved the image's status in between, the edit is applied
    /// again to the fresh image, so a client's save never undoes the service's own.
    async fn modify(
        &self,
        caller: &Caller,
        id: &str,
        action: &str,
        mut edit: impl FnMut(&mut Image) -> Result<bool>,
    ) -> Result<Image> {
        for _ in 0..SAVE_ATTEMPTS {
            let mut image = self.get_modifiable(caller, id, action).await?;
            let read_in = image.status;
            if !edit(&mut image)? {
                return Ok(image);
            }
            image.updated_at = time::now();
            if self.db.save_image(&image, read_in).await? {
                return Ok(image);
            }
        }
        Err(DomainError::Conflict(format!(
            "Image {id} kept changing while it was being saved; try again"
        ))
        .into())
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let image = self
            .get(caller, id)
            .await
            .map_err(|_| DomainError::NotFound(format!("Failed to find image {id} to delete")))?;
        let member = self.membership(caller, &image).await?.is_some();
        self.authorize(
            caller,
            "delete_image",
            &ImageTarget::of(&image, caller, member),
        )?;
        if image.protected {
            return Err(forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        if !self.db.delete_image(id, time::now()).await? {
            return Err(Image::not_found(id).into());
        }
        for location in &image.locations {
            if let Err(e) = self.delete_data(location).await {
                tracing::warn!(image_id = id, error = %e, "deleted image's data not removed");
            }
        }
        self.remove_staged(id).await;
        if let Some(cache) = self.cache.clone() {
            let image_id = id.to_string();
            blocking(move || cache.remove(&image_id)).await?;
        }
        Ok(())
    }

    pub async fn add_tag(&self, caller: &Caller, id: &str, tag: &str) -> Result<()> {
        check_value("tags", &Value::Array(vec![Value::String(tag.to_string())]))?;
        self.modify(caller, id, "modify_image", |image| {
            if !image.tags.insert(tag.to_string()) {
                return Ok(false);
            }
            image::check_quotas(image, &self.quotas)?;
            Ok(true)
        })
        .await?;
        Ok(())
    }

    pub async fn remove_tag(&self, caller: &Caller, id: &str, tag: &str) -> Result<()> {
        self.modify(caller, id, "modify_image", |image| {
            if !image.tags.remove(tag) {
                return Err(DomainError::NotFound(format!("Tag {tag} not found")).into());
            }
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// `active` ⇄ `deactivated`; already there is a no-op; any other status is refused.
    pub async fn set_active(&self, caller: &Caller, id: &str, active: bool) -> Result<()> {
        let (action, from, to) = if active {
            ("reactivate", Status::Deactivated, Status::Active)
        } else {
            ("deactivate", Status::Active, Status::Deactivated)
        };
        self.modify(caller, id, action, |image| {
            if image.status == to {
                return Ok(false);
            }
            if image.status != from {
                return Err(forbidden(format!(
                    "Not allowed to {action} image in status '{}'",
                    image.status.as_str()
                )));
            }
            image.transition(to)?;
            Ok(true)
        })
        .await?;
        Ok(())
    }

    async fn shared_image(&self, caller: &Caller, id: &str) -> Result<Image> {
        let image = self.get(caller, id).await?;
        if image.visibility != Visibility::Shared {
            return Err(forbidden(format!(
                "Only shared images have members. Not allowed to create members for image {id}."
            )));
        }
        Ok(image)
    }

    pub async fn add_member(&self, caller: &Caller, id: &str, member_id: &str) -> Result<Member> {
        let image = self.shared_image(caller, id).await?;
        if !self.permits(
            caller,
            "add_member",
            &ImageTarget::of(&image, caller, false),
        ) {
            return Err(forbidden(format!(
                "Not allowed to create members for image {id}."
            )));
        }
        let now = time::now();
        let member = Member {
            image_id: image.id,
            member_id: member_id.to_string(),
            status: MemberStatus::Pending,
            created_at: now,
            updated_at: now,
        };
        let quota = self.quotas.members;
        match self.db.add_member(&member, quota).await {
            Ok(true) => Ok(member),
            Ok(false) => Err(DomainError::OverLimit(format!(
                "Maximum number of members exceeded ({quota})"
            ))
            .into()),
            Err(DbError::Duplicate) => Err(DomainError::Conflict(format!(
                "Member {member_id} is duplicated for image {id}"
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Owners and admins see every member; a member sees its own entry (`get_members`).
    pub async fn members(&self, caller: &Caller, id: &str) -> Result<Vec<Member>> {
        let image = self.shared_image(caller, id).await?;
        let members = self.db.members(id).await?;
        let is_member = caller
            .project
            .as_deref()
            .is_some_and(|p| members.iter().any(|m| m.member_id == p));
        self.authorize(
            caller,
            "get_members",
            &ImageTarget::of(&image, caller, is_member),
        )?;
        if caller.is_admin || caller.owns(image.owner.as_deref()) {
            return Ok(members);
        }
        Ok(members
            .into_iter()
            .filter(|m| caller.project.as_deref() == Some(m.member_id.as_str()))
            .collect())
    }

    pub async fn member(&self, caller: &Caller, id: &str, member_id: &str) -> Result<Member> {
        let not_found = || {
            ServiceError::from(DomainError::NotFound(format!(
                "Member {member_id} not found for image {id}"
            )))
        };
        let members = self.members(caller, id).await.map_err(|_| not_found())?;
        members
            .into_iter()
            .find(|m| m.member_id == member_id)
            .ok_or_else(not_found)
    }

    /// Only the member itself (or an admin) accepts or rejects.
    pub async fn set_member_status(
        &self,
        caller: &Caller,
        id: &str,
        member_id: &str,
        status: MemberStatus,
    ) -> Result<Member> {
        let mut member = self.member(caller, id, member_id).await?;
        let image = self.get(caller, id).await?;
        let target = ImageTarget::of(&image, caller, false).with_member(member_id);
        if !self.permits(caller, "modify_member", &target) {
            return Err(forbidden(
                "You are not permitted to modify 'status' on this image member.",
            ));
        }
        let now = time::now();
        if !self
            .db
            .set_member_status(id, member_id, status, now)
            .await?
        {
            return Err(DomainError::NotFound(format!("Member {member_id} not found")).into());
        }
        member.status = status;
        member.updated_at = now;
        Ok(member)
    }

    pub async fn remove_member(&self, caller: &Caller, id: &str, member_id: &str) -> Result<()> {
        let image = self.shared_image(caller, id).await?;
        if !self.permits(
            caller,
            "delete_member",
            &ImageTarget::of(&image, caller, false),
        ) {
            return Err(forbidden(format!(
                "You are not permitted to delete member {member_id} of image {id}."
            )));
        }
        if !self.db.remove_member(id, member_id).await? {
            return Err(DomainError::NotFound(format!(
                "Member {member_id} not found for image {id}"
            ))
            .into());
        }
        Ok(())
    }
}
