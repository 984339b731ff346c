//! The config tree as plain data: every section's struct and enum, its serde shape
//! (`deny_unknown_fields`, humantime durations, kebab-case names) and its built-in defaults,
//! plus the few facts derived from the data alone (which stores a config serves, which one
//! is the default, whether a proxy is trusted). Reading files and judging values are not
//! here: `load` layers the sources, `validate` rejects what deserialises but is wrong.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use super::import::{
    ConvertConfig, ImportConfig, ImportMethod, ImportPlugin, InjectMetadataConfig,
    WebDownloadConfig,
};

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
    pub cache: CacheConfig,
    pub metrics: MetricsConfig,
}

/// Prometheus metrics, on a listener of their own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (for example `127.0.0.1:9293`); unset: off.
    pub listen: Option<SocketAddr>,
}

/// The node-local image cache (Glance's image cache) in front of every store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Relative to `state_dir`.
    pub dir: PathBuf,
    /// Least recently used entries go past this.
    pub max_size: bytesize::ByteSize,
    /// Partial entries (fills) older than this are removed.
    #[serde(with = "humantime_serde")]
    pub stall_time: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            dir: PathBuf::from("cache"),
            max_size: bytesize::ByteSize::gib(10),
            stall_time: Duration::from_secs(24 * 3600),
        }
    }
}

/// The id `[store]` is served under, so that a config that names no stores has one.
pub const LEGACY_STORE: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedStoreConfig {
    /// What holds the data: directories (`filesystem`, the default) or a bucket (`s3`).
    #[serde(default, rename = "type")]
    pub kind: StoreKind,
    /// `filesystem`: the data directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datadirs: Vec<DataDirConfig>,
    /// Where uploads and imports go when they name no store; exactly one store has it
    /// (a lone store is the default without saying so).
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `s3`: a store that cannot be reached at a start or reload is served anyway (its
    /// requests fail with 503 until it answers) instead of failing the reload.
    #[serde(default)]
    pub optional: bool,
    // `s3` (all absent on a filesystem store). Every one is read again at a reload, the
    // credentials included: rotating a key is a `systemctl reload`.
    /// `http(s)://host:port` of an S3-compatible service; absent: AWS in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Put before every object key (`glint/` → `glint/<image id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// A file holding the secret key instead (relative to the config file), read at every
    /// start and reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key` (most
    /// services other than AWS want it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Bytes per part of a multipart upload; an upload holds at most `part_size` ×
    /// (`parts_in_flight` + 1) in memory. S3 takes 10,000 parts: a declared size that needs
    /// more gets larger parts, and an upload of unknown length doubles its parts every
    /// 1,000 (16 MiB parts hold 16 TiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<bytesize::ByteSize>,
    /// Parts of one upload sent at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_in_flight: Option<usize>,
}

impl NamedStoreConfig {
    /// A filesystem store in `datadirs`, neither default nor described.
    pub fn filesystem(datadirs: Vec<DataDirConfig>) -> Self {
        NamedStoreConfig {
            kind: StoreKind::Filesystem,
            datadirs,
            default: false,
            description: None,
            optional: false,
            endpoint: None,
            region: None,
            bucket: None,
            prefix: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            path_style: None,
            part_size: None,
            parts_in_flight: None,
        }
    }
}

/// What a named store keeps its data in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Filesystem,
    S3,
}

/// S3's defaults, where a key is absent.
pub const S3_DEFAULT_REGION: &str = "us-east-1";
pub const S3_DEFAULT_PART_SIZE: bytesize::ByteSize = bytesize::ByteSize::mib(16);
pub const S3_DEFAULT_PARTS_IN_FLIGHT: usize = 4;

