//! The locations API (`images.show_multiple_locations`): services reading an image's
//! locations and adding one for data already in a configured store, and the location
//! changes of a JSON patch, as Glance carries them out. Bytes never move here: a location
//! names data a store already holds (`data` is where bytes come in).

use super::data::store_error;
use super::{Catalog, Result, ServiceError};
use crate::db::{ImageChange, ImageData, TaskWrite};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::patch::LocationChange;
use crate::domain::time;
use crate::store::StoreError;

impl Catalog {
    /// `GET /v2/images/{id}/locations` (`fetch_image_location`: services).
    pub async fn locations(&self, caller: &Caller, id: &str) -> Result<Image> {
        self.get_modifiable(caller, id, "fetch_image_location")
            .await
    }

    /// `POST /v2/images/{id}/locations` (`add_image_location`): data that is already in a
    /// store becomes a queued image's, which turns active. `validation` is Glance's
    /// `validation_data` (`os_hash_algo`, `os_hash_value`), recorded as the image's hash.
    /// Until a store resolves locations glint did not write, one outside the configured
    /// stores is refused.
    pub async fn add_location(
        &self,
        caller: &Caller,
        id: &str,
        url: &str,
        validation: Option<(String, String)>,
    ) -> Result<Image> {
        let image = self
            .get_modifiable(caller, id, "add_image_location")
            .await?;
        if image.status != Status::Queued {
            return Err(DomainError::Conflict(format!(
                "It's not allowed to add locations if image status is {}.",
                image.status.as_str()
            ))
            .into());
        }
        self.check_location_quota(&image)?;
        let invalid = |message: String| ServiceError::from(DomainError::Invalid(message));
        let (store, size) = self.located(url).await?;
        let (os_hash_algo, os_hash_value) = match validation {
            Some((algo, value)) => {
                let length = match algo.as_str() {
                    "sha256" => 64,
                    "sha384" => 96,
                    "sha512" => 128,
                    _ => {
                        return Err(invalid(format!(
                            "os_hash_algo must be one of sha256, sha384, sha512, got {algo}"
                        )));
                    }
                };
                if value.len() != length || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(format!(
                        "os_hash_value must be {length} hexadecimal digits for {algo}"
                    )));
                }
                (Some(algo), Some(value.to_ascii_lowercase()))
            }
            None => (None, None),
        };
        let change = ImageChange {
            expect_status: Some(&["queued"]),
            status: Some(Status::Active),
            data: Some(ImageData {
                size: i64::try_from(size).ok(),
                checksum: None,
                os_hash_algo,
                os_hash_value,
                virtual_size: None,
            }),
            add_location: Some(Location {
                store,
                url: url.to_string(),
            }),
            ..ImageChange::default()
        };
        self.record_location(id, &change).await?;
        tracing::info!(image_id = id, url, "location added");
        self.get(caller, id).await
    }
}

