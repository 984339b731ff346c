//! A store in an S3 bucket (AWS, Ceph RGW, MinIO, Garage, any S3-compatible service),
//! spoken to through `object_store` (SigV4, retries). Uploads stream into a multipart
//! upload with a bounded number of parts in memory, hashed as they stream; a failed or
//! dropped upload is aborted, and one a killed process left is aborted at the node's next
//! start (`Journal`), so no parts are left in the bucket. It knows nothing of
//! images' metadata or of HTTP clients of glint; which S3 failure is a 503 is decided
//! here, what a 503 looks like is not.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::hashing::{Digests, Hashing};
use super::{ByteStream, StoreError, Stored};

/// How long connecting to the service may take, and one read of a response.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a failed request: enough for a service restarting or shedding load, few
/// enough that a client waits seconds, not minutes, for its 503.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
/// S3 takes at most this many parts, each at most 5 GiB.
const MAX_PARTS: u64 = 10_000;
const MAX_PART_SIZE: u64 = 5 << 30;
/// An upload of unknown length doubles its part size every this many parts.
const PARTS_PER_SIZE: u64 = 1_000;
/// Chunks queued for the hashing thread before the upload waits for it.
const HASH_QUEUE: usize = 16;

/// One S3 store as the config describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `http(s)://host:port`; `None`: AWS in `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
    pub part_size: u64,
    pub parts_in_flight: usize,
    /// Served even when it cannot be reached at a start or reload.
    pub optional: bool,
}

impl std::fmt::Debug for ObjectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSpec")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// An S3 store of one generation.
#[derive(Debug, Clone)]
pub struct S3Store {
    /// The store's id, for errors.
    id: String,
    client: Arc<AmazonS3>,
    spec: Arc<ObjectSpec>,
    /// `s3+http(s)://host[:port]/bucket/`: a location of this store is this, the prefix and
    /// a key. Credentials are never part of it.
    base_url: String,
    hash_algo: String,
    /// Where a dropped upload is aborted: a runtime that outlives the request's.
    cleanup: tokio::runtime::Handle,
    journal: Journal,
}

/// glint's outbound HTTP client (rustls with ring, the system's CAs or the built-in
/// roots), with timeouts fit for streaming images: none on a whole request, one on each
/// read.
#[derive(Debug)]
struct Connector;

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        crate::http_client::build(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(30))
        })
        .map(HttpClient::new)
        .map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })
    }
}

