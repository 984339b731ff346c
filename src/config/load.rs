//! Where the config comes from and how its layers stack: `ConfigSource` (which files),
//! `load` (defaults < main file < `conf.d/*.toml` in name order < `GLINT_` environment; a
//! main file named explicitly must exist), and `LoadedConfig`, which keeps the layers so
//! every key can name the file it came from (`provenance`, and the origin in each error).
//! Reading the files is the one side effect of the config module and it happens here; what
//! a value must satisfy is `validate`'s business, what it looks like is `types`'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Metadata};

use super::ConfigError;
use super::types::{Config, ImportPlugin, NamedStoreConfig, Secret, StoreConfig};
use super::validate::validate;

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
                    .origin(&key)
                    .unwrap_or_else(|| "built-in default".to_string());
                // check-config's output ends up in terminals, tickets and logs.
                let secret =
                    SECRET_KEYS.contains(&key.as_str()) || key.ends_with(".secret_access_key");
                let value = if secret && value != "\"\"" {
                    "\"<hidden>\"".to_string()
                } else if key == "database.url" {
                    // The password in it, wherever it came from.
                    let url = serde_json::from_str::<String>(&value).unwrap_or_default();
                    serde_json::Value::from(crate::redact_url(&url)).to_string()
                } else {
                    value
                };
                (key, value, origin)
            })
            .collect()
    }

    /// The file (or other layer) that set `key`; `None` when no layer has it.
    pub(super) fn origin(&self, key: &str) -> Option<String> {
        self.figment.find_metadata(key).map(describe)
    }
}

/// Keys whose values are never shown.
const SECRET_KEYS: &[&str] = &["auth.keystone.password"];

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

    check_tables(&figment)?;
    let mut config: Config = figment.extract().map_err(|e| figment_error(&e))?;
    // Files the config names beside it are found beside it, wherever glint was started.
    if let Some(dir) = source.file.as_deref().and_then(Path::parent) {
        let auth = &mut config.auth;
        let tls = &mut config.server.tls;
        for file in [
            &mut auth.policy_file,
            &mut auth.property_protection_file,
            &mut config.database.url_file,
            &mut tls.cert,
            &mut tls.key,
            &mut tls.client_ca,
        ]
        .into_iter()
        .chain(
            config
                .stores
                .values_mut()
                .map(|store| &mut store.secret_access_key_file),
        )
        .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
    let mut loaded = LoadedConfig {
        config,
        files,
        figment,
    };
    read_url_file(&mut loaded)?;
    read_secret_files(&mut loaded)?;
    find_qemu_img(&mut loaded)?;
    validate(&loaded)?;
    Ok(loaded)
}

/// `database.url_file`: the URL (with its password) kept out of the config, one line.
fn read_url_file(loaded: &mut LoadedConfig) -> Result<(), ConfigError> {
    let Some(path) = loaded.config.database.url_file.clone() else {
        return Ok(());
    };
    let refuse = |message: String| ConfigError::Invalid {
        origin: loaded
            .origin("database.url_file")
            .unwrap_or_else(|| "built-in default".into()),
        message: format!("key `database.url_file`: {message}"),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
    let url = text.trim();
    if url.is_empty() || url.lines().count() != 1 {
        return Err(refuse(format!(
            "{} must hold the database URL on one line",
            path.display()
        )));
    }
    loaded.config.database.url = url.to_string();
    Ok(())
}

/// `import.convert.qemu_img`, when the `convert` plugin is on: the executable itself, found
/// in `PATH` when only a name is given, so a missing `qemu-img` fails the start or reload
/// rather than every import.
fn find_qemu_img(loaded: &mut LoadedConfig) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    if !loaded
        .config
        .import
        .plugins
        .contains(&ImportPlugin::Convert)
    {
        return Ok(());
    }
    let named = loaded.config.import.convert.qemu_img.clone();
    let candidates: Vec<PathBuf> = if named.components().count() > 1 {
        vec![named.clone()]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(&named))
                    .collect()
            })
            .unwrap_or_default()
    };
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let Some(found) = candidates.into_iter().find(|path| executable(path)) else {
        return Err(ConfigError::Invalid {
            origin: loaded
                .origin("import.convert.qemu_img")
                .unwrap_or_else(|| "built-in default".into()),
            message: format!(
                "key `import.convert.qemu_img`: {} is not an executable file (nor found in PATH); \
                 the convert plugin needs qemu-img (Debian: qemu-utils)",
                named.display()
            ),
        });
    };
    loaded.config.import.convert.qemu_img = found;
    Ok(())
}

