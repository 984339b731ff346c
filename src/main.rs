//! Composition root: CLI → (passed sockets) → config → telemetry → control socket and
//! signals → `server::run` → `ExitCode`. The only place that touches argv, the
//! environment, signals and systemd.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;

use glint::cli::{Cli, Command, CtlAction, DbAction};
use glint::config::{self, ConfigSource};
use glint::control::{self, Reply};
use glint::server::status::ReloadOutcome;
use glint::server::{self, RunArgs};
use glint::{signals, systemd, telemetry};

const DEFAULT_CONFIG: &str = "/etc/glint/glint.toml";
/// Where the packaged unit's RuntimeDirectory= puts the control socket.
const PACKAGED_CONTROL_SOCKET: &str = "/run/glint/control.sock";
/// sysexits' EX_CONFIG: the config is wrong, restarting will not help.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Ctl {
            action,
            socket,
            config,
        } => ctl(action, socket, config),
        Command::Db { action, config } => db(action, config),
    }
}

/// `glint db version|upgrade` against the configured database; `glint db copy` between two
/// named ones.
fn db(action: DbAction, config_arg: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("glint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = if let DbAction::Copy {
        from,
        to,
        replace_target,
    } = &action
    {
        runtime.block_on(glint::dbctl::copy(from, to, *replace_target))
    } else {
        let settings = match config::load(&config_source(config_arg))
            .map_err(|e| e.to_string())
            .and_then(|loaded| {
                glint::app::database_settings(&loaded.config).map_err(|e| e.to_string())
            }) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("glint: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        };
        runtime.block_on(async {
            match action {
                DbAction::Upgrade => glint::dbctl::upgrade(&settings)
                    .await
                    .map_err(|e| e.to_string()),
                DbAction::LoadMetadefs {
                    path,
                    merge,
                    prefer_new,
                    overwrite,
                } => {
                    glint::dbctl::load_metadefs(&settings, &path, merge, prefer_new, overwrite)
                        .await
                }
                DbAction::ExportMetadefs { dir } => {
                    glint::dbctl::export_metadefs(&settings, &dir).await
                }
                _ => glint::dbctl::version(&settings)
                    .await
                    .map_err(|e| e.to_string()),
            }
        })
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glint: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_source(explicit: Option<PathBuf>) -> ConfigSource {
    let state_dir = std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            std::env::split_paths(&dirs)
                .next()
                .filter(|d| !d.as_os_str().is_empty())
        })
        .unwrap_or_else(|| PathBuf::from("glint-data"));
    ConfigSource::resolve(explicit, Path::new(DEFAULT_CONFIG), state_dir)
}

fn runtime_control_socket() -> Option<PathBuf> {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .map(|dir| dir.join("control.sock"))
}

fn serve(config_arg: Option<PathBuf>) -> ExitCode {
    // SAFETY: no other thread exists yet.
    let (passed, parked) = match unsafe { systemd::take_passed() } {
        Ok(passed) => passed,
        Err(e) => {
            eprintln!("glint: socket activation: {e}");
            return ExitCode::FAILURE;
        }
    };
    raise_fd_limit();
    let source = config_source(config_arg);
    let loaded = match config::load(&source) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("glint: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log_level = match telemetry::init(
        loaded.config.log.format,
        &loaded.config.log.level,
        systemd::stderr_is_journal(),
    ) {
        Ok(handle) => Arc::new(handle),
        Err(e) => {
            eprintln!("glint: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let control_path =
        runtime_control_socket().unwrap_or_else(|| loaded.config.state_dir.join("control.sock"));
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                let (events, controls) = mpsc::channel(64);
                signals::forward(events.clone()).context("cannot install signal handlers")?;
                std::fs::create_dir_all(&loaded.config.state_dir).with_context(|| {
                    format!("cannot create {}", loaded.config.state_dir.display())
                })?;
                let control = control::bind(&control_path)?;
                tokio::spawn(control::serve(control, events));
                server::run(RunArgs {
                    source,
                    config: loaded,
                    passed,
                    parked,
                    supervisor: Arc::new(systemd::Systemd),
                    log_level,
                    controls,
                    watchdog: systemd::watchdog(),
                })
                .await?;
                Ok(())
            })
        });
    let _ = std::fs::remove_file(&control_path);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("glint: {e:#}");
            // A config the listeners contradict (noauth beyond loopback) is a config error:
            // restarting will not help.
            let config_error = matches!(
                e.downcast_ref::<server::ServerError>(),
                Some(server::ServerError::Config(_))
            );
            if config_error {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn check_config(config_arg: Option<PathBuf>) -> ExitCode {
    match config::load(&config_source(config_arg)) {
        Ok(loaded) => {
            if loaded.files.is_empty() {
                println!("# no config file: built-in defaults and GLINT_ variables");
            }
            for file in &loaded.files {
                println!("# read {}", file.display());
            }
            for (key, value, origin) in loaded.provenance() {
                println!("{key} = {value}    # {origin}");
            }
            match glint::app::load_policy(&loaded.config) {
                Ok(policy) => {
                    println!(
                        "# policy: Glance's defaults{}",
                        match &loaded.config.auth.policy_file {
                            Some(file) => format!(", overridden by {}", file.display()),
                            None => String::new(),
                        }
                    );
                    for (rule, check) in policy.effective() {
                        println!("policy.{rule} = {check:?}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("glint: {e}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Err(e) => {
            eprintln!("glint: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn ctl(action: CtlAction, socket: Option<PathBuf>, config_arg: Option<PathBuf>) -> ExitCode {
    let path = socket
        .or_else(runtime_control_socket)
        .or_else(|| {
            let packaged = PathBuf::from(PACKAGED_CONTROL_SOCKET);
            packaged.exists().then_some(packaged)
        })
        .or_else(|| {
            config::load(&config_source(config_arg))
                .ok()
                .map(|loaded| loaded.config.state_dir.join("control.sock"))
        });
    let Some(path) = path else {
        eprintln!("glint: cannot find the control socket; pass --socket");
        return ExitCode::from(2);
    };
    let request = match action {
        CtlAction::Status => control::Request::Status,
        CtlAction::Reload => control::Request::Reload,
    };
    match control::request(&path, &request) {
        Ok(Reply::Status(status)) => match serde_json::to_string_pretty(&status) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("glint: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Reply::Reload(outcome)) => {
            println!("{}", outcome.status_line());
            match outcome {
                ReloadOutcome::Applied { .. } => ExitCode::SUCCESS,
                ReloadOutcome::Rejected { .. } => ExitCode::FAILURE,
            }
        }
        Ok(Reply::Error { message }) => {
            eprintln!("glint: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("glint: {e}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft file descriptor limit to the hard one (best effort): the default
/// `server.max_connections` is a share of it, and the soft limit is often a legacy 1024.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}