/// A credential: shown by neither `Debug` nor `check-config`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<hidden>\"")
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
                default: true,
                ..NamedStoreConfig::filesystem(self.store.datadirs.clone())
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
    /// Per image: custom properties, tags, members and locations at most.
    pub image_property_quota: usize,
    pub image_tag_quota: usize,
    pub image_member_quota: usize,
    pub image_location_quota: usize,
    /// Show `direct_url` (the first location) in image bodies, as Glance's option.
    pub show_image_direct_url: bool,
    /// Show `locations` in image bodies, as Glance's option.
    pub show_multiple_locations: bool,
    /// Enforce Keystone's unified limits for the image service (Glance's
    /// `use_keystone_limits`): image_size_total, image_stage_total, image_count_total,
    /// image_count_uploading.
    pub use_keystone_limits: bool,
    /// Refuse data whose format is not the image's `disk_format` (Glance's
    /// `require_image_format_match`). Unsafe data is refused either way.
    pub require_format_match: bool,
    /// The `disk_format` and `container_format` values images may have (Glance's
    /// `[image_format]` lists and defaults).
    pub disk_formats: Vec<String>,
    pub container_formats: Vec<String>,
    /// The VMDK `createType`s taken (Glance's `vmdk_allowed_types`); empty takes no VMDK.
    /// Types that name extent files are refused whatever this says.
    pub vmdk_allowed_types: Vec<String>,
    /// Safety checks (`mbr`, `gptmbr`) a GPT disk may fail and still be taken (Glance's
    /// `gpt_safety_checks_nonfatal`).
    pub gpt_safety_checks_nonfatal: Vec<String>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            size_cap: bytesize::ByteSize::tib(1),
            hash_algo: "sha512".into(),
            user_storage_quota: bytesize::ByteSize::b(0),
            image_property_quota: 128,
            image_tag_quota: 128,
            image_member_quota: 128,
            image_location_quota: 10,
            show_image_direct_url: false,
            require_format_match: true,
            vmdk_allowed_types: vec!["streamOptimized".into(), "monolithicSparse".into()],
            gpt_safety_checks_nonfatal: Vec::new(),
            disk_formats: [
                "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
            ]
            .map(String::from)
            .to_vec(),
            container_formats: [
                "ami",
                "ari",
                "aki",
                "bare",
                "ovf",
                "ova",
                "docker",
                "compressed",
            ]
            .map(String::from)
            .to_vec(),
            show_multiple_locations: false,
            use_keystone_limits: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (relative to `state_dir`), `postgres://USER:PASSWORD@HOST:PORT/DB` or
    /// `mysql://USER:PASSWORD@HOST:PORT/DB` (MariaDB or MySQL).
    pub url: String,
    /// A file holding the URL (and so the password) instead: when set, it wins over `url`.
    /// Relative to the config file; read at every start and reload.
    pub url_file: Option<PathBuf>,
    /// Connections glint keeps to the database (on SQLite: readers; it writes through one).
    pub max_connections: u32,
    /// How long a request waits for a connection, opening one included, before it fails
    /// with 503.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one statement may run (on SQLite: wait for the write lock) before the
    /// request fails with 503.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Several nodes on one database: how long this node's hold on an upload, a stage or
    /// a task lasts unrenewed (it renews it every quarter of this, at most every 2 s).
    /// Once it has expired another node takes the task over, or queues the image again.
    #[serde(with = "humantime_serde")]
    pub lease_time: Duration,
}

/// Where `database.url` points, with a relative SQLite path made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    /// A `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL, as given.
    Server(String),
}

impl DatabaseConfig {
    /// What `url` names: an SQLite file (relative to `state_dir`) or a database server;
    /// `None` for anything else. Parsed here, not in `db`, so that validation can refuse a
    /// bad URL without config depending on the database layer.
    pub fn location(&self, state_dir: &Path) -> Option<DatabaseLocation> {
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return None;
            }
            let path = Path::new(path);
            return Some(DatabaseLocation::Sqlite(if path.is_absolute() {
                path.to_path_buf()
            } else {
                state_dir.join(path)
            }));
        }
        let url = url::Url::parse(&self.url).ok()?;
        let server = matches!(
            url.scheme(),
            "postgres" | "postgresql" | "mysql" | "mariadb"
        ) && url.host_str().is_some_and(|h| !h.is_empty())
            && url.path().len() > 1;
        server.then(|| DatabaseLocation::Server(self.url.clone()))
    }

    /// The URL in the form the database layer opens: an SQLite path made absolute.
    pub fn resolved_url(&self, state_dir: &Path) -> Option<String> {
        Some(match self.location(state_dir)? {
            DatabaseLocation::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseLocation::Server(url) => url,
        })
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://glint.db".into(),
            url_file: None,
            max_connections: 10,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
            lease_time: Duration::from_secs(30),
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
    /// keystone: where tokens are validated and as whom.
    pub keystone: KeystoneConfig,
    /// Overrides of Glance's default policies (oslo.policy YAML, as Glance's
    /// `policy.yaml`); a relative path is relative to the main config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    /// Glance's property protections (roles form): which roles may create, read, update
    /// and delete which custom properties; relative to the main config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_protection_file: Option<PathBuf>,
}