impl S3Store {
    pub fn open(
        id: &str,
        spec: ObjectSpec,
        hash_algo: &str,
        cleanup: tokio::runtime::Handle,
        journal: Journal,
    ) -> Result<S3Store, StoreError> {
        let endpoint = spec
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", spec.region));
        let mut builder = AmazonS3Builder::new()
            .with_region(&spec.region)
            .with_bucket_name(&spec.bucket)
            .with_access_key_id(&spec.access_key_id)
            .with_secret_access_key(&spec.secret_access_key)
            .with_virtual_hosted_style_request(!spec.path_style)
            .with_allow_http(endpoint.starts_with("http://"))
            // Over TLS the body cannot be altered on the way, so SigV4 need not hash it
            // (UNSIGNED-PAYLOAD, as AWS's own SDKs send uploads): a sha256 pass over every
            // byte saved, 13 % of glint's CPU during an upload. Over plain http only the
            // signature protects the body, so it stays signed.
            .with_unsigned_payload(endpoint.starts_with("https://"))
            .with_http_connector(Connector)
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        if spec.endpoint.is_some() {
            builder = builder.with_endpoint(&endpoint);
        }
        let client = builder.build().map_err(|e| StoreError::Object {
            store: id.to_string(),
            cause: e.to_string(),
        })?;
        let authority = url::Url::parse(&endpoint)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(port) => format!("{}://{host}:{port}", u.scheme()),
                    None => format!("{}://{host}", u.scheme()),
                })
            })
            .unwrap_or(endpoint);
        Ok(S3Store {
            id: id.to_string(),
            client: Arc::new(client),
            base_url: format!("s3+{authority}/{}/", spec.bucket),
            spec: Arc::new(spec),
            hash_algo: hash_algo.to_string(),
            cleanup,
            journal,
        })
    }

    pub fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    /// Whether the bucket answers with these credentials: one listing request.
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = ObjectPath::from(self.spec.prefix.as_str());
        match self.client.list(Some(&prefix)).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.error(e)),
        }
    }

    fn key_of_image(&self, image_id: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{image_id}", self.spec.prefix))
    }

    fn location_of(&self, key: &ObjectPath) -> String {
        format!("{}{key}", self.base_url)
    }

    /// The key behind a location of this store: `s3+http(s)://<any endpoint>/<bucket>/
    /// <prefix><image id>`. The endpoint is not compared, so a service that moves keeps
    /// its data readable.
    fn key_of(&self, location: &str) -> Result<ObjectPath, StoreError> {
        location
            .strip_prefix("s3+https://")
            .or_else(|| location.strip_prefix("s3+http://"))
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(_, path)| path.strip_prefix(self.spec.bucket.as_str()))
            .and_then(|path| path.strip_prefix('/'))
            .filter(|key| !key.is_empty() && !key.ends_with('/'))
            .and_then(|key| ObjectPath::parse(key).ok())
            .ok_or_else(|| StoreError::UnknownLocation(location.to_string()))
    }

    pub fn owns(&self, location: &str) -> bool {
        self.key_of(location).is_ok()
    }

    pub async fn size_of(&self, location: &str) -> Result<u64, StoreError> {
        let key = self.key_of(location)?;
        let meta = self.client.head(&key).await.map_err(|e| self.error(e))?;
        Ok(meta.size)
    }

    /// The object at `location`, or its inclusive byte `range`.
    pub async fn read(
        &self,
        location: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, StoreError> {
        let key = self.key_of(location)?;
        let options = GetOptions {
            range: range.map(|(first, last)| GetRange::Bounded(first..last + 1)),
            ..GetOptions::default()
        };
        let object = self
            .client
            .get_opts(&key, options)
            .await
            .map_err(|e| self.error(e))?;
        Ok(object.into_stream().map_err(io::Error::other).boxed())
    }

    /// Removes the object; one already gone is logged, not an error.
    pub async fn delete(&self, location: &str) -> Result<(), StoreError> {
        let key = self.key_of(location)?;
        match self.client.delete(&key).await.map_err(|e| self.error(e)) {
            Err(StoreError::Missing { .. }) => {
                tracing::warn!(store = %self.id, %location, "object to delete was already gone");
                Ok(())
            }
            other => other,
        }
    }

    pub fn begin(&self, image_id: &str, expected: Option<u64>) -> Result<ObjectUpload, StoreError> {
        let (hashing, mut chunks) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let mut hasher = Hashing::start(&self.hash_algo).map_err(|e| self.io_error(e))?;
        let hashed = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = chunks.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher.finish()
        });
        // A declared size that would need more than 10,000 parts gets larger ones.
        let part_size = match expected {
            Some(size) => self.spec.part_size.max(size.div_ceil(MAX_PARTS)),
            None => self.spec.part_size,
        }
        .min(MAX_PART_SIZE);
        Ok(ObjectUpload {
            store: self.clone(),
            key: self.key_of_image(image_id),
            upload: None,
            parts: JoinSet::new(),
            buffer: Vec::new(),
            buffered: 0,
            part_size,
            grows: expected.is_none(),
            parts_put: 0,
            hashing: Some(hashing),
            hashed: Some(hashed),
        })
    }

    /// Aborts a multipart upload of this node and forgets it; one the service cannot be
    /// asked to abort now stays recorded, for the node's next start.
    async fn abort_multipart(&self, key: &ObjectPath, upload: Multipart) {
        let record = upload.record;
        if self.abort_recorded(key, &upload.id).await {
            Journal::forget(record).await;
        }
    }

    /// Aborts the recorded upload `id` of `key`; whether it is gone (aborted now, or
    /// already).
    pub async fn abort_recorded(&self, key: &ObjectPath, id: &MultipartId) -> bool {
        match self
            .client
            .abort_multipart(key, id)
            .await
            .map_err(|e| self.error(e))
        {
            Ok(()) | Err(StoreError::Missing { .. }) => true,
            Err(e) => {
                tracing::warn!(store = %self.id, %key, error = %e, "multipart upload not aborted; the node's next start tries again");
                false
            }
        }
    }

    fn io_error(&self, source: io::Error) -> StoreError {
        StoreError::Object {
            store: self.id.clone(),
            cause: source.to_string(),
        }
    }

    /// What a failure of the object store means to glint: the service cannot be reached
    /// or is failing (503, try again), it refuses these credentials (500, the operator's
    /// to fix), the object is not there, or something else.
    fn error(&self, error: object_store::Error) -> StoreError {
        let store = self.id.clone();
        let cause = crate::chain(&error);
        match &error {
            object_store::Error::NotFound { .. } => return StoreError::Missing { store, cause },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                return StoreError::Denied { store, cause };
            }
            _ => {}
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(inner) = source {
            if let Some(http) = inner.downcast_ref::<HttpError>() {
                let transport = matches!(
                    http.kind(),
                    HttpErrorKind::Connect
                        | HttpErrorKind::Request
                        | HttpErrorKind::Timeout
                        | HttpErrorKind::Interrupted
                );
                if transport {
                    return StoreError::Unavailable { store, cause };
                }
            }
            source = inner.source();
        }
        // object_store names the status of a failed listing only in its message
        // ("… status code: 503 Service Unavailable …"); 5xx and 429 are the service's
        // trouble, 401 and 403 its refusal of the credentials, anything else a request it
        // refused.
        let status = cause
            .split("status code: ")
            .nth(1)
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        match status {
            Some(500..=599 | 429) => StoreError::Unavailable { store, cause },
            Some(401 | 403) => StoreError::Denied { store, cause },
            _ => StoreError::Object { store, cause },
        }
    }
}

