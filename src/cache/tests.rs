//! The cache on a real directory: fills and hits byte-exact, one store read for concurrent
//! misses, nothing kept from a fill its reader left or from data that is not the image's, a
//! corrupt block answered from the store, least recently used entries pruned, and the entries
//! found again by a new process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

use super::*;
use crate::store::ByteStream;

fn data(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn wanted(id: &str, data: &[u8]) -> Wanted {
    Wanted {
        id: id.into(),
        size: data.len() as u64,
        checksum: hex::encode(Md5::digest(data)),
    }
}

use md5::{Digest, Md5};

/// The store: `data` in chunks of 100 KiB, counting how often it is opened.
fn source(data: &[u8], opened: &Arc<AtomicUsize>) -> ByteStream {
    opened.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<io::Result<bytes::Bytes>> = data
        .chunks(100 << 10)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

fn settings(dir: &Path, max_size: u64) -> CacheSettings {
    CacheSettings {
        dir: dir.to_path_buf(),
        max_size,
        stall_time: Duration::from_secs(3600),
    }
}

async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

fn no_fallback() -> Fallback {
    Box::new(|_, _| async { Err(io::Error::other("no store here")) }.boxed())
}

/// Waits until the fill of `id` is over (admitted or dropped).
async fn settled(cache: &ImageCache, id: &str) {
    for _ in 0..500 {
        if !cache.state().fills.contains_key(id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the fill of {id} never ended");
}

/// A cache in `dir` on this test's runtime.
fn open(dir: &Path, max_size: u64) -> Arc<ImageCache> {
    ImageCache::shared(&settings(dir, max_size), tokio::runtime::Handle::current()).unwrap()
}

/// A miss of `want` read whole from `image` (counted in `opened`), once its fill is over;
/// the bytes the reader got.
async fn read_once(
    cache: &Arc<ImageCache>,
    want: &Wanted,
    image: &[u8],
    opened: &Arc<AtomicUsize>,
) -> Vec<u8> {
    let stream = cache
        .read_through(want, || async { Ok::<_, io::Error>(source(image, opened)) })
        .await
        .unwrap();
    let read = collect(stream).await.unwrap();
    settled(cache, &want.id).await;
    read
}

use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_fills_once_and_hits_are_byte_exact_ranges_included() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let image = data(5 << 20 | 12345, 1);
    let want = wanted("img-1", &image);
    let opened = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, want, image, opened) =
                (cache.clone(), want.clone(), image.clone(), opened.clone());
            tokio::spawn(async move {
                let stream = cache
                    .read_through(&want, || async {
                        Ok::<_, io::Error>(source(&image, &opened))
                    })
                    .await
                    .unwrap();
                collect(stream).await.unwrap()
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), image);
    }
    settled(&cache, "img-1").await;
    assert!(
        opened.load(Ordering::SeqCst) <= 2,
        "the store was read {} times",
        opened.load(Ordering::SeqCst)
    );
    assert!(cache.contains("img-1"));

    let whole = cache.hit(&want, None, no_fallback()).expect("a hit");
    assert_eq!(collect(whole).await.unwrap(), image);
    for (first, last) in [
        (0, 0),
        (1 << 20, (2 << 20) - 1),
        (12345, 4 << 20),
        (image.len() as u64 - 7, image.len() as u64 - 1),
    ] {
        let part = cache
            .hit(&want, Some((first, last)), no_fallback())
            .expect("a hit");
        assert_eq!(
            collect(part).await.unwrap(),
            &image[first as usize..=last as usize]
        );
    }
    assert_eq!(cache.entries()[0].hits, 1 + 4);

    // The image's data changed: the entry is not its data any more.
    let changed = Wanted {
        checksum: "0".repeat(32),
        ..want.clone()
    };
    assert!(cache.hit(&changed, None, no_fallback()).is_none());
    assert!(!cache.contains("img-1"));
}

/// The store's data runs ahead of a slow reader by more than the fill keeps in memory: the
/// reader gets its first bytes from memory and the rest from the file, byte-exact, while the
/// other reader and the fill are not held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_far_behind_the_store_reads_the_rest_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let image = data(3 * (16 << 20) + 4321, 2);
    let want = wanted("img-slow", &image);
    let opened = Arc::new(AtomicUsize::new(0));
    let read = |cache: Arc<ImageCache>| {
        let (want, image, opened) = (want.clone(), image.clone(), opened.clone());
        async move {
            cache
                .read_through(&want, || async {
                    Ok::<_, io::Error>(source(&image, &opened))
                })
                .await
                .unwrap()
        }
    };
    let mut fast = read(cache.clone()).await;
    let mut slow = read(cache.clone()).await;
    let first = slow.next().await.unwrap().unwrap();
    let mut fast_got = Vec::new();
    while let Some(chunk) = fast.next().await {
        fast_got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(fast_got, image);
    let mut slow_got = first.to_vec();
    slow_got.extend(collect(slow).await.unwrap());
    assert_eq!(slow_got, image);
    settled(&cache, "img-slow").await;
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert!(cache.contains("img-slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_kept_from_a_left_fill_or_from_data_that_is_not_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let image = data(4 << 20, 2);
    let opened = Arc::new(AtomicUsize::new(0));

    // The reader leaves after the first chunk; the store keeps sending slowly meanwhile.
    let want = wanted("left", &image);
    let slow: ByteStream = {
        let chunks: Vec<bytes::Bytes> = image
            .chunks(64 << 10)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        futures_util::stream::iter(chunks)
            .then(|c| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, io::Error>(c)
            })
            .boxed()
    };
    let mut stream = cache
        .read_through(&want, || async { Ok::<_, io::Error>(slow) })
        .await
        .unwrap();
    assert!(stream.next().await.is_some());
    drop(stream);
    settled(&cache, "left").await;
    assert!(!cache.contains("left"));
    assert!(names(&dir.path().join("incomplete")).is_empty());

    // The store's bytes are not the image's: served, never kept.
    let lie = Wanted {
        checksum: "f".repeat(32),
        ..wanted("lie", &image)
    };
    assert_eq!(read_once(&cache, &lie, &image, &opened).await, image);
    assert!(!cache.contains("lie"));
    assert!(names(&dir.path().join("incomplete")).is_empty());
    assert!(names(&dir.path().join("data")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_is_answered_from_the_store_and_drops_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let image = data(3 << 20 | 99, 3);
    let want = wanted("bad", &image);
    let opened = Arc::new(AtomicUsize::new(0));
    read_once(&cache, &want, &image, &opened).await;
    // One byte of the second block changes on disk.
    let path = dir.path().join("data").join("bad");
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[(1 << 20) + 5] ^= 0xff;
    std::fs::write(&path, on_disk).unwrap();

    let asked = Arc::new(std::sync::Mutex::new(None));
    let (from_store, asked_by) = (image.clone(), asked.clone());
    let fallback: Fallback = Box::new(move |first, last| {
        *asked_by.lock().unwrap() = Some((first, last));
        let rest = from_store[first as usize..=last as usize].to_vec();
        async move { Ok(futures_util::stream::iter([Ok(bytes::Bytes::from(rest))]).boxed()) }
            .boxed()
    });
    let served = collect(
        cache
            .hit(&want, Some((100, image.len() as u64 - 1)), fallback)
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(served, &image[100..]);
    assert_eq!(
        *asked.lock().unwrap(),
        Some((1 << 20, image.len() as u64 - 1))
    );
    assert!(!cache.contains("bad"));
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_entries_go_and_a_new_process_finds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let images: Vec<(Wanted, Vec<u8>)> = (0..3u8)
        .map(|n| {
            let image = data(2 << 20, n);
            (wanted(&format!("lru-{n}"), &image), image)
        })
        .collect();
    {
        let cache = open(dir.path(), 5 << 20);
        for (want, image) in &images[..2] {
            read_once(&cache, want, image, &opened).await;
        }
        // lru-0 is used again: lru-1 is now the least recently used.
        collect(cache.hit(&images[0].0, None, no_fallback()).unwrap())
            .await
            .unwrap();
        let (want, image) = &images[2];
        read_once(&cache, want, image, &opened).await;
        let kept: Vec<String> = cache.entries().into_iter().map(|e| e.image_id).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(!kept.contains(&"lru-1".to_string()), "{kept:?}");
        // A smaller cache by reload keeps the most recently used one.
        cache.configure(3 << 20, Duration::from_secs(3600));
        assert_eq!(cache.entries().len(), 1);
        assert!(cache.contains("lru-2"));
    }
    // Another process: the index is gone, the entries are not; a data file without its
    // metadata and a stale fill are removed.
    std::fs::remove_file(dir.path().join("index.json")).ok();
    std::fs::write(dir.path().join("data").join("orphan"), b"x").unwrap();
    let stale = dir.path().join("incomplete").join("old.1.1");
    std::fs::write(&stale, b"x").unwrap();
    let quick = CacheSettings {
        stall_time: Duration::ZERO,
        ..settings(dir.path(), 3 << 20)
    };
    let cache = ImageCache::shared(&quick, tokio::runtime::Handle::current()).unwrap();
    assert!(cache.contains("lru-2"));
    assert!(!dir.path().join("data").join("orphan").exists());
    assert!(!stale.exists());
    let served = collect(cache.hit(&images[2].0, None, no_fallback()).unwrap())
        .await
        .unwrap();
    assert_eq!(served, images[2].1);
}
