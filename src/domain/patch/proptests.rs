//! Property tests of the JSON-patch parser and applier: no input makes them panic, every
//! rejection is a client error of the kind its stage may raise, an accepted patch leaves
//! an image the schema allows, and custom properties follow a simple model.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Dialect, apply, check_formats, parse};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::image::{
    BASE_KEYS, CONTAINER_FORMATS, DISK_FORMATS, Formats, Image, MAX_LEN, PROPERTY_QUOTA, Quotas,
    READ_ONLY, Status, TAG_QUOTA, Visibility, is_reserved, new_image,
};

const CASES: u32 = 256;

fn dialect() -> impl Strategy<Value = Dialect> {
    prop_oneof![Just(Dialect::V20), Just(Dialect::V21)]
}

/// Any JSON document, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map("[a-z/~ ]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Attribute names a patch may aim at: mostly ones a client may change (base, specially
/// typed and custom, some with characters a pointer must escape), sometimes read-only or
/// reserved ones, random or over-long names.
fn key_name() -> impl Strategy<Value = String> {
    let settable: Vec<&str> = BASE_KEYS
        .iter()
        .copied()
        .filter(|k| !READ_ONLY.contains(k))
        .chain([
            "kernel_id",
            "ramdisk_id",
            "cinder_encryption_key_deletion_policy",
            "a",
            "b",
            "a/b",
            "t~x",
            " padded ",
        ])
        .collect();
    let refused: Vec<&str> = READ_ONLY
        .iter()
        .copied()
        .chain(["location", "deleted", "deleted_at", "os_glance_import_task"])
        .collect();
    prop_oneof![
        12 => proptest::sample::select(settable).prop_map(String::from),
        2 => proptest::sample::select(refused).prop_map(String::from),
        2 => "[a-z_]{1,10}",
        1 => ".{0,6}",
        1 => Just("k".repeat(MAX_LEN + 1)),
    ]
}

