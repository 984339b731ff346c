//! The node-local image cache (Glance's image cache): complete copies of image data on local
//! disk in front of every store. A miss is filled from the store while it streams to the
//! client (a tee), once per image however many clients ask at once, and becomes an entry
//! only when its md5 is the image's checksum; a fill whose last reader leaves is dropped, so a
//! partial entry is never kept nor served. A hit is read from disk block by block, each block
//! checked against the CRC its fill recorded; a block that fails drops the entry and the rest
//! is read from the store. Entries go least recently used first past `max_size`.
//!
//! On disk, under its directory: `data/<image>` (entries), `meta/<image>.json` (each entry's
//! size, checksum and block CRCs, written before its data is renamed in: the truth the cache
//! is rebuilt from), `incomplete/` (fills under way) and `index.json` (hits and last access,
//! soft state written by the upkeep). It knows images by id, size and checksum only: whether
//! an image may be served at all is decided before the cache is asked.

mod fill;
mod hit;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use hit::Fallback;

/// Blocks of this size are read, checked and sent one at a time.
const BLOCK: u64 = 1 << 20;
/// How often the index is written (when it changed) and stale fills removed.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// `[cache]` as a generation applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub max_size: u64,
    /// Fills whose file is older than this are removed (a process that died mid-fill).
    pub stall_time: Duration,
}

/// An image as the catalogue has it now: what a cached copy must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub id: String,
    pub size: u64,
    pub checksum: String,
}

/// An entry as the cache API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedImage {
    /// The entry's number in this cache (Glance's centralized driver shows its row id).
    pub id: u64,
    pub image_id: String,
    pub size: u64,
    pub checksum: String,
    pub hits: u64,
    /// Seconds since the epoch.
    pub last_accessed: f64,
    pub last_modified: f64,
}

/// What the fill of an entry recorded beside its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// Numbers the entries of this cache in the order they were admitted.
    #[serde(default)]
    serial: u64,
    size: u64,
    checksum: String,
    last_modified: f64,
    /// CRC-32 of each `BLOCK` of the data, the last one short.
    blocks: Vec<u32>,
}

/// How an entry has been used: `index.json`'s content.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Usage {
    hits: u64,
    last_accessed: f64,
}

struct Entry {
    meta: Arc<Meta>,
    usage: Usage,
}

struct State {
    entries: HashMap<String, Entry>,
    fills: HashMap<String, Arc<fill::Fill>>,
    max_size: u64,
    stall_time: Duration,
    /// Names the next fill's file apart from those of an earlier fill of the same image.
    next_fill: u64,
    /// The number the next admitted entry gets.
    next_serial: u64,
}

pub struct ImageCache {
    dir: PathBuf,
    state: Mutex<State>,
    /// Images queued for prefetching, in order; `queue.json` is written under this lock.
    queue: Mutex<Vec<String>>,
    /// The usage changed since the index was last written.
    dirty: AtomicBool,
    /// Where fills run: a runtime that outlives the generation that started them.
    runtime: tokio::runtime::Handle,
}