/// The multipart uploads this node has open, a file each in `<state_dir>/multipart`: what a
/// process killed mid-upload left in a bucket, the node's next start aborts. Another node's
/// are not its business (it aborts them at its own start).
#[derive(Debug, Clone)]
pub struct Journal {
    dir: Arc<PathBuf>,
}

/// One open multipart upload, as the journal keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OpenUpload {
    pub store: String,
    pub key: String,
    pub upload_id: String,
}

impl Journal {
    /// Creates the directory. Blocking.
    pub fn open(dir: PathBuf) -> io::Result<Journal> {
        std::fs::create_dir_all(&dir)?;
        Ok(Journal { dir: Arc::new(dir) })
    }

    /// Records an upload just created, before any part of it goes up.
    async fn record(&self, open: &OpenUpload) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("{}.json", uuid::Uuid::new_v4()));
        let text = serde_json::to_vec(open).map_err(io::Error::other)?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            let temp = target.with_extension("tmp");
            std::fs::write(&temp, text)?;
            std::fs::rename(&temp, &target)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(path)
    }

    /// The upload of `record` is completed or aborted.
    pub(super) async fn forget(record: PathBuf) {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(record)).await;
    }

    /// Every recorded upload. Blocking.
    pub fn entries(&self) -> Vec<(PathBuf, OpenUpload)> {
        let Ok(entries) = std::fs::read_dir(self.dir.as_path()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|path| {
                let open = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                Some((path, open))
            })
            .collect()
    }
}

/// A multipart upload under way: its id, its journal record and its parts' ids by number.
struct Multipart {
    id: MultipartId,
    record: PathBuf,
    parts: Vec<Option<PartId>>,
}

/// Data being written into the bucket: parts of `part_size` go up `parts_in_flight` at a
/// time while the next fills; the data is hashed on a thread of its own. Data that fits
/// one part is put in one request at `finish`; larger data goes up as a multipart upload,
/// recorded in the node's journal, which `abort` (or a drop without `finish`) aborts.
pub struct ObjectUpload {
    store: S3Store,
    key: ObjectPath,
    /// Created with the first full part.
    upload: Option<Multipart>,
    parts: JoinSet<object_store::Result<(usize, PartId)>>,
    buffer: Vec<Bytes>,
    buffered: u64,
    part_size: u64,
    /// Length unknown: parts double every `PARTS_PER_SIZE`.
    grows: bool,
    parts_put: u64,
    hashing: Option<mpsc::Sender<Bytes>>,
    hashed: Option<JoinHandle<io::Result<Digests>>>,
}

