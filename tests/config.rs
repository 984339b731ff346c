//! Property tests of the config loader (`glint::config::load`) on TOML files it is handed:
//! any valid config written out is read back exactly, and no text (near-valid configs with
//! wrong keys, types and values, broken syntax, bytes that are not UTF-8) makes it panic or
//! fail without saying where: the file, when it cannot be read or parsed; the key, when a
//! value is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use glint::config::{
    AuthConfig, AuthMode, CacheConfig, Config, ConfigError, ConfigSource, ConvertConfig,
    DataDirConfig, DatabaseConfig, ImagesConfig, ImportConfig, ImportMethod, ImportPlugin,
    InjectMetadataConfig, KeystoneConfig, LogConfig, LogFormat, MetricsConfig, NamedStoreConfig,
    ServerConfig, StoreConfig, WebDownloadConfig, load,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;

/// Each case writes and reads a file; fewer cases than the pure parsers keep it quick.
const CASES: u32 = 128;

/// `load` on `text` as the one config file (no conf.d), in a directory of its own.
fn load_text(text: &[u8]) -> (PathBuf, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("glint.toml");
    std::fs::write(&file, text).expect("write config");
    let source = ConfigSource {
        file: Some(file.clone()),
        explicit: true,
        conf_dir: None,
        default_state_dir: dir.path().join("state"),
    };
    (file, load(&source).map(|loaded| loaded.config))
}

fn named(file: &Path) -> String {
    file.display().to_string()
}

/// Durations the keys accept (whole seconds up to a year, some with milliseconds), which
/// humantime writes back exactly.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1..=365 * 24 * 3600u64).prop_map(Duration::from_secs),
        (1..100_000u64).prop_map(Duration::from_millis),
    ]
}

/// Sizes bytesize writes back exactly: under 1000 of one unit.
fn size() -> impl Strategy<Value = ByteSize> {
    (0..1000u64, 0..5u32).prop_map(|(n, power)| ByteSize::b(n * 1024u64.pow(power)))
}

fn address() -> impl Strategy<Value = SocketAddr> {
    let v4 = (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from);
    let v6 = (any::<[u16; 8]>(), any::<u16>()).prop_map(SocketAddr::from);
    prop_oneof![v4, v6]
}

fn server() -> impl Strategy<Value = ServerConfig> {
    (
        vec(address(), 1..3),
        1..=1024usize,
        (duration(), duration(), duration(), duration(), duration()),
        1..64usize,
        (
            proptest::option::of(1..100_000usize),
            0..=5000usize,
            any::<bool>(),
        ),
        1..256usize,
    )
        .prop_map(
            |(
                listen,
                workers,
                timeouts,
                max_draining_generations,
                (max_connections, handover_connections, handover_transfers),
                max_transfers,
            )| {
                let (drain, shutdown, header, body, wait) = timeouts;
                ServerConfig {
                    listen,
                    workers,
                    drain_timeout: drain,
                    shutdown_timeout: shutdown,
                    max_draining_generations,
                    header_read_timeout: header,
                    body_read_timeout: body,
                    max_connections,
                    handover_connections,
                    handover_transfers,
                    max_transfers,
                    transfer_wait: wait,
                    public_endpoint: String::new(),
                    trusted_proxies: Vec::new(),
                    tls: Default::default(),
                }
            },
        )
}

fn log() -> impl Strategy<Value = LogConfig> {
    (
        proptest::sample::select(vec!["info", "debug", "warn,glint=trace", "error", "off"]),
        proptest::sample::select(vec![
            LogFormat::Auto,
            LogFormat::Journald,
            LogFormat::Text,
            LogFormat::Json,
        ]),
    )
        .prop_map(|(level, format)| LogConfig {
            level: level.into(),
            format,
        })
}

fn auth() -> impl Strategy<Value = AuthConfig> {
    (
        prop_oneof![
            Just(AuthMode::Noauth),
            Just(AuthMode::TrustedHeaders),
            Just(AuthMode::Keystone)
        ],
        ".{0,10}",
        any::<bool>(),
        vec(
            proptest::sample::select(vec![
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "192.0.2.0/24",
                "2001:db8::/32",
            ]),
            0..4,
        ),
    )
        .prop_map(|(mode, project, allow_remote_noauth, proxies)| AuthConfig {
            mode,
            project,
            allow_remote_noauth,
            trusted_proxies: proxies
                .into_iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
            keystone: KeystoneConfig {
                auth_url: "http://127.0.0.1:5000/v3".into(),
                username: "glance".into(),
                password: "glance-secret".into(),
                ..KeystoneConfig::default()
            },
            policy_file: None,
            property_protection_file: None,
        })
}

