//! The image cache through the real binary over real sockets: turned on, resized and off by
//! reload while clients download (none fails, every byte right); one store read for
//! concurrent misses; a hit served from the cache (its log line), byte-exact whole and in
//! ranges; a corrupted entry answered right from the store; a client that leaves mid-miss
//! leaving no partial entry; a deactivated or deleted image never served from it; and a warm cache
//! found again after a restart.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{
    Conn, FakeSystemd, PATIENCE, SOCKET_UNIT_LISTEN, create_image, md5_hex, upload_image,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HIT: &str = "image served from the cache";
const MISS: &str = "image cache filling from the store";

fn config(cache: &str) -> String {
    format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{cache}")
}

fn image_data(size: usize, seed: u32) -> Vec<u8> {
    (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13 ^ seed) as u8)
        .collect()
}

async fn uploaded(addr: SocketAddr, data: &[u8]) -> String {
    let id = create_image(addr).await;
    assert_eq!(upload_image(addr, &id, data).await.status, 204);
    id
}

async fn download(addr: SocketAddr, id: &str) -> Vec<u8> {
    let reply = Conn::open(addr)
        .await
        .expect("connect")
        .get(&format!("/v2/images/{id}/file"))
        .await
        .expect("answered");
    assert_eq!(reply.status, 200);
    reply.body.to_vec()
}

fn cached(state: &Path) -> Vec<String> {
    let mut names = support::file_names(&state.join("cache").join("data"));
    names.sort();
    names
}

fn count(logs: &str, line: &str) -> usize {
    logs.matches(line).count()
}

