//! The command line against the real binary: `--version`, `check-config` (effective values
//! and their origins, errors naming file and key) and `ctl` without a server.

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
    assert!(!state.join("glint.db").exists(), "version changes nothing");

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