fn words(words: &[&'static str]) -> impl Strategy<Value = &'static str> + Clone + use<> {
    proptest::sample::select(words.to_vec())
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A pointer to `key`: mostly a well-formed single segment, sometimes a malformed kind.
fn path_to(key: String) -> impl Strategy<Value = String> {
    let escaped = escape(&key);
    prop_oneof![
        40 => Just(format!("/{escaped}")),
        1 => Just(escaped.clone()),
        1 => key_name().prop_map(move |b| format!("/{escaped}/{}", escape(&b))),
        1 => words(&["/", "", "/~", "/a~2", "/tags/-"]).prop_map(String::from),
        1 => ".{0,8}",
    ]
}

/// A value the schema accepts for `key`, as a client that means well would send it.
fn fitting(key: &str) -> BoxedStrategy<Value> {
    let one_of = |list: &[&'static str]| words(list).prop_map(Value::from).boxed();
    match key {
        "visibility" => one_of(&["public", "private", "shared", "community"]),
        "protected" | "os_hidden" => any::<bool>().prop_map(Value::Bool).boxed(),
        "min_ram" | "min_disk" => (0..4096i64).prop_map(Value::from).boxed(),
        "disk_format" => one_of(&DISK_FORMATS),
        "container_format" => one_of(&CONTAINER_FORMATS),
        "tags" => vec("[a-z]{1,4}", 0..4).prop_map(|t| json!(t)).boxed(),
        "kernel_id" | "ramdisk_id" => one_of(&["0b1a7c4e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"]),
        "cinder_encryption_key_deletion_policy" => one_of(&["on_image_deletion", "do_not_delete"]),
        _ => ".{0,8}".prop_map(Value::String).boxed(),
    }
}

/// Values near what the schema types accept for some attribute, and some far from it.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => ".{0,10}".prop_map(Value::String),
        1 => Just(Value::String("n".repeat(MAX_LEN + 1))),
        2 => prop_oneof![
            Just(json!(-1)),
            Just(json!(i64::MAX)),
            Just(json!(u64::MAX)),
            Just(json!(1.5)),
            any::<i64>().prop_map(Value::from),
        ],
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => Just(json!(["t".repeat(MAX_LEN + 1)])),
        1 => Just(json!([1, "x"])),
        1 => any_json(),
    ]
}

/// One operation object in the shape of `dialect` (or, rarely, of the other one), with
/// members mostly present and fitting, sometimes absent, mistyped or doubled.
fn operation(dialect: Dialect) -> impl Strategy<Value = Value> {
    let op_name = prop_oneof![
        40 => words(&["add", "replace", "remove"]).prop_map(Value::from),
        1 => words(&["move", "copy", "test", "", "ADD"]).prop_map(Value::from),
        1 => any_json(),
    ];
    key_name()
        .prop_flat_map(move |key| {
            let value = prop_oneof![8 => fitting(&key), 1 => value()];
            (
                proptest::option::weighted(0.97, op_name.clone()),
                proptest::option::weighted(0.97, path_to(key)),
                proptest::option::weighted(0.95, value),
                proptest::option::weighted(0.03, key_name()),
                proptest::bool::weighted(0.95),
            )
        })
        .prop_map(move |(op, path, value, second, own_shape)| {
            let v20 = (dialect == Dialect::V20) == own_shape;
            let mut fields = Map::new();
            match (v20, op.as_ref().and_then(Value::as_str)) {
                // The v2.0 dialect names the operation by its member.
                (true, Some(name)) => {
                    if let Some(path) = path {
                        fields.insert(name.to_string(), Value::String(path));
                    }
                }
                _ => {
                    if let Some(op) = op {
                        fields.insert("op".into(), op);
                    }
                    if let Some(path) = path {
                        fields.insert("path".into(), Value::String(path));
                    }
                }
            }
            if let Some(second) = second {
                fields.insert("remove".into(), Value::String(format!("/{second}")));
            }
            if let Some(value) = value {
                fields.insert("value".into(), value);
            }
            Value::Object(fields)
        })
}

fn caller(is_admin: bool) -> Caller {
    Caller {
        project: Some("p".into()),
        user: None,
        is_admin,
        ..Caller::default()
    }
}

/// An image in any status and visibility, with some tags and properties; `filler` more
/// properties bring it near the quota.
fn image() -> impl Strategy<Value = Image> {
    (
        proptest::sample::select(Status::ALL.to_vec()),
        proptest::sample::select(Visibility::ALL.to_vec()),
        btree_map(words(&["a", "b", "a/b", "t~x"]), ".{0,4}", 0..4),
        vec("[a-z]{1,4}", 0..3),
        proptest::sample::select(vec![0, PROPERTY_QUOTA - 2, PROPERTY_QUOTA - 1]),
    )
        .prop_map(|(status, visibility, properties, tags, filler)| {
            let mut image = new_image(
                Map::new(),
                &caller(false),
                0,
                "id".into(),
                &Quotas::default(),
            )
            .expect("an empty create is valid");
            image.status = status;
            image.visibility = visibility;
            image.tags = tags.into_iter().collect();
            image.properties = properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            for n in 0..filler {
                image.properties.insert(format!("filler{n}"), "f".into());
            }
            image
        })
}

/// What the schema and the policy promise of any image a patch was accepted for.
fn check_accepted(before: &Image, after: &Image, caller: &Caller) -> Result<(), TestCaseError> {
    prop_assert_eq!(&after.id, &before.id);
    prop_assert_eq!(after.status, before.status);
    prop_assert_eq!(after.size, before.size);
    prop_assert_eq!(&after.checksum, &before.checksum);
    prop_assert_eq!(&after.locations, &before.locations);
    prop_assert_eq!(after.created_at, before.created_at);
    prop_assert!(after.min_ram >= 0 && after.min_disk >= 0);
    for text in [&after.name, &after.owner].into_iter().flatten() {
        prop_assert!(text.chars().count() <= MAX_LEN);
    }
    if let Some(format) = &after.disk_format {
        prop_assert!(DISK_FORMATS.contains(&format.as_str()), "{}", format);
    }
    if let Some(format) = &after.container_format {
        prop_assert!(CONTAINER_FORMATS.contains(&format.as_str()), "{}", format);
    }
    if after.disk_format != before.disk_format || after.container_format != before.container_format
    {
        prop_assert!(matches!(before.status, Status::Queued | Status::Importing));
    }
    prop_assert!(after.tags.len() <= TAG_QUOTA);
    prop_assert!(after.tags.iter().all(|t| t.chars().count() <= MAX_LEN));
    prop_assert!(after.properties.len() <= PROPERTY_QUOTA);
    for key in after.properties.keys() {
        prop_assert!(
            !BASE_KEYS.contains(&key.as_str())
                && !READ_ONLY.contains(&key.as_str())
                && !is_reserved(key),
            "{} stored as a custom property",
            key
        );
    }
    // Who may make an image public or community is the policy's (publicize_image,
    // communitize_image), checked by the service on the result.
    if !caller.is_admin {
        prop_assert_eq!(&after.owner, &before.owner);
    }
    Ok(())
}

/// A custom-property operation for the model test.
#[derive(Debug, Clone)]
enum Custom {
    Add(String, String),
    Replace(String, String),
    Remove(String),
}

fn custom() -> impl Strategy<Value = Custom> {
    let key = words(&["a", "b", "a/b", "t~x", "new1", "new2"]).prop_map(String::from);
    prop_oneof![
        (key.clone(), ".{0,4}").prop_map(|(k, v)| Custom::Add(k, v)),
        (key.clone(), ".{0,4}").prop_map(|(k, v)| Custom::Replace(k, v)),
        key.prop_map(Custom::Remove),
    ]
}

/// The patch document for `ops` in `dialect`.
fn document(ops: &[Custom], dialect: Dialect) -> Value {
    let items = ops.iter().map(|op| {
        let (name, key, value) = match op {
            Custom::Add(k, v) => ("add", k, Some(v)),
            Custom::Replace(k, v) => ("replace", k, Some(v)),
            Custom::Remove(k) => ("remove", k, None),
        };
        let path = format!("/{}", escape(key));
        let mut item = match dialect {
            Dialect::V21 => json!({"op": name, "path": path}),
            Dialect::V20 => json!({ name: path }),
        };
        if let Some(value) = value {
            item["value"] = json!(value);
        }
        item
    });
    Value::Array(items.collect())
}

/// Glance's rules for custom properties, on a plain map: what the patch should leave,
/// or the kind of error it should fail with.
fn model(
    mut properties: BTreeMap<String, String>,
    ops: &[Custom],
    dialect: Dialect,
) -> Result<BTreeMap<String, String>, &'static str> {
    for op in ops {
        match op {
            Custom::Remove(k) => {
                properties.remove(k).ok_or("conflict")?;
            }
            Custom::Replace(k, _) if !properties.contains_key(k) => return Err("conflict"),
            Custom::Add(k, _) if dialect == Dialect::V20 && properties.contains_key(k) => {
                return Err("conflict");
            }
            Custom::Add(k, v) | Custom::Replace(k, v) => {
                properties.insert(k.clone(), v.clone());
            }
        }
    }
    if properties.len() > PROPERTY_QUOTA {
        return Err("over limit");
    }
    Ok(properties)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_body_parses_or_is_rejected_as_a_client_error(body in any_json(), dialect in dialect()) {
        if let Err(e) = parse(&body, dialect) {
            prop_assert!(
                matches!(e, DomainError::Invalid(_) | DomainError::Forbidden(_)),
                "{:?}", e
            );
        }
    }

    #[test]
    fn near_valid_patches_apply_or_fail_as_a_client_error(
        (dialect, items) in dialect().prop_flat_map(|d| (Just(d), vec(operation(d), 0..4))),
        mut image in image(),
        is_admin in any::<bool>(),
    ) {
        let count = items.len();
        let body = Value::Array(items);
        let checked = parse(&body, dialect).and_then(|operations| {
            check_formats(&operations, &Formats::default())?;
            Ok(operations)
        });
        let operations = match checked {
            Ok(operations) => operations,
            Err(e) => {
                // Parsing judges the shape (400) and which attributes may be named (403);
                // the deployment's formats which names a format may take (400).
                prop_assert!(
                    matches!(e, DomainError::Invalid(_) | DomainError::Forbidden(_)),
                    "{:?}", e
                );
                return Ok(());
            }
        };
        prop_assert_eq!(operations.len(), count);
        let caller = caller(is_admin);
        let before = image.clone();
        match apply(&mut image, &operations, dialect, &caller, &Quotas::default()) {
            Ok(()) => check_accepted(&before, &image, &caller)?,
            Err(e) => prop_assert!(
                matches!(
                    e,
                    DomainError::Invalid(_)
                        | DomainError::Forbidden(_)
                        | DomainError::Conflict(_)
                        | DomainError::OverLimit(_)
                ),
                "{:?}", e
            ),
        }
    }

    #[test]
    fn custom_properties_follow_the_model(
        ops in vec(custom(), 0..8),
        dialect in dialect(),
        mut image in image(),
    ) {
        let operations = parse(&document(&ops, dialect), dialect);
        prop_assert!(operations.is_ok(), "{:?}", operations);
        let operations = operations.unwrap_or_default();
        let expected = model(image.properties.clone(), &ops, dialect);
        let outcome = apply(&mut image, &operations, dialect, &caller(false), &Quotas::default());
        match (expected, outcome) {
            (Ok(properties), Ok(())) => prop_assert_eq!(properties, image.properties),
            (Err("conflict"), Err(DomainError::Conflict(_)))
            | (Err("over limit"), Err(DomainError::OverLimit(_))) => {}
            (expected, outcome) => {
                prop_assert!(false, "expected {:?}, got {:?}", expected, outcome);
            }
        }
    }

    #[test]
    fn an_escaped_pointer_names_the_key_it_escapes(key in "\\S{1,12}") {
        prop_assert_eq!(super::pointer_key(&format!("/{}", escape(&key))), Ok(key));
    }
}
