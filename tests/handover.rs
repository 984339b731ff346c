//! Restart handover against the real binary and the fake systemd: keep-alive connections
//! parked in the fd store at stop and served by the next process (idle ones, busy ones once
//! their response is sent), the `server.handover_connections` budget, and the deadline after
//! which a parked connection is closed instead.

mod support;

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[cfg(feature = "testing")]
use support::in_flight_at_least;
use support::{Conn, FakeSystemd, SOCKET_UNIT_LISTEN};

fn config(extra: &str) -> String {
    format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{extra}\n")
}

/// The fd-store entries of parked connections.
fn parked(sd: &FakeSystemd) -> Vec<&(String, OwnedFd)> {
    sd.fd_store
        .iter()
        .filter(|(name, _)| name.starts_with("conn-"))
        .collect()
}

/// A small deterministic generator for pauses (xorshift).
struct Pauses(u64);

impl Pauses {
    fn next(&mut self, below_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % below_ms)
    }
}

/// 20 restarts under 8 keep-alive clients that pause for random times between requests, so
/// that requests meet every moment of the restart: no request fails, no response says
/// `Connection: close`, each client keeps its one connection to the end, and each later
/// process takes back all 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_connections_survive_restarts() {
    const RESTARTS: usize = 20;
    const CLIENTS: usize = 8;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;

    let process = Arc::new(AtomicUsize::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let (connected, mut all_connected) = tokio::sync::mpsc::channel(CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (process, stop) = (process.clone(), stop.clone());
            let mut connected = Some(connected.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut pauses = Pauses(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                let mut seen = BTreeSet::new();
                let mut failed = Vec::new();
                loop {
                    let last = stop.load(Ordering::Relaxed);
                    let during = process.load(Ordering::Relaxed);
                    match conn.get("/versions").await {
                        Ok(reply) if reply.status == 200 && !reply.closes() => {
                            seen.insert(during);
                        }
                        Ok(reply) => failed.push(format!(
                            "status {}, close {}",
                            reply.status,
                            reply.closes()
                        )),
                        Err(e) => {
                            failed.push(format!("after process {during}: {e}"));
                            break;
                        }
                    }
                    // Once: the test counts each client's first answer.
                    if !seen.is_empty()
                        && let Some(first) = connected.take()
                    {
                        let _ = first.send(()).await;
                    }
                    if last {
                        break;
                    }
                    tokio::time::sleep(pauses.next(120)).await;
                }
                (seen, failed)
            })
        })
        .collect();

    for _ in 0..CLIENTS {
        all_connected
            .recv()
            .await
            .expect("every client is served once");
    }
    for n in 2..=RESTARTS + 1 {
        assert_eq!(sd.stop().await, 0);
        assert_eq!(
            parked(&sd).len(),
            CLIENTS,
            "every connection parked at stop {}",
            n - 1
        );
        sd.start().await;
        process.store(n, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (seen, failed) = client.await.expect("join");
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            seen.contains(&1) && seen.contains(&(RESTARTS + 1)),
            "one connection, served by the first process and the last: {seen:?}"
        );
    }
    let logs = sd.logs();
    assert_eq!(
        logs.matches(&format!("served={CLIENTS} closed=0")).count(),
        RESTARTS,
        "{logs}"
    );
    assert!(parked(&sd).is_empty(), "taken out of the store once served");
    assert_eq!(sd.stop().await, 0);
}

/// A request in flight at stop finishes with its connection kept open, and the next
/// request on that connection is served by the next process.
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_busy_at_stop_is_handed_over_after_its_response() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let mut conn = Conn::open(addr).await.expect("connect");
    let pid = sd.pid();
    let held = tokio::spawn(async move {
        let reply = conn.get("/_glint/drip/5/100").await;
        (conn, reply)
    });
    in_flight_at_least(&sd, 1).await;
    sd.signal(nix::sys::signal::Signal::SIGTERM);
    let (mut conn, reply) = held.await.expect("join");
    let reply = reply.expect("the request in flight completes");
    assert_eq!(reply.status, 200);
    assert!(
        !reply.closes(),
        "the connection is kept for the next process"
    );
    assert_eq!(sd.wait_exit().await, 0);
    assert_eq!(parked(&sd).len(), 1);
    sd.start().await;
    assert_ne!(sd.pid(), pid);
    let next = conn
        .get("/versions")
        .await
        .expect("served on the same connection");
    assert_eq!(next.status, 200);
    assert_eq!(sd.stop().await, 0);
}

