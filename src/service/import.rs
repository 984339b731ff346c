//! Interoperable image import: staging (`PUT /stage`), accepting an import (`POST /import`,
//! which records a task and takes the image's import lock in one transaction), and the task
//! that carries it out. The task keeps its progress where Glance shows it — the stores
//! still to do in `os_glance_importing_to_stores`, the failed ones in
//! `os_glance_failed_import`, each finished copy as a location — so a task cut by a drain
//! deadline, a stop or a crash is taken up again from there.

use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use super::{Catalog, Result, ServiceError, WebDownload, data_of, forbidden};
use crate::config::ImportMethod;
use crate::db::{ImageChange, ImageData, TaskUpdate, TaskWrite};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::import::{self, ImportRequest, Method, Targets};
use crate::domain::task::{self, Task, TaskStatus};
use crate::domain::time;
use crate::store::{STAGING_ID, Store, Stored};

/// The import lock: the id of the task that owns the image's import.
const LOCK: &str = "os_glance_import_task";
const IMPORTING: &str = "os_glance_importing_to_stores";
const FAILED: &str = "os_glance_failed_import";
const STAGE_HOST: &str = "os_glance_stage_host";

/// Chunk size when copying stored or staged data into a store.
const COPY_CHUNK: usize = 1 << 20;

/// What a generation's config says about import.
pub struct ImportSettings {
    pub methods: Vec<ImportMethod>,
    pub web: WebDownload,
}

/// A task's plan, as its input recorded it.
struct Plan {
    image_id: String,
    request: ImportRequest,
    stores: Vec<String>,
}

impl Plan {
    fn of(task: &Task) -> std::result::Result<Plan, String> {
        let image_id = task
            .input
            .get("image_id")
            .and_then(Value::as_str)
            .ok_or("task input has no image_id")?
            .to_string();
        let request = task
            .input
            .get("import_req")
            .ok_or("task input has no import_req")?;
        let request = import::parse(request, None, |_| true).map_err(|e| e.to_string())?;
        let stores = task
            .input
            .get("backend")
            .and_then(Value::as_array)
            .ok_or("task input has no backend")?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        Ok(Plan {
            image_id,
            request,
            stores,
        })
    }

    fn copies(&self) -> bool {
        self.request.method == Method::CopyImage
    }
}

fn conflict(message: impl Into<String>) -> ServiceError {
    DomainError::Conflict(message.into()).into()
}

