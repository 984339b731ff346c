//! The command line of design §7 (`serve`, `check-config`, `ctl status|reload`,
//! `db version|upgrade`, `--version`): argument types only, no behaviour.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "glint",
    version,
    about = "OpenStack Image API v2 service, native to systemd"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Config file (default: /etc/glint/glint.toml if present, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config; print the effective values and where each came from.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Talk to a running glint over its control socket.
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
        /// Control socket (default: $RUNTIME_DIRECTORY/control.sock, /run/glint/control.sock,
        /// else control.sock in the configured state_dir).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Config used to find the state_dir when no socket is given.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The metadata database's schema (migrations run at every start as well).
    Db {
        #[command(subcommand)]
        action: DbAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DbAction {
    /// Print which migrations are applied and which are pending.
    Version,
    /// Apply the pending migrations (for operators who run them before starting glint).
    Upgrade,
    /// Copy the whole catalogue from one database to another (SQLite, PostgreSQL,
    /// MariaDB/MySQL, either way), verified table by table before it is committed. Stop
    /// glint on every node first.
    Copy {
        /// The database copied: sqlite://PATH, postgres://… or mysql://…
        #[arg(long)]
        from: String,
        /// The database written; it must hold no images or tasks.
        #[arg(long)]
        to: String,
        /// Replace whatever catalogue the target holds.
        #[arg(long)]
        replace_target: bool,
    },
    /// Load metadata definition files in Glance's format (a *.json file, or a directory of
    /// them, e.g. /etc/glance/metadefs): new namespaces are created; one the database holds
    /// already is skipped unless --merge.
    LoadMetadefs {
        /// A definition file or a directory of them.
        path: PathBuf,
        /// Add to existing namespaces what they lack, changing nothing they have.
        #[arg(long)]
        merge: bool,
        /// With --merge: also replace what they have with the file's.
        #[arg(long)]
        prefer_new: bool,
        /// With --merge: replace existing namespaces and everything they hold.
        #[arg(long)]
        overwrite: bool,
    },
    /// Write every metadata definition namespace to DIR, one file each, in the format
    /// load-metadefs reads.
    ExportMetadefs {
        /// The directory written (made if need be).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum CtlAction {
    /// Generations, in-flight work, config source and the last reload outcome (JSON).
    Status,
    /// Reload synchronously: exit 0 when applied, 1 with the reason when rejected.
    Reload,
}
