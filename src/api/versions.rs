//! Glance's version discovery document, served at `/` (300), `/versions` (200) and for
//! any path whose first segment is not a version this server speaks (300).

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;

use super::forwarded::ClientView;

/// The versions Glance 33 lists, in its order, built as its `versions.py` builds them: the
/// head depends on the image cache (its API is 2.14, 2.16 and 2.18, which added clean and
/// prune), then the multistore versions (glint always has named stores), then 2.17 as
/// current without the cache, then the rest. The path aliases it accepts (`/v2.1/...`) are
/// the same ids. v2.12 is what glanceclient looks for before `image-tasks`.
const WITH_CACHE: &[(&str, &str)] = &[
    ("v2.18", "CURRENT"),
    ("v2.17", "SUPPORTED"),
    ("v2.16", "SUPPORTED"),
    ("v2.15", "SUPPORTED"),
    ("v2.14", "SUPPORTED"),
];
const WITHOUT_CACHE: &[(&str, &str)] = &[("v2.15", "SUPPORTED")];
const MULTISTORE: &[(&str, &str)] = &[
    ("v2.13", "SUPPORTED"),
    ("v2.12", "SUPPORTED"),
    ("v2.11", "SUPPORTED"),
    ("v2.10", "SUPPORTED"),
    ("v2.9", "SUPPORTED"),
    ("v2.8", "SUPPORTED"),
];
const CURRENT_WITHOUT_CACHE: &[(&str, &str)] = &[("v2.17", "CURRENT")];
const EARLIER: &[(&str, &str)] = &[
    ("v2.7", "SUPPORTED"),
    ("v2.6", "SUPPORTED"),
    ("v2.5", "SUPPORTED"),
    ("v2.4", "SUPPORTED"),
    ("v2.3", "SUPPORTED"),
    ("v2.2", "SUPPORTED"),
    ("v2.1", "SUPPORTED"),
    ("v2.0", "SUPPORTED"),
];

/// The versions listed with the image cache on or off, in Glance's order.
fn versions(cache: bool) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let (head, current): (&[_], &[_]) = if cache {
        (WITH_CACHE, &[])
    } else {
        (WITHOUT_CACHE, CURRENT_WITHOUT_CACHE)
    };
    head.iter().chain(MULTISTORE).chain(current).chain(EARLIER)
}

/// Whether `segment` (the first path segment) names a version the v2 API serves now: the
/// cache API's versions only while the cache is on, as Glance negotiates them.
pub fn is_version_alias(segment: &str, cache: bool) -> bool {
    segment == "v2" || versions(cache).any(|(id, _)| *id == segment)
}

/// The document with hrefs the client can reach: built from the base URL it used (see
/// `forwarded`). Written by hand rather than through serde: it is fixed but for the base,
/// and discovery is hit on every glanceclient command. `cache`: whether the image cache is
/// on.
pub fn document(request: &Request, status: StatusCode, cache: bool) -> Response {
    let base = request
        .extensions()
        .get::<ClientView>()
        .map_or("http://localhost:9292", |view| view.base_url.as_str());
    // Escaped once: a configured public endpoint may hold anything a URL may.
    let href = serde_json::to_string(&format!("{base}/v2/"))
        .unwrap_or_else(|_| "\"http://localhost:9292/v2/\"".to_string());
    let mut body = String::with_capacity(96 * 20);
    body.push_str("{\"versions\": [");
    for (i, (id, state)) in versions(cache).enumerate() {
        if i > 0 {
            body.push_str(", ");
        }
        body.push_str("{\"id\": \"");
        body.push_str(id);
        body.push_str("\", \"status\": \"");
        body.push_str(state);
        body.push_str("\", \"links\": [{\"rel\": \"self\", \"href\": ");
        body.push_str(&href);
        body.push_str("}]}");
    }
    body.push_str("]}");
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_from(base: &str) -> Request {
        let mut request = Request::builder()
            .uri("/versions")
            .body(axum::body::Body::empty())
            .unwrap();
        request.extensions_mut().insert(ClientView {
            base_url: base.into(),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
        });
        request
    }

    #[test]
    fn the_document_is_json_with_reachable_hrefs() {
        let request = request_from("http://images.example:9292");
        let response = document(&request, StatusCode::OK, false);
        let body = futures_body(response);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let versions = value["versions"].as_array().unwrap();
        let ids: Vec<&str> = versions.iter().filter_map(|v| v["id"].as_str()).collect();
        assert_eq!(
            ids,
            [
                "v2.15", "v2.13", "v2.12", "v2.11", "v2.10", "v2.9", "v2.8", "v2.17", "v2.7",
                "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"
            ]
        );
        assert_eq!(versions[7]["status"], "CURRENT");
        assert_eq!(
            versions[0]["links"][0]["href"],
            "http://images.example:9292/v2/"
        );

        let odd = request_from("https://cloud.example/a\"b\\c");
        let body = futures_body(document(&odd, StatusCode::MULTIPLE_CHOICES, false));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value["versions"][0]["links"][0]["href"],
            "https://cloud.example/a\"b\\c/v2/"
        );

        let cached = futures_body(document(&request, StatusCode::OK, true));
        let value: serde_json::Value = serde_json::from_str(&cached).unwrap();
        let ids: Vec<&str> = value["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "v2.18", "v2.17", "v2.16", "v2.15", "v2.14", "v2.13", "v2.12", "v2.11", "v2.10",
                "v2.9", "v2.8", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"
            ]
        );
        let current: Vec<&serde_json::Value> = value["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["status"] == "CURRENT")
            .collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["id"], "v2.18");
    }

    #[test]
    fn the_cache_versions_are_served_only_with_the_cache() {
        for version in ["v2.14", "v2.16", "v2.18"] {
            assert!(is_version_alias(version, true), "{version}");
            assert!(!is_version_alias(version, false), "{version}");
        }
        for version in ["v2", "v2.0", "v2.15", "v2.17"] {
            assert!(is_version_alias(version, true) && is_version_alias(version, false));
        }
        assert!(!is_version_alias("v2.19", true));
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
