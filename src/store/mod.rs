//! Image data on the filesystem: named stores (Glance's multi-store), each in several data
//! directories with priorities (Glance's `filesystem_store_datadirs`), and the staging area
//! of interoperable import. Writes go to a temporary file in the chosen directory, are
//! hashed (md5 and the configured SHA-2) as they stream, fsynced and renamed; nothing is
//! ever buffered whole. It knows nothing of images' metadata (that is `db`'s) or of HTTP.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use md5::Md5;
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Every temporary file's name starts so; then comes the writing node's id (`<state_dir>/
/// node-id`), so that nodes sharing a data directory (NFS, CephFS) remove only their own
/// after a crash.
const TEMP_PREFIX: &str = ".upload-";
/// A temporary file of another node (or of a version before node ids) untouched this long
/// is an orphan: every transfer writes more often than its read timeouts allow.
const FOREIGN_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// What a finished write computed, kept beside the data (`.hashes-<image id>`).
const HASHES_PREFIX: &str = ".hashes-";
/// Chunks queued for the md5 thread before the writer waits for it.
const MD5_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("no writable data directory has room for {0} bytes")]
    Full(u64),
    #[error("image data {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("location {0} is not in a configured data directory")]
    UnknownLocation(String),
    #[error("store {0} is not configured")]
    UnknownStore(String),
}

/// The id Glance gives its staging area; reserved, never listed as a store.
pub const STAGING_ID: &str = "os_glance_staging_store";

/// One store as the config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub id: String,
    pub description: Option<String>,
    pub dirs: Vec<DataDir>,
}

/// Every store of a generation, the default one, and the staging area.
#[derive(Debug, Clone)]
pub struct Stores {
    /// By id.
    stores: Vec<Store>,
    default: String,
    staging: Store,
}

