//! What a config must satisfy beyond its shape, each refusal naming the key and the file
//! that set it: ranges and non-empty lists, the stores (ids, one default, no directory in
//! two stores), `database.url`; then the checks that need more than the config:
//! `check_exposure` (what a listener beyond loopback must not serve) and `check_reloadable`
//! (the keys only a restart may change). It reads nothing and starts nothing.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use super::load::LoadedConfig;
use super::types::{
    AuthMode, Config, ImportPlugin, NamedStoreConfig, S3_DEFAULT_PART_SIZE,
    S3_DEFAULT_PARTS_IN_FLIGHT, StoreConfig, StoreKind,
};

/// Upper bound on `server.workers`: more threads than this is a typo, not a tuning.
const MAX_WORKERS: usize = 1024;
/// Upper bound on `server.handover_connections`: their fd-store names, passed back in
/// `LISTEN_FDNAMES`, must stay within an environment string's 128 KiB.
const MAX_HANDOVER: usize = 5000;
/// The longest duration a key takes: a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Every check one config needs on its own; `load` runs it before handing a config out.
pub(super) fn validate(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let invalid = |key: &str, message: String| {
        // A key that is missing is named with the file of the table that lacks it.
        let tables = std::iter::successors(Some(key), |k| k.rsplit_once('.').map(|(t, _)| t));
        let origin = tables
            .filter_map(|k| loaded.origin(k))
            .next()
            .unwrap_or_else(|| "built-in default".to_string());
        ConfigError::Invalid {
            origin,
            message: format!("key `{key}`: {message}"),
        }
    };
    if config.server.workers == 0 || config.server.workers > MAX_WORKERS {
        return Err(invalid(
            "server.workers",
            format!(
                "must be between 1 and {MAX_WORKERS}, got {}",
                config.server.workers
            ),
        ));
    }
    if let Some(metrics) = config.metrics.listen {
        // Port 0 is the kernel's choice, never the same twice.
        let shared = config.server.listen.iter().find(|api| {
            metrics.port() != 0
                && api.port() == metrics.port()
                && (api.ip() == metrics.ip()
                    || api.ip().is_unspecified()
                    || metrics.ip().is_unspecified())
        });
        if let Some(api) = shared {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "{metrics} is the API's listener {api} (server.listen); metrics need a port of their own"
                ),
            ));
        }
    }
    let tls = &config.server.tls;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return Err(invalid(
                "server.tls.key",
                "must be set with server.tls.cert".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "server.tls.cert",
                "must be set with server.tls.key".into(),
            ));
        }
        (None, None) if tls.client_ca.is_some() || !tls.listeners.is_empty() => {
            let key = if tls.client_ca.is_some() {
                "server.tls.client_ca"
            } else {
                "server.tls.listeners"
            };
            return Err(invalid(
                key,
                "needs server.tls.cert and server.tls.key".into(),
            ));
        }
        _ => {}
    }
    if config.server.listen.is_empty() {
        return Err(invalid(
            "server.listen",
            "must name at least one address".into(),
        ));
    }
    for (key, value) in [
        ("auth.keystone.cache_ttl", config.auth.keystone.cache_ttl),
        ("auth.keystone.timeout", config.auth.keystone.timeout),
        ("server.drain_timeout", config.server.drain_timeout),
        ("server.shutdown_timeout", config.server.shutdown_timeout),
        (
            "server.header_read_timeout",
            config.server.header_read_timeout,
        ),
        ("server.body_read_timeout", config.server.body_read_timeout),
        ("server.transfer_wait", config.server.transfer_wait),
        ("database.connect_timeout", config.database.connect_timeout),
        (
            "database.statement_timeout",
            config.database.statement_timeout,
        ),
        (
            "import.web_download.connect_timeout",
            config.import.web_download.connect_timeout,
        ),
        (
            "import.web_download.read_timeout",
            config.import.web_download.read_timeout,
        ),
    ] {
        if value.is_zero() {
            return Err(invalid(key, "must be longer than 0s".into()));
        }
        // Deadlines are `Instant`s: a duration that far out would overflow adding to one.
        if value > MAX_DURATION {
            return Err(invalid(key, "must be at most 365 days".into()));
        }
    }
    if config.server.max_connections == Some(0) {
        return Err(invalid(
            "server.max_connections",
            "must be at least 1 (leave it out for a share of the file descriptor limit)".into(),
        ));
    }
    if config.server.handover_connections > MAX_HANDOVER {
        return Err(invalid(
            "server.handover_connections",
            format!(
                "must be at most {MAX_HANDOVER} (systemd passes the parked connections' names in \
                 one environment variable, LISTEN_FDNAMES), got {}",
                config.server.handover_connections
            ),
        ));
    }
    if config.server.max_transfers == 0 {
        return Err(invalid("server.max_transfers", "must be at least 1".into()));
    }
    if config.server.max_draining_generations == 0 {
        return Err(invalid(
            "server.max_draining_generations",
            "must be at least 1".into(),
        ));
    }
    if let Err(e) = config.log.level.parse::<tracing_subscriber::EnvFilter>() {
        return Err(invalid("log.level", format!("not a valid filter: {e}")));
    }
    if config.state_dir.as_os_str().is_empty() {
        return Err(invalid("state_dir", "must not be empty".into()));
    }
    if !matches!(
        config.images.hash_algo.as_str(),
        "sha512" | "sha384" | "sha256"
    ) {
        return Err(invalid(
            "images.hash_algo",
            format!(
                "`{}` is not one of sha512, sha384, sha256",
                config.images.hash_algo
            ),
        ));
    }
    for (key, list) in [
        ("images.disk_formats", &config.images.disk_formats),
        ("images.container_formats", &config.images.container_formats),
    ] {
        if list.is_empty() || list.iter().any(|name| name.trim().is_empty()) {
            return Err(invalid(
                key,
                "must list at least one format, each a non-empty name".into(),
            ));
        }
    }
    for name in config.import.inject_metadata.properties.keys() {
        if name.is_empty() || name.chars().count() > 255 || name.starts_with("os_glance") {
            return Err(invalid(
                "import.inject_metadata.properties",
                format!(
                    "{name:?}: a property name is 1 to 255 characters and does not start with \
                     os_glance (reserved)"
                ),
            ));
        }
    }
    for name in &config.images.gpt_safety_checks_nonfatal {
        if !matches!(name.as_str(), "mbr" | "gptmbr") {
            return Err(invalid(
                "images.gpt_safety_checks_nonfatal",
                format!("`{name}` is not one of mbr, gptmbr"),
            ));
        }
    }
    validate_plugins(config, &invalid)?;
    let cache = &config.cache;
    if cache.dir.as_os_str().is_empty() {
        return Err(invalid("cache.dir", "must not be empty".into()));
    }
    if cache.max_size.as_u64() == 0 {
        return Err(invalid("cache.max_size", "must be more than 0".into()));
    }
    if cache.stall_time.is_zero() || cache.stall_time > MAX_DURATION {
        return Err(invalid(
            "cache.stall_time",
            "must be more than 0 and at most a year".into(),
        ));
    }
    validate_stores(config, &invalid)?;
    validate_keystone(config, &invalid)?;
    if config.images.use_keystone_limits && config.auth.mode != AuthMode::Keystone {
        return Err(invalid(
            "images.use_keystone_limits",
            "the limits come from Keystone: it needs auth.mode = \"keystone\"".into(),
        ));
    }
    if !config.server.public_endpoint.is_empty() {
        let endpoint = url::Url::parse(&config.server.public_endpoint);
        let usable = endpoint.as_ref().is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none()
        });
        if !usable {
            return Err(invalid(
                "server.public_endpoint",
                format!(
                    "must be an http(s) base URL such as https://images.example.com, got {:?}",
                    config.server.public_endpoint
                ),
            ));
        }
    }
    if config.import.methods.is_empty() {
        return Err(invalid(
            "import.methods",
            "must list at least one of glance-direct, web-download, copy-image".into(),
        ));
    }
    if config.database.location(&config.state_dir).is_none() {
        let key = match config.database.url_file {
            Some(_) => "database.url_file",
            None => "database.url",
        };
        return Err(invalid(
            key,
            format!(
                "`{}` is not a database glint can open: use sqlite://PATH (relative to \
                 state_dir), postgres://USER:PASSWORD@HOST:PORT/DATABASE or \
                 mysql://USER:PASSWORD@HOST:PORT/DATABASE",
                crate::redact_url(&config.database.url)
            ),
        ));
    }
    if config.database.max_connections == 0 || config.database.max_connections > 10_000 {
        return Err(invalid(
            "database.max_connections",
            format!(
                "must be between 1 and 10000, got {}",
                config.database.max_connections
            ),
        ));
    }
    Ok(())
}

