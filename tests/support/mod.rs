//! Test harness that plays systemd for the real `glint` binary: it owns the sockets a
//! socket unit would pass (fd 3…, LISTEN_FDS / LISTEN_FDNAMES, LISTEN_PID = the child's
//! pid), listens on NOTIFY_SOCKET (reading SCM_RIGHTS for the fd store) and keeps the fd
//! store across restarts. Also a keep-alive HTTP/1.1 client over one real connection.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const GLINT: &str = env!("CARGO_BIN_EXE_glint");
/// Upper bound for anything the harness waits on; reached only when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One sd_notify datagram: its `KEY=VALUE` lines and the fds that came with it.
#[derive(Debug)]
pub struct Notification {
    pub fields: Vec<(String, String)>,
    pub fds: Vec<OwnedFd>,
}

impl Notification {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// The fields of a processed notification, kept for assertions.
pub type Record = Vec<(String, String)>;

pub fn field<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
    record
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub struct FakeSystemd {
    pub dir: tempfile::TempDir,
    notifications: mpsc::UnboundedReceiver<Notification>,
    pub history: Vec<Record>,
    /// Sockets a socket unit owns: passed at every start, never closed by the service.
    pub socket_unit: Vec<(String, OwnedFd)>,
    /// FDSTORE=1 fds, by FDNAME, passed back at every start.
    pub fd_store: Vec<(String, OwnedFd)>,
    pub child: Option<Child>,
    /// Extra environment for the next starts (e.g. WATCHDOG_USEC).
    pub env: Vec<(String, String)>,
    /// `LimitNOFILE=` for the next starts.
    pub nofile: Option<u64>,
    starts: usize,
}

impl FakeSystemd {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("run")).expect("run dir");
        let notify_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || read_notifications(socket, tx));
        // With TEST_DATABASE_SERVER set, every start uses a fresh database of this test's
        // own on that server (as the config's env layer, over any file).
        // Like systemd >= 254 with `FileDescriptorStoreMax=4352`: the store's size in
        // `$FDSTORE`.
        let mut env = vec![("FDSTORE".to_string(), "4352".to_string())];
        env.extend(fresh_database().map(|url| ("GLINT_DATABASE__URL".to_string(), url)));
        FakeSystemd {
            dir,
            notifications: rx,
            history: Vec::new(),
            socket_unit: Vec::new(),
            fd_store: Vec::new(),
            child: None,
            env,
            nofile: None,
            starts: 0,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("glint.toml")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.path("run/control.sock")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Binds a socket the way `glint.socket` would, passed under `name` at every start.
    pub fn add_socket_unit(&mut self, name: &str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        self.socket_unit
            .push((name.to_string(), OwnedFd::from(listener)));
        addr
    }

    /// Everything the log of every start so far says.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.path(&format!("glint-{n}.log"))).unwrap_or_default()
            })
            .collect()
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .map(|p| p as i32)
            .expect("glint runs")
    }

    /// Starts glint, passing socket-unit sockets then stored fds, and waits for READY=1.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_for(|n| n.has("READY", "1")).await;
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "glint already running");
        self.starts += 1;
        let passed: Vec<(String, RawFd)> = self
            .socket_unit
            .iter()
            .chain(self.fd_store.iter())
            .map(|(name, fd)| (name.clone(), fd.as_raw_fd()))
            .collect();
        let log = std::fs::File::create(self.path(&format!("glint-{}.log", self.starts)))
            .expect("log file");
        let limit = self
            .nofile
            .map_or(String::new(), |n| format!("ulimit -n {n} && "));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(r#"{limit}LISTEN_PID=$$ exec "$0" "$@""#))
            .arg(GLINT)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env("NOTIFY_SOCKET", self.path("notify.sock"))
            .env("STATE_DIRECTORY", self.path("state"))
            .env("RUNTIME_DIRECTORY", self.path("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if !passed.is_empty() {
            let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
            command
                .env("LISTEN_FDS", passed.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        let fds: Vec<RawFd> = passed.iter().map(|(_, fd)| *fd).collect();
        // Allocated here: between fork and exec nothing may allocate.
        let mut high: Vec<RawFd> = vec![0; fds.len()];
        // SAFETY: only async-signal-safe calls (fcntl, dup2) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().take(fds.len()).enumerate() {
                    if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self.child = Some(command.spawn().expect("spawn glint"));
    }

    /// Processes notifications in order (applying fd-store changes) until one matches.
    pub async fn wait_for(&mut self, wanted: impl Fn(&Notification) -> bool) -> Record {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.notifications.recv()).await;
            let notification = match next {
                Ok(Some(n)) => n,
                Ok(None) => panic!("notify reader ended"),
                Err(_) => panic!(
                    "no matching notification within {PATIENCE:?}; history: {:?}\nlogs:\n{}",
                    self.history.last(),
                    self.logs()
                ),
            };
            let matched = wanted(&notification);
            let record = notification.fields.clone();
            self.apply(notification);
            self.history.push(record.clone());
            if matched {
                return record;
            }
        }
    }

    fn apply(&mut self, mut notification: Notification) {
        let name = notification.get("FDNAME").unwrap_or("stored").to_string();
        if notification.has("FDSTORE", "1") {
            self.fd_store.retain(|(n, _)| *n != name);
            for fd in notification.fds.drain(..) {
                self.fd_store.push((name.clone(), fd));
            }
        }
        if notification.has("FDSTOREREMOVE", "1") {
            self.fd_store.retain(|(n, _)| *n != name);
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Sends SIGHUP and waits for the RELOADING=1 and READY=1 it must answer with.
    pub async fn reload(&mut self) -> (Record, Record) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
        let reloading = self.wait_for(|n| n.has("RELOADING", "1")).await;
        let ready = self.wait_for(|n| n.has("READY", "1")).await;
        (reloading, ready)
    }

    /// Waits for the process to exit and returns its exit code, once every notification it
    /// sent is processed (fds it stored while stopping are passed to the next start).
    pub async fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().expect("glint runs");
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("glint exits")
            .expect("wait");
        // Datagrams queue in order: this one comes after the last the process sent.
        let marker = format!("{}", self.starts);
        UnixDatagram::unbound()
            .and_then(|s| {
                s.send_to(
                    format!("HARNESS_EXITED={marker}").as_bytes(),
                    self.path("notify.sock"),
                )
            })
            .expect("send to NOTIFY_SOCKET");
        self.wait_for(|n| n.has("HARNESS_EXITED", &marker)).await;
        status.code().unwrap_or(-1)
    }

    /// SIGTERM, then the exit code.
    pub async fn stop(&mut self) -> i32 {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit().await
    }

    /// Runs `glint ctl <args> --socket …`; returns exit code and stdout+stderr.
    pub async fn ctl(&self, args: &[&str]) -> (i32, String) {
        let output = Command::new(GLINT)
            .arg("ctl")
            .args(args)
            .arg("--socket")
            .arg(self.control_socket())
            .output()
            .await
            .expect("run glint ctl");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap_or(-1), text)
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, text) = self.ctl(&["status"]).await;
        assert_eq!(code, 0, "ctl status failed: {text}");
        serde_json::from_str(&text).expect("status is JSON")
    }

    /// The address glint's listener for the configured `listen` is bound to, as
    /// `glint ctl status` lists it: the port the kernel chose for a configured port 0.
    pub async fn bound_addr(&self, listen: SocketAddr) -> SocketAddr {
        let name = stored_name(&listen);
        let status = self.status().await;
        status["listeners"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == name.as_str()))
            .and_then(|l| l["addr"].as_str())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no listener {name} in {status:#}"))
    }
}

