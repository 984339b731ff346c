//! One generation's application: everything built from one config that serves requests
//! (today the router and its middleware; the metadata pool, image stores and background
//! executor join it here). It knows nothing of listeners, pools or reload.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use tower::ServiceExt;

use crate::api;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("state_dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct App {
    router: Router,
}

impl App {
    pub fn build(config: &Config, generation: u64) -> Result<App, AppError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AppError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        Ok(App {
            router: api::router(api::ApiContext { generation }),
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
