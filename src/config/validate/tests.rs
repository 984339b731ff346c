//! Each refusal of `validate` named by its key and file, on configs loaded from real files.

use super::*;
use crate::config::load::{load, source_with};
use crate::config::types::LogFormat;

#[test]
fn keystone_mode_needs_an_endpoint_and_credentials_and_hides_the_password() {
    let base = "[auth]\nmode = \"keystone\"\n[auth.keystone]\n";
    for (keys, named) in [
        (
            "username = \"glance\"\npassword = \"s\"\n",
            "auth.keystone.auth_url",
        ),
        (
            "auth_url = \"ftp://k/v3\"\nusername = \"glance\"\npassword = \"s\"\n",
            "auth.keystone.auth_url",
        ),
        (
            "auth_url = \"http://k:5000/v3\"\npassword = \"s\"\n",
            "auth.keystone.username",
        ),
        (
            "auth_url = \"http://k:5000/v3\"\nusername = \"glance\"\n",
            "auth.keystone.password",
        ),
        (
            "auth_url = \"http://k:5000/v3\"\nusername = \"g\"\npassword = \"s\"\ncache_ttl = \"0s\"\n",
            "auth.keystone.cache_ttl",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), Some(&format!("{base}{keys}")))).unwrap_err();
        assert!(err.to_string().contains(named), "{keys}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{base}auth_url = \"http://k:5000/v3\"\nusername = \"glance\"\npassword = \"hunter2\"\n"
    );
    let loaded = load(&source_with(dir.path(), Some(&text))).unwrap();
    let shown = format!("{:?} {:?}", loaded.provenance(), loaded.config);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
}

#[test]
fn store_mistakes_name_the_file_and_the_key() {
    let cases = [
        (
            "[stores.a]\ndatadirs = [{ path = \"a\" }]\n[stores.b]\ndatadirs = [{ path = \"b\" }]\n",
            "exactly one store",
        ),
        ("[stores.a]\ndatadirs = []\n", "stores.a.datadirs"),
        (
            "[stores.a]\ndefault = true\ndatadirs = [{ path = \"x\" }]\n\
             [stores.b]\ndatadirs = [{ path = \"x\" }]\n",
            "listed twice",
        ),
        (
            "[stores.\"os_glance_x\"]\ndatadirs = [{ path = \"x\" }]\n",
            "os_glance_",
        ),
        (
            "[stores.a]\ndatadirs = [{ path = \"x\", read_only = true }]\n",
            "stores.a.datadirs",
        ),
        (
            "[store]\ndatadirs = [{ path = \"old\" }]\n[stores.a]\ndatadirs = [{ path = \"a\" }]\n",
            "store.datadirs",
        ),
        ("[import]\nmethods = []\n", "import.methods"),
        (
            "[import]\nmethods = [\"glance-download\"]\n",
            "import.methods",
        ),
        (
            "[stores.a]\ntype = \"s3\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            "stores.a.bucket",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\nsecret_access_key = \"s\"\n",
            "stores.a.access_key_id",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\naccess_key_id = \"k\"\n",
            "stores.a.secret_access_key",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\naccess_key_id = \"k\"\n\
             secret_access_key = \"s\"\nendpoint = \"ftp://x\"\n",
            "stores.a.endpoint",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\naccess_key_id = \"k\"\n\
             secret_access_key = \"s\"\npart_size = \"1MiB\"\n",
            "stores.a.part_size",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\naccess_key_id = \"k\"\n\
             secret_access_key = \"s\"\ndatadirs = [{ path = \"x\" }]\n",
            "stores.a.datadirs",
        ),
        (
            "[stores.a]\ndatadirs = [{ path = \"x\" }]\nbucket = \"images\"\n",
            "stores.a.bucket",
        ),
        (
            "[stores.a]\ntype = \"s3\"\nbucket = \"images\"\naccess_key_id = \"k\"\n\
             secret_access_key_file = \"missing\"\n",
            "stores.a.secret_access_key_file",
        ),
        ("[stores.a]\ntype = \"gcs\"\n", "stores.a"),
        (
            "[import.inject_metadata]\nproperties = { os_glance_x = \"1\" }\n",
            "import.inject_metadata.properties",
        ),
        (
            "[import]\nplugins = [\"decompress\", \"decompress\"]\n",
            "import.plugins",
        ),
        ("[import]\nplugins = [\"resize\"]\n", "import.plugins"),
        (
            "[import]\nplugins = [\"convert\"]\n[import.convert]\noutput_format = \"vhd\"\n",
            "import.convert.output_format",
        ),
        (
            "[import]\nplugins = [\"convert\"]\n[import.convert]\nqemu_img = \"no-such-qemu-img\"\n",
            "import.convert.qemu_img",
        ),
        (
            "[images]\ngpt_safety_checks_nonfatal = [\"all\"]\n",
            "images.gpt_safety_checks_nonfatal",
        ),
        ("[cache]\nmax_size = 0\n", "cache.max_size"),
        ("[cache]\nstall_time = \"0s\"\n", "cache.stall_time"),
        ("[images]\ndisk_formats = []\n", "images.disk_formats"),
    ];
    for (text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), Some(text)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("glint.toml"), "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn bad_values_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&source_with(dir.path(), Some("[server]\nworkers = 0\n"))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("glint.toml") && text.contains("server.workers"),
        "{text}"
    );

    let err = load(&source_with(
        dir.path(),
        Some("[server]\ndrain_timeout = \"soon\"\n"),
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("server.drain_timeout"), "{text}");

    let err = load(&source_with(dir.path(), Some("[log]\nlevel = \"=x=\"\n"))).unwrap_err();
    assert!(err.to_string().contains("log.level"), "{err}");

    let err = load(&source_with(
        dir.path(),
        Some("[server]\nhandover_connections = 5001\n"),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("server.handover_connections"),
        "{err}"
    );

    for (tls, named) in [
        ("cert = \"c.pem\"\n", "server.tls.key"),
        ("key = \"k.pem\"\n", "server.tls.cert"),
        ("client_ca = \"ca.pem\"\n", "server.tls.client_ca"),
        ("listeners = [\"api\"]\n", "server.tls.listeners"),
    ] {
        let text = format!("[server.tls]\n{tls}");
        let err = load(&source_with(dir.path(), Some(&text))).unwrap_err();
        assert!(err.to_string().contains(named), "{tls}: {err}");
    }
}

#[test]
fn noauth_serves_only_loopback_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let loopback: SocketAddr = "127.0.0.1:9292".parse().unwrap();
    let remote: SocketAddr = "0.0.0.0:9292".parse().unwrap();
    let loaded = load(&source_with(dir.path(), Some(""))).unwrap();
    assert!(check_exposure(&loaded, [loopback]).is_ok());
    let err = check_exposure(&loaded, [loopback, remote]).unwrap_err();
    assert!(err.to_string().contains("0.0.0.0:9292"), "{err}");
    assert!(err.to_string().contains("allow_remote_noauth"), "{err}");
    let text = "[auth]\nallow_remote_noauth = true\n";
    let loaded = load(&source_with(dir.path(), Some(text))).unwrap();
    assert!(check_exposure(&loaded, [remote]).is_ok());
}