/// keystone mode needs an endpoint and glint's own credentials there.
fn validate_keystone(
    config: &Config,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if config.auth.mode != AuthMode::Keystone {
        return Ok(());
    }
    let keystone = &config.auth.keystone;
    match url::Url::parse(&keystone.auth_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => {
            return Err(invalid(
                "auth.keystone.auth_url",
                format!(
                    "must be the http(s) URL of Keystone v3 (e.g. http://127.0.0.1:5000/v3), got \
                     {:?}",
                    keystone.auth_url
                ),
            ));
        }
    }
    for (key, value) in [
        ("auth.keystone.username", &keystone.username),
        ("auth.keystone.password", &keystone.password),
        ("auth.keystone.project_name", &keystone.project_name),
        ("auth.keystone.user_domain_name", &keystone.user_domain_name),
        (
            "auth.keystone.project_domain_name",
            &keystone.project_domain_name,
        ),
    ] {
        if value.is_empty() {
            return Err(invalid(
                key,
                "must be set when auth.mode = \"keystone\"".into(),
            ));
        }
    }
    Ok(())
}

fn validate_plugins(
    config: &Config,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let plugins = &config.import.plugins;
    if let Some(twice) = plugins
        .iter()
        .enumerate()
        .find_map(|(i, p)| plugins[..i].contains(p).then_some(p))
    {
        return Err(invalid(
            "import.plugins",
            format!("{twice:?} is listed twice"),
        ));
    }
    let convert = &config.import.convert;
    if plugins.contains(&ImportPlugin::Convert) {
        let output = convert.output_format.as_str();
        if !matches!(output, "raw" | "qcow2" | "vmdk") {
            return Err(invalid(
                "import.convert.output_format",
                format!("`{output}` is not one of raw, qcow2, vmdk"),
            ));
        }
        if !config.images.disk_formats.iter().any(|f| f == output) {
            return Err(invalid(
                "import.convert.output_format",
                format!("`{output}` is not in images.disk_formats"),
            ));
        }
    }
    if convert.cpu_time.is_zero() || convert.cpu_time > MAX_DURATION {
        return Err(invalid(
            "import.convert.cpu_time",
            "must be more than 0 and at most a year".into(),
        ));
    }
    if convert.address_space.as_u64() < 64 << 20 {
        return Err(invalid(
            "import.convert.address_space",
            "must be at least 64 MiB (qemu-img maps its libraries too)".into(),
        ));
    }
    Ok(())
}

