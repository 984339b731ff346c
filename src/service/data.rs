//! The data path: the one way image bytes come in — claim the image, receive the bytes
//! into a store through a bounded transfer slot, then commit or undo — and the way they go
//! out (download). A `Claim` dropped without `commit`, by whatever ended its request (client
//! gone, body error, drain cut, retired pool, panic), is released at once on the task
//! runtime. File I/O and hashing never run on an async worker. Import's task logic is not
//! here (`import_task`); only its transfers are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::Notify;

use super::handover::{PausedCaller, PausedUpload, TransferPause};
use super::{Catalog, Result, ServiceError, require_formats};
use crate::cache::{Fallback, ImageCache, Wanted};
use crate::db::{ImageChange, ImageData, TaskWrite};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::time;
use crate::inspect::{Inspection, Inspector};
use crate::store::{ByteStream, HashState, Store, StoreError, Stored, Stores};

/// What a download finds.
pub enum Download {
    /// The image has no data yet.
    NoData,
    Data {
        copies: Box<Copies>,
        size: u64,
        checksum: Option<String>,
    },
}

/// An image's copies in the stores of this generation, to be read from the first that
/// answers; through the node's cache when it serves the image.
#[derive(Clone)]
pub struct Copies {
    stores: Stores,
    locations: Vec<Location>,
    /// The cache, and what the image's data must be for it to serve them.
    cache: Option<(Arc<ImageCache>, Wanted)>,
}

impl Copies {
    /// The data, or its inclusive byte `range`: a cache hit when there is one; a whole read
    /// on a miss fills the cache as it streams; otherwise from the stores.
    pub async fn open(&self, range: Option<(u64, u64)>) -> Result<ByteStream> {
        if let Some((cache, wanted)) = &self.cache {
            let stores = Copies {
                cache: None,
                ..self.clone()
            };
            let fallback: Fallback = Box::new(move |first, last| {
                async move {
                    stores
                        .read_stores(Some((first, last)))
                        .await
                        .map_err(std::io::Error::other)
                }
                .boxed()
            });
            if let Some(hit) = cache.hit(wanted, range, fallback) {
                crate::metrics::global().record_cache("hit");
                return Ok(hit);
            }
            crate::metrics::global().record_cache("miss");
            if range.is_none() {
                return cache.read_through(wanted, || self.read_stores(None)).await;
            }
        }
        self.read_stores(range).await
    }

    /// The data (or `range`) from the first copy that can be opened; a store can only be
    /// dropped from the config once it holds nothing.
    async fn read_stores(&self, range: Option<(u64, u64)>) -> Result<ByteStream> {
        let mut last_error = None;
        for location in &self.locations {
            let Ok(store) = self.stores.get(&location.store) else {
                continue;
            };
            match store.read(&location.url, range).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    tracing::warn!(store = %location.store, error = %e, "a copy of the image cannot be read");
                    last_error = Some(e);
                }
            }
        }
        Err(store_error(last_error.unwrap_or_else(|| {
            StoreError::UnknownLocation("no copy in a configured store".into())
        })))
    }
}

pub(super) fn over_quota(quota: u64) -> DomainError {
    DomainError::OverLimit(format!(
        "Image exceeds the storage quota: the project may store {quota} bytes"
    ))
}

pub(super) fn too_large(size: u64, cap: u64) -> DomainError {
    DomainError::OverLimit(format!(
        "The incoming image is too large: {size} bytes exceed the size cap of {cap} bytes"
    ))
}

/// A full disk, or an image larger than an S3 store takes, is the client's 413, not the
/// server's 500.
pub(super) fn store_error(error: StoreError) -> ServiceError {
    match &error {
        StoreError::Full(_) | StoreError::TooLarge { .. } => {
            DomainError::OverLimit(format!("Image storage media is full: {error}")).into()
        }
        StoreError::Io { source, .. } if source.raw_os_error() == Some(28) => {
            DomainError::OverLimit(format!("Image storage media is full: {error}")).into()
        }
        _ => error.into(),
    }
}

