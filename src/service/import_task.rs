//! The task that carries out an import, step by step from its persisted state: it reads its
//! plan from the task's input and its progress from where Glance shows it — the stores still
//! to do in `os_glance_importing_to_stores`, the failed ones in `os_glance_failed_import`,
//! each finished copy as a location — so a task cut by a drain deadline, a stop or a crash is
//! taken up again from there. Also what a process's first generation recovers.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::data::{ClaimKind, Judge, blocking};
use super::import::{FAILED, IMPORTING, LOCK};
use super::{Catalog, ServiceError, data_of};
use crate::db::{DbError, ImageChange, ImageData, TaskUpdate, TaskWrite};
use crate::domain::image::{Image, Location, Status};
use crate::domain::import::{self, ImportRequest, Method};
use crate::domain::task::{Task, TaskStatus};
use crate::domain::time;
use crate::inspect::Inspector;
use crate::store::{ByteStream, STAGING_ID, Store, Stored};
use crate::transform::{self, Data};

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

/// Where an import's data comes from.
enum Source {
    /// A store's copy (the staging area's included).
    Stored(Location),
    /// A file the import plugins made in the import's work directory.
    Made(PathBuf),
}

/// A made file's size and bytes.
async fn open_made(path: &Path) -> std::result::Result<(u64, ByteStream), String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    Ok((
        length,
        tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed(),
    ))
}

