//! The data path across the lifecycle, against the real binary with the harness playing
//! systemd: uploads and downloads in flight across reloads, a data directory added by
//! reload, stop during an upload, kill -9 mid-upload, and a full disk.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use support::{
    Conn, FakeSystemd, SOCKET_UNIT_LISTEN, chunks, create_image, file_names, md5_hex, read_slowly,
    send_slowly, show_image, upload_image, wait_status,
};

const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");

fn config(extra: &str) -> String {
    format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{extra}\n")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_and_a_slow_download_survive_50_reloads_byte_exact() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let text = config("");
    sd.write_config(&text);
    sd.start().await;

    let stored = pattern(8 << 20, 7);
    let stored_id = create_image(addr).await;
    assert_eq!(upload_image(addr, &stored_id, &stored).await.status, 204);

    let incoming = pattern(3 << 20, 99);
    let incoming_id = create_image(addr).await;
    let uploading = upload_slowly(addr, &incoming_id, &incoming, Duration::from_millis(40));
    let path = format!("/v2/images/{stored_id}/file");
    let downloading =
        tokio::spawn(async move { read_slowly(addr, &path, Duration::from_millis(60)).await });

    for _ in 0..50 {
        sd.write_config(&text);
        sd.reload().await;
    }
    let uploaded = uploading.await.expect("join").expect("upload completes");
    assert_eq!(uploaded.status, 204, "{:?}", uploaded.body);
    let downloaded = downloading
        .await
        .expect("join")
        .expect("download completes");
    assert_eq!(downloaded.status, 200);
    assert!(downloaded.body[..] == stored[..], "download is byte-exact");

    let shown = show_image(addr, &incoming_id).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["checksum"], md5_hex(&incoming));
    let mut conn = Conn::open(addr).await.expect("connect");
    let copy = conn
        .get(&format!("/v2/images/{incoming_id}/file"))
        .await
        .expect("download");
    assert!(copy.body[..] == incoming[..], "upload is byte-exact");
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_concurrent_uploads_to_one_image_one_wins() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let id = create_image(addr).await;
    let data = pattern(1 << 20, 11);
    let first = upload_slowly(addr, &id, &data, Duration::from_millis(30));
    status_saving(addr, &id).await;
    assert_eq!(upload_image(addr, &id, b"intruder").await.status, 409);
    let first = first.await.expect("join").expect("answered");
    assert_eq!(first.status, 204);
    assert_eq!(show_image(addr, &id).await["checksum"], md5_hex(&data));
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_directory_added_by_reload_receives_the_next_upload() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let only_a = "[[store.datadirs]]\npath = \"a\"\npriority = 10\n";
    let a_and_b = format!("{only_a}[[store.datadirs]]\npath = \"b\"\npriority = 50\n");
    sd.write_config(&config(only_a));
    sd.start().await;
    let state = sd.path("state");

    let first = create_image(addr).await;
    assert_eq!(upload_image(addr, &first, b"first").await.status, 204);
    assert_eq!(file_names(&state.join("a")), vec![first.clone()]);

    sd.write_config(&config(&a_and_b));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    let second = create_image(addr).await;
    assert_eq!(upload_image(addr, &second, b"second").await.status, 204);
    assert_eq!(file_names(&state.join("b")), vec![second.clone()]);

    // Dropping a directory that holds an image is refused, and says why.
    sd.write_config(&config("[[store.datadirs]]\npath = \"b\"\npriority = 50\n"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 image") && out.contains("/a"), "{out}");
    let mut conn = Conn::open(addr).await.expect("connect");
    let data = conn
        .get(&format!("/v2/images/{first}/file"))
        .await
        .expect("read");
    assert_eq!(&data.body[..], b"first");
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_an_upload_finish_within_shutdown_timeout() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("shutdown_timeout = \"30s\""));
    sd.start().await;
    let id = create_image(addr).await;
    let data = pattern(1 << 20, 3);
    let uploading = upload_slowly(addr, &id, &data, Duration::from_millis(60));
    status_saving(addr, &id).await;
    sd.signal(Signal::SIGTERM);
    let reply = uploading
        .await
        .expect("join")
        .expect("the upload completes");
    assert_eq!(reply.status, 204);
    assert_eq!(sd.wait_exit().await, 0);
    sd.start().await;
    let shown = show_image(addr, &id).await;
    assert_eq!(
        (shown["status"].as_str(), shown["size"].as_u64()),
        (Some("active"), Some(1 << 20))
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_by_stop_or_kill_leaves_no_data_and_a_queued_image() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("shutdown_timeout = \"1s\""));
    sd.start().await;
    let images_dir = sd.path("state").join("images");

    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let id = create_image(addr).await;
        let data = pattern(2 << 20, 5);
        let uploading = upload_slowly(addr, &id, &data, Duration::from_millis(200));
        status_saving(addr, &id).await;
        sd.signal(signal);
        let code = sd.wait_exit().await;
        if signal == Signal::SIGTERM {
            assert_eq!(code, 0, "a stop that cuts an upload still exits 0");
        }
        uploading.abort();
        sd.start().await;
        let shown = show_image(addr, &id).await;
        assert_eq!(shown["status"], "queued", "{signal}: {shown}");
        assert!(shown["size"].is_null());
        assert!(
            file_names(&images_dir).is_empty(),
            "{signal}: {:?}",
            file_names(&images_dir)
        );
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_413_with_no_orphan_and_a_queued_image() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let mut sd = FakeSystemd::new();
    let small = sd.path("state").join("small");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount a 1 MiB tmpfs");
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("[[store.datadirs]]\npath = \"small\"\n"));
    sd.start().await;

    // Size unknown (chunked): the disk fills while writing.
    let id = create_image(addr).await;
    let reply = send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[OCTETS],
        chunks(&pattern(3 << 20, 1), 256 << 10),
        Duration::ZERO,
    )
    .await
    .expect("answered");
    let outcome = (
        reply.status,
        show_image(addr, &id).await["status"].clone(),
        file_names(&small),
    );
    // Size declared: refused before writing.
    let declared = create_image(addr).await;
    let refused = send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{declared}/file"),
        &[OCTETS, ("x-openstack-image-size", "3145728")],
        chunks(&pattern(3 << 20, 1), 256 << 10),
        Duration::ZERO,
    )
    .await
    .map(|r| r.status);
    assert_eq!(sd.stop().await, 0);
    let _ = std::process::Command::new("umount").arg(&small).status();

    assert_eq!(outcome.0, 413, "{:?}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("413"));
    assert_eq!(outcome.1, "queued");
    assert!(outcome.2.is_empty(), "{:?}", outcome.2);
    assert_eq!(refused, Ok(413));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_and_a_stage_cut_by_the_drain_deadline_release_their_image_at_once() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let text = config("drain_timeout = \"1s\"");
    sd.write_config(&text);
    sd.start().await;
    let state = sd.path("state");
    for (what, claimed) in [("file", "saving"), ("stage", "uploading")] {
        let id = create_image(addr).await;
        let cut = put_slowly(
            addr,
            &id,
            what,
            &pattern(2 << 20, 4),
            Duration::from_millis(200),
        );
        wait_status(addr, &id, claimed).await;
        sd.reload().await;
        let reply = cut.await.expect("join");
        assert!(reply.is_err(), "{what}: the cut transfer got {reply:?}");
        // The retry comes right after the cut and succeeds.
        let data = pattern(300 << 10, 5);
        let retried = send_slowly(
            addr,
            "PUT",
            &format!("/v2/images/{id}/{what}"),
            &[OCTETS],
            chunks(&data, 64 << 10),
            Duration::ZERO,
        )
        .await
        .expect("answered");
        assert_eq!(retried.status, 204, "{what}: {:?}", retried.body);
        let shown = show_image(addr, &id).await;
        let expected = if what == "file" {
            "active"
        } else {
            "uploading"
        };
        assert_eq!(shown["status"], expected, "{what}: {shown}");
        assert_eq!(shown["size"].as_u64(), Some(data.len() as u64), "{shown}");
        let leftovers: Vec<String> = [state.join("images"), state.join("staging")]
            .iter()
            .flat_map(|d| file_names(d))
            .filter(|f| f.starts_with(".upload-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_stops_arriving_is_cut_and_its_image_released() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("body_read_timeout = \"1s\""));
    sd.start().await;
    let id = create_image(addr).await;
    // The head goes at once; the body's first byte would come only after 3 s.
    let stalled = send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[OCTETS],
        chunks(&pattern(128 << 10, 6), 64 << 10),
        Duration::from_secs(3),
    )
    .await;
    if let Ok(reply) = &stalled {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert!(String::from_utf8_lossy(&reply.body).contains("body_read_timeout"));
    }
    assert_eq!(show_image(addr, &id).await["status"], "queued");
    assert!(file_names(&sd.path("state").join("images")).is_empty());
    assert_eq!(upload_image(addr, &id, b"on time").await.status, 204);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_max_transfers_an_upload_waits_then_gets_503_with_retry_after() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("max_transfers = 1\ntransfer_wait = \"1s\""));
    sd.start().await;
    let first = create_image(addr).await;
    let data = pattern(1 << 20, 8);
    let uploading = upload_slowly(addr, &first, &data, Duration::from_millis(150));
    wait_status(addr, &first, "saving").await;
    let second = create_image(addr).await;
    let refused = send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{second}/file"),
        &[OCTETS],
        chunks(b"waits its turn", 64),
        Duration::ZERO,
    )
    .await
    .expect("answered");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(
        refused.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = String::from_utf8_lossy(&refused.body);
    assert!(body.contains("503 Service Unavailable"), "{body}");
    assert_eq!(show_image(addr, &second).await["status"], "queued");
    let first_reply = uploading.await.expect("join").expect("answered");
    assert_eq!(first_reply.status, 204);
    assert_eq!(upload_image(addr, &second, b"its turn").await.status, 204);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_leaves_mid_transfer_releases_the_image() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let state = sd.path("state");
    for (what, claimed, done) in [
        ("file", "saving", "active"),
        ("stage", "uploading", "uploading"),
    ] {
        let id = create_image(addr).await;
        let leaving = put_slowly(
            addr,
            &id,
            what,
            &pattern(2 << 20, 12),
            Duration::from_millis(100),
        );
        wait_status(addr, &id, claimed).await;
        // The client goes away: its connection closes with the body half sent.
        leaving.abort();
        wait_status(addr, &id, "queued").await;
        let leftovers: Vec<String> = [state.join("images"), state.join("staging")]
            .iter()
            .flat_map(|d| file_names(d))
            .filter(|f| f.starts_with(".upload-") || f.contains(&id))
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
        let data = pattern(200 << 10, 13);
        let retried = send_slowly(
            addr,
            "PUT",
            &format!("/v2/images/{id}/{what}"),
            &[OCTETS],
            chunks(&data, 64 << 10),
            Duration::ZERO,
        )
        .await
        .expect("answered");
        assert_eq!(retried.status, 204, "{what}: {:?}", retried.body);
        assert_eq!(show_image(addr, &id).await["status"], done);
    }
    assert_eq!(sd.stop().await, 0);
}