/// `[auth.keystone]`: Keystone v3 and glint's own service user there.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeystoneConfig {
    /// The Keystone v3 endpoint, e.g. `http://127.0.0.1:5000/v3`.
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// The longest a validated (or refused) token is believed without asking again.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The longest any one call to Keystone may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        KeystoneConfig {
            auth_url: String::new(),
            username: String::new(),
            password: String::new(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            cache_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The password never reaches a log line or `check-config`'s debug output.
impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("cache_ttl", &self.cache_ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
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
            keystone: KeystoneConfig::default(),
            policy_file: None,
            property_protection_file: None,
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
    /// Each request's X-Auth-Token validated with Keystone.
    Keystone,
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
    /// Idle keep-alive connections a stop hands to the next process through systemd's fd
    /// store, at most (0: none; they are closed as the stop ends).
    pub handover_connections: usize,
    /// Uploads (`PUT /v2/images/{id}/file` with a `Content-Length`, into a filesystem store)
    /// in flight at a stop are paused and handed to the next process with their connection,
    /// which reads the rest of the body; within `handover_connections`.
    pub handover_transfers: bool,
    /// Data transfers in (uploads, stages, copies) at once.
    pub max_transfers: usize,
    /// How long a transfer waits for a free slot before it is refused with 503.
    #[serde(with = "humantime_serde")]
    pub transfer_wait: Duration,
    /// The base URL clients reach glint at (behind a proxy): versions document,
    /// `Location`. Empty: from the request (`Host`, or forwarded headers from a proxy).
    pub public_endpoint: String,
    /// The proxies whose `X-Forwarded-*` and `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Native TLS on glint's own listeners.
    pub tls: TlsConfig,
}

/// `[server.tls]`: a certificate and key (PEM files, read again at every reload) for the
/// listeners `listeners` names, all of them when it is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The listeners that speak TLS, by name (as `glint ctl status` shows them) or address.
    pub listeners: Vec<String>,
    /// CA certificates: set, a client must present a certificate one of them signed.
    pub client_ca: Option<PathBuf>,
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
            cache: CacheConfig::default(),
            metrics: MetricsConfig::default(),
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
            handover_connections: 4096,
            handover_transfers: false,
            max_transfers: 16,
            transfer_wait: Duration::from_secs(10),
            public_endpoint: String::new(),
            trusted_proxies: Vec::new(),
            tls: TlsConfig::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{load, source_with};

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
    fn the_database_url_names_a_file_relative_to_state_dir_or_a_server() {
        let state = Path::new("/var/lib/glint");
        let at = |url: &str| {
            DatabaseConfig {
                url: url.into(),
                ..DatabaseConfig::default()
            }
            .location(state)
        };
        let sqlite = |path: PathBuf| Some(DatabaseLocation::Sqlite(path));
        let server = |url: &str| Some(DatabaseLocation::Server(url.into()));
        assert_eq!(at("sqlite://glint.db"), sqlite(state.join("glint.db")));
        assert_eq!(at("sqlite:///srv/g.db"), sqlite(PathBuf::from("/srv/g.db")));
        assert_eq!(at("sqlite://"), None);
        let pg = "postgres://glint:pw@db.example:5432/glint";
        assert_eq!(at(pg), server(pg));
        assert_eq!(at("postgresql://db/glint"), server("postgresql://db/glint"));
        assert_eq!(
            at("mysql://u:p@10.0.0.5/glance"),
            server("mysql://u:p@10.0.0.5/glance")
        );
        assert_eq!(at("postgres://db.example"), None, "no database named");
        assert_eq!(at("oracle://db/glint"), None);
        assert_eq!(at("glint.db"), None);
    }
}
