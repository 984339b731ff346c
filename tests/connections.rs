//! Hostile and excess clients against the real binary: a request head that does not arrive
//! in time gets 408 and a close, while an idle keep-alive connection is never closed by a
//! timer; at `server.max_connections` the connection idle longest makes room for a new
//! one, and with none idle new connections wait in the backlog until one frees.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Conn, FakeSystemd, PATIENCE, SOCKET_UNIT_LISTEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(extra: &str) -> String {
    format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n{extra}\n")
}

/// Reads until the peer closes; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&seen).into_owned()
}

/// A connection that sent part of a request head and nothing more.
async fn partial_head(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /versions HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_head_gets_408_but_an_idle_connection_outlives_the_timeout() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("header_read_timeout = \"1s\""));
    sd.start().await;

    let mut idle = Conn::open(addr).await.expect("connect");
    assert_eq!(idle.get("/versions").await.expect("first").status, 200);

    // One more header line now and then does not keep the head alive.
    let mut slow = partial_head(addr).await;
    let trickle = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
        read_to_close(&mut slow).await
    };
    let answer = trickle.await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // Idle for longer than the timeout: still open, and served.
    let again = idle
        .get("/versions")
        .await
        .expect("the idle connection still serves");
    assert_eq!(again.status, 200);
    assert!(!again.closes());
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_max_connections_the_longest_idle_makes_room_and_busy_ones_never_do() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config("max_connections = 4"));
    sd.start().await;

    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::open(addr).await.expect("connect");
        assert_eq!(conn.get("/versions").await.expect("get").status, 200);
        idle.push(conn);
    }
    // A fifth client is served: the connection idle longest was closed for it.
    let mut fifth = Conn::open(addr).await.expect("connect");
    assert_eq!(fifth.get("/versions").await.expect("served").status, 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !idle[0].is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "oldest never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for conn in &mut idle[1..] {
        assert_eq!(conn.get("/versions").await.expect("kept").status, 200);
    }
    drop(idle);
    drop(fifth);

    // Every connection has a request begun: a new one waits, and is served once one ends.
    let status = sd.status().await;
    let mut busy = Vec::new();
    let max = status["max_connections"].as_u64().expect("max");
    for _ in 0..max {
        busy.push(partial_head(addr).await);
    }
    // Every head has been read (none of them is idle) before the next client comes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = sd.status().await;
        if status["connections_open"] == max && status["connections_idle"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = tokio::spawn(async move {
        let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
        conn.get("/versions").await
    });
    tokio::task::yield_now().await;
    assert!(
        !waiting.is_finished(),
        "served past the cap with no idle connection"
    );
    let mut first = busy.remove(0);
    first.write_all(b"\r\n").await.expect("finish the head");
    let answer = read_some(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(first);
    let served = waiting.await.expect("join").expect("served");
    assert_eq!(served.status, 200);
    // A stop does not wait for heads that never complete.
    assert_eq!(sd.stop().await, 0);
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_limit_nofile_512_800_idle_connections_do_not_lock_out_a_new_client() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.nofile = Some(512);
    sd.write_config(&config(""));
    sd.start().await;
    let status = sd.status().await;
    let max = status["max_connections"].as_u64().expect("max");
    assert!(max < 512, "the default cap leaves room for files: {status}");

    // 800 clients that connect and never send: more than the fd table could hold. Each
    // one accepted past the cap closes the one idle longest.
    let connecting: Vec<_> = (0..800)
        .map(|_| tokio::spawn(TcpStream::connect(addr)))
        .collect();
    let mut idle = Vec::new();
    for connect in connecting {
        idle.push(connect.await.expect("join").expect("connect"));
    }
    let mut fresh = Conn::open(addr).await.expect("connect");
    let reply = tokio::time::timeout(PATIENCE, fresh.get("/versions"))
        .await
        .expect("the new client is served, not left waiting")
        .expect("answered");
    assert_eq!(reply.status, 200);
    let status = sd.status().await;
    assert!(
        status["connections_open"].as_u64().expect("open") <= max,
        "{status}"
    );
    drop(idle);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_applies_new_limits_to_connections_already_open() {
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&config(
        "header_read_timeout = \"1h\"\nmax_connections = 100",
    ));
    sd.start().await;
    let mut kept = Conn::open(addr).await.expect("connect");
    assert_eq!(kept.get("/versions").await.expect("get").status, 200);
    let mut slow = TcpStream::connect(addr).await.expect("connect");

    sd.write_config(&config("header_read_timeout = \"1s\"\nmax_connections = 2"));
    sd.reload().await;
    assert_eq!(sd.status().await["max_connections"], 2);
    // A head begun after the reload, on a connection opened before it, has the new limit.
    slow.write_all(b"GET /versions HTTP/1.1\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // The keep-alive connection from before the reload is served by the new generation.
    let reply = kept.get("/versions").await.expect("still open");
    assert_eq!(reply.generation(), 2);
    assert_eq!(sd.stop().await, 0);
}

async fn read_some(stream: &mut TcpStream) -> String {
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
