//! Endpoints that hold a request open on purpose, compiled only with the `testing` feature:
//! the lifecycle tests need requests that stay in flight across reloads and stops.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::routing::get;

pub fn router() -> Router {
    Router::new()
        .route("/_glint/sleep/{ms}", get(sleep))
        .route("/_glint/drip/{chunks}/{ms}", get(drip))
}

/// Answers after `ms` milliseconds.
async fn sleep(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slept\n"
}

/// Streams `chunks` lines, one every `ms` milliseconds: the response body is in flight
/// long after the handler returned.
async fn drip(Path((chunks, ms)): Path<(u32, u64)>) -> Body {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent == chunks {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("chunk {sent}\n"))),
            sent + 1,
        ))
    });
    Body::from_stream(stream)
}
