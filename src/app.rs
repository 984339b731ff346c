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
}

pub struct App {
    router: Router,
    database: Database,
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
        let context = api::ApiContext {
            generation,
            catalog: Catalog::new(database.clone()),
            auth: Arc::new(config.auth.clone()),
        };
        Ok(App {
            router: api::router(context),
            database,
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
