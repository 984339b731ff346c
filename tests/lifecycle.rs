//! The lifecycle over the real systemd protocol, against the real binary: socket
//! activation, reload under keep-alive load, rejected reloads, worker-pool resize, stop,
//! fd-store restart, drain deadline and the draining bound.

mod support;

use std::collections::BTreeSet;
#[cfg(feature = "testing")]
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "testing")]
use nix::sys::signal::Signal;
#[cfg(feature = "testing")]
use support::in_flight_at_least;
use support::{
    Conn, FakeSystemd, PATIENCE, SELF_BOUND_LISTEN, SOCKET_UNIT_LISTEN, field, get_once,
    status_until, stored_name,
};

/// A config for a glint passed its socket by the fake socket unit.
fn config(extra: &str) -> String {
    format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{extra}\n")
}

/// A config for a glint that binds its listener itself.
fn self_bound(extra: &str) -> String {
    format!("[server]\nlisten = [\"{SELF_BOUND_LISTEN}\"]\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_activation_uses_the_passed_socket_by_name() {
    let mut sd = FakeSystemd::new();
    let passed = sd.add_socket_unit("api");
    sd.write_config(&config(""));
    sd.start().await;

    let reply = get_once(passed, "/versions").await.expect("served");
    assert_eq!(reply.status, 200);
    let status = sd.status().await;
    let listeners = status["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1, "{status:#}");
    assert_eq!(listeners[0]["name"], "api");
    assert_eq!(listeners[0]["origin"], "socket-unit");
    assert_eq!(listeners[0]["addr"], passed.to_string());
    assert!(
        std::net::TcpStream::connect(SOCKET_UNIT_LISTEN).is_err(),
        "server.listen must not be bound when systemd passes a socket"
    );
    assert!(
        !sd.history.iter().any(|r| field(r, "FDSTORE").is_some()),
        "a socket unit's socket is not pushed to the fd store"
    );

    // Another address, refused by name before anything could bind it.
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], 2));
    sd.write_config(&format!("[server]\nlisten = [\"{elsewhere}\"]\n"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("server.listen") && out.contains("glint.socket"),
        "{out}"
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_storm_under_keep_alive_load_fails_nothing() {
    const RELOADS: usize = 200;
    const CLIENTS: usize = 8;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("[log]\nlevel = \"info\""));
    sd.start().await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            let mut generations = BTreeSet::new();
            let mut requests = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match conn.get("/versions").await {
                    Ok(reply) if reply.status == 200 && !reply.closes() => {
                        generations.insert(reply.generation());
                        requests += 1;
                    }
                    Ok(reply) => return Err(format!("unexpected reply {reply:?}")),
                    Err(e) => return Err(e),
                }
            }
            Ok((generations, requests, conn.is_closed()))
        }));
    }

    let started = Instant::now();
    for i in 0..RELOADS {
        let level = if i % 2 == 0 { "warn" } else { "info" };
        sd.write_config(&config(&format!("[log]\nlevel = \"{level}\"")));
        let (reloading, ready) = sd.reload().await;
        let usec: u64 = field(&reloading, "MONOTONIC_USEC")
            .expect("RELOADING=1 carries MONOTONIC_USEC")
            .parse()
            .expect("a number");
        assert!(usec > 0);
        let status = field(&ready, "STATUS").expect("STATUS with READY");
        assert!(status.starts_with("serving generation"), "{status}");
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);

    for client in clients {
        let (generations, requests, closed) = client.await.expect("join").expect("no errors");
        assert!(requests > 0);
        assert!(!closed, "the keep-alive connection survived");
        assert!(
            generations.len() >= 2,
            "one connection is served by several generations: {generations:?}"
        );
    }
    let count = |key: &str| {
        sd.history
            .iter()
            .filter(|r| field(r, key) == Some("1"))
            .count()
    };
    assert_eq!(count("RELOADING"), RELOADS);
    assert_eq!(count("READY"), RELOADS + 1);
    // How fast reloads are is the benchmark's to say (tests/bench/bench.py), not a test's.
    eprintln!("{RELOADS} reloads under load took {elapsed:?}");
    let status = sd.status().await;
    assert_eq!(status["current"]["id"], (RELOADS + 1) as u64);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_config_at_reload_keeps_the_old_generation() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let good = config("");
    sd.write_config(&good);
    sd.start().await;
    let mut conn = Conn::open(addr).await.expect("connect");
    assert_eq!(conn.get("/versions").await.expect("served").generation(), 1);

    let config_path = sd.config_path().display().to_string();
    let cases: [(&str, Option<&str>, &[&str]); 4] = [
        (
            "syntax",
            Some("[server\nworkers = 2\n"),
            &["TOML syntax", &config_path],
        ),
        (
            "unknown key",
            Some("[server]\nworkerz = 2\n"),
            &["workerz", &config_path],
        ),
        (
            "bad value",
            Some("[server]\nworkers = \"many\"\n"),
            &["server.workers", &config_path],
        ),
        ("missing file", None, &["does not exist", &config_path]),
    ];
    for (case, text, needles) in cases {
        match text {
            Some(text) => sd.write_config(text),
            None => std::fs::remove_file(sd.config_path()).expect("remove config"),
        }
        let (code, out) = sd.ctl(&["reload"]).await;
        assert_eq!(code, 1, "{case}: ctl reload must fail: {out}");
        let ready = sd.wait_for(|n| n.has("READY", "1")).await;
        let status = field(&ready, "STATUS").expect("STATUS").to_string();
        assert!(status.starts_with("reload failed:"), "{case}: {status}");
        assert_eq!(field(&ready, "ERRNO"), Some("22"), "{case}");
        for needle in needles {
            assert!(
                out.contains(needle),
                "{case}: ctl output lacks {needle}: {out}"
            );
            assert!(
                status.contains(needle),
                "{case}: STATUS lacks {needle}: {status}"
            );
        }
        let reply = conn.get("/versions").await.expect("still served");
        assert_eq!((reply.status, reply.generation()), (200, 1), "{case}");
    }

    sd.write_config("[server\n");
    let (_, ready) = sd.reload().await;
    assert!(field(&ready, "STATUS").is_some_and(|s| s.contains("TOML syntax")));

    sd.write_config(&good);
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(conn.get("/versions").await.expect("served").generation(), 2);
    let status = sd.status().await;
    assert_eq!(status["reloads_rejected"], 5);
    assert_eq!(status["last_reload"]["outcome"], "applied");
    assert_eq!(sd.stop().await, 0);
}

