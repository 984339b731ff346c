//! The catalogue read path against real processes: a list page kept in memory is never
//! served once another process sharing the database (the SQLite file, or the server
//! `TEST_DATABASE_SERVER` names) has committed a change.

mod support;

use support::{FakeSystemd, SELF_BOUND_LISTEN, get_once};

fn listed_names(body: &[u8]) -> Vec<String> {
    let page: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    page["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_sharing_the_database_sees_the_others_commits_in_its_lists() {
    let mut first = FakeSystemd::new();
    let shared = first.path("shared.db");
    let config = format!(
        "[server]\nlisten = [\"{SELF_BOUND_LISTEN}\"]\n[database]\nurl = \"sqlite://{}\"\n",
        shared.display()
    );
    first.write_config(&config);
    first.start().await;
    let mut second = FakeSystemd::new();
    // On a database server, the first one's database (the config's SQLite file otherwise).
    second.env = first.env.clone();
    second.write_config(&config);
    second.start().await;
    let (a, b) = (
        first.bound_addr(SELF_BOUND_LISTEN).await,
        second.bound_addr(SELF_BOUND_LISTEN).await,
    );

    let list = |addr| async move {
        let reply = get_once(addr, "/v2/images").await.expect("list");
        assert_eq!(reply.status, 200);
        listed_names(&reply.body)
    };
    assert!(list(b).await.is_empty());
    assert!(list(b).await.is_empty(), "the page again, kept");
    let mut conn = support::Conn::open(a).await.expect("connect");
    let (status, image) = conn
        .json(
            "POST",
            "/v2/images",
            "application/json",
            &serde_json::json!({"name": "made-on-a"}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201);
    assert_eq!(list(b).await, vec!["made-on-a"]);
    let id = image["id"].as_str().expect("id");
    let (status, _) = conn
        .json(
            "PATCH",
            &format!("/v2/images/{id}"),
            "application/openstack-images-v2.1-json-patch",
            &serde_json::json!([{"op": "replace", "path": "/name", "value": "renamed-on-a"}]),
        )
        .await
        .expect("patch");
    assert_eq!(status, 200);
    assert_eq!(list(b).await, vec!["renamed-on-a"]);
    assert_eq!(list(a).await, vec!["renamed-on-a"]);
    let tagged = |addr| async move {
        let reply = get_once(addr, "/v2/images?tag=t").await.expect("list");
        listed_names(&reply.body)
    };
    assert!(tagged(b).await.is_empty());
    let reply = conn
        .send(
            "PUT",
            &format!("/v2/images/{id}/tags/t"),
            None,
            bytes::Bytes::new(),
        )
        .await
        .expect("tag");
    assert_eq!(reply.status, 204);
    assert_eq!(tagged(b).await, vec!["renamed-on-a"], "a tag added on a");
    assert_eq!(first.stop().await, 0);
    assert_eq!(second.stop().await, 0);
}
