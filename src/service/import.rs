//! Interoperable image import, the request side: staging (`PUT /stage`), accepting an import
//! (`POST /import`, which records a task and takes the image's import lock in one
//! transaction), the tasks API and dropping a copy from a store. The task that carries an
//! import out is `import_task`'s.

use serde_json::{Value, json};

use super::data::{ClaimKind, blocking, take_any, too_large};
use super::{Catalog, Result, ServiceError, WebDownload, forbidden};
use crate::config::ImportMethod;
use crate::db::{ImageChange, ImageData, TaskWrite};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Status};
use crate::domain::import::{self, ImportRequest, Method, Targets};
use crate::domain::task::{self, Task, TaskStatus};
use crate::domain::time;
use crate::store::Stored;

/// The import lock: the id of the task that owns the image's import.
pub(super) const LOCK: &str = "os_glance_import_task";
pub(super) const IMPORTING: &str = "os_glance_importing_to_stores";
pub(super) const FAILED: &str = "os_glance_failed_import";
const STAGE_HOST: &str = "os_glance_stage_host";

/// What a generation's config says about import.
pub struct ImportSettings {
    pub methods: Vec<ImportMethod>,
    pub web: WebDownload,
    /// `inject_metadata`, when the plugin is on.
    pub inject: Option<Inject>,
    /// The plugins that change the bytes (`decompress`, `convert`), in their order.
    pub steps: Vec<crate::transform::Step>,
    /// Where each import's steps write: a directory per image.
    pub work_dir: std::path::PathBuf,
}

/// Properties every import by a caller without any of `ignore_user_roles` adds to its image.
pub struct Inject {
    pub properties: Vec<(String, String)>,
    pub ignore_user_roles: Vec<String>,
}

impl Inject {
    /// What an import by `caller` adds: nothing for a caller with an ignored role, and never
    /// a base attribute (only custom properties are injected).
    fn for_caller(&self, caller: &Caller) -> Vec<(String, String)> {
        if caller.roles.iter().any(|role| {
            self.ignore_user_roles
                .iter()
                .any(|r| r.eq_ignore_ascii_case(role))
        }) {
            return Vec::new();
        }
        self.properties
            .iter()
            .filter(|(name, _)| !crate::domain::image::BASE_KEYS.contains(&name.as_str()))
            .cloned()
            .collect()
    }
}

fn conflict(message: impl Into<String>) -> ServiceError {
    DomainError::Conflict(message.into()).into()
}