impl Catalog {
    /// One location change of a JSON patch (`images.show_multiple_locations`), as Glance
    /// carries it out: add (a queued image becomes active; an active one gains a copy in
    /// another store, of the same size), replace (only an image without locations), remove
    /// (never the last one).
    pub(super) async fn change_location(
        &self,
        caller: &Caller,
        id: &str,
        change: &LocationChange,
    ) -> Result<()> {
        match change {
            LocationChange::Replace { urls } => {
                let image = self
                    .get_modifiable(caller, id, "set_image_location")
                    .await?;
                if urls.is_empty() {
                    return Err(super::forbidden("Cannot set locations to empty list."));
                }
                if !image.locations.is_empty() {
                    return Err(DomainError::Invalid(
                        "Cannot replace locations from a non-empty list to a non-empty list."
                            .into(),
                    )
                    .into());
                }
                for url in urls {
                    self.add_a_location(caller, id, url).await?;
                }
                Ok(())
            }
            LocationChange::Add { position, url } => {
                let image = self
                    .get_modifiable(caller, id, "set_image_location")
                    .await?;
                if position.is_some_and(|p| p > image.locations.len()) {
                    return Err(DomainError::Invalid(
                        "Invalid position for adding a location.".into(),
                    )
                    .into());
                }
                self.add_a_location(caller, id, url).await
            }
            LocationChange::Remove { position } => {
                let image = self
                    .get_modifiable(caller, id, "delete_image_location")
                    .await?;
                if image.status != Status::Active {
                    return Err(DomainError::Conflict(format!(
                        "It's not allowed to remove locations if image status is {}.",
                        image.status.as_str()
                    ))
                    .into());
                }
                let Some(location) = image.locations.get(*position) else {
                    return Err(DomainError::Invalid(
                        "Invalid position for removing a location.".into(),
                    )
                    .into());
                };
                if image.locations.len() == 1 {
                    return Err(super::forbidden(
                        "Cannot remove last location in the image.",
                    ));
                }
                self.delete_from_store(caller, &location.store, id).await
            }
        }
    }

    /// A queued image takes the location as its data (`add_location`); an active one gains
    /// it as a copy in a store it is not in yet, when the file there is as large.
    async fn add_a_location(&self, caller: &Caller, id: &str, url: &str) -> Result<()> {
        let image = self
            .get_modifiable(caller, id, "set_image_location")
            .await?;
        if image.status == Status::Queued {
            self.add_location(caller, id, url, None).await?;
            return Ok(());
        }
        if image.status != Status::Active {
            return Err(DomainError::Conflict(format!(
                "It's not allowed to add locations if image status is {}.",
                image.status.as_str()
            ))
            .into());
        }
        let (store, size) = self.located(url).await?;
        if image.location_in(&store).is_some() {
            return Err(DomainError::Conflict(format!(
                "Image {id} already has a location in store {store}"
            ))
            .into());
        }
        self.check_location_quota(&image)?;
        if i64::try_from(size).ok() != image.size {
            return Err(DomainError::Invalid(format!(
                "Location {url} holds {size} bytes; the image has {}",
                image.size.unwrap_or(0)
            ))
            .into());
        }
        let change = ImageChange {
            expect_status: Some(&["active"]),
            add_location: Some(Location {
                store,
                url: url.to_string(),
            }),
            ..ImageChange::default()
        };
        self.record_location(id, &change).await
    }

    /// The store a location URL is in, and the size of its data: glint adds only locations
    /// inside its configured stores.
    async fn located(&self, url: &str) -> Result<(String, u64)> {
        let invalid = |message: String| ServiceError::from(DomainError::Invalid(message));
        let store = self
            .stores
            .all()
            .iter()
            .find(|s| s.owns(url))
            .ok_or_else(|| {
                invalid(format!(
                    "Location {url} is not in a store of this deployment: glint adds only \
                     locations inside its configured stores"
                ))
            })?;
        let size = store.size_of(url).await.map_err(|e| match e {
            StoreError::Unavailable { .. } => store_error(e),
            e => invalid(format!("Location {url} cannot be read: {e}")),
        })?;
        let store = store.id.clone();
        Ok((store, size))
    }

    fn check_location_quota(&self, image: &Image) -> Result<()> {
        if image.locations.len() >= self.quotas.locations {
            return Err(DomainError::OverLimit(format!(
                "Maximum number of locations exceeded ({})",
                self.quotas.locations
            ))
            .into());
        }
        Ok(())
    }

    /// Saves a location change; the image moving meanwhile is a conflict to retry.
    async fn record_location(&self, id: &str, change: &ImageChange) -> Result<()> {
        if !self
            .db
            .change_image(id, change, TaskWrite::None, time::now())
            .await?
        {
            return Err(DomainError::Conflict(format!(
                "Image {id} changed while its location was added; try again"
            ))
            .into());
        }
        Ok(())
    }
}
