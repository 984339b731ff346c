//! The command line against the real binary: `--version`, `check-config` (effective values
//! and their origins, errors naming file and key), `ctl` without a server, and `db`
//! (`version`, `upgrade`, `copy` between engines, `load-metadefs` and `export-metadefs`).

mod support;

use std::process::Command;

const GLINT: &str = env!("CARGO_BIN_EXE_glint");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(GLINT)
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .envs(env.iter().copied())
        .output()
        .expect("run glint");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_is_printed() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("glint {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_prints_values_and_their_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("glint.toml");
    std::fs::write(&file, "[server]\nworkers = 3\n").expect("write");
    std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
    std::fs::write(
        dir.path().join("conf.d/10-log.toml"),
        "[log]\nlevel = \"debug\"\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let (code, out, err) = run(
        &["check-config", "--config", path],
        &[("GLINT_SERVER__DRAIN_TIMEOUT", "5s")],
    );
    assert_eq!(code, 0, "{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
            .to_string()
    };
    assert!(line("server.workers").contains('3') && line("server.workers").contains(path));
    assert!(line("log.level").contains("debug") && line("log.level").contains("10-log.toml"));
    assert!(line("server.drain_timeout").contains("GLINT_"));
    assert!(line("server.shutdown_timeout").contains("built-in default"));
}

#[test]
fn check_config_rejects_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("glint.toml");
    std::fs::write(&file, "[server]\nworkers = -1\n").expect("write");
    let path = file.to_str().expect("utf-8 path");
    let (code, _, err) = run(&["check-config", "--config", path], &[]);
    assert_eq!(code, 78);
    assert!(
        err.contains(path) && err.contains("server.workers"),
        "{err}"
    );

    let missing = dir.path().join("nope.toml");
    let (code, _, err) = run(
        &["serve", "--config", missing.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(code, 78);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn ctl_without_a_server_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("control.sock");
    let (code, _, err) = run(
        &["ctl", "reload", "--socket", socket.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("control.sock"), "{err}");
}

#[test]
fn check_config_prints_the_effective_policy_and_refuses_a_bad_policy_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("glint.toml");
    // A relative policy file is found beside the config file.
    std::fs::write(&file, "[auth]\npolicy_file = \"policy.yaml\"\n").expect("write");
    std::fs::write(
        dir.path().join("policy.yaml"),
        "# operators' overrides\npublicize_image: \"role:admin or role:member\"\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let (code, out, err) = run(&["check-config", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("policy.publicize_image = \"role:admin or role:member\""),
        "{out}"
    );
    assert!(
        out.contains("policy.get_image = \"rule:context_is_admin or (role:reader"),
        "Glance's defaults for the rest: {out}"
    );

    std::fs::write(
        dir.path().join("policy.yaml"),
        "publicize_image: \"role:admin\"\ncopy_image: \"rule:nonexistent\"\n",
    )
    .expect("write");
    let (code, _, err) = run(&["check-config", "--config", path], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("policy.yaml") && err.contains("line 2") && err.contains("copy_image"),
        "{err}"
    );
}

