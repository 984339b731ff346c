//! glint: an OpenStack Image API v2 service native to systemd. The library holds every
//! layer; `main.rs` only wires them.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod dbctl;
pub mod domain;
pub mod http_client;
pub mod inspect;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod service;
pub mod signals;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod transform;

/// An error with its causes, on one line (sqlx and reqwest keep the reason in the source).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Many errors already show their cause in their own text.
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// `url` with its password, if any, replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => match parsed.set_password(Some("***")) {
            Ok(()) => parsed.to_string(),
            Err(()) => "(a URL with a password)".into(),
        },
        _ => url.to_string(),
    }
}
