//! Handler tests of who may do what: trusted peers, Glance's secure-RBAC role matrix,
//! policy overrides and property protections.

use http::StatusCode;
use serde_json::json;

use super::*;

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
            .insert(crate::api::PeerAddr(peer.parse().unwrap()));
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
