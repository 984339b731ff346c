//! One generation's application: everything built from one config that serves requests —
//! the metadata database, the stores, the catalogue over both with its background task
//! executor, the router and its middleware. It knows nothing of listeners, pools or reload.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use http::{Request, Response};
use tower::ServiceExt;

use crate::api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Keystone};
use crate::cache::{CacheSettings, ImageCache};
use crate::config::{
    AuthMode, Config, ImportMethod, ImportPlugin, NamedStoreConfig, S3_DEFAULT_PART_SIZE,
    S3_DEFAULT_PARTS_IN_FLIGHT, S3_DEFAULT_REGION, StoreKind,
};
use crate::db::{self, Database, DbError};
use crate::policy::protections::{PropertyProtections, ProtectionsError};
use crate::policy::{Policy, PolicyError};
use crate::service::handover::PausedUpload;
use crate::service::{
    Catalog, CatalogParts, FormatRules, ImportSettings, LimitSource, TaskBoard, WebDownload,
};
use crate::store::{Backend, DataDir, ObjectSpec, StoreError, StoreSpec, Stores};
use crate::transform::{Limits, QemuImg, Step};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("state_dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache.dir {}: {source}", path.display())]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database.url: {0}")]
    DatabaseUrl(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("auth.keystone: {0}")]
    Auth(#[from] AuthError),
    #[error("auth.policy_file {}: {source}", path.display())]
    PolicyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth.policy_file {0}")]
    Policy(#[from] PolicyError),
    #[error("auth.property_protection_file {}: {source}", path.display())]
    ProtectionsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth.property_protection_file {0}")]
    Protections(#[from] ProtectionsError),
    #[error("cannot start the task runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a blocking task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "store.datadirs: {} still holds {count} image(s); keep it in the config (mark it \
         read_only = true to stop new data going there)",
        path.display()
    )]
    DirInUse { path: PathBuf, count: i64 },
    #[error(
        "stores.{store}: the store still holds {count} image(s); keep it in the config (mark \
         its directories read_only = true to stop new data going there)"
    )]
    StoreInUse { store: String, count: i64 },
    #[error(
        "stores.{store}: the store still holds {count} image(s) in its {was}; its type and \
         bucket stay as long as it holds any (add a new store instead)"
    )]
    StoreMoved {
        store: String,
        was: String,
        count: i64,
    },
}

pub struct App {
    service: api::ApiService,
    database: Database,
    stores: Stores,
    catalog: Catalog,
    board: Arc<TaskBoard>,
    tracker: TaskTracker,
    cut: CancellationToken,
    max_transfers: usize,
    /// Kept by the next generation when its Keystone settings are the same, with its
    /// cache of validated tokens and its service token.
    keystone: Option<Arc<Keystone>>,
}

