//! The HTTP face of a generation: axum router, Glance version negotiation, request ids,
//! per-request logging and the error format. Handlers stay thin and delegate downwards.

mod auth;
mod cache;
mod error;
pub mod forwarded;
mod images;
mod import;
mod info;
mod members;
mod metadefs;
mod request;
#[cfg(feature = "testing")]
mod testing;
#[cfg(test)]
mod tests;
mod versions;
pub mod wire;

use axum::Router;
use axum::extract::{MatchedPath, OriginalUri, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::header::CONTENT_TYPE;
use http::{HeaderName, Method, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Keystone;
use crate::config::AuthConfig;
use crate::service::Catalog;
use crate::service::handover::Resumed;

pub use error::ApiError;
pub use request::RequestContext;
use request::{RequestSettings, RouteTemplate};

/// What a generation serves requests with.
pub type ApiService = RequestContext<Router>;
use forwarded::ProxySettings;

/// What the API layer is given by the generation it belongs to.
#[derive(Clone)]
pub struct ApiContext {
    pub generation: u64,
    pub catalog: Catalog,
    pub auth: Arc<AuthConfig>,
    /// The token validator, in `auth.mode = "keystone"`.
    pub keystone: Option<Arc<Keystone>>,
    /// `server.public_endpoint` and `server.trusted_proxies`.
    pub proxy: Arc<ProxySettings>,
    /// Which location fields image bodies carry.
    pub show: wire::Show,
}

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// The id of the request being served, for what records it (an import's task).
#[derive(Clone)]
pub struct RequestId(pub String);

/// The address of the peer a request came from, put in the request's extensions by the
/// server that accepted the connection. Defined here so the API does not depend on the
/// server; a request without it (built in-process, as in tests) is from loopback.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The API of one generation: its routes inside the per-request layer.
pub fn service(context: ApiContext) -> ApiService {
    let v2 = Router::new()
        .route("/images", get(images::list).post(images::create))
        .route(
            "/images/{id}",
            get(images::show)
                .patch(images::update)
                .delete(images::delete),
        )
        .route(
            "/images/{id}/tags/{tag}",
            put(images::add_tag).delete(images::remove_tag),
        )
        .route(
            "/images/{id}/file",
            get(images::download).put(images::upload),
        )
        .route("/images/{id}/stage", put(images::stage))
        .route(
            "/images/{id}/locations",
            get(images::locations).post(images::add_location),
        )
        .route("/images/{id}/import", post(import::import))
        .route("/images/{id}/tasks", get(import::image_tasks))
        .route("/tasks", get(import::tasks).post(import::create_task))
        .route("/tasks/{id}", get(import::task))
        .route(
            "/stores/{store}/{id}",
            axum::routing::delete(import::delete_from_store),
        )
        .route("/images/{id}/actions/deactivate", post(images::deactivate))
        .route("/images/{id}/actions/reactivate", post(images::reactivate))
        .route(
            "/images/{id}/members",
            get(members::list).post(members::create),
        )
        .route(
            "/images/{id}/members/{member_id}",
            get(members::show)
                .put(members::update)
                .delete(members::delete),
        )
        .route("/cache", get(cache::state).delete(cache::clear))
        .route("/cache/clean", post(cache::clean))
        .route("/cache/prune", post(cache::prune))
        .route("/cache/nodes/{id}", get(cache::nodes))
        .route(
            "/cache/{id}",
            axum::routing::put(cache::queue).delete(cache::delete),
        )
        .route("/schemas/{name}", get(info::schema))
        .route("/schemas/metadefs/{name}", get(metadefs::schema))
        .route(
            "/metadefs/namespaces",
            get(metadefs::list_namespaces).post(metadefs::create_namespace),
        )
        .route(
            "/metadefs/namespaces/{ns}",
            get(metadefs::show_namespace)
                .put(metadefs::update_namespace)
                .delete(metadefs::delete_namespace),
        )
        .route(
            "/metadefs/namespaces/{ns}/properties",
            get(metadefs::list_properties)
                .post(metadefs::create_property)
                .delete(metadefs::delete_properties),
        )
        .route(
            "/metadefs/namespaces/{ns}/properties/{name}",
            get(metadefs::show_property)
                .put(metadefs::update_property)
                .delete(metadefs::delete_property),
        )
        .route(
            "/metadefs/namespaces/{ns}/objects",
            get(metadefs::list_objects)
                .post(metadefs::create_object)
                .delete(metadefs::delete_objects),
        )
        .route(
            "/metadefs/namespaces/{ns}/objects/{name}",
            get(metadefs::show_object)
                .put(metadefs::update_object)
                .delete(metadefs::delete_object),
        )
        .route(
            "/metadefs/namespaces/{ns}/tags",
            get(metadefs::list_tags)
                .post(metadefs::create_tags)
                .delete(metadefs::delete_tags),
        )
        .route(
            "/metadefs/namespaces/{ns}/tags/{name}",
            get(metadefs::show_tag)
                .post(metadefs::create_tag)
                .put(metadefs::update_tag)
                .delete(metadefs::delete_tag),
        )
        .route(
            "/metadefs/resource_types",
            get(metadefs::list_resource_types),
        )
        .route(
            "/metadefs/namespaces/{ns}/resource_types",
            get(metadefs::list_associations).post(metadefs::create_association),
        )
        .route(
            "/metadefs/namespaces/{ns}/resource_types/{name}",
            axum::routing::delete(metadefs::delete_association),
        )
        .route("/info/import", get(info::import))
        .route("/info/stores", get(info::stores))
        .route("/info/stores/detail", get(info::stores_detail))
        .route("/info/usage", get(info::usage))
        .fallback(|OriginalUri(uri): OriginalUri| async move {
            ApiError::NotFound(format!("The resource {} could not be found.", uri.path()))
        })
        .route_layer(middleware::from_fn_with_state(
            context.clone(),
            authenticate,
        ))
        .with_state(context.clone());
    let cache = context.catalog.cache_enabled();
    let router = Router::new()
        .route(
            "/versions",
            get(move |r: Request| async move { versions::document(&r, StatusCode::OK, cache) }),
        )
        .route(
            "/healthcheck",
            get({
                let context = context.clone();
                move || healthcheck(context.clone())
            }),
        )
        .nest("/v2", v2);
    #[cfg(feature = "testing")]
    let router = router.merge(testing::router());
    let router = router
        .fallback(move |r: Request| async move {
            versions::document(&r, StatusCode::MULTIPLE_CHOICES, cache)
        })
        // Turns every handler into its route now, not on each request.
        .with_state(());
    RequestContext::new(
        router,
        RequestSettings {
            generation: context.generation,
            auth: context.auth,
            proxy: context.proxy,
            cache,
        },
    )
}

/// Establishes the caller of a v2 request (or answers 401), and refuses a body where
/// Glance's routes reject one. It runs once the route is chosen, so it also names the
/// route for the request metrics.
async fn authenticate(
    State(context): State<ApiContext>,
    mut request: Request,
    next: Next,
) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| RouteTemplate(path.as_str().to_owned()));
    let mut response = if rejects_body(&request) && has_body(request.headers()) {
        ApiError::BadRequest("A body is not expected with this request.".into()).into_response()
    } else {
        let peer = request.extensions().get::<PeerAddr>().copied();
        let resumed = request.extensions().get::<Resumed>();
        let caller = match (resumed, &context.keystone) {
            // Authenticated when it began, in the process that paused it.
            (Some(Resumed(paused)), _) => Ok(paused.caller.caller()),
            (None, Some(keystone)) => auth::keystone_caller(request.headers(), keystone).await,
            (None, None) => auth::caller(request.headers(), peer, &context.auth),
        };
        match caller {
            Ok(mut caller) => {
                caller.is_admin = context.catalog.is_admin(&caller);
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            Err(e) => e.into_response(),
        }
    };
    if let Some(template) = template {
        response.extensions_mut().insert(template);
    }
    response
}

fn rejects_body(request: &Request) -> bool {
    let path = request.uri().path();
    match *request.method() {
        Method::GET | Method::HEAD | Method::DELETE => true,
        // An image tag is the path alone; a metadefs tag is renamed by its body.
        Method::PUT => path.contains("/tags/") && !path.contains("/metadefs/"),
        Method::POST => path.contains("/actions/"),
        _ => false,
    }
}

/// Glance's test for a body: a positive Content-Length or a transfer encoding.
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// oslo.middleware's healthcheck: 200 "OK" while the service can serve, 503 with the
/// reason while its metadata database does not answer (a load balancer then sends the
/// requests elsewhere).
async fn healthcheck(context: ApiContext) -> Response {
    let text = [(CONTENT_TYPE, "text/plain; charset=UTF-8")];
    match context.catalog.database_health().await {
        Ok(()) => (text, "OK").into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "database unavailable",
        )
            .into_response(),
    }
}
