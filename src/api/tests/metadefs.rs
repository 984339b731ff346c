//! Metadata definitions through the router: namespaces with what they hold, who sees and who
//! changes them, Glance's statuses and messages for bad input, pagination and the resource
//! types.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Api, As, Reply, api};

const NS: &str = "/v2/metadefs/namespaces";

impl Api {
    async fn send(&self, who: As, method: &str, uri: &str, body: Value) -> Reply {
        self.call(who, method, uri, Some(("application/json", body)))
            .await
    }

    async fn get_json(&self, who: As, uri: &str) -> Value {
        let reply = self.call(who, "GET", uri, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text);
        reply.body
    }
}

fn libvirt() -> Value {
    json!({
        "namespace": "OS::Compute::Libvirt",
        "display_name": "libvirt Driver Options",
        "description": "The libvirt compute driver options.",
        "visibility": "public",
        "protected": true,
        "resource_type_associations": [
            {"name": "OS::Glance::Image", "prefix": "hw_"},
            {"name": "OS::Nova::Flavor", "prefix": "hw:"}
        ],
        "properties": {
            "serial_port_count": {
                "title": "Serial Port Count",
                "description": "Specifies the count of serial ports.",
                "type": "integer",
                "minimum": 0
            },
            "boot_menu": {
                "title": "Boot Menu",
                "type": "string",
                "enum": ["true", "false"]
            }
        },
        "objects": [{
            "name": "CPU Limits",
            "description": "You can configure CPU limits.",
            "required": [],
            "properties": {
                "quota:cpu_shares": {"title": "Quota: CPU Shares", "type": "integer"}
            }
        }],
        "tags": [{"name": "Compute"}, {"name": "Libvirt"}]
    })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_namespace_is_created_shown_renamed_and_deleted_with_everything_it_holds() {
    let api = api().await;
    let created = api.send(As::Admin, "POST", NS, libvirt()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        created.headers["location"],
        "/v2/metadefs/namespaces/OS::Compute::Libvirt"
    );
    assert_eq!(created.body["owner"], "admin-project");
    assert_eq!(
        created.body["self"],
        "/v2/metadefs/namespaces/OS::Compute::Libvirt"
    );
    assert_eq!(created.body["schema"], "/v2/schemas/metadefs/namespace");
    assert_eq!(names(&created.body["tags"]), ["Compute", "Libvirt"]);

    let uri = format!("{NS}/OS::Compute::Libvirt");
    let shown = api.get_json(As::Project("p1"), &uri).await;
    assert_eq!(shown["visibility"], "public");
    assert_eq!(shown["protected"], true);
    assert_eq!(shown["properties"]["serial_port_count"]["minimum"], 0);
    assert!(
        shown["properties"]["serial_port_count"]
            .get("name")
            .is_none()
    );
    assert_eq!(shown["objects"][0]["name"], "CPU Limits");
    assert_eq!(
        shown["objects"][0]["self"],
        "/v2/metadefs/namespaces/OS::Compute::Libvirt/objects/CPU Limits"
    );
    assert_eq!(
        names(&shown["resource_type_associations"]),
        ["OS::Glance::Image", "OS::Nova::Flavor"]
    );
    assert!(shown["created_at"].as_str().unwrap().ends_with('Z'));

    // With a resource type, property names carry its prefix.
    let flavor = api
        .get_json(
            As::Project("p1"),
            &format!("{uri}?resource_type=OS::Nova::Flavor"),
        )
        .await;
    assert!(flavor["properties"].get("hw:serial_port_count").is_some());
    assert!(
        flavor["objects"][0]["properties"]
            .get("hw:quota:cpu_shares")
            .is_some()
    );
    let property = api
        .get_json(
            As::Project("p1"),
            &format!("{uri}/properties/hw_boot_menu?resource_type=OS::Glance::Image"),
        )
        .await;
    assert_eq!(property["name"], "boot_menu");

    // A second namespace of that name is a conflict; a member may not create one.
    let again = api.send(As::Admin, "POST", NS, libvirt()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again
            .text
            .contains("The metadata definition namespace=OS::Compute::Libvirt already exists."),
        "{}",
        again.text
    );
    let mut other = libvirt();
    other["namespace"] = json!("OS::Other");
    assert_eq!(
        api.send(As::Project("p1"), "POST", NS, other).await.status,
        StatusCode::FORBIDDEN
    );

    // Protected: not deleted, nor are its parts.
    let refused = api.call(As::Admin, "DELETE", &uri, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text.contains("is protected and cannot be deleted"),
        "{}",
        refused.text
    );
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{uri}/tags/Compute"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{uri}/tags/Missing"))
            .await,
        StatusCode::NOT_FOUND,
        "a missing tag is 404 before the namespace's protection"
    );

    // PUT replaces the attributes (a rename included); what it leaves out takes the
    // creation defaults.
    let renamed = api
        .send(
            As::Admin,
            "PUT",
            &uri,
            json!({"namespace": "OS::Compute::Libvirt2", "description": "renamed"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    assert_eq!(renamed.body["visibility"], "private");
    assert_eq!(renamed.body["protected"], false);
    assert_eq!(
        api.status(As::Admin, "GET", &uri).await,
        StatusCode::NOT_FOUND
    );
    let uri = format!("{NS}/OS::Compute::Libvirt2");
    // Private now: other projects do not see it at all.
    assert_eq!(
        api.status(As::Project("p1"), "GET", &uri).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.status(As::Project("p1"), "GET", &format!("{uri}/objects"))
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get_json(As::Admin, &uri).await["objects"][0]["name"],
        "CPU Limits"
    );

    assert_eq!(
        api.status(As::Admin, "DELETE", &uri).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(As::Admin, "GET", &format!("{uri}/objects"))
            .await,
        StatusCode::NOT_FOUND
    );
    // Its contents went with it: the same name starts empty.
    let fresh = api
        .send(
            As::Admin,
            "POST",
            NS,
            json!({"namespace": "OS::Compute::Libvirt2"}),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.text);
    let shown = api.get_json(As::Admin, &uri).await;
    assert!(
        shown.get("objects").is_none() && shown.get("tags").is_none(),
        "{shown}"
    );
    // The resource types its associations created stay.
    let types = api
        .get_json(As::Project("p1"), "/v2/metadefs/resource_types")
        .await;
    assert_eq!(
        names(&types["resource_types"]),
        ["OS::Glance::Image", "OS::Nova::Flavor"]
    );
}

#[tokio::test]
async fn properties_objects_and_tags_follow_glances_rules() {
    let api = api().await;
    let ns = format!("{NS}/OS::Test");
    assert_eq!(
        api.send(
            As::Admin,
            "POST",
            NS,
            json!({"namespace": "OS::Test", "visibility": "public"})
        )
        .await
        .status,
        StatusCode::CREATED
    );

    // Properties: checked against Glance's property schema.
    let property = json!({"name": "cpu", "title": "CPU", "type": "integer", "minimum": 1});
    let created = api
        .send(
            As::Admin,
            "POST",
            &format!("{ns}/properties"),
            property.clone(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body, property);
    for (bad, status) in [
        (
            json!({"name": "x", "type": "integer"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "title": "X", "type": "float"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "title": "X", "type": "string", "colour": "red"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "x", "title": "X", "type": "string", "created_at": "now"}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"name": "cpu", "title": "CPU", "type": "string"}),
            StatusCode::CONFLICT,
        ),
    ] {
        let reply = api
            .send(As::Admin, "POST", &format!("{ns}/properties"), bad.clone())
            .await;
        assert_eq!(reply.status, status, "{bad}: {}", reply.text);
    }
    let bad = api
        .call(
            As::Admin,
            "POST",
            &format!("{ns}/properties"),
            Some(("application/json", json!({"name": "x", "type": "integer"}))),
        )
        .await;
    assert!(
        bad.text
            .contains("Provided object does not match schema 'property'"),
        "{}",
        bad.text
    );
    assert_eq!(
        api.send(
            As::Project("p1"),
            "POST",
            &format!("{ns}/properties"),
            json!({"name": "y", "title": "Y", "type": "string"})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let renamed = api
        .send(
            As::Admin,
            "PUT",
            &format!("{ns}/properties/cpu"),
            json!({"name": "vcpu", "title": "vCPU", "type": "integer"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    let listed = api
        .get_json(As::Project("p1"), &format!("{ns}/properties"))
        .await;
    assert_eq!(
        listed,
        json!({"properties": {"vcpu": {"title": "vCPU", "type": "integer"}}})
    );
    let missing = api
        .call(As::Admin, "GET", &format!("{ns}/properties/cpu"), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.text.contains(
            "The metadata definition property with name=cpu was not found in namespace=OS::Test."
        ),
        "{}",
        missing.text
    );

    // Objects.
    let object = json!({"name": "Limits", "required": ["cpu"], "properties": {"cpu": {"title": "CPU", "type": "integer"}}});
    let created = api
        .send(As::Admin, "POST", &format!("{ns}/objects"), object)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["required"], json!(["cpu"]));
    assert_eq!(created.body["schema"], "/v2/schemas/metadefs/object");
    let second = api
        .send(
            As::Admin,
            "POST",
            &format!("{ns}/objects"),
            json!({"name": "Other"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    let listed = api
        .get_json(As::Project("p1"), &format!("{ns}/objects?sort_dir=asc"))
        .await;
    assert_eq!(names(&listed["objects"]), ["Limits", "Other"]);
    let first = api
        .get_json(
            As::Project("p1"),
            &format!("{ns}/objects?limit=1&sort_key=name&sort_dir=desc"),
        )
        .await;
    assert_eq!(names(&first["objects"]), ["Other"]);
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{ns}/objects/Limits"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{ns}/objects/Limits"))
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{ns}/objects"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get_json(As::Admin, &format!("{ns}/objects")).await["objects"],
        json!([])
    );

    // Tags: one by one, in bulk replacing or appending, renamed; duplicates refused.
    let one = api
        .call(As::Admin, "POST", &format!("{ns}/tags/alpha"), None)
        .await;
    assert_eq!(one.status, StatusCode::CREATED, "{}", one.text);
    assert_eq!(one.body["name"], "alpha");
    assert_eq!(
        api.status(As::Admin, "POST", &format!("{ns}/tags/alpha"))
            .await,
        StatusCode::CONFLICT
    );
    let bulk = api
        .send(
            As::Admin,
            "POST",
            &format!("{ns}/tags"),
            json!({"tags": [{"name": "beta"}, {"name": "gamma"}]}),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
    let tags = api
        .get_json(As::Admin, &format!("{ns}/tags?sort_key=name&sort_dir=asc"))
        .await;
    assert_eq!(names(&tags["tags"]), ["beta", "gamma"]);
    let appended = api
        .call_with(
            As::Admin,
            "POST",
            &format!("{ns}/tags"),
            &[("x-openstack-append", "True")],
            Some(("application/json", json!({"tags": [{"name": "delta"}]}))),
        )
        .await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.text);
    let tags = api
        .get_json(As::Admin, &format!("{ns}/tags?sort_key=name&sort_dir=asc"))
        .await;
    assert_eq!(names(&tags["tags"]), ["beta", "delta", "gamma"]);
    let twice = api
        .send(
            As::Admin,
            "POST",
            &format!("{ns}/tags"),
            json!({"tags": [{"name": "x"}, {"name": "x"}]}),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(
        names(
            &api.get_json(As::Admin, &format!("{ns}/tags?sort_key=name&sort_dir=asc"))
                .await["tags"]
        ),
        ["beta", "delta", "gamma"]
    );
    let renamed = api
        .send(
            As::Admin,
            "PUT",
            &format!("{ns}/tags/beta"),
            json!({"name": "gamma"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::CONFLICT, "{}", renamed.text);
    let renamed = api
        .send(
            As::Admin,
            "PUT",
            &format!("{ns}/tags/beta"),
            json!({"name": "bravo"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    assert_eq!(
        api.get_json(As::Project("p1"), &format!("{ns}/tags/bravo"))
            .await["name"],
        "bravo"
    );
    assert_eq!(
        api.status(As::Project("p1"), "DELETE", &format!("{ns}/tags/bravo"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.status(As::Admin, "DELETE", &format!("{ns}/tags")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get_json(As::Admin, &format!("{ns}/tags")).await["tags"],
        json!([])
    );

    // Resource-type associations.
    let associated = api
        .send(
            As::Admin,
            "POST",
            &format!("{ns}/resource_types"),
            json!({"name": "OS::Cinder::Volume", "prefix": "x_", "properties_target": "image"}),
        )
        .await;
    assert_eq!(
        associated.status,
        StatusCode::CREATED,
        "{}",
        associated.text
    );
    assert_eq!(associated.body["properties_target"], "image");
    assert_eq!(
        api.send(
            As::Admin,
            "POST",
            &format!("{ns}/resource_types"),
            json!({"name": "OS::Cinder::Volume"})
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    let listed = api
        .get_json(As::Project("p1"), &format!("{ns}/resource_types"))
        .await;
    assert_eq!(
        names(&listed["resource_type_associations"]),
        ["OS::Cinder::Volume"]
    );
    assert_eq!(
        api.status(
            As::Admin,
            "DELETE",
            &format!("{ns}/resource_types/OS::Cinder::Volume")
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.status(
            As::Admin,
            "DELETE",
            &format!("{ns}/resource_types/OS::Cinder::Volume")
        )
        .await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn namespaces_list_by_page_visibility_and_resource_type() {
    let api = api().await;
    for (i, (owner, visibility)) in [
        ("admin", "public"),
        ("p1", "private"),
        ("p2", "private"),
        ("admin", "public"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body =
            json!({"namespace": format!("NS{i}"), "visibility": visibility, "owner": owner});
        if i % 2 == 0 {
            body["resource_type_associations"] = json!([{"name": "OS::Glance::Image"}]);
        }
        assert_eq!(
            api.send(As::Admin, "POST", NS, body).await.status,
            StatusCode::CREATED
        );
    }
    let list = |who, query: &'static str| {
        let api = &api;
        async move {
            let body = api.get_json(who, &format!("{NS}{query}")).await;
            (
                body["namespaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["namespace"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>(),
                body,
            )
        }
    };
    assert_eq!(list(As::Admin, "").await.0, ["NS3", "NS2", "NS1", "NS0"]);
    assert_eq!(
        list(As::Project("p1"), "?sort_dir=asc").await.0,
        ["NS0", "NS1", "NS3"]
    );
    assert_eq!(
        list(
            As::Admin,
            "?visibility=private&sort_key=namespace&sort_dir=asc"
        )
        .await
        .0,
        ["NS1", "NS2"]
    );
    let (by_type, body) = list(
        As::Admin,
        "?resource_types=OS::Glance::Image,OS::Nova::Flavor",
    )
    .await;
    assert_eq!(by_type, ["NS2", "NS0"]);
    assert_eq!(
        body["namespaces"][0]["resource_type_associations"][0]["name"],
        "OS::Glance::Image"
    );

    let (page, body) = list(As::Admin, "?limit=2&sort_dir=asc").await;
    assert_eq!(page, ["NS0", "NS1"]);
    assert_eq!(
        body["first"],
        "/v2/metadefs/namespaces?limit=2&sort_dir=asc"
    );
    let next = body["next"].as_str().unwrap().to_string();
    assert_eq!(
        next,
        "/v2/metadefs/namespaces?limit=2&sort_dir=asc&marker=NS1"
    );
    let rest = api.get_json(As::Admin, &next).await;
    let rest: Vec<&str> = rest["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["NS2", "NS3"]);

    for (query, message) in [
        ("?limit=x", "limit param must be an integer"),
        ("?limit=-1", "limit param must be positive"),
        ("?sort_dir=up", "Invalid sort direction: up"),
        ("?visibility=shared", "Invalid visibility value: shared"),
        ("?sort_key=colour", "Invalid sort key"),
    ] {
        let reply = api
            .call(As::Admin, "GET", &format!("{NS}{query}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.text.contains(message), "{query}: {}", reply.text);
    }
    // Every schema is served.
    for name in [
        "namespace",
        "namespaces",
        "object",
        "objects",
        "property",
        "properties",
        "resource_type",
        "resource_types",
        "tag",
        "tags",
    ] {
        let schema = api
            .get_json(As::Reader("p1"), &format!("/v2/schemas/metadefs/{name}"))
            .await;
        assert!(schema["name"].is_string(), "{name}");
    }
    assert_eq!(
        api.status(As::Reader("p1"), "GET", "/v2/schemas/metadefs/nothing")
            .await,
        StatusCode::NOT_FOUND
    );
}
