//! Image data: named stores (Glance's multi-store) of two kinds — directories on a
//! filesystem (`files`) and S3 buckets (`objects`) — and the staging area of interoperable
//! import, which is always local directories. Every write is hashed as it streams
//! (`hashing`); nothing is ever buffered whole. It knows nothing of images' metadata (that
//! is `db`'s) or of HTTP.

mod files;
mod hashing;
mod objects;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

pub use files::DataDir;
use files::{FileUpload, FsStore};
use hashing::Digests;
pub use hashing::HashState;
pub use objects::ObjectSpec;
use objects::{Journal, ObjectUpload, S3Store};

use crate::inspect::Inspection;

/// Image data as it is read: chunks, or the error that cut them.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Read buffer of a file: large enough that a big image is not read 4 KiB at a time.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("no writable data directory has room for {0} bytes")]
    Full(u64),
    #[error("image data {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("location {0} is not in a configured store")]
    UnknownLocation(String),
    #[error("store {0} is not configured")]
    UnknownStore(String),
    /// The object store does not answer, or answers that it is failing: try again.
    #[error("store {store} cannot be reached: {cause}")]
    Unavailable { store: String, cause: String },
    /// The object store refuses the configured credentials.
    #[error("store {store} refused glint's credentials: {cause}")]
    Denied { store: String, cause: String },
    #[error("store {store} has no such object: {cause}")]
    Missing { store: String, cause: String },
    #[error("store {store}: {cause}")]
    Object { store: String, cause: String },
    #[error("the image is larger than store {store} takes in 10,000 parts")]
    TooLarge { store: String },
    #[error("the transfer was cancelled")]
    Cancelled,
}

/// The id Glance gives its staging area; reserved, never listed as a store.
pub const STAGING_ID: &str = "os_glance_staging_store";

/// What a store keeps its data in, as the config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Files(Vec<DataDir>),
    Objects(ObjectSpec),
}

/// One store as the config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub id: String,
    pub description: Option<String>,
    pub backend: Backend,
}

/// Every store of a generation, the default one, and the staging area.
#[derive(Debug, Clone)]
pub struct Stores {
    /// By id.
    stores: Vec<Store>,
    journal: Journal,
    default: String,
    staging: Store,
}

impl Stores {
    /// Opens each store: creates missing directories, and asks each S3 store's bucket
    /// whether it answers (a store marked optional that does not is served anyway, and
    /// said so). `cleanup` runs what a dropped upload leaves to do (aborting a multipart
    /// upload): the runtime of the task board, which outlives every request's. `journal`:
    /// the node's own directory where its open multipart uploads are recorded.
    pub async fn open(
        specs: Vec<StoreSpec>,
        default: &str,
        staging: PathBuf,
        journal: PathBuf,
        hash_algo: &str,
        node: &str,
        cleanup: tokio::runtime::Handle,
    ) -> Result<Stores, StoreError> {
        let journal = {
            let path = journal.clone();
            tokio::task::spawn_blocking(move || Journal::open(path))
                .await
                .map_err(|e| StoreError::Io {
                    path: journal.clone(),
                    source: io::Error::other(e),
                })?
                .map_err(|source| StoreError::Dir {
                    path: journal,
                    source,
                })?
        };
        let mut stores = Vec::new();
        for spec in specs {
            let backend = match spec.backend {
                Backend::Files(dirs) => {
                    let (hash_algo, node) = (hash_algo.to_string(), node.to_string());
                    let opened =
                        tokio::task::spawn_blocking(move || FsStore::open(dirs, &hash_algo, &node))
                            .await
                            .map_err(|e| StoreError::Io {
                                path: "store opener".into(),
                                source: io::Error::other(e),
                            })??;
                    Kind::Files(opened)
                }
                Backend::Objects(object) => {
                    let optional = object.optional;
                    let s3 = S3Store::open(
                        &spec.id,
                        object,
                        hash_algo,
                        cleanup.clone(),
                        journal.clone(),
                    )?;
                    match s3.check().await {
                        Ok(()) => {}
                        Err(e) if optional => {
                            tracing::warn!(store = %spec.id, error = %e, "optional store cannot be reached; serving it anyway");
                        }
                        Err(e) => return Err(e),
                    }
                    Kind::Objects(s3)
                }
            };
            stores.push(Store {
                id: spec.id,
                description: spec.description,
                kind: backend,
            });
        }
        stores.sort_by(|a, b| a.id.cmp(&b.id));
        if !stores.iter().any(|s| s.id == default) {
            return Err(StoreError::UnknownStore(default.to_string()));
        }
        let (hash_algo, node) = (hash_algo.to_string(), node.to_string());
        let staging = tokio::task::spawn_blocking(move || {
            FsStore::open(
                vec![DataDir {
                    path: staging,
                    priority: 0,
                    read_only: false,
                }],
                &hash_algo,
                &node,
            )
        })
        .await
        .map_err(|e| StoreError::Io {
            path: "store opener".into(),
            source: io::Error::other(e),
        })??;
        Ok(Stores {
            stores,
            journal,
            default: default.to_string(),
            staging: Store {
                id: STAGING_ID.to_string(),
                description: None,
                kind: Kind::Files(staging),
            },
        })
    }

