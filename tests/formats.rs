//! The format inspector on real images made by `qemu-img` (qcow2, vmdk of three subformats,
//! vhd, vhdx, vdi, raw) and `genisoimage` (iso), and on crafted dangerous ones: the format and virtual size as
//! `qemu-img info` reports them, and the refusals Glance makes; then the same images
//! uploaded to the real binary: `virtual_size` recorded, unsafe or mismatched data answered
//! 415 in Glance's words with the image back in `queued` and nothing stored.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use glint::inspect::{Format, Inspection, Inspector, Refusal};
use serde_json::{Value, json};
use support::{
    Conn, FakeSystemd, SOCKET_UNIT_LISTEN, create_image_as, file_names, show_image, upload_image,
};

fn qemu_img(args: &[&str]) {
    let status = Command::new("qemu-img")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("qemu-img runs (apt-get install qemu-utils)");
    assert!(status.success(), "qemu-img {args:?}");
}

/// `qemu-img info`'s virtual size of `path`.
fn qemu_virtual_size(path: &Path, format: &str) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(path)
        .output()
        .expect("qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    info["virtual-size"].as_u64().expect("virtual-size")
}

/// Whether the inspection refused the data for failing `check`.
fn failed_check(found: &Inspection, check: &str) -> bool {
    matches!(&found.refusal, Some(Refusal::Unsafe(failed)) if failed.iter().any(|(name, _)| name == check))
}

fn inspect_file(path: &Path) -> Inspection {
    let data = std::fs::read(path).expect("read image");
    let mut inspector = Inspector::new();
    for chunk in data.chunks(64 << 10) {
        inspector.feed(chunk);
    }
    inspector.finish()
}

#[test]
fn images_made_by_qemu_img_are_known_with_their_virtual_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[&str], Format); 7] = [
        ("qcow2", &[], Format::Qcow2),
        ("vmdk", &["-o", "subformat=monolithicSparse"], Format::Vmdk),
        ("vmdk", &["-o", "subformat=streamOptimized"], Format::Vmdk),
        ("vpc", &[], Format::Vhd),
        ("vhdx", &[], Format::Vhdx),
        ("vdi", &[], Format::Vdi),
        ("raw", &[], Format::Raw),
    ];
    for (i, (format, options, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("disk-{i}.{format}"));
        let path_text = path.to_str().expect("utf-8 path");
        let mut args = vec!["create", "-q", "-f", format];
        args.extend_from_slice(options);
        args.extend_from_slice(&[path_text, "1G"]);
        qemu_img(&args);
        let found = inspect_file(&path);
        assert_eq!(found.format, *expected, "{format} {options:?}");
        assert_eq!(found.refusal, None, "{format} {options:?}");
        let size = if *expected == Format::Raw {
            std::fs::metadata(&path).expect("stat").len()
        } else {
            qemu_virtual_size(&path, format)
        };
        assert_eq!(found.virtual_size, Some(size), "{format} {options:?}");
    }
}

#[test]
fn dangerous_images_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();

    let base = path("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &text(&base), "64M"]);
    let backed = path("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &text(&base),
        &text(&backed),
    ]);
    let found = inspect_file(&backed);
    assert_eq!(found.format, Format::Qcow2);
    assert!(failed_check(&found, "backing_file"), "{found:?}");

    let data_file = path("data-file.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", text(&path("external.raw"))),
        &text(&data_file),
        "64M",
    ]);
    let found = inspect_file(&data_file);
    assert!(failed_check(&found, "data_file"), "{found:?}");

    // monolithicFlat: a descriptor that points at a file of its own.
    let flat = path("flat.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        &text(&flat),
        "64M",
    ]);
    let found = inspect_file(&flat);
    assert_eq!(found.format, Format::Vmdk);
    assert!(failed_check(&found, "descriptor"), "{found:?}");
}

