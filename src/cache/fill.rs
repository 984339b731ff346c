//! A miss: the store's data written into `incomplete/` as it is streamed to every reader that
//! asks meanwhile (each follows the file as it grows), hashed by a follower of its own (so no
//! reader waits for md5), and admitted as an entry only once it is whole and its md5 is the
//! image's checksum. The fill runs on the
//! cache's runtime and stops when its last reader leaves before the end.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BLOCK, Entry, ImageCache, Meta, Usage, Wanted, now, safe_id, write_atomically};
use crate::store::ByteStream;

/// Sent to readers at most this many bytes at a time.
const CHUNK: u64 = 1 << 20;

pub(super) struct Fill {
    wanted: Wanted,
    partial: PathBuf,
    progress: watch::Sender<Progress>,
    /// Readers following the fill; changed only under the cache's lock.
    readers: std::sync::atomic::AtomicUsize,
    cancel: CancellationToken,
    /// The entry was removed while it filled: readers get their bytes, the cache keeps
    /// nothing.
    discarded: AtomicBool,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Bytes in the file, readable by every reader.
    written: u64,
    done: Option<Result<(), String>>,
}

impl Fill {
    pub(super) fn partial(&self) -> &Path {
        &self.partial
    }

    /// Keeps the fill from becoming an entry; its readers still get their bytes.
    pub(super) fn discard(&self) {
        self.discarded.store(true, Ordering::Relaxed);
    }
}

/// md5 of the whole data and CRC-32 of each block, as it is written.
struct Hashes {
    md5: Md5,
    block: crc32fast::Hasher,
    in_block: u64,
    blocks: Vec<u32>,
}

impl Hashes {
    fn new() -> Hashes {
        Hashes {
            md5: Md5::new(),
            block: crc32fast::Hasher::new(),
            in_block: 0,
            blocks: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.md5.update(data);
        while !data.is_empty() {
            let room = usize::try_from(BLOCK - self.in_block).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.update(now);
            self.in_block += now.len() as u64;
            if self.in_block == BLOCK {
                let full = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
                self.blocks.push(full.finalize());
                self.in_block = 0;
            }
            data = rest;
        }
    }

    fn finish(mut self, size: u64) -> Meta {
        if self.in_block > 0 {
            self.blocks.push(self.block.finalize());
        }
        Meta {
            serial: 0,
            size,
            checksum: hex::encode(self.md5.finalize()),
            last_modified: now(),
            blocks: self.blocks,
        }
    }
}

impl ImageCache {
    /// `wanted`'s whole data from the store (`open` reads it), streamed while it fills the
    /// cache; a fill of the same image under way is joined instead, and the store is not
    /// read again. Data larger than the cache, or that cannot be written here, is only
    /// streamed.
    pub async fn read_through<F, Fut, E>(
        self: &Arc<Self>,
        wanted: &Wanted,
        open: F,
    ) -> Result<ByteStream, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ByteStream, E>>,
    {
        if !safe_id(&wanted.id) || !self.fits(wanted.size) {
            return open().await;
        }
        let (fill, reader, writer) = match self.register(wanted) {
            Registered::Joined(reader) => return Ok(reader),
            Registered::Unavailable => return open().await,
            Registered::New {
                fill,
                reader,
                writer,
            } => (fill, reader, writer),
        };
        match open().await {
            Ok(source) => {
                self.runtime
                    .spawn(self.clone().run_fill(fill, source, writer));
                Ok(reader)
            }
            Err(e) => {
                // Readers that joined meanwhile fail as the store did.
                self.end_fill(&fill, Err("the store could not be read".into()));
                let partial = fill.partial.clone();
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(partial)).await;
                Err(e)
            }
        }
    }