/// Directories with distinct paths; the first is writable, so a store has somewhere to
/// put new data.
fn datadirs(prefix: &'static str) -> impl Strategy<Value = Vec<DataDirConfig>> {
    vec((any::<i64>(), any::<bool>()), 1..3).prop_map(move |dirs| {
        dirs.into_iter()
            .enumerate()
            .map(|(i, (priority, read_only))| DataDirConfig {
                path: PathBuf::from(format!("{prefix}{i}")),
                priority,
                read_only: read_only && i > 0,
            })
            .collect()
    })
}

/// Either the one unnamed store or named stores, exactly one of them the default.
fn stores() -> impl Strategy<Value = (StoreConfig, BTreeMap<String, NamedStoreConfig>)> {
    let unnamed =
        datadirs("images").prop_map(|datadirs| (StoreConfig { datadirs }, BTreeMap::new()));
    let named = (
        btree_map(
            "[a-z][a-z0-9_-]{0,8}",
            (datadirs(""), proptest::option::of(".{0,12}")),
            1..4,
        ),
        any::<Index>(),
    )
        .prop_map(|(stores, default)| {
            let chosen = default.index(stores.len());
            let stores = stores
                .into_iter()
                .enumerate()
                .map(|(i, (id, (mut datadirs, description)))| {
                    for dir in &mut datadirs {
                        dir.path = Path::new(&id).join(&dir.path);
                    }
                    let store = NamedStoreConfig {
                        default: i == chosen,
                        description,
                        ..NamedStoreConfig::filesystem(datadirs)
                    };
                    (id, store)
                })
                .collect();
            (StoreConfig::default(), stores)
        });
    prop_oneof![unnamed, named]
}

fn images() -> impl Strategy<Value = ImagesConfig> {
    (
        size(),
        proptest::sample::select(vec!["sha512", "sha384", "sha256"]),
        size(),
        (1..1000usize, 1..1000usize, 1..1000usize, 1..100usize),
    )
        .prop_map(
            |(size_cap, hash_algo, user_storage_quota, (properties, tags, members, locations))| {
                ImagesConfig {
                    size_cap,
                    hash_algo: hash_algo.into(),
                    user_storage_quota,
                    image_property_quota: properties,
                    image_tag_quota: tags,
                    image_member_quota: members,
                    image_location_quota: locations,
                    show_image_direct_url: properties % 2 == 0,
                    show_multiple_locations: tags % 2 == 0,
                    use_keystone_limits: false,
                    require_format_match: members % 2 == 0,
                    ..ImagesConfig::default()
                }
            },
        )
}

fn import() -> impl Strategy<Value = ImportConfig> {
    (
        proptest::sample::subsequence(ImportMethod::ALL.to_vec(), 1..=3),
        (
            vec("[a-z]{1,6}", 0..3),
            vec("[a-z]{1,6}", 0..3),
            vec("[a-z0-9.]{1,10}", 0..3),
            vec("[a-z0-9.]{1,10}", 0..3),
            vec(any::<u16>(), 0..3),
            vec(any::<u16>(), 0..3),
        ),
        duration(),
        duration(),
        0..20usize,
    )
        .prop_map(
            |(methods, lists, connect_timeout, read_timeout, max_redirects)| {
                let (
                    allowed_schemes,
                    disallowed_schemes,
                    allowed_hosts,
                    disallowed_hosts,
                    allowed_ports,
                    disallowed_ports,
                ) = lists;
                ImportConfig {
                    methods,
                    web_download: WebDownloadConfig {
                        allowed_schemes,
                        disallowed_schemes,
                        allowed_hosts,
                        disallowed_hosts,
                        allowed_ports,
                        disallowed_ports,
                        connect_timeout,
                        read_timeout,
                        max_redirects,
                    },
                    plugins: if max_redirects % 2 == 0 {
                        vec![ImportPlugin::InjectMetadata, ImportPlugin::Decompress]
                    } else {
                        Vec::new()
                    },
                    // `convert` is left off: loading resolves its qemu_img in PATH.
                    convert: ConvertConfig {
                        output_format: "qcow2".into(),
                        cpu_time: read_timeout,
                        ..ConvertConfig::default()
                    },
                    inject_metadata: InjectMetadataConfig {
                        properties: [("hw_qemu_guest_agent".to_string(), "yes".to_string())].into(),
                        ..InjectMetadataConfig::default()
                    },
                }
            },
        )
}

