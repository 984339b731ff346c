//! Handler tests of image data: upload and download, size cap and quota, deactivated images,
//! and the locations API.

use http::StatusCode;
use serde_json::json;

use super::*;

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
async fn with_locations_shown_a_patch_adds_replaces_and_removes_locations_as_glance_does() {
    use crate::config::{DataDirConfig, NamedStoreConfig};
    let api = api_with(|config| {
        config.images.show_multiple_locations = true;
        for (id, default) in [("a", true), ("b", false)] {
            config.stores.insert(
                id.into(),
                NamedStoreConfig {
                    default,
                    ..NamedStoreConfig::filesystem(vec![DataDirConfig {
                        path: id.into(),
                        priority: 0,
                        read_only: false,
                    }])
                },
            );
        }
    })
    .await;
    let member = As::Project("p");
    let id = api
        .create_id(
            member,
            json!({"disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let place = |store: &str| {
        let file = api._dir.path().join(store).join(format!("placed-{store}"));
        std::fs::write(&file, b"twelve bytes").unwrap();
        format!("file://{}", file.display())
    };
    let (in_a, in_b) = (place("a"), place("b"));

    assert_eq!(
        api.patch(
            member,
            &id,
            json!([{"op": "replace", "path": "/locations", "value": []}])
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "Cannot set locations to empty list."
    );
    let added = api
        .patch(
            member,
            &id,
            json!([{"op": "add", "path": "/locations/-", "value": {"url": in_a, "metadata": {}}}]),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(added.body["status"], "active");
    assert_eq!(added.body["size"], 12);
    let copy = api
        .patch(
            member,
            &id,
            json!([{"op": "add", "path": "/locations/1", "value": {"url": in_b, "metadata": {}}}]),
        )
        .await;
    assert_eq!(copy.status, StatusCode::OK, "{}", copy.text);
    assert_eq!(copy.body["locations"].as_array().unwrap().len(), 2);
    let replace =
        json!([{"op": "replace", "path": "/locations", "value": [{"url": in_a, "metadata": {}}]}]);
    assert_eq!(
        api.patch(member, &id, replace).await.status,
        StatusCode::BAD_REQUEST
    );

    let remove_first = json!([{"op": "remove", "path": "/locations/0"}]);
    assert_eq!(
        api.patch(member, &id, remove_first.clone()).await.status,
        StatusCode::FORBIDDEN,
        "removing a location is for admins"
    );
    let removed = api.patch(As::Admin, &id, remove_first.clone()).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.body["locations"][0]["metadata"]["store"], "b");
    let last = api.patch(As::Admin, &id, remove_first).await;
    assert_eq!(last.status, StatusCode::FORBIDDEN);
    assert!(
        last.text.contains("Cannot remove last location"),
        "{}",
        last.text
    );
}

/// `import.plugins = ["inject_metadata"]`: an import by a caller without an ignored role
/// gives its image the configured properties (never a base attribute); one with an ignored
/// role does not.
#[tokio::test]
async fn inject_metadata_adds_the_configured_properties_to_imports() {
    use crate::config::ImportPlugin;
    for (ignored, injected) in [("admin", true), ("member", false)] {
        let api = api_with(|config| {
            config.import.plugins = vec![ImportPlugin::InjectMetadata];
            config.import.inject_metadata.properties = [
                ("hw_qemu_guest_agent".to_string(), "yes".to_string()),
                ("name".to_string(), "not a property".to_string()),
            ]
            .into();
            config.import.inject_metadata.ignore_user_roles = vec![ignored.into()];
        })
        .await;
        let id = api
            .create_id(
                As::Project("p"),
                json!({"name": "mine", "disk_format": "raw", "container_format": "bare"}),
            )
            .await;
        let staged = api
            .raw(
                "PUT",
                &format!("/v2/images/{id}/stage"),
                &[("content-type", "application/octet-stream")],
                b"staged bytes".to_vec(),
            )
            .await;
        assert_eq!(staged.status, StatusCode::NO_CONTENT);
        let started = api
            .call(
                As::Project("p"),
                "POST",
                &format!("/v2/images/{id}/import"),
                Some((
                    "application/json",
                    json!({"method": {"name": "glance-direct"}}),
                )),
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
        let shown = api
            .call(As::Project("p"), "GET", &format!("/v2/images/{id}"), None)
            .await;
        assert_eq!(
            shown.body["name"], "mine",
            "a base attribute is never injected"
        );
        assert_eq!(
            shown.body.get("hw_qemu_guest_agent").is_some(),
            injected,
            "ignore_user_roles = [{ignored}]: {}",
            shown.text
        );
    }
}
