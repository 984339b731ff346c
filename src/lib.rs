//! glint: an OpenStack Image API v2 service native to systemd. The library holds every
//! layer; `main.rs` only wires them.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod domain;
pub mod http_client;
pub mod policy;
pub mod server;
pub mod service;
pub mod signals;
pub mod store;
pub mod systemd;
pub mod telemetry;