fn validate_stores(
    config: &Config,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !config.stores.is_empty() && config.store != StoreConfig::default() {
        return Err(invalid(
            "store.datadirs",
            "[store] describes the one unnamed store, and [stores.*] names stores: use one \
             of them (the unnamed store is the store `default`)"
                .into(),
        ));
    }
    let stores = config.named_stores();
    let mut seen = std::collections::BTreeSet::new();
    for (id, store) in &stores {
        let key = if config.stores.is_empty() {
            "store.datadirs".to_string()
        } else {
            format!("stores.{id}.datadirs")
        };
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !id.starts_with("os_glance_");
        if !valid_id {
            return Err(invalid(
                &format!("stores.{id}"),
                "a store id is 1 to 64 letters, digits, '-' or '_', and does not start \
                 with os_glance_"
                    .into(),
            ));
        }
        if store.kind == StoreKind::S3 {
            validate_s3_store(id, store, invalid)?;
            continue;
        }
        if let Some(name) = s3_keys_set(store).first() {
            return Err(invalid(
                &format!("stores.{id}.{name}"),
                "is a key of `type = \"s3\"` stores; this store is a filesystem store".into(),
            ));
        }
        if store.datadirs.is_empty() {
            return Err(invalid(&key, "must list at least one directory".into()));
        }
        for dir in &store.datadirs {
            if !seen.insert(dir.path.clone()) {
                return Err(invalid(
                    &key,
                    format!(
                        "{} is listed twice: a directory belongs to one store",
                        dir.path.display()
                    ),
                ));
            }
        }
    }
    let defaults: Vec<&String> = stores
        .iter()
        .filter(|(_, s)| s.default)
        .map(|(id, _)| id)
        .collect();
    if stores.len() > 1 && defaults.len() != 1 {
        return Err(invalid(
            "stores",
            format!(
                "exactly one store must be marked `default = true`, found {}",
                defaults.len()
            ),
        ));
    }
    let default = config.default_store();
    if stores
        .get(&default)
        .is_some_and(|s| s.kind == StoreKind::Filesystem && s.datadirs.iter().all(|d| d.read_only))
    {
        let key = if config.stores.is_empty() {
            "store.datadirs".to_string()
        } else {
            format!("stores.{default}.datadirs")
        };
        return Err(invalid(
            &key,
            "every directory of the default store is read_only: new data would have \
             nowhere to go"
                .into(),
        ));
    }
    Ok(())
}

