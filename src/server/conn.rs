//! One HTTP/1.1 connection: each request on it is served by the generation current when the
//! request starts, and is tracked by that generation until its response body is done. It
//! also keeps the connection's phase for the connection table and enforces
//! `server.header_read_timeout` (from a head's first byte, 408 and close) and
//! `server.body_read_timeout` (a body that sends nothing is cut). Deliberately no idle
//! timeout: closing an idle keep-alive connection races with a client that reuses it, so
//! idle connections close only on stop, at a retired pool's deadline, or to make room at
//! `server.max_connections`. At a stop with a hand-over, a connection goes to the next
//! process once idle, or with its upload paused (`server.handover_transfers`); one taken back
//! with a paused upload reads the request that carries it on first.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Shared;
use super::connections::{Entry, Phase};
use super::generation::Generation;
use super::handover::{Handover, PREFIX, TRANSFER_PREFIX, TransferRecord};
use crate::api::PeerAddr;
use crate::metrics;
use crate::service::handover::{Paused, PausedUpload, Resumed, TransferPause};

/// The part of a worker pool that its connection tasks see.
pub struct PoolState {
    retired: AtomicBool,
    /// Cancelled on stop: connections finish their request in flight, then close.
    pub(super) closing: CancellationToken,
}

impl PoolState {
    pub fn new() -> Self {
        PoolState {
            retired: AtomicBool::new(false),
            closing: CancellationToken::new(),
        }
    }

