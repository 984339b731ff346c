//! Wire forms: images and members as Glance serialises them, and list documents with
//! their `first`/`next` links. Domain types in, JSON out.

use serde_json::{Map, Value, json};

use crate::domain::image::Image;
use crate::domain::member::Member;
use crate::domain::time;

/// An image as every response shows it: all base keys (null where unset), custom
/// properties as strings, Glance's timestamps, relative links.
pub fn image(image: &Image) -> Value {
    let mut out = Map::with_capacity(22 + image.properties.len());
    for (key, value) in &image.properties {
        out.insert(key.clone(), Value::String(value.clone()));
    }
    let fields = [
        ("id", json!(image.id)),
        ("name", json!(image.name)),
        ("status", json!(image.status.as_str())),
        ("visibility", json!(image.visibility.as_str())),
        ("protected", json!(image.protected)),
        ("os_hidden", json!(image.os_hidden)),
        ("checksum", json!(image.checksum)),
        ("os_hash_algo", json!(image.os_hash_algo)),
        ("os_hash_value", json!(image.os_hash_value)),
        ("owner", json!(image.owner)),
        ("size", json!(image.size)),
        ("virtual_size", json!(image.virtual_size)),
        ("min_ram", json!(image.min_ram)),
        ("min_disk", json!(image.min_disk)),
        ("disk_format", json!(image.disk_format)),
        ("container_format", json!(image.container_format)),
        ("created_at", json!(time::format(image.created_at))),
        ("updated_at", json!(time::format(image.updated_at))),
        ("tags", json!(image.tags.iter().collect::<Vec<_>>())),
        ("self", json!(format!("/v2/images/{}", image.id))),
        ("file", json!(format!("/v2/images/{}/file", image.id))),
        ("schema", json!("/v2/schemas/image")),
    ];
    for (key, value) in fields {
        out.insert(key.to_string(), value);
    }
    Value::Object(out)
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

pub fn members(members: &[Member]) -> Value {
    json!({
        "members": members.iter().map(member).collect::<Vec<_>>(),
        "schema": "/v2/schemas/members",
    })
}

/// `{"images": …, "first": …, "schema": …, "next": …}` with links relative to `/v2/images`
/// that keep every request parameter but the marker.
pub fn image_list(images: &[Image], params: &[(String, String)], more: bool) -> Value {
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
    let mut doc = json!({
        "images": images.iter().map(image).collect::<Vec<_>>(),
        "first": link(None),
        "schema": "/v2/schemas/images",
    });
    if let (true, Some(last)) = (more, images.last()) {
        doc["next"] = json!(link(Some(&last.id)));
    }
    doc
}