/// The S3 keys a store sets, by name: a filesystem store must set none.
fn s3_keys_set(store: &NamedStoreConfig) -> Vec<&'static str> {
    [
        ("endpoint", store.endpoint.is_some()),
        ("region", store.region.is_some()),
        ("bucket", store.bucket.is_some()),
        ("prefix", store.prefix.is_some()),
        ("access_key_id", store.access_key_id.is_some()),
        ("secret_access_key", store.secret_access_key.is_some()),
        (
            "secret_access_key_file",
            store.secret_access_key_file.is_some(),
        ),
        ("path_style", store.path_style.is_some()),
        ("part_size", store.part_size.is_some()),
        ("parts_in_flight", store.parts_in_flight.is_some()),
        ("optional", store.optional),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// S3's own limits of a part.
const S3_MIN_PART: u64 = 5 << 20;
const S3_MAX_PART: u64 = 5 << 30;

fn validate_s3_store(
    id: &str,
    store: &NamedStoreConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = |name: &str| format!("stores.{id}.{name}");
    if !store.datadirs.is_empty() {
        return Err(invalid(
            &key("datadirs"),
            "an s3 store keeps its data in its bucket, not in directories".into(),
        ));
    }
    let bucket = store.bucket.as_deref().unwrap_or_default();
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_bucket {
        return Err(invalid(
            &key("bucket"),
            "must name the bucket: 3 to 63 lowercase letters, digits, '-' or '.'".into(),
        ));
    }
    if let Some(endpoint) = &store.endpoint {
        let parsed = url::Url::parse(endpoint).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if parsed.is_none() {
            return Err(invalid(
                &key("endpoint"),
                format!("{endpoint} is not an http:// or https:// URL"),
            ));
        }
    }
    if store.access_key_id.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(&key("access_key_id"), "must be set".into()));
    }
    if store
        .secret_access_key
        .as_ref()
        .is_none_or(|s| s.0.is_empty())
    {
        return Err(invalid(
            &key("secret_access_key"),
            "must be set (or secret_access_key_file)".into(),
        ));
    }
    let part_size = store.part_size.unwrap_or(S3_DEFAULT_PART_SIZE).as_u64();
    if !(S3_MIN_PART..=S3_MAX_PART).contains(&part_size) {
        return Err(invalid(
            &key("part_size"),
            "must be from 5 MiB to 5 GiB (S3's limits of a part)".into(),
        ));
    }
    let in_flight = store.parts_in_flight.unwrap_or(S3_DEFAULT_PARTS_IN_FLIGHT);
    if !(1..=64).contains(&in_flight) {
        return Err(invalid(
            &key("parts_in_flight"),
            "must be from 1 to 64".into(),
        ));
    }
    Ok(())
}

/// What a listener beyond loopback must not serve: noauth, which makes every caller an
/// admin (unless the config says so explicitly), and trusted-headers without a proxy to
/// trust, where every request from beyond loopback would be refused.
pub fn check_exposure(
    loaded: &LoadedConfig,
    addresses: impl IntoIterator<Item = SocketAddr>,
) -> Result<(), ConfigError> {
    let auth = &loaded.config.auth;
    let Some(addr) = addresses.into_iter().find(|a| !a.ip().is_loopback()) else {
        return Ok(());
    };
    match auth.mode {
        AuthMode::Noauth if !auth.allow_remote_noauth => Err(ConfigError::Exposed(addr)),
        AuthMode::TrustedHeaders if !auth.names_a_proxy() => {
            // The file to edit: where the proxies were listed, else where the mode was set
            // (trusted-headers is never the default, so some layer set it).
            let default = "built-in default";
            let origin = ["auth.trusted_proxies", "auth.mode"]
                .into_iter()
                .filter_map(|key| loaded.origin(key))
                .find(|origin| origin != default)
                .unwrap_or_else(|| default.to_string());
            Err(ConfigError::NoTrustedProxy { origin, addr })
        }
        _ => Ok(()),
    }
}

/// Which changes a reload may apply. The keys listed here need a restart; every other
/// key is rebuilt by the reload.
pub fn check_reloadable(
    old: &Config,
    new: &Config,
    socket_activated: bool,
) -> Result<(), ConfigError> {
    if old.state_dir != new.state_dir {
        return Err(ConfigError::NotReloadable {
            key: "state_dir",
            hint: "it holds the data and the control socket of the running process; \
                   move the data, then `systemctl restart glint`"
                .into(),
        });
    }
    if old.log.format != new.log.format {
        return Err(ConfigError::NotReloadable {
            key: "log.format",
            hint: "the log sink is chosen at start; `systemctl restart glint` to switch it".into(),
        });
    }
    if socket_activated && old.server.listen != new.server.listen {
        return Err(ConfigError::NotReloadable {
            key: "server.listen",
            hint: "the listening sockets belong to glint.socket; change ListenStream= with \
                   `systemctl edit glint.socket`, then restart the socket and the service"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