/// One live cache per directory in a process: generations that name the same directory share
/// it (its fills and its entries), whatever else their config changed.
static OPEN: Mutex<Vec<(PathBuf, Weak<ImageCache>)>> = Mutex::new(Vec::new());

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Image ids name files here: only what a UUID is made of.
fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl ImageCache {
    /// The cache in `settings.dir` (the live one if this process has it open, with the new
    /// limits applied by `configure` later), or one opened from the disk: entries are read
    /// back from their metadata, files without it removed, and stale fills dropped.
    /// Blocking.
    pub fn shared(
        settings: &CacheSettings,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Arc<ImageCache>> {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, cache)| cache.strong_count() > 0);
        if let Some(cache) = open
            .iter()
            .find(|(dir, _)| *dir == settings.dir)
            .and_then(|(_, cache)| cache.upgrade())
        {
            return Ok(cache);
        }
        let cache = Arc::new(ImageCache::open(settings, runtime)?);
        open.push((settings.dir.clone(), Arc::downgrade(&cache)));
        cache.start_upkeep();
        Ok(cache)
    }

    fn open(settings: &CacheSettings, runtime: tokio::runtime::Handle) -> io::Result<ImageCache> {
        let dir = settings.dir.clone();
        for sub in ["data", "meta", "incomplete"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let usage: HashMap<String, Usage> = std::fs::read(dir.join("index.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut entries = HashMap::new();
        for id in names(&dir.join("meta")) {
            let Some(id) = id.strip_suffix(".json").filter(|id| safe_id(id)) else {
                continue;
            };
            let meta: Option<Meta> = std::fs::read(dir.join("meta").join(format!("{id}.json")))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let data = std::fs::metadata(dir.join("data").join(id)).ok();
            match (meta, data) {
                (Some(meta), Some(data)) if data.len() == meta.size => {
                    let usage = usage.get(id).copied().unwrap_or(Usage {
                        hits: 0,
                        last_accessed: meta.last_modified,
                    });
                    entries.insert(
                        id.to_string(),
                        Entry {
                            meta: Arc::new(meta),
                            usage,
                        },
                    );
                }
                _ => remove_entry_files(&dir, id),
            }
        }
        for id in names(&dir.join("data")) {
            if !entries.contains_key(&id) {
                let _ = std::fs::remove_file(dir.join("data").join(&id));
            }
        }
        let queue: Vec<String> = std::fs::read(dir.join("queue.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|id| safe_id(id))
            .collect();
        let next_serial = entries
            .values()
            .map(|e: &Entry| e.meta.serial)
            .max()
            .unwrap_or(0);
        let cache = ImageCache {
            dir,
            queue: Mutex::new(queue),
            state: Mutex::new(State {
                entries,
                fills: HashMap::new(),
                max_size: settings.max_size,
                stall_time: settings.stall_time,
                next_fill: 0,
                next_serial: next_serial + 1,
            }),
            dirty: AtomicBool::new(true),
            runtime,
        };
        cache.remove_stale_fills();
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a generation's limits (once it serves): entries past the new size go now.
    pub fn configure(&self, max_size: u64, stall_time: Duration) {
        {
            let mut state = self.state();
            state.max_size = max_size;
            state.stall_time = stall_time;
        }
        self.prune();
    }

    /// Every entry, most recently used first.
    pub fn entries(&self) -> Vec<CachedImage> {
        let state = self.state();
        let mut listed: Vec<CachedImage> = state
            .entries
            .iter()
            .map(|(id, entry)| CachedImage {
                id: entry.meta.serial,
                image_id: id.clone(),
                size: entry.meta.size,
                checksum: entry.meta.checksum.clone(),
                hits: entry.usage.hits,
                last_accessed: entry.usage.last_accessed,
                last_modified: entry.meta.last_modified,
            })
            .collect();
        listed.sort_by(|a, b| b.last_accessed.total_cmp(&a.last_accessed));
        listed
    }

    /// Whether an image of `size` bytes may ever be an entry (it fits in `max_size`).
    pub fn fits(&self, size: u64) -> bool {
        size <= self.state().max_size
    }

    pub fn contains(&self, id: &str) -> bool {
        self.state().entries.contains_key(id)
    }

    /// Removes `id`'s entry (and keeps its fill under way from becoming one); whether there
    /// was one.
    pub fn remove(&self, id: &str) -> bool {
        let (removed, fill) = {
            let mut state = self.state();
            (state.entries.remove(id).is_some(), state.fills.remove(id))
        };
        if let Some(fill) = fill {
            fill.discard();
        }
        if removed && safe_id(id) {
            remove_entry_files(&self.dir, id);
            self.dirty.store(true, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every entry; how many.
    pub fn clear(&self) -> usize {
        let ids: Vec<String> = self.state().entries.keys().cloned().collect();
        ids.iter().filter(|id| self.remove(id)).count()
    }

    fn queue_lock(&self) -> MutexGuard<'_, Vec<String>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The images queued for prefetching, in order.
    pub fn queued(&self) -> Vec<String> {
        self.queue_lock().clone()
    }

    /// Queues `id` for prefetching (kept on disk); whether it was not queued already.
    /// Blocking.
    pub fn queue(&self, id: &str) -> io::Result<bool> {
        let mut queue = self.queue_lock();
        if !safe_id(id) || queue.iter().any(|q| q == id) {
            return Ok(false);
        }
        queue.push(id.to_string());
        self.write_queue(&queue)?;
        Ok(true)
    }

    /// Takes `id` off the queue; whether it was on it. Blocking.
    pub fn dequeue(&self, id: &str) -> io::Result<bool> {
        let mut queue = self.queue_lock();
        let before = queue.len();
        queue.retain(|q| q != id);
        if queue.len() == before {
            return Ok(false);
        }
        self.write_queue(&queue)?;
        Ok(true)
    }

    /// Empties the queue; how many it held. Blocking.
    pub fn clear_queue(&self) -> io::Result<usize> {
        let mut queue = self.queue_lock();
        let cleared = queue.len();
        queue.clear();
        self.write_queue(&queue)?;
        Ok(cleared)
    }

    fn write_queue(&self, queue: &[String]) -> io::Result<()> {
        write_atomically(
            &self.dir.join("queue.json"),
            &serde_json::to_vec(queue).map_err(io::Error::other)?,
        )
    }

    /// Drops entries whose data is gone or not of their size, and fills older than
    /// `stall_time` (Glance's `clean`). Blocking.
    pub fn clean(&self) {
        let broken: Vec<String> = self
            .state()
            .entries
            .iter()
            .filter(|(id, entry)| {
                std::fs::metadata(self.dir.join("data").join(id))
                    .map_or(true, |m| m.len() != entry.meta.size)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in broken {
            self.remove(&id);
        }
        self.remove_stale_fills();
    }

    /// Least recently used entries go until the cache is within `max_size`; returns how many
    /// entries and bytes went.
    pub fn prune(&self) -> (usize, u64) {
        let victims: Vec<(String, u64)> = {
            let mut state = self.state();
            let mut total: u64 = state.entries.values().map(|e| e.meta.size).sum();
            let mut by_age: Vec<(f64, String, u64)> = state
                .entries
                .iter()
                .map(|(id, e)| (e.usage.last_accessed, id.clone(), e.meta.size))
                .collect();
            by_age.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut victims = Vec::new();
            for (_, id, size) in by_age {
                if total <= state.max_size {
                    break;
                }
                state.entries.remove(&id);
                total -= size;
                victims.push((id, size));
            }
            victims
        };
        for (id, _) in &victims {
            remove_entry_files(&self.dir, id);
        }
        if !victims.is_empty() {
            self.dirty.store(true, Ordering::Relaxed);
            tracing::info!(entries = victims.len(), "image cache pruned");
        }
        (victims.len(), victims.iter().map(|(_, size)| size).sum())
    }

    /// Fills older than `stall_time` that no fill of this process owns. Blocking.
    fn remove_stale_fills(&self) {
        let (stall_time, live): (Duration, Vec<PathBuf>) = {
            let state = self.state();
            (
                state.stall_time,
                state
                    .fills
                    .values()
                    .map(|f| f.partial().to_path_buf())
                    .collect(),
            )
        };
        let incomplete = self.dir.join("incomplete");
        for name in names(&incomplete) {
            let path = incomplete.join(&name);
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= stall_time);
            if stale && !live.contains(&path) {
                let _ = std::fs::remove_file(&path);
                tracing::info!(file = %path.display(), "stale image cache fill removed");
            }
        }
    }

    /// Writes the index when usage changed. Blocking.
    fn write_index(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let usage: HashMap<String, Usage> = self
            .state()
            .entries
            .iter()
            .map(|(id, e)| (id.clone(), e.usage))
            .collect();
        let written = write_atomically(
            &self.dir.join("index.json"),
            &serde_json::to_vec(&usage).map_err(io::Error::other)?,
        );
        if written.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Every `UPKEEP_EVERY` while the cache lives: the index, stale fills.
    fn start_upkeep(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                let done = tokio::task::spawn_blocking(move || {
                    cache.remove_stale_fills();
                    cache.write_index()
                })
                .await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "image cache index not written");
                }
            }
        });
    }
}

impl Drop for ImageCache {
    fn drop(&mut self) {
        if let Err(e) = self.write_index() {
            tracing::warn!(error = %e, "image cache index not written");
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_entry_files(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(dir.join("data").join(id));
    let _ = std::fs::remove_file(dir.join("meta").join(format!("{id}.json")));
}

/// `bytes` at `path`, whole or not at all: a temporary file synced, then renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests;