    /// A retired pool answers with `Connection: close`, so its clients move to a new
    /// connection (on the new pool) after a response, never while idle.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

/// What a client whose request head did not arrive in time reads before the close.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Which generation answered: lets clients and tests see a reload take effect.
pub const GENERATION_HEADER: HeaderName = HeaderName::from_static("x-glint-generation");

/// How long a connection may still send a request once it is asked to close (stop, or a
/// retired pool's deadline) before an idle one is closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("request cut: its generation's drain deadline passed")]
struct Cut;

#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?} (server.body_read_timeout)")]
struct BodyTimeout(Duration);

/// The current generation with an in-flight token of it. The token is taken before the
/// generation is checked to still be current: a drain starts only after the swap, so it
/// counts this request, and a request never joins a generation already judged drained.
fn current_generation(shared: &Shared) -> (Arc<Generation>, TaskTrackerToken) {
    loop {
        let generation = shared.current.load_full();
        let token = generation.tracker.token();
        if Arc::ptr_eq(&generation, &shared.current.load()) {
            return (generation, token);
        }
    }
}

/// A connection taken back with a paused upload.
pub struct ResumedConnection {
    /// Read before the socket: the request that carries the upload on, then what the
    /// previous process had read and not served.
    pub head: Bytes,
    pub upload: Arc<PausedUpload>,
}

/// An upload in flight on a connection, which a stop may pause.
#[derive(Clone)]
struct PausableUpload {
    pause: Arc<TransferPause>,
    content_length: u64,
    close: bool,
}

/// The upload `request` starts, if it may be paused and carried on elsewhere: its body's
/// length is known (hyper keeps no state between two chunks of it) and the request is
/// HTTP/1.1 (the next process answers it as such).
fn pausable(request: &Request<Incoming>) -> Option<PausableUpload> {
    if request.method() != Method::PUT
        || request.version() != Version::HTTP_11
        || !request.uri().path().ends_with("/file")
        || request.headers().contains_key(TRANSFER_ENCODING)
    {
        return None;
    }
    let content_length: u64 = request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let close = request
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (content_length > 0).then(|| PausableUpload {
        pause: TransferPause::new(),
        content_length,
        close,
    })
}

pub(super) async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<PoolState>,
    entry: Arc<Entry>,
    resumed: Option<ResumedConnection>,
) {
    let _ = stream.set_nodelay(true);
    let closing = pool.closing.clone();
    let stream = match tls {
        None => Socket::Plain(stream),
        Some(acceptor) => {
            entry.set_phase(Phase::Head);
            match handshake(acceptor, stream, &shared, &closing).await {
                Some(stream) => {
                    entry.tls.store(true, Ordering::Relaxed);
                    Socket::Tls(Box::new(stream))
                }
                None => return,
            }
        }
    };
    entry.set_phase(Phase::Idle);
    let evict = entry.evict.clone();
    let phase = entry.clone();
    let (head, resumed) = match resumed {
        Some(resumed) => (resumed.head, Some(Resumed(resumed.upload))),
        None => (Bytes::new(), None),
    };
    let io = ConnIo {
        stream,
        pending: head,
        entry: entry.clone(),
        shared: shared.clone(),
        head_deadline: None,
        timed_out: false,
    };
    // The upload of the request in flight, which a stop may pause; the paused upload the
    // first request carries on.
    let upload: Arc<Mutex<Option<PausableUpload>>> = Arc::default();
    let upload_by_service = upload.clone();
    let resumed = Mutex::new(resumed);
    let shared_by_service = shared.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        entry.set_phase(Phase::Busy);
        // Whom auth believes identity headers from (auth.trusted_proxies).
        request.extensions_mut().insert(PeerAddr(peer));
        if let Some(resumed) = resumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            request.extensions_mut().insert(resumed);
        }
        let pausable = pausable(&request).filter(|_| !entry.tls.load(Ordering::Relaxed));
        if let Some(pausable) = &pausable {
            request.extensions_mut().insert(pausable.pause.clone());
        }
        *upload_by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = pausable.clone();
        let (generation, token) = current_generation(&shared_by_service);
        let shared = shared_by_service.clone();
        let pool = pool.clone();
        let entry = entry.clone();
        async move {
            let body_timeout = generation.config.config.server.body_read_timeout;
            let request = request.map(|body| {
                Body::new(TimedBody {
                    inner: body,
                    timeout: body_timeout,
                    deadline: None,
                    armed: false,
                    pause: pausable.map(|p| p.pause),
                    pause_asked: None,
                })
            });
            let response = tokio::select! {
                biased;
                response = generation.app.handle(request) => response,
                _ = generation.cut.cancelled() => return Err(Cut),
            };
            Ok::<_, Cut>(finish(response, generation, token, entry, &shared, &pool))
        }
    });
    let mut connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    let result = tokio::select! {
        result = &mut connection => result,
        _ = evict.cancelled() => {
            // Chosen as the connection idle longest at `server.max_connections`: closed
            // now if still idle, else after the request that just began.
            Pin::new(&mut connection).graceful_shutdown();
            connection.await
        }
        _ = closing.cancelled() => {
            if let Some(handover) = shared.handover().filter(|h| holds_place(&phase, h)) {
                // Stopping, and the fd store takes this one: it goes to the next process
                // once idle (or with its upload paused), never closed. A head still
                // incomplete after the grace is closed as without a hand-over: its bytes
                // are read, so it cannot be parked.
                let upload = upload
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .filter(|_| shared.server_setting(|s| s.handover_transfers));
                if let Some(upload) = &upload {
                    upload.pause.request();
                }
                let pause = upload.as_ref().map(|u| &*u.pause);
                let ended = {
                    let parkable = poll_until_parkable(&mut connection, &phase, pause);
                    tokio::pin!(parkable);
                    match tokio::time::timeout(CLOSE_GRACE, &mut parkable).await {
                        Ok(ended) => ended,
                        Err(_) if phase.phase() == Phase::Head => Parkable::Ended(Ok(())),
                        Err(_) => parkable.await,
                    }
                };
                match (ended, upload) {
                    (Parkable::Ended(result), _) => {
                        handover.release();
                        log_end(result);
                        return;
                    }
                    (Parkable::Paused, Some(upload)) => {
                        park_upload(connection.into_parts(), upload, &shared).await;
                        return;
                    }
                    _ => {}
                }
                phase.parking.store(true, Ordering::Relaxed);
                Pin::new(&mut connection).graceful_shutdown();
                if let Err(e) = (&mut connection).await {
                    handover.release();
                    log_end(Err(e));
                    return;
                }
                let parts = connection.into_parts();
                let io = parts.io.into_inner();
                if parts.read_buf.is_empty() {
                    // Always plain: `holds_place` refuses TLS connections.
                    if let Socket::Plain(stream) = io.stream {
                        park(stream, None, &shared).await;
                    }
                    return;
                }
                // Bytes of a next request came with the last one (pipelining): they cannot
                // go back into the socket, so that request is served here, closing after.
                handover.release();
                phase.handover_place.store(false, Ordering::Relaxed);
                phase.parking.store(false, Ordering::Relaxed);
                let io = ConnIo { pending: parts.read_buf, ..io };
                let last = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(io), parts.service);
                log_end(last.await);
                return;
            }
            // Closing an idle connection races with a client sending on it right now. So
            // the client gets a moment to send its next request (or, on a connection just
            // accepted, its first), answered with `Connection: close`; only then is what
            // is still idle closed.
            if let Ok(result) = tokio::time::timeout(CLOSE_GRACE, &mut connection).await {
                log_end(result);
                return;
            }
            if phase.phase() == Phase::Head {
                // A head still incomplete after the grace is not a request anyone is
                // served: waiting for it would hold the stop up to header_read_timeout.
                return;
            }
            Pin::new(&mut connection).graceful_shutdown();
            connection.await
        }
    };
    log_end(result);
}