/// A qcow2 of `size` and one backed by it (a backing file: unsafe), as bytes.
fn qcow2_pair(size: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.qcow2");
    let backed = dir.path().join("backed.qcow2");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    qemu_img(&["create", "-q", "-f", "qcow2", &text(&plain), size]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &text(&plain),
        &text(&backed),
    ]);
    (
        std::fs::read(&plain).expect("read"),
        std::fs::read(&backed).expect("read"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_record_virtual_size_and_unsafe_or_mismatched_data_is_415() {
    let (plain, backed) = qcow2_pair("3G");

    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n"));
    sd.start().await;
    let images = sd.path("state").join("images");

    // A qcow2 as qcow2: its virtual size, as qemu-img has it.
    let id = create_image_as(addr, "qcow2").await;
    assert_eq!(upload_image(addr, &id, &plain).await.status, 204);
    let shown = show_image(addr, &id).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["virtual_size"], 3u64 << 30);

    // Every other format qemu-img makes, uploaded as itself: qemu-img's virtual size.
    let dir = tempfile::tempdir().expect("tempdir");
    for (made_as, disk_format, options) in [
        ("vpc", "vhd", ""),
        ("vhdx", "vhdx", ""),
        ("vdi", "vdi", ""),
        ("vmdk", "vmdk", "subformat=streamOptimized"),
    ] {
        let path = dir.path().join(format!("disk.{made_as}"));
        let path_text = path.to_str().expect("utf-8 path");
        let mut args = vec!["create", "-q", "-f", made_as];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        args.extend([path_text, "7G"]);
        qemu_img(&args);
        let data = std::fs::read(&path).expect("read");
        let id = create_image_as(addr, disk_format).await;
        let uploaded = upload_image(addr, &id, &data).await;
        assert_eq!(uploaded.status, 204, "{disk_format}: {:?}", uploaded.body);
        assert_eq!(
            show_image(addr, &id).await["virtual_size"],
            qemu_virtual_size(&path, made_as),
            "{disk_format}"
        );
    }

    // An ISO made by genisoimage: its volume's size; as a qcow2 it is refused.
    let content = dir.path().join("content");
    std::fs::create_dir(&content).expect("mkdir");
    std::fs::write(content.join("README"), b"an ISO 9660 volume").expect("write");
    let iso = dir.path().join("disk.iso");
    let made = Command::new("genisoimage")
        .args(["-quiet", "-V", "glint", "-o"])
        .arg(&iso)
        .arg(&content)
        .status()
        .expect("genisoimage runs (apt-get install genisoimage)");
    assert!(made.success());
    let data = std::fs::read(&iso).expect("read");
    let id = create_image_as(addr, "iso").await;
    assert_eq!(upload_image(addr, &id, &data).await.status, 204);
    assert_eq!(show_image(addr, &id).await["virtual_size"], data.len());
    let id = create_image_as(addr, "qcow2").await;
    assert_eq!(upload_image(addr, &id, &data).await.status, 415);

    // Raw data is its own size; a safe qcow2 declared raw is taken as raw bytes.
    let raw = vec![7u8; 100_000];
    let id = create_image_as(addr, "raw").await;
    assert_eq!(upload_image(addr, &id, &raw).await.status, 204);
    assert_eq!(show_image(addr, &id).await["virtual_size"], 100_000);
    let id = create_image_as(addr, "raw").await;
    assert_eq!(upload_image(addr, &id, &plain).await.status, 204);
    assert_eq!(show_image(addr, &id).await["virtual_size"], plain.len());

    let stored_before = file_names(&images);
    for (declared, data, message) in [
        ("qcow2", &backed, "Image failed safety checks"),
        // Declared raw, the qcow2's checks still apply.
        ("raw", &backed, "Image failed safety checks"),
        (
            "vmdk",
            &plain,
            "Image disk_format vmdk does not match stream data qcow2",
        ),
        (
            "qcow2",
            &raw,
            "Image disk_format qcow2 does not match stream data raw",
        ),
    ] {
        let id = create_image_as(addr, declared).await;
        let refused = upload_image(addr, &id, data).await;
        assert_eq!(refused.status, 415, "{declared}: {:?}", refused.body);
        let body = String::from_utf8_lossy(&refused.body);
        assert!(body.contains(message), "{declared}: {body}");
        let shown: Value = show_image(addr, &id).await;
        assert_eq!(shown["status"], "queued", "{declared}");
        assert!(shown["size"].is_null() && shown["virtual_size"].is_null());
    }
    assert_eq!(
        file_names(&images),
        stored_before,
        "nothing refused is stored"
    );

    // With images.require_format_match off a mismatch is taken (without a virtual size);
    // unsafe data is still refused.
    sd.write_config(&format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n[images]\nrequire_format_match = false\n"
    ));
    let (code, out) = sd.ctl(&["reload"]).await;
    assert_eq!(code, 0, "{out}");
    let id = create_image_as(addr, "vmdk").await;
    assert_eq!(upload_image(addr, &id, &plain).await.status, 204);
    assert!(show_image(addr, &id).await["virtual_size"].is_null());
    let id = create_image_as(addr, "vmdk").await;
    assert_eq!(upload_image(addr, &id, &backed).await.status, 415);
    assert_eq!(sd.stop().await, 0);
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let mut conn = Conn::open(addr).await.expect("connect");
    let reply = conn
        .send(
            method,
            path,
            (!body.is_null()).then_some("application/json"),
            bytes::Bytes::from(if body.is_null() {
                String::new()
            } else {
                body.to_string()
            }),
        )
        .await
        .expect("answered");
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, value)
}