impl Stores {
    /// Opens each store (creating missing directories) and the staging area in `staging`.
    pub fn open(
        specs: Vec<StoreSpec>,
        default: &str,
        staging: PathBuf,
        hash_algo: &str,
        node: &str,
    ) -> Result<Stores, StoreError> {
        let mut stores = specs
            .into_iter()
            .map(|spec| Store::open(spec.id, spec.description, spec.dirs, hash_algo, node))
            .collect::<Result<Vec<_>, _>>()?;
        stores.sort_by(|a, b| a.id.cmp(&b.id));
        if !stores.iter().any(|s| s.id == default) {
            return Err(StoreError::UnknownStore(default.to_string()));
        }
        let staging = Store::open(
            STAGING_ID.to_string(),
            None,
            vec![DataDir {
                path: staging,
                priority: 0,
                read_only: false,
            }],
            hash_algo,
            node,
        )?;
        Ok(Stores {
            stores,
            default: default.to_string(),
            staging,
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

    /// Removes temporary files an interrupted process of this node left in any store or
    /// the staging area (and other nodes' long untouched); returns how many.
    pub fn remove_orphans(&self) -> usize {
        self.stores
            .iter()
            .chain(std::iter::once(&self.staging))
            .map(Store::remove_orphans)
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub priority: i64,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub id: String,
    pub description: Option<String>,
    /// Highest priority first.
    dirs: Vec<DataDir>,
    hash_algo: String,
    /// `TEMP_PREFIX` and this node's id: how this node's temporary files begin.
    temp_prefix: String,
}

/// What a finished write produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub location: String,
    pub size: u64,
    pub md5: String,
    pub hash_algo: String,
    pub hash: String,
}

impl Store {
    /// Creates missing directories. Nothing else is touched: cleaning up after a crash is
    /// `remove_orphans`, which only the first generation of a process runs.
    pub fn open(
        id: String,
        description: Option<String>,
        mut dirs: Vec<DataDir>,
        hash_algo: &str,
        node: &str,
    ) -> Result<Store, StoreError> {
        for dir in &dirs {
            fs::create_dir_all(&dir.path).map_err(|source| StoreError::Dir {
                path: dir.path.clone(),
                source,
            })?;
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.priority));
        Ok(Store {
            id,
            description,
            dirs,
            hash_algo: hash_algo.to_string(),
            temp_prefix: format!("{TEMP_PREFIX}{node}-"),
        })
    }

    /// A new temporary file's path in `dir`, for data of `image_id`.
    fn temporary(&self, dir: &Path, image_id: &str) -> PathBuf {
        dir.join(format!(
            "{}{image_id}-{}",
            self.temp_prefix,
            uuid::Uuid::new_v4()
        ))
    }

    pub fn dirs(&self) -> &[DataDir] {
        &self.dirs
    }

    /// A store none of whose directories takes new data (Glance's read-only store).
    pub fn read_only(&self) -> bool {
        self.dirs.iter().all(|d| d.read_only)
    }

    /// Where `image_id`'s finished data would be in this store, if it is there (the staging
    /// area keeps one file per image).
    pub fn find(&self, image_id: &str) -> Option<String> {
        self.dirs
            .iter()
            .map(|d| d.path.join(image_id))
            .find(|p| p.is_file())
            .map(|p| format!("file://{}", p.display()))
    }

    /// The names of the finished files in this store's directories (image ids).
    pub fn entries(&self) -> Vec<String> {
        self.dirs
            .iter()
            .filter_map(|d| fs::read_dir(&d.path).ok())
            .flat_map(|entries| entries.flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    /// Keeps what the write of `stored` computed beside it, so the data can later go into a
    /// store by `link_from` without being read again. Written whole or not at all; a file
    /// without its hashes is simply copied.
    pub fn keep_hashes(&self, image_id: &str, stored: &Stored) -> Result<(), StoreError> {
        let Some(dir) = self.dirs.first() else {
            return Ok(());
        };
        let path = dir.path.join(format!("{HASHES_PREFIX}{image_id}"));
        let temp = dir
            .path
            .join(format!("{}{HASHES_PREFIX}{image_id}", self.temp_prefix));
        let io_error = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec(stored).map_err(|e| io_error(io::Error::other(e)))?;
        fs::write(&temp, text).map_err(io_error)?;
        fs::rename(&temp, &path).map_err(io_error)
    }

    /// The hashes kept for `image_id`'s data in this store, if they still describe it.
    pub fn kept_hashes(&self, image_id: &str) -> Option<Stored> {
        let location = self.find(image_id)?;
        let dir = self.dirs.first()?;
        let text = fs::read(dir.path.join(format!("{HASHES_PREFIX}{image_id}"))).ok()?;
        let kept: Stored = serde_json::from_slice(&text).ok()?;
        let size = fs::metadata(self.path_of(&location).ok()?).ok()?.len();
        (kept.location == location && kept.size == size).then_some(kept)
    }

    /// Removes `image_id`'s data and its kept hashes.
    pub fn delete_with_hashes(&self, image_id: &str) -> Result<(), StoreError> {
        for dir in &self.dirs {
            let _ = fs::remove_file(dir.path.join(format!("{HASHES_PREFIX}{image_id}")));
        }
        match self.find(image_id) {
            Some(location) => self.delete(&location),
            None => Ok(()),
        }
    }

    /// Makes `image_id`'s data in this store a hard link to `source` (a finished file of
    /// another store), when one of this store's writable directories is on the same
    /// filesystem: no byte is copied. `None` when none is, and the data must be copied.
    pub fn link_from(&self, image_id: &str, source: &Path) -> Result<Option<String>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let device = fs::metadata(source)
            .map_err(|e| StoreError::Io {
                path: source.to_path_buf(),
                source: e,
            })?
            .dev();
        let Some(dir) = self
            .dirs
            .iter()
            .filter(|d| !d.read_only)
            .find(|d| fs::metadata(&d.path).is_ok_and(|m| m.dev() == device))
        else {
            return Ok(None);
        };
        let target = dir.path.join(image_id);
        let temp = self.temporary(&dir.path, image_id);
        let io_error = |source| StoreError::Io {
            path: target.clone(),
            source,
        };
        match fs::hard_link(source, &temp) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                return Ok(None);
            }
            Err(e) => return Err(io_error(e)),
        }
        if let Err(e) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(e));
        }
        File::open(&dir.path)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
        Ok(Some(format!("file://{}", target.display())))
    }

    /// The file behind a location of this store.
    pub fn file_of(&self, location: &str) -> Result<PathBuf, StoreError> {
        self.path_of(location)
    }

    /// Removes temporary files left by an interrupted process of this node, and those of
    /// other nodes untouched for `FOREIGN_ORPHAN_AGE` (a node that died for good); returns
    /// how many. Another node's transfer in flight keeps its file.
    pub fn remove_orphans(&self) -> usize {
        let mut removed = 0;
        for dir in &self.dirs {
            let Ok(entries) = fs::read_dir(&dir.path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let orphan = name.starts_with(&self.temp_prefix)
                    || (name.starts_with(TEMP_PREFIX)
                        && entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|at| at.elapsed().ok())
                            .is_some_and(|age| age > FOREIGN_ORPHAN_AGE));
                if orphan && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Starts writing `image_id`'s data in the highest-priority writable directory with
    /// room for `expected` bytes (when known).
    pub fn begin(&self, image_id: &str, expected: Option<u64>) -> Result<Upload, StoreError> {
        let needed = expected.unwrap_or(0);
        let dir = self
            .dirs
            .iter()
            .filter(|d| !d.read_only)
            .find(|d| free_bytes(&d.path).is_some_and(|free| free > needed))
            .ok_or(StoreError::Full(needed))?;
        let temp = self.temporary(&dir.path, image_id);
        let file = File::create_new(&temp).map_err(|source| StoreError::Io {
            path: temp.clone(),
            source,
        })?;
        let hasher: Box<dyn DynDigest + Send> = match self.hash_algo.as_str() {
            "sha256" => Box::new(Sha256::new()),
            "sha384" => Box::new(Sha384::new()),
            _ => Box::new(Sha512::new()),
        };
        // md5 runs beside the SHA-2 on a thread of its own: one after the other they
        // would halve the upload rate on a machine with a second core. Inside a runtime the
        // thread is one of its blocking pool (reused, bounded), not a new OS thread.
        let (md5_chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(MD5_QUEUE);
        let (md5_done, md5) = std::sync::mpsc::sync_channel::<String>(1);
        let hash_md5 = move || {
            let mut md5 = Md5::new();
            for chunk in received {
                Digest::update(&mut md5, &chunk);
            }
            let _ = md5_done.send(hex::encode(md5.finalize()));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(hash_md5)),
            Err(_) => drop(
                std::thread::Builder::new()
                    .name("glint-md5".into())
                    .spawn(hash_md5)
                    .map_err(|source| StoreError::Io {
                        path: temp.clone(),
                        source,
                    })?,
            ),
        }
        Ok(Upload {
            temp: Some(temp),
            target: dir.path.join(image_id),
            file,
            md5_chunks: Some(md5_chunks),
            md5,
            hasher,
            hash_algo: self.hash_algo.clone(),
            size: 0,
        })
    }

    /// Opens stored data for reading, if `location` is in a configured directory.
    pub fn open_read(&self, location: &str) -> Result<File, StoreError> {
        let path = self.path_of(location)?;
        File::open(&path).map_err(|source| StoreError::Io { path, source })
    }

    pub fn delete(&self, location: &str) -> Result<(), StoreError> {
        let path = self.path_of(location)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn path_of(&self, location: &str) -> Result<PathBuf, StoreError> {
        let path = location
            .strip_prefix("file://")
            .map(PathBuf::from)
            .ok_or_else(|| StoreError::UnknownLocation(location.to_string()))?;
        let inside = self
            .dirs
            .iter()
            .any(|d| path.parent() == Some(d.path.as_path()));
        if inside {
            Ok(path)
        } else {
            Err(StoreError::UnknownLocation(location.to_string()))
        }
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Data being written. Dropping it without `finish` removes the temporary file, so a
/// failed or cut upload leaves nothing behind.
pub struct Upload {
    temp: Option<PathBuf>,
    target: PathBuf,
    file: File,
    md5_chunks: Option<std::sync::mpsc::SyncSender<Bytes>>,
    /// The md5 worker's result, sent once its chunks end.
    md5: std::sync::mpsc::Receiver<String>,
    hasher: Box<dyn DynDigest + Send>,
    hash_algo: String,
    size: u64,
}

impl Upload {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a chunk (blocking I/O: run it off the async threads).
    pub fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if let Some(md5) = &self.md5_chunks {
            // The md5 thread ends only when this sender is dropped.
            let _ = md5.send(chunk.clone());
        }
        self.file
            .write_all(&chunk)
            .map_err(|source| StoreError::Io {
                path: self.target.clone(),
                source,
            })?;
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Makes the data durable and visible under its final name.
    pub fn finish(mut self) -> Result<Stored, StoreError> {
        let io_error = |source| StoreError::Io {
            path: self.target.clone(),
            source,
        };
        self.file.sync_all().map_err(io_error)?;
        let temp = self
            .temp
            .take()
            .ok_or_else(|| io_error(io::Error::other("upload already finished")))?;
        fs::rename(&temp, &self.target).map_err(io_error)?;
        if let Some(dir) = self.target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error)?;
        }
        drop(self.md5_chunks.take());
        let md5 = self
            .md5
            .recv()
            .map_err(|_| io_error(io::Error::other("the md5 worker ended without a result")))?;
        let hash = hex::encode(self.hasher.finalize_reset());
        Ok(Stored {
            location: format!("file://{}", self.target.display()),
            size: self.size,
            md5,
            hash_algo: self.hash_algo.clone(),
            hash,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        drop(self.md5_chunks.take());
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dirs: &[(&Path, i64, bool)]) -> Store {
        Store::open(
            "s".into(),
            None,
            dirs.iter()
                .map(|(p, priority, read_only)| DataDir {
                    path: p.to_path_buf(),
                    priority: *priority,
                    read_only: *read_only,
                })
                .collect(),
            "sha512",
            "node-a",
        )
        .unwrap()
    }

    /// Nodes sharing a data directory: a start removes its own node's temporary files, not
    /// another node's transfer in flight.
    #[test]
    fn orphans_are_this_nodes_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&[(dir.path(), 0, false)]);
        let mine = store.begin("image-1", None).unwrap();
        let theirs = dir.path().join(".upload-node-b-image-2-x");
        std::fs::write(&theirs, b"in flight").unwrap();
        std::mem::forget(mine);
        assert_eq!(store.remove_orphans(), 1);
        assert!(theirs.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(".upload-node-b-image-2-x")]
        );
    }

    #[test]
    fn writes_hash_and_land_in_the_highest_priority_writable_dir() {
        let root = tempfile::tempdir().unwrap();
        let (low, high, ro) = (
            root.path().join("low"),
            root.path().join("high"),
            root.path().join("ro"),
        );
        let store = store(&[(&low, 10, false), (&high, 50, false), (&ro, 90, true)]);
        let mut upload = store.begin("img", Some(3)).unwrap();
        upload.write(Bytes::from_static(b"abc")).unwrap();
        let stored = upload.finish().unwrap();
        assert_eq!(
            stored.location,
            format!("file://{}", high.join("img").display())
        );
        assert_eq!(stored.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert!(stored.hash.starts_with("ddaf35a193617aba"));
        assert_eq!(fs::read(high.join("img")).unwrap(), b"abc");
        assert!(store.open_read(&stored.location).is_ok());
        assert!(store.open_read("file:///etc/passwd").is_err());
        store.delete(&stored.location).unwrap();
        assert!(!high.join("img").exists());
    }

    #[test]
    fn an_abandoned_upload_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = store(&[(root.path(), 1, false)]);
        let mut upload = store.begin("img", None).unwrap();
        upload.write(Bytes::from_static(b"partial")).unwrap();
        drop(upload);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let leftover = store.begin("img2", None).unwrap();
        std::mem::forget(leftover);
        assert_eq!(store.remove_orphans(), 1);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn no_room_is_full() {
        let root = tempfile::tempdir().unwrap();
        let store = store(&[(root.path(), 1, false)]);
        assert!(matches!(
            store.begin("img", Some(u64::MAX)),
            Err(StoreError::Full(_))
        ));
    }
}