/// Waits until `done` holds, or fails the test.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_turn_the_cache_on_resize_it_and_turn_it_off_while_clients_download() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = sd.path("state");
    let images: Vec<(String, Vec<u8>)> = {
        let mut made = Vec::new();
        for (n, size) in [(1, 2 << 20), (2, 3 << 20), (3, 5 << 20)] {
            let data = image_data(size, n);
            made.push((uploaded(addr, &data).await, data));
        }
        made
    };
    let images = Arc::new(images);
    let (stop, done, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let (images, stop, done, failed) =
                (images.clone(), stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut turn = n;
                while !stop.load(Ordering::SeqCst) {
                    let (id, data) = &images[turn % images.len()];
                    turn += 1;
                    let reply = match Conn::open(addr).await {
                        Ok(mut conn) => conn.get(&format!("/v2/images/{id}/file")).await,
                        Err(e) => Err(e.to_string()),
                    };
                    match reply {
                        Ok(reply) if reply.status == 200 && reply.body == data[..] => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    let after = |n: usize| {
        let done = done.clone();
        let from = done.load(Ordering::SeqCst);
        async move {
            eventually("downloads go on", || {
                done.load(Ordering::SeqCst) >= from + n
            })
            .await
        }
    };
    after(10).await;

    sd.write_config(&config("[cache]\nenabled = true\nmax_size = \"64MiB\"\n"));
    sd.reload().await;
    after(30).await;
    assert_eq!(cached(&state).len(), 3, "every image is cached");
    assert!(
        count(&sd.logs(), HIT) > 0,
        "downloads are served from the cache"
    );

    // 4 MiB holds the 3 MiB image or the 2 MiB one, not both; the 5 MiB one never fits.
    sd.write_config(&config("[cache]\nenabled = true\nmax_size = \"4MiB\"\n"));
    sd.reload().await;
    after(30).await;
    let sizes = |state: &Path| -> u64 {
        cached(state)
            .iter()
            .map(|name| {
                std::fs::metadata(state.join("cache/data").join(name)).map_or(0, |m| m.len())
            })
            .sum()
    };
    assert!(sizes(&state) <= 4 << 20, "pruned to the new size");

    sd.write_config(&config("[cache]\nenabled = false\n"));
    sd.reload().await;
    after(10).await;
    let hits_when_off = count(&sd.logs(), HIT);
    after(20).await;
    assert_eq!(
        count(&sd.logs(), HIT),
        hits_when_off,
        "no hit once the cache is off"
    );
    assert!(!cached(&state).is_empty(), "the files stay");

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no download failed");
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misses_fill_once_hits_are_right_and_nothing_wrong_is_ever_served() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("[cache]\nenabled = true\n"));
    sd.start().await;
    let state = sd.path("state");

    // Concurrent first downloads: one fill, every byte right.
    let first = image_data(6 << 20, 11);
    let id = uploaded(addr, &first).await;
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let id = id.clone();
            tokio::spawn(async move { download(addr, &id).await })
        })
        .collect();
    for reader in readers {
        assert_eq!(md5_hex(&reader.await.expect("reader")), md5_hex(&first));
    }
    eventually("the entry is there", || cached(&state) == [id.clone()]).await;
    assert_eq!(count(&sd.logs(), MISS), 1, "one store read for 8 misses");
    assert_eq!(download(addr, &id).await, first);
    assert_eq!(count(&sd.logs(), HIT), 1);
    let range = support::download(addr, &id, Some("bytes=1048570-2097160")).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, first[1_048_570..=2_097_160]);

    // A byte of the entry changes on disk: the client still gets the image's bytes.
    let entry = state.join("cache/data").join(&id);
    let mut on_disk = std::fs::read(&entry).expect("entry");
    on_disk[(2 << 20) + 3] ^= 0x5a;
    std::fs::write(&entry, on_disk).expect("write");
    assert_eq!(download(addr, &id).await, first);
    assert!(!entry.exists(), "the corrupt entry is dropped");
    assert_eq!(download(addr, &id).await, first, "a miss again");
    eventually("filled again", || entry.exists()).await;
    assert_eq!(download(addr, &id).await, first);

    // Deactivated: never from the cache; reactivated: from it again.
    let hits = count(&sd.logs(), HIT);
    let (status, _) = call(addr, "POST", &format!("/v2/images/{id}/actions/deactivate")).await;
    assert_eq!(status, 204);
    assert_eq!(
        download(addr, &id).await,
        first,
        "an admin still downloads it"
    );
    assert_eq!(count(&sd.logs(), HIT), hits, "not from the cache");
    let (status, _) = call(addr, "POST", &format!("/v2/images/{id}/actions/reactivate")).await;
    assert_eq!(status, 204);
    assert_eq!(download(addr, &id).await, first);
    assert_eq!(count(&sd.logs(), HIT), hits + 1);

    // Deleted: its entry goes with it.
    let (status, _) = call(addr, "DELETE", &format!("/v2/images/{id}")).await;
    assert_eq!(status, 204);
    assert!(cached(&state).is_empty());

    // A client that leaves mid-miss leaves no entry and no partial file.
    let big = image_data(48 << 20, 12);
    let left = uploaded(addr, &big).await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    raw.write_all(format!("GET /v2/images/{left}/file HTTP/1.1\r\nHost: glint\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut some = vec![0u8; 256 << 10];
    raw.read_exact(&mut some)
        .await
        .expect("the download starts");
    drop(raw);
    let incomplete = state.join("cache/incomplete");
    eventually("the partial fill is removed", || {
        support::file_names(&incomplete).is_empty()
    })
    .await;
    // The fill does not wait for its reader: it may have had every byte from the store
    // before the client left, and then it is a whole entry; never a partial one.
    if cached(&state).contains(&left) {
        let entry = std::fs::read(state.join("cache/data").join(&left)).expect("entry");
        assert_eq!(md5_hex(&entry), md5_hex(&big), "only a whole entry");
    }

    // A warm cache is found again by the next process.
    let warm = image_data(3 << 20, 13);
    let kept = uploaded(addr, &warm).await;
    assert_eq!(download(addr, &kept).await, warm);
    eventually("the entry is there", || cached(&state).contains(&kept)).await;
    assert_eq!(sd.stop().await, 0);
    sd.start().await;
    let hits = count(&sd.logs(), HIT);
    assert_eq!(download(addr, &kept).await, warm);
    assert_eq!(count(&sd.logs(), HIT), hits + 1, "a hit after the restart");
    assert_eq!(sd.stop().await, 0);
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, bytes::Bytes) {
    let reply = Conn::open(addr)
        .await
        .expect("connect")
        .send(method, path, None, bytes::Bytes::new())
        .await
        .expect("answered");
    (reply.status, reply.body)
}

async fn json_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let reply = Conn::open(addr)
        .await
        .expect("connect")
        .send_with(method, path, headers, bytes::Bytes::new())
        .await
        .expect("answered");
    let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, value)
}