fn threads_named(pid: i32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|t| t.ok())
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

/// A new thread names itself after it starts, so its count settles rather than jumps.
async fn assert_threads(pid: i32, name: &str, expected: usize) {
    let deadline = Instant::now() + PATIENCE;
    while threads_named(pid, name) != expected {
        assert!(
            Instant::now() < deadline,
            "{} threads named {name}, expected {expected}",
            threads_named(pid, name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workers_change_by_reload_resizes_the_pool() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("workers = 1"));
    sd.start().await;
    let pid = sd.pid();
    assert_threads(pid, "glint-p1", 1).await;
    let mut old_conn = Conn::open(addr).await.expect("connect");
    assert_eq!(old_conn.get("/versions").await.expect("served").status, 200);

    sd.write_config(&config("workers = 3"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 workers"), "{out}");

    // The connection on the replaced pool gets its answer from the new generation and is
    // told to close; it was not closed while idle.
    let reply = old_conn.get("/versions").await.expect("served");
    assert_eq!(reply.generation(), 2);
    assert!(
        reply.closes(),
        "a retired pool's connection is told to close"
    );
    let reply = get_once(addr, "/versions").await.expect("served");
    assert!(!reply.closes());

    let status = status_until(&sd, |s| s["pools"].as_array().is_some_and(|p| p.len() == 1)).await;
    assert_eq!(status["pools"][0]["workers"], 3);
    assert_eq!(status["pools"][0]["live_workers"], 3);
    assert_threads(pid, "glint-p2", 3).await;
    assert_threads(pid, "glint-p1", 0).await;
    assert_eq!(sd.stop().await, 0);
}

// Holds a request open through feature `testing`: listed in `needs_feature_testing`.
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_the_request_in_flight_and_accepts_nothing_after() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    // Without a hand-over (tests/handover.rs has it), so the response says to close.
    sd.write_config(&config(
        "shutdown_timeout = \"30s\"\nhandover_connections = 0",
    ));
    sd.start().await;

    let mut conn = Conn::open(addr).await.expect("connect");
    let slow = tokio::spawn(async move { conn.get("/_glint/sleep/2000").await });
    in_flight_at_least(&sd, 1).await;

    sd.signal(Signal::SIGTERM);
    sd.wait_for(|n| n.has("STOPPING", "1")).await;
    let extend = sd
        .wait_for(|n| n.get("EXTEND_TIMEOUT_USEC").is_some())
        .await;
    let usec: u64 = field(&extend, "EXTEND_TIMEOUT_USEC")
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(
        usec >= 1_000_000,
        "asks for the time the slow request needs: {usec}"
    );

    // systemd still holds the socket: a new connection queues, but this process must not
    // take it.
    let mut late = std::net::TcpStream::connect(addr).expect("queued in the backlog");
    late.write_all(b"GET /versions HTTP/1.1\r\nHost: glint\r\n\r\n")
        .expect("write");

    let reply = slow
        .await
        .expect("join")
        .expect("the slow request completes");
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"slept\n");
    assert!(reply.closes());
    assert_eq!(sd.wait_exit().await, 0);

    late.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    let unread = late.read(&mut buf);
    assert!(
        matches!(&unread, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the stopping process answered a new connection: {unread:?}"
    );

    // The next process serves the connection that waited in the backlog.
    sd.start().await;
    late.set_nonblocking(false).expect("blocking");
    late.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let n = late.read(&mut buf).expect("answered by the next process");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_through_the_fd_store_refuses_no_connection() {
    const RESTARTS: usize = 20;
    let mut sd = FakeSystemd::new();
    sd.write_config(&self_bound(""));
    sd.start().await;
    let addr = sd.bound_addr(SELF_BOUND_LISTEN).await;
    let name = stored_name(&SELF_BOUND_LISTEN);
    assert!(
        sd.fd_store.iter().any(|(n, _)| *n == name),
        "a listener glint bound itself goes to the fd store as {name}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match get_once(addr, "/versions").await {
                    Ok(reply) if reply.status == 200 => ok += 1,
                    Ok(reply) => failed.push(format!("status {}", reply.status)),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };

    // A keep-alive client that moves to a new connection when told to close.
    let keep_alive = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut conn = Conn::open(addr).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                match conn.get("/versions").await {
                    Ok(reply) if reply.status == 200 => {
                        ok += 1;
                        if reply.closes() {
                            conn = Conn::open(addr).await.expect("reconnect");
                        }
                    }
                    Ok(reply) => failed.push(format!("status {}", reply.status)),
                    Err(e) => {
                        failed.push(e);
                        conn = Conn::open(addr).await.expect("reconnect");
                    }
                }
            }
            (ok, failed)
        })
    };

    for _ in 0..RESTARTS {
        assert_eq!(sd.stop().await, 0);
        sd.start().await;
    }
    let status = sd.status().await;
    assert_eq!(status["listeners"][0]["origin"], "fd-store", "{status:#}");
    assert_eq!(
        sd.bound_addr(SELF_BOUND_LISTEN).await,
        addr,
        "the socket bound at the first start came back through the fd store"
    );
    stop.store(true, Ordering::Relaxed);
    for (kind, task) in [
        ("new connection per request", client),
        ("keep-alive", keep_alive),
    ] {
        let (ok, failed) = task.await.expect("join");
        assert!(
            failed.is_empty(),
            "{kind}: {} failed of {}: {:?}",
            failed.len(),
            ok,
            &failed[..failed.len().min(5)]
        );
        // A restart takes about as long as a request waits for it: roughly one request
        // per restart gets through on a new connection.
        assert!(ok >= RESTARTS as u64 / 2, "{kind}: {ok}");
    }
    assert_eq!(sd.stop().await, 0);
}

