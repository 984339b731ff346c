//! The metrics listener (`metrics.listen`): `GET /metrics` answers the exposition text, on
//! a listener of its own, never the API's. It runs on the control plane's runtime, so a
//! saturated worker pool does not hide itself from its scraper. Which address it listens
//! on, and when it moves, is the lifecycle's decision, not this module's.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What Prometheus asks for and this answers with.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct MetricsEndpoint {
    /// `metrics.listen` as configured (a reload that keeps it keeps the listener).
    pub configured: SocketAddr,
    /// Where it listens (the port the kernel chose for a configured port 0).
    pub bound: SocketAddr,
    stop: CancellationToken,
}

impl MetricsEndpoint {
    /// Binds `addr` now (so that a reload that cannot bind fails) and serves on it until
    /// `stop`. Must run inside a Tokio runtime.
    pub fn start(addr: SocketAddr) -> std::io::Result<MetricsEndpoint> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let bound = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, stop.clone()));
        Ok(MetricsEndpoint {
            configured: addr,
            bound,
            stop,
        })
    }
}

/// Dropped (replaced by a reload, a reload that fails after binding, the stop), the
/// listener closes; a scrape being answered finishes.
impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(listener: TcpListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.uri().path() != "/metrics" {
        return Ok(response(
            StatusCode::NOT_FOUND,
            text,
            "metrics are at /metrics\n".into(),
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(response(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "GET /metrics\n".into(),
        ));
    }
    Ok(match super::global().encode() {
        Ok(body) => response(StatusCode::OK, OPENMETRICS, body),
        Err(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            "metrics could not be encoded\n".into(),
        ),
    })
}