fn version_ids(document: &serde_json::Value) -> Vec<String> {
    document["versions"]
        .as_array()
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Glance's cache API: 404 and no cache versions while the cache is off; with it on, the
/// versions document lists 2.14–2.18, an image queued by `PUT` is prefetched (the queue is
/// kept on disk, so what a stopped process left is prefetched by the next), listed, removed
/// one by one or cleared by target, and pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_api_queues_prefetches_lists_and_clears() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let off = support::get_once(addr, "/v2/cache")
        .await
        .expect("answered");
    let body = String::from_utf8_lossy(&off.body);
    assert_eq!(off.status, 404);
    assert!(
        body.contains("Caching via API is not supported at this site."),
        "{body}"
    );
    let (_, versions) = json_call(addr, "GET", "/versions", &[]).await;
    assert!(!version_ids(&versions).contains(&"v2.14".to_string()));

    sd.write_config(&config("[cache]\nenabled = true\n"));
    sd.reload().await;
    let (_, versions) = json_call(addr, "GET", "/versions", &[]).await;
    let ids = version_ids(&versions);
    assert!(
        ids.contains(&"v2.14".to_string()) && ids.contains(&"v2.16".to_string()),
        "{ids:?}"
    );
    assert_eq!(versions["versions"][0]["id"], "v2.18");

    let data = image_data(3 << 20, 21);
    let id = uploaded(addr, &data).await;
    let (status, _) = json_call(addr, "PUT", &format!("/v2/cache/{id}"), &[]).await;
    assert_eq!(status, 202);
    let state = sd.path("state");
    eventually("prefetched", || cached(&state).contains(&id)).await;
    let (status, listed) = json_call(addr, "GET", "/v2/cache", &[]).await;
    assert_eq!(status, 200);
    let entry = &listed["cached_images"][0];
    assert_eq!(entry["image_id"], id.as_str(), "{listed}");
    assert_eq!(entry["size"], 3 << 20);
    assert_eq!(entry["hits"], 0);
    assert!(entry["id"].as_u64().is_some_and(|n| n >= 1), "{entry}");
    assert!(entry["last_accessed"].as_f64().is_some() && entry["last_modified"].as_f64().is_some());
    assert_eq!(listed["queued_images"], serde_json::json!([]));
    assert_eq!(download(addr, &id).await, data, "served from the cache");
    let (_, listed) = json_call(addr, "GET", "/v2/cache", &[]).await;
    assert_eq!(listed["cached_images"][0]["hits"], 1);
    // Queuing a cached image prefetches nothing and counts no hit.
    let (status, _) = json_call(addr, "PUT", &format!("/v2/cache/{id}"), &[]).await;
    assert_eq!(status, 202);
    eventually("the queue is worked", || {
        std::fs::read_to_string(state.join("cache/queue.json")).is_ok_and(|q| q.trim() == "[]")
    })
    .await;
    let (_, listed) = json_call(addr, "GET", "/v2/cache", &[]).await;
    assert_eq!(listed["cached_images"][0]["hits"], 1, "{listed}");

    // Refusals in Glance's words.
    let queued = create_image(addr).await;
    let (status, body) = json_call(addr, "PUT", &format!("/v2/cache/{queued}"), &[]).await;
    assert_eq!(status, 400, "{body}");
    let missing = "00000000-0000-0000-0000-000000000000";
    let (status, _) = json_call(addr, "PUT", &format!("/v2/cache/{missing}"), &[]).await;
    assert_eq!(status, 404);
    let (status, _) = json_call(addr, "DELETE", &format!("/v2/cache/{missing}"), &[]).await;
    assert_eq!(status, 404);
    let (status, _) = json_call(
        addr,
        "DELETE",
        "/v2/cache",
        &[("x-image-cache-clear-target", "all")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = json_call(addr, "GET", &format!("/v2/cache/nodes/{id}"), &[]).await;
    assert_eq!(status, 409);

    // Clearing the queue leaves the entries; clearing the cache removes them.
    let (status, _) = json_call(
        addr,
        "DELETE",
        "/v2/cache",
        &[("x-image-cache-clear-target", "queue")],
    )
    .await;
    assert_eq!(status, 204);
    assert!(cached(&state).contains(&id));
    let (status, _) = json_call(addr, "DELETE", &format!("/v2/cache/{id}"), &[]).await;
    assert_eq!(status, 204);
    assert!(cached(&state).is_empty());
    let (status, pruned) = json_call(addr, "POST", "/v2/cache/prune", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(pruned["total_files_pruned"], 0);
    let (status, _) = json_call(addr, "POST", "/v2/cache/clean", &[]).await;
    assert_eq!(status, 200);

    // The queue outlives the process: what is queued when it stops is prefetched next time.
    assert_eq!(sd.stop().await, 0);
    std::fs::write(state.join("cache/queue.json"), format!("[\"{id}\"]")).expect("queue");
    sd.start().await;
    eventually("prefetched after the restart", || {
        cached(&state).contains(&id)
    })
    .await;
    let (status, _) = json_call(addr, "DELETE", "/v2/cache", &[]).await;
    assert_eq!(status, 204);
    assert!(cached(&state).is_empty());
    assert_eq!(sd.stop().await, 0);
}