/// Size and hashes as a finished write computed them, and the virtual size judged from
/// the data.
pub(super) fn data_of(stored: &Stored, virtual_size: Option<u64>) -> ImageData {
    ImageData {
        size: i64::try_from(stored.size).ok(),
        checksum: Some(stored.md5.clone()),
        os_hash_algo: Some(stored.hash_algo.clone()),
        os_hash_value: Some(stored.hash.clone()),
        virtual_size: virtual_size.and_then(|v| i64::try_from(v).ok()),
    }
}

/// What `receive` makes of the inspection of the data before it keeps them: the virtual
/// size to record, or the refusal that drops them.
pub(super) type Judge = Box<dyn FnOnce(&Inspection, u64) -> Result<Option<u64>> + Send>;

/// Takes any data: a stage, which Glance does not judge (its inspection is kept for the
/// import, which does).
pub(super) fn take_any() -> Judge {
    Box::new(|_, _| Ok(None))
}

/// Runs blocking filesystem work on the blocking pool, never on an async worker.
pub(super) async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// The process-wide bound on data transfers in (`server.max_transfers`): each holds a slot
/// while its bytes are written, so uploads, stages and copies share a bounded set of
/// writer threads. The limit changes at reload; slots taken stay valid.
pub struct TransferSlots {
    state: Mutex<(usize, usize)>,
    freed: Notify,
}

/// A transfer's slot, given back on drop.
pub struct Slot {
    slots: Arc<TransferSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().0 -= 1;
        self.slots.freed.notify_one();
    }
}

impl TransferSlots {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(TransferSlots {
            state: Mutex::new((0, limit.max(1))),
            freed: Notify::new(),
        })
    }

    /// `(in use, limit)`.
    fn lock(&self) -> MutexGuard<'_, (usize, usize)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_limit(&self, limit: usize) {
        self.lock().1 = limit.max(1);
        self.freed.notify_waiters();
    }

    pub fn in_use(&self) -> usize {
        self.lock().0
    }

    /// Waits for a slot, at most `wait` when given.
    pub async fn acquire(self: &Arc<Self>, wait: Option<Duration>) -> Option<Slot> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.0 < state.1 {
                    state.0 += 1;
                    return Some(Slot {
                        slots: self.clone(),
                    });
                }
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return None;
                    }
                }
                None => freed.await,
            }
        }
    }
}

/// Image ids whose dropped claim is being released right now: a retry waits for the
/// release instead of finding the image still claimed.
#[derive(Default)]
pub struct Releases {
    pending: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Releases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, id: &str) {
        self.lock().entry(id.to_string()).or_default();
    }

    fn end(&self, id: &str) {
        if let Some(done) = self.lock().remove(id) {
            done.notify_waiters();
        }
    }

    /// Returns once no release of `id` is under way.
    pub async fn settled(&self, id: &str) {
        loop {
            let Some(done) = self.lock().get(id).cloned() else {
                return;
            };
            let notified = done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.lock().contains_key(id) {
                return;
            }
            notified.await;
        }
    }
}

/// What a claim took the image from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimKind {
    /// `queued` → `saving`: an upload into a store.
    Upload,
    /// `queued` → `uploading`: data staged for glance-direct.
    Stage,
}

impl ClaimKind {
    fn status(self) -> &'static str {
        match self {
            ClaimKind::Upload => "saving",
            ClaimKind::Stage => "uploading",
        }
    }
}

/// Where an upload's data begins: new, or a paused upload's temporary file carried on.
pub(super) enum Start<'a> {
    New,
    Resume(&'a PausedUpload),
}

/// How a transfer's data ended well.
pub(super) enum Received {
    Whole(Stored, Option<u64>),
    /// Paused for the next process: its temporary file holds `written` bytes.
    Paused {
        temp: std::path::PathBuf,
        written: u64,
        hashes: HashState,
        inspector: Inspector,
    },
}

/// What an upload goes into, checked before its claim.
struct Transfer<'a> {
    caller: &'a Caller,
    image: &'a Image,
    target: &'a Store,
    declared: Option<u64>,
    allowance: Option<(u64, u64)>,
}

