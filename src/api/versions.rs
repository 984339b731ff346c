//! Glance's version discovery document, served at `/` (300), `/versions` (200) and for
//! any path whose first segment is not a version this server speaks (300).

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::HOST;
use serde::Serialize;

/// The versions Glance 33 lists without multistore and without the image cache, in its
/// order; the path aliases it accepts (`/v2.1/...`) are the same ids.
const VERSIONS: &[(&str, &str)] = &[
    ("v2.15", "SUPPORTED"),
    ("v2.9", "SUPPORTED"),
    ("v2.17", "CURRENT"),
    ("v2.7", "SUPPORTED"),
    ("v2.6", "SUPPORTED"),
    ("v2.5", "SUPPORTED"),
    ("v2.4", "SUPPORTED"),
    ("v2.3", "SUPPORTED"),
    ("v2.2", "SUPPORTED"),
    ("v2.1", "SUPPORTED"),
    ("v2.0", "SUPPORTED"),
];

/// Whether `segment` (the first path segment) names a version served by the v2 API.
pub fn is_version_alias(segment: &str) -> bool {
    segment == "v2" || VERSIONS.iter().any(|(id, _)| *id == segment)
}

#[derive(Serialize)]
struct Document {
    versions: Vec<Version>,
}

#[derive(Serialize)]
struct Version {
    id: &'static str,
    status: &'static str,
    links: [Link; 1],
}

#[derive(Serialize)]
struct Link {
    rel: &'static str,
    href: String,
}

/// The document with hrefs the client can reach: built from the `Host` it used.
pub fn document(request: &Request, status: StatusCode) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:9292");
    let href = format!("http://{host}/v2/");
    let versions = VERSIONS
        .iter()
        .map(|(id, status)| Version {
            id,
            status,
            links: [Link {
                rel: "self",
                href: href.clone(),
            }],
        })
        .collect();
    (status, Json(Document { versions })).into_response()
}
