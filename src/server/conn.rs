//! One HTTP/1.1 connection: each request on it is served by the generation current when the
//! request starts, and is tracked by that generation until its response body is done.
//! Deliberately no idle timeout: closing an idle keep-alive connection races with a client
//! that reuses it, so idle connections close only on stop or at a retired pool's deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::header::CONNECTION;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Shared;
use super::generation::Generation;
use super::pool::PoolState;
use crate::api::PeerAddr;

/// Which generation answered: lets clients and tests see a reload take effect.
pub const GENERATION_HEADER: HeaderName = HeaderName::from_static("x-glint-generation");

/// How long a connection may still send a request once it is asked to close (stop, or a
/// retired pool's deadline) before an idle one is closed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("request cut: its generation's drain deadline passed")]
struct Cut;

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<PoolState>,
) {
    let _ = stream.set_nodelay(true);
    let closing = pool.closing.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        // Whom auth believes identity headers from (auth.trusted_proxies).
        request.extensions_mut().insert(PeerAddr(peer));
        let generation = shared.current.load_full();
        let shared = shared.clone();
        let pool = pool.clone();
        async move {
            let token = generation.tracker.token();
            let response = tokio::select! {
                biased;
                response = generation.app.handle(request.map(Body::new)) => response,
                _ = generation.cut.cancelled() => return Err(Cut),
            };
            Ok::<_, Cut>(finish(response, generation, token, &shared, &pool))
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = closing.cancelled() => {
            // Closing an idle connection races with a client sending on it right now. So
            // the client gets a moment to send its next request (or, on a connection just
            // accepted, its first), answered with `Connection: close`; only then is what
            // is still idle closed.
            if let Ok(result) = tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                log_end(result);
                return;
            }
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    log_end(result);
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
    shared: &Shared,
    pool: &PoolState,
) -> Response<TrackedBody> {
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(GENERATION_HEADER, generation.header.clone());
    if pool.retired() || shared.stopping() {
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
        },
    )
}

/// A response body that keeps its request counted as in flight until it is done, and
/// aborts (so hyper resets the connection) if its generation is cut.
struct TrackedBody {
    inner: Body,
    _token: TaskTrackerToken,
    generation: Arc<Generation>,
    /// Made only once the body has to wait: bodies ready at once never allocate it.
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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
