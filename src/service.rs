//! Image use-cases: the one place where callers, domain rules and the repository meet
//! (and, with the data path, image bytes). It names no HTTP type.

use std::fs::File;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::db::{Database, DbError};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{self, Image, MEMBER_QUOTA, Status, Visibility, check_value, new_image};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::patch::{self, Dialect};
use crate::domain::query::ListQuery;
use crate::domain::time;
use crate::store::{Store, StoreError, Upload};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ServiceError>;

/// One page of a listing; `full` when the repository returned `limit` rows, which is
/// when Glance offers a `next` link.
pub struct Page {
    pub images: Vec<Image>,
    pub full: bool,
}

#[derive(Clone)]
pub struct Catalog {
    db: Database,
    store: Store,
    size_cap: u64,
    /// Per-project data quota in bytes; 0 = unlimited.
    storage_quota: u64,
}

/// What a download finds.
pub enum Download {
    /// The image has no data yet.
    NoData,
    Data {
        file: File,
        size: u64,
        checksum: Option<String>,
    },
}

/// Chunks in flight between the request body and the thread that writes and hashes them.
const WRITE_QUEUE: usize = 8;

fn over_quota(quota: u64) -> DomainError {
    DomainError::OverLimit(format!(
        "Image exceeds the storage quota: the project may store {quota} bytes"
    ))
}

fn too_large(size: u64, cap: u64) -> DomainError {
    DomainError::OverLimit(format!(
        "The incoming image is too large: {size} bytes exceed the size cap of {cap} bytes"
    ))
}

/// A writer thread that panicked or was cancelled fails the upload like an I/O error.
fn blocking_failed(id: &str, error: tokio::task::JoinError) -> ServiceError {
    StoreError::Io {
        path: id.into(),
        source: std::io::Error::other(error.to_string()),
    }
    .into()
}

/// A full disk is the client's 413, not the server's 500.
fn store_error(error: StoreError) -> ServiceError {
    match &error {
        StoreError::Full(_) => {
            DomainError::OverLimit(format!("Image storage media is full: {error}")).into()
        }
        StoreError::Io { source, .. } if source.raw_os_error() == Some(28) => {
            DomainError::OverLimit(format!("Image storage media is full: {error}")).into()
        }
        _ => error.into(),
    }
}

fn forbidden(message: impl Into<String>) -> ServiceError {
    DomainError::Forbidden(message.into()).into()
}

impl Catalog {
    pub fn new(db: Database, store: Store, size_cap: u64, storage_quota: u64) -> Self {
        Catalog {
            db,
            store,
            size_cap,
            storage_quota,
        }
    }