#[test]
fn trusted_headers_beyond_loopback_need_a_proxy_to_trust() {
    let dir = tempfile::tempdir().unwrap();
    let loopback: SocketAddr = "[::1]:9292".parse().unwrap();
    let remote: SocketAddr = "192.0.2.7:9292".parse().unwrap();
    let mode = "[auth]\nmode = \"trusted-headers\"\n";
    // Unset, or loopback networks only: no proxy was configured.
    for proxies in [
        "",
        "trusted_proxies = []\n",
        "trusted_proxies = [\"127.0.0.1/32\", \"127.8.0.0/16\", \"::1/128\"]\n",
        "trusted_proxies = [\"::ffff:127.0.0.0/104\"]\n",
    ] {
        let loaded = load(&source_with(dir.path(), Some(&format!("{mode}{proxies}")))).unwrap();
        assert!(check_exposure(&loaded, [loopback]).is_ok(), "{proxies}");
        let err = check_exposure(&loaded, [loopback, remote])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.trusted_proxies"), "{proxies}: {err}");
        assert!(err.contains("glint.toml"), "{proxies}: {err}");
        assert!(err.contains("192.0.2.7:9292"), "{proxies}: {err}");
    }
    for proxies in [
        "trusted_proxies = [\"10.0.0.5/32\"]\n",
        "trusted_proxies = [\"127.0.0.1/32\", \"fd00::/8\"]\n",
        "trusted_proxies = [\"126.0.0.0/7\"]\n",
    ] {
        let loaded = load(&source_with(dir.path(), Some(&format!("{mode}{proxies}")))).unwrap();
        assert!(check_exposure(&loaded, [remote]).is_ok(), "{proxies}");
    }
}

#[test]
fn restart_only_keys_are_refused_by_name() {
    let old = Config::default();
    let mut new = old.clone();
    new.server.workers += 1;
    assert!(check_reloadable(&old, &new, true).is_ok());
    new.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
    assert!(check_reloadable(&old, &new, false).is_ok());
    let err = check_reloadable(&old, &new, true).unwrap_err();
    assert!(err.to_string().contains("server.listen"));
    let mut new = old.clone();
    new.log.format = LogFormat::Json;
    assert!(
        check_reloadable(&old, &new, false)
            .unwrap_err()
            .to_string()
            .contains("log.format")
    );
}
