//! Glance's version discovery document, served at `/` (300), `/versions` (200) and for
//! any path whose first segment is not a version this server speaks (300).

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HOST};

/// The versions Glance 33 lists with multistore (glint always has named stores) and
/// without the image cache, in its order; the path aliases it accepts (`/v2.1/...`) are
/// the same ids. v2.12 is what glanceclient looks for before `image-tasks`.
const VERSIONS: &[(&str, &str)] = &[
    ("v2.15", "SUPPORTED"),
    ("v2.13", "SUPPORTED"),
    ("v2.12", "SUPPORTED"),
    ("v2.11", "SUPPORTED"),
    ("v2.10", "SUPPORTED"),
    ("v2.9", "SUPPORTED"),
    ("v2.8", "SUPPORTED"),
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

/// The document with hrefs the client can reach: built from the `Host` it used. Written
/// by hand rather than through serde: it is fixed but for the host, and discovery is hit on
/// every glanceclient command.
pub fn document(request: &Request, status: StatusCode) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:9292");
    // A Host header that would need escaping in JSON is not a host; fall back.
    let host = if host
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        host
    } else {
        "localhost:9292"
    };
    let mut body = String::with_capacity(96 * VERSIONS.len());
    body.push_str("{\"versions\": [");
    for (i, (id, state)) in VERSIONS.iter().enumerate() {
        if i > 0 {
            body.push_str(", ");
        }
        body.push_str("{\"id\": \"");
        body.push_str(id);
        body.push_str("\", \"status\": \"");
        body.push_str(state);
        body.push_str("\", \"links\": [{\"rel\": \"self\", \"href\": \"http://");
        body.push_str(host);
        body.push_str("/v2/\"}]}");
    }
    body.push_str("]}");
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_with_reachable_hrefs() {
        let request = Request::builder()
            .uri("/versions")
            .header(HOST, "images.example:9292")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = document(&request, StatusCode::OK);
        let body = futures_body(response);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let versions = value["versions"].as_array().unwrap();
        assert_eq!(versions.len(), VERSIONS.len());
        assert_eq!(versions[7]["id"], "v2.17");
        assert_eq!(versions[7]["status"], "CURRENT");
        assert_eq!(
            versions[0]["links"][0]["href"],
            "http://images.example:9292/v2/"
        );

        let hostile = Request::builder()
            .uri("/")
            .header(HOST, "a\"b")
            .body(axum::body::Body::empty())
            .unwrap();
        let body = futures_body(document(&hostile, StatusCode::MULTIPLE_CHOICES));
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    }

    fn futures_body(response: Response) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