    /// A reader of the fill of `wanted` under way, or a new fill registered (before the store
    /// is asked, so that concurrent misses ask it once) with its first reader.
    fn register(self: &Arc<Self>, wanted: &Wanted) -> Registered {
        let mut state = self.state();
        if let Some(fill) = state.fills.get(&wanted.id).cloned() {
            if fill.wanted != *wanted || fill.cancel.is_cancelled() {
                return Registered::Unavailable;
            }
            return match std::fs::File::open(&fill.partial) {
                Ok(file) => {
                    drop(state);
                    Registered::Joined(self.follow(fill, file))
                }
                Err(_) => Registered::Unavailable,
            };
        }
        state.next_fill += 1;
        let partial = self.dir.join("incomplete").join(format!(
            "{}.{}.{}",
            wanted.id,
            std::process::id(),
            state.next_fill
        ));
        let (writer, reader) = match std::fs::File::create(&partial)
            .and_then(|writer| Ok((writer, std::fs::File::open(&partial)?)))
        {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(image_id = %wanted.id, error = %e, "image cache cannot be filled; served from the store");
                return Registered::Unavailable;
            }
        };
        let fill = Arc::new(Fill {
            wanted: wanted.clone(),
            partial,
            progress: watch::Sender::new(Progress::default()),
            readers: std::sync::atomic::AtomicUsize::new(0),
            cancel: CancellationToken::new(),
            discarded: AtomicBool::new(false),
        });
        state.fills.insert(wanted.id.clone(), fill.clone());
        drop(state);
        tracing::info!(image_id = %wanted.id, cache = "miss", "image cache filling from the store");
        Registered::New {
            reader: self.follow(fill.clone(), reader),
            fill,
            writer,
        }
    }

    /// Takes `fill` out of the fills under way and tells its readers how it ended.
    fn end_fill(&self, fill: &Arc<Fill>, outcome: Result<(), String>) {
        {
            let mut state = self.state();
            if state
                .fills
                .get(&fill.wanted.id)
                .is_some_and(|f| Arc::ptr_eq(f, fill))
            {
                state.fills.remove(&fill.wanted.id);
            }
        }
        fill.progress.send_modify(|p| p.done = Some(outcome));
    }

    /// The fill itself: copy, check, admit; then every reader is told how it ended.
    async fn run_fill(self: Arc<Self>, fill: Arc<Fill>, source: ByteStream, writer: std::fs::File) {
        let hasher = std::fs::File::open(&fill.partial)
            .map(|file| self.follower(fill.clone(), file, false))
            .map_err(|e| format!("the fill cannot be read back: {e}"));
        let copied = match hasher {
            Ok(hasher) => tokio::select! {
                copied = async {
                    tokio::try_join!(write(&fill, source, writer), hash(&fill, hasher))
                        .map(|((), meta)| meta)
                } => copied,
                () = fill.cancel.cancelled() => Err("every reader left before the end".to_string()),
            },
            Err(e) => Err(e),
        };
        let outcome = match copied {
            Ok(meta) if !fill.discarded.load(Ordering::Relaxed) => self.admit(&fill, meta).await,
            Ok(_) => Err("removed while it filled".to_string()),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(image_id = %fill.wanted.id, size = fill.wanted.size, "image cache entry added")
            }
            Err(why) => {
                let partial = fill.partial.clone();
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(partial)).await;
                tracing::info!(image_id = %fill.wanted.id, reason = %why, "image cache fill dropped");
            }
        }
        // Readers of a discarded or dropped fill that got every byte end well: what they
        // read is the store's data either way; a fill that failed mid-way fails them.
        let whole = fill.progress.borrow().written == fill.wanted.size;
        let told = match outcome {
            Err(_) if whole && !fill.cancel.is_cancelled() => Ok(()),
            other => other,
        };
        self.end_fill(&fill, told);
    }

    /// Makes a checked fill an entry: its metadata, then its data renamed into `data/`.
    async fn admit(self: &Arc<Self>, fill: &Arc<Fill>, mut meta: Meta) -> Result<(), String> {
        meta.serial = {
            let mut state = self.state();
            state.next_serial += 1;
            state.next_serial - 1
        };
        let (dir, id, partial) = (
            self.dir.clone(),
            fill.wanted.id.clone(),
            fill.partial.clone(),
        );
        let meta = Arc::new(meta);
        let written = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            write_atomically(
                &dir.join("meta").join(format!("{id}.json")),
                &serde_json::to_vec(&*written).map_err(io::Error::other)?,
            )?;
            std::fs::rename(&partial, dir.join("data").join(&id))?;
            std::fs::File::open(dir.join("data"))?.sync_all()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the entry could not be written: {e}"))?;
        {
            let mut state = self.state();
            let last_accessed = meta.last_modified;
            state.entries.insert(
                fill.wanted.id.clone(),
                Entry {
                    meta,
                    usage: Usage {
                        hits: 0,
                        last_accessed,
                    },
                },
            );
        }
        self.dirty.store(true, Ordering::Relaxed);
        let cache = self.clone();
        let _ = tokio::task::spawn_blocking(move || cache.prune()).await;
        Ok(())
    }

    /// Follows `fill` through its own `file`; a `counted` one is a reader, whose leaving may
    /// stop the fill.
    fn follower(self: &Arc<Self>, fill: Arc<Fill>, file: std::fs::File, counted: bool) -> Follower {
        let guard = counted.then(|| {
            fill.readers.fetch_add(1, Ordering::Relaxed);
            ReaderGuard {
                cache: self.clone(),
                fill: fill.clone(),
            }
        });
        Follower {
            progress: fill.progress.subscribe(),
            size: fill.wanted.size,
            fill,
            _guard: guard,
            file: Arc::new(file),
            position: 0,
            finished: false,
        }
    }

    /// A reader of `fill` through its own `file`, counted until it is dropped.
    fn follow(self: &Arc<Self>, fill: Arc<Fill>, file: std::fs::File) -> ByteStream {
        let follower = self.follower(fill, file, true);
        futures_util::stream::unfold(follower, |mut follower| async move {
            if follower.finished {
                return None;
            }
            match follower.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), follower)),
                Ok(None) => None,
                Err(e) => {
                    follower.finished = true;
                    Some((Err(e), follower))
                }
            }
        })
        .boxed()
    }
}

