//! The configuration tree: plain data with defaults, how it is layered and loaded
//! (defaults < file < conf.d/*.toml < `GLINT_` environment), validated, and which keys a
//! reload may change. It performs no side effect beyond reading the config files.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Where the config is read from. Built once by `main` and reused by every reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The main file; `None` means built-in defaults only.
    pub file: Option<PathBuf>,
    /// Whether `file` was named explicitly (then a missing file is an error).
    pub explicit: bool,
    /// The `conf.d` directory beside the main file (or beside its default location).
    pub conf_dir: Option<PathBuf>,
    /// The built-in `state_dir` default (`$STATE_DIRECTORY`, else `./glint-data`).
    pub default_state_dir: PathBuf,
}

impl ConfigSource {
    /// `explicit` is the `--config` argument; `default_file` the packaged location.
    pub fn resolve(
        explicit: Option<PathBuf>,
        default_file: &Path,
        default_state_dir: PathBuf,
    ) -> Self {
        let (file, is_explicit) = match explicit {
            Some(path) => (Some(path), true),
            None if default_file.exists() => (Some(default_file.to_path_buf()), false),
            None => (None, false),
        };
        let conf_dir = file
            .as_deref()
            .unwrap_or(default_file)
            .parent()
            .map(|dir| dir.join("conf.d"));
        ConfigSource {
            file,
            explicit: is_explicit,
            conf_dir,
            default_state_dir,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Holds the metadata database, image data and (outside systemd) the control socket.
    pub state_dir: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    /// The single unnamed store of a config without `[stores.*]` (it serves as the store
    /// named `default`).
    pub store: StoreConfig,
    /// Named stores (Glance's multi-store); when present they replace `[store]`.
    pub stores: BTreeMap<String, NamedStoreConfig>,
    pub images: ImagesConfig,
    pub import: ImportConfig,
}

/// The id `[store]` is served under, so that a config that names no stores has one.
pub const LEGACY_STORE: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedStoreConfig {
    pub datadirs: Vec<DataDirConfig>,
    /// Where uploads and imports go when they name no store; exactly one store has it
    /// (a lone store is the default without saying so).
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// The interoperable import methods offered (`/v2/info/import`).
    pub methods: Vec<ImportMethod>,
    pub web_download: WebDownloadConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportMethod {
    GlanceDirect,
    WebDownload,
    CopyImage,
}

impl ImportMethod {
    pub const ALL: [ImportMethod; 3] = [
        ImportMethod::GlanceDirect,
        ImportMethod::WebDownload,
        ImportMethod::CopyImage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportMethod::GlanceDirect => "glance-direct",
            ImportMethod::WebDownload => "web-download",
            ImportMethod::CopyImage => "copy-image",
        }
    }
}

/// Which URLs web-download may fetch (Glance's `import_filtering_opts`) and how patiently.
/// An `allowed_*` list, when not empty, is the whole truth and its `disallowed_*` twin is
/// ignored. Addresses that are not globally routable (loopback, private, link-local and the
/// other special-purpose blocks) are refused unless `allowed_hosts` names the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebDownloadConfig {
    pub allowed_schemes: Vec<String>,
    pub disallowed_schemes: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub disallowed_hosts: Vec<String>,
    pub allowed_ports: Vec<u16>,
    pub disallowed_ports: Vec<u16>,
    /// The longest wait to resolve the host, and then to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a download.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            methods: ImportMethod::ALL.to_vec(),
            web_download: WebDownloadConfig::default(),
        }
    }
}

impl Default for WebDownloadConfig {
    fn default() -> Self {
        WebDownloadConfig {
            allowed_schemes: vec!["http".into(), "https".into()],
            disallowed_schemes: Vec::new(),
            allowed_hosts: Vec::new(),
            disallowed_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            disallowed_ports: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_redirects: 5,
        }
    }
}

impl Config {
    /// The stores this config serves, by id: `[stores.*]`, or `[store]` as the one store
    /// named `default`.
    pub fn named_stores(&self) -> BTreeMap<String, NamedStoreConfig> {
        if !self.stores.is_empty() {
            return self.stores.clone();
        }
        BTreeMap::from([(
            LEGACY_STORE.to_string(),
            NamedStoreConfig {
                datadirs: self.store.datadirs.clone(),
                default: true,
                description: None,
            },
        )])
    }