impl App {
    /// Builds a generation's application. The database pool of `previous` is reused when
    /// the database settings did not change; otherwise a new pool opens (and the old one
    /// goes with the old generation once it has drained).
    pub async fn build(
        config: &Config,
        generation: u64,
        previous: Option<&App>,
        handed_over: &[PausedUpload],
    ) -> Result<App, AppError> {
        let state_dir = config.state_dir.clone();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(state_dir))
            .await?
            .map_err(|source| AppError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        let settings = database_settings(config)?;
        let database = match previous {
            // A reload while the database is down is refused: the running generation
            // keeps serving, and says why.
            Some(app) if *app.database.settings() == settings => {
                app.database.ping().await?;
                app.database.clone()
            }
            _ => Database::open(&settings).await?,
        };
        let default = config.default_store();
        let specs = config
            .named_stores()
            .into_iter()
            .map(|(id, store)| store_spec(&config.state_dir, id, store))
            .collect();
        // Creating directories is file I/O: off the async threads.
        let staging = config.state_dir.join("staging");
        let hash_algo = config.images.hash_algo.clone();
        // This node's id (its temporary files are named by it): the process's, or read
        // (made, the first time) from the state directory.
        let node = match previous {
            Some(app) => app.board.node().to_string(),
            None => {
                let state_dir = config.state_dir.clone();
                tokio::task::spawn_blocking(move || crate::service::node_id(&state_dir))
                    .await?
                    .map_err(|source| AppError::StateDir {
                        path: config.state_dir.join("node-id"),
                        source,
                    })?
            }
        };
        let board = match previous {
            Some(app) => app.board.clone(),
            None => TaskBoard::new(node.clone(), config.server.max_transfers)
                .map_err(AppError::Runtime)?,
        };
        let stores = Stores::open(
            specs,
            &default,
            staging,
            config.state_dir.join("multipart"),
            &hash_algo,
            &node,
            board.runtime().clone(),
        )
        .await?;
        if let Some(app) = previous {
            refuse_dropping_data(&app.stores, &stores, &database).await?;
        }
        // The same directory keeps the same cache (its entries and fills in flight); its
        // limits are applied once this generation serves.
        let cache = match config.cache.enabled {
            true => {
                let settings = CacheSettings {
                    dir: config.state_dir.join(&config.cache.dir),
                    max_size: config.cache.max_size.as_u64(),
                    stall_time: config.cache.stall_time,
                };
                let runtime = board.runtime().clone();
                let path = settings.dir.clone();
                Some(
                    tokio::task::spawn_blocking(move || ImageCache::shared(&settings, runtime))
                        .await?
                        .map_err(|source| AppError::CacheDir { path, source })?,
                )
            }
            false => None,
        };
        let tracker = TaskTracker::new();
        let cut = CancellationToken::new();
        let keystone = match (
            config.auth.mode,
            previous.and_then(|app| app.keystone.clone()),
        ) {
            (AuthMode::Keystone, Some(kept)) if kept.built_from(&config.auth.keystone) => {
                Some(kept)
            }
            (AuthMode::Keystone, _) => Some(Arc::new(Keystone::new(&config.auth.keystone)?)),
            _ => None,
        };
        let limits: Option<Arc<dyn LimitSource>> = match &keystone {
            Some(keystone) if config.images.use_keystone_limits => {
                Some(Arc::new(KeystoneLimits(keystone.clone())))
            }
            _ => None,
        };
        let catalog = Catalog::new(CatalogParts {
            db: database.clone(),
            stores: stores.clone(),
            size_cap: config.images.size_cap.as_u64(),
            storage_quota: config.images.user_storage_quota.as_u64(),
            import: ImportSettings {
                methods: {
                    let mut methods: Vec<ImportMethod> = config.import.methods.clone();
                    methods.sort();
                    methods.dedup();
                    methods
                },
                web: WebDownload::new(config.import.web_download.clone()),
                inject: config
                    .import
                    .plugins
                    .contains(&ImportPlugin::InjectMetadata)
                    .then(|| crate::service::Inject {
                        properties: config
                            .import
                            .inject_metadata
                            .properties
                            .clone()
                            .into_iter()
                            .collect(),
                        ignore_user_roles: config.import.inject_metadata.ignore_user_roles.clone(),
                    }),
                steps: transform_steps(config),
                work_dir: config.state_dir.join("work"),
            },
            transfer_wait: config.server.transfer_wait,
            limits,
            show_locations: config.images.show_multiple_locations,
            format_rules: FormatRules {
                require_match: config.images.require_format_match,
                vmdk_allowed_types: config.images.vmdk_allowed_types.clone(),
                gpt_nonfatal: config.images.gpt_safety_checks_nonfatal.clone(),
            },
            formats: crate::domain::image::Formats {
                disk: config.images.disk_formats.clone(),
                container: config.images.container_formats.clone(),
            },
            lease: config.database.lease_time,
            quotas: crate::domain::image::Quotas {
                properties: config.images.image_property_quota,
                tags: config.images.image_tag_quota,
                members: config.images.image_member_quota,
                locations: config.images.image_location_quota,
            },
            // Read at every start and reload: a file that does not parse fails the reload,
            // and the running policy stays.
            policy: Arc::new({
                let config = config.clone();
                tokio::task::spawn_blocking(move || load_policy(&config)).await??
            }),
            protections: {
                let config = config.clone();
                tokio::task::spawn_blocking(move || load_protections(&config))
                    .await??
                    .map(Arc::new)
            },
            cache,
            cache_limits: (config.cache.max_size.as_u64(), config.cache.stall_time),
            board: board.clone(),
            tracker: tracker.clone(),
            cut: cut.clone(),
        });
        if previous.is_none() {
            // The first generation of a process cleans up after a crash: uploads cut by
            // it left temporary files and images in `saving`, stages cut part-way images
            // in `uploading` without their data (a completed stage keeps both). Its
            // unfinished tasks are taken up once the generation is live (`activate`). Uploads
            // the previous process handed over keep their image and temporary file.
            let keep_files: Vec<_> = handed_over.iter().map(|u| u.temp.clone()).collect();
            let keep_images: Vec<_> = handed_over.iter().map(|u| u.image_id.clone()).collect();
            let removed = {
                let stores = stores.clone();
                tokio::task::spawn_blocking(move || stores.remove_orphans(&keep_files)).await?
            } + stores.abort_interrupted_uploads().await;
            let requeued = database
                .requeue_interrupted(Some(board.node()), &keep_images, crate::domain::time::now())
                .await?;
            catalog.recover().await?;
            if removed > 0 || requeued > 0 {
                tracing::warn!(
                    removed,
                    requeued,
                    "cleaned up uploads a previous process left unfinished"
                );
            }
        }
        let context = api::ApiContext {
            generation,
            catalog: catalog.clone(),
            auth: Arc::new(config.auth.clone()),
            keystone: keystone.clone(),
            show: api::wire::Show {
                direct_url: config.images.show_image_direct_url,
                locations: config.images.show_multiple_locations,
            },
            proxy: Arc::new(api::forwarded::ProxySettings {
                public_endpoint: config.server.public_endpoint.clone(),
                trusted_proxies: config.server.trusted_proxies.clone(),
            }),
        };
        Ok(App {
            service: api::service(context),
            database,
            stores,
            catalog,
            board,
            tracker,
            cut,
            max_transfers: config.server.max_transfers,
            keystone,
        })
    }