/// Any config `load` must accept.
fn valid_config() -> impl Strategy<Value = Config> {
    (
        prop_oneof!["[a-z]{1,8}", "/[a-z]{1,8}/[a-z]{1,8}"],
        server(),
        log(),
        "[a-z]{1,8}(\\.db)?",
        auth(),
        stores(),
        images(),
        import(),
    )
        .prop_map(
            |(state_dir, server, log, db, auth, (store, stores), images, import)| Config {
                state_dir: PathBuf::from(state_dir),
                server,
                log,
                database: DatabaseConfig {
                    url: format!("sqlite://{db}"),
                    ..DatabaseConfig::default()
                },
                auth,
                store,
                stores,
                cache: CacheConfig {
                    enabled: db.len() % 2 == 0,
                    dir: PathBuf::from(format!("cache-{db}")),
                    max_size: ByteSize::b(images.size_cap.as_u64().max(1)),
                    ..CacheConfig::default()
                },
                // Port 0: never an API listener's port, whatever those are.
                metrics: MetricsConfig {
                    listen: (db.len() % 2 == 1).then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                },
                images,
                import,
            },
        )
}

/// Values of every TOML type, including ones that are right for some key and wrong for
/// most: durations, sizes, addresses, levels, modes, urls.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value;
    let text = proptest::sample::select(vec![
        "0s",
        "1s",
        "1m 30s",
        "soon",
        "400 days",
        "99999999999999y",
        "1 GiB",
        "-1 KiB",
        "x",
        "",
        "127.0.0.1:9292",
        "[::1]:0",
        "0.0.0.0:80",
        "nope:1",
        "info",
        "=x=",
        "glint[{a=1}]=debug",
        "noauth",
        "trusted-headers",
        "json",
        "journald",
        "sqlite://",
        "sqlite://x.db",
        "postgres://x",
        "sha1",
        "glance-direct",
        "os_glance_x",
        "ünï",
    ])
    .prop_map(|s| Value::String(s.into()));
    let leaf = prop_oneof![
        4 => text,
        2 => prop_oneof![
            Just(0i64), Just(-1), Just(1), Just(1025), Just(i64::MAX), Just(i64::MIN),
        ]
        .prop_map(Value::Integer),
        1 => any::<i64>().prop_map(Value::Integer),
        1 => prop_oneof![Just(1.5f64), Just(f64::NAN), Just(-0.0)].prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => ".{0,8}".prop_map(Value::String),
        1 => Just("1979-05-27T07:32:00Z".parse().map(Value::Datetime).expect("a TOML datetime")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Every key path of `table` that does not go through an array.
fn key_paths(table: &toml::Table, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for (key, value) in table {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        if let toml::Value::Table(inner) = value {
            key_paths(inner, &path, out);
        }
        out.push(path);
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(table.get(first)?, |value, key| value.as_table()?.get(key))
}

/// Sets `path` to `value`, making tables on the way (a non-table there is replaced).
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let slot = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !slot.is_table() {
                *slot = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = slot {
                set(inner, rest, value);
            }
        }
    }
}

fn remove(table: &mut toml::Table, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            table.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = table.get_mut(first) {
                remove(inner, rest);
            }
        }
    }
}

/// One change to a valid config: a key set to another value (an existing key, or a new
/// name beside existing ones), a key set to an edge value of its own type (what reaches
/// the checks after parsing), or a key removed.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, Option<String>, toml::Value),
    Edge(Index, Index),
    Remove(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), proptest::option::weighted(0.2, "[a-z_]{1,10}"), toml_value())
            .prop_map(|(at, new, value)| Edit::Set(at, new, value)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, which)| Edit::Edge(at, which)),
        1 => any::<Index>().prop_map(Edit::Remove),
    ]
}

/// A value of `like`'s type at the edge of, or just past, what its key accepts.
fn edge(like: &toml::Value, which: &Index) -> toml::Value {
    use toml::Value;
    let pick = |values: Vec<Value>| values[which.index(values.len())].clone();
    match like {
        Value::Integer(_) => pick(
            [0, -1, 1024, 1025, i64::MAX]
                .into_iter()
                .map(Value::Integer)
                .collect(),
        ),
        Value::String(_) => pick(
            [
                "",
                "0s",
                "366 days",
                "=x=",
                "sqlite://",
                "sha1",
                "os_glance_x",
                "0 B",
            ]
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect(),
        ),
        Value::Boolean(b) => Value::Boolean(!b),
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Table(_) => Value::Table(toml::Table::new()),
        other => other.clone(),
    }
}

