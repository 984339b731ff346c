//! A store in local (or shared: NFS, CephFS) directories with priorities (Glance's
//! `filesystem_store_datadirs`), and the staging area of interoperable import. Writes go to
//! a temporary file in the chosen directory on a thread of their own, hashed as they
//! stream, fsynced and renamed; nothing is ever buffered whole. It knows nothing of
//! images' metadata or of HTTP.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::hashing::{Digests, HashState, Hashing};
use super::{StoreError, Stored};

/// Every temporary file's name starts so; then comes the writing node's id (`<state_dir>/
/// node-id`), so that nodes sharing a data directory (NFS, CephFS) remove only their own
/// after a crash.
const TEMP_PREFIX: &str = ".upload-";
/// A temporary file of another node (or of a version before node ids) untouched this long
/// is an orphan: every transfer writes more often than its read timeouts allow.
const FOREIGN_ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// What a finished write computed, kept beside the data (`.hashes-<image id>`).
const HASHES_PREFIX: &str = ".hashes-";
/// Chunks in flight between the request and the thread that writes and hashes them.
const WRITE_QUEUE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub priority: i64,
    pub read_only: bool,
}

/// A filesystem store: its directories, highest priority first.
#[derive(Debug, Clone)]
pub struct FsStore {
    /// Highest priority first.
    dirs: Vec<DataDir>,
    hash_algo: String,
    /// `TEMP_PREFIX` and this node's id: how this node's temporary files begin.
    temp_prefix: String,
}

impl FsStore {
    /// The most free space among the directories it writes to.
    pub fn free_bytes(&self) -> Option<u64> {
        self.dirs
            .iter()
            .filter(|d| !d.read_only)
            .filter_map(|d| free_bytes(&d.path))
            .max()
    }

    /// Creates missing directories. Nothing else is touched: cleaning up after a crash is
    /// `remove_orphans`, which only the first generation of a process runs.
    pub fn open(
        mut dirs: Vec<DataDir>,
        hash_algo: &str,
        node: &str,
    ) -> Result<FsStore, StoreError> {
        for dir in &dirs {
            fs::create_dir_all(&dir.path).map_err(|source| StoreError::Dir {
                path: dir.path.clone(),
                source,
            })?;
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.priority));
        Ok(FsStore {
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

    /// The hashes of the finished local file `source` with this store's algorithm, when
    /// `link_from` would link it (one of this store's writable directories shares its
    /// filesystem; `None` otherwise): one read, each chunk also shown to `observe`, while
    /// another thread syncs the file (it may have been written without, and a link to it
    /// must survive a crash).
    pub fn digest_for_link(
        &self,
        source: &Path,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Digests>, StoreError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let io_error = |e| StoreError::Io {
            path: source.to_path_buf(),
            source: e,
        };
        let mut file = File::open(source).map_err(io_error)?;
        let device = file.metadata().map_err(io_error)?.dev();
        let linkable = self
            .dirs
            .iter()
            .any(|d| !d.read_only && fs::metadata(&d.path).is_ok_and(|m| m.dev() == device));
        if !linkable {
            return Ok(None);
        }
        let synced = file.try_clone().map_err(io_error)?;
        std::thread::scope(|scope| {
            let sync = scope.spawn(move || synced.sync_all());
            let mut hashing = Hashing::start(&self.hash_algo).map_err(io_error)?;
            loop {
                let mut chunk = vec![0u8; super::READ_CHUNK];
                let n = match file.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error(e)),
                };
                chunk.truncate(n);
                observe(&chunk);
                hashing.update(&Bytes::from(chunk));
            }
            sync.join()
                .map_err(|_| io_error(io::Error::other("the sync thread panicked")))?
                .map_err(io_error)?;
            hashing.finish().map(Some).map_err(io_error)
        })
    }

    /// The file behind a location of this store.
    pub fn file_of(&self, location: &str) -> Result<PathBuf, StoreError> {
        self.path_of(location)
    }

