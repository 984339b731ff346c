//! A hit: an entry's data, or a range of it, read from disk a block at a time, each block
//! checked against the CRC its fill recorded. A block that is not what was written (a disk
//! that lies, a file changed behind the cache's back) drops the entry, and the rest of the
//! range comes from the store through the caller's `Fallback`: the client still gets the
//! image's bytes.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::{BLOCK, ImageCache, Meta, Wanted, now, safe_id};
use crate::store::ByteStream;

/// Reads the inclusive byte range `(first, last)` of the image from the store.
pub type Fallback = Box<dyn FnOnce(u64, u64) -> BoxFuture<'static, io::Result<ByteStream>> + Send>;

impl ImageCache {
    /// `wanted`'s data (or its inclusive `range`) from its entry, counted as a hit; `None`
    /// when there is no entry of the image's data as it is now (an entry of other data, the
    /// image's data having changed, goes).
    pub fn hit(
        self: &Arc<Self>,
        wanted: &Wanted,
        range: Option<(u64, u64)>,
        fallback: Fallback,
    ) -> Option<ByteStream> {
        if !safe_id(&wanted.id) {
            return None;
        }
        let meta = {
            let mut state = self.state();
            let entry = state.entries.get_mut(&wanted.id)?;
            if entry.meta.size == wanted.size && entry.meta.checksum == wanted.checksum {
                entry.usage.hits += 1;
                entry.usage.last_accessed = now();
                Some(entry.meta.clone())
            } else {
                None
            }
        };
        let Some(meta) = meta else {
            self.remove(&wanted.id);
            tracing::info!(image_id = %wanted.id, "image cache entry of other data dropped");
            return None;
        };
        self.dirty.store(true, Ordering::Relaxed);
        let file = match std::fs::File::open(self.dir.join("data").join(&wanted.id)) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(image_id = %wanted.id, error = %e, "image cache entry unreadable; dropped");
                self.remove(&wanted.id);
                return None;
            }
        };
        tracing::info!(image_id = %wanted.id, cache = "hit", "image served from the cache");
        let (next, end) = match range {
            Some((first, last)) => (first, last + 1),
            None => (0, meta.size),
        };
        let reader = HitReader {
            cache: self.clone(),
            id: wanted.id.clone(),
            meta,
            file: Some(Arc::new(file)),
            next,
            end,
            fallback: Some(fallback),
            rest: None,
        };
        Some(
            futures_util::stream::unfold(reader, |mut reader| async move {
                reader.next().await.map(|item| (item, reader))
            })
            .boxed(),
        )
    }
}

struct HitReader {
    cache: Arc<ImageCache>,
    id: String,
    meta: Arc<Meta>,
    file: Option<Arc<std::fs::File>>,
    /// The next byte to send, and one past the last.
    next: u64,
    end: u64,
    fallback: Option<Fallback>,
    /// The store's stream, once a block failed its check.
    rest: Option<ByteStream>,
}

impl HitReader {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if let Some(rest) = &mut self.rest {
            return rest.next().await;
        }
        if self.next >= self.end {
            return None;
        }
        let block = self.next / BLOCK;
        let start = block * BLOCK;
        let length = BLOCK.min(self.meta.size - start);
        let expected = usize::try_from(block)
            .ok()
            .and_then(|b| self.meta.blocks.get(b).copied());
        let file = self.file.clone()?;
        let read = tokio::task::spawn_blocking(move || {
            let mut bytes = vec![0u8; usize::try_from(length).map_err(io::Error::other)?];
            file.read_exact_at(&mut bytes, start)?;
            Ok::<_, io::Error>(bytes)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|read| read);
        match read {
            Ok(bytes) if Some(crc32fast::hash(&bytes)) == expected => {
                let from = usize::try_from(self.next - start).unwrap_or(0);
                let upto = usize::try_from(self.end.min(start + length) - start).unwrap_or(0);
                self.next = start + upto as u64;
                Some(Ok(Bytes::from(bytes).slice(from..upto)))
            }
            outcome => {
                let why = match outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("block {block} failed its check"),
                };
                tracing::warn!(image_id = %self.id, reason = %why, "image cache entry corrupt; dropped, the rest read from the store");
                self.file = None;
                self.cache.remove(&self.id);
                let fallback = self.fallback.take()?;
                match fallback(self.next, self.end - 1).await {
                    Ok(rest) => {
                        self.rest = Some(rest);
                        Box::pin(self.next()).await
                    }
                    Err(e) => Some(Err(e)),
                }
            }
        }
    }
}