    pub fn all(&self) -> &[Store] {
        &self.stores
    }

    pub fn get(&self, id: &str) -> Result<&Store, StoreError> {
        self.stores
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| StoreError::UnknownStore(id.to_string()))
    }

    pub fn default_id(&self) -> &str {
        &self.default
    }

    pub fn staging(&self) -> &Store {
        &self.staging
    }

    /// Aborts the multipart uploads an interrupted process of this node left open (its
    /// journal says which); returns how many. One whose store cannot be asked now stays
    /// recorded for the next start; one of a store no longer configured is forgotten
    /// (a lifecycle rule of its bucket removes it).
    pub async fn abort_interrupted_uploads(&self) -> usize {
        let journal = self.journal.clone();
        let Ok(open) = tokio::task::spawn_blocking(move || journal.entries()).await else {
            return 0;
        };
        let mut aborted = 0;
        for (record, upload) in open {
            let gone = match self.get(&upload.store).map(|s| &s.kind) {
                Ok(Kind::Objects(s3)) => {
                    let key = object_store::path::Path::parse(&upload.key).unwrap_or_default();
                    s3.abort_recorded(&key, &upload.upload_id).await
                }
                _ => {
                    tracing::warn!(store = %upload.store, key = %upload.key, "multipart upload of a store no longer configured left open");
                    true
                }
            };
            if gone {
                aborted += 1;
                Journal::forget(record).await;
            }
        }
        aborted
    }

    /// Removes temporary files an interrupted process of this node left in any store's
    /// directories or the staging area (and other nodes' long untouched); returns how
    /// many. Blocking: file I/O.
    pub fn remove_orphans(&self, keep: &[std::path::PathBuf]) -> usize {
        self.stores
            .iter()
            .chain(std::iter::once(&self.staging))
            .map(|store| store.remove_orphans(keep))
            .sum()
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Files(FsStore),
    Objects(S3Store),
}

/// One store. Its file-only operations (the staging area's: finding a staged file,
/// linking it, keeping its hashes) find nothing in an S3 store.
#[derive(Debug, Clone)]
pub struct Store {
    pub id: String,
    pub description: Option<String>,
    kind: Kind,
}

impl Store {
    /// Free bytes where it writes, for a filesystem store (the most any of its directories
    /// has); an object store does not say.
    pub fn free_bytes(&self) -> Option<u64> {
        match &self.kind {
            Kind::Files(files) => files.free_bytes(),
            Kind::Objects(_) => None,
        }
    }
}

/// What a finished write produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub location: String,
    pub size: u64,
    pub md5: String,
    pub hash_algo: String,
    pub hash: String,
    /// What the writer found the data to be, when it inspected them: kept with staged
    /// data's hashes, so that an import judges them without reading them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
}

impl Stored {
    pub fn new(location: String, digests: Digests) -> Stored {
        Stored {
            location,
            size: digests.size,
            md5: digests.md5,
            hash_algo: digests.hash_algo,
            hash: digests.hash,
            inspection: None,
        }
    }
}