fn store_list(image: &Image, key: &str) -> Vec<String> {
    image
        .properties
        .get(key)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
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
    /// an upload does; `queued` → `uploading`. A failure removes the staged data and
    /// returns the image to `queued`.
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
        let image = self.get_modifiable(caller, id, "modify_image").await?;
        if image.status != Status::Queued {
            return Err(conflict(format!(
                "Image status transition from {} to uploading is not allowed",
                image.status.as_str()
            )));
        }
        if let Some(size) = declared.filter(|s| *s > self.size_cap) {
            return Err(super::too_large(size, self.size_cap).into());
        }
        if self.stores.staging().find(id).is_some() {
            return Err(conflict(format!("Image {id} already has staged data")));
        }
        let allowance = self.allowance(&image, declared).await?;
        if !self
            .db
            .transition(id, "queued", "uploading", time::now())
            .await?
        {
            return Err(conflict(format!("Image {id} is already being uploaded")));
        }
        let staging = self.stores.staging();
        let staged = match self.receive(staging, id, declared, allowance, body).await {
            Ok(staged) => staged,
            Err(e) => {
                self.unstage(id).await;
                return Err(e);
            }
        };
        let change = ImageChange {
            expect_status: Some(&["uploading"]),
            data: Some(ImageData {
                size: i64::try_from(staged.size).ok(),
                ..ImageData::default()
            }),
            ..ImageChange::default()
        };
        if !self
            .db
            .change_image(id, &change, TaskWrite::None, time::now())
            .await?
        {
            self.remove_staged(id);
            return Err(
                DomainError::Gone(format!("Image {id} was deleted during staging.")).into(),
            );
        }
        self.keep_staged_hashes(id, &staged);
        tracing::info!(image_id = id, size = staged.size, "image data staged");
        Ok(())
    }

    /// Staging failed: the image goes back to `queued` without data.
    async fn unstage(&self, id: &str) {
        self.remove_staged(id);
        let change = ImageChange {
            expect_status: Some(&["uploading"]),
            status: Some(Status::Queued),
            data: Some(ImageData::default()),
            ..ImageChange::default()
        };
        if let Err(e) = self
            .db
            .change_image(id, &change, TaskWrite::None, time::now())
            .await
        {
            tracing::error!(image_id = id, error = %e, "could not return the image to queued");
        }
    }

    pub(super) fn remove_staged(&self, id: &str) {
        if let Err(e) = self.stores.staging().delete_with_hashes(id) {
            tracing::warn!(image_id = id, error = %e, "staged data not removed");
        }
    }

    /// Staged data keeps its hashes, so the import can link it into a store on the same
    /// filesystem instead of copying it; without them it is copied and hashed again.
    fn keep_staged_hashes(&self, id: &str, staged: &Stored) {
        if let Err(e) = self.stores.staging().keep_hashes(id, staged) {
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
        let image = self.get(caller, id).await?;
        let copies = request.method == Method::CopyImage;
        if copies && !caller.is_admin {
            return Err(forbidden(
                "You are not authorized to complete copy_image action.",
            ));
        }
        if !copies && !image.modifiable_by(caller) {
            return Err(forbidden(
                "You are not authorized to complete modify_image action.",
            ));
        }
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
        let stores = self.targets(&image, &request)?;
        let now = time::now();
        let task = Task {
            id: uuid::Uuid::new_v4().to_string(),
            kind: task::IMPORT.into(),
            status: TaskStatus::Pending,
            owner: caller.project.clone(),
            image_id: Some(id.to_string()),
            request_id: Some(request_id.to_string()),
            user_id: caller.user.clone(),
            input: json!({"image_id": id, "import_req": body, "backend": stores}),
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
            ..ImageChange::default()
        };
        if !self
            .db
            .change_image(id, &change, TaskWrite::Insert(&task), now)
            .await?
        {
            return Err(busy());
        }
        tracing::info!(image_id = id, task_id = %task.id, method = request.method.name(), ?stores, "import accepted");
        self.resume(&task.id).await;
        Ok(task.id)
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

    /// Runs task `id` on this generation's executor, unless it runs already.
    pub async fn resume(&self, id: &str) {
        let catalog = self.clone();
        let task_id = id.to_string();
        self.executor.spawn(id.to_string(), async move {
            if let Err(e) = catalog.carry_out(&task_id).await {
                // Only the database failing gets here; the task stays unfinished and is
                // taken up again by the next generation or process.
                tracing::error!(task_id, error = %e, "task could not record its progress");
            }
        });
    }

    /// Makes this generation the one tasks are handed on to, and takes up every task no
    /// generation of this process runs (after a start, those a stop or a crash left).
    pub async fn activate(&self) {
        self.executor.board().set_live(self.clone());
        match self.db.purge_expired_tasks(time::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired tasks purged"),
            Err(e) => tracing::warn!(error = %e, "expired tasks could not be purged"),
        }
        match self.db.unfinished_tasks().await {
            Ok(tasks) => {
                for task in tasks {
                    if !self.executor.board().is_running(&task.id) {
                        tracing::info!(task_id = %task.id, status = task.status.as_str(), "resuming task");
                        self.resume(&task.id).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "unfinished tasks could not be read"),
        }
    }

    /// Carries out import task `task_id` from wherever its persisted state says it is.
    async fn carry_out(&self, task_id: &str) -> std::result::Result<(), crate::db::DbError> {
        let Some(task) = self.db.get_task(task_id).await? else {
            return Ok(());
        };
        if task.status.is_final() {
            return Ok(());
        }
        let plan = match Plan::of(&task) {
            Ok(plan) => plan,
            Err(message) => {
                return self
                    .finish_task(task_id, TaskStatus::Failure, message)
                    .await;
            }
        };
        if task.status == TaskStatus::Pending {
            let update = TaskUpdate {
                id: task_id.into(),
                status: TaskStatus::Processing,
                message: None,
                result: None,
            };
            self.db.update_task(&update, time::now()).await?;
        }
        let id = plan.image_id.as_str();
        let image = match self.db.get_image(id).await? {
            Some(image) if image.properties.get(LOCK).map(String::as_str) == Some(task_id) => image,
            _ => {
                if !plan.copies() {
                    self.remove_staged(id);
                }
                let message = format!("Image {id} was deleted or changed during the import");
                return self
                    .finish_task(task_id, TaskStatus::Failure, message)
                    .await;
            }
        };
        let source = match self.source(&image, &plan).await {
            Ok(source) => source,
            Err(message) => return self.fail(&plan, task_id, &image, message).await,
        };
        let mut remaining = store_list(&image, IMPORTING);
        let mut failed = store_list(&image, FAILED);
        let mut expected = image.checksum.clone();
        while let Some(store_id) = remaining.first().cloned() {
            remaining.remove(0);
            match self.copy(id, &source, &store_id, expected.as_deref()).await {
                Ok(stored) => {
                    let change = ImageChange {
                        expect_status: Some(&["importing", "active"]),
                        data: (!plan.copies()).then(|| data_of(&stored)),
                        set_properties: vec![(IMPORTING, remaining.join(","))],
                        add_location: Some(Location {
                            store: store_id.clone(),
                            url: stored.location.clone(),
                        }),
                        ..ImageChange::default()
                    };
                    if !self
                        .db
                        .change_image(id, &change, TaskWrite::None, time::now())
                        .await?
                    {
                        // Deleted, or (copy-image) deactivated meanwhile: what this
                        // import wrote goes, and the lock with it if the image is there.
                        let _ = self
                            .stores
                            .get(&store_id)
                            .map(|s| s.delete(&stored.location));
                        let message =
                            format!("Image {id} was deleted or deactivated during the import");
                        return self.fail(&plan, task_id, &image, message).await;
                    }
                    tracing::info!(image_id = id, task_id, store = %store_id, size = stored.size, "image data imported into store");
                    expected = Some(stored.md5);
                }
                Err(message) => {
                    tracing::warn!(image_id = id, task_id, store = %store_id, %message, "import into store failed");
                    failed.push(store_id);
                    if plan.request.all_stores_must_succeed {
                        let mut image = image.clone();
                        image.properties.insert(FAILED.into(), failed.join(","));
                        return self.fail(&plan, task_id, &image, message).await;
                    }
                    let change = ImageChange {
                        set_properties: vec![
                            (IMPORTING, remaining.join(",")),
                            (FAILED, failed.join(",")),
                        ],
                        ..ImageChange::default()
                    };
                    self.db
                        .change_image(id, &change, TaskWrite::None, time::now())
                        .await?;
                }
            }
        }
        // Every target has been tried: the ones not failed hold a copy. (The image's own
        // locations would not tell: copy-image starts with one.)
        let imported = plan.stores.iter().any(|s| !failed.contains(s));
        if !imported {
            let mut image = image.clone();
            image.properties.insert(FAILED.into(), failed.join(","));
            let message = format!("Import failed for every store: {}", failed.join(", "));
            return self.fail(&plan, task_id, &image, message).await;
        }
        let change = ImageChange {
            status: (!plan.copies()).then_some(Status::Active),
            set_properties: vec![(IMPORTING, String::new()), (FAILED, failed.join(","))],
            remove_properties: vec![LOCK],
            ..ImageChange::default()
        };
        let update = TaskUpdate {
            id: task_id.into(),
            status: TaskStatus::Success,
            message: Some(String::new()),
            result: Some(json!({"image_id": id})),
        };
        if !self
            .db
            .change_image(id, &change, TaskWrite::Update(&update), time::now())
            .await?
        {
            let message = format!("Image {id} was deleted during the import");
            return self
                .finish_task(task_id, TaskStatus::Failure, message)
                .await;
        }
        if !plan.copies() {
            self.remove_staged(id);
        }
        tracing::info!(image_id = id, task_id, "import finished");
        Ok(())
    }

    /// Where the data comes from: the staged file (fetched first for web-download, unless
    /// an earlier attempt already did), or for copy-image the image's first readable copy.
    async fn source(&self, image: &Image, plan: &Plan) -> std::result::Result<Location, String> {
        let staging = self.stores.staging();
        let staged = |url| Location {
            store: STAGING_ID.into(),
            url,
        };
        match &plan.request.method {
            Method::GlanceDirect => staging
                .find(&image.id)
                .map(staged)
                .ok_or_else(|| format!("The staged data of image {} is missing", image.id)),
            Method::WebDownload { uri } => {
                if let Some(url) = staging.find(&image.id) {
                    return Ok(staged(url));
                }
                let (length, body) = self
                    .import
                    .web
                    .open(uri, self.size_cap)
                    .await
                    .map_err(|e| e.to_string())?;
                let allowance = self
                    .allowance(image, length)
                    .await
                    .map_err(|e| e.to_string())?;
                let fetched = self
                    .receive(staging, &image.id, length, allowance, body)
                    .await
                    .map_err(|e| format!("Downloading {uri} failed: {e}"))?;
                self.keep_staged_hashes(&image.id, &fetched);
                tracing::info!(image_id = %image.id, size = fetched.size, "web-download fetched");
                Ok(staged(fetched.location))
            }
            Method::CopyImage => image
                .locations
                .iter()
                .find(|l| self.stores.get(&l.store).is_ok())
                .cloned()
                .ok_or_else(|| format!("Image {} has no data in a store of this node", image.id)),
        }
    }

    fn store_of(&self, id: &str) -> std::result::Result<&Store, String> {
        if id == STAGING_ID {
            return Ok(self.stores.staging());
        }
        self.stores.get(id).map_err(|e| e.to_string())
    }

    /// Copies `source` into store `store_id`, checking the copy against `expected` (the
    /// md5 of an earlier copy) when there is one.
    async fn copy(
        &self,
        image_id: &str,
        source: &Location,
        store_id: &str,
        expected: Option<&str>,
    ) -> std::result::Result<Stored, String> {
        let target = self.store_of(store_id)?;
        if target.read_only() || store_id == STAGING_ID {
            return Err(format!("Store {store_id} does not take new data"));
        }
        if let Some(stored) = self.link_staged(image_id, source, target)? {
            if let Some(expected) = expected.filter(|e| *e != stored.md5) {
                let _ = target.delete(&stored.location);
                return Err(format!(
                    "The staged data has checksum {}, expected {expected}",
                    stored.md5
                ));
            }
            return Ok(stored);
        }
        let file = self
            .store_of(&source.store)?
            .open_read(&source.url)
            .map_err(|e| e.to_string())?;
        let length = file.metadata().map(|m| m.len()).ok();
        let body = ReaderStream::with_capacity(tokio::fs::File::from_std(file), COPY_CHUNK);
        let stored = self
            .receive(target, image_id, length, None, body)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(expected) = expected.filter(|e| *e != stored.md5) {
            let _ = target.delete(&stored.location);
            return Err(format!(
                "The copy in store {store_id} has checksum {}, expected {expected}",
                stored.md5
            ));
        }
        Ok(stored)
    }

    /// Staged data with its kept hashes goes into `target` as a hard link when they share a
    /// filesystem: the import then costs no copy and no second hashing.
    fn link_staged(
        &self,
        image_id: &str,
        source: &Location,
        target: &Store,
    ) -> std::result::Result<Option<Stored>, String> {
        if source.store != STAGING_ID {
            return Ok(None);
        }
        let staging = self.stores.staging();
        let Some(kept) = staging.kept_hashes(image_id) else {
            return Ok(None);
        };
        let path = staging.file_of(&source.url).map_err(|e| e.to_string())?;
        let linked = target
            .link_from(image_id, &path)
            .map_err(|e| e.to_string())?;
        Ok(linked.map(|location| Stored { location, ..kept }))
    }

    /// Ends an import that failed: the image returns to `queued` (copy-image leaves it as
    /// it is), the lock is released and the task fails, in one transaction; then what the
    /// import wrote is removed (every copy for a new image, the new copies for copy-image)
    /// and the staged data dropped.
    async fn fail(
        &self,
        plan: &Plan,
        task_id: &str,
        image: &Image,
        message: String,
    ) -> std::result::Result<(), crate::db::DbError> {
        let id = image.id.as_str();
        tracing::warn!(image_id = id, task_id, %message, "import failed");
        let current = self.db.get_image(id).await?;
        let written: Vec<Location> = current
            .map(|i| i.locations)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !plan.copies() || plan.stores.contains(&l.store))
            .collect();
        let change = ImageChange {
            status: (!plan.copies()).then_some(Status::Queued),
            data: (!plan.copies()).then(ImageData::default),
            set_properties: vec![
                (IMPORTING, String::new()),
                (
                    FAILED,
                    image.properties.get(FAILED).cloned().unwrap_or_default(),
                ),
            ],
            remove_properties: vec![LOCK],
            remove_locations: written.iter().map(|l| l.store.clone()).collect(),
            ..ImageChange::default()
        };
        let update = TaskUpdate {
            id: task_id.into(),
            status: TaskStatus::Failure,
            message: Some(message.clone()),
            result: None,
        };
        if !self
            .db
            .change_image(id, &change, TaskWrite::Update(&update), time::now())
            .await?
        {
            self.finish_task(task_id, TaskStatus::Failure, message)
                .await?;
        }
        // Only once no location points at them: a crash before this line leaves unused
        // files, never an image whose data is gone.
        for location in &written {
            if let Err(e) = self.delete_data(location) {
                tracing::warn!(image_id = id, error = %e, "data of a failed import not removed");
            }
        }
        if !plan.copies() {
            self.remove_staged(id);
        }
        Ok(())
    }

    async fn finish_task(
        &self,
        task_id: &str,
        status: TaskStatus,
        message: String,
    ) -> std::result::Result<(), crate::db::DbError> {
        let update = TaskUpdate {
            id: task_id.into(),
            status,
            message: Some(message),
            result: None,
        };
        self.db.update_task(&update, time::now()).await
    }

    /// After a crash or a restart, before any request: staging the dead process cut
    /// returns its image to `queued`; staged data no image waits for is removed.
    pub async fn recover(&self) -> std::result::Result<(), crate::db::DbError> {
        let staging = self.stores.staging();
        for id in self.db.image_ids_in("uploading").await? {
            if staging.find(&id).is_none() {
                self.unstage(&id).await;
                tracing::warn!(image_id = %id, "staging cut by the previous process; image queued again");
            }
        }
        for id in staging.entries() {
            let waiting = self
                .db
                .get_image(&id)
                .await?
                .is_some_and(|i| matches!(i.status, Status::Uploading | Status::Importing));
            if !waiting {
                self.remove_staged(&id);
            }
        }
        Ok(())
    }
}

impl Catalog {
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
        if !caller.is_admin {
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
        if !caller.is_admin {
            return Err(forbidden(
                "You are not authorized to complete delete_image_location action.",
            ));
        }
        let image = self.get(caller, id).await?;
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
        if let Err(e) = self.delete_data(&location) {
            tracing::warn!(image_id = id, store, error = %e, "removed copy's data not deleted");
        }
        tracing::info!(image_id = id, store, "image data removed from store");
        Ok(())
    }

    /// `GET /v2/tasks/{id}`: the tasks API is for admins.
    pub async fn task(&self, caller: &Caller, id: &str) -> Result<Task> {
        if !caller.is_admin {
            return Err(forbidden(
                "You are not authorized to complete get_task action.",
            ));
        }
        self.db.get_task(id).await?.ok_or_else(|| {
            DomainError::NotFound(format!("Task with the given id {id} not found")).into()
        })
    }
}