/// An image claimed for incoming data. `commit` once the data is recorded; `release` to
/// undo on an error; a drop without either releases it in the background at once.
pub(super) struct Claim {
    catalog: Catalog,
    image_id: String,
    kind: ClaimKind,
    settled: bool,
}

impl Claim {
    /// The claim ends here without a release: the transfer's outcome is recorded, or the
    /// transfer goes on in the next process, which holds the claim from its start.
    pub(super) fn commit(mut self) {
        self.settled = true;
        self.catalog.executor.board().let_go(&self.image_id);
    }

    /// Undoes the claim now: the image goes back to `queued` without data, staged data
    /// goes, and its size no longer counts against the quota. Should the database not
    /// take that now, the claim is no longer renewed and the upkeep undoes it later.
    pub(super) async fn release(mut self) {
        self.settled = true;
        self.catalog.release(&self.image_id, self.kind).await;
        self.catalog.executor.board().let_go(&self.image_id);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let board = self.catalog.executor.board().clone();
        board.releases.begin(&self.image_id);
        let catalog = self.catalog.clone();
        let id = std::mem::take(&mut self.image_id);
        let kind = self.kind;
        tracing::warn!(image_id = %id, status = kind.status(), "transfer ended before its data was recorded; image released");
        // Waiters are let go however the release ends (even if its task is dropped), so a
        // retry never waits forever.
        let done = ReleaseDone {
            board: board.clone(),
            id: id.clone(),
        };
        board.spawn(async move {
            let _done = done;
            catalog.release(&id, kind).await;
        });
    }
}

/// Marks a release as over when dropped.
struct ReleaseDone {
    board: Arc<super::TaskBoard>,
    id: String,
}

impl Drop for ReleaseDone {
    fn drop(&mut self) {
        self.board.let_go(&self.id);
        self.board.releases.end(&self.id);
    }
}

impl Catalog {
    /// Claims image `id` for incoming data: `queued` → `saving` or `uploading`, as one
    /// compare-and-set, so of two concurrent transfers one wins.
    pub(super) async fn claim(&self, id: &str, kind: ClaimKind) -> Result<Claim> {
        // Held before the image moves, so the upkeep never sees it moved and not held.
        let board = self.executor.board();
        board.hold(id);
        let claimed = self
            .db
            .claim_image(id, "queued", kind.status(), self.holder(), time::now())
            .await;
        if !matches!(claimed, Ok(true)) {
            board.let_go(id);
            claimed?;
            return Err(
                DomainError::Conflict(format!("Image {id} is already being uploaded")).into(),
            );
        }
        Ok(Claim {
            catalog: self.clone(),
            image_id: id.to_string(),
            kind,
            settled: false,
        })
    }

    /// The claim a previous process of this node kept on image `id` for a transfer it
    /// handed over, held by this one from now.
    pub(super) fn reclaim(&self, id: &str, kind: ClaimKind) -> Claim {
        self.executor.board().hold(id);
        Claim {
            catalog: self.clone(),
            image_id: id.to_string(),
            kind,
            settled: false,
        }
    }

