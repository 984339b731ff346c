//! Databases for tests (feature `testing`): a fresh, empty database on the server the
//! environment names, so that the same tests run on SQLite, PostgreSQL and MariaDB. It
//! creates; it never drops (the test script's server is thrown away whole).

use std::str::FromStr;

use sqlx::{ConnectOptions, Connection, Executor};

use super::{DbError, Engine};

/// The variable naming the server tests run against: a `postgres://` or `mysql://` URL of
/// a user that may create schemas and databases. Unset: SQLite, in the test's directory.
pub const SERVER_VARIABLE: &str = "TEST_DATABASE_SERVER";

/// The URL of a new, empty database on the `TEST_DATABASE_SERVER` server (a schema of its
/// own on PostgreSQL, a database on MySQL), or `None` when tests run on SQLite.
pub async fn fresh_database() -> Result<Option<String>, DbError> {
    let Ok(server) = std::env::var(SERVER_VARIABLE) else {
        return Ok(None);
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let refused = |reason: String| DbError::Open {
        url: crate::redact_url(&server),
        reason,
    };
    let mut url = url::Url::parse(&server).map_err(|e| refused(e.to_string()))?;
    match Engine::of(&server) {
        Some(Engine::Postgres) => {
            let mut conn = sqlx::postgres::PgConnectOptions::from_str(&server)?
                .connect()
                .await?;
            conn.execute(format!("CREATE SCHEMA {name}").as_str())
                .await?;
            conn.close().await?;
            url.query_pairs_mut()
                .append_pair("options[search_path]", &name);
        }
        Some(Engine::MySql) => {
            let mut conn = sqlx::mysql::MySqlConnectOptions::from_str(&server)?
                .connect()
                .await?;
            conn.execute(
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                    .as_str(),
            )
            .await?;
            conn.close().await?;
            url.set_path(&name);
        }
        _ => {
            return Err(refused(format!(
                "{SERVER_VARIABLE} names no database server"
            )));
        }
    }
    Ok(Some(url.to_string()))
}