// Holds a request open through feature `testing`: listed in `needs_feature_testing`.
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_generations_stay_within_the_bound() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let text =
        config("max_draining_generations = 2\ndrain_timeout = \"60s\"\nshutdown_timeout = \"1s\"");
    sd.write_config(&text);
    sd.start().await;

    // One request held across many reloads: it finishes, and only its generation drains.
    let mut conn = Conn::open(addr).await.expect("connect");
    let held = tokio::spawn(async move { conn.get("/_glint/drip/6/500").await });
    in_flight_at_least(&sd, 1).await;
    for _ in 0..30 {
        sd.reload().await;
        let status = sd.status().await;
        let draining = status["draining"].as_array().map_or(0, Vec::len);
        assert!(draining <= 2, "{status:#}");
    }
    let reply = held
        .await
        .expect("join")
        .expect("the held request completes");
    assert_eq!((reply.status, reply.generation()), (200, 1));
    assert_eq!(reply.body.iter().filter(|b| **b == b'\n').count(), 6);

    // A held request in each of three generations: the third reload cuts the oldest.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::open(addr).await.expect("connect");
        let before = sd.status().await["current"]["in_flight"]
            .as_u64()
            .unwrap_or(0);
        held.push(tokio::spawn(async move {
            conn.get("/_glint/sleep/60000").await
        }));
        in_flight_at_least(&sd, before + 1).await;
        sd.reload().await;
        let status = sd.status().await;
        assert!(
            status["draining"].as_array().map_or(0, Vec::len) <= 2,
            "{status:#}"
        );
    }
    let first = held.remove(0);
    let cut = tokio::time::timeout(PATIENCE, first)
        .await
        .expect("cut promptly")
        .expect("join");
    assert!(
        cut.is_err(),
        "the oldest draining generation's request is cut: {cut:?}"
    );
    assert!(
        sd.logs().contains("too many draining generations"),
        "{}",
        sd.logs()
    );
    assert_eq!(sd.stop().await, 0);
    for rest in held {
        assert!(
            rest.await.expect("join").is_err(),
            "cut at shutdown_timeout"
        );
    }
    assert!(sd.logs().contains("shutdown_timeout passed"));
}