    pub(super) async fn release(&self, id: &str, kind: ClaimKind) {
        if kind == ClaimKind::Stage {
            self.remove_staged(id).await;
        }
        let change = ImageChange {
            expect_status: Some(match kind {
                ClaimKind::Upload => &["saving"],
                ClaimKind::Stage => &["uploading"],
            }),
            status: Some(Status::Queued),
            data: Some(ImageData::default()),
            clear_locations: kind == ClaimKind::Upload,
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

    /// A slot for a client's transfer, or 503 once `server.transfer_wait` has passed.
    pub(super) async fn transfer_slot(&self) -> Result<Slot> {
        let board = self.executor.board();
        board
            .transfers
            .acquire(Some(self.transfer_wait))
            .await
            .ok_or(ServiceError::Busy {
                retry_after: self.transfer_wait,
            })
    }

    /// Waits for the release of a dropped claim on `id`, if one is under way.
    pub(super) async fn settled(&self, id: &str) {
        self.executor.board().releases.settled(id).await;
    }

    /// Streams `body` into `store` (the default store when `None`) while hashing it:
    /// `queued` → `saving` → `active`. Any failure, or the request ending, removes the
    /// partial data and returns the image to `queued`. With `pause`, the upload may be
    /// paused at a stop and carried on by the next process (`resume_upload`).
    pub async fn upload<S>(
        &self,
        caller: &Caller,
        id: &str,
        store: Option<&str>,
        declared: Option<u64>,
        body: S,
        pause: Option<&TransferPause>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        self.settled(id).await;
        let image = self.get_modifiable(caller, id, "upload_image").await?;
        let target = self
            .writable_store(store.unwrap_or(self.stores.default_id()))?
            .clone();
        if image.status != Status::Queued {
            return Err(DomainError::Conflict(format!(
                "Image status transition from {} to saving is not allowed",
                image.status.as_str()
            ))
            .into());
        }
        require_formats(&image, "Properties {} must be set prior to saving data.")?;
        if let Some(size) = declared.filter(|s| *s > self.size_cap) {
            return Err(too_large(size, self.size_cap).into());
        }
        let allowance = self.allowance(&image, declared).await?;
        self.enforce_limits(
            caller,
            &[("image_size_total", 0), ("image_count_uploading", 1)],
        )
        .await?;
        let slot = self.transfer_slot().await?;
        let claim = self.claim(id, ClaimKind::Upload).await?;
        let transfer = Transfer {
            caller,
            image: &image,
            target: &target,
            declared,
            allowance,
        };
        self.store_upload(transfer, claim, slot, body, pause, Start::New)
            .await
    }

    /// Carries on `paused`, an upload a previous process of this node paused at its stop:
    /// the image is still `saving` under this node's claim, its first bytes in the store's
    /// temporary file; `body` is the rest. Ends as `upload` does; a failure also removes
    /// the temporary file and returns the image to `queued`.
    pub async fn resume_upload<S>(
        &self,
        caller: &Caller,
        paused: &PausedUpload,
        body: S,
        pause: Option<&TransferPause>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let id = paused.image_id.as_str();
        let claim = self.reclaim(id, ClaimKind::Upload);
        let checked = async {
            let image = self.get_modifiable(caller, id, "upload_image").await?;
            if image.status != Status::Saving {
                return Err(DomainError::Conflict(format!(
                    "Image {id} is {} and no longer takes this upload",
                    image.status.as_str()
                ))
                .into());
            }
            let target = self.writable_store(&paused.store)?.clone();
            let allowance = self.allowance(&image, paused.declared).await?;
            let slot = self.transfer_slot().await?;
            Ok::<_, ServiceError>((image, target, allowance, slot))
        }
        .await;
        let (image, target, allowance, slot) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let temp = paused.temp.clone();
                let _ = blocking(move || std::fs::remove_file(temp)).await;
                claim.release().await;
                return Err(e);
            }
        };
        let transfer = Transfer {
            caller,
            image: &image,
            target: &target,
            declared: paused.declared,
            allowance,
        };
        self.store_upload(transfer, claim, slot, body, pause, Start::Resume(paused))
            .await
    }

