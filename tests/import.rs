//! Interoperable import against the real binary, with the harness playing systemd and a
//! local HTTP server playing the web: glance-direct, web-download and copy-image into named
//! stores; all_stores with a failing store; an import across 20 reloads and across a drain
//! deadline; SIGTERM and kill -9 in the middle of a web-download and of a copy-image.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sha2::Digest;
use support::{Conn, FakeSystemd, PATIENCE, SOCKET_UNIT_LISTEN, Web, send_slowly};

const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");

/// Two writable stores (`fast` the default, `cheap`), a read-only one, and web-download
/// allowed to reach the test's own server on loopback.
fn config(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{extra}\n\
         [stores.fast]\ndefault = true\ndescription = \"SSD\"\ndatadirs = [{{ path = \"fast\" }}]\n\
         [stores.cheap]\ndatadirs = [{{ path = \"cheap\" }}]\n\
         [stores.archive]\ndatadirs = [{{ path = \"archive\", read_only = true }}]\n\
         [import.web_download]\nallowed_hosts = [\"127.0.0.1\"]\nallowed_ports = []\n"
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

fn sha512_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(data))
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let mut conn = Conn::open(addr).await.expect("connect");
    if body.is_null() {
        let reply = conn
            .send(method, path, None, Bytes::new())
            .await
            .expect("request");
        let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        return (reply.status, value);
    }
    conn.json(method, path, "application/json", &body)
        .await
        .expect("request")
}