/// Bytes of a next request read together with the last response's request (a pipelining
/// client) cannot go back into the socket: that connection is not parked, its request is
/// served by the stopping process with `Connection: close`.
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelined_request_already_read_is_served_before_the_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /_glint/sleep/500 HTTP/1.1\r\nHost: g\r\n\r\nGET /versions HTTP/1.1\r\nHo")
        .await
        .expect("write");
    in_flight_at_least(&sd, 1).await;
    sd.signal(nix::sys::signal::Signal::SIGTERM);
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("slept") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the first response");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"st: g\r\n\r\n")
        .await
        .expect("write the rest");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("read to the close");
    let rest = String::from_utf8_lossy(&rest).to_lowercase();
    assert!(
        rest.starts_with("http/1.1 200") && rest.contains("connection: close"),
        "{rest}"
    );
    assert_eq!(sd.wait_exit().await, 0);
    assert!(parked(&sd).is_empty(), "{:?}", sd.fd_store);
}

/// Beyond `server.handover_connections` connections close at stop as without a hand-over;
/// a parked connection older than the deadline when the next process starts is closed, not
/// served, and taken out of the store all the same; without `$FDSTORE` nothing is parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_and_the_deadline_bound_what_is_handed_over() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("handover_connections = 2"));
    sd.start().await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::open(addr).await.expect("connect");
        assert_eq!(conn.get("/versions").await.expect("served").status, 200);
        conns.push(conn);
    }
    assert_eq!(sd.stop().await, 0);
    assert_eq!(parked(&sd).len(), 2, "{:?}", sd.fd_store);

    // One of the two parked long ago: its name says when.
    let entry = sd
        .fd_store
        .iter_mut()
        .find(|(name, _)| name.starts_with("conn-"))
        .expect("a parked connection");
    entry.0 = "conn-0-1000".into();
    sd.start().await;
    let mut answered = 0;
    for conn in &mut conns {
        if let Ok(reply) = conn.get("/versions").await {
            assert_eq!(reply.status, 200);
            answered += 1;
        }
    }
    assert_eq!(
        answered, 1,
        "the one parked in time is served, the others are closed"
    );
    assert!(parked(&sd).is_empty(), "{:?}", sd.fd_store);
    assert!(sd.logs().contains("served=1 closed=1"), "{}", sd.logs());
    assert_eq!(sd.stop().await, 0);

    // A service manager that does not say it keeps an fd store ($FDSTORE) gets nothing: a
    // store that is not there would drop the connection.
    sd.env.retain(|(key, _)| key != "FDSTORE");
    sd.write_config(&config(""));
    sd.start().await;
    let mut conn = Conn::open(addr).await.expect("connect");
    assert_eq!(conn.get("/versions").await.expect("served").status, 200);
    assert_eq!(sd.stop().await, 0);
    assert!(parked(&sd).is_empty(), "{:?}", sd.fd_store);
}

/// Without feature `testing` the test that holds a request open across the stop is not
/// compiled (its endpoint does not exist); this fails in its place, so that a plain
/// `cargo test` does not pass without it.
#[cfg(not(feature = "testing"))]
#[test]
fn needs_feature_testing() {
    panic!(
        "not run: a_connection_busy_at_stop_is_handed_over_after_its_response, \
         a_pipelined_request_already_read_is_served_before_the_close (tests/handover.rs). They \
         hold a request open through /_glint/drip and /_glint/sleep, which glint serves only \
         when built with feature `testing`. Run `cargo test --features testing`."
    );
}

/// The temporary file an upload of image `id` writes in the default store, and its size.
fn upload_in_progress(sd: &FakeSystemd, id: &str) -> Option<u64> {
    let dir = sd.path("state/images");
    support::file_names(&dir)
        .into_iter()
        .find(|name| name.starts_with(".upload-") && name.contains(id))
        .and_then(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|meta| meta.len())
}