/// The names of the directories in `dir` (none when it is not there).
fn directory_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
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
        if let Some(cache) = self.cache.clone() {
            let (max_size, stall_time) = self.cache_limits;
            if let Err(e) = blocking(move || cache.configure(max_size, stall_time)).await {
                tracing::warn!(error = %e, "image cache limits not applied");
            }
        }
        match self.db.purge_expired_tasks(time::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired tasks purged"),
            Err(e) => tracing::warn!(error = %e, "expired tasks could not be purged"),
        }
        if let Err(e) = self.take_up_tasks().await {
            tracing::error!(error = %e, "unfinished tasks could not be read");
        }
    }

    /// Carries out import task `task_id` from wherever its persisted state says it is,
    /// once this node holds its lease (another node may run it).
    async fn carry_out(&self, task_id: &str) -> std::result::Result<(), DbError> {
        if !self
            .db
            .lease_task(task_id, self.holder(), time::now())
            .await?
        {
            return Ok(());
        }
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
                    self.remove_staged(id).await;
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
        let (source, image) = match self.transformed(&image, &plan, source).await {
            Ok(transformed) => transformed,
            Err(message) => return self.fail(&plan, task_id, &image, message).await,
        };
        // What the steps made changes the image's formats with its first copy.
        let formats = match &source {
            Source::Made(_) => image
                .disk_format
                .clone()
                .zip(image.container_format.clone()),
            Source::Stored(_) => None,
        };
        let mut remaining = store_list(&image, IMPORTING);
        let mut failed = store_list(&image, FAILED);
        let mut expected = image.checksum.clone();
        while let Some(store_id) = remaining.first().cloned() {
            remaining.remove(0);
            match self
                .copy(&image, &source, &store_id, expected.as_deref())
                .await
            {
                Ok((stored, virtual_size)) => {
                    let change = ImageChange {
                        expect_status: Some(&["importing", "active"]),
                        data: (!plan.copies()).then(|| data_of(&stored, virtual_size)),
                        formats: formats.clone(),
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
                        let written = Location {
                            store: store_id.clone(),
                            url: stored.location.clone(),
                        };
                        let _ = self.delete_data(&written).await;
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
            self.remove_staged(id).await;
        }
        tracing::info!(image_id = id, task_id, "import finished");
        Ok(())
    }

    /// Where the data comes from: the staged file (fetched first for web-download, unless
    /// an earlier attempt already did), or for copy-image the image's first readable copy.
    async fn source(&self, image: &Image, plan: &Plan) -> std::result::Result<Location, String> {
        let staging = self.stores.staging().clone();
        let staged = |url| Location {
            store: STAGING_ID.into(),
            url,
        };
        let found = self
            .staged_location(&image.id)
            .await
            .map_err(|e| e.to_string())?;
        match &plan.request.method {
            Method::GlanceDirect => found
                .map(staged)
                .ok_or_else(|| format!("The staged data of image {} is missing", image.id)),
            Method::WebDownload { uri } => {
                if let Some(url) = found {
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
                let slot = self.task_slot().await;
                let (fetched, _) = self
                    .receive(
                        &staging,
                        &image.id,
                        length,
                        allowance,
                        body,
                        slot,
                        self.judge_for(image),
                    )
                    .await
                    .map_err(|e| format!("Downloading {uri} failed: {e}"))?;
                self.keep_staged_hashes(&image.id, &fetched).await;
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

    /// The import plugins that change the bytes, run once over the staged data before the
    /// first store takes a copy: the data they made and the image with the formats it is
    /// in. An import cut after its first copy takes that copy for the next stores (its
    /// steps ran already); one cut before runs them again from the staged data.
    async fn transformed(
        &self,
        image: &Image,
        plan: &Plan,
        source: Location,
    ) -> std::result::Result<(Source, Image), String> {
        let steps = &self.import.steps;
        if plan.copies() || steps.is_empty() {
            return Ok((Source::Stored(source), image.clone()));
        }
        if let Some(copy) = image
            .locations
            .iter()
            .find(|l| self.stores.get(&l.store).is_ok())
        {
            return Ok((Source::Stored(copy.clone()), image.clone()));
        }
        let staging = self.stores.staging().clone();
        let image_id = image.id.clone();
        let known = blocking(move || staging.kept_hashes(&image_id))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|kept| kept.inspection);
        let staged = Data {
            path: self
                .stores
                .staging()
                .file_of(&source.url)
                .map_err(|e| e.to_string())?,
            disk_format: image.disk_format.clone(),
            container_format: image.container_format.clone(),
            inspection: known,
        };
        let work = self.import.work_dir.join(&image.id);
        let made = transform::run(steps, staged.clone(), &work, self.size_cap)
            .await
            .map_err(|e| e.to_string())?;
        if made == staged {
            return Ok((Source::Stored(source), image.clone()));
        }
        let image = Image {
            disk_format: made.disk_format,
            container_format: made.container_format,
            ..image.clone()
        };
        Ok((Source::Made(made.path), image))
    }

    fn store_of(&self, id: &str) -> std::result::Result<&Store, String> {
        if id == STAGING_ID {
            return Ok(self.stores.staging());
        }
        self.stores.get(id).map_err(|e| e.to_string())
    }

    /// Copies `source` into store `store_id`, checking the copy against `expected` (the
    /// md5 of an earlier copy) when there is one.
    /// The data is judged as it is copied (or, linked, by what its stage found), so unsafe
    /// or mismatched data never lands in a store; returns the copy and its virtual size.
    async fn copy(
        &self,
        image: &Image,
        source: &Source,
        store_id: &str,
        expected: Option<&str>,
    ) -> std::result::Result<(Stored, Option<u64>), String> {
        let image_id = image.id.as_str();
        let target = self.store_of(store_id)?.clone();
        if target.read_only() || store_id == STAGING_ID {
            return Err(format!("Store {store_id} does not take new data"));
        }
        let remove = |stored: &Stored| {
            let (target, location) = (target.clone(), stored.location.clone());
            async move { target.delete(&location).await }
        };
        let (length, body) = match source {
            Source::Made(path) => {
                if let Some(adopted) = self
                    .link_made(image_id, path, &target, self.judge_for(image))
                    .await?
                {
                    if let Some(expected) = expected.filter(|e| *e != adopted.0.md5) {
                        let _ = remove(&adopted.0).await;
                        return Err(format!(
                            "The converted data has checksum {}, expected {expected}",
                            adopted.0.md5
                        ));
                    }
                    return Ok(adopted);
                }
                open_made(path).await?
            }
            Source::Stored(source) => {
                if let Some((stored, virtual_size)) = self
                    .link_staged(image_id, source, &target, self.judge_for(image))
                    .await?
                {
                    if let Some(expected) = expected.filter(|e| *e != stored.md5) {
                        let _ = remove(&stored).await;
                        return Err(format!(
                            "The staged data has checksum {}, expected {expected}",
                            stored.md5
                        ));
                    }
                    return Ok((stored, virtual_size));
                }
                let source_store = self.store_of(&source.store)?.clone();
                let length = source_store
                    .size_of(&source.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = source_store
                    .read(&source.url, None)
                    .await
                    .map_err(|e| e.to_string())?;
                (length, body)
            }
        };
        let slot = self.task_slot().await;
        let (stored, virtual_size) = self
            .receive(
                &target,
                image_id,
                Some(length),
                None,
                body,
                slot,
                self.judge_for(image),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(expected) = expected.filter(|e| *e != stored.md5) {
            let _ = remove(&stored).await;
            return Err(format!(
                "The copy in store {store_id} has checksum {}, expected {expected}",
                stored.md5
            ));
        }
        Ok((stored, virtual_size))
    }

    /// Staged data with its kept hashes and inspection goes into `target` as a hard link
    /// when they share a filesystem, once `judge` has taken what its stage found: the
    /// import then costs no copy and no second pass over the bytes.
    async fn link_staged(
        &self,
        image_id: &str,
        source: &Location,
        target: &Store,
        judge: Judge,
    ) -> std::result::Result<Option<(Stored, Option<u64>)>, String> {
        if source.store != STAGING_ID {
            return Ok(None);
        }
        let staging = self.stores.staging().clone();
        let target = target.clone();
        let (image_id, url) = (image_id.to_string(), source.url.clone());
        blocking(move || {
            let Some(kept) = staging.kept_hashes(&image_id) else {
                return Ok(None);
            };
            let Some(inspection) = &kept.inspection else {
                return Ok(None);
            };
            let virtual_size = judge(inspection, kept.size).map_err(|e| e.to_string())?;
            let path = staging.file_of(&url).map_err(|e| e.to_string())?;
            let linked = target
                .link_from(&image_id, &path)
                .map_err(|e| e.to_string())?;
            Ok(linked.map(|location| (Stored { location, ..kept }, virtual_size)))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A file the import plugins made goes into `target` as a hard link when they share a
    /// filesystem: hashed and inspected in one read (and synced meanwhile), then judged, and
    /// only then linked. No second copy of the bytes is written.
    async fn link_made(
        &self,
        image_id: &str,
        path: &Path,
        target: &Store,
        judge: Judge,
    ) -> std::result::Result<Option<(Stored, Option<u64>)>, String> {
        let (target, image_id, path) = (target.clone(), image_id.to_string(), path.to_path_buf());
        let slot = self.task_slot().await;
        blocking(move || {
            let _slot = slot;
            let mut inspector = Inspector::new();
            let digests = target
                .digest_for_link(&path, &mut |chunk| inspector.feed(chunk))
                .map_err(|e| e.to_string())?;
            let Some(digests) = digests else {
                return Ok(None);
            };
            let inspection = inspector.finish();
            let virtual_size = judge(&inspection, digests.size).map_err(|e| e.to_string())?;
            let Some(location) = target
                .link_from(&image_id, &path)
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let stored = Stored {
                inspection: Some(inspection),
                ..Stored::new(location, digests)
            };
            Ok(Some((stored, virtual_size)))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A transfer slot for a background task: it waits as long as it takes.
    async fn task_slot(&self) -> super::data::Slot {
        let transfers = self.executor.board().transfers.clone();
        loop {
            if let Some(slot) = transfers.acquire(None).await {
                return slot;
            }
        }
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
    ) -> std::result::Result<(), DbError> {
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
            if let Err(e) = self.delete_data(location).await {
                tracing::warn!(image_id = id, error = %e, "data of a failed import not removed");
            }
        }
        if !plan.copies() {
            self.remove_staged(id).await;
        }
        Ok(())
    }

    async fn finish_task(
        &self,
        task_id: &str,
        status: TaskStatus,
        message: String,
    ) -> std::result::Result<(), DbError> {
        let update = TaskUpdate {
            id: task_id.into(),
            status,
            message: Some(message),
            result: None,
        };
        self.db.update_task(&update, time::now()).await
    }

    /// After a crash or a restart, before any request, and then at every upkeep round
    /// (for stages whose release the database refused), leaving alone what a transfer of
    /// this process holds. A completed stage (its file in the staging area, as long as the
    /// image says) waits for its import, as it would have without the restart; a stage
    /// cut part-way returns its image to `queued`; staged data (and import work
    /// directories) no image waits for are removed.
    pub async fn recover(&self) -> std::result::Result<(), ServiceError> {
        let staging = self.stores.staging().clone();
        let board = self.executor.board();
        let node = board.node().to_string();
        for id in self.db.image_ids_held("uploading", &node).await? {
            // Asked after the image was seen `uploading`, so a stage in flight (held before
            // its image moved) is seen held; one not held has recorded its size, or was cut.
            if board.is_held(&id) {
                continue;
            }
            let Some(image) = self.db.get_image(&id).await? else {
                continue;
            };
            let file = self
                .staged_location(&image.id)
                .await?
                .and_then(|location| staging.file_of(&location).ok());
            let staged_size = match file {
                Some(path) => {
                    blocking(move || std::fs::metadata(path).map(|m| m.len()).ok()).await?
                }
                None => None,
            };
            let complete = matches!(
                (staged_size, image.size),
                (Some(on_disk), Some(recorded)) if i64::try_from(on_disk).ok() == Some(recorded)
            );
            if !complete {
                self.release(&image.id, ClaimKind::Stage).await;
                tracing::warn!(image_id = %image.id, "staging cut by the previous process; image queued again");
            }
        }
        let work_dir = self.import.work_dir.clone();
        let mut entries = blocking(move || staging.entries()).await?;
        // A work directory whose image no import waits for goes with its staged data.
        entries.extend(blocking(move || directory_names(&work_dir)).await?);
        entries.sort();
        entries.dedup();
        for id in entries.into_iter().filter(|id| !board.is_held(id)) {
            let waiting = self
                .db
                .get_image(&id)
                .await?
                .is_some_and(|i| matches!(i.status, Status::Uploading | Status::Importing));
            if !waiting {
                self.remove_staged(&id).await;
            }
        }
        Ok(())
    }

    /// Ends task `task_id` as failed without carrying it further (it panicked): its image
    /// is released as for any failed import.
    pub(super) async fn abandon(&self, task_id: &str, message: String) {
        let outcome: std::result::Result<(), DbError> = async {
            let Some(task) = self.db.get_task(task_id).await? else {
                return Ok(());
            };
            let plan = match Plan::of(&task) {
                Ok(plan) => plan,
                Err(reason) => {
                    return self.finish_task(task_id, TaskStatus::Failure, reason).await;
                }
            };
            match self.db.get_image(&plan.image_id).await? {
                Some(image) if image.properties.get(LOCK).map(String::as_str) == Some(task_id) => {
                    self.fail(&plan, task_id, &image, message).await
                }
                _ => {
                    self.finish_task(task_id, TaskStatus::Failure, message)
                        .await
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            tracing::error!(task_id, error = %e, "failed task could not be recorded");
        }
    }
}