impl ObjectUpload {
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let Some(hashing) = &self.hashing else {
            return Err(StoreError::Cancelled);
        };
        if hashing.send(chunk.clone()).await.is_err() {
            return Err(self.hashes().await.err().unwrap_or(StoreError::Cancelled));
        }
        self.buffered += chunk.len() as u64;
        self.buffer.push(chunk);
        while self.buffered >= self.part_size {
            let part = self.take_part(self.part_size);
            self.put_part(part).await?;
        }
        Ok(())
    }

    /// The first `size` bytes of the buffer as one payload.
    fn take_part(&mut self, size: u64) -> PutPayload {
        let mut part = Vec::new();
        let mut taken = 0;
        let mut rest = std::mem::take(&mut self.buffer).into_iter();
        for mut chunk in rest.by_ref() {
            let want = usize::try_from(size - taken).unwrap_or(usize::MAX);
            if chunk.len() > want {
                let tail = chunk.split_off(want);
                taken += chunk.len() as u64;
                part.push(chunk);
                self.buffer.push(tail);
                break;
            }
            taken += chunk.len() as u64;
            part.push(chunk);
            if taken == size {
                break;
            }
        }
        self.buffer.extend(rest);
        self.buffered -= taken;
        part.into_iter().collect()
    }

    /// Starts the multipart upload and records it, before its first part.
    async fn start_multipart(&mut self) -> Result<(), StoreError> {
        let client = &self.store.client;
        let id = client
            .create_multipart(&self.key)
            .await
            .map_err(|e| self.store.error(e))?;
        let open = OpenUpload {
            store: self.store.id.clone(),
            key: self.key.to_string(),
            upload_id: id.clone(),
        };
        match self.store.journal.record(&open).await {
            Ok(record) => {
                self.upload = Some(Multipart {
                    id,
                    record,
                    parts: Vec::new(),
                });
                Ok(())
            }
            Err(e) => {
                let _ = client.abort_multipart(&self.key, &id).await;
                Err(self.store.io_error(e))
            }
        }
    }

    async fn put_part(&mut self, part: PutPayload) -> Result<(), StoreError> {
        if self.parts_put >= MAX_PARTS {
            return Err(StoreError::TooLarge {
                store: self.store.id.clone(),
            });
        }
        while self.parts.len() >= self.store.spec.parts_in_flight {
            self.join_part().await?;
        }
        if self.upload.is_none() {
            self.start_multipart().await?;
        }
        let Some(upload) = &mut self.upload else {
            return Err(StoreError::Cancelled);
        };
        let number = upload.parts.len();
        upload.parts.push(None);
        let (client, key, id) = (
            self.store.client.clone(),
            self.key.clone(),
            upload.id.clone(),
        );
        self.parts.spawn(async move {
            let put = client.put_part(&key, &id, number, part).await?;
            Ok((number, put))
        });
        self.parts_put += 1;
        if self.grows && self.parts_put % PARTS_PER_SIZE == 0 {
            self.part_size = (self.part_size * 2).min(MAX_PART_SIZE);
        }
        Ok(())
    }

    async fn join_part(&mut self) -> Result<(), StoreError> {
        match self.parts.join_next().await {
            None => Ok(()),
            Some(Ok(Ok((number, put)))) => {
                if let Some(slot) = self
                    .upload
                    .as_mut()
                    .and_then(|upload| upload.parts.get_mut(number))
                {
                    *slot = Some(put);
                }
                Ok(())
            }
            Some(Ok(Err(e))) => Err(self.store.error(e)),
            Some(Err(e)) => Err(self.store.io_error(io::Error::other(e))),
        }
    }

    /// Waits for the hashing thread's result (the data ended or the thread failed).
    async fn hashes(&mut self) -> Result<Digests, StoreError> {
        drop(self.hashing.take());
        let Some(hashed) = self.hashed.take() else {
            return Err(StoreError::Cancelled);
        };
        match hashed.await {
            Ok(Ok(digests)) => Ok(digests),
            Ok(Err(e)) => Err(self.store.io_error(e)),
            Err(e) => Err(self.store.io_error(io::Error::other(e))),
        }
    }

    pub async fn finish(mut self) -> Result<Stored, StoreError> {
        let outcome = self.complete().await;
        if outcome.is_err() {
            self.abort_now().await;
        }
        outcome
    }

    async fn complete(&mut self) -> Result<Stored, StoreError> {
        let digests = self.hashes().await?;
        let location = self.store.location_of(&self.key);
        if self.upload.is_none() {
            let whole: PutPayload = std::mem::take(&mut self.buffer).into_iter().collect();
            self.store
                .client
                .put(&self.key, whole)
                .await
                .map_err(|e| self.store.error(e))?;
            return Ok(Stored::new(location, digests));
        }
        if self.buffered > 0 {
            let last = self.take_part(self.buffered);
            self.put_part(last).await?;
        }
        while !self.parts.is_empty() {
            self.join_part().await?;
        }
        let Some(upload) = &self.upload else {
            return Err(StoreError::Cancelled);
        };
        let parts: Vec<PartId> = upload
            .parts
            .iter()
            .cloned()
            .collect::<Option<_>>()
            .ok_or(StoreError::Cancelled)?;
        self.store
            .client
            .complete_multipart(&self.key, &upload.id, parts)
            .await
            .map_err(|e| self.store.error(e))?;
        if let Some(upload) = self.upload.take() {
            Journal::forget(upload.record).await;
        }
        Ok(Stored::new(location, digests))
    }

    /// Aborts the multipart upload (its parts go), and returns once the service said so.
    pub async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        drop(self.hashing.take());
        self.parts.shutdown().await;
        if let Some(upload) = self.upload.take() {
            self.store.abort_multipart(&self.key, upload).await;
        }
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        drop(self.hashing.take());
        self.parts.abort_all();
        if let Some(upload) = self.upload.take() {
            let (store, key) = (self.store.clone(), self.key.clone());
            self.store.cleanup.spawn(async move {
                store.abort_multipart(&key, upload).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(journal: &std::path::Path) -> S3Store {
        let spec = ObjectSpec {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            bucket: "images".into(),
            prefix: "glint/".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            path_style: true,
            part_size: 5 << 20,
            parts_in_flight: 2,
            optional: false,
        };
        let journal = Journal::open(journal.to_path_buf()).unwrap();
        S3Store::open(
            "objects",
            spec,
            "sha512",
            tokio::runtime::Handle::current(),
            journal,
        )
        .unwrap()
    }

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: message.to_string().into(),
        }
    }

    #[tokio::test]
    async fn s3_failures_are_unavailable_refused_missing_or_other() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store(dir.path());
        let status = |code: &str| {
            generic(&format!(
                "Error performing PUT http://x/images/k in 3ms, after 3 retries - Server returned non-2xx status code: {code} : <Error/>"
            ))
        };
        assert!(matches!(
            s3.error(status("503 Service Unavailable")),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            s3.error(status("500 Internal Server Error")),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            s3.error(status("429 Too Many Requests")),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            s3.error(status("403 Forbidden")),
            StoreError::Denied { .. }
        ));
        assert!(matches!(
            s3.error(status("400 Bad Request")),
            StoreError::Object { .. }
        ));
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "SignatureDoesNotMatch".into(),
        };
        assert!(matches!(s3.error(denied), StoreError::Denied { .. }));
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "NoSuchKey".into(),
        };
        assert!(matches!(s3.error(missing), StoreError::Missing { .. }));
    }

    /// A location is the store's whatever endpoint wrote it, never with credentials, and
    /// only in its bucket.
    #[tokio::test]
    async fn locations_name_bucket_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = store(dir.path());
        let location = s3.location_of(&s3.key_of_image("abc"));
        assert_eq!(location, "s3+http://127.0.0.1:1/images/glint/abc");
        assert!(s3.owns(&location));
        assert!(s3.owns("s3+https://moved.example/images/glint/abc"));
        assert!(!s3.owns("s3+http://127.0.0.1:1/other/glint/abc"));
        assert!(!s3.owns("s3+http://127.0.0.1:1/images/"));
        assert!(!s3.owns("file:///images/glint/abc"));
        assert!(
            !location.contains('@'),
            "no userinfo, no credentials: {location}"
        );
    }
}