async fn create(addr: SocketAddr, name: &str) -> String {
    let (status, image) = call(
        addr,
        "POST",
        "/v2/images",
        json!({"name": name, "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    image["id"].as_str().expect("id").to_string()
}

async fn image(addr: SocketAddr, id: &str) -> Value {
    call(addr, "GET", &format!("/v2/images/{id}"), Value::Null)
        .await
        .1
}

async fn import(addr: SocketAddr, id: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", &format!("/v2/images/{id}/import"), body).await
}

async fn put_data(
    addr: SocketAddr,
    id: &str,
    what: &str,
    data: &[u8],
    extra: &[(&str, &str)],
) -> u16 {
    let mut headers = vec![OCTETS];
    headers.extend_from_slice(extra);
    let chunks = data.chunks(256 << 10).map(Bytes::copy_from_slice).collect();
    send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{id}/{what}"),
        &headers,
        chunks,
        Duration::ZERO,
    )
    .await
    .expect("answered")
    .status
}

/// Waits until the image's task has finished (the lock is gone), and returns the image
/// and its newest task. Polls: a task's end has no notification.
async fn finished(addr: SocketAddr, id: &str) -> (Value, Value) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (_, tasks) = call(addr, "GET", &format!("/v2/images/{id}/tasks"), Value::Null).await;
        let task = tasks["tasks"][0].clone();
        if matches!(task["status"].as_str(), Some("success" | "failure")) {
            let shown = image(addr, id).await;
            assert!(shown.get("os_glance_import_task").is_none(), "{shown}");
            return (shown, task);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "import never finished: {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that the image is active with `data`'s size and hashes, and that every store it
/// lists holds exactly `data`.
fn assert_holds(state: &Path, shown: &Value, data: &[u8]) {
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["size"].as_u64(), Some(data.len() as u64), "{shown}");
    assert_eq!(shown["checksum"], md5_hex(data), "{shown}");
    assert_eq!(shown["os_hash_value"], sha512_hex(data), "{shown}");
    let id = shown["id"].as_str().expect("id");
    for store in shown["stores"].as_str().expect("stores").split(',') {
        let copy = std::fs::read(state.join(store).join(id)).expect("the store holds the data");
        assert!(copy == data, "the copy in {store} is byte-exact");
    }
}

/// No staged data and no partial file anywhere under the state directory.
fn assert_nothing_left(state: &Path) {
    assert!(
        files_in(&state.join("staging")).is_empty(),
        "{:?}",
        files_in(&state.join("staging"))
    );
    for store in ["fast", "cheap", "archive"] {
        let partial: Vec<String> = files_in(&state.join(store))
            .into_iter()
            .filter(|f| f.starts_with('.'))
            .collect();
        assert!(partial.is_empty(), "{store}: {partial:?}");
    }
}

/// Waits until a copy into `store` is under way: its temporary file exists there.
async fn copy_under_way(store: &Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !files_in(store).iter().any(|f| f.starts_with(".upload-")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy never began"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn state(sd: &FakeSystemd) -> PathBuf {
    sd.path("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_three_methods_import_into_named_stores() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);

    let (status, stores) = call(addr, "GET", "/v2/info/stores", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(
        stores,
        json!({"stores": [
            {"id": "archive", "read-only": "true"},
            {"id": "cheap"},
            {"id": "fast", "default": "true", "description": "SSD"},
        ]})
    );
    let (_, methods) = call(addr, "GET", "/v2/info/import", Value::Null).await;
    assert_eq!(
        methods["import-methods"]["value"],
        json!(["glance-direct", "web-download", "copy-image"])
    );

    // glance-direct: stage (chunked, without a declared size), then import.
    let direct = pattern(3 << 20, 1);
    let id = create(addr, "direct").await;
    assert_eq!(put_data(addr, &id, "stage", &direct, &[]).await, 204);
    let staged = image(addr, &id).await;
    assert_eq!(staged["status"], "uploading");
    assert_eq!(staged["size"].as_u64(), Some(direct.len() as u64));
    assert_eq!(
        files_in(&state.join("staging")),
        vec![format!(".hashes-{id}"), id.clone()],
        "staged data keeps its hashes beside it"
    );
    let staged_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(state.join("staging").join(&id))
            .expect("staged")
            .ino()
    };
    assert_eq!(put_data(addr, &id, "stage", b"again", &[]).await, 409);
    let (status, body) = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(status, 202, "{body}");
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(task["result"], json!({"image_id": id}));
    assert_eq!(task["type"], "api_image_import");
    assert_eq!(shown["stores"], "fast");
    assert_eq!(shown["os_glance_importing_to_stores"], "");
    {
        use std::os::unix::fs::MetadataExt;
        let stored = std::fs::metadata(state.join("fast").join(&id)).expect("stored");
        assert_eq!(
            stored.ino(),
            staged_inode,
            "linked from staging, not copied"
        );
    }
    assert_eq!(shown["os_glance_failed_import"], "");
    assert_holds(&state, &shown, &direct);
    let (status, by_id) = call(
        addr,
        "GET",
        &format!("/v2/tasks/{}", task["id"].as_str().unwrap()),
        Value::Null,
    )
    .await;
    assert_eq!((status, &by_id["status"]), (200, &json!("success")));

    // web-download into a named store; a refused URL is a 400 and never a fetch.
    let fetched = pattern(2 << 20, 2);
    let web = Web::serve(fetched.clone(), 64 << 10, Duration::ZERO);
    let id = create(addr, "web").await;
    for refused in [
        "http://169.254.169.254/latest/meta-data".to_string(),
        "file:///etc/passwd".to_string(),
        format!("ftp://{}/x", web.addr),
    ] {
        let (status, body) = import(
            addr,
            &id,
            json!({"method": {"name": "web-download", "uri": refused}}),
        )
        .await;
        assert_eq!(status, 400, "{refused}: {body}");
    }
    assert_eq!(image(addr, &id).await["status"], "queued");
    assert_eq!(web.requests.load(Ordering::SeqCst), 0);
    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": web.url()}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (again, _) = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": web.url()}}),
    )
    .await;
    assert_eq!(again, 409, "a second import while one holds the lock");
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["stores"], "cheap");
    assert_holds(&state, &shown, &fetched);

    // copy-image into every other writable store (the read-only one is skipped).
    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "copy-image"}, "all_stores": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["stores"], "cheap,fast");
    assert_holds(&state, &shown, &fetched);
    let (status, _) = import(
        addr,
        &id,
        json!({"method": {"name": "copy-image"}, "stores": ["fast"]}),
    )
    .await;
    assert_eq!(status, 400, "already in that store");
    // A copy can go again, but not the last one.
    let (status, _) = call(
        addr,
        "DELETE",
        &format!("/v2/stores/cheap/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    assert!(!files_in(&state.join("cheap")).contains(&id));
    let shown = image(addr, &id).await;
    assert_eq!(shown["stores"], "fast");
    assert_holds(&state, &shown, &fetched);
    let (status, _) = call(
        addr,
        "DELETE",
        &format!("/v2/stores/fast/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        addr,
        "DELETE",
        &format!("/v2/stores/cheap/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    let (status, tasks) = call(addr, "GET", "/v2/tasks?limit=2", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "{tasks}");
    assert_eq!(tasks["tasks"][0]["status"], "success");
    let next = tasks["next"].as_str().expect("a next page");
    let (_, rest) = call(addr, "GET", next, Value::Null).await;
    assert_eq!(rest["tasks"].as_array().map(Vec::len), Some(1), "{rest}");

    // Uploads may name a store; a read-only or unknown one is refused.
    let id = create(addr, "upload").await;
    assert_eq!(
        put_data(
            addr,
            &id,
            "file",
            b"bytes",
            &[("x-image-meta-store", "archive")]
        )
        .await,
        403
    );
    assert_eq!(
        put_data(
            addr,
            &id,
            "file",
            b"bytes",
            &[("x-image-meta-store", "nope")]
        )
        .await,
        400
    );
    assert_eq!(
        put_data(
            addr,
            &id,
            "file",
            b"bytes",
            &[("x-image-meta-store", "cheap")]
        )
        .await,
        204
    );
    assert_eq!(image(addr, &id).await["stores"], "cheap");

    // Staging that fails half-way leaves no staged data and a queued image.
    let id = create(addr, "short").await;
    let status = put_data(
        addr,
        &id,
        "stage",
        &pattern(1 << 20, 3),
        &[("x-openstack-image-size", "2097152")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(image(addr, &id).await["status"], "queued");
    assert_nothing_left(&state);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_stores_with_a_failing_store_follows_all_stores_must_succeed() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);
    // The `cheap` store breaks under the running service: its directory becomes a file,
    // so nothing can be written there, not even by root.
    std::fs::remove_dir(state.join("cheap")).expect("rmdir");
    std::fs::write(state.join("cheap"), b"not a directory").expect("write");

    let data = pattern(1 << 20, 4);
    for must_succeed in [true, false] {
        let id = create(addr, "all").await;
        assert_eq!(put_data(addr, &id, "stage", &data, &[]).await, 204);
        let (status, body) = import(
            addr,
            &id,
            json!({"method": {"name": "glance-direct"}, "all_stores": true,
                   "all_stores_must_succeed": must_succeed}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let (shown, task) = finished(addr, &id).await;
        assert_eq!(shown["os_glance_failed_import"], "cheap", "{shown}");
        assert_eq!(shown["os_glance_importing_to_stores"], "");
        if must_succeed {
            assert_eq!(task["status"], "failure", "{task}");
            assert!(task["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(shown["status"], "queued");
            assert!(shown.get("stores").is_none(), "{shown}");
            assert!(shown["checksum"].is_null());
            assert!(
                !files_in(&state.join("fast")).contains(&id),
                "the good copy is rolled back"
            );
        } else {
            assert_eq!(task["status"], "success", "{task}");
            assert_eq!(shown["stores"], "fast");
            assert_holds(&state, &shown, &data);
            // A copy whose every target fails is a failed task, whatever may fail.
            let (status, body) = import(
                addr,
                &id,
                json!({"method": {"name": "copy-image"}, "stores": ["cheap"],
                       "all_stores_must_succeed": false}),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            let (shown, task) = finished(addr, &id).await;
            assert_eq!(task["status"], "failure", "{task}");
            assert_eq!(shown["os_glance_failed_import"], "cheap", "{shown}");
            assert_holds(&state, &shown, &data);
        }
        assert!(files_in(&state.join("staging")).is_empty());
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_completes_across_20_reloads_and_a_drain_deadline() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    // A drain deadline shorter than the download: the task is cut and handed on.
    let text = config("drain_timeout = \"300ms\"");
    sd.write_config(&text);
    sd.start().await;
    let state = state(&sd);

    let data = pattern(4 << 20, 5);
    let web = Web::serve(data.clone(), 64 << 10, Duration::from_millis(25));
    let id = create(addr, "reloads").await;
    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": web.url()}, "all_stores": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    web.wait_for_chunks(1).await;
    assert_eq!(sd.status().await["tasks_running"], 1);
    for _ in 0..20 {
        sd.write_config(&text);
        let (_, ready) = sd.reload().await;
        assert!(
            support::field(&ready, "STATUS").is_some_and(|s| !s.contains("fail")),
            "{ready:?}"
        );
    }
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["stores"], "cheap,fast");
    assert_holds(&state, &shown, &data);
    assert_nothing_left(&state);
    assert!(
        sd.logs().contains("handed on"),
        "the cut task was handed on"
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_and_kill_during_a_web_download_resume_at_the_next_start() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("shutdown_timeout = \"30s\""));
    sd.start().await;
    let state = state(&sd);
    let data = pattern(3 << 20, 6);
    let web = Web::serve(data.clone(), 64 << 10, Duration::from_millis(20));

    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let id = create(addr, "interrupted").await;
        let before = web.chunks_sent.load(Ordering::SeqCst);
        let requests_before = web.requests.load(Ordering::SeqCst) as u32;
        let (status, body) = import(
            addr,
            &id,
            json!({"method": {"name": "web-download", "uri": web.url()}}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        web.wait_for_chunks(before + 2).await;
        sd.signal(signal);
        let code = sd.wait_exit().await;
        if signal == Signal::SIGTERM {
            assert_eq!(code, 0);
            // The stop did not wait for the download: the task stopped at its checkpoint.
            assert!(
                web.chunks_sent.load(Ordering::SeqCst) < before + 48,
                "{signal}"
            );
            assert!(sd.logs().contains("checkpoint"), "{}", sd.logs());
        }
        let resumed_before = sd.logs().matches("resuming task").count();
        sd.start().await;
        let (shown, task) = finished(addr, &id).await;
        assert_eq!(task["status"], "success", "{signal}: {task}");
        assert_eq!(
            sd.logs().matches("resuming task").count(),
            resumed_before + 1
        );
        assert_eq!(
            web.requests.load(Ordering::SeqCst) as u32,
            requests_before + 2,
            "fetched again after the restart"
        );
        assert_eq!(shown["stores"], "fast");
        assert_holds(&state, &shown, &data);
        assert_nothing_left(&state);
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_a_copy_image_resumes_at_the_next_start() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);
    let data = pattern(64 << 20, 7);
    let id = create(addr, "copied").await;
    assert_eq!(put_data(addr, &id, "file", &data, &[]).await, 204);

    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    copy_under_way(&state.join("cheap")).await;
    sd.signal(Signal::SIGKILL);
    sd.wait_exit().await;
    let interrupted = image(addr, &id);
    sd.start().await;
    assert_eq!(
        interrupted.await["os_glance_importing_to_stores"],
        "cheap",
        "killed mid-copy"
    );
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert!(sd.logs().contains("resuming task"));
    assert_eq!(shown["stores"], "fast,cheap");
    assert_holds(&state, &shown, &data);
    assert_nothing_left(&state);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_are_added_by_reload_and_kept_while_they_hold_images() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let with = |stores: &str| format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{stores}\n");
    // The config of earlier versions: one unnamed store, served as `default`.
    sd.write_config(&with(""));
    sd.start().await;
    let first = create(addr, "first").await;
    assert_eq!(put_data(addr, &first, "file", b"first", &[]).await, 204);
    assert_eq!(image(addr, &first).await["stores"], "default");

    // The same directory as a named store, and a second store beside it.
    let named = "[stores.default]\ndefault = true\ndatadirs = [{ path = \"images\" }]\n\
                 [stores.extra]\ndatadirs = [{ path = \"extra\" }]\n";
    sd.write_config(&with(named));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    let (_, stores) = call(addr, "GET", "/v2/info/stores", Value::Null).await;
    assert_eq!(
        stores,
        json!({"stores": [{"id": "default", "default": "true"}, {"id": "extra"}]})
    );
    let second = create(addr, "second").await;
    assert_eq!(
        put_data(
            addr,
            &second,
            "file",
            b"second",
            &[("x-image-meta-store", "extra")]
        )
        .await,
        204
    );
    assert_eq!(image(addr, &second).await["stores"], "extra");

    // Dropping a store that holds an image is refused and says which and how many.
    sd.write_config(&with(
        "[stores.default]\ndatadirs = [{ path = \"images\" }]\n",
    ));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("stores.extra") && out.contains("1 image"),
        "{out}"
    );
    // Both kinds of store config at once is refused by key.
    sd.write_config(&with(&format!(
        "{named}[store]\ndatadirs = [{{ path = \"old\" }}]\n"
    )));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("store.datadirs"), "{out}");
    let mut conn = Conn::open(addr).await.expect("connect");
    let data = conn
        .get(&format!("/v2/images/{second}/file"))
        .await
        .expect("read");
    assert_eq!(&data.body[..], b"second");
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_cut_by_kill_leaves_a_queued_image_and_nothing_staged() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);
    let id = create(addr, "cut").await;
    let chunks = pattern(2 << 20, 8)
        .chunks(64 << 10)
        .map(Bytes::copy_from_slice)
        .collect();
    let path = format!("/v2/images/{id}/stage");
    let staging = tokio::spawn(async move {
        send_slowly(
            addr,
            "PUT",
            &path,
            &[OCTETS],
            chunks,
            Duration::from_millis(100),
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while image(addr, &id).await["status"] != "uploading" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "staging never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sd.signal(Signal::SIGKILL);
    sd.wait_exit().await;
    staging.abort();
    sd.start().await;
    let shown = image(addr, &id).await;
    assert_eq!(shown["status"], "queued", "{shown}");
    assert!(shown["size"].is_null(), "{shown}");
    assert_nothing_left(&state);
    // The image takes a new staging and import as if nothing happened.
    let data = pattern(1 << 20, 9);
    assert_eq!(put_data(addr, &id, "stage", &data, &[]).await, 204);
    let (status, _) = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(status, 202);
    let (shown, _) = finished(addr, &id).await;
    assert_holds(&state, &shown, &data);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_cut_short_by_deactivation_releases_the_image() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);
    let data = pattern(128 << 20, 10);
    let id = create(addr, "deactivated").await;
    assert_eq!(put_data(addr, &id, "file", &data, &[]).await, 204);
    let (status, _) = import(
        addr,
        &id,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(status, 202);
    copy_under_way(&state.join("cheap")).await;
    let (status, _) = call(
        addr,
        "POST",
        &format!("/v2/images/{id}/actions/deactivate"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "failure", "{task}");
    assert_eq!(shown["status"], "deactivated");
    assert_eq!(shown["stores"], "fast");
    assert!(!files_in(&state.join("cheap")).contains(&id));
    assert_nothing_left(&state);
    // Reactivated, the image copies as if nothing happened.
    let (status, _) = call(
        addr,
        "POST",
        &format!("/v2/images/{id}/actions/reactivate"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = import(
        addr,
        &id,
        json!({"method": {"name": "copy-image"}, "stores": ["cheap"]}),
    )
    .await;
    assert_eq!(status, 202);
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_holds(&state, &shown, &data);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_to_a_refused_address_fails_the_task_without_following_it() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    // A server the filter allows, answering with a redirect to the metadata address.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let redirector = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let id = create(addr, "redirected").await;
    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": format!("http://{redirector}/disk.raw")}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "failure", "{task}");
    assert!(
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("169.254.169.254") && m.contains("not allowed")),
        "{task}"
    );
    assert_eq!(shown["status"], "queued");
    assert_nothing_left(&state(&sd));
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_stage_survives_sigterm_and_kill_and_imports_byte_exact() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = state(&sd);
    for (seed, signal) in [(21, Signal::SIGTERM), (22, Signal::SIGKILL)] {
        let id = create(addr, "staged").await;
        let data = pattern((1 << 20) + 17, seed);
        assert_eq!(put_data(addr, &id, "stage", &data, &[]).await, 204);
        sd.signal(signal);
        sd.wait_exit().await;
        sd.start().await;
        let shown = image(addr, &id).await;
        assert_eq!(shown["status"], "uploading", "{signal}: {shown}");
        assert_eq!(shown["size"].as_u64(), Some(data.len() as u64), "{shown}");
        let (status, body) = import(addr, &id, json!({"method": {"name": "glance-direct"}})).await;
        assert_eq!(status, 202, "{signal}: {body}");
        let (shown, task) = finished(addr, &id).await;
        assert_eq!(task["status"], "success", "{task}");
        assert_holds(&state, &shown, &data);
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_resolves_to_loopback_fails_the_task_without_a_connection() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    // No host named: `localhost` is judged by the addresses it resolves to.
    sd.write_config(&config("").replace("allowed_hosts = [\"127.0.0.1\"]", "allowed_hosts = []"));
    sd.start().await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for _ in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let id = create(addr, "rebound").await;
    let uri = format!("http://localhost:{port}/disk.raw");
    let (status, body) = import(
        addr,
        &id,
        json!({"method": {"name": "web-download", "uri": uri}}),
    )
    .await;
    // A name passes the check at import time; only resolving it can tell.
    assert_eq!(status, 202, "{body}");
    let (shown, task) = finished(addr, &id).await;
    assert_eq!(task["status"], "failure", "{task}");
    assert!(
        task["message"].as_str().is_some_and(|m| {
            m.contains("localhost resolves only to") && m.contains("(loopback)")
        }),
        "{task}"
    );
    assert_eq!(shown["status"], "queued");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the server was reached"
    );
    assert_nothing_left(&state(&sd));
    assert_eq!(sd.stop().await, 0);
}

/// Two nodes on one database (the server `TEST_DATABASE_SERVER` names, else one SQLite
/// file) with their stores on one shared directory, as on a shared filesystem, each with
/// its own state directory (staging) and `lease_time` short enough to see a takeover.
struct TwoNodes {
    nodes: [FakeSystemd; 2],
    addrs: [SocketAddr; 2],
    shared: tempfile::TempDir,
}

impl TwoNodes {
    async fn start() -> TwoNodes {
        let shared = tempfile::tempdir().expect("tempdir");
        let url = support::fresh_database()
            .unwrap_or_else(|| format!("sqlite://{}", shared.path().join("glint.db").display()));
        let stores = shared.path().display().to_string();
        let mut nodes = [FakeSystemd::new(), FakeSystemd::new()];
        let mut addrs = Vec::new();
        for sd in &mut nodes {
            addrs.push(sd.add_socket_unit("api"));
            sd.env = vec![
                ("GLINT_DATABASE__URL".into(), url.clone()),
                ("GLINT_DATABASE__LEASE_TIME".into(), "1s".into()),
            ];
            sd.write_config(&format!(
                "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\nshutdown_timeout = \"30s\"\n\
                 [stores.fast]\ndefault = true\ndatadirs = [{{ path = \"{stores}/fast\" }}]\n\
                 [stores.cheap]\ndatadirs = [{{ path = \"{stores}/cheap\" }}]\n\
                 [import.web_download]\nallowed_hosts = [\"127.0.0.1\"]\nallowed_ports = []\n"
            ));
            sd.start().await;
        }
        TwoNodes {
            nodes,
            addrs: [addrs[0], addrs[1]],
            shared,
        }
    }
}

/// Both nodes create, patch, upload and import at once, each touching images the other
/// made: no request fails, and every image ends as the last write left it, the same seen
/// from either node. Data staged on one node and imported through the other is imported
/// by the node that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_serve_one_catalogue_without_errors() {
    let mut two = TwoNodes::start().await;
    let [a, b] = two.addrs;
    let (status_a, status_b) = (two.nodes[0].status().await, two.nodes[1].status().await);
    assert_ne!(status_a["node"], status_b["node"], "two nodes");
    assert_eq!(status_a["database"], status_b["database"], "one database");
    assert!(
        !status_a["database"]
            .as_str()
            .unwrap_or(":glint@")
            .contains(":glint@"),
        "the password is hidden: {status_a}"
    );
    let data = pattern(300 << 10, 9);
    let web = Web::serve(data.clone(), 64 << 10, Duration::ZERO);
    let mut work = tokio::task::JoinSet::new();
    for n in 0..24usize {
        let (here, there) = if n % 2 == 0 { (a, b) } else { (b, a) };
        let (data, url) = (data.clone(), web.url());
        work.spawn(async move {
            let id = create(here, &format!("image-{n}")).await;
            for round in 0..3 {
                let at = if round % 2 == 0 { there } else { here };
                let mut conn = Conn::open(at).await.expect("connect");
                let (status, body) = conn
                    .json(
                        "PATCH",
                        &format!("/v2/images/{id}"),
                        "application/openstack-images-v2.1-json-patch",
                        &json!([
                            {"op": "add", "path": "/round", "value": round.to_string()},
                            {"op": "replace", "path": "/tags",
                             "value": (0..=round).map(|t| format!("t{t}")).collect::<Vec<_>>()},
                        ]),
                    )
                    .await
                    .expect("patch");
                assert_eq!(status, 200, "{body}");
            }
            match n % 3 {
                0 => assert_eq!(put_data(there, &id, "file", &data, &[]).await, 204),
                1 => {
                    let (status, body) = import(
                        there,
                        &id,
                        json!({"method": {"name": "web-download", "uri": url}}),
                    )
                    .await;
                    assert_eq!(status, 202, "{body}");
                }
                _ => {
                    assert_eq!(put_data(here, &id, "stage", &data, &[]).await, 204);
                    let (status, body) =
                        import(there, &id, json!({"method": {"name": "glance-direct"}})).await;
                    assert_eq!(status, 202, "{body}");
                }
            }
            id
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = work.join_next().await {
        ids.push(id.expect("no request failed"));
    }
    for id in &ids {
        if image(a, id).await["status"] != "active" {
            let (_, task) = finished(a, id).await;
            assert_eq!(task["status"], "success", "{task}");
        }
        for at in [a, b] {
            let shown = image(at, id).await;
            assert_eq!(shown["round"], "2", "{shown}");
            assert_eq!(shown["tags"], json!(["t0", "t1", "t2"]), "{shown}");
            assert_holds(two.shared.path(), &shown, &data);
        }
    }
    for sd in &mut two.nodes {
        assert_eq!(sd.stop().await, 0);
    }
}

/// A node killed in the middle of an import: the other node takes the task over once
/// its lease has expired, and the image becomes active, byte-exact; a node that died in
/// the middle of an upload has its image queued again by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_task_is_taken_over_once_its_lease_expires() {
    let mut two = TwoNodes::start().await;
    let [a, b] = two.addrs;
    let data = pattern(3 << 20, 10);
    let web = Web::serve(data.clone(), 64 << 10, Duration::from_millis(20));
    let id = create(a, "taken-over").await;
    let (status, body) = import(
        a,
        &id,
        json!({"method": {"name": "web-download", "uri": web.url()}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    web.wait_for_chunks(2).await;
    let requests = web.requests.load(Ordering::SeqCst);
    two.nodes[0].signal(Signal::SIGKILL);
    two.nodes[0].wait_exit().await;
    let (shown, task) = finished(b, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(web.requests.load(Ordering::SeqCst), requests + 1);
    assert!(two.nodes[1].logs().contains("resuming task"));
    assert_holds(two.shared.path(), &shown, &data);

    // An upload cut by the death of its node (b here, a is gone): a restarted a queues
    // the image again once b's claim has expired, without b ever coming back.
    two.nodes[0].start().await;
    let id = create(b, "cut-upload").await;
    let chunks = data.chunks(64 << 10).map(Bytes::copy_from_slice).collect();
    let path = format!("/v2/images/{id}/file");
    let upload = tokio::spawn(async move {
        send_slowly(
            b,
            "PUT",
            &path,
            &[OCTETS],
            chunks,
            Duration::from_millis(20),
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while image(a, &id).await["status"] != "saving" {
        assert!(tokio::time::Instant::now() < deadline, "upload never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    two.nodes[1].signal(Signal::SIGKILL);
    two.nodes[1].wait_exit().await;
    let _ = upload.await;
    while image(a, &id).await["status"] != "queued" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's upload was never undone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(put_data(a, &id, "file", &data, &[]).await, 204);
    assert_holds(two.shared.path(), &image(a, &id).await, &data);
    assert_eq!(two.nodes[0].stop().await, 0);
}

/// The legacy `POST /v2/tasks` (type `import`): an image made from `image_properties` and
/// imported from `import_from` with web-download's rules, as a task that keeps its input and
/// ends with `result.image_id`; bad requests are Glance's 400s and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_legacy_task_create_imports_an_image_from_a_url() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let data = pattern((1 << 20) + 17, 9);
    let web = Web::serve(data.clone(), 64 << 10, Duration::ZERO);
    let input = json!({
        "import_from": web.url(),
        "import_from_format": "raw",
        "image_properties": {"name": "legacy", "os_distro": "debian"}
    });
    let (status, task) = call(
        addr,
        "POST",
        "/v2/tasks",
        json!({"type": "import", "input": input}),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["type"], "import");
    assert_eq!(task["input"], input, "the input is kept as sent");
    assert_eq!(task["status"], "pending");
    let task_id = task["id"].as_str().expect("id").to_string();
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    let done = loop {
        let (_, task) = call(addr, "GET", &format!("/v2/tasks/{task_id}"), Value::Null).await;
        if matches!(task["status"].as_str(), Some("success" | "failure")) {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never finished: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    let image_id = done["result"]["image_id"]
        .as_str()
        .expect("result.image_id")
        .to_string();
    let shown = image(addr, &image_id).await;
    assert_eq!(shown["name"], "legacy");
    assert_eq!(shown["os_distro"], "debian");
    assert_eq!(shown["disk_format"], "raw");
    assert_eq!(shown["container_format"], "bare");
    assert_holds(&state(&sd), &shown, &data);

    let (_, before) = call(addr, "GET", "/v2/images", Value::Null).await;
    for (body, message) in [
        (json!({"input": {}}), "Task 'type' is required"),
        (json!({"type": "import"}), "Task 'input' is required"),
        (json!({"type": "copy", "input": {}}), "is not one of"),
        (
            json!({"type": "import", "input": {}, "colour": 1}),
            "Additional properties are not allowed",
        ),
        (
            json!({"type": "import", "input": {}}),
            "Invalid location: None",
        ),
        (
            json!({"type": "import", "input": {"import_from": "file:///etc/passwd"}}),
            "File based imports are not allowed",
        ),
        (
            json!({"type": "import", "input": {"import_from": "ftp://127.0.0.1/x"}}),
            "The given uri is not valid",
        ),
        (
            json!({"type": "import", "input": {"import_from": "http://169.254.169.254/x", "import_from_format": "raw", "image_properties": {}}}),
            "does not pass filtering",
        ),
        (
            json!({"type": "import", "input": {"import_from": web.url(), "import_from_format": "raw"}}),
            "Input does not contain 'image_properties' field",
        ),
        (
            json!({"type": "import", "input": {"import_from": web.url(), "import_from_format": "raw", "image_properties": {"status": "active"}}}),
            "read-only",
        ),
        (json!({"type": "api_image_import", "input": {}}), "/import"),
    ] {
        let mut conn = Conn::open(addr).await.expect("connect");
        let reply = conn
            .send(
                "POST",
                "/v2/tasks",
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await
            .expect("request");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            reply.status == 400 || reply.status == 403,
            "{body}: {} {text}",
            reply.status
        );
        assert!(text.contains(message), "{body}: {text}");
    }
    let (_, after) = call(addr, "GET", "/v2/images", Value::Null).await;
    assert_eq!(
        before["images"], after["images"],
        "no image is left of a refused task"
    );
    assert_eq!(sd.stop().await, 0);
}
