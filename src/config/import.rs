//! The `[import]` table as plain data: the import methods offered, what web-download may
//! fetch, and the import plugins with their settings, each with Glance's defaults. Judging
//! the values is `validate`'s, as for every table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// The interoperable import methods offered (`/v2/info/import`).
    pub methods: Vec<ImportMethod>,
    pub web_download: WebDownloadConfig,
    /// Import plugins run by every import, in this order (Glance's `image_import_plugins`).
    pub plugins: Vec<ImportPlugin>,
    pub inject_metadata: InjectMetadataConfig,
    pub convert: ConvertConfig,
}

/// An import plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportPlugin {
    /// Adds `import.inject_metadata.properties` to images imported by callers without any of
    /// `ignore_user_roles` (Glance's `inject_image_metadata`).
    InjectMetadata,
    /// Decompresses gzip, zstd, xz and bzip2 data before it is stored, unless the image's
    /// `container_format` is `compressed` (Glance's `image_decompression`).
    Decompress,
    /// Converts the data to `import.convert.output_format` with `qemu-img convert`
    /// (Glance's `image_conversion`).
    Convert,
}

/// The `convert` import plugin: what it makes, and the limits `qemu-img` runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvertConfig {
    /// `raw`, `qcow2` or `vmdk` (Glance's `image_conversion.output_format`).
    pub output_format: String,
    /// The `qemu-img` to run: a path, or a name looked up in `PATH`.
    pub qemu_img: PathBuf,
    /// CPU time one `qemu-img` run may use (`RLIMIT_CPU`).
    #[serde(with = "humantime_serde")]
    pub cpu_time: Duration,
    /// Address space one `qemu-img` run may map (`RLIMIT_AS`).
    pub address_space: bytesize::ByteSize,
}

impl Default for ConvertConfig {
    fn default() -> Self {
        ConvertConfig {
            output_format: "raw".into(),
            qemu_img: PathBuf::from("qemu-img"),
            cpu_time: Duration::from_secs(600),
            address_space: bytesize::ByteSize::gib(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectMetadataConfig {
    pub properties: BTreeMap<String, String>,
    /// Callers with any of these roles import without the injected properties.
    pub ignore_user_roles: Vec<String>,
}

impl Default for InjectMetadataConfig {
    fn default() -> Self {
        InjectMetadataConfig {
            properties: BTreeMap::new(),
            ignore_user_roles: vec!["admin".into()],
        }
    }
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
            plugins: Vec::new(),
            inject_metadata: InjectMetadataConfig::default(),
            convert: ConvertConfig::default(),
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