/// Polls `glint ctl status` until `done` holds: for phases that have no notification.
pub async fn status_until(
    sd: &FakeSystemd,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = sd.status().await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never matched: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until at least `n` requests are in flight in the current generation.
pub async fn in_flight_at_least(sd: &FakeSystemd, n: u64) {
    status_until(sd, |s| s["current"]["in_flight"].as_u64() >= Some(n)).await;
}

fn read_notifications(socket: UnixDatagram, tx: mpsc::UnboundedSender<Notification>) {
    let mut buf = vec![0u8; 8192];
    let mut cmsg = nix::cmsg_space!([RawFd; 16]);
    while !tx.is_closed() {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (bytes, fds) = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: the kernel just gave us these fds; nothing else owns them.
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => panic!("recvmsg: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..bytes]);
        let fields = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if tx.send(Notification { fields, fds }).is_err() {
            return;
        }
    }
}

/// `server.listen` for a glint passed its socket by the fake socket unit. Under socket
/// activation glint never binds what `server.listen` names, so this is a placeholder; it
/// must only stay the same across reloads, which refuse to change it. Nothing binds it
/// either (port 1, TCPMUX, is privileged and unused), so a connection to it is refused at
/// once: that is how a test sees that glint did not bind it.
pub const SOCKET_UNIT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));

/// `server.listen` for a glint that binds its listener itself. A port chosen by the test
/// and released before glint binds it could be taken in between; with port 0 the kernel
/// chooses at glint's own bind. glint keys the listener, and its fd-store entry, by the
/// configured address, so the same socket stays across reloads and comes back through
/// the fd store across restarts; `FakeSystemd::bound_addr` reads the port it got.
pub const SELF_BOUND_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

pub fn stored_name(addr: &SocketAddr) -> String {
    format!("tcp-{addr}").replace(':', "_")
}

/// One HTTP/1.1 connection, reused for every request.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn generation(&self) -> u64 {
        self.headers
            .get("x-glint-generation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("x-glint-generation header")
    }

    pub fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v == "close")
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Conn { send, addr })
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, None, Bytes::new()).await
    }

    /// Sends one request on this connection; `content_type` goes with a non-empty body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, String> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        self.send_with(method, path, &headers, body).await
    }

    /// Sends one request with `headers` on this connection.
    pub async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        collect(response).await
    }

    /// Sends JSON and parses the JSON answer (Null when there is none).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        let reply = self
            .send(
                method,
                path,
                Some(content_type),
                Bytes::from(body.to_string()),
            )
            .await?;
        let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        Ok((reply.status, value))
    }

    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