/// Where a connection serving at stop stands.
enum Parkable<T> {
    Ended(T),
    /// Between requests: its response sent, nothing of a next request read.
    Idle,
    /// Its upload is paused: the request is left to the next process.
    Paused,
}

/// Serves `connection` until it ends, is idle between requests, or its upload (`pause`)
/// is paused. Phases and the pause change only while the connection is polled, here on
/// this task, so a check after each poll sees them.
async fn poll_until_parkable<F>(
    connection: &mut F,
    entry: &Entry,
    pause: Option<&TransferPause>,
) -> Parkable<F::Output>
where
    F: Future + Unpin,
{
    std::future::poll_fn(|cx| match Pin::new(&mut *connection).poll(cx) {
        Poll::Ready(result) => Poll::Ready(Parkable::Ended(result)),
        Poll::Pending if pause.is_some_and(TransferPause::is_paused) => {
            Poll::Ready(Parkable::Paused)
        }
        Poll::Pending if entry.phase() == Phase::Idle => Poll::Ready(Parkable::Idle),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// Parks a connection whose upload paused, with the record of where it stands. Taking the
/// connection apart drops the request (its body keeps what it had received and not given
/// out); what hyper had read beyond is in `parts.read_buf`.
async fn park_upload<S>(
    parts: hyper::server::conn::http1::Parts<TokioIo<ConnIo>, S>,
    upload: PausableUpload,
    shared: &Arc<Shared>,
) {
    let Some((paused, mut unread)) = upload.pause.take_paused() else {
        return;
    };
    unread.extend_from_slice(&parts.read_buf);
    let record = TransferRecord::new(
        paused,
        upload.content_length.saturating_sub(upload.pause.given()),
        &unread,
        upload.close,
    );
    // Always plain: uploads on TLS connections are not paused.
    if let Socket::Plain(stream) = parts.io.into_inner().stream {
        park(stream, Some(record), shared).await;
    }
}

/// Whether the connection of `entry` goes to the next process: it holds a place in the fd
/// store already, or takes one now.
fn holds_place(entry: &Entry, handover: &Handover) -> bool {
    if entry.handover_place.load(Ordering::Relaxed) {
        return true;
    }
    // A TLS session is not carried over: such a connection closes as without a hand-over.
    if entry.tls.load(Ordering::Relaxed) {
        return false;
    }
    let taken = handover.reserve();
    entry.handover_place.store(taken, Ordering::Relaxed);
    taken
}

/// Hands `stream` to the fd store for the next process, with the `record` of its paused
/// upload if it has one; closed if that fails. On the blocking pool: the record is a file,
/// and telling the supervisor is a blocking `sendmsg`, which waits while its queue is full.
async fn park(stream: TcpStream, record: Option<TransferRecord>, shared: &Arc<Shared>) {
    let shared = shared.clone();
    let parked = tokio::task::spawn_blocking(move || {
        let Some(handover) = shared.handover() else {
            return Ok(());
        };
        let Some(record) = record else {
            let parked = stream
                .into_std()
                .and_then(|socket| handover.park(&handover.next_name(PREFIX), &socket));
            if parked.is_err() {
                handover.release();
            }
            return parked;
        };
        let state_dir = shared.current.load().config.config.state_dir.clone();
        let name = handover.next_name(TRANSFER_PREFIX);
        let parked = record
            .write(&state_dir, &name)
            .and_then(|()| stream.into_std())
            .and_then(|socket| handover.park(&name, &socket));
        match &parked {
            Err(_) => {
                handover.release();
                TransferRecord::remove(&state_dir, &name);
            }
            Ok(()) => tracing::info!(
                image_id = %record.upload.image_id,
                written = record.upload.written,
                body_left = record.body_left,
                name,
                "upload handed to the next process"
            ),
        }
        parked
    })
    .await;
    if let Ok(Err(e)) = parked {
        tracing::warn!(error = %e, "cannot park a connection for the next process; closed");
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn finish(
    response: Response<Body>,
    generation: Arc<Generation>,
    token: TaskTrackerToken,
    entry: Arc<Entry>,
    shared: &Shared,
    pool: &PoolState,
) -> Response<TrackedBody> {
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(GENERATION_HEADER, generation.header.clone());
    // Stopping with a hand-over, the connection goes on in the next process; a retired
    // pool's clients move to a new connection.
    let closes = if shared.stopping() {
        !shared.handover().is_some_and(|h| holds_place(&entry, h))
    } else {
        pool.retired()
    };
    if closes {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(
        parts,
        TrackedBody {
            inner: body,
            _token: token,
            generation,
            cut: None,
            entry,
        },
    )
}

/// A response body that keeps its request counted as in flight until it is done, and
/// aborts (so hyper resets the connection) if its generation is cut. When it is done, the
/// connection is idle again.
struct TrackedBody {
    inner: Body,
    _token: TaskTrackerToken,
    generation: Arc<Generation>,
    /// Made only once the body has to wait: bodies ready at once never allocate it.
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    entry: Arc<Entry>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.entry.set_phase(Phase::Idle);
    }
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let generation = &this.generation;
                let cut = this
                    .cut
                    .get_or_insert_with(|| Box::pin(generation.cut.clone().cancelled_owned()));
                match cut.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Cut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body cut when it sends nothing for `timeout` while the handler waits for it.
/// The timer runs only while a read is pending, so a handler slow to consume is not cut.
/// The body of a pausable upload stops between two chunks once its pause is asked for and
/// the upload can be carried on elsewhere (`Paused`); dropped so, it keeps what it had
/// received and not given out in the pause.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Made on the first wait only.
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
    pause: Option<Arc<TransferPause>>,
    /// Made on the first wait of a pausable body.
    pause_asked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        let Some(pause) = self.pause.as_ref().filter(|p| p.body_stopped()) else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(Ok(frame))) =
            http_body::Body::poll_frame(Pin::new(&mut self.inner), &mut cx)
        {
            if let Some(data) = frame.data_ref() {
                pause.keep_unread(data);
            }
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.pause.as_ref().is_some_and(|p| p.stop_body()) {
            return Poll::Ready(Some(Err(Box::new(Paused))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                if let (Some(pause), Some(Ok(frame))) = (&this.pause, &frame) {
                    pause.gave(frame.data_ref().map_or(0, Bytes::len));
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(pause) = &this.pause {
                    let asked = this.pause_asked.get_or_insert_with(|| {
                        Box::pin(pause.requested().clone().cancelled_owned())
                    });
                    if asked.as_mut().poll(cx).is_ready() && pause.stop_body() {
                        return Poll::Ready(Some(Err(Box::new(Paused))));
                    }
                }
                let until = Instant::now() + this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if !this.armed {
                    deadline.as_mut().reset(until);
                    this.armed = true;
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Shakes hands on a connection of a TLS listener, within `server.header_read_timeout` (and
/// within the close grace once a stop began); `None` when that fails, logged.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    shared: &Shared,
    closing: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let limit = shared.server_setting(|s| s.header_read_timeout);
    let stopping = async {
        closing.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let failed = tokio::select! {
        done = tokio::time::timeout(limit, acceptor.accept(stream)) => match done {
            Ok(Ok(stream)) => {
                metrics::global().record_tls_handshake("ok");
                return Some(stream);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not done within server.header_read_timeout ({limit:?})"),
        },
        () = stopping => "not done when glint stopped".to_string(),
    };
    metrics::global().record_tls_handshake("failed");
    tracing::debug!(error = %failed, "TLS handshake failed");
    None
}

/// A connection's socket: plain, or TLS over it.
enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Plain(s) => s.is_write_vectored(),
            Socket::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The connection's socket as hyper reads it: marks when a request's head begins and
/// closes with 408 when the head is not complete within `server.header_read_timeout`.
struct ConnIo {
    stream: Socket,
    /// Bytes read from `stream` before this reader: read first.
    pending: Bytes,
    entry: Arc<Entry>,
    shared: Arc<Shared>,
    /// Made when the first head begins; reset for each later one.
    head_deadline: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.entry.phase() == Phase::Idle {
                    this.entry.set_phase(Phase::Head);
                    let timeout = this.shared.server_setting(|s| s.header_read_timeout);
                    let until = Instant::now() + timeout;
                    match &mut this.head_deadline {
                        Some(deadline) => deadline.as_mut().reset(until),
                        None => {
                            this.head_deadline = Some(Box::pin(tokio::time::sleep_until(until)))
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this.entry.phase() == Phase::Head
                    && this
                        .head_deadline
                        .as_mut()
                        .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                // Best effort: the 408 fits any socket buffer; if it does not go now, the
                // close alone tells the client.
                let _ = Pin::new(&mut this.stream).poll_write(cx, REQUEST_TIMEOUT);
                this.timed_out = true;
                tracing::debug!("request head incomplete after server.header_read_timeout: 408");
                // End of input: hyper drops the incomplete head and closes.
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.entry.parking.load(Ordering::Relaxed) {
            return Pin::new(&mut self.stream).poll_flush(cx);
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