    pub async fn create(&self, caller: &Caller, attributes: Map<String, Value>) -> Result<Image> {
        if caller.read_only {
            return Err(forbidden("Read-only access"));
        }
        let image = new_image(
            attributes,
            caller,
            time::now(),
            uuid::Uuid::new_v4().to_string(),
        )?;
        match self.db.insert_image(&image).await {
            Ok(()) => Ok(image),
            Err(DbError::Duplicate) => {
                Err(DomainError::Conflict(format!("Image ID {} already exists!", image.id)).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The image if the caller may see it; otherwise the same 404 as for a missing one.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Image> {
        let not_found = || ServiceError::from(Image::not_found(id));
        if id.len() > 36 {
            return Err(not_found());
        }
        let image = self.db.get_image(id).await?.ok_or_else(not_found)?;
        let membership = self.membership(caller, &image).await?;
        if image.visible_to(caller, membership.as_ref().map(|m| m.status.as_str())) {
            Ok(image)
        } else {
            Err(not_found())
        }
    }

    async fn membership(&self, caller: &Caller, image: &Image) -> Result<Option<Member>> {
        match (&caller.project, image.visibility) {
            (Some(project), Visibility::Shared) => Ok(self.db.member(&image.id, project).await?),
            _ => Ok(None),
        }
    }

    /// The image if the caller may change it: invisible is 404, visible but not owned 403.
    async fn get_modifiable(&self, caller: &Caller, id: &str, action: &str) -> Result<Image> {
        let image = self.get(caller, id).await?;
        if !image.modifiable_by(caller) {
            return Err(forbidden(format!(
                "You are not authorized to complete {action} action."
            )));
        }
        Ok(image)
    }

    pub async fn list(&self, caller: &Caller, query: &ListQuery) -> Result<Page> {
        let marker =
            match &query.marker {
                Some(id) => Some(self.get(caller, id).await.map_err(|_| {
                    DomainError::Invalid(format!("marker {id} could not be found."))
                })?),
                None => None,
            };
        let images = self.db.list_images(query, caller, marker.as_ref()).await?;
        let full = query.limit > 0 && images.len() == query.limit as usize;
        Ok(Page { images, full })
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        dialect: Dialect,
    ) -> Result<Image> {
        let operations = patch::parse(body, dialect)?;
        let mut image = self.get_modifiable(caller, id, "modify_image").await?;
        patch::apply(&mut image, &operations, dialect, caller)?;
        self.save(image).await
    }

    async fn save(&self, mut image: Image) -> Result<Image> {
        image.updated_at = time::now();
        if self.db.save_image(&image).await? {
            Ok(image)
        } else {
            Err(Image::not_found(&image.id).into())
        }
    }

    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let image = self
            .get(caller, id)
            .await
            .map_err(|_| DomainError::NotFound(format!("Failed to find image {id} to delete")))?;
        if !image.modifiable_by(caller) {
            return Err(forbidden(
                "You are not authorized to complete delete_image action.",
            ));
        }
        if image.protected {
            return Err(forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        if !self.db.delete_image(id, time::now()).await? {
            return Err(Image::not_found(id).into());
        }
        if let Some(location) = &image.location {
            if let Err(e) = self.store.delete(location) {
                tracing::warn!(image_id = id, error = %e, "deleted image's data not removed");
            }
        }
        Ok(())
    }

    /// Streams `body` into the store while hashing it: `queued` → `saving` → `active`. Any
    /// failure removes the partial data and returns the image to `queued`.
    pub async fn upload<S>(
        &self,
        caller: &Caller,
        id: &str,
        declared: Option<u64>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let image = self.get_modifiable(caller, id, "upload_image").await?;
        if image.status != Status::Queued {
            return Err(DomainError::Conflict(format!(
                "Image status transition from {} to saving is not allowed",
                image.status.as_str()
            ))
            .into());
        }
        let missing: Vec<&str> = [
            ("disk_format", &image.disk_format),
            ("container_format", &image.container_format),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
        match missing[..] {
            [] => {}
            [one] => {
                return Err(DomainError::Invalid(format!(
                    "Property {one} must be set prior to saving data."
                ))
                .into());
            }
            _ => {
                return Err(DomainError::Invalid(
                    "Properties disk_format, container_format must be set prior to saving data."
                        .into(),
                )
                .into());
            }
        }
        if let Some(size) = declared.filter(|s| *s > self.size_cap) {
            return Err(too_large(size, self.size_cap).into());
        }
        // What the owner may still store: the upload is cut when it would pass it.
        let allowance = match (&image.owner, self.storage_quota) {
            (Some(owner), quota) if quota > 0 => {
                let used = self.db.stored_by(owner).await?;
                let left = quota.saturating_sub(used);
                if declared.is_some_and(|size| size > left) {
                    return Err(over_quota(quota).into());
                }
                Some((left, quota))
            }
            _ => None,
        };
        if !self
            .db
            .transition(id, "queued", "saving", time::now())
            .await?
        {
            return Err(
                DomainError::Conflict(format!("Image {id} is already being uploaded")).into(),
            );
        }
        let written = self.receive(id, declared, allowance, body).await;
        let stored = match written {
            Ok(stored) => stored,
            Err(e) => {
                self.requeue(id).await;
                return Err(e);
            }
        };
        let Some(mut image) = self.db.get_image(id).await? else {
            let _ = self.store.delete(&stored.location);
            return Err(
                DomainError::Gone(format!("Image {id} was deleted during the upload.")).into(),
            );
        };
        image.size = i64::try_from(stored.size).ok();
        image.checksum = Some(stored.md5);
        image.os_hash_algo = Some(stored.hash_algo);
        image.os_hash_value = Some(stored.hash);
        image.location = Some(stored.location.clone());
        image.status = Status::Active;
        if let Err(e) = self.save(image).await {
            let _ = self.store.delete(&stored.location);
            self.requeue(id).await;
            return Err(e);
        }
        tracing::info!(image_id = id, size = stored.size, "image data stored");
        Ok(())
    }

    /// Writes the body through a blocking thread (file I/O and hashing stay off the async
    /// workers); checks size cap and declared size as bytes arrive.
    async fn receive<S>(
        &self,
        id: &str,
        declared: Option<u64>,
        allowance: Option<(u64, u64)>,
        mut body: S,
    ) -> Result<crate::store::Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let upload = self.store.begin(id, declared).map_err(store_error)?;
        let (chunks, mut queue) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            let mut upload: Upload = upload;
            while let Some(chunk) = queue.blocking_recv() {
                upload.write(chunk)?;
            }
            Ok::<_, StoreError>(upload)
        });
        let mut received: u64 = 0;
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    DomainError::Invalid(format!("The upload was interrupted: {e}"))
                })?;
                received += chunk.len() as u64;
                if received > self.size_cap {
                    return Err(too_large(received, self.size_cap).into());
                }
                if let Some((_, quota)) = allowance.filter(|(left, _)| received > *left) {
                    return Err(over_quota(quota).into());
                }
                if let Some(expected) = declared.filter(|e| received > *e) {
                    return Err(DomainError::Invalid(format!(
                        "Size exceeds: expected {expected} bytes, got {received} bytes"
                    ))
                    .into());
                }
                if chunks.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let upload = match writer.await {
            Ok(Ok(upload)) => upload,
            Ok(Err(e)) => return Err(store_error(e)),
            Err(e) => return Err(blocking_failed(id, e)),
        };
        outcome?;
        if let Some(expected) = declared.filter(|e| *e != upload.size()) {
            return Err(DomainError::Invalid(format!(
                "Size mismatch: expected {expected} bytes, got {} bytes",
                upload.size()
            ))
            .into());
        }
        tokio::task::spawn_blocking(move || upload.finish())
            .await
            .map_err(|e| blocking_failed(id, e))?
            .map_err(store_error)
    }

    /// Returns an interrupted upload's image to `queued` (its partial data is already gone).
    async fn requeue(&self, id: &str) {
        let result = async {
            // Deleted meanwhile: nothing to return.
            let Some(mut image) = self.db.get_image(id).await? else {
                return Ok(());
            };
            if image.status == Status::Saving {
                image.transition(Status::Queued).ok();
                image.updated_at = time::now();
                self.db.save_image(&image).await?;
            }
            Ok::<_, DbError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(image_id = id, error = %e, "could not return the image to queued");
        }
    }

    pub async fn download(&self, caller: &Caller, id: &str) -> Result<Download> {
        let image = self.get(caller, id).await?;
        if image.status == Status::Deactivated && !caller.is_admin {
            return Err(forbidden(
                "The requested image has been deactivated. Image data download is forbidden.",
            ));
        }
        let (Some(location), Some(size)) = (&image.location, image.size) else {
            return Ok(Download::NoData);
        };
        let file = self.store.open_read(location)?;
        Ok(Download::Data {
            file,
            size: u64::try_from(size).unwrap_or(0),
            checksum: image.checksum,
        })
    }

    pub async fn add_tag(&self, caller: &Caller, id: &str, tag: &str) -> Result<()> {
        check_value("tags", &Value::Array(vec![Value::String(tag.to_string())]))?;
        let mut image = self.get_modifiable(caller, id, "modify_image").await?;
        if image.tags.insert(tag.to_string()) {
            image::check_quotas(&image)?;
            self.save(image).await?;
        }
        Ok(())
    }

    pub async fn remove_tag(&self, caller: &Caller, id: &str, tag: &str) -> Result<()> {
        let mut image = self.get_modifiable(caller, id, "modify_image").await?;
        if !image.tags.remove(tag) {
            return Err(DomainError::NotFound(format!("Tag {tag} not found")).into());
        }
        self.save(image).await?;
        Ok(())
    }

    /// `active` ⇄ `deactivated`; already there is a no-op; any other status is refused.
    pub async fn set_active(&self, caller: &Caller, id: &str, active: bool) -> Result<()> {
        let (action, from, to) = if active {
            ("reactivate", Status::Deactivated, Status::Active)
        } else {
            ("deactivate", Status::Active, Status::Deactivated)
        };
        let mut image = self.get_modifiable(caller, id, action).await?;
        if image.status == to {
            return Ok(());
        }
        if image.status != from {
            return Err(forbidden(format!(
                "Not allowed to {action} image in status '{}'",
                image.status.as_str()
            )));
        }
        image.transition(to)?;
        self.save(image).await?;
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
        if !image.modifiable_by(caller) {
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
        match self.db.add_member(&member, MEMBER_QUOTA).await {
            Ok(true) => Ok(member),
            Ok(false) => Err(DomainError::OverLimit(format!(
                "Maximum number of members exceeded ({MEMBER_QUOTA})"
            ))
            .into()),
            Err(DbError::Duplicate) => Err(DomainError::Conflict(format!(
                "Member {member_id} is duplicated for image {id}"
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Owners and admins see every member; a member sees its own entry.
    pub async fn members(&self, caller: &Caller, id: &str) -> Result<Vec<Member>> {
        let image = self.shared_image(caller, id).await?;
        let members = self.db.members(id).await?;
        if image.modifiable_by(caller) || caller.is_admin {
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
        let is_member = caller.project.as_deref() == Some(member_id);
        if !(is_member || caller.is_admin) || caller.read_only {
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
        if !image.modifiable_by(caller) {
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