impl Store {
    /// `filesystem` or `s3`, as the config names the kind.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Files(_) => "filesystem",
            Kind::Objects(_) => "s3",
        }
    }

    /// A filesystem store's directories, highest priority first; none for S3.
    pub fn dirs(&self) -> &[DataDir] {
        match &self.kind {
            Kind::Files(files) => files.dirs(),
            Kind::Objects(_) => &[],
        }
    }

    /// An S3 store's settings.
    pub fn object_spec(&self) -> Option<&ObjectSpec> {
        match &self.kind {
            Kind::Files(_) => None,
            Kind::Objects(s3) => Some(s3.spec()),
        }
    }

    /// A store that takes no new data (Glance's read-only store): a filesystem store
    /// none of whose directories is writable.
    pub fn read_only(&self) -> bool {
        match &self.kind {
            Kind::Files(files) => files.read_only(),
            Kind::Objects(_) => false,
        }
    }

    /// Whether `location` names data of this store.
    pub fn owns(&self, location: &str) -> bool {
        match &self.kind {
            Kind::Files(files) => files.file_of(location).is_ok(),
            Kind::Objects(s3) => s3.owns(location),
        }
    }

    /// Starts writing `image_id`'s data (`expected` bytes, when known).
    pub async fn begin(&self, image_id: &str, expected: Option<u64>) -> Result<Upload, StoreError> {
        match &self.kind {
            Kind::Files(files) => {
                let (files, image_id) = (files.clone(), image_id.to_string());
                self.file_upload(move || files.begin(&image_id, expected))
                    .await
            }
            Kind::Objects(s3) => Ok(Upload::new(
                &self.id,
                Sink::Object(Box::new(s3.begin(image_id, expected)?)),
            )),
        }
    }

    /// Carries on a paused upload of `image_id` whose first `written` bytes are in `temp`,
    /// hashed as `hashes` says (filesystem stores only): what is written next follows them.
    pub async fn resume(
        &self,
        image_id: &str,
        temp: &Path,
        written: u64,
        hashes: &HashState,
    ) -> Result<Upload, StoreError> {
        let Kind::Files(files) = &self.kind else {
            return Err(StoreError::Io {
                path: temp.to_path_buf(),
                source: io::Error::other("only a filesystem store's upload can be resumed"),
            });
        };
        let (files, image_id, temp, hashes) = (
            files.clone(),
            image_id.to_string(),
            temp.to_path_buf(),
            hashes.clone(),
        );
        self.file_upload(move || files.resume(&image_id, &temp, written, &hashes))
            .await
    }

    /// An upload into a filesystem store, its writer made by `open` on the blocking pool.
    async fn file_upload<F>(&self, open: F) -> Result<Upload, StoreError>
    where
        F: FnOnce() -> Result<files::FileWriter, StoreError> + Send + 'static,
    {
        let writer = tokio::task::spawn_blocking(open)
            .await
            .map_err(|e| StoreError::Io {
                path: "writer thread".into(),
                source: io::Error::other(e),
            })??;
        Ok(Upload::new(&self.id, Sink::File(FileUpload::start(writer))))
    }

    /// The data at `location`, or its inclusive byte `range`.
    pub async fn read(
        &self,
        location: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, StoreError> {
        let read = crate::metrics::global().store_read(&self.id);
        let stream = self.open_read(location, range).await?;
        Ok(stream
            .inspect_ok(move |chunk| {
                read.inc_by(chunk.len() as u64);
            })
            .boxed())
    }

    async fn open_read(
        &self,
        location: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        match &self.kind {
            Kind::Files(files) => {
                let path = files.file_of(location)?;
                let io_error = |source| StoreError::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = tokio::fs::File::open(&path).await.map_err(io_error)?;
                let (start, length) = match range {
                    Some((first, last)) => (first, last - first + 1),
                    None => (0, u64::MAX),
                };
                if start > 0 {
                    file.seek(io::SeekFrom::Start(start))
                        .await
                        .map_err(io_error)?;
                }
                Ok(
                    tokio_util::io::ReaderStream::with_capacity(file.take(length), READ_CHUNK)
                        .boxed(),
                )
            }
            Kind::Objects(s3) => s3.read(location, range).await,
        }
    }

    /// The size of the data at `location`.
    pub async fn size_of(&self, location: &str) -> Result<u64, StoreError> {
        match &self.kind {
            Kind::Files(files) => {
                let path = files.file_of(location)?;
                tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .map_err(|source| StoreError::Io { path, source })
            }
            Kind::Objects(s3) => s3.size_of(location).await,
        }
    }

    /// Removes the data at `location`; data already gone is no error.
    pub async fn delete(&self, location: &str) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Files(files) => {
                let (files, location) = (files.clone(), location.to_string());
                tokio::task::spawn_blocking(move || files.delete(&location))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: "delete".into(),
                        source: io::Error::other(e),
                    })?
            }
            Kind::Objects(s3) => s3.delete(location).await,
        }
    }

    /// Where `image_id`'s finished data is in this store's directories, if it is there
    /// (the staging area keeps one file per image). Blocking.
    pub fn find(&self, image_id: &str) -> Option<String> {
        match &self.kind {
            Kind::Files(files) => files.find(image_id),
            Kind::Objects(_) => None,
        }
    }

    /// The names of the finished files in this store's directories (image ids). Blocking.
    pub fn entries(&self) -> Vec<String> {
        match &self.kind {
            Kind::Files(files) => files.entries(),
            Kind::Objects(_) => Vec::new(),
        }
    }

    /// Keeps what the write of `stored` computed beside the file. Blocking.
    pub fn keep_hashes(&self, image_id: &str, stored: &Stored) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Files(files) => files.keep_hashes(image_id, stored),
            Kind::Objects(_) => Ok(()),
        }
    }

    /// The hashes kept for `image_id`'s file, if they still describe it. Blocking.
    pub fn kept_hashes(&self, image_id: &str) -> Option<Stored> {
        match &self.kind {
            Kind::Files(files) => files.kept_hashes(image_id),
            Kind::Objects(_) => None,
        }
    }

    /// Removes `image_id`'s file and its kept hashes. Blocking.
    pub fn delete_with_hashes(&self, image_id: &str) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Files(files) => files.delete_with_hashes(image_id),
            Kind::Objects(_) => Ok(()),
        }
    }

    /// Makes `image_id`'s data a hard link to the file `source` when one of this store's
    /// writable directories shares its filesystem; `None` when the data must be copied.
    /// Blocking.
    pub fn link_from(&self, image_id: &str, source: &Path) -> Result<Option<String>, StoreError> {
        match &self.kind {
            Kind::Files(files) => files.link_from(image_id, source),
            Kind::Objects(_) => Ok(None),
        }
    }

    /// The hashes of the local file `source`, when `link_from` would link it; each chunk is
    /// shown to `observe` as it is hashed. Blocking.
    pub fn digest_for_link(
        &self,
        source: &Path,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Digests>, StoreError> {
        match &self.kind {
            Kind::Files(files) => files.digest_for_link(source, observe),
            Kind::Objects(_) => Ok(None),
        }
    }

    /// The file behind a location of a filesystem store.
    pub fn file_of(&self, location: &str) -> Result<PathBuf, StoreError> {
        match &self.kind {
            Kind::Files(files) => files.file_of(location),
            Kind::Objects(_) => Err(StoreError::UnknownLocation(location.to_string())),
        }
    }

    fn remove_orphans(&self, keep: &[std::path::PathBuf]) -> usize {
        match &self.kind {
            Kind::Files(files) => files.remove_orphans(keep),
            Kind::Objects(_) => 0,
        }
    }
}