/// Uploads `data` in 64 KiB chunks, one every `pause`, in the background.
fn upload_slowly(
    addr: SocketAddr,
    id: &str,
    data: &[u8],
    pause: Duration,
) -> tokio::task::JoinHandle<Result<support::Reply, String>> {
    put_slowly(addr, id, "file", data, pause)
}

/// PUTs `data` to the image's `what` (`file` or `stage`) in 64 KiB chunks, one every
/// `pause`, in the background.
fn put_slowly(
    addr: SocketAddr,
    id: &str,
    what: &str,
    data: &[u8],
    pause: Duration,
) -> tokio::task::JoinHandle<Result<support::Reply, String>> {
    let path = format!("/v2/images/{id}/{what}");
    let body = chunks(data, 64 << 10);
    tokio::spawn(async move { send_slowly(addr, "PUT", &path, &[OCTETS], body, pause).await })
}

/// Waits until the upload has begun (the image is `saving`): a phase with no notification.
async fn status_saving(addr: SocketAddr, id: &str) {
    wait_status(addr, id, "saving").await;
}

/// Clients that hang up in the middle of their writes (the request future dropped at any
/// point of its transaction) leave the database as usable as before: meanwhile every other
/// client's PATCH succeeds, and afterwards patches and creates do, on every engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_hanging_up_mid_write_leave_the_database_usable() {
    use tokio::io::AsyncWriteExt;

    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(create_image(addr).await);
    }
    let patch = |value: String| {
        let body = serde_json::to_vec(&json!([{"op": "replace", "path": "/name", "value": value}]))
            .expect("json");
        (body.len(), body)
    };
    let mut quitters = tokio::task::JoinSet::new();
    for n in 0..300u64 {
        let (len, body) = patch(format!("quit-{n}"));
        let id = ids[n as usize % ids.len()].clone();
        quitters.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "PATCH /v2/images/{id} HTTP/1.1\r\nHost: glint\r\n\
                 Content-Type: application/openstack-images-v2.1-json-patch\r\n\
                 Content-Length: {len}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            // Gone somewhere between the request's arrival and its answer.
            tokio::time::sleep(Duration::from_micros((n * 7919) % 20_000)).await;
        });
    }
    let mut stayers = tokio::task::JoinSet::new();
    for id in ids.iter().take(4) {
        let id = id.clone();
        stayers.spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            for round in 0..40 {
                let (status, body) = conn
                    .json(
                        "PATCH",
                        &format!("/v2/images/{id}"),
                        "application/openstack-images-v2.1-json-patch",
                        &json!([{"op": "replace", "path": "/name", "value": format!("stay-{round}")}]),
                    )
                    .await
                    .expect("patch");
                assert_eq!(status, 200, "{body}");
            }
        });
    }
    while let Some(done) = quitters.join_next().await {
        done.expect("quitter");
    }
    while let Some(done) = stayers.join_next().await {
        done.expect("no PATCH of a client that stayed failed");
    }
    for id in &ids {
        let mut conn = Conn::open(addr).await.expect("connect");
        let (status, body) = conn
            .json(
                "PATCH",
                &format!("/v2/images/{id}"),
                "application/openstack-images-v2.1-json-patch",
                &json!([{"op": "replace", "path": "/name", "value": "after"}]),
            )
            .await
            .expect("patch");
        assert_eq!(status, 200, "{body}");
    }
    create_image(addr).await;
    assert!(!sd.logs().contains("transaction depth"), "{}", sd.logs());
    assert_eq!(sd.stop().await, 0);
}