/// One request on a fresh connection.
pub async fn get_once(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let mut conn = Conn::open(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    conn.get(path).await
}

/// Sends `chunks` as a chunked request body, one every `pause`, on a connection of its own:
/// an upload that stays in flight as long as the test wants.
pub async fn send_slowly(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: Vec<Bytes>,
    pause: Duration,
) -> Result<Reply, String> {
    use http_body_util::{StreamBody, combinators::BoxBody};
    use hyper::body::Frame;

    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, connection) = hyper::client::conn::http1::handshake::<
        _,
        BoxBody<Bytes, std::convert::Infallible>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let frames = futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
        let chunk = rest.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok(Frame::data(chunk)), rest))
    });
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .map_err(|e| e.to_string())?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    collect(response).await
}

/// GETs `path` and reads the body one frame at a time with `pause` between frames.
pub async fn read_slowly(addr: SocketAddr, path: &str, pause: Duration) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, mut body) = response.into_parts();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            collected.extend_from_slice(data);
        }
        tokio::time::sleep(pause).await;
    }
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(collected),
    })
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A new database on the `TEST_DATABASE_SERVER` server, or `None` for SQLite. On a thread
/// of its own: tests call this from inside their runtime.
#[cfg(feature = "testing")]
pub fn fresh_database() -> Option<String> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(glint::db::testing::fresh_database())
            .expect("a fresh database on TEST_DATABASE_SERVER")
    })
    .join()
    .expect("fresh database thread")
}

/// Without feature `testing` glint makes no test databases: every test runs on SQLite.
#[cfg(not(feature = "testing"))]
pub fn fresh_database() -> Option<String> {
    None
}

/// Creates a raw/bare image without data; returns its id.
pub async fn create_image(addr: SocketAddr) -> String {
    create_image_as(addr, "raw").await
}

/// Creates a bare image of `disk_format` without data; returns its id.
pub async fn create_image_as(addr: SocketAddr, disk_format: &str) -> String {
    let mut conn = Conn::open(addr).await.expect("connect");
    let (status, image) = conn
        .json(
            "POST",
            "/v2/images",
            "application/json",
            &serde_json::json!({"disk_format": disk_format, "container_format": "bare"}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{image}");
    image["id"].as_str().expect("id").to_string()
}

/// `GET /v2/images/{id}`, parsed.
pub async fn show_image(addr: SocketAddr, id: &str) -> serde_json::Value {
    let mut conn = Conn::open(addr).await.expect("connect");
    let reply = conn.get(&format!("/v2/images/{id}")).await.expect("show");
    serde_json::from_slice(&reply.body).expect("json")
}

/// Waits until the image has `status`: a phase with no notification.
pub async fn wait_status(addr: SocketAddr, id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while show_image(addr, id).await["status"] != status {
        assert!(tokio::time::Instant::now() < deadline, "never {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// `data` as request body chunks of `size` bytes.
pub fn chunks(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// PUTs `data` as image `id`'s data in 1 MiB chunks, as fast as it goes.
pub async fn upload_image(addr: SocketAddr, id: &str, data: &[u8]) -> Reply {
    send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("content-type", "application/octet-stream")],
        chunks(data, 1 << 20),
        Duration::ZERO,
    )
    .await
    .expect("upload answered")
}

/// The names of the entries of `dir` (none when it cannot be read).
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A web server for web-download: serves `data` at any path, `chunk` bytes at a time with
/// `pause` between chunks, and counts requests and chunks sent.
pub struct Web {
    pub addr: SocketAddr,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub chunks_sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Web {
    pub fn serve(data: Vec<u8>, chunk: usize, pause: Duration) -> Web {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let chunks_sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counted, sent) = (requests.clone(), chunks_sent.clone());
        let data = std::sync::Arc::new(data);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (data, sent) = (data.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n")
                        && std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1
                    {
                        head.push(byte[0]);
                    }
                    let header = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        data.len()
                    );
                    if std::io::Write::write_all(&mut stream, header.as_bytes()).is_err() {
                        return;
                    }
                    for piece in data.chunks(chunk) {
                        if std::io::Write::write_all(&mut stream, piece).is_err() {
                            return;
                        }
                        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(pause);
                    }
                });
            }
        });
        Web {
            addr,
            requests,
            chunks_sent,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/images/disk.raw", self.addr)
    }

    /// Waits until the download is under way (some chunks are out).
    pub async fn wait_for_chunks(&self, at_least: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.chunks_sent.load(std::sync::atomic::Ordering::SeqCst) < at_least {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the download never began"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `GET /v2/images/{id}/file` on a fresh connection, with `range` as its `Range` header.
pub async fn download(addr: SocketAddr, id: &str, range: Option<&str>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, connection) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Full<Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .uri(format!("/v2/images/{id}/file"))
        .header(http::header::HOST, addr.to_string());
    if let Some(range) = range {
        request = request.header(http::header::RANGE, range);
    }
    let response = send
        .send_request(request.body(Default::default()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}
