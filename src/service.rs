//! Image use-cases: the one place where callers, domain rules and the repository meet
//! (and, with the data path, image bytes). It names no HTTP type.

use serde_json::{Map, Value};

use crate::db::{Database, DbError};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{self, Image, MEMBER_QUOTA, Status, Visibility, check_value, new_image};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::patch::{self, Dialect};
use crate::domain::query::ListQuery;
use crate::domain::time;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Db(#[from] DbError),
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
}

fn forbidden(message: impl Into<String>) -> ServiceError {
    DomainError::Forbidden(message.into()).into()
}

impl Catalog {
    pub fn new(db: Database) -> Self {
        Catalog { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
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
        Ok(())
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