/// Data being written into a store. Dropped without `finish`, what was written goes
/// (in the background); `abort` removes it and returns once it is gone.
pub struct Upload {
    sink: Sink,
    /// The store's written-bytes counter (metrics).
    written: prometheus_client::metrics::counter::Counter,
}

enum Sink {
    File(FileUpload),
    Object(Box<ObjectUpload>),
}

impl Upload {
    fn new(store: &str, sink: Sink) -> Upload {
        Upload {
            sink,
            written: crate::metrics::global().store_written(store),
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let length = chunk.len() as u64;
        match &mut self.sink {
            Sink::File(upload) => upload.write(chunk).await?,
            Sink::Object(upload) => upload.write(chunk).await?,
        }
        self.written.inc_by(length);
        Ok(())
    }

    /// Whether another process can carry this upload on (`pause`, `Store::resume`).
    pub fn resumable(&self) -> bool {
        matches!(self.sink, Sink::File(_))
    }

    /// Stops once what was written is in the temporary file, and keeps it: returns it and
    /// where its hashes stand.
    pub async fn pause(self) -> Result<(PathBuf, HashState), StoreError> {
        match self.sink {
            Sink::File(upload) => upload.pause().await,
            Sink::Object(upload) => {
                upload.abort().await;
                Err(StoreError::Cancelled)
            }
        }
    }

    /// Makes the data durable and visible.
    pub async fn finish(self) -> Result<Stored, StoreError> {
        match self.sink {
            Sink::File(upload) => upload.finish().await,
            Sink::Object(upload) => upload.finish().await,
        }
    }

    pub async fn abort(self) {
        match self.sink {
            Sink::File(upload) => upload.abort().await,
            Sink::Object(upload) => upload.abort().await,
        }
    }
}
