//! Wire forms: images and members as Glance serialises them, and list documents with
//! their `first`/`next` links. Domain types in, JSON out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::image::Image;
use crate::domain::member::Member;
use crate::domain::task::Task;
use crate::domain::time;

/// An image as every response shows it: all base keys (null where unset), custom
/// properties as strings, Glance's timestamps, relative links. Serialised directly rather
/// than through a `Value`: a page of images is the hot path of listing.
#[derive(Serialize)]
pub struct WireImage<'a> {
    id: &'a str,
    name: &'a Option<String>,
    status: &'static str,
    visibility: &'static str,
    protected: bool,
    os_hidden: bool,
    checksum: &'a Option<String>,
    os_hash_algo: &'a Option<String>,
    os_hash_value: &'a Option<String>,
    owner: &'a Option<String>,
    size: Option<i64>,
    virtual_size: Option<i64>,
    min_ram: i64,
    min_disk: i64,
    disk_format: &'a Option<String>,
    container_format: &'a Option<String>,
    created_at: String,
    updated_at: String,
    tags: &'a BTreeSet<String>,
    #[serde(rename = "self")]
    self_link: String,
    file: String,
    schema: &'static str,
    /// Glance shows the stores only of an image that has data.
    #[serde(skip_serializing_if = "Option::is_none")]
    stores: Option<String>,
    /// `images.show_image_direct_url`: the first location's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    direct_url: Option<&'a str>,
    /// `images.show_multiple_locations`: every location.
    #[serde(skip_serializing_if = "Option::is_none")]
    locations: Option<Vec<WireLocation<'a>>>,
    #[serde(flatten)]
    properties: &'a BTreeMap<String, String>,
}

/// A location as Glance shows it: the URL and the store it is in.
#[derive(Serialize)]
pub struct WireLocation<'a> {
    url: &'a str,
    metadata: WireLocationMetadata<'a>,
}

#[derive(Serialize)]
pub struct WireLocationMetadata<'a> {
    store: &'a str,
}

pub fn locations(image: &Image) -> Vec<WireLocation<'_>> {
    image
        .locations
        .iter()
        .map(|l| WireLocation {
            url: &l.url,
            metadata: WireLocationMetadata { store: &l.store },
        })
        .collect()
}

/// Which of the location fields image bodies carry (Glance's `show_image_direct_url` and
/// `show_multiple_locations`; both off by default, as they reveal where data lives).
#[derive(Debug, Clone, Copy, Default)]
pub struct Show {
    pub direct_url: bool,
    pub locations: bool,
}

pub fn image(image: &Image, show: Show) -> WireImage<'_> {
    WireImage {
        id: &image.id,
        name: &image.name,
        status: image.status.as_str(),
        visibility: image.visibility.as_str(),
        protected: image.protected,
        os_hidden: image.os_hidden,
        checksum: &image.checksum,
        os_hash_algo: &image.os_hash_algo,
        os_hash_value: &image.os_hash_value,
        owner: &image.owner,
        size: image.size,
        virtual_size: image.virtual_size,
        min_ram: image.min_ram,
        min_disk: image.min_disk,
        disk_format: &image.disk_format,
        container_format: &image.container_format,
        created_at: time::format(image.created_at),
        updated_at: time::format(image.updated_at),
        tags: &image.tags,
        self_link: format!("/v2/images/{}", image.id),
        file: format!("/v2/images/{}/file", image.id),
        schema: "/v2/schemas/image",
        stores: (!image.locations.is_empty()).then(|| image.stores()),
        direct_url: image
            .locations
            .first()
            .filter(|_| show.direct_url)
            .map(|l| l.url.as_str()),
        locations: show.locations.then(|| locations(image)),
        properties: &image.properties,
    }
}

pub fn member(member: &Member) -> Value {
    json!({
        "member_id": member.member_id,
        "image_id": member.image_id,
        "status": member.status.as_str(),
        "created_at": time::format(member.created_at),
        "updated_at": time::format(member.updated_at),
        "schema": "/v2/schemas/member",
    })
}