    /// Removes temporary files left by an interrupted process of this node, and those of
    /// other nodes untouched for `FOREIGN_ORPHAN_AGE` (a node that died for good); returns
    /// how many. Another node's transfer in flight keeps its file, and so does each of
    /// `keep` (uploads a previous process handed over, carried on by this one).
    pub fn remove_orphans(&self, keep: &[PathBuf]) -> usize {
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
                if orphan && !keep.contains(&entry.path()) && fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Starts writing `image_id`'s data in the highest-priority writable directory with
    /// room for `expected` bytes (when known). Blocking: file I/O.
    pub fn begin(&self, image_id: &str, expected: Option<u64>) -> Result<FileWriter, StoreError> {
        let needed = expected.unwrap_or(0);
        let dir = self
            .dirs
            .iter()
            .filter(|d| !d.read_only)
            .find(|d| free_bytes(&d.path).is_some_and(|free| free > needed))
            .ok_or(StoreError::Full(needed))?;
        let temp = self.temporary(&dir.path, image_id);
        let io_error = |source| StoreError::Io {
            path: temp.clone(),
            source,
        };
        let file = File::create_new(&temp).map_err(io_error)?;
        let hashing = Hashing::start(&self.hash_algo).map_err(io_error)?;
        Ok(FileWriter {
            temp: Some(temp),
            target: dir.path.join(image_id),
            file,
            hashing: Some(hashing),
        })
    }

    /// Carries on writing `image_id`'s data where a paused upload left it in `temp` (its
    /// first `written` bytes, hashed as `hashes` says; whatever follows them is cut). `temp`
    /// must be one of this node's temporary files of that image in a writable directory of
    /// this store. Blocking: file I/O.
    pub fn resume(
        &self,
        image_id: &str,
        temp: &Path,
        written: u64,
        hashes: &HashState,
    ) -> Result<FileWriter, StoreError> {
        let io_error = |source| StoreError::Io {
            path: temp.to_path_buf(),
            source,
        };
        let dir = self
            .dirs
            .iter()
            .filter(|d| !d.read_only)
            .find(|d| temp.parent() == Some(d.path.as_path()))
            .filter(|_| {
                let ours = format!("{}{image_id}-", self.temp_prefix);
                temp.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&ours))
            })
            .ok_or_else(|| io_error(io::Error::other("not a temporary file of this store")))?;
        if hashes.size != written || hashes.hash_algo != self.hash_algo {
            return Err(io_error(io::Error::other(
                "its hashes are not of the bytes written with this store's algorithm",
            )));
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(temp)
            .map_err(io_error)?;
        if file.metadata().map_err(io_error)?.len() < written {
            return Err(io_error(io::Error::other(format!(
                "holds less than the {written} bytes written"
            ))));
        }
        file.set_len(written).map_err(io_error)?;
        io::Seek::seek(&mut file, io::SeekFrom::End(0)).map_err(io_error)?;
        let hashing = Hashing::resume(hashes).map_err(io_error)?;
        Ok(FileWriter {
            temp: Some(temp.to_path_buf()),
            target: dir.path.join(image_id),
            file,
            hashing: Some(hashing),
        })
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

/// Data being written, blocking. Dropping it without `finish` removes the temporary
/// file, so a failed or cut upload leaves nothing behind.
pub struct FileWriter {
    temp: Option<PathBuf>,
    target: PathBuf,
    file: File,
    /// Taken by `finish`.
    hashing: Option<Hashing>,
}

impl FileWriter {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &Bytes) -> Result<(), StoreError> {
        if let Some(hashing) = &mut self.hashing {
            hashing.update(chunk);
        }
        self.file.write_all(chunk).map_err(|source| StoreError::Io {
            path: self.target.clone(),
            source,
        })
    }

    /// Stops writing and keeps the temporary file for another process to carry on from
    /// (`FsStore::resume`); returns it and where the hashes stand.
    pub fn pause(mut self) -> Result<(PathBuf, HashState), StoreError> {
        let io_error = |source| StoreError::Io {
            path: self.target.clone(),
            source,
        };
        self.file.flush().map_err(io_error)?;
        let (Some(temp), Some(hashing)) = (self.temp.take(), self.hashing.take()) else {
            return Err(io_error(io::Error::other("upload already finished")));
        };
        match hashing.pause() {
            Ok(hashes) => Ok((temp, hashes)),
            Err(e) => {
                let _ = fs::remove_file(temp);
                Err(io_error(e))
            }
        }
    }

    /// Makes the data durable and visible under its final name.
    pub fn finish(mut self) -> Result<Stored, StoreError> {
        let io_error = |source| StoreError::Io {
            path: self.target.clone(),
            source,
        };
        self.file.sync_all().map_err(io_error)?;
        let (Some(temp), Some(hashing)) = (self.temp.take(), self.hashing.take()) else {
            return Err(io_error(io::Error::other("upload already finished")));
        };
        fs::rename(&temp, &self.target).map_err(io_error)?;
        if let Some(dir) = self.target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error)?;
        }
        let digests = hashing.finish().map_err(io_error)?;
        Ok(Stored::new(
            format!("file://{}", self.target.display()),
            digests,
        ))
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// What the request side sends the writer thread.
enum Feed {
    Chunk(Bytes),
    /// The data is whole: make it durable and visible.
    Finish,
    /// Another process carries on: keep the temporary file.
    Pause,
}

/// How the writer thread ended.
enum Ended {
    Finished(Stored),
    Paused(PathBuf, HashState),
}

/// A `FileWriter` on a thread of the blocking pool, fed from async code. Dropped without
/// `finish`, its thread removes what was written.
pub struct FileUpload {
    feed: mpsc::Sender<Feed>,
    writer: Option<tokio::task::JoinHandle<Result<Ended, StoreError>>>,
}

impl FileUpload {
    pub fn start(mut writer: FileWriter) -> FileUpload {
        let (feed, mut queue) = mpsc::channel::<Feed>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(feed) = queue.blocking_recv() {
                match feed {
                    Feed::Chunk(chunk) => writer.write(&chunk)?,
                    Feed::Finish => return writer.finish().map(Ended::Finished),
                    Feed::Pause => {
                        return writer
                            .pause()
                            .map(|(temp, hashes)| Ended::Paused(temp, hashes));
                    }
                }
            }
            Err(StoreError::Cancelled)
        });
        FileUpload {
            feed,
            writer: Some(writer),
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.feed.send(Feed::Chunk(chunk)).await.is_err() {
            // The writer stopped: its error says why.
            return Err(match self.ended().await {
                Ok(_) => StoreError::Cancelled,
                Err(e) => e,
            });
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Stored, StoreError> {
        let _ = self.feed.send(Feed::Finish).await;
        match self.ended().await? {
            Ended::Finished(stored) => Ok(stored),
            Ended::Paused(..) => Err(StoreError::Cancelled),
        }
    }

    /// Once every chunk sent is written, stops and keeps the temporary file (`FsStore::
    /// resume`); returns it and where its hashes stand.
    pub async fn pause(mut self) -> Result<(PathBuf, HashState), StoreError> {
        let _ = self.feed.send(Feed::Pause).await;
        match self.ended().await? {
            Ended::Paused(temp, hashes) => Ok((temp, hashes)),
            Ended::Finished(_) => Err(StoreError::Cancelled),
        }
    }

    /// Removes what was written, and returns once it is gone.
    pub async fn abort(mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.feed, closed));
        let _ = self.ended().await;
    }