    /// The id of the store that takes data when none is named.
    pub fn default_store(&self) -> String {
        let stores = self.named_stores();
        let marked = stores.iter().find(|(_, s)| s.default);
        marked
            .or_else(|| stores.iter().next())
            .map_or_else(|| LEGACY_STORE.to_string(), |(id, _)| id.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where image data lives; new data goes to the highest-priority writable directory
    /// with room.
    pub datadirs: Vec<DataDirConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDirConfig {
    /// Relative to `state_dir`.
    pub path: PathBuf,
    #[serde(default = "default_priority")]
    pub priority: i64,
    #[serde(default)]
    pub read_only: bool,
}

fn default_priority() -> i64 {
    100
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            datadirs: vec![DataDirConfig {
                path: PathBuf::from("images"),
                priority: default_priority(),
                read_only: false,
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Largest image accepted, checked while the data streams in.
    pub size_cap: bytesize::ByteSize,
    /// `os_hash_algo` for new data: sha512, sha384 or sha256.
    pub hash_algo: String,
    /// Image data one project may store in all; 0 means unlimited.
    pub user_storage_quota: bytesize::ByteSize,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            size_cap: bytesize::ByteSize::tib(1),
            hash_algo: "sha512".into(),
            user_storage_quota: bytesize::ByteSize::b(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`, relative to `state_dir`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://glint.db".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// noauth: the project every caller acts as (admin of it); empty means none, as in
    /// Glance, where images created without auth have no owner.
    pub project: String,
    /// noauth makes everyone who reaches glint an admin, so it serves only loopback
    /// unless this says otherwise.
    pub allow_remote_noauth: bool,
    /// trusted-headers: the peers whose identity headers are believed (the authenticating
    /// proxy). Anyone else could write the headers themselves.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Noauth,
            project: String::new(),
            allow_remote_noauth: false,
            trusted_proxies: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
        }
    }
}

impl AuthConfig {
    /// Whether `trusted_proxies` names a proxy beyond this host: loopback networks only (the
    /// default) mean the operator configured none.
    pub fn names_a_proxy(&self) -> bool {
        self.trusted_proxies.iter().any(|net| {
            // Loopback blocks are contiguous (127/8, ::1, ::ffff:127.0.0.0/104), so a
            // network whose first and last addresses are loopback holds nothing else.
            let loopback = |ip: IpAddr| ip.to_canonical().is_loopback();
            !(loopback(net.network()) && loopback(net.broadcast()))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Every caller is admin (loopback only by default).
    Noauth,
    /// Identity from X-Identity-Status, X-Roles, X-Project-Id, X-User-Id set by an
    /// authenticating proxy in front of glint.
    TrustedHeaders,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses bound when systemd passes no socket.
    pub listen: Vec<SocketAddr>,
    /// Threads of the request worker pool.
    pub workers: usize,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How many old generations may drain at once before the oldest is cut.
    pub max_draining_generations: usize,
    /// How long a request's head may take from its first byte; idle time between
    /// requests does not count.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request body may send nothing before it is cut.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Open connections at most; `None`: a share of the file descriptor limit.
    pub max_connections: Option<usize>,
    /// Data transfers in (uploads, stages, copies) at once.
    pub max_transfers: usize,
    /// How long a transfer waits for a free slot before it is refused with 503.
    #[serde(with = "humantime_serde")]
    pub transfer_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Journald,
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("glint-data"),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            stores: BTreeMap::new(),
            images: ImagesConfig::default(),
            import: ImportConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 9292))],
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            drain_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(60),
            max_draining_generations: 8,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            max_connections: None,
            max_transfers: 16,
            transfer_wait: Duration::from_secs(10),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// Upper bound on `server.workers`: more threads than this is a typo, not a tuning.
const MAX_WORKERS: usize = 1024;
/// The longest duration a key takes: a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    /// Extraction errors, each already naming its origin and key.
    #[error("{0}")]
    Rejected(String),
    #[error(
        "auth.mode = \"noauth\" makes every caller an admin, and {0} is not a loopback address: \
         switch auth.mode to trusted-headers behind an authenticating proxy, or set \
         auth.allow_remote_noauth = true if that is really meant"
    )]
    Exposed(SocketAddr),
    #[error(
        "{origin}: auth.mode = \"trusted-headers\" believes identity headers only from \
         auth.trusted_proxies, which names no proxy beyond loopback, and {addr} is not a \
         loopback address: set auth.trusted_proxies to the networks of the authenticating \
         proxy (such as [\"10.0.0.5/32\"])"
    )]
    NoTrustedProxy { origin: String, addr: SocketAddr },
    #[error("`{key}` cannot change at reload: {hint}")]
    NotReloadable { key: &'static str, hint: String },
}

/// A validated config together with the layers it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The files that contributed, in the order they were layered.
    pub files: Vec<PathBuf>,
    figment: Figment,
}

impl LoadedConfig {
    /// `(key, value, origin)` for every leaf key of the effective config.
    pub fn provenance(&self) -> Vec<(String, String, String)> {
        let mut leaves = BTreeMap::new();
        if let Ok(value) = serde_json::to_value(&self.config) {
            flatten("", &value, &mut leaves);
        }
        leaves
            .into_iter()
            .map(|(key, value)| {
                let origin = self
                    .figment
                    .find_metadata(&key)
                    .map_or_else(|| "built-in default".to_string(), describe);
                (key, value, origin)
            })
            .collect()
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, inner, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn describe(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        // The defaults layer is named after the type it serialises.
        _ if metadata.name == std::any::type_name::<Config>() => "built-in default".into(),
        _ => metadata.name.to_string(),
    }
}

/// Reads every layer, extracts and validates. Nothing is started here.
pub fn load(source: &ConfigSource) -> Result<LoadedConfig, ConfigError> {
    let defaults = Config {
        state_dir: source.default_state_dir.clone(),
        ..Config::default()
    };
    let mut figment = Figment::from(Serialized::defaults(defaults));
    let mut files = Vec::new();
    if let Some(file) = &source.file {
        if !file.exists() {
            if source.explicit {
                return Err(ConfigError::MissingFile(file.clone()));
            }
        } else {
            files.push(file.clone());
        }
    }
    if let Some(dir) = &source.conf_dir {
        files.extend(conf_d_files(dir)?);
    }
    for file in &files {
        // Read ourselves so an unreadable file is an error rather than an empty layer.
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
            path: file.clone(),
            source: e,
        })?;
        toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Invalid {
            origin: file.display().to_string(),
            message: syntax_error(&text, &e),
        })?;
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed("GLINT_").split("__"));

    let config: Config = figment.extract().map_err(|e| figment_error(&e))?;
    let loaded = LoadedConfig {
        config,
        files,
        figment,
    };
    validate(&loaded)?;
    Ok(loaded)
}

/// One line (it ends up in `STATUS=` and in a journal line): where, and what.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("TOML syntax, line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax: {message}"),
    }
}

fn conf_d_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::Unreadable {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn figment_error(error: &figment::Error) -> ConfigError {
    let messages: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| {
            let origin = e
                .metadata
                .as_ref()
                .map_or_else(|| "config".to_string(), describe);
            let key = e.path.join(".");
            if key.is_empty() {
                format!("{origin}: {}", e.kind)
            } else {
                format!("{origin}: key `{key}`: {}", e.kind)
            }
        })
        .collect();
    ConfigError::Rejected(messages.join("; "))
}

fn validate(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    let config = &loaded.config;
    let invalid = |key: &str, message: String| {
        let origin = loaded
            .figment
            .find_metadata(key)
            .map_or_else(|| "built-in default".to_string(), describe);
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
    if config.server.listen.is_empty() {
        return Err(invalid(
            "server.listen",
            "must name at least one address".into(),
        ));
    }
    for (key, value) in [
        ("server.drain_timeout", config.server.drain_timeout),
        ("server.shutdown_timeout", config.server.shutdown_timeout),
        (
            "server.header_read_timeout",
            config.server.header_read_timeout,
        ),
        ("server.body_read_timeout", config.server.body_read_timeout),
        ("server.transfer_wait", config.server.transfer_wait),
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
    validate_stores(config, &invalid)?;
    if config.import.methods.is_empty() {
        return Err(invalid(
            "import.methods",
            "must list at least one of glance-direct, web-download, copy-image".into(),
        ));
    }
    for (key, value) in [
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
    }
    if crate::db::sqlite_path(&config.database.url, &config.state_dir).is_none() {
        return Err(invalid(
            "database.url",
            format!(
                "`{}` is not supported: use sqlite://PATH (relative to state_dir)",
                config.database.url
            ),
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
        .is_some_and(|s| s.datadirs.iter().all(|d| d.read_only))
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
                .filter_map(|key| loaded.figment.find_metadata(key).map(describe))
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
mod tests {
    use super::*;

    fn source_with(dir: &Path, main: Option<&str>) -> ConfigSource {
        let file = dir.join("glint.toml");
        if let Some(text) = main {
            std::fs::write(&file, text).unwrap();
        }
        ConfigSource {
            file: Some(file),
            explicit: true,
            conf_dir: Some(dir.join("conf.d")),
            default_state_dir: dir.join("state"),
        }
    }

    #[test]
    fn defaults_apply_when_the_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&source_with(dir.path(), Some(""))).unwrap();
        assert_eq!(loaded.config.server.listen[0].port(), 9292);
        assert_eq!(loaded.config.state_dir, dir.path().join("state"));
    }

    #[test]
    fn conf_d_overrides_the_file_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_with(dir.path(), Some("[server]\nworkers = 3\n"));
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/20-b.toml"),
            "[server]\nworkers = 5\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/10-a.toml"),
            "[server]\nworkers = 4\n",
        )
        .unwrap();
        let loaded = load(&source).unwrap();
        assert_eq!(loaded.config.server.workers, 5);
        let origin = loaded
            .provenance()
            .into_iter()
            .find(|(key, _, _)| key == "server.workers")
            .unwrap()
            .2;
        assert!(origin.ends_with("20-b.toml"), "{origin}");
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), None)).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn the_unnamed_store_is_the_store_default_and_named_stores_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&source_with(dir.path(), Some(""))).unwrap();
        let stores = loaded.config.named_stores();
        assert_eq!(stores.keys().collect::<Vec<_>>(), ["default"]);
        assert_eq!(stores["default"].datadirs[0].path, Path::new("images"));
        assert_eq!(loaded.config.default_store(), "default");
        let text = "[stores.fast]\ndefault = true\ndatadirs = [{ path = \"f\" }]\n\
                    [stores.cold]\ndatadirs = [{ path = \"c\", read_only = true }]\n";
        let loaded = load(&source_with(dir.path(), Some(text))).unwrap();
        assert_eq!(loaded.config.named_stores().len(), 2);
        assert_eq!(loaded.config.default_store(), "fast");
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
    fn unknown_keys_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), Some("[server]\nworkerz = 3\n"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("glint.toml"), "{text}");
        assert!(text.contains("workerz"), "{text}");
        assert!(text.contains("server"), "{text}");
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
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), Some("[server\nworkers = 3\n"))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("glint.toml") && text.contains("TOML syntax"),
            "{text}"
        );
    }

    #[test]
    fn durations_and_addresses_parse() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&source_with(
            dir.path(),
            Some("[server]\nlisten = [\"[::1]:8080\"]\ndrain_timeout = \"1m 30s\"\n"),
        ))
        .unwrap();
        assert_eq!(loaded.config.server.drain_timeout, Duration::from_secs(90));
        assert_eq!(loaded.config.server.listen[0].port(), 8080);
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
    fn a_trusted_proxy_that_is_not_a_network_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["\"10.0.0.5\"", "\"10.0.0.0/33\"", "\"proxy.example\"", "5"] {
            let text = format!("[auth]\ntrusted_proxies = [{bad}]\n");
            let err = load(&source_with(dir.path(), Some(&text)))
                .unwrap_err()
                .to_string();
            assert!(err.contains("glint.toml"), "{bad}: {err}");
            assert!(err.contains("auth.trusted_proxies"), "{bad}: {err}");
        }
        let text = "[auth]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n";
        let loaded = load(&source_with(dir.path(), Some(text))).unwrap();
        assert_eq!(loaded.config.auth.trusted_proxies.len(), 2);
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
}