// Holds a request open through feature `testing`: listed in `needs_feature_testing`.
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_timeout_cuts_what_outlives_it_and_says_so() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("drain_timeout = \"1s\""));
    sd.start().await;
    let mut conn = Conn::open(addr).await.expect("connect");
    let held = tokio::spawn(async move { conn.get("/_glint/sleep/60000").await });
    in_flight_at_least(&sd, 1).await;
    sd.reload().await;
    let outcome = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("cut")
        .expect("join");
    assert!(outcome.is_err(), "{outcome:?}");
    status_until(&sd, |s| s["draining"].as_array().is_some_and(Vec::is_empty)).await;
    assert!(sd.logs().contains("drain_timeout"), "{}", sd.logs());
    assert_eq!(
        get_once(addr, "/versions")
            .await
            .expect("served")
            .generation(),
        2
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchdog_pings_while_serving() {
    let mut sd = FakeSystemd::new();
    sd.add_socket_unit("api");
    sd.env.push(("WATCHDOG_USEC".into(), "200000".into()));
    sd.write_config(&config(""));
    sd.start().await;
    for _ in 0..3 {
        sd.wait_for(|n| n.has("WATCHDOG", "1")).await;
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listen_addresses_follow_the_config_at_reload() {
    let mut sd = FakeSystemd::new();
    // Listeners are keyed by their configured address, so the second one glint binds needs
    // an address of its own: another loopback address, with port 0 as well.
    let (first, second) = (SELF_BOUND_LISTEN, SocketAddr::from(([127, 0, 0, 2], 0)));
    sd.write_config(&format!("[server]\nlisten = [\"{first}\"]\n"));
    sd.start().await;
    let first_bound = sd.bound_addr(first).await;
    let mut kept = Conn::open(first_bound).await.expect("connect");
    assert_eq!(kept.get("/versions").await.expect("served").status, 200);

    sd.write_config(&format!("[server]\nlisten = [\"{first}\", \"{second}\"]\n"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    sd.wait_for(|n| n.has("READY", "1")).await;
    assert!(sd.fd_store.iter().any(|(n, _)| *n == stored_name(&second)));
    assert_eq!(sd.bound_addr(first).await, first_bound, "a kept listener");
    let second_bound = sd.bound_addr(second).await;
    assert_eq!(
        get_once(second_bound, "/versions")
            .await
            .expect("served")
            .status,
        200
    );
    assert_eq!(kept.get("/versions").await.expect("kept").generation(), 2);

    sd.write_config(&format!("[server]\nlisten = [\"{second}\"]\n"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    sd.wait_for(|n| n.has("READY", "1")).await;
    assert!(
        sd.history
            .iter()
            .any(|r| field(r, "FDSTOREREMOVE") == Some("1")
                && field(r, "FDNAME") == Some(stored_name(&first).as_str()))
    );
    assert!(!sd.fd_store.iter().any(|(n, _)| *n == stored_name(&first)));
    let refused = std::net::TcpStream::connect(first_bound);
    assert!(refused.is_err(), "a removed address is closed");
    // A connection accepted earlier on a removed listener is not cut.
    assert_eq!(kept.get("/versions").await.expect("kept").generation(), 3);
    assert_eq!(
        get_once(second_bound, "/versions")
            .await
            .expect("served")
            .generation(),
        3
    );
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_carry_generation_and_request_id_and_the_level_reloads() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let with_level =
        |level: &str| config(&format!("[log]\nformat = \"json\"\nlevel = \"{level}\""));
    sd.write_config(&with_level("info"));
    sd.start().await;
    let reply = get_once(addr, "/v2/nothing").await.expect("served");
    let request_id = reply.headers["x-openstack-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(request_id.starts_with("req-"), "{request_id}");
    assert!(
        !sd.logs().contains(&request_id),
        "no per-request line at info"
    );

    sd.write_config(&with_level("debug"));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    let reply = get_once(addr, "/v2/nothing").await.expect("served");
    let request_id = reply.headers["x-openstack-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(sd.stop().await, 0);
    let line = sd
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no JSON line for {request_id}:\n{}", sd.logs()));
    assert_eq!(line["span"]["generation"], 2);
    assert_eq!(line["level"], "DEBUG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_traffic_across_reloads_loses_nothing() {
    const RELOADS: usize = 50;
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("max_draining_generations = 4"));
    sd.start().await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            let mut created = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{writer}-{n}");
                let (status, image) = conn
                    .json(
                        "POST",
                        "/v2/images",
                        "application/json",
                        &serde_json::json!({"name": name}),
                    )
                    .await?;
                if status != 201 {
                    return Err(format!("create: {status} {image}"));
                }
                let id = image["id"].as_str().unwrap_or_default().to_string();
                let patch =
                    serde_json::json!([{"op": "add", "path": "/step", "value": n.to_string()}]);
                let (status, image) = conn
                    .json(
                        "PATCH",
                        &format!("/v2/images/{id}"),
                        "application/openstack-images-v2.1-json-patch",
                        &patch,
                    )
                    .await?;
                if status != 200 || image["step"].as_str() != Some(n.to_string().as_str()) {
                    return Err(format!("patch: {status} {image}"));
                }
                let listed = conn.get("/v2/images?limit=5").await?;
                if listed.status != 200 {
                    return Err(format!("list: {}", listed.status));
                }
                created.push(id);
                n += 1;
            }
            Ok::<_, String>(created)
        }));
    }
    for i in 0..RELOADS {
        sd.write_config(&config(&format!(
            "max_draining_generations = {}",
            4 + i % 2
        )));
        sd.reload().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut created = Vec::new();
    for writer in writers {
        created.extend(writer.await.expect("join").expect("no request failed"));
    }
    assert!(!created.is_empty());

    // Everything written across the reloads is there, through the API, after a restart.
    assert_eq!(sd.stop().await, 0);
    sd.start().await;
    let mut conn = Conn::open(addr).await.expect("connect");
    let mut listed = BTreeSet::new();
    let mut next = Some("/v2/images?limit=1000".to_string());
    while let Some(uri) = next {
        let reply = conn.get(&uri).await.expect("list");
        let page: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        for image in page["images"].as_array().expect("images") {
            listed.insert(image["id"].as_str().expect("id").to_string());
        }
        next = page["next"].as_str().map(String::from);
    }
    for id in &created {
        assert!(listed.contains(id), "{id} was lost");
    }
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_loopback_noauth_is_refused_and_trusted_headers_need_a_proxy() {
    let mut sd = FakeSystemd::new();
    let wide = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = wide.local_addr().expect("addr").port();
    sd.socket_unit
        .push(("api".into(), std::os::fd::OwnedFd::from(wide)));
    sd.write_config(&config(""));
    sd.spawn();
    assert_eq!(sd.wait_exit().await, 78, "noauth must not serve 0.0.0.0");
    assert!(sd.logs().contains("allow_remote_noauth"), "{}", sd.logs());

    // trusted-headers beyond loopback needs a proxy named: the default trusts loopback only.
    let trusted = "[auth]\nmode = \"trusted-headers\"\n";
    sd.write_config(&config(trusted));
    sd.spawn();
    assert_eq!(sd.wait_exit().await, 78, "no proxy to trust");
    let logs = sd.logs();
    assert!(
        logs.contains("auth.trusted_proxies") && logs.contains("glint.toml"),
        "{logs}"
    );

    // The proxy is 127.0.0.2; 127.0.0.1 is a peer like any other. Both are loopback, so
    // only the peer address the server saw can tell them apart.
    let with_proxy = format!("{trusted}trusted_proxies = [\"127.0.0.2/32\", \"192.0.2.0/24\"]\n");
    sd.write_config(&config(&with_proxy));
    sd.start().await;
    let (status, id) = identified_request([127, 0, 0, 2], port).await;
    assert_eq!(status, 200, "from the proxy");
    assert_eq!(id, "req-from-the-proxy");
    let (status, id) = identified_request([127, 0, 0, 1], port).await;
    assert_eq!(
        status, 401,
        "identity headers from a peer that is not the proxy"
    );
    assert_ne!(id, "req-from-the-proxy");

    // A reload back to no proxy is refused, and the proxy is still trusted.
    sd.write_config(&config(trusted));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("auth.trusted_proxies"), "{out}");
    assert_eq!(identified_request([127, 0, 0, 2], port).await.0, 200);
    assert_eq!(sd.stop().await, 0);
}

/// A GET with identity headers and a request id, from `source` to `port` on loopback:
/// the status and the request id answered.
async fn identified_request(source: [u8; 4], port: u16) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the source address");
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /v2/images HTTP/1.1\r\nHost: glint\r\nX-Identity-Status: Confirmed\r\n\
              X-Project-Id: p1\r\nX-Roles: member,reader\r\nX-Openstack-Request-Id: req-from-the-proxy\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-openstack-request-id: "))
        .unwrap_or_default()
        .to_string();
    (status, id)
}

/// Without feature `testing` the tests that hold requests open are not compiled (the
/// endpoints they use do not exist); this fails in their place, so that a plain
/// `cargo test` does not pass without them.
#[cfg(not(feature = "testing"))]
#[test]
fn needs_feature_testing() {
    let not_run = [
        "sigterm_finishes_the_request_in_flight_and_accepts_nothing_after",
        "draining_generations_stay_within_the_bound",
        "drain_timeout_cuts_what_outlives_it_and_says_so",
    ];
    panic!(
        "not run: {} (tests/lifecycle.rs). They hold requests open through /_glint/sleep and \
         /_glint/drip, which glint serves only when built with feature `testing`. Run every \
         test with `cargo test --features testing` (as tests/run.sh does).",
        not_run.join(", ")
    );
}