    async fn ended(&mut self) -> Result<Ended, StoreError> {
        match self.writer.take() {
            Some(writer) => writer.await.map_err(|e| StoreError::Io {
                path: "writer thread".into(),
                source: io::Error::other(e.to_string()),
            })?,
            None => Err(StoreError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dirs: &[(&Path, i64, bool)]) -> FsStore {
        FsStore::open(
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
        assert_eq!(store.remove_orphans(&[]), 1);
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
        upload.write(&Bytes::from_static(b"abc")).unwrap();
        let stored = upload.finish().unwrap();
        assert_eq!(
            stored.location,
            format!("file://{}", high.join("img").display())
        );
        assert_eq!(stored.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert!(stored.hash.starts_with("ddaf35a193617aba"));
        assert_eq!(fs::read(high.join("img")).unwrap(), b"abc");
        assert!(store.file_of(&stored.location).is_ok());
        assert!(store.file_of("file:///etc/passwd").is_err());
        store.delete(&stored.location).unwrap();
        assert!(!high.join("img").exists());
    }

    /// A paused upload carried on from its temporary file and its hashes' state: what the
    /// old process wrote past the bytes it recorded is cut, and the result is the upload's
    /// as if it had never paused. Another image's file, one outside the store, or hashes of
    /// another length are refused.
    #[test]
    fn a_paused_upload_is_resumed_from_its_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let store = store(&[(root.path(), 1, false)]);
        let mut upload = store.begin("img", None).unwrap();
        upload.write(&Bytes::from_static(b"ab")).unwrap();
        let (temp, hashes) = upload.pause().unwrap();
        assert!(temp.exists(), "a paused upload keeps its file");
        fs::OpenOptions::new()
            .append(true)
            .open(&temp)
            .unwrap()
            .write_all(b"written after the record")
            .unwrap();
        assert!(store.resume("other", &temp, 2, &hashes).is_err());
        let outside = root.path().join("elsewhere");
        fs::write(&outside, b"ab").unwrap();
        assert!(store.resume("img", &outside, 2, &hashes).is_err());
        assert!(store.resume("img", &temp, 1, &hashes).is_err());
        let mut resumed = store.resume("img", &temp, 2, &hashes).unwrap();
        resumed.write(&Bytes::from_static(b"c")).unwrap();
        let stored = resumed.finish().unwrap();
        assert_eq!(stored.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert!(stored.hash.starts_with("ddaf35a193617aba"));
        assert_eq!(fs::read(root.path().join("img")).unwrap(), b"abc");
    }

    #[test]
    fn an_abandoned_upload_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = store(&[(root.path(), 1, false)]);
        let mut upload = store.begin("img", None).unwrap();
        upload.write(&Bytes::from_static(b"partial")).unwrap();
        drop(upload);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let leftover = store.begin("img2", None).unwrap();
        std::mem::forget(leftover);
        assert_eq!(store.remove_orphans(&[]), 1);
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