    /// An upload's data into its store under `claim`, then the image `active`; or, paused
    /// for the next process, handed over (and this future never ends: the connection takes
    /// the request away).
    async fn store_upload<S>(
        &self,
        transfer: Transfer<'_>,
        claim: Claim,
        slot: Slot,
        body: S,
        pause: Option<&TransferPause>,
        start: Start<'_>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let Transfer {
            caller,
            image,
            target,
            declared,
            allowance,
        } = transfer;
        let id = image.id.as_str();
        let judge = self.judge_for(image);
        let received = self
            .receive_from(
                target, id, declared, allowance, body, slot, judge, pause, start,
            )
            .await;
        let (stored, virtual_size) = match received {
            Ok(Received::Whole(stored, virtual_size)) => (stored, virtual_size),
            Ok(Received::Paused {
                temp,
                written,
                hashes,
                inspector,
            }) => {
                claim.commit();
                tracing::info!(image_id = id, written, "upload paused for the next process");
                let paused = PausedUpload {
                    image_id: id.to_string(),
                    store: target.id.clone(),
                    temp,
                    written,
                    hashes,
                    inspector,
                    declared,
                    caller: PausedCaller::of(caller),
                    request_id: pause.and_then(TransferPause::request_id),
                };
                if let Some(pause) = pause {
                    pause.hand_over(paused).await;
                }
                return Err(DomainError::Invalid("The upload was paused.".into()).into());
            }
            Err(e) => {
                claim.release().await;
                return Err(e);
            }
        };
        let change = ImageChange {
            expect_status: Some(&["saving"]),
            status: Some(Status::Active),
            data: Some(data_of(&stored, virtual_size)),
            add_location: Some(Location {
                store: target.id.clone(),
                url: stored.location.clone(),
            }),
            ..ImageChange::default()
        };
        let saved = self
            .db
            .change_image(id, &change, TaskWrite::None, time::now())
            .await;
        if !matches!(saved, Ok(true)) {
            let _ = target.delete(&stored.location).await;
            claim.release().await;
            saved?;
            return Err(
                DomainError::Gone(format!("Image {id} was deleted during the upload.")).into(),
            );
        }
        claim.commit();
        tracing::info!(image_id = id, store = %target.id, size = stored.size, "image data stored");
        Ok(())
    }

    /// A store that may take new data, or the 4xx a client gets for naming another.
    fn writable_store(&self, id: &str) -> Result<&Store> {
        let store = self
            .stores
            .get(id)
            .map_err(|_| DomainError::Invalid(format!("Store for identifier {id} not found")))?;
        if store.read_only() {
            return Err(super::forbidden(format!("Store {id} is read-only")));
        }
        Ok(store)
    }

    /// What the owner may still store, as `(bytes left, quota)`; refuses a declared size
    /// that would not fit. The write is cut when it passes the allowance.
    pub(super) async fn allowance(
        &self,
        image: &Image,
        declared: Option<u64>,
    ) -> Result<Option<(u64, u64)>> {
        match (&image.owner, self.storage_quota) {
            (Some(owner), quota) if quota > 0 => {
                let used = self.db.stored_by(owner).await?;
                let left = quota.saturating_sub(used);
                if declared.is_some_and(|size| size > left) {
                    return Err(over_quota(quota).into());
                }
                Ok(Some((left, quota)))
            }
            _ => Ok(None),
        }
    }

    /// Writes `body` into `store` while it holds `slot` (file I/O and hashing run on
    /// threads of their own); checks size cap, quota and declared size as bytes arrive, and
    /// inspects them (`inspect`); `judge` decides on the inspection before the data is
    /// kept. Any failure or refusal removes what was written, and so does dropping the
    /// returned future. Returns the stored data and the virtual size `judge` gave.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn receive<S>(
        &self,
        store: &Store,
        id: &str,
        declared: Option<u64>,
        allowance: Option<(u64, u64)>,
        body: S,
        slot: Slot,
        judge: Judge,
    ) -> Result<(Stored, Option<u64>)>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let received = self
            .receive_from(
                store,
                id,
                declared,
                allowance,
                body,
                slot,
                judge,
                None,
                Start::New,
            )
            .await?;
        match received {
            Received::Whole(stored, virtual_size) => Ok((stored, virtual_size)),
            Received::Paused { .. } => {
                Err(DomainError::Invalid("The upload was paused.".into()).into())
            }
        }
    }

    /// `receive` from `start`; with `pause`, it stops (keeping what was written) once the
    /// body stops for a pause.
    #[allow(clippy::too_many_arguments)]
    async fn receive_from<S>(
        &self,
        store: &Store,
        id: &str,
        declared: Option<u64>,
        allowance: Option<(u64, u64)>,
        mut body: S,
        slot: Slot,
        judge: Judge,
        pause: Option<&TransferPause>,
        start: Start<'_>,
    ) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let _slot = slot;
        let (mut upload, mut received, mut inspector) = match start {
            Start::New => (
                store.begin(id, declared).await.map_err(store_error)?,
                0,
                Inspector::new(),
            ),
            Start::Resume(paused) => (
                store
                    .resume(id, &paused.temp, paused.written, &paused.hashes)
                    .await
                    .map_err(store_error)?,
                paused.written,
                paused.inspector.clone(),
            ),
        };
        if let Some(pause) = pause {
            pause.set_resumable(upload.resumable());
        }
        // `Err(inspector)`: stopped for a pause, with the inspection where it stands.
        let outcome: Result<std::result::Result<(Inspection, Option<u64>), Inspector>> = async {
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    // Stopped for a pause: everything it gave is written.
                    Err(_) if pause.is_some_and(TransferPause::body_stopped) => {
                        return Ok(Err(inspector));
                    }
                    Err(e) => {
                        return Err(DomainError::Invalid(format!(
                            "The upload was interrupted: {e}"
                        ))
                        .into());
                    }
                };
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
                inspector.feed(&chunk);
                upload.write(chunk).await.map_err(store_error)?;
            }
            if let Some(expected) = declared.filter(|e| *e != received) {
                return Err(DomainError::Invalid(format!(
                    "Size mismatch: expected {expected} bytes, got {received} bytes"
                ))
                .into());
            }
            let inspection = inspector.finish();
            let virtual_size = judge(&inspection, received)?;
            Ok(Ok((inspection, virtual_size)))
        }
        .await;
        if let Some(pause) = pause {
            pause.set_resumable(false);
        }
        let (inspection, virtual_size) = match outcome {
            Ok(Ok(judged)) => judged,
            Ok(Err(inspector)) => {
                let (temp, hashes) = upload.pause().await.map_err(store_error)?;
                return Ok(Received::Paused {
                    temp,
                    written: received,
                    hashes,
                    inspector,
                });
            }
            Err(e) => {
                upload.abort().await;
                return Err(e);
            }
        };
        let mut stored = upload.finish().await.map_err(store_error)?;
        stored.inspection = Some(inspection);
        Ok(Received::Whole(stored, virtual_size))
    }

    pub(super) async fn delete_data(&self, location: &Location) -> Result<()> {
        let store = self.stores.get(&location.store)?;
        store.delete(&location.url).await.map_err(store_error)
    }

    pub async fn download(&self, caller: &Caller, id: &str) -> Result<Download> {
        let image = self.get_modifiable(caller, id, "download_image").await?;
        if image.status == Status::Deactivated && !caller.is_admin {
            return Err(super::forbidden(
                "The requested image has been deactivated. Image data download is forbidden.",
            ));
        }
        let Some(size) = image.size.filter(|_| !image.locations.is_empty()) else {
            return Ok(Download::NoData);
        };
        let Some(copies) = self.copies_of(&image, self.cache.as_ref()) else {
            return Ok(Download::NoData);
        };
        Ok(Download::Data {
            copies: Box::new(copies),
            size: u64::try_from(size).unwrap_or(0),
            checksum: image.checksum,
        })
    }

    /// `image`'s copies, read through `cache` when it is given and the image is active
    /// (only an active image's data is served from the cache, and only as the catalogue has
    /// it now: a deactivated image, or one whose data changed, is read from the stores).
    /// `None` when the image has no data.
    pub(super) fn copies_of(
        &self,
        image: &Image,
        cache: Option<&Arc<ImageCache>>,
    ) -> Option<Copies> {
        let size = image
            .size
            .filter(|_| !image.locations.is_empty())
            .and_then(|s| u64::try_from(s).ok())?;
        let cache = match (cache, &image.checksum) {
            (Some(cache), Some(checksum)) if image.status == Status::Active => Some((
                cache.clone(),
                Wanted {
                    id: image.id.clone(),
                    size,
                    checksum: checksum.clone(),
                },
            )),
            _ => None,
        };
        Some(Copies {
            stores: self.stores.clone(),
            locations: image.locations.clone(),
            cache,
        })
    }
}