/// `stores.<id>.secret_access_key_file`: an S3 secret key kept out of the config, one line.
fn read_secret_files(loaded: &mut LoadedConfig) -> Result<(), ConfigError> {
    let mut read = Vec::new();
    for (id, store) in &loaded.config.stores {
        let Some(path) = &store.secret_access_key_file else {
            continue;
        };
        let key = format!("stores.{id}.secret_access_key_file");
        let refuse = |message: String| ConfigError::Invalid {
            origin: loaded
                .origin(&key)
                .unwrap_or_else(|| "built-in default".into()),
            message: format!("key `{key}`: {message}"),
        };
        if store.secret_access_key.is_some() {
            return Err(refuse(
                "set either secret_access_key or secret_access_key_file, not both".into(),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        let secret = text.trim();
        if secret.is_empty() || secret.lines().count() != 1 {
            return Err(refuse(format!(
                "{} must hold the secret key on one line",
                path.display()
            )));
        }
        read.push((id.clone(), secret.to_string()));
    }
    for (id, secret) in read {
        if let Some(store) = loaded.config.stores.get_mut(&id) {
            store.secret_access_key = Some(Secret(secret));
        }
    }
    Ok(())
}

/// serde reads a struct from an array by position, so `database = ["sqlite://x.db", 1]`
/// would quietly mean `database.url`. Every table of the config must be written as one.
fn check_tables(figment: &Figment) -> Result<(), ConfigError> {
    let defaults = Value::serialize(Config::default()).map_err(|e| figment_error(&e))?;
    let store = Value::serialize(NamedStoreConfig::filesystem(
        StoreConfig::default().datadirs,
    ))
    .map_err(|e| figment_error(&e))?;
    let merged: Value = figment.extract().map_err(|e| figment_error(&e))?;
    let mut problems = Vec::new();
    same_tables("", &defaults, &merged, &store, &mut problems);
    match problems.into_iter().next() {
        None => Ok(()),
        Some(key) => Err(ConfigError::Invalid {
            origin: figment
                .find_metadata(&key)
                .map_or_else(|| "config".to_string(), describe),
            message: format!("key `{key}`: must be a table, not a list or a value"),
        }),
    }
}

/// Collects the keys where `merged` has something else than the table `template` has.
fn same_tables(path: &str, template: &Value, merged: &Value, store: &Value, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (template, merged) {
        (Value::Dict(_, expected), Value::Dict(_, found)) => {
            for (key, value) in found {
                match expected.get(key) {
                    Some(inner) => same_tables(&join(key), inner, value, store, out),
                    // `[stores.<id>]`: a map of store tables.
                    None if path == "stores" => same_tables(&join(key), store, value, store, out),
                    None => {}
                }
            }
        }
        (Value::Dict(..), _) => out.push(path.to_string()),
        (Value::Array(_, expected), Value::Array(_, found)) => {
            if let Some(element @ Value::Dict(..)) = expected.first() {
                for (i, value) in found.iter().enumerate() {
                    same_tables(&join(&i.to_string()), element, value, store, out);
                }
            }
        }
        _ => {}
    }
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

/// A source reading `glint.toml` in `dir` (written first when `main` is given) and its
/// `conf.d`, as `--config` would name it; the tests of every config file load through it.
#[cfg(test)]
pub(super) fn source_with(dir: &Path, main: Option<&str>) -> ConfigSource {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_where_a_table_belongs_is_refused_naming_key_and_file() {
        for (text, key) in [
            (
                "database = [\"sqlite://other.db\", \"ignored\"]\n",
                "database",
            ),
            ("[stores]\nfast = [[{ path = \"a\" }]]\n", "stores.fast"),
            (
                "[[store.datadirs]]\npath = \"a\"\n[import]\nweb_download = [1]\n",
                "import.web_download",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let err = load(&source_with(dir.path(), Some(text))).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("key `{key}`")),
                "{text}: {message}"
            );
            assert!(message.contains("glint.toml"), "{text}: {message}");
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
    fn the_database_url_comes_from_url_file_beside_the_config_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let url = "postgres://glint:s3cret@db.example:5432/glance";
        std::fs::write(dir.path().join("database-url"), format!("{url}\n")).unwrap();
        let loaded = load(&source_with(
            dir.path(),
            Some("[database]\nurl_file = \"database-url\"\n"),
        ))
        .unwrap();
        assert_eq!(loaded.config.database.url, url);
        let shown: Vec<_> = loaded
            .provenance()
            .into_iter()
            .filter(|(key, _, _)| key.starts_with("database.url"))
            .collect();
        assert!(
            shown.iter().all(|(_, value, _)| !value.contains("s3cret")),
            "{shown:?}"
        );

        let missing = load(&source_with(
            dir.path(),
            Some("[database]\nurl_file = \"nowhere\"\n"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("database.url_file") && missing.contains("glint.toml"),
            "{missing}"
        );
        std::fs::write(dir.path().join("database-url"), "oracle://db/glance\n").unwrap();
        let unsupported = load(&source_with(
            dir.path(),
            Some("[database]\nurl_file = \"database-url\"\n"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            unsupported.contains("database.url_file") && unsupported.contains("postgres://"),
            "{unsupported}"
        );
    }

    #[test]
    fn an_s3_secret_comes_from_its_file_beside_the_config_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3-secret"), "hunter2\n").unwrap();
        let loaded = load(&source_with(
            dir.path(),
            Some(
                "[stores.objects]\ntype = \"s3\"\nbucket = \"images\"\n\
                 access_key_id = \"glint\"\nsecret_access_key_file = \"s3-secret\"\n",
            ),
        ))
        .unwrap();
        let store = &loaded.config.stores["objects"];
        assert_eq!(store.secret_access_key.as_ref().unwrap().0, "hunter2");
        assert!(!format!("{:?}", loaded.config).contains("hunter2"));
        let shown = loaded.provenance();
        assert!(
            shown.iter().all(|(_, value, _)| !value.contains("hunter2")),
            "{shown:?}"
        );
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&source_with(dir.path(), None)).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
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
}
