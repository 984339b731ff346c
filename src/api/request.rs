//! The one tower layer around the whole API: Glance's version negotiation (before routing),
//! the request id, the request's span (the GENERATION and REQUEST_ID journal fields), error
//! bodies in the format the request accepts, the id header on v2 responses, and the request
//! metrics (by route template, which the v2 route layer names). It does not authenticate
//! (that route layer does) and knows nothing of connections.
//!
//! A hand-written service with its own future rather than `middleware::from_fn`: that boxes
//! a future and clones its state and the inner service on every request.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, Method, Uri};
use tower::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::error::ErrorFormat;
use super::forwarded::{self, ClientView, ProxySettings};
use super::{PeerAddr, REQUEST_ID_HEADER, RequestId, auth, versions};
use crate::config::AuthConfig;
use crate::metrics;
use crate::service::handover::{Resumed, TransferPause};

/// The route template a response was routed by, for the request metrics; put on the
/// response by the router's route layer, taken off here.
#[derive(Clone)]
pub struct RouteTemplate(pub String);

/// What the layer needs of its generation.
pub struct RequestSettings {
    pub generation: u64,
    pub auth: Arc<AuthConfig>,
    pub proxy: Arc<ProxySettings>,
    /// Whether the image cache is on, which adds its API versions.
    pub cache: bool,
}

/// The API service: `inner` (the router) with the per-request context around it.
#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    settings: Arc<RequestSettings>,
}

impl<S> RequestContext<S> {
    pub fn new(inner: S, settings: RequestSettings) -> Self {
        RequestContext {
            inner,
            settings: Arc::new(settings),
        }
    }
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let settings = &*self.settings;
        negotiate_version(&mut request, settings.cache);
        let route = match request.uri().path() {
            "/versions" => Some("/versions"),
            "/healthcheck" => Some("/healthcheck"),
            // A v2 route names itself (`RouteTemplate`); a v2 path that matches none is
            // `unmatched`.
            path if path.starts_with("/v2/") || path == "/v2" => None,
            _ => Some("versions document"),
        };
        let method = request.method().clone();
        let peer = request.extensions().get::<PeerAddr>().copied();
        // A paused upload carried on keeps the request id it began with.
        let resumed_id = request
            .extensions()
            .get::<Resumed>()
            .and_then(|Resumed(paused)| paused.request_id.clone());
        let request_id = resumed_id
            .or_else(|| auth::client_request_id(request.headers(), peer, &settings.auth))
            .unwrap_or_else(new_request_id);
        let view = forwarded::client_view(request.headers(), peer, &settings.proxy);
        // Display (`%`), not Debug: text sinks would escape a string char by char.
        let span = tracing::info_span!(
            "request",
            generation = settings.generation,
            request_id = %request_id,
            remote_addr = %view.client,
            method = %request.method(),
            path = %request.uri().path(),
        );
        let id_header = request
            .uri()
            .path()
            .starts_with("/v2")
            .then(|| HeaderValue::from_str(&request_id).ok())
            .flatten();
        let errors = ErrorFormat::of(request.headers());
        // An upload paused for the next process is carried on under the same id.
        if let Some(pause) = request.extensions().get::<Arc<TransferPause>>() {
            pause.set_request_id(&request_id);
        }
        request.extensions_mut().insert(RequestId(request_id));
        request.extensions_mut().insert::<ClientView>(view);
        ResponseFuture {
            inner: self.inner.call(request).instrument(span),
            errors,
            id_header,
            started,
            method,
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, finished: its error body rendered, its id header set.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        errors: ErrorFormat,
        id_header: Option<HeaderValue>,
        started: Instant,
        method: Method,
        route: Option<&'static str>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = ready!(this.inner.as_mut().poll(cx));
        this.errors.render(&mut response);
        // Given its parent rather than entering it: entering costs even when the event is
        // filtered out.
        tracing::debug!(
            parent: this.inner.span(),
            status = response.status().as_u16(),
            "request finished"
        );
        if let Some(value) = this.id_header.take() {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let route = match response.extensions_mut().remove::<RouteTemplate>() {
            Some(RouteTemplate(template)) => Cow::Owned(template),
            None => Cow::Borrowed(this.route.unwrap_or("unmatched")),
        };
        metrics::global().record_request(
            route,
            this.method,
            response.status(),
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
}

/// `req-` and a random UUID, as Glance's ids, written without the formatting machinery.
fn new_request_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    let uuid = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    let mut id = String::with_capacity(4 + uuid.len());
    id.push_str("req-");
    id.push_str(uuid);
    id
}

/// Glance's version negotiation: `/v2.N/...` is the v2 API, for the versions served now
/// (`cache`: whether the image cache is on, which adds its versions); any other is answered
/// with the versions document. Before routing, since a router's own layers run after the
/// route is chosen.
fn negotiate_version(request: &mut Request, cache: bool) {
    let path = request.uri().path();
    let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if segment == "v2" || !versions::is_version_alias(segment, cache) {
        return;
    }
    let rest = &path[1 + segment.len()..];
    let rewritten = match request.uri().query() {
        Some(query) => format!("/v2{rest}?{query}"),
        None => format!("/v2{rest}"),
    };
    if let Ok(uri) = rewritten.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
}
