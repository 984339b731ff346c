//! Handler tests on the router without a socket: a generation's `App` over a SQLite file in
//! a temporary state dir, driven with `oneshot`-style requests as several projects.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::config::{AuthMode, Config};

struct Api {
    app: App,
    _dir: tempfile::TempDir,
}

/// Who sends a request: a project (with roles) through trusted headers, or nobody.
#[derive(Clone, Copy)]
enum As {
    /// A member (and reader) of the project, as a Keystone token lists its roles.
    Project(&'static str),
    /// A reader of the project only.
    Reader(&'static str),
    Admin,
    Anonymous,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

async fn api() -> Api {
    api_with(|_| {}).await
}

async fn api_with(adjust: impl FnOnce(&mut Config)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        state_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.auth.mode = AuthMode::TrustedHeaders;
    adjust(&mut config);
    let app = App::build(&config, 1, None).await.unwrap();
    Api { app, _dir: dir }
}

impl Api {
    async fn call(&self, who: As, method: &str, uri: &str, body: Option<(&str, Value)>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "glint.test:9292")
            .header("accept", "application/json");
        match who {
            As::Project(p) => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", p)
                    .header("x-roles", "member,reader");
            }
            As::Reader(p) => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", p)
                    .header("x-roles", "reader");
            }
            As::Admin => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", "admin-project")
                    .header("x-roles", "admin");
            }
            As::Anonymous => {}
        }
        let request = match body {
            Some((content_type, value)) => {
                let text = value.to_string();
                request
                    .header("content-type", content_type)
                    .header("content-length", text.len())
                    .body(Body::from(text))
            }
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.handle(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    async fn create(&self, who: As, body: Value) -> Value {
        let reply = self
            .call(who, "POST", "/v2/images", Some(("application/json", body)))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body
    }

    async fn status(&self, who: As, method: &str, uri: &str) -> StatusCode {
        self.call(who, method, uri, None).await.status
    }

    async fn create_id(&self, who: As, body: Value) -> String {
        self.create(who, body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn patch(&self, who: As, id: &str, ops: Value) -> Reply {
        self.call(
            who,
            "PATCH",
            &format!("/v2/images/{id}"),
            Some(("application/openstack-images-v2.1-json-patch", ops)),
        )
        .await
    }

    async fn list_ids(&self, who: As, query: &str) -> Vec<String> {
        let reply = self
            .call(who, "GET", &format!("/v2/images{query}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test]
async fn create_answers_like_glance() {
    let api = api().await;
    let reply = api
        .call(
            As::Project("p1"),
            "POST",
            "/v2/images",
            Some((
                "application/json",
                json!({"name": "x", "os_distro": "debian"}),
            )),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.headers["location"],
        format!("http://glint.test:9292/v2/images/{id}").as_str()
    );
    assert!(reply.headers.contains_key("x-openstack-request-id"));
    assert_eq!(
        reply.headers["openstack-image-import-methods"],
        "glance-direct,web-download,copy-image"
    );
    assert_eq!(reply.headers["openstack-image-store-ids"], "default");
    for key in [
        "checksum",
        "container_format",
        "disk_format",
        "size",
        "virtual_size",
        "os_hash_value",
    ] {
        assert!(reply.body[key].is_null(), "{key}");
    }
    assert_eq!(reply.body["owner"], "p1");
    assert_eq!(reply.body["visibility"], "shared");
    assert_eq!(reply.body["os_distro"], "debian");
    let created = reply.body["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 20, "no fractional seconds: {created}");
}

#[tokio::test]
async fn errors_are_glance_shaped_and_never_500() {
    let api = api().await;
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, Value)>,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v2/images",
            Some(("application/json", json!({"status": "active"}))),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/v2/images",
            Some(("application/json", json!({"min_ram": "x"}))),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/v2/images",
            Some(("application/json", json!([1]))),
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/v2/images/nope", None, StatusCode::NOT_FOUND),
        ("GET", "/v2/images?limit=-3", None, StatusCode::BAD_REQUEST),
        (
            "GET",
            "/v2/images?marker=nope",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v2/images?created_at=lt:whenever",
            None,
            StatusCode::BAD_REQUEST,
        ),
        ("DELETE", "/v2/images", None, StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/v2/nothing/here", None, StatusCode::NOT_FOUND),
        ("GET", "/v2/schemas/image", None, StatusCode::OK),
        ("GET", "/v2/info/stores", None, StatusCode::OK),
        ("GET", "/v2/tasks/nope", None, StatusCode::FORBIDDEN),
        ("GET", "/v2/images/nope/tasks", None, StatusCode::NOT_FOUND),
        (
            "PUT",
            "/v2/images/nope/stage",
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "POST",
            "/v2/images/nope/import",
            Some((
                "application/json",
                json!({"method": {"name": "glance-direct"}}),
            )),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/v2/images/nope/import",
            Some((
                "application/json",
                json!({"method": {"name": "glance-download"}}),
            )),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, uri, body, expected) in cases {
        let reply = api.call(As::Project("p1"), method, uri, body).await;
        assert_eq!(reply.status, expected, "{method} {uri}: {}", reply.text);
        if expected != StatusCode::OK {
            assert!(
                reply.body["message"].is_string() && reply.body["code"].is_string(),
                "{method} {uri}: {}",
                reply.text
            );
        }
    }
    let reply = api
        .call(As::Project("p1"), "DELETE", "/v2/images", None)
        .await;
    assert!(reply.headers["allow"].to_str().unwrap().contains("GET"));

    let reply = api.call(As::Anonymous, "GET", "/v2/images", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let huge = json!({"name": "x".repeat(3 << 20)});
    let reply = api
        .call(
            As::Project("p1"),
            "POST",
            "/v2/images",
            Some(("application/json", huge)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body["title"], "Payload Too Large", "{}", reply.text);

    let reply = api
        .call(
            As::Project("p1"),
            "GET",
            "/v2/images",
            Some(("application/json", json!({}))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text.contains("A body is not expected"),
        "{}",
        reply.text
    );
}

/// Identity headers count only from a peer in `auth.trusted_proxies`; from any other they
/// are ignored, so the request is a 401 like one without identity, and its request id is
/// not reused.
#[tokio::test]
async fn identity_headers_from_an_untrusted_peer_are_401() {
    let api = api_with(|c| c.auth.trusted_proxies = vec!["10.0.0.0/24".parse().unwrap()]).await;
    let from = |peer: &str| {
        let mut request = Request::builder()
            .uri("/v2/images")
            .header("accept", "application/json")
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "p1")
            .header("x-roles", "admin")
            .header("x-openstack-request-id", "req-chosen-by-the-client")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(super::PeerAddr(peer.parse().unwrap()));
        request
    };
    let response = api.app.handle(from("192.0.2.9:41000")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let id = response.headers()["x-openstack-request-id"]
        .to_str()
        .unwrap();
    assert_ne!(id, "req-chosen-by-the-client");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "Glance's error body"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "401 Unauthorized", "{body}");
    assert_eq!(body["title"], "Unauthorized", "{body}");
    assert!(body["message"].is_string(), "{body}");

    let response = api.app.handle(from("10.0.0.7:41000")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-openstack-request-id"],
        "req-chosen-by-the-client"
    );
    // Without the extension (no socket): loopback, which this config does not trust.
    let reply = api.call(As::Admin, "GET", "/v2/images", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn patch_checks_its_media_type_and_applies_glance_rules() {
    let api = api().await;
    let id = api.create_id(As::Project("p1"), json!({"name": "a"})).await;
    let reply = api
        .call(
            As::Project("p1"),
            "PATCH",
            &format!("/v2/images/{id}"),
            Some(("application/json", json!([]))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.headers.contains_key("accept-patch"));

    let reply = api
        .patch(
            As::Project("p1"),
            &id,
            json!([{"op": "add", "path": "/name", "value": "b"}, {"op": "add", "path": "/k", "value": "v"}]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        (reply.body["name"].as_str(), reply.body["k"].as_str()),
        (Some("b"), Some("v"))
    );

    let reply = api
        .patch(
            As::Project("p1"),
            &id,
            json!([{"op": "replace", "path": "/missing", "value": "v"}]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let reply = api
        .patch(
            As::Project("p2"),
            &id,
            json!([{"op": "replace", "path": "/name", "value": "x"}]),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "invisible is 404, not 403"
    );
}

#[tokio::test]
async fn visibility_and_members_follow_glance() {
    let api = api().await;
    let shared = api
        .create_id(As::Project("owner"), json!({"name": "shared"}))
        .await;
    let private = api
        .create_id(
            As::Project("owner"),
            json!({"name": "private", "visibility": "private"}),
        )
        .await;
    let public = api
        .create_id(As::Admin, json!({"name": "public", "visibility": "public"}))
        .await;
    let community = api
        .create_id(
            As::Project("owner"),
            json!({"name": "community", "visibility": "community"}),
        )
        .await;

    let other = As::Project("other");
    assert_eq!(api.list_ids(other, "").await, vec![public.clone()]);
    assert_eq!(
        api.list_ids(other, "?visibility=community").await,
        vec![community.clone()]
    );
    assert_eq!(
        api.status(other, "GET", &format!("/v2/images/{private}"))
            .await,
        StatusCode::NOT_FOUND
    );

    let reply = api
        .call(
            As::Project("owner"),
            "POST",
            &format!("/v2/images/{shared}/members"),
            Some(("application/json", json!({"member": "other"}))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["status"], "pending");
    // Pending: visible by id, listed only when asked for.
    assert_eq!(
        api.status(other, "GET", &format!("/v2/images/{shared}"))
            .await,
        StatusCode::OK
    );
    assert!(!api.list_ids(other, "").await.contains(&shared));
    assert!(
        api.list_ids(other, "?member_status=pending")
            .await
            .contains(&shared)
    );
    // Only the member accepts.
    let member_uri = format!("/v2/images/{shared}/members/other");
    let accept = |who| {
        api.call(
            who,
            "PUT",
            &member_uri,
            Some(("application/json", json!({"status": "accepted"}))),
        )
    };
    assert_eq!(
        accept(As::Project("owner")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(accept(other).await.status, StatusCode::OK);
    assert!(api.list_ids(other, "").await.contains(&shared));
    // A member may not change the image.
    let reply = api
        .patch(
            other,
            &shared,
            json!([{"op": "replace", "path": "/name", "value": "mine"}]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Members of a private image: refused.
    let reply = api
        .call(
            As::Project("owner"),
            "POST",
            &format!("/v2/images/{private}/members"),
            Some(("application/json", json!({"member": "other"}))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn listing_filters_sorts_and_pages() {
    let api = api().await;
    let me = As::Project("p");
    let mut ids = Vec::new();
    for i in 0..7 {
        let body = json!({
            "name": format!("img-{i}"),
            "disk_format": if i % 2 == 0 { "raw" } else { "qcow2" },
            "min_ram": i,
            "tags": if i < 3 { vec!["small"] } else { vec!["big"] },
            "os_distro": if i == 4 { "arch" } else { "debian" },
        });
        ids.push(api.create_id(me, body).await);
    }
    assert_eq!(api.list_ids(me, "?disk_format=raw").await.len(), 4);
    assert_eq!(api.list_ids(me, "?disk_format=in:raw,qcow2").await.len(), 7);
    assert_eq!(api.list_ids(me, "?tag=small").await.len(), 3);
    assert_eq!(
        api.list_ids(me, "?os_distro=arch").await,
        vec![ids[4].clone()]
    );
    assert_eq!(api.list_ids(me, "?min_ram_min=5").await.len(), 2);
    assert_eq!(api.list_ids(me, "?name=img-3").await, vec![ids[3].clone()]);
    let by_name: Vec<String> = api.list_ids(me, "?sort=name:asc").await;
    assert_eq!(by_name, ids);

    // Pages of 3 by name: follow `next` until it stops.
    let mut seen = Vec::new();
    let mut next = Some("/v2/images?sort_key=name&sort_dir=asc&limit=3".to_string());
    while let Some(uri) = next {
        let reply = api.call(me, "GET", &uri, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert!(
            reply.body["first"]
                .as_str()
                .unwrap()
                .starts_with("/v2/images?")
        );
        for image in reply.body["images"].as_array().unwrap() {
            seen.push(image["id"].as_str().unwrap().to_string());
        }
        next = reply.body["next"].as_str().map(String::from);
    }
    assert_eq!(seen, ids);

    // Mixed directions take the other keyset path.
    let mut seen = Vec::new();
    let mut next = Some("/v2/images?sort=disk_format:asc,name:desc&limit=2".to_string());
    while let Some(uri) = next {
        let reply = api.call(me, "GET", &uri, None).await;
        for image in reply.body["images"].as_array().unwrap() {
            seen.push(image["name"].as_str().unwrap().to_string());
        }
        next = reply.body["next"].as_str().map(String::from);
    }
    assert_eq!(
        seen,
        [
            "img-5", "img-3", "img-1", "img-6", "img-4", "img-2", "img-0"
        ]
    );
}

/// Images created within one second list newest first in the order they were created:
/// created_at keeps sub-second precision, though it is shown, and filtered on, in whole
/// seconds as Glance does.
#[tokio::test]
async fn newest_first_is_creation_order_and_times_show_whole_seconds() {
    let api = api().await;
    let me = As::Project("p");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.create_id(me, json!({"name": format!("n-{i}")})).await);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(api.list_ids(me, "").await, newest_first);
    assert_eq!(api.list_ids(me, "?sort=created_at:asc").await, ids);

    // Pages of 2 follow the same order: the marker keys on the precise time.
    let mut seen = Vec::new();
    let mut next = Some("/v2/images?limit=2".to_string());
    while let Some(uri) = next {
        let reply = api.call(me, "GET", &uri, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for image in reply.body["images"].as_array().unwrap() {
            seen.push(image["id"].as_str().unwrap().to_string());
        }
        next = reply.body["next"].as_str().map(String::from);
    }
    assert_eq!(seen, newest_first);

    let reply = api.call(me, "GET", "/v2/images", None).await;
    let shown = |id: &str| -> String {
        let images = reply.body["images"].as_array().unwrap();
        let image = images.iter().find(|i| i["id"] == id).unwrap();
        for key in ["created_at", "updated_at"] {
            let text = image[key].as_str().unwrap();
            assert!(
                text.len() == 20 && text.ends_with('Z') && !text.contains('.'),
                "{key}: {text}"
            );
        }
        image["created_at"].as_str().unwrap().to_string()
    };
    // Filters compare the second shown: an image is not `gt:` its own created_at.
    let oldest = &ids[0];
    let at = shown(oldest);
    let same_second: Vec<&String> = ids.iter().filter(|id| shown(id) == at).collect();
    let later: Vec<&String> = ids.iter().filter(|id| shown(id) > at).collect();
    for (op, includes_oldest, count) in [
        ("", true, same_second.len()),
        ("eq:", true, same_second.len()),
        ("gte:", true, ids.len()),
        ("lte:", true, same_second.len()),
        ("gt:", false, later.len()),
        ("lt:", false, 0),
        ("neq:", false, later.len()),
    ] {
        let found = api.list_ids(me, &format!("?created_at={op}{at}")).await;
        assert_eq!(
            found.contains(oldest),
            includes_oldest,
            "{op}{at}: {found:?}"
        );
        assert_eq!(found.len(), count, "{op}{at}: {found:?}");
    }
}

#[tokio::test]
async fn delete_tags_and_actions() {
    let api = api().await;
    let me = As::Project("p");
    let id = api.create_id(me, json!({"protected": true})).await;
    let uri = format!("/v2/images/{id}");
    assert_eq!(api.status(me, "DELETE", &uri).await, StatusCode::FORBIDDEN);
    assert_eq!(
        api.status(me, "PUT", &format!("{uri}/tags/t1")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(me, "PUT", &format!("{uri}/tags/t1")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(me, "DELETE", &format!("{uri}/tags/t2")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.status(me, "POST", &format!("{uri}/actions/deactivate"))
            .await,
        StatusCode::FORBIDDEN,
        "a queued image cannot be deactivated"
    );
    let reply = api
        .patch(
            me,
            &id,
            json!([{"op": "replace", "path": "/protected", "value": false}]),
        )
        .await;
    assert_eq!(reply.body["tags"], json!(["t1"]));
    let deleted = api.call(me, "DELETE", &uri, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(!deleted.headers.contains_key("content-type"));
    assert_eq!(api.status(me, "GET", &uri).await, StatusCode::NOT_FOUND);
}

impl Api {
    /// A confirmed identity of project p with no role at all.
    async fn raw_as_bare(&self, method: &str, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "p")
            .body(Body::empty())
            .unwrap();
        self.app.handle(request).await.status()
    }

    async fn raw(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "p")
            .header("x-roles", "member,reader")
            .header("accept", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .app
            .handle(request.body(Body::from(body)).unwrap())
            .await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn data_files(&self) -> Vec<String> {
        std::fs::read_dir(self._dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

#[tokio::test]
async fn upload_and_download_follow_glance() {
    let api = api().await;
    let me = As::Project("p");
    let bare = api.create_id(me, json!({})).await;
    let file = format!("/v2/images/{bare}/file");
    let octets = [("content-type", "application/octet-stream")];
    assert_eq!(
        api.raw("GET", &file, &[], vec![]).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = api.raw("PUT", &file, &octets, b"abc".to_vec()).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "formats first: {}",
        reply.text
    );

    let id = api
        .create_id(
            me,
            json!({"disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let file = format!("/v2/images/{id}/file");
    let reply = api
        .raw(
            "PUT",
            &file,
            &[("content-type", "text/plain")],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A size that does not match: 400, back to queued, nothing left on disk.
    let reply = api
        .raw(
            "PUT",
            &file,
            &[octets[0], ("x-openstack-image-size", "5")],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let image = api
        .call(me, "GET", &format!("/v2/images/{id}"), None)
        .await
        .body;
    assert_eq!(image["status"], "queued");
    assert!(api.data_files().is_empty(), "{:?}", api.data_files());

    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let reply = api.raw("PUT", &file, &octets, data.clone()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let image = api
        .call(me, "GET", &format!("/v2/images/{id}"), None)
        .await
        .body;
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], 100_000);
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["checksum"].as_str().unwrap().len(), 32);
    assert!(!image.as_object().unwrap().contains_key("location"));
    assert_eq!(api.data_files(), vec![id.clone()]);

    let again = api.raw("PUT", &file, &octets, data.clone()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let whole = api.raw("GET", &file, &[], vec![]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(
        whole.headers["content-md5"],
        image["checksum"].as_str().unwrap()
    );
    let part = api
        .raw("GET", &file, &[("range", "bytes=10-19")], vec![])
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers["content-range"], "bytes 10-19/100000");
    assert_eq!(part.text.as_bytes(), &data[10..20]);
    let beyond = api
        .raw("GET", &file, &[("range", "bytes=100000-")], vec![])
        .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let several = api
        .raw("GET", &file, &[("range", "bytes=0-1,4-5")], vec![])
        .await;
    assert_eq!(several.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        api.status(me, "DELETE", &format!("/v2/images/{id}")).await,
        StatusCode::NO_CONTENT
    );
    assert!(
        api.data_files().is_empty(),
        "deleting an image deletes its data"
    );
}

#[tokio::test]
async fn size_cap_and_storage_quota_are_413_and_leave_the_image_queued() {
    let api = api_with(|c| {
        c.images.size_cap = bytesize::ByteSize::b(150_000);
        c.images.user_storage_quota = bytesize::ByteSize::b(250_000);
    })
    .await;
    let me = As::Project("p");
    let octets = [("content-type", "application/octet-stream")];
    let formats = json!({"disk_format": "raw", "container_format": "bare"});
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(api.create_id(me, formats.clone()).await);
    }
    let file = |id: &str| format!("/v2/images/{id}/file");
    let over_cap = api
        .raw("PUT", &file(&ids[0]), &octets, vec![1; 150_001])
        .await;
    assert_eq!(
        over_cap.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        over_cap.text
    );
    for id in &ids[1..3] {
        let ok = api.raw("PUT", &file(id), &octets, vec![2; 100_000]).await;
        assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text);
    }
    let over_quota = api
        .raw("PUT", &file(&ids[3]), &octets, vec![3; 100_000])
        .await;
    assert_eq!(
        over_quota.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        over_quota.text
    );
    assert!(over_quota.text.contains("quota"), "{}", over_quota.text);
    for id in [&ids[0], &ids[3]] {
        let image = api
            .call(me, "GET", &format!("/v2/images/{id}"), None)
            .await
            .body;
        assert_eq!(image["status"], "queued");
    }
    assert_eq!(api.data_files().len(), 2);
}

#[tokio::test]
async fn a_deactivated_image_downloads_only_for_admins() {
    let api = api().await;
    let me = As::Project("p");
    let id = api
        .create_id(
            me,
            json!({"disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let file = format!("/v2/images/{id}/file");
    let octets = [("content-type", "application/octet-stream")];
    assert_eq!(
        api.raw("PUT", &file, &octets, b"data".to_vec())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let deactivate = format!("/v2/images/{id}/actions/deactivate");
    assert_eq!(
        api.status(me, "POST", &deactivate).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(me, "POST", &deactivate).await,
        StatusCode::NO_CONTENT
    );
    let owner = api.raw("GET", &file, &[], vec![]).await;
    assert_eq!(owner.status, StatusCode::FORBIDDEN, "{}", owner.text);
    let admin = api.call(As::Admin, "GET", &file, None).await;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.text, "data");
    let reactivate = format!("/v2/images/{id}/actions/reactivate");
    assert_eq!(
        api.status(me, "POST", &reactivate).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.raw("GET", &file, &[], vec![]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_secure_rbac_role_matrix_follows_glance() {
    let api = api().await;
    let (member, reader, other) = (As::Project("p"), As::Reader("p"), As::Project("q"));
    let raw = json!({"disk_format": "raw", "container_format": "bare"});

    // A member creates (shared by default), uploads and deactivates its own image.
    let created = api.create(member, raw.clone()).await;
    assert_eq!(created["visibility"], "shared");
    let id = created["id"].as_str().unwrap().to_string();
    let image = format!("/v2/images/{id}");
    let file = format!("{image}/file");
    let octets = [("content-type", "application/octet-stream")];
    assert_eq!(
        api.raw("PUT", &file, &octets, b"data".to_vec())
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // A reader lists and shows, and may change nothing, download included.
    let listed = api.call(reader, "GET", "/v2/images", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["images"].as_array().unwrap().len(), 1);
    assert_eq!(api.status(reader, "GET", &image).await, StatusCode::OK);
    assert_eq!(
        api.status(reader, "GET", &file).await,
        StatusCode::FORBIDDEN
    );
    let renamed = json!([{"op": "replace", "path": "/name", "value": "x"}]);
    assert_eq!(
        api.patch(reader, &id, renamed.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            reader,
            "POST",
            "/v2/images",
            Some(("application/json", raw.clone()))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.status(reader, "DELETE", &image).await,
        StatusCode::FORBIDDEN
    );
    let members = format!("{image}/members");
    let add_q = Some(("application/json", json!({"member": "q"})));
    assert_eq!(
        api.call(reader, "POST", &members, add_q.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.status(reader, "POST", &format!("{image}/actions/deactivate"))
            .await,
        StatusCode::FORBIDDEN
    );

    // Another project does not see a shared image it is not a member of.
    assert_eq!(
        api.status(other, "GET", &image).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.patch(other, &id, renamed.clone()).await.status,
        StatusCode::NOT_FOUND
    );

    // Shared with q: q sees it and accepts for itself; the owner cannot accept for q.
    assert_eq!(
        api.call(member, "POST", &members, add_q).await.status,
        StatusCode::OK
    );
    assert_eq!(api.status(other, "GET", &image).await, StatusCode::OK);
    let accept = Some(("application/json", json!({"status": "accepted"})));
    let q_member = format!("{members}/q");
    assert_eq!(
        api.call(member, "PUT", &q_member, accept.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(other, "PUT", &q_member, accept).await.status,
        StatusCode::OK
    );
    assert_eq!(api.status(other, "GET", &file).await, StatusCode::OK);
    assert_eq!(
        api.patch(other, &id, renamed.clone()).await.status,
        StatusCode::FORBIDDEN
    );

    // Publicize is for admins; community is allowed to the owner's members.
    let visibility = |v: &str| json!([{"op": "replace", "path": "/visibility", "value": v}]);
    assert_eq!(
        api.patch(member, &id, visibility("public")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.patch(member, &id, visibility("community")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.patch(As::Admin, &id, visibility("public")).await.status,
        StatusCode::OK
    );
    assert_eq!(api.patch(member, &id, renamed).await.status, StatusCode::OK);
    assert_eq!(
        api.status(member, "POST", &format!("{image}/actions/deactivate"))
            .await,
        StatusCode::NO_CONTENT
    );

    // The tasks API is for admins.
    assert_eq!(
        api.status(member, "GET", "/v2/tasks").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.status(As::Admin, "GET", "/v2/tasks").await,
        StatusCode::OK
    );
    // Without a role at all, nothing.
    let bare = api.raw_as_bare("GET", "/v2/images").await;
    assert_eq!(bare, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_policy_file_overrides_a_default_rule() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "publicize_image: \"role:member\"\n").unwrap();
    let api = api_with(|config| config.auth.policy_file = Some(policy.clone())).await;
    let member = As::Project("p");
    let id = api.create_id(member, json!({"visibility": "public"})).await;
    let shown = api
        .call(member, "GET", &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(shown.body["visibility"], "public");
}

#[tokio::test]
async fn per_image_quotas_come_from_the_config() {
    let api = api_with(|config| {
        config.images.image_tag_quota = 2;
        config.images.image_property_quota = 1;
        config.images.image_member_quota = 1;
    })
    .await;
    let me = As::Project("p");
    let id = api.create_id(me, json!({"tags": ["a", "b"]})).await;
    let tag = |t: &str| format!("/v2/images/{id}/tags/{t}");
    assert_eq!(
        api.status(me, "PUT", &tag("c")).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let add = |k: &str| json!([{"op": "add", "path": format!("/{k}"), "value": "v"}]);
    assert_eq!(
        api.patch(me, &id, add("x_one")).await.status,
        StatusCode::OK
    );
    let over = api.patch(me, &id, add("x_two")).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        over.text
            .contains("Maximum number of properties exceeded (1)"),
        "{}",
        over.text
    );
    let members = format!("/v2/images/{id}/members");
    let member = |m: &str| Some(("application/json", json!({"member": m})));
    assert_eq!(
        api.call(me, "POST", &members, member("q")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call(me, "POST", &members, member("r")).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn the_locations_api_adds_data_already_in_a_store_and_shows_it_to_services() {
    let api = api_with(|config| {
        config.images.show_image_direct_url = true;
        config.images.show_multiple_locations = true;
    })
    .await;
    let member = As::Project("p");
    let id = api
        .create_id(
            member,
            json!({"disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let placed = api._dir.path().join("images").join("placed-by-a-service");
    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    std::fs::write(&placed, b"twelve bytes").unwrap();
    let url = format!("file://{}", placed.display());
    let locations = format!("/v2/images/{id}/locations");
    let outside = Some(("application/json", json!({"url": "file:///etc/passwd"})));
    assert_eq!(
        api.call(member, "POST", &locations, outside).await.status,
        StatusCode::BAD_REQUEST
    );
    let bad_hash =
        json!({"url": url, "validation_data": {"os_hash_algo": "md5", "os_hash_value": "x"}});
    assert_eq!(
        api.call(
            member,
            "POST",
            &locations,
            Some(("application/json", bad_hash))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    let sha = "a".repeat(128);
    let body =
        json!({"url": url, "validation_data": {"os_hash_algo": "sha512", "os_hash_value": sha}});
    let added = api
        .call(
            member,
            "POST",
            &locations,
            Some(("application/json", body.clone())),
        )
        .await;
    assert_eq!(added.status, StatusCode::ACCEPTED, "{}", added.text);
    let shown = api
        .call(member, "GET", &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(shown.body["status"], "active");
    assert_eq!(shown.body["size"], 12);
    assert_eq!(shown.body["os_hash_value"], sha.as_str());
    assert_eq!(shown.body["direct_url"], url.as_str());
    assert_eq!(shown.body["locations"][0]["metadata"]["store"], "default");
    // A location is added to a queued image only.
    assert_eq!(
        api.call(member, "POST", &locations, Some(("application/json", body)))
            .await
            .status,
        StatusCode::CONFLICT
    );
    // Reading locations is for services (and admins), not for the owner.
    assert_eq!(
        api.status(member, "GET", &locations).await,
        StatusCode::FORBIDDEN
    );
    let listed = api.call(As::Admin, "GET", &locations, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body[0]["url"], url.as_str());
}

#[tokio::test]
async fn property_protections_hide_and_guard_custom_properties() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("property-protections.conf");
    std::fs::write(
        &file,
        "[^x_secret]\ncreate = admin\nread = admin\nupdate = admin\ndelete = admin\n\n\
         [.*]\ncreate = @\nread = @\nupdate = @\ndelete = @\n",
    )
    .unwrap();
    let api = api_with(|config| config.auth.property_protection_file = Some(file.clone())).await;
    let member = As::Project("p");
    let refused = api
        .call(
            member,
            "POST",
            "/v2/images",
            Some(("application/json", json!({"x_secret": "1"}))),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text.contains("Property 'x_secret' is protected"),
        "{}",
        refused.text
    );

    let id = api
        .create_id(
            As::Admin,
            json!({"owner": "p", "x_secret": "s", "x_open": "o"}),
        )
        .await;
    let shown = api
        .call(member, "GET", &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(shown.body["x_open"], "o");
    assert!(shown.body.get("x_secret").is_none(), "{}", shown.text);
    let listed = api.call(member, "GET", "/v2/images", None).await;
    assert!(listed.body["images"][0].get("x_secret").is_none());

    let op = |op: &str, key: &str| json!([{"op": op, "path": format!("/{key}"), "value": "v"}]);
    let changed = api.patch(member, &id, op("replace", "x_open")).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert!(changed.body.get("x_secret").is_none());
    assert_eq!(
        api.patch(member, &id, op("add", "x_secret")).await.status,
        StatusCode::FORBIDDEN
    );
    // What the member could not see is still there.
    let admin = api
        .call(As::Admin, "GET", &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(admin.body["x_secret"], "s");
}
