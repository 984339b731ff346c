//! The task that carries out an import, step by step from its persisted state: it reads its
//! plan from the task's input and its progress from where Glance shows it — the stores still
//! to do in `os_glance_importing_to_stores`, the failed ones in `os_glance_failed_import`,
//! each finished copy as a location — so a task cut by a drain deadline, a stop or a crash is
//! taken up again from there. Also what a process's first generation recovers.

use std::path::Path;

use serde_json::{Value, json};

use super::data::{ClaimKind, blocking};
use super::import::{FAILED, IMPORTING, LOCK};
use super::import_data::Source;
use super::{Catalog, ServiceError, data_of};
use crate::db::{DbError, ImageChange, ImageData, TaskUpdate, TaskWrite};
use crate::domain::image::{Image, Location, Status};
use crate::domain::import::{self, ImportRequest, Method};
use crate::domain::task::{Task, TaskStatus};
use crate::domain::time;

/// A task's plan, as its input recorded it.
pub(super) struct Plan {
    image_id: String,
    pub(super) request: ImportRequest,
    stores: Vec<String>,
}

impl Plan {
    /// What `task` is to do. A legacy import (`POST /v2/tasks`) keeps its input as the client
    /// sent it: its image is the task's, its source `import_from`, its store the default one.
    fn of(task: &Task, default_store: &str) -> std::result::Result<Plan, String> {
        if task.kind == crate::domain::task::LEGACY_IMPORT {
            let image_id = task.image_id.clone().ok_or("task has no image")?;
            let uri = task
                .input
                .get("import_from")
                .and_then(Value::as_str)
                .ok_or("task input has no import_from")?;
            let request = serde_json::json!({"method": {"name": "web-download", "uri": uri}});
            let request = import::parse(&request, None, |_| true).map_err(|e| e.to_string())?;
            return Ok(Plan {
                image_id,
                request,
                stores: vec![default_store.to_string()],
            });
        }
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

    pub(super) fn copies(&self) -> bool {
        self.request.method == Method::CopyImage
    }
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
    /// Runs task `id` on this generation's executor, unless it runs already (`false`).
    pub async fn resume(&self, id: &str) -> bool {
        let catalog = self.clone();
        let task_id = id.to_string();
        self.executor.spawn(id.to_string(), async move {
            if let Err(e) = catalog.carry_out(&task_id).await {
                // Only the database failing gets here; the task stays unfinished and is
                // taken up again by the next generation or process.
                tracing::error!(task_id, error = %e, "task could not record its progress");
            }
        })
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
        let method = Plan::of(&task, self.stores.default_id())
            .map_or("unknown", |plan| plan.request.method.name());
        self.run_task(task_id, task).await?;
        if let Some(done) = self.db.get_task(task_id).await? {
            if done.status.is_final() {
                crate::metrics::global().record_task(method, done.status.as_str());
            }
        }
        Ok(())
    }

    /// The work of `task`, which this node holds and which is not finished. Returns at its
    /// end or at a checkpoint (a stop).
    async fn run_task(&self, task_id: &str, task: Task) -> std::result::Result<(), DbError> {
        let plan = match Plan::of(&task, self.stores.default_id()) {
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
            let plan = match Plan::of(&task, self.stores.default_id()) {
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