#[test]
fn db_version_and_upgrade_report_and_apply_the_embedded_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("glint.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &file,
        format!("state_dir = {:?}\n", state.display().to_string()),
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let server = support::fresh_database();
    let env: Vec<(&str, &str)> = server
        .iter()
        .map(|url| ("GLINT_DATABASE__URL", url.as_str()))
        .collect();
    let run = |args: &[&str], _: &[(&str, &str)]| run(args, &env);

    let (code, before, err) = run(&["db", "version", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    let pending = before
        .lines()
        .filter(|l| l.starts_with("pending: "))
        .count();
    assert!(
        pending > 0,
        "a new database has every migration pending: {before}"
    );
    assert!(
        before.contains(&format!("0 of {pending} migrations applied")),
        "{before}"
    );
    if server.is_none() {
        assert!(!state.join("glint.db").exists(), "version changes nothing");
    }

    let (code, upgraded, err) = run(&["db", "upgrade", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        upgraded
            .lines()
            .filter(|l| l.starts_with("applied: "))
            .count(),
        pending,
        "{upgraded}"
    );

    let (code, after, err) = run(&["db", "version", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        after.contains(&format!("{pending} of {pending} migrations applied")),
        "{after}"
    );
    assert!(after.contains("up to date"), "{after}");

    let (code, again, err) = run(&["db", "upgrade", "--config", path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(again.contains("(0 applied now)"), "{again}");
}

/// Processes starting together against an empty database migrate it once, under the
/// engine's migration lock: were two to apply a migration, the second would fail on the
/// tables the first created.
#[test]
fn processes_migrating_one_empty_database_at_once_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = support::fresh_database()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("glint.db").display()));
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(GLINT)
                .args(["db", "upgrade"])
                .current_dir(dir.path())
                .env_remove("STATE_DIRECTORY")
                .env("GLINT_DATABASE__URL", &url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn glint")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("run glint");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (code, state, err) = run(&["db", "version"], &[("GLINT_DATABASE__URL", &url)]);
    assert_eq!(code, 0, "{err}");
    assert!(state.contains("up to date"), "{state}");
}

/// `glint db copy` round trip: a catalogue made through the API on SQLite is copied to the
/// database `TEST_DATABASE_SERVER` names (else another SQLite file) and back to a third,
/// and glint started on that one lists exactly what it listed before. A non-empty target
/// is refused unless `--replace-target`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_round_trips_a_catalogue_and_refuses_a_non_empty_target() {
    use bytes::Bytes;
    use serde_json::{Value, json};
    use support::{Conn, FakeSystemd, SOCKET_UNIT_LISTEN};

    let mut sd = FakeSystemd::new();
    sd.env.clear();
    let addr = sd.add_socket_unit("api");
    sd.write_config(&format!("[server]\nlisten = [\"{SOCKET_UNIT_LISTEN}\"]\n"));
    sd.start().await;
    let call = |method: &'static str, path: String, body: Value| async move {
        let mut conn = Conn::open(addr).await.expect("connect");
        let kind = match method {
            "PATCH" => "application/openstack-images-v2.1-json-patch",
            _ => "application/json",
        };
        conn.json(method, &path, kind, &body)
            .await
            .expect("request")
    };
    for n in 0..3 {
        let (status, image) = call(
            "POST",
            "/v2/images".into(),
            json!({"name": format!("copied-{n}"), "disk_format": "raw",
                   "container_format": "bare", "tags": ["a", format!("t{n}")],
                   "visibility": "shared", "os_distro": "debian", "n": n.to_string()}),
        )
        .await;
        assert_eq!(status, 201, "{image}");
        let id = image["id"].as_str().expect("id").to_string();
        let (status, body) = call(
            "POST",
            format!("/v2/images/{id}/members"),
            json!({"member": format!("project-{n}")}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if n == 0 {
            let mut conn = Conn::open(addr).await.expect("connect");
            let reply = conn
                .send(
                    "PUT",
                    &format!("/v2/images/{id}/file"),
                    Some("application/octet-stream"),
                    Bytes::from(vec![7u8; 100_000]),
                )
                .await
                .expect("upload");
            assert_eq!(reply.status, 204);
        }
    }
    let listing = |addr| async move {
        let mut conn = Conn::open(addr).await.expect("connect");
        let reply = conn.get("/v2/images?sort=name:asc").await.expect("list");
        let mut list: Value = serde_json::from_slice(&reply.body).expect("json");
        for image in list["images"].as_array_mut().expect("images") {
            let members = Conn::open(addr)
                .await
                .expect("connect")
                .get(&format!(
                    "/v2/images/{}/members",
                    image["id"].as_str().expect("id")
                ))
                .await
                .expect("members");
            image["members"] = serde_json::from_slice(&members.body).expect("json");
        }
        list
    };
    let before = listing(addr).await;
    assert_eq!(sd.stop().await, 0);

    let source = format!("sqlite://{}", sd.path("state/glint.db").display());
    let middle = support::fresh_database()
        .unwrap_or_else(|| format!("sqlite://{}", sd.path("middle.db").display()));
    let back = format!("sqlite://{}", sd.path("back.db").display());
    let copy = |from: &str, to: &str, extra: &[&str]| {
        let mut args = vec!["db", "copy", "--from", from, "--to", to];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let (code, out, err) = copy(&source, &middle, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verified"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("images") && l.contains(" 3 rows")),
        "{out}"
    );
    let (code, _, err) = copy(&source, &middle, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("holds 3 images"), "{err}");
    let (code, _, err) = copy(&source, &middle, &["--replace-target"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = copy(&middle, &back, &[]);
    assert_eq!(code, 0, "{err}");

    sd.env = vec![("GLINT_DATABASE__URL".into(), back)];
    sd.start().await;
    assert_eq!(listing(addr).await, before);
    assert_eq!(sd.stop().await, 0);
}

/// `glint db load-metadefs` reads Glance's definition files as `glance-manage db
/// load_metadefs` does (skip, --merge, --merge --prefer-new, --merge --overwrite), names a
/// file it cannot load, and `export-metadefs` writes files that load into another database
/// and export again to the same bytes.
#[test]
fn metadef_files_load_merge_and_export_round_trip() {
    use serde_json::{Value, json};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = |name: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        let state = dir.path().join(name);
        std::fs::write(
            &file,
            format!("state_dir = {:?}\n", state.display().to_string()),
        )
        .expect("write");
        file.to_str().expect("utf-8 path").to_string()
    };
    let first = config("first");
    let server = support::fresh_database();
    let env: Vec<(&str, &str)> = server
        .iter()
        .map(|url| ("GLINT_DATABASE__URL", url.as_str()))
        .collect();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).expect("defs");
    let write = |name: &str, value: &Value| {
        std::fs::write(
            defs.join(name),
            serde_json::to_string_pretty(value).expect("json"),
        )
        .expect("write")
    };
    let mut watchdog = json!({
        "namespace": "OS::Compute::Watchdog",
        "display_name": "Watchdog Behavior",
        "description": "Compute drivers may enable watchdog behavior over instances.",
        "visibility": "public",
        "protected": true,
        "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
        "properties": {"watchdog_action": {"title": "Watchdog Action", "type": "string",
                                           "enum": ["disabled", "reset"]}},
        "objects": [{"name": "Quota", "required": ["a"], "properties": {"a": {"title": "A", "type": "integer"}}}],
        "tags": [{"name": "watchdog"}]
    });
    write("compute-watchdog.json", &watchdog);
    write(
        "glint-b.json",
        &json!({"namespace": "OS::Glint::B", "properties": {"p": {"title": "P", "type": "string"}}}),
    );
    std::fs::write(defs.join("broken.json"), "{\"namespace\": ").expect("write");
    let defs_arg = defs.to_str().expect("utf-8 path");

    let (code, out, err) = run(&["db", "load-metadefs", defs_arg, "--config", &first], &env);
    assert_eq!(code, 1, "a broken file fails the load: {out} {err}");
    assert!(out.contains("broken.json: not loaded"), "{out}");
    assert!(err.contains("1 of 3 definition files not loaded"), "{err}");
    assert!(
        out.contains("namespace OS::Compute::Watchdog created"),
        "{out}"
    );
    assert!(out.contains("namespace OS::Glint::B created"), "{out}");
    std::fs::remove_file(defs.join("broken.json")).expect("remove");

    let export = |config: &str, name: &str| -> Value {
        let target = dir.path().join(name);
        let (code, out, err) = run(
            &[
                "db",
                "export-metadefs",
                target.to_str().expect("utf-8"),
                "--config",
                config,
            ],
            &env,
        );
        assert_eq!(code, 0, "{out} {err}");
        let text =
            std::fs::read_to_string(target.join("OS__Compute__Watchdog.json")).expect("exported");
        serde_json::from_str(&text).expect("exported json")
    };
    let load = |args: &[&str]| {
        let mut all = vec!["db", "load-metadefs", defs_arg, "--config", &first];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all, &env);
        assert_eq!(code, 0, "{args:?}: {out} {err}");
        out
    };
    let out = load(&[]);
    assert!(
        out.contains("OS::Compute::Watchdog exists already; skipped"),
        "{out}"
    );

    watchdog["display_name"] = json!("CHANGED");
    watchdog["properties"]["watchdog_action"]["title"] = json!("Changed Action");
    watchdog["properties"]["new_one"] = json!({"title": "New", "type": "boolean"});
    write("compute-watchdog.json", &watchdog);
    assert!(load(&["--merge"]).contains("merged"));
    let merged = export(&first, "merged");
    assert_eq!(
        merged["display_name"], "Watchdog Behavior",
        "--merge changes nothing there"
    );
    assert_eq!(
        merged["properties"]["watchdog_action"]["title"],
        "Watchdog Action"
    );
    assert_eq!(
        merged["properties"]["new_one"]["type"], "boolean",
        "--merge adds what lacks"
    );
    assert!(merged.get("owner").is_none());
    assert_eq!(merged["objects"][0]["required"], json!(["a"]));

    load(&["--merge", "--prefer-new"]);
    let preferred = export(&first, "preferred");
    assert_eq!(preferred["display_name"], "CHANGED");
    assert_eq!(
        preferred["properties"]["watchdog_action"]["title"],
        "Changed Action"
    );

    watchdog.as_object_mut().expect("object").remove("objects");
    watchdog.as_object_mut().expect("object").remove("tags");
    write("compute-watchdog.json", &watchdog);
    load(&["--merge"]);
    assert!(
        export(&first, "kept")["objects"].is_array(),
        "--merge removes nothing"
    );
    assert!(load(&["--merge", "--overwrite"]).contains("replaced"));
    let replaced = export(&first, "replaced");
    assert!(
        replaced.get("objects").is_none() && replaced.get("tags").is_none(),
        "{replaced}"
    );

    for flags in [
        vec!["--prefer-new"],
        vec!["--overwrite"],
        vec!["--merge", "--prefer-new", "--overwrite"],
    ] {
        let mut all = vec!["db", "load-metadefs", defs_arg, "--config", &first];
        all.extend(flags.iter().copied());
        let (code, _, err) = run(&all, &env);
        assert_eq!(code, 1, "{flags:?}");
        assert!(err.contains("--prefer-new and --overwrite"), "{err}");
    }

    // What is exported loads into another database (SQLite here) and exports the same.
    let exported = dir.path().join("replaced");
    let second = config("second");
    let (code, out, err) = run(
        &[
            "db",
            "load-metadefs",
            exported.to_str().expect("utf-8"),
            "--config",
            &second,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out} {err}");
    let again = dir.path().join("again");
    let (code, out, err) = run(
        &[
            "db",
            "export-metadefs",
            again.to_str().expect("utf-8"),
            "--config",
            &second,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out} {err}");
    for name in ["OS__Compute__Watchdog.json", "OS__Glint__B.json"] {
        assert_eq!(
            std::fs::read(exported.join(name)).expect("first export"),
            std::fs::read(again.join(name)).expect("second export"),
            "{name}"
        );
    }
}