/// Waits until the upload of image `id` has written more than `beyond` bytes: a phase with
/// no notification.
async fn until_written(sd: &FakeSystemd, id: &str, beyond: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while upload_in_progress(sd, id).is_none_or(|n| n <= beyond) {
        assert!(tokio::time::Instant::now() < deadline, "the upload stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With `server.handover_transfers`, an upload in flight across 3 restarts: each stop
/// pauses it and parks its connection with its record, each start carries it on from its
/// temporary file; the client sees one request, answered 204, and the image is active with
/// the checksums of exactly the bytes sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_in_flight_is_carried_on_across_restarts() {
    const CHUNK: usize = 256 << 10;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("handover_transfers = true"));
    sd.start().await;
    let id = support::create_image(addr).await;
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let data: Vec<u8> = (0..48 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let length = data.len().to_string();
    let upload = {
        let (id, chunks) = (id.clone(), support::chunks(&data, CHUNK));
        tokio::spawn(async move {
            support::send_slowly(
                addr,
                "PUT",
                &format!("/v2/images/{id}/file"),
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-length", &length),
                ],
                chunks,
                Duration::from_millis(8),
            )
            .await
        })
    };
    let mut before = 0;
    for restart in 1..=3 {
        // Some of the body arrives in this process first.
        until_written(&sd, &id, before + (2 << 20)).await;
        assert_eq!(sd.stop().await, 0);
        let transfers: Vec<_> = sd
            .fd_store
            .iter()
            .filter(|(name, _)| name.starts_with("xfer-"))
            .collect();
        assert_eq!(transfers.len(), 1, "restart {restart}: {:?}", sd.fd_store);
        before = upload_in_progress(&sd, &id).expect("the temporary file stays");
        sd.start().await;
    }
    let reply = upload.await.expect("join").expect("one request, answered");
    assert_eq!(
        reply.status,
        204,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let image = support::show_image(addr, &id).await;
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], data.len());
    assert_eq!(image["checksum"], support::md5_hex(&data));
    use sha2::Digest;
    assert_eq!(
        image["os_hash_value"],
        hex::encode(sha2::Sha512::digest(&data))
    );
    let mut conn = Conn::open(addr).await.expect("connect");
    let download = conn
        .get(&format!("/v2/images/{id}/file"))
        .await
        .expect("download");
    assert!(download.body == data, "byte-exact");
    let logs = sd.logs();
    assert_eq!(
        logs.matches("upload handed to the next process").count(),
        3,
        "{logs}"
    );
    assert_eq!(logs.matches("carrying on an upload").count(), 3, "{logs}");
    assert!(
        sd.fd_store
            .iter()
            .all(|(name, _)| !name.starts_with("xfer-")),
        "taken out of the store"
    );
    assert!(support::file_names(&sd.path("state/handover")).is_empty());
    assert_eq!(sd.stop().await, 0);
}

/// An upload handed over that the next process cannot carry on (here its record is gone)
/// fails as a cut upload does: its connection closes, its image is back in `queued` and its
/// temporary file is removed. A chunked upload in flight at the same stop is not paused: it
/// holds the stop and is answered by the old process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_not_carried_on_is_undone_and_a_chunked_one_finishes_before_the_stop() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("handover_transfers = true"));
    sd.start().await;
    let (paused, chunked) = (
        support::create_image(addr).await,
        support::create_image(addr).await,
    );
    let data = vec![7_u8; 16 << 20];
    let send = |id: String, length: Option<String>| {
        let chunks = support::chunks(&data, 64 << 10);
        tokio::spawn(async move {
            let mut headers = vec![("content-type", "application/octet-stream")];
            if let Some(length) = &length {
                headers.push(("content-length", length));
            }
            support::send_slowly(
                addr,
                "PUT",
                &format!("/v2/images/{id}/file"),
                &headers,
                chunks,
                Duration::from_millis(4),
            )
            .await
        })
    };
    let paused_upload = send(paused.clone(), Some(data.len().to_string()));
    let chunked_upload = send(chunked.clone(), None);
    until_written(&sd, &paused, 1 << 20).await;
    until_written(&sd, &chunked, 1 << 20).await;
    assert_eq!(sd.stop().await, 0);
    let chunked_reply = chunked_upload.await.expect("join").expect("answered");
    assert_eq!(
        chunked_reply.status, 204,
        "the chunked upload finished first"
    );
    let records = support::file_names(&sd.path("state/handover"));
    assert_eq!(records.len(), 1, "{records:?}");
    std::fs::remove_file(sd.path("state/handover").join(&records[0])).expect("remove");
    sd.start().await;
    let reply = paused_upload.await.expect("join");
    assert!(reply.is_err(), "the connection closes: {reply:?}");
    assert_eq!(support::show_image(addr, &paused).await["status"], "queued");
    assert_eq!(
        upload_in_progress(&sd, &paused),
        None,
        "its temporary file is removed"
    );
    assert_eq!(
        support::show_image(addr, &chunked).await["status"],
        "active"
    );
    assert!(
        sd.fd_store
            .iter()
            .all(|(name, _)| !name.starts_with("xfer-")),
        "{:?}",
        sd.fd_store
    );
    assert_eq!(sd.stop().await, 0);
}
