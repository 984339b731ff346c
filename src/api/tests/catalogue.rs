//! Handler tests of the catalogue: create, errors, JSON-patch, visibility and members,
//! listing, ordering, delete, tags, actions and per-image quotas.

use http::StatusCode;
use serde_json::json;

use super::*;

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

/// Text the engine stores differently from what it was sent never turns into a 500: names
/// and values are kept byte-exact (NUL, four-byte UTF-8, trailing spaces), and what an
/// engine cannot hold is a 400 (MySQL compares `a` and `a ` alike, so such tags are refused
/// there).
#[tokio::test]
async fn text_is_kept_exactly_or_refused_with_a_400() {
    let api = api().await;
    let create = |body: Value| {
        api.call(
            As::Project("p1"),
            "POST",
            "/v2/images",
            Some(("application/json", body)),
        )
    };
    let reply = create(json!({"name": "Debian 🐧 12", "os_distro": "débian\u{1f427}"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap();
    let shown = api
        .call(As::Project("p1"), "GET", &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(shown.body["name"], "Debian 🐧 12");
    assert_eq!(shown.body["os_distro"], "débian\u{1f427}");
    let listed = api
        .call(
            As::Project("p1"),
            "GET",
            "/v2/images?name=debian%20%F0%9F%90%A7%2012",
            None,
        )
        .await;
    assert_eq!(listed.body["images"], json!([]), "name filters are exact");

    for body in [
        json!({"name": "nul \u{0}", "tags": ["x"]}),
        json!({"name": "spaces", "tags": ["a", "a "]}),
    ] {
        let reply = create(body.clone()).await;
        assert!(
            matches!(reply.status, StatusCode::CREATED | StatusCode::BAD_REQUEST),
            "{body}: {} {}",
            reply.status,
            reply.text
        );
        if reply.status == StatusCode::CREATED {
            let id = reply.body["id"].as_str().unwrap();
            let shown = api
                .call(As::Project("p1"), "GET", &format!("/v2/images/{id}"), None)
                .await;
            assert_eq!(shown.body["name"], body["name"]);
            let mut tags = shown.body["tags"].as_array().unwrap().clone();
            tags.sort_by_key(|t| t.as_str().unwrap_or_default().to_string());
            assert_eq!(Value::Array(tags), body["tags"]);
        }
    }
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
async fn disk_and_container_formats_come_from_the_config() {
    let api = api_with(|config| {
        config.images.disk_formats = vec!["raw".into(), "ploop2".into()];
        config.images.container_formats = vec!["bare".into()];
    })
    .await;
    let me = As::Project("p");
    let create = |disk: &str, container: &str| {
        Some((
            "application/json",
            json!({"disk_format": disk, "container_format": container}),
        ))
    };
    let made = api
        .call(me, "POST", "/v2/images", create("ploop2", "bare"))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    for (disk, container, key) in [
        ("qcow2", "bare", "disk_format"),
        ("raw", "ovf", "container_format"),
    ] {
        let refused = api
            .call(me, "POST", "/v2/images", create(disk, container))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{disk}/{container}"
        );
        assert!(refused.text.contains(key), "{}", refused.text);
    }
    let id = api.create_id(me, json!({"disk_format": "raw"})).await;
    let set = |k: &str, v: &str| json!([{"op": "replace", "path": format!("/{k}"), "value": v}]);
    assert_eq!(
        api.patch(me, &id, set("disk_format", "qcow2")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.patch(me, &id, set("disk_format", "ploop2"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_glances_default_formats_the_schemas_are_glances() {
    let api = api_with(|_| {}).await;
    for (name, text) in [
        ("image", include_str!("../schemas/schema-image.json")),
        ("images", include_str!("../schemas/schema-images.json")),
    ] {
        let served = api
            .call(As::Admin, "GET", &format!("/v2/schemas/{name}"), None)
            .await;
        let glance: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(served.body, glance, "{name}");
    }
}

/// A list page is served from the recent pages only until the next write: every change a
/// client made shows in the next list it asks for, identical query or not.
#[tokio::test]
async fn a_list_never_shows_a_page_older_than_the_last_write() {
    let api = api().await;
    let me = As::Project("p");
    assert!(api.list_ids(me, "").await.is_empty());
    let first = api.create_id(me, json!({"name": "one"})).await;
    assert_eq!(api.list_ids(me, "").await, vec![first.clone()]);
    assert_eq!(
        api.list_ids(me, "").await,
        vec![first.clone()],
        "the same page again"
    );
    let reply = api
        .patch(
            me,
            &first,
            json!([{"op": "replace", "path": "/name", "value": "renamed"}]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let listed = api.call(me, "GET", "/v2/images", None).await;
    assert_eq!(listed.body["images"][0]["name"], "renamed");
    let second = api.create_id(me, json!({"name": "two"})).await;
    assert_eq!(
        api.list_ids(me, "").await,
        vec![second.clone(), first.clone()]
    );
    // Another project's page is its own.
    assert!(api.list_ids(As::Project("q"), "").await.is_empty());
    assert_eq!(
        api.status(me, "DELETE", &format!("/v2/images/{second}"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.list_ids(me, "").await, vec![first]);
}