/// Stages `data`, imports it by glance-direct, and returns the image and its task once the
/// task is over.
async fn stage_and_import(addr: SocketAddr, disk_format: &str, data: &[u8]) -> (Value, Value) {
    let attributes = json!({"disk_format": disk_format, "container_format": "bare"});
    stage_and_import_as(addr, attributes, data).await
}

/// `stage_and_import` of a new image with `attributes`.
async fn stage_and_import_as(addr: SocketAddr, attributes: Value, data: &[u8]) -> (Value, Value) {
    let id = stage(addr, attributes, data).await;
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        json!({"method": {"name": "glance-direct"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    import_done(addr, &id).await
}

/// Creates an image with `attributes` and stages `data` for it; returns its id.
async fn stage(addr: SocketAddr, attributes: Value, data: &[u8]) -> String {
    let (status, image) = call(addr, "POST", "/v2/images", attributes).await;
    assert_eq!(status, 201, "{image}");
    let id = image["id"].as_str().expect("id").to_string();
    let staged = support::send_slowly(
        addr,
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("content-type", "application/octet-stream")],
        support::chunks(data, 1 << 20),
        std::time::Duration::ZERO,
    )
    .await
    .expect("staged");
    assert_eq!(staged.status, 204);
    id
}

/// The image and its import task, once the task is over.
async fn import_done(addr: SocketAddr, id: &str) -> (Value, Value) {
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let (_, tasks) = call(addr, "GET", &format!("/v2/images/{id}/tasks"), Value::Null).await;
        let task = tasks["tasks"][0].clone();
        if matches!(task["status"].as_str(), Some("success" | "failure")) {
            return (show_image(addr, id).await, task);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never done: {tasks}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Imports judge the data as uploads do: what its stage found, when the staged file is
/// linked into the store, or the bytes as they are copied; unsafe data fails the task and
/// never lands in a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_record_virtual_size_and_refuse_unsafe_data() {
    let (plain, backed) = qcow2_pair("2G");

    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    // `linked` shares the staging area's filesystem: glance-direct links the staged file,
    // judged by what its stage found. copy-image then reads the bytes into `copied` and
    // judges them as they pass.
    sd.write_config(&format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n\
         [stores.linked]\ndefault = true\ndatadirs = [{{ path = \"linked\" }}]\n\
         [stores.copied]\ndatadirs = [{{ path = \"copied\" }}]\n"
    ));
    sd.start().await;
    let state = sd.path("state");

    let (shown, task) = stage_and_import(addr, "qcow2", &plain).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["virtual_size"], 2u64 << 30);
    let id = shown["id"].as_str().expect("id").to_string();

    let (shown, task) = stage_and_import(addr, "qcow2", &backed).await;
    assert_eq!(task["status"], "failure", "{task}");
    assert!(
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("Image failed safety checks")),
        "{task}"
    );
    assert_eq!(shown["status"], "queued", "{shown}");
    let refused = shown["id"].as_str().expect("id");
    assert!(
        !file_names(&state.join("linked"))
            .iter()
            .any(|f| f == refused)
    );

    let (shown, task) = stage_and_import(addr, "vmdk", &plain).await;
    assert_eq!(task["status"], "failure", "{task}");
    assert!(
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not match stream data qcow2")),
        "{task}"
    );
    assert_eq!(shown["status"], "queued");

    // copy-image reads the bytes again, and judges them again.
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        json!({"method": {"name": "copy-image"}, "stores": ["copied"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while show_image(addr, &id).await["stores"] != "linked,copied" {
        assert!(tokio::time::Instant::now() < deadline, "never copied");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(show_image(addr, &id).await["virtual_size"], 2u64 << 30);
    assert_eq!(sd.stop().await, 0);
}

/// `tool -c path`: gzip, zstd, xz or bzip2's output for the file.
fn compress(tool: &str, path: &Path) -> Vec<u8> {
    let out = Command::new(tool)
        .arg("-c")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(out.status.success(), "{tool} -c {}", path.display());
    out.stdout
}

/// `qemu-img convert -O raw` by hand: the disk a converted image must hold.
fn raw_of(path: &Path, format: &str) -> Vec<u8> {
    let out = path.with_extension("by-hand.raw");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    qemu_img(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        &text(path),
        &text(&out),
    ]);
    std::fs::read(&out).expect("read")
}

/// A 6 MiB disk: a first MiB of zeros (no partition table), then a pattern.
fn disk() -> Vec<u8> {
    let mut data = vec![0u8; 1 << 20];
    data.extend((0u32..5 << 20).map(|i| ((i / 4096) * 31 % 251) as u8 ^ (i as u8)));
    data
}

/// The names in `dir`, none when it is not there.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn message(task: &Value) -> &str {
    task["message"].as_str().unwrap_or("")
}

/// `decompress` then `convert` (to raw), as Glance's plugins: each wrapper is unwrapped,
/// each format converted by qemu-img to the disk `qemu-img convert` makes by hand, and the
/// image records what it became; unsafe or mismatched data, a bomb past the size cap and
/// data that is not what it claims fail the import with nothing stored and nothing left
/// in the work directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_unwrap_and_convert_with_the_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk()).expect("write");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let made = |format: &str, options: &[&str]| {
        let path = dir.path().join(format!("disk.{format}"));
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
        args.extend_from_slice(options);
        let (from, to) = (text(&raw), text(&path));
        args.extend([from.as_str(), to.as_str()]);
        qemu_img(&args);
        path
    };
    let qcow2 = made("qcow2", &[]);
    let vmdk = made("vmdk", &["-o", "subformat=streamOptimized"]);
    let vhd = made("vpc", &[]);
    let (_, backed) = qcow2_pair("64M");
    let backed_path = dir.path().join("backed.qcow2");
    std::fs::write(&backed_path, &backed).expect("write");
    let bomb_source = dir.path().join("zeros");
    std::fs::write(&bomb_source, vec![0u8; 96 << 20]).expect("write");

    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n\
         [images]\nsize_cap = {}\n\
         [import]\nplugins = [\"decompress\", \"convert\"]\n",
        64 << 20
    ));
    sd.start().await;
    let state = sd.path("state");

    let converted = [
        ("qcow2", compress("gzip", &qcow2), raw_of(&qcow2, "qcow2")),
        ("vmdk", compress("zstd", &vmdk), raw_of(&vmdk, "vmdk")),
        ("vhd", compress("bzip2", &vhd), raw_of(&vhd, "vpc")),
        ("raw", compress("xz", &raw), disk()),
        ("qcow2", std::fs::read(&qcow2).expect("read"), disk()),
    ];
    let mut active = Vec::new();
    for (format, staged, expected) in converted {
        let (shown, task) = stage_and_import(addr, format, &staged).await;
        assert_eq!(task["status"], "success", "{format}: {task}");
        assert_eq!(shown["status"], "active");
        assert_eq!(shown["disk_format"], "raw", "{format}");
        assert_eq!(shown["container_format"], "bare");
        assert_eq!(shown["size"], expected.len() as u64, "{format}");
        assert_eq!(shown["virtual_size"], expected.len() as u64, "{format}");
        assert_eq!(shown["checksum"], support::md5_hex(&expected), "{format}");
        active.push(shown["id"].as_str().expect("id").to_string());
    }

    // A compressed container is kept as it came.
    let wrapped = compress("gzip", &raw);
    let (shown, task) = stage_and_import_as(
        addr,
        json!({"disk_format": "raw", "container_format": "compressed"}),
        &wrapped,
    )
    .await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["checksum"], support::md5_hex(&wrapped));
    assert_eq!(shown["container_format"], "compressed");
    active.push(shown["id"].as_str().expect("id").to_string());

    let refused = [
        (
            "qcow2",
            compress("gzip", &backed_path),
            "Image has disallowed configuration",
        ),
        ("vmdk", compress("gzip", &qcow2), "Image format mismatch"),
        ("raw", compress("gzip", &bomb_source), "size cap"),
        (
            "qcow2",
            b"\x1f\x8b\x08 not really gzip".to_vec(),
            "could not be decompressed",
        ),
    ];
    for (format, staged, why) in refused {
        let (shown, task) = stage_and_import(addr, format, &staged).await;
        assert_eq!(task["status"], "failure", "{format}: {task}");
        assert!(message(&task).contains(why), "{why}: {task}");
        assert_eq!(shown["status"], "queued", "{shown}");
        assert_eq!(shown["disk_format"], format, "unchanged: {shown}");
        assert!(shown["checksum"].is_null());
    }

    let mut stored = entries(&state.join("images"));
    stored.retain(|name| !name.starts_with('.'));
    stored.sort();
    active.sort();
    assert_eq!(stored, active, "the store holds the active images only");
    assert_eq!(entries(&state.join("work")), Vec::<String>::new());
    assert_eq!(sd.stop().await, 0);
}

/// A conversion cut by a crash starts again from the staged data when the task is taken
/// up, and the qemu-img of the dead process dies with it (its parent-death signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversion_cut_by_a_crash_starts_again_from_the_staged_data() {
    use nix::sys::signal::Signal;

    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, disk()).expect("write");
    let qcow2 = dir.path().join("disk.qcow2");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &text(&raw),
        &text(&qcow2),
    ]);
    // A qemu-img that says it has started converting and then never ends.
    let started = dir.path().join("started");
    let stuck = dir.path().join("qemu-img-stuck");
    std::fs::write(
        &stuck,
        format!(
            "#!/bin/sh\nif [ \"$1\" = convert ]; then echo $$ > {}; exec sleep 600; fi\nexec qemu-img \"$@\"\n",
            text(&started)
        ),
    )
    .expect("write");
    std::fs::set_permissions(&stuck, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    // Two stores: `local` shares the work directory's filesystem (the converted file is
    // linked into it), `memory` does not (it is copied there).
    let memory = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    let config = |qemu_img: &Path| {
        format!(
            "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n\
             [stores.local]\ndefault = true\ndatadirs = [{{ path = \"local\" }}]\n\
             [stores.memory]\ndatadirs = [{{ path = \"{}\" }}]\n\
             [import]\nplugins = [\"convert\"]\n\
             [import.convert]\nqemu_img = \"{}\"\n",
            text(memory.path()),
            text(qemu_img)
        )
    };
    sd.write_config(&config(&stuck));
    sd.start().await;
    let id = stage(
        addr,
        json!({"disk_format": "qcow2", "container_format": "bare"}),
        &std::fs::read(&qcow2).expect("read"),
    )
    .await;
    let (status, body) = call(
        addr,
        "POST",
        &format!("/v2/images/{id}/import"),
        json!({"method": {"name": "glance-direct"}, "stores": ["local", "memory"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    let child: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&started)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "qemu-img never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    sd.signal(Signal::SIGKILL);
    sd.wait_exit().await;
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).ok();
        // Gone, or a zombie no one reaps: either way it converts nothing more.
        if state.is_none_or(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "qemu-img outlived glint"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    sd.write_config(&config(Path::new("qemu-img")));
    sd.start().await;
    let (shown, task) = import_done(addr, &id).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(shown["disk_format"], "raw");
    assert_eq!(shown["stores"], "local,memory");
    assert_eq!(shown["checksum"], support::md5_hex(&disk()));
    assert_eq!(shown["virtual_size"], disk().len() as u64);
    for store in [sd.path("state").join("local"), memory.path().to_path_buf()] {
        let held = std::fs::read(store.join(&id)).expect("the store holds the image");
        assert_eq!(support::md5_hex(&held), support::md5_hex(&disk()));
    }
    assert!(sd.logs().contains("resuming task"));
    assert_eq!(
        entries(&sd.path("state").join("work")),
        Vec::<String>::new()
    );
    assert_eq!(sd.stop().await, 0);
}

/// web-download's data is judged like any other: a qcow2 with a backing file fails the
/// import with Glance's words and lands nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_download_of_an_unsafe_image_is_refused() {
    let (plain, backed) = qcow2_pair("1G");
    let mut sd = FakeSystemd::new();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&format!(
        "[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n\
         [import.web_download]\nallowed_hosts = [\"127.0.0.1\"]\nallowed_ports = []\n"
    ));
    sd.start().await;
    for (data, outcome) in [(backed, "failure"), (plain, "success")] {
        let web = support::Web::serve(data, 64 << 10, std::time::Duration::ZERO);
        let id = create_image_as(addr, "qcow2").await;
        let (status, body) = call(
            addr,
            "POST",
            &format!("/v2/images/{id}/import"),
            json!({"method": {"name": "web-download", "uri": web.url()}}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let (shown, task) = import_done(addr, &id).await;
        assert_eq!(task["status"], outcome, "{task}");
        if outcome == "failure" {
            assert!(
                message(&task).contains("Image failed safety checks"),
                "{task}"
            );
            assert_eq!(shown["status"], "queued");
            assert!(!file_names(&sd.path("state").join("images")).contains(&id));
        } else {
            assert_eq!(shown["virtual_size"], 1u64 << 30);
        }
        assert!(!file_names(&sd.path("state").join("staging")).contains(&id));
    }
    assert_eq!(sd.stop().await, 0);
}
