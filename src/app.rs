//! One generation's application: everything built from one config that serves requests —
//! the metadata database, the catalogue over it, the router and its middleware. It knows
//! nothing of listeners, pools or reload.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use tower::ServiceExt;

use crate::api;
use crate::config::Config;
use crate::db::{self, Database, DbError};
use crate::service::Catalog;
use crate::store::{DataDir, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("state_dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database.url: {0}")]
    DatabaseUrl(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "store.datadirs: {} still holds {count} image(s); keep it in the config (mark it \
         read_only = true to stop new data going there)",
        path.display()
    )]
    DirInUse { path: PathBuf, count: i64 },
}

pub struct App {
    router: Router,
    database: Database,
    store: Store,
}

impl App {
    /// Builds a generation's application. The database pool of `previous` is reused when
    /// the database settings did not change; otherwise a new pool opens (and the old one
    /// goes with the old generation once it has drained).
    pub async fn build(
        config: &Config,
        generation: u64,
        previous: Option<&App>,
    ) -> Result<App, AppError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AppError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let path = db::sqlite_path(&config.database.url, &config.state_dir)
            .ok_or_else(|| AppError::DatabaseUrl(config.database.url.clone()))?;
        let database = match previous {
            Some(app) if app.database.path() == path => app.database.clone(),
            _ => {
                let readers = u32::try_from(config.server.workers.max(4)).unwrap_or(4);
                Database::open(&path, readers).await?
            }
        };
        let dirs = config
            .store
            .datadirs
            .iter()
            .map(|d| DataDir {
                path: config.state_dir.join(&d.path),
                priority: d.priority,
                read_only: d.read_only,
            })
            .collect();
        let store = Store::open(dirs, &config.images.hash_algo)?;
        match previous {
            Some(app) => {
                for old in app.store.dirs() {
                    if store.dirs().iter().any(|d| d.path == old.path) {
                        continue;
                    }
                    let count = database.images_in(&old.path).await?;
                    if count > 0 {
                        return Err(AppError::DirInUse {
                            path: old.path.clone(),
                            count,
                        });
                    }
                }
            }
            None => {
                // The first generation of a process cleans up after a crash: uploads cut
                // by it left temporary files and images in `saving`.
                let removed = store.remove_orphans();
                let requeued = database
                    .requeue_interrupted(crate::domain::time::now())
                    .await?;
                if removed > 0 || requeued > 0 {
                    tracing::warn!(
                        removed,
                        requeued,
                        "cleaned up uploads a previous process left unfinished"
                    );
                }
            }
        }
        let context = api::ApiContext {
            generation,
            catalog: Catalog::new(
                database.clone(),
                store.clone(),
                config.images.size_cap.as_u64(),
                config.images.user_storage_quota.as_u64(),
            ),
            auth: Arc::new(config.auth.clone()),
        };
        Ok(App {
            router: api::router(context),
            database,
            store,
        })
    }

    pub async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        api::negotiate_version(&mut request);
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