impl Catalog {
    /// The methods `/v2/info/import` and `OpenStack-image-import-methods` advertise.
    pub fn import_methods(&self) -> Vec<&'static str> {
        self.import.methods.iter().map(|m| m.as_str()).collect()
    }

    fn offers(&self, method: ImportMethod) -> bool {
        self.import.methods.contains(&method)
    }

    /// `PUT /v2/images/{id}/stage`: streams the data into the staging area, hashing it as
    /// an upload does; `queued` → `uploading`. A failure, or the request ending, removes
    /// the staged data and returns the image to `queued`.
    pub async fn stage<S>(
        &self,
        caller: &Caller,
        id: &str,
        declared: Option<u64>,
        body: S,
    ) -> Result<()>
    where
        S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>>
            + Send
            + Unpin,
    {
        if !self.offers(ImportMethod::GlanceDirect) {
            return Err(DomainError::NotFound(
                "'glance-direct' method is not available at this site.".into(),
            )
            .into());
        }
        self.settled(id).await;
        let image = self.get_modifiable(caller, id, "modify_image").await?;
        if image.status != Status::Queued {
            return Err(conflict(format!(
                "Image status transition from {} to uploading is not allowed",
                image.status.as_str()
            )));
        }
        if let Some(size) = declared.filter(|s| *s > self.size_cap) {
            return Err(too_large(size, self.size_cap).into());
        }
        if self.staged_location(id).await?.is_some() {
            return Err(conflict(format!("Image {id} already has staged data")));
        }
        let allowance = self.allowance(&image, declared).await?;
        self.enforce_limits(
            caller,
            &[("image_stage_total", 0), ("image_count_uploading", 1)],
        )
        .await?;
        let slot = self.transfer_slot().await?;
        let claim = self.claim(id, ClaimKind::Stage).await?;
        let staging = self.stores.staging().clone();
        let staged = match self
            .receive(&staging, id, declared, allowance, body, slot, take_any())
            .await
        {
            Ok((staged, _)) => staged,
            Err(e) => {
                claim.release().await;
                return Err(e);
            }
        };
        self.keep_staged_hashes(id, &staged).await;
        let change = ImageChange {
            expect_status: Some(&["uploading"]),
            data: Some(ImageData {
                size: i64::try_from(staged.size).ok(),
                ..ImageData::default()
            }),
            ..ImageChange::default()
        };
        match self
            .db
            .change_image(id, &change, TaskWrite::None, time::now())
            .await
        {
            Ok(true) => claim.commit(),
            Ok(false) => {
                claim.release().await;
                return Err(
                    DomainError::Gone(format!("Image {id} was deleted during staging.")).into(),
                );
            }
            Err(e) => {
                claim.release().await;
                return Err(e.into());
            }
        }
        tracing::info!(image_id = id, size = staged.size, "image data staged");
        Ok(())
    }

    /// Where image `id`'s staged data is, if there is any.
    pub(super) async fn staged_location(&self, id: &str) -> Result<Option<String>> {
        let staging = self.stores.staging().clone();
        let id = id.to_string();
        blocking(move || staging.find(&id)).await
    }

    pub(super) async fn remove_staged(&self, id: &str) {
        if let Err(e) = crate::transform::remove(&self.import.work_dir.join(id)).await {
            tracing::warn!(image_id = id, error = %e, "import work directory not removed");
        }
        let staging = self.stores.staging().clone();
        let image_id = id.to_string();
        match blocking(move || staging.delete_with_hashes(&image_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(image_id = id, error = %e, "staged data not removed"),
            Err(e) => tracing::warn!(image_id = id, error = %e, "staged data not removed"),
        }
    }

    /// Staged data keeps its hashes, so the import can link it into a store on the same
    /// filesystem instead of copying it; without them it is copied and hashed again.
    pub(super) async fn keep_staged_hashes(&self, id: &str, staged: &Stored) {
        let staging = self.stores.staging().clone();
        let (image_id, staged) = (id.to_string(), staged.clone());
        let kept = blocking(move || staging.keep_hashes(&image_id, &staged)).await;
        if let Err(e) = kept.and_then(|kept| kept.map_err(ServiceError::from)) {
            tracing::warn!(image_id = id, error = %e, "staged data's hashes not kept; the import copies it");
        }
    }

    /// `POST /v2/images/{id}/import`: checks the request as Glance does, then records the
    /// task and takes the image's import lock in one transaction and starts the task.
    pub async fn import(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        header_store: Option<&str>,
        request_id: &str,
    ) -> Result<String> {
        let request = import::parse(body, header_store, |name| {
            self.import.methods.iter().any(|m| m.as_str() == name)
        })?;
        let task = self
            .accept_import(caller, id, &request, Err(body), request_id)
            .await?;
        Ok(task.id)
    }

    /// Accepts `request` on image `id` and starts its task: an import's (whose input keeps
    /// the request `body`), or a legacy import's (`POST /v2/tasks`, whose input is the
    /// client's). Returns the task as it was created.
    async fn accept_import(
        &self,
        caller: &Caller,
        id: &str,
        request: &ImportRequest,
        input: std::result::Result<&Value, &Value>,
        request_id: &str,
    ) -> Result<Task> {
        let copies = request.method == Method::CopyImage;
        // Glance guards an import with modify_image, a copy with copy_image.
        let rule = if copies { "copy_image" } else { "modify_image" };
        let image = self.get_modifiable(caller, id, rule).await?;
        for (key, value) in [
            ("container_format", &image.container_format),
            ("disk_format", &image.disk_format),
        ] {
            if value.is_none() {
                return Err(conflict(format!("'{key}' needs to be set before import")));
            }
        }
        let expected: &'static [&'static str] = match (&request.method, image.status) {
            (Method::CopyImage, Status::Active) => &["active"],
            (Method::CopyImage, status) => {
                return Err(conflict(format!(
                    "Image {id} is {}: only active images can be copied",
                    status.as_str()
                )));
            }
            (_, Status::Active) => {
                return Err(conflict(
                    "Image with status active cannot be target for import",
                ));
            }
            (Method::GlanceDirect, Status::Uploading) => &["uploading"],
            (Method::GlanceDirect, _) => {
                return Err(conflict(
                    "Image needs to be staged before 'glance-direct' method can be used",
                ));
            }
            (Method::WebDownload { .. }, Status::Queued) => &["queued"],
            (Method::WebDownload { .. }, _) => {
                return Err(conflict(
                    "Image needs to be in 'queued' state to use 'web-download' method",
                ));
            }
        };
        let busy = || {
            conflict(format!(
                "New operation on image '{id}' is not permitted as prior operation is still in \
                 progress"
            ))
        };
        if image.properties.contains_key(LOCK) {
            return Err(busy());
        }
        if let Method::WebDownload { uri } = &request.method {
            self.import
                .web
                .check(uri)
                .map_err(|e| DomainError::Invalid(e.to_string()))?;
        }
        let stores = self.targets(&image, request)?;
        let now = time::now();
        let (kind, input) = match input {
            Ok(legacy) => (task::LEGACY_IMPORT, legacy.clone()),
            Err(body) => (
                task::IMPORT,
                json!({"image_id": id, "import_req": body, "backend": stores}),
            ),
        };
        let task = Task {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            status: TaskStatus::Pending,
            owner: caller.project.clone(),
            image_id: Some(id.to_string()),
            request_id: Some(request_id.to_string()),
            user_id: caller.user.clone(),
            input,
            result: None,
            message: String::new(),
            created_at: now,
            updated_at: now,
            expires_at: None,
        };
        let change = ImageChange {
            expect_status: Some(expected),
            require_absent: Some(LOCK),
            status: (!copies).then_some(Status::Importing),
            set_properties: vec![
                (LOCK, task.id.clone()),
                (IMPORTING, stores.join(",")),
                (FAILED, String::new()),
            ],
            remove_properties: vec![STAGE_HOST],
            // inject_metadata: set with the lock, so an import that starts has them.
            custom_properties: self
                .import
                .inject
                .as_ref()
                .map(|inject| inject.for_caller(caller))
                .unwrap_or_default(),
            ..ImageChange::default()
        };
        // Staged data is on the disk of the node that staged it: that node runs the import.
        let runner = match request.method {
            Method::GlanceDirect => self.db.claim_holder(id).await?,
            _ => None,
        };
        let here = self.executor.board().node();
        let runner = runner.unwrap_or_else(|| here.to_string());
        let holder = self.holder_of(&runner);
        if !self
            .db
            .change_image(id, &change, TaskWrite::Insert(&task, holder), now)
            .await?
        {
            return Err(busy());
        }
        tracing::info!(image_id = id, task_id = %task.id, method = request.method.name(), ?stores, node = %runner, "import accepted");
        if runner == here {
            self.resume(&task.id).await;
        }
        Ok(task)
    }

    /// The stores an import writes to, each known and writable; for copy-image, without
    /// the stores that already hold the image.
    fn targets(&self, image: &Image, request: &ImportRequest) -> Result<Vec<String>> {
        let copies = request.method == Method::CopyImage;
        let named = match &request.targets {
            Targets::Default => vec![self.stores.default_id().to_string()],
            Targets::Named(stores) => stores.clone(),
            Targets::All => {
                let all: Vec<String> = self
                    .stores
                    .all()
                    .iter()
                    .filter(|s| !s.read_only())
                    .filter(|s| !copies || image.location_in(&s.id).is_none())
                    .map(|s| s.id.clone())
                    .collect();
                if all.is_empty() {
                    return Err(conflict(format!(
                        "Image {} is already present in every store",
                        image.id
                    )));
                }
                return Ok(all);
            }
        };
        for id in &named {
            let store = self
                .stores
                .get(id)
                .map_err(|_| conflict(format!("Store {id} is not available on this node")))?;
            if store.read_only() {
                return Err(conflict(format!("Store {id} is read-only")));
            }
            if copies && image.location_in(id).is_some() {
                return Err(DomainError::Invalid(format!(
                    "Image {} is already present in store {id}",
                    image.id
                ))
                .into());
            }
        }
        Ok(named)
    }
}