    /// Every request and background task of this generation holds a token of it.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the generation's drain deadline cuts its remaining work.
    pub fn cut(&self) -> &CancellationToken {
        &self.cut
    }

    /// Called once the generation is published: tasks are handed on to it from now, and
    /// it takes up the tasks no generation runs (after a start, those left unfinished).
    pub async fn activate(&self) {
        self.board.transfers.set_limit(self.max_transfers);
        self.catalog.activate().await;
    }

    /// A stop: every running task ends at its checkpoint, to be resumed by the next start.
    pub fn stop_tasks(&self) {
        self.board.stop();
    }

    /// This node's id among the nodes sharing the database.
    pub fn node(&self) -> &str {
        self.board.node()
    }

    /// The database this generation uses, its password hidden.
    pub fn database_shown(&self) -> String {
        self.database.settings().shown()
    }

    /// What the metrics read of this generation at a scrape: data transfers (in use,
    /// limit), its database's pools, and its filesystem stores' free space.
    pub fn gauges(&self) -> AppGauges {
        AppGauges {
            transfers_in_flight: self.board.transfers.in_use(),
            transfers_limit: self.max_transfers,
            pools: self.database.pool_stats(),
            store_free_bytes: self
                .stores
                .all()
                .iter()
                .filter_map(|store| Some((store.id.clone(), store.free_bytes()?)))
                .collect(),
        }
    }

    /// Background tasks running now, in every generation of the process.
    pub fn running_tasks(&self) -> usize {
        self.board.running_count()
    }

    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        match self.service.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A generation's part of a metrics scrape.
pub struct AppGauges {
    pub transfers_in_flight: usize,
    pub transfers_limit: usize,
    pub pools: crate::db::PoolStats,
    pub store_free_bytes: Vec<(String, u64)>,
}

/// Keystone's limits API as the catalogue's source of unified limits.
struct KeystoneLimits(Arc<Keystone>);

impl LimitSource for KeystoneLimits {
    fn limits<'a>(
        &'a self,
        project: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        std::result::Result<std::collections::HashMap<String, i64>, String>,
    > {
        Box::pin(async move {
            self.0
                .limits(project)
                .await
                .map(|limits| (*limits).clone())
                .map_err(|e| e.to_string())
        })
    }
}

/// Glance's default policies with `auth.policy_file`'s overrides (reads the file: call it
/// off the async threads, as `App::build` does).
pub fn load_policy(config: &Config) -> Result<Policy, AppError> {
    let Some(path) = &config.auth.policy_file else {
        return Ok(Policy::glance_defaults());
    };
    let text = std::fs::read_to_string(path).map_err(|source| AppError::PolicyFile {
        path: path.clone(),
        source,
    })?;
    Ok(Policy::with_overrides(&text, path)?)
}

/// `auth.property_protection_file`, if set (reads the file: call it off the async threads).
pub fn load_protections(config: &Config) -> Result<Option<PropertyProtections>, AppError> {
    let Some(path) = &config.auth.property_protection_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| AppError::ProtectionsFile {
        path: path.clone(),
        source,
    })?;
    Ok(Some(PropertyProtections::parse(&text, path)?))
}

