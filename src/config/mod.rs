//! The configuration: what it looks like (`types`, the `[import]` table in `import`), how
//! its layers are read and stacked (`load`), and what it must satisfy (`validate`), with the
//! one error type all three report in. Callers see a flat `crate::config::…`; the files below are how it is kept, not
//! part of its interface. Config is plain data: it imports nothing else of the crate (what
//! another layer needs parsed out of a value, such as `database.url`, is parsed here) and
//! performs no side effect beyond reading its files.

mod import;
mod load;
mod types;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use load::{ConfigSource, LoadedConfig, load};
pub use types::{
    AuthConfig, AuthMode, CacheConfig, Config, ConvertConfig, DataDirConfig, DatabaseConfig,
    DatabaseLocation, ImagesConfig, ImportConfig, ImportMethod, ImportPlugin, InjectMetadataConfig,
    KeystoneConfig, LEGACY_STORE, LogConfig, LogFormat, MetricsConfig, NamedStoreConfig,
    S3_DEFAULT_PART_SIZE, S3_DEFAULT_PARTS_IN_FLIGHT, S3_DEFAULT_REGION, Secret, ServerConfig,
    StoreConfig, StoreKind, TlsConfig, WebDownloadConfig,
};
pub use validate::{check_exposure, check_reloadable};

/// Every way a config is refused, at load or at reload. One type for `load` and
/// `validate` because callers (`check-config`, a reload's `STATUS=`) report them alike.
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