impl Catalog {
    /// The tasks API is behind `tasks_api_access` as well as its own rule.
    fn tasks_api(&self, caller: &Caller, rule: &str) -> bool {
        let project = super::authz::ImageTarget::project_of(caller);
        self.permits(caller, "tasks_api_access", &project) && self.permits(caller, rule, &project)
    }

    /// `GET /v2/images/{id}/tasks`: visible to whoever sees the image.
    pub async fn image_tasks(&self, caller: &Caller, id: &str) -> Result<Vec<Task>> {
        self.get(caller, id).await?;
        Ok(self.db.tasks_of_image(id).await?)
    }

    /// `GET /v2/tasks`: newest first; for admins.
    pub async fn tasks(
        &self,
        caller: &Caller,
        kind: Option<&str>,
        status: Option<&str>,
        marker: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Task>> {
        if !self.tasks_api(caller, "get_tasks") {
            return Err(forbidden(
                "You are not authorized to complete get_tasks action.",
            ));
        }
        if let Some(marker) = marker {
            if self.db.get_task(marker).await?.is_none() {
                return Err(DomainError::Invalid(format!("Invalid marker {marker}")).into());
            }
        }
        Ok(self.db.list_tasks(kind, status, marker, limit).await?)
    }

    /// `DELETE /v2/stores/{store}/{id}`: drops the image's copy in one store (an admin's
    /// call, as Glance's `delete_image_location`). The last copy cannot go this way.
    pub async fn delete_from_store(&self, caller: &Caller, store: &str, id: &str) -> Result<()> {
        let image = self
            .get_modifiable(caller, id, "delete_image_location")
            .await?;
        if self.stores.get(store).is_err() {
            return Err(conflict(format!("Unknown store {store}")));
        }
        if image.status != Status::Active {
            return Err(conflict(format!(
                "It's not allowed to remove image data from store if image status is not \
                 'active'. Image {id} is {}",
                image.status.as_str()
            )));
        }
        let Some(location) = image.location_in(store).cloned() else {
            return Err(DomainError::NotFound(format!(
                "Image {id} is not available in store {store}"
            ))
            .into());
        };
        if image.locations.len() == 1 {
            return Err(forbidden(
                "Cannot delete image data from the only store containing it. Consider deleting \
                 the image instead.",
            ));
        }
        let change = ImageChange {
            expect_status: Some(&["active"]),
            require_absent: Some(LOCK),
            remove_locations: vec![store.to_string()],
            ..ImageChange::default()
        };
        if !self
            .db
            .change_image(id, &change, TaskWrite::None, time::now())
            .await?
        {
            return Err(conflict(format!(
                "Image {id} changed or is being imported; try again"
            )));
        }
        if let Err(e) = self.delete_data(&location).await {
            tracing::warn!(image_id = id, store, error = %e, "removed copy's data not deleted");
        }
        tracing::info!(image_id = id, store, "image data removed from store");
        Ok(())
    }

    /// `POST /v2/tasks`, the legacy import (type `import`, for admins): an image made from
    /// `input.image_properties` (its `disk_format` from `import_from_format` unless given,
    /// `container_format` `bare` unless given), then imported from `input.import_from` with
    /// web-download's rules, as a task that keeps the client's input and ends with
    /// `result.image_id`. The URI is checked before anything is made, as Glance does.
    pub async fn create_legacy_task(
        &self,
        caller: &Caller,
        input: &Value,
        request_id: &str,
    ) -> Result<Task> {
        if !self.tasks_api(caller, "add_task") {
            return Err(forbidden(
                "You are not authorized to complete tasks_api_access action.",
            ));
        }
        let invalid = |message: String| -> ServiceError { DomainError::Invalid(message).into() };
        let uri = match input.get("import_from") {
            Some(Value::String(uri)) => uri.clone(),
            None | Some(Value::Null) => return Err(invalid("Invalid location: None".into())),
            Some(other) => return Err(invalid(format!("Invalid location: {other}"))),
        };
        if uri.starts_with("file://") || uri.starts_with("filesystem://") {
            return Err(invalid(
                "File based imports are not allowed. Please use a non-local source of image data."
                    .into(),
            ));
        }
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(invalid(
                "The given uri is not valid. Please specify a valid uri from the following list \
                 of supported uri ['http']"
                    .into(),
            ));
        }
        if self.import.web.check(&uri).is_err() {
            return Err(invalid(format!(
                "URI for legacy import task does not pass filtering: {uri}"
            )));
        }
        for key in ["import_from_format", "image_properties"] {
            if input.get(key).is_none() {
                return Err(invalid(format!("Input does not contain '{key}' field")));
            }
        }
        let Some(Value::Object(properties)) = input.get("image_properties") else {
            return Err(invalid(
                "Input's 'image_properties' must be an object".into(),
            ));
        };
        let mut attributes = properties.clone();
        if let Some(format) = input.get("import_from_format").filter(|f| f.is_string()) {
            attributes
                .entry("disk_format")
                .or_insert_with(|| format.clone());
        }
        attributes
            .entry("container_format")
            .or_insert_with(|| json!("bare"));
        let image = self.create(caller, attributes).await?;
        let request = json!({"method": {"name": "web-download", "uri": uri}});
        let request = import::parse(&request, None, |_| true)?;
        match self
            .accept_import(caller, &image.id, &request, Ok(input), request_id)
            .await
        {
            // As created: read back, it may already be under way.
            Ok(task) => Ok(task),
            Err(e) => {
                // Nothing is left of a task that did not start.
                if let Err(cleanup) = self.delete(caller, &image.id).await {
                    tracing::warn!(image_id = %image.id, error = %cleanup, "image of a refused legacy task not deleted");
                }
                Err(e)
            }
        }
    }

    /// `GET /v2/tasks/{id}`: the tasks API is for admins.
    pub async fn task(&self, caller: &Caller, id: &str) -> Result<Task> {
        if !self.tasks_api(caller, "get_task") {
            return Err(forbidden(
                "You are not authorized to complete get_task action.",
            ));
        }
        self.db.get_task(id).await?.ok_or_else(|| {
            DomainError::NotFound(format!("Task with the given id {id} not found")).into()
        })
    }
}