/// How to reach the configured database, as the database layer takes it.
pub fn database_settings(config: &Config) -> Result<db::Settings, AppError> {
    let url = config
        .database
        .resolved_url(&config.state_dir)
        .ok_or_else(|| AppError::DatabaseUrl(crate::redact_url(&config.database.url)))?;
    Ok(db::Settings {
        url,
        max_connections: config.database.max_connections,
        connect_timeout: config.database.connect_timeout,
        statement_timeout: config.database.statement_timeout,
    })
}

/// What the store `id` of the config is to the store layer.
fn store_spec(state_dir: &std::path::Path, id: String, store: NamedStoreConfig) -> StoreSpec {
    let backend = match store.kind {
        StoreKind::Filesystem => Backend::Files(
            store
                .datadirs
                .iter()
                .map(|d| DataDir {
                    path: state_dir.join(&d.path),
                    priority: d.priority,
                    read_only: d.read_only,
                })
                .collect(),
        ),
        StoreKind::S3 => Backend::Objects(ObjectSpec {
            endpoint: store.endpoint,
            region: store
                .region
                .unwrap_or_else(|| S3_DEFAULT_REGION.to_string()),
            bucket: store.bucket.unwrap_or_default(),
            prefix: store.prefix.unwrap_or_default(),
            access_key_id: store.access_key_id.unwrap_or_default(),
            secret_access_key: store.secret_access_key.map(|s| s.0).unwrap_or_default(),
            path_style: store.path_style.unwrap_or(false),
            part_size: store.part_size.unwrap_or(S3_DEFAULT_PART_SIZE).as_u64(),
            parts_in_flight: store.parts_in_flight.unwrap_or(S3_DEFAULT_PARTS_IN_FLIGHT),
            optional: store.optional,
        }),
    };
    StoreSpec {
        id,
        description: store.description,
        backend,
    }
}

/// A reload may not drop a store, or a directory of one, that still holds image data.
async fn refuse_dropping_data(
    old: &Stores,
    new: &Stores,
    database: &Database,
) -> Result<(), AppError> {
    for store in old.all() {
        let moved = new.get(&store.id).is_ok_and(|kept| {
            kept.kind_name() != store.kind_name()
                || kept.object_spec().map(|s| &s.bucket) != store.object_spec().map(|s| &s.bucket)
        });
        if moved {
            let count = database.images_in_store(&store.id).await?;
            if count > 0 {
                return Err(AppError::StoreMoved {
                    store: store.id.clone(),
                    was: match store.object_spec() {
                        Some(spec) => format!("bucket {}", spec.bucket),
                        None => "directories".to_string(),
                    },
                    count,
                });
            }
        }
        if new.get(&store.id).is_err() {
            let count = database.images_in_store(&store.id).await?;
            if count > 0 {
                return Err(AppError::StoreInUse {
                    store: store.id.clone(),
                    count,
                });
            }
        }
        for dir in store.dirs() {
            let kept = new
                .all()
                .iter()
                .flat_map(|s| s.dirs())
                .any(|d| d.path == dir.path);
            if kept {
                continue;
            }
            let count = database.images_in(&dir.path).await?;
            if count > 0 {
                return Err(AppError::DirInUse {
                    path: dir.path.clone(),
                    count,
                });
            }
        }
    }
    Ok(())
}

/// The import plugins that change the bytes, in `import.plugins`' order.
fn transform_steps(config: &Config) -> Vec<Step> {
    let convert = &config.import.convert;
    config
        .import
        .plugins
        .iter()
        .filter_map(|plugin| match plugin {
            ImportPlugin::InjectMetadata => None,
            ImportPlugin::Decompress => Some(Step::Decompress),
            ImportPlugin::Convert => Some(Step::Convert(QemuImg {
                program: convert.qemu_img.clone(),
                output_format: convert.output_format.clone(),
                limits: Limits {
                    cpu_time: convert.cpu_time,
                    address_space: convert.address_space.as_u64(),
                },
                vmdk_allowed_types: config.images.vmdk_allowed_types.clone(),
                gpt_nonfatal: config.images.gpt_safety_checks_nonfatal.clone(),
            })),
        })
        .collect()
}