/// A change to the text: cut at a point, bytes put in, a line repeated.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(Index),
    Insert(Index, String),
    RepeatLine(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (
            any::<Index>(),
            prop_oneof![".{1,4}", "[\\[\\]=\"'\n{},.#]{1,3}"]
        )
            .prop_map(|(at, text)| Damage::Insert(at, text)),
        any::<Index>().prop_map(Damage::RepeatLine),
    ]
}

fn damaged(mut text: String, damage: &[Damage]) -> String {
    let boundary = |text: &str, at: &Index| {
        let mut i = at.index(text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    for d in damage {
        match d {
            Damage::Truncate(at) => text.truncate(boundary(&text, at)),
            Damage::Insert(at, inserted) => text.insert_str(boundary(&text, at), inserted),
            Damage::RepeatLine(at) => {
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[at.index(lines.len())].to_string();
                    text = format!("{text}\n{line}\n");
                }
            }
        }
    }
    text
}

/// A config near a valid one: keys changed or removed, then, sometimes, the text damaged.
fn near_valid_text() -> impl Strategy<Value = String> {
    (
        valid_config(),
        vec(edit(), 0..4),
        proptest::option::weighted(0.3, vec(damage(), 1..3)),
    )
        .prop_map(|(config, edits, damage)| {
            let text = toml::to_string(&config).expect("a config serialises");
            let mut table: toml::Table = toml::from_str(&text).expect("and reads back");
            for edit in edits {
                let mut paths = Vec::new();
                key_paths(&table, &[], &mut paths);
                match edit {
                    Edit::Set(at, new, value) => {
                        let mut path = if paths.is_empty() {
                            Vec::new()
                        } else {
                            paths[at.index(paths.len())].clone()
                        };
                        if let Some(new) = new {
                            path.pop();
                            path.push(new);
                        }
                        set(&mut table, &path, value);
                    }
                    Edit::Edge(at, which) if !paths.is_empty() => {
                        let path = paths[at.index(paths.len())].clone();
                        let value = lookup(&table, &path).map(|like| edge(like, &which));
                        if let Some(value) = value {
                            set(&mut table, &path, value);
                        }
                    }
                    Edit::Remove(at) if !paths.is_empty() => {
                        remove(&mut table, &paths[at.index(paths.len())]);
                    }
                    Edit::Edge(..) | Edit::Remove(_) => {}
                }
            }
            let text = toml::to_string(&table).expect("a table serialises");
            match damage {
                Some(damage) => damaged(text, &damage),
                None => text,
            }
        })
}

/// What every refusal must say: the file, when it could not be read or parsed; the key,
/// when its content was refused.
fn check_refusal(file: &Path, error: &ConfigError) -> Result<(), TestCaseError> {
    match error {
        ConfigError::Unreadable { .. } => {
            prop_assert!(error.to_string().contains(&named(file)), "{}", error);
        }
        ConfigError::Invalid { origin, message } if message.starts_with("TOML syntax") => {
            prop_assert_eq!(origin, &named(file));
        }
        ConfigError::Invalid { message, .. } | ConfigError::Rejected(message) => {
            prop_assert!(message.contains("key `"), "no key named: {}", message);
        }
        other => prop_assert!(false, "not a refusal of the file's content: {}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn a_valid_config_written_out_is_read_back_exactly(config in valid_config()) {
        let text = toml::to_string(&config).expect("a config serialises");
        let (file, loaded) = load_text(text.as_bytes());
        match loaded {
            Ok(loaded) => prop_assert_eq!(loaded, config, "from:\n{}", text),
            Err(e) => prop_assert!(false, "{} refused:\n{}\n{}", named(&file), e, text),
        }
    }

    #[test]
    fn a_near_valid_config_loads_or_is_refused_saying_where(text in near_valid_text()) {
        let (file, loaded) = load_text(text.as_bytes());
        if let Err(e) = loaded {
            check_refusal(&file, &e)?;
        }
    }

    #[test]
    fn any_bytes_load_or_are_refused_saying_where(bytes in vec(any::<u8>(), 0..64)) {
        let (file, loaded) = load_text(&bytes);
        if let Err(e) = loaded {
            check_refusal(&file, &e)?;
        }
    }
}