enum Registered {
    Joined(ByteStream),
    New {
        fill: Arc<Fill>,
        reader: ByteStream,
        writer: std::fs::File,
    },
    /// No fill can be had: the store is read directly.
    Unavailable,
}

/// Writes `source` into `writer` (on the blocking pool), telling readers how far it got, and
/// syncs it; fails unless the store sent exactly the image's size.
async fn write(fill: &Fill, mut source: ByteStream, writer: std::fs::File) -> Result<(), String> {
    let mut file = Some(writer);
    let mut written: u64 = 0;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_bytes: u64 = 0;
    loop {
        let chunk = source.next().await;
        if let Some(chunk) = chunk.as_ref() {
            let chunk = chunk
                .as_ref()
                .map_err(|e| format!("reading the store failed: {e}"))?;
            pending_bytes += chunk.len() as u64;
            if written + pending_bytes > fill.wanted.size {
                return Err("the store holds more data than the image's size".into());
            }
            pending.push(chunk.clone());
        }
        // Written a block at a time (one hop to the blocking pool per MiB, not per chunk),
        // and whatever is left once the store is done.
        if pending_bytes >= CHUNK || (chunk.is_none() && pending_bytes > 0) {
            let mut sink = file.take().ok_or("the fill lost its file")?;
            let batch = std::mem::take(&mut pending);
            let wrote = tokio::task::spawn_blocking(move || {
                batch
                    .iter()
                    .try_for_each(|piece| sink.write_all(piece))
                    .map(|()| sink)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("writing the cache failed: {e}"))?;
            file = Some(wrote);
            written += std::mem::take(&mut pending_bytes);
            fill.progress.send_modify(|p| p.written = written);
        }
        if chunk.is_none() {
            break;
        }
    }
    if written != fill.wanted.size {
        return Err(format!(
            "the store sent {written} bytes of an image of {}",
            fill.wanted.size
        ));
    }
    let sink = file.take().ok_or("the fill lost its file")?;
    tokio::task::spawn_blocking(move || sink.sync_all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing the cache failed: {e}"))
}

/// Hashes what the fill writes as it is written, following the file like a reader (so the
/// readers never wait for md5); the entry's metadata once it is whole and the image's.
async fn hash(fill: &Fill, mut follower: Follower) -> Result<Meta, String> {
    let mut hashes = Some(Hashes::new());
    while let Some(chunk) = follower.next().await.map_err(|e| e.to_string())? {
        let mut running = hashes.take().ok_or("the fill lost its hashes")?;
        hashes = Some(
            tokio::task::spawn_blocking(move || {
                running.update(&chunk);
                running
            })
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let meta = hashes
        .take()
        .ok_or("the fill lost its hashes")?
        .finish(fill.wanted.size);
    if meta.checksum != fill.wanted.checksum {
        tracing::warn!(image_id = %fill.wanted.id, checksum = %meta.checksum, expected = %fill.wanted.checksum, "the store's data is not the image's: not cached");
        return Err("the data is not the image's (checksum)".into());
    }
    Ok(meta)
}

/// A reader's place in a fill: dropping the last one before the end stops the fill.
struct ReaderGuard {
    cache: Arc<ImageCache>,
    fill: Arc<Fill>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let _state = self.cache.state();
        let left = self.fill.readers.fetch_sub(1, Ordering::Relaxed) == 1;
        // Once the store has sent everything (an HTTP body of known length is dropped as
        // soon as its last byte is out), the fill finishes: only checking and admitting
        // are left.
        let progress = self.fill.progress.borrow();
        if left && progress.done.is_none() && progress.written < self.fill.wanted.size {
            self.fill.cancel.cancel();
        }
    }
}

struct Follower {
    progress: watch::Receiver<Progress>,
    size: u64,
    fill: Arc<Fill>,
    /// Held by a reader (not by the fill's own hashing).
    _guard: Option<ReaderGuard>,
    file: Arc<std::fs::File>,
    position: u64,
    finished: bool,
}

impl Follower {
    /// The next bytes the fill has written, waiting for them if need be.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let (written, done) = {
                let progress = self.progress.borrow_and_update();
                (progress.written, progress.done.clone())
            };
            if self.position == self.size {
                return Ok(None);
            }
            if self.position < written {
                let length = usize::try_from((written - self.position).min(CHUNK))
                    .map_err(io::Error::other)?;
                let (file, at) = (self.file.clone(), self.position);
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut bytes = vec![0u8; length];
                    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, at)?;
                    Ok::<_, io::Error>(bytes)
                })
                .await
                .map_err(io::Error::other)??;
                self.position += length as u64;
                return Ok(Some(bytes.into()));
            }
            match done {
                Some(Ok(())) => return Err(io::Error::other("the image cache fill ended short")),
                Some(Err(why)) => {
                    return Err(io::Error::other(format!(
                        "the image cache fill of {} failed: {why}",
                        self.fill.wanted.id
                    )));
                }
                None => {
                    if self.progress.changed().await.is_err() {
                        return Err(io::Error::other("the image cache fill stopped"));
                    }
                }
            }
        }
    }
}