/// A task as `GET /v2/tasks/{id}` shows it.
pub fn task(task: &Task) -> Value {
    let mut shown = json!({
        "id": task.id,
        "type": task.kind,
        "status": task.status.as_str(),
        "input": task.input,
        "result": task.result,
        "message": task.message,
        "created_at": time::format(task.created_at),
        "updated_at": time::format(task.updated_at),
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    });
    // Present only when set, as Glance shows them (the schema says strings: a client that
    // validates against it refuses a null).
    for (key, value) in [
        ("owner", task.owner.clone()),
        ("expires_at", task.expires_at.map(time::format)),
        ("image_id", task.image_id.clone()),
        ("request_id", task.request_id.clone()),
        ("user_id", task.user_id.clone()),
    ] {
        if let Some(value) = value {
            shown[key] = json!(value);
        }
    }
    shown
}

/// `GET /v2/tasks`: task stubs (no input, result or message, as Glance lists them) with
/// `first`/`next` links that keep every parameter but the marker.
pub fn task_list(tasks: &[Task], params: &[(String, String)], more: bool) -> Value {
    let link = |marker: Option<&str>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "marker") {
            query.append_pair(k, v);
        }
        if let Some(marker) = marker {
            query.append_pair("marker", marker);
        }
        let query = query.finish();
        if query.is_empty() {
            "/v2/tasks".to_string()
        } else {
            format!("/v2/tasks?{query}")
        }
    };
    let stubs: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let mut stub = task(t);
            if let Some(fields) = stub.as_object_mut() {
                for key in ["input", "result", "message"] {
                    fields.remove(key);
                }
            }
            stub
        })
        .collect();
    let mut list = json!({"tasks": stubs, "first": link(None), "schema": "/v2/schemas/tasks"});
    if let Some(last) = tasks.last().filter(|_| more) {
        list["next"] = json!(link(Some(&last.id)));
    }
    list
}

/// `GET /v2/images/{id}/tasks`: the tasks as Glance's image-task view lists them.
pub fn image_tasks(tasks: &[Task]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|task| {
            json!({
                "id": task.id,
                "image_id": task.image_id,
                "request_id": task.request_id,
                "user_id": task.user_id,
                "type": task.kind,
                "status": task.status.as_str(),
                "owner": task.owner,
                "expires_at": task.expires_at.map(time::format),
                "created_at": time::format(task.created_at),
                "updated_at": time::format(task.updated_at),
                "deleted_at": Value::Null,
                "deleted": false,
                "input": task.input,
                "result": task.result,
                "message": task.message,
            })
        })
        .collect();
    json!({"tasks": tasks})
}

pub fn members(members: &[Member]) -> Value {
    json!({
        "members": members.iter().map(member).collect::<Vec<_>>(),
        "schema": "/v2/schemas/members",
    })
}

/// `{"images": …, "first": …, "schema": …, "next": …}` with links relative to `/v2/images`
/// that keep every request parameter but the marker.
pub fn image_list<'a>(
    images: &'a [Image],
    params: &[(String, String)],
    more: bool,
    show: Show,
) -> WireImageList<'a> {
    let kept: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "marker").collect();
    let link = |marker: Option<&str>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        if let Some(marker) = marker {
            query.append_pair("marker", marker);
        }
        let query = query.finish();
        if query.is_empty() {
            "/v2/images".to_string()
        } else {
            format!("/v2/images?{query}")
        }
    };
    WireImageList {
        images: images.iter().map(|i| image(i, show)).collect(),
        first: link(None),
        schema: "/v2/schemas/images",
        next: images
            .last()
            .filter(|_| more)
            .map(|last| link(Some(&last.id))),
    }
}

/// `{"images": …, "first": …, "schema": …, "next": …}` with links relative to
/// `/v2/images` that keep every request parameter but the marker.
#[derive(Serialize)]
pub struct WireImageList<'a> {
    images: Vec<WireImage<'a>>,
    first: String,
    schema: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}
