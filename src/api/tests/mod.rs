//! Handler tests on the router without a socket: a generation's `App` over a SQLite file in
//! a temporary state dir, driven with `oneshot`-style requests as several projects.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::config::{AuthMode, Config};

struct Api {
    app: App,
    _dir: tempfile::TempDir,
}

/// Who sends a request: a project (with roles) through trusted headers, or nobody.
#[derive(Clone, Copy)]
enum As {
    /// A member (and reader) of the project, as a Keystone token lists its roles.
    Project(&'static str),
    /// A reader of the project only.
    Reader(&'static str),
    Admin,
    Anonymous,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

async fn api() -> Api {
    api_with(|_| {}).await
}

async fn api_with(adjust: impl FnOnce(&mut Config)) -> Api {
    // A failing test shows the errors the service logged (a 500's cause).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        state_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.auth.mode = AuthMode::TrustedHeaders;
    if let Some(url) = crate::db::testing::fresh_database().await.unwrap() {
        config.database.url = url;
    }
    adjust(&mut config);
    let app = App::build(&config, 1, None, &[]).await.unwrap();
    Api { app, _dir: dir }
}

impl Api {
    async fn call(&self, who: As, method: &str, uri: &str, body: Option<(&str, Value)>) -> Reply {
        self.call_with(who, method, uri, &[], body).await
    }

    /// `call` with more headers.
    async fn call_with(
        &self,
        who: As,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Value)>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "glint.test:9292")
            .header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match who {
            As::Project(p) => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", p)
                    .header("x-roles", "member,reader");
            }
            As::Reader(p) => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", p)
                    .header("x-roles", "reader");
            }
            As::Admin => {
                request = request
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", "admin-project")
                    .header("x-roles", "admin");
            }
            As::Anonymous => {}
        }
        let request = match body {
            Some((content_type, value)) => {
                let text = value.to_string();
                request
                    .header("content-type", content_type)
                    .header("content-length", text.len())
                    .body(Body::from(text))
            }
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.handle(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    async fn create(&self, who: As, body: Value) -> Value {
        let reply = self
            .call(who, "POST", "/v2/images", Some(("application/json", body)))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body
    }

    async fn status(&self, who: As, method: &str, uri: &str) -> StatusCode {
        self.call(who, method, uri, None).await.status
    }

    async fn create_id(&self, who: As, body: Value) -> String {
        self.create(who, body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn patch(&self, who: As, id: &str, ops: Value) -> Reply {
        self.call(
            who,
            "PATCH",
            &format!("/v2/images/{id}"),
            Some(("application/openstack-images-v2.1-json-patch", ops)),
        )
        .await
    }

    async fn list_ids(&self, who: As, query: &str) -> Vec<String> {
        let reply = self
            .call(who, "GET", &format!("/v2/images{query}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Api {
    /// A confirmed identity of project p with no role at all.
    async fn raw_as_bare(&self, method: &str, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "p")
            .body(Body::empty())
            .unwrap();
        self.app.handle(request).await.status()
    }

    async fn raw(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", "p")
            .header("x-roles", "member,reader")
            .header("accept", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .app
            .handle(request.body(Body::from(body)).unwrap())
            .await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn data_files(&self) -> Vec<String> {
        std::fs::read_dir(self._dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

mod authz;
mod catalogue;
mod data;
mod metadefs;
