//! S3 stores against a real S3 server (`s3s-fs`, real SigV4) and the real binary with the
//! harness playing systemd: multipart uploads byte-exact, Range downloads, copy-image both
//! ways between a directory store and a bucket, `DELETE /v2/stores/…`, a cut upload that
//! leaves no parts in the bucket (nor does one of a killed process, after the next start),
//! credentials refused and a server unreachable at a reload, and an S3 outage answered with
//! 503 and recovered from by itself.
//!
//! The server binary is `$TEST_S3S_FS`, else the one `.ci/run` installs, else `s3s-fs` on
//! the PATH.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use support::{
    Conn, FakeSystemd, PATIENCE, SOCKET_UNIT_LISTEN, chunks, create_image, download, file_names,
    md5_hex, send_slowly, show_image, upload_image, wait_status,
};

const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");
const ACCESS_KEY: &str = "glint-test";
const SECRET_KEY: &str = "glint-test-secret";
const BUCKET: &str = "images";

/// An `s3s-fs` on a loopback port of its own, its data in a directory of its own.
struct S3Server {
    child: Option<Child>,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("TEST_S3S_FS") {
            return PathBuf::from(path);
        }
        let cached = Path::new("/var/cache/glint-test/s3s-fs-0.14.1/bin/s3s-fs");
        if cached.exists() {
            return cached.to_path_buf();
        }
        PathBuf::from("s3s-fs")
    }

    async fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket");
        let mut server = S3Server {
            child: None,
            port,
            root,
        };
        server.run().await;
        server
    }

    /// Starts the server (again, on the same port and data) and waits until it accepts.
    async fn run(&mut self) {
        let child = Command::new(Self::binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with `cargo install --locked s3s-fs \
                     --version 0.14.1 --features binary`, or name it in TEST_S3S_FS",
                    Self::binary().display()
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "s3s-fs never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `[stores.objects]` table of a glint config naming this server.
    fn store(&self, secret: &str, extra: &str) -> String {
        format!(
            "[stores.objects]\ntype = \"s3\"\nendpoint = \"http://127.0.0.1:{}\"\n\
             region = \"us-east-1\"\nbucket = \"{BUCKET}\"\nprefix = \"glint/\"\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{secret}\"\n\
             path_style = true\npart_size = \"5MiB\"\nparts_in_flight = 2\n{extra}\n",
            self.port
        )
    }

    /// The object of image `id`, as the server keeps it.
    fn object(&self, id: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join(BUCKET).join("glint").join(id)).ok()
    }

    /// Files of multipart uploads in progress (`.upload-<id>.json`, `.upload_id-<id>.part-N`).
    fn uploads_in_progress(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// glint with the S3 store `objects` (default) and the directory store `local`.
fn config(s3: &S3Server, secret: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{}\
         [stores.local]\ndatadirs = [{{ path = \"local\" }}]\n",
        s3.store(secret, &format!("default = true\n{extra}"))
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 16) as u8)
        })
        .collect()
}

/// Starts a slow 30 MiB upload of image `id` in the background, and returns once a part of
/// it is in the bucket (the multipart upload exists).
async fn upload_in_parts(
    s3: &S3Server,
    addr: SocketAddr,
    id: &str,
) -> tokio::task::JoinHandle<Result<support::Reply, String>> {
    let path = format!("/v2/images/{id}/file");
    let body = chunks(&pattern(30 << 20, 4), 256 << 10);
    let uploading = tokio::spawn(async move {
        send_slowly(
            addr,
            "PUT",
            &path,
            &[OCTETS],
            body,
            Duration::from_millis(20),
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !s3
        .uploads_in_progress()
        .iter()
        .any(|f| f.contains(".part-"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no part ever went up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    uploading
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut conn = Conn::open(addr).await.expect("connect");
    let reply = conn
        .send(
            method,
            path,
            body.as_ref().map(|_| "application/json"),
            body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())),
        )
        .await
        .expect("answered");
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, value)
}

/// Polls until the image's import is over and it is in `stores` (sorted).
async fn stores_become(addr: SocketAddr, id: &str, stores: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let shown = show_image(addr, id).await;
        let mut now: Vec<&str> = shown["stores"]
            .as_str()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .collect();
        now.sort_unstable();
        let importing = shown["os_glance_importing_to_stores"]
            .as_str()
            .is_some_and(|s| !s.is_empty());
        if now == stores && !importing {
            return shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never in {stores:?}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_store_takes_multipart_uploads_serves_ranges_and_copies_both_ways() {
    let s3 = S3Server::start().await;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(&s3, SECRET_KEY, ""));
    sd.start().await;

    // 12 MiB in 5 MiB parts: three parts, two in flight.
    let data = pattern(12 << 20, 3);
    let id = create_image(addr).await;
    let uploaded = upload_image(addr, &id, &data).await;
    assert_eq!(uploaded.status, 204, "{:?}", uploaded.body);
    let shown = show_image(addr, &id).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["stores"], "objects");
    assert_eq!(shown["checksum"], md5_hex(&data));
    assert_eq!(shown["size"], data.len());
    assert!(
        s3.object(&id) == Some(data.clone()),
        "the object is the data"
    );
    assert!(s3.uploads_in_progress().is_empty());

    let whole = download(addr, &id, None).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == data[..], "download is byte-exact");
    assert_eq!(whole.headers["content-md5"], md5_hex(&data).as_str());
    let part = download(addr, &id, Some("bytes=5242870-5242889")).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.headers["content-range"],
        format!("bytes 5242870-5242889/{}", data.len()).as_str()
    );
    assert!(part.body[..] == data[5242870..5242890]);
    let tail = download(addr, &id, Some("bytes=-7")).await;
    assert!(tail.body[..] == data[data.len() - 7..]);

    // A small image is one PUT, not a multipart upload.
    let small = pattern(1000, 9);
    let small_id = create_image(addr).await;
    assert_eq!(upload_image(addr, &small_id, &small).await.status, 204);
    assert!(s3.object(&small_id) == Some(small.clone()));
    let empty_id = create_image(addr).await;
    assert_eq!(upload_image(addr, &empty_id, b"").await.status, 204);
    assert_eq!(show_image(addr, &empty_id).await["size"], 0);
    assert_eq!(s3.object(&empty_id), Some(Vec::new()));
    let nothing = download(addr, &empty_id, None).await;
    assert_eq!((nothing.status, nothing.body.len()), (200, 0));

    // copy-image into the directory store, drop the bucket's copy, read from the
    // directory, and copy back.
    let (status, body) = request(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        Some(json!({"method": {"name": "copy-image"}, "stores": ["local"]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    stores_become(addr, &id, &["local", "objects"]).await;
    let (status, body) = request(addr, "DELETE", &format!("/v2/stores/objects/{id}"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(s3.object(&id), None, "the bucket's copy is gone");
    let from_dir = download(addr, &id, None).await;
    assert!(from_dir.body[..] == data[..]);
    let (status, body) = request(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        Some(json!({"method": {"name": "copy-image"}, "stores": ["objects"]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    stores_become(addr, &id, &["local", "objects"]).await;
    assert!(
        s3.object(&id) == Some(data.clone()),
        "copied back byte-exact"
    );

    // Deleting the image deletes its objects.
    let (status, _) = request(addr, "DELETE", &format!("/v2/images/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = request(addr, "DELETE", &format!("/v2/images/{small_id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(s3.object(&id), None);
    assert_eq!(s3.object(&small_id), None);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_upload_aborts_its_multipart_upload_and_releases_the_image() {
    let s3 = S3Server::start().await;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(&s3, SECRET_KEY, ""));
    sd.start().await;

    let id = create_image(addr).await;
    let leaving = upload_in_parts(&s3, addr, &id).await;
    leaving.abort();
    wait_status(addr, &id, "queued").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !s3.uploads_in_progress().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "parts left in the bucket: {:?}",
            s3.uploads_in_progress()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s3.object(&id), None);

    // The image takes a new upload.
    let data = pattern(6 << 20, 5);
    assert_eq!(upload_image(addr, &id, &data).await.status, 204);
    assert!(s3.object(&id) == Some(data));
    assert_eq!(sd.stop().await, 0);
}

/// A process killed mid-upload cannot abort its multipart upload: the node's next start
/// does, from the node's journal (`<state_dir>/multipart`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multipart_upload_a_killed_process_left_is_aborted_at_the_next_start() {
    let s3 = S3Server::start().await;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(&s3, SECRET_KEY, ""));
    sd.start().await;
    let journal = sd.path("state").join("multipart");

    let id = create_image(addr).await;
    let leaving = upload_in_parts(&s3, addr, &id).await;
    assert_eq!(file_names(&journal).len(), 1, "the open upload is recorded");
    sd.signal(nix::sys::signal::Signal::SIGKILL);
    sd.wait_exit().await;
    leaving.abort();
    assert!(
        !s3.uploads_in_progress().is_empty(),
        "the killed process left its upload open"
    );

    // The new process aborts it before it serves.
    sd.start().await;
    assert_eq!(s3.uploads_in_progress(), Vec::<String>::new());
    assert_eq!(file_names(&journal), Vec::<String>::new());
    assert_eq!(show_image(addr, &id).await["status"], "queued");
    assert_eq!(s3.object(&id), None);
    let data = pattern(6 << 20, 9);
    assert_eq!(upload_image(addr, &id, &data).await.status, 204);
    assert_eq!(
        file_names(&journal),
        Vec::<String>::new(),
        "a finished upload is forgotten"
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_credentials_or_an_unreachable_server_fail_the_reload_unless_optional() {
    let mut s3 = S3Server::start().await;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(&s3, SECRET_KEY, ""));
    sd.start().await;

    // A wrong secret: SigV4 fails, the reload is refused and names the store, and the
    // running generation keeps its working credentials.
    sd.write_config(&config(&s3, "not-the-secret", ""));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("objects") && out.contains("credentials"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-secret"),
        "the secret is never shown: {out}"
    );
    let id = create_image(addr).await;
    assert_eq!(upload_image(addr, &id, b"still served").await.status, 204);

    // A store holding images keeps its bucket.
    std::fs::create_dir(s3.root.path().join("elsewhere")).expect("bucket");
    sd.write_config(
        &config(&s3, SECRET_KEY, "")
            .replace(&format!("bucket = \"{BUCKET}\""), "bucket = \"elsewhere\""),
    );
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("stores.objects") && out.contains("bucket images"),
        "{out}"
    );

    // The server down: a reload is refused, but not for an optional store.
    s3.stop();
    sd.write_config(&config(&s3, SECRET_KEY, ""));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("objects") && out.contains("reached"), "{out}");
    sd.write_config(&config(&s3, SECRET_KEY, "optional = true"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");

    // Meanwhile requests that need the bucket get 503 with Retry-After, and nothing is
    // half-written.
    let waiting = create_image(addr).await;
    let refused = upload_image(addr, &waiting, &pattern(6 << 20, 6)).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(show_image(addr, &waiting).await["status"], "queued");
    let unreadable = download(addr, &id, None).await;
    assert_eq!(unreadable.status, 503);

    // The server back: served again without a reload.
    s3.run().await;
    let data = pattern(6 << 20, 7);
    assert_eq!(upload_image(addr, &waiting, &data).await.status, 204);
    let back = download(addr, &id, None).await;
    assert_eq!(&back.body[..], b"still served");
    assert!(s3.object(&waiting) == Some(data));
    assert_eq!(sd.stop().await, 0);
}

/// With the cache on, an image in the bucket is read from S3 once: its hits are served with
/// the S3 server stopped (no request reaches it), whole and in ranges, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_hit_makes_no_request_to_s3() {
    let mut s3 = S3Server::start().await;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&format!(
        "{}[cache]\nenabled = true\n",
        config(&s3, SECRET_KEY, "")
    ));
    sd.start().await;
    let data = pattern(7 << 20, 9);
    let id = create_image(addr).await;
    assert_eq!(upload_image(addr, &id, &data).await.status, 204);
    let first = download(addr, &id, None).await;
    assert!(
        first.status == 200 && first.body[..] == data[..],
        "the miss is byte-exact"
    );
    let entry = sd.path("state").join("cache/data").join(&id);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !entry.exists() {
        assert!(tokio::time::Instant::now() < deadline, "never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    s3.stop();
    let hit = download(addr, &id, None).await;
    assert!(
        hit.status == 200 && hit.body[..] == data[..],
        "the hit is byte-exact"
    );
    assert_eq!(hit.headers["content-md5"], md5_hex(&data).as_str());
    let part = download(addr, &id, Some("bytes=5242870-5242889")).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body[..], data[5_242_870..=5_242_889]);
    assert_eq!(sd.stop().await, 0);
}
