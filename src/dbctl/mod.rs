//! `glint db …`: the database commands an operator runs by hand — where the schema stands
//! (`version`), applying migrations ahead of a start (`upgrade`), copying a catalogue to
//! another database (`copy`), loading and exporting metadata definition files (`metadefs`) —
//! and what they print. The work is `db`'s.

mod metadefs;

use std::path::Path;
use std::time::Duration;

use crate::config::DatabaseConfig;
use crate::db::{self, DbError, Settings};

/// `glint db version`: applied and pending migrations.
pub async fn version(settings: &Settings) -> Result<(), DbError> {
    let shown = settings.shown();
    let state = db::schema_state(settings).await?;
    let pending = state.pending();
    println!(
        "database {shown}: {} of {} migrations applied",
        state.applied.len(),
        state.known.len()
    );
    for (version, description) in &pending {
        println!("pending: {version} {description}");
    }
    if pending.is_empty() {
        println!("up to date");
    }
    Ok(())
}

/// The directory of an SQLite database, made if need be (a command run before glint ever
/// started makes the file).
fn sqlite_dir(settings: &Settings) -> Result<(), DbError> {
    if let Some(dir) = settings
        .sqlite_path()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    {
        std::fs::create_dir_all(&dir).map_err(|e| DbError::Open {
            url: settings.shown(),
            reason: format!("{}: {e}", dir.display()),
        })?;
    }
    Ok(())
}

/// `glint db upgrade`: the pending migrations, applied (an SQLite file's directory is
/// made if needed).
pub async fn upgrade(settings: &Settings) -> Result<(), DbError> {
    sqlite_dir(settings)?;
    let applied = db::upgrade(settings).await?;
    for version in &applied {
        println!("applied: {version}");
    }
    println!(
        "database {}: up to date ({} applied now)",
        settings.shown(),
        applied.len()
    );
    Ok(())
}

/// `glint db copy --from URL --to URL`: both brought up to date, every table copied in one
/// transaction on the target and verified before it commits.
pub async fn copy(from: &str, to: &str, replace_target: bool) -> Result<(), String> {
    let settings = |url: &str| {
        let defaults = DatabaseConfig::default();
        Settings {
            url: url.to_string(),
            max_connections: 2,
            connect_timeout: defaults.connect_timeout,
            // A batch of a large catalogue may take a while to read or write.
            statement_timeout: Duration::from_secs(600),
        }
    };
    let (from, to) = (settings(from), settings(to));
    for end in [&from, &to] {
        if db::Engine::of(&end.url).is_none() {
            return Err(format!(
                "{}: not a sqlite://PATH, postgres://… or mysql://… URL",
                end.shown()
            ));
        }
    }
    if let Some(path) = from.sqlite_path() {
        if !path.exists() {
            return Err(format!("{}: no such database", from.shown()));
        }
    }
    let source = db::Database::open(&from).await.map_err(|e| e.to_string())?;
    let target = db::Database::open(&to).await.map_err(|e| e.to_string())?;
    let copied = db::copy(&source, &target, replace_target)
        .await
        .map_err(|e| e.to_string());
    source.close().await;
    target.close().await;
    let copied = copied?;
    println!("copied {} -> {}", from.shown(), to.shown());
    for table in &copied {
        println!(
            "  {:<17} {:>9} rows  sha256 {}",
            table.table, table.rows, table.checksum
        );
    }
    println!("verified: the target's row count and checksum of every table equal the source's");
    Ok(())
}

/// `glint db load-metadefs PATH`: Glance's definition files read into the database (with
/// `--merge`, `--prefer-new` or `--overwrite` for namespaces it holds already); fails when a
/// file could not be loaded, after loading the others.
pub async fn load_metadefs(
    settings: &Settings,
    path: &Path,
    merge: bool,
    prefer_new: bool,
    overwrite: bool,
) -> Result<(), String> {
    let mode = match (merge, prefer_new, overwrite) {
        (_, true, true) => {
            return Err("--prefer-new and --overwrite: give at most one of them".into());
        }
        (false, true, _) | (false, _, true) => {
            return Err("--prefer-new and --overwrite apply to a --merge; add --merge".into());
        }
        (true, true, false) => db::LoadMode::PreferNew,
        (true, false, true) => db::LoadMode::Overwrite,
        (true, false, false) => db::LoadMode::Merge,
        (false, false, false) => db::LoadMode::Skip,
    };
    sqlite_dir(settings).map_err(|e| e.to_string())?;
    let database = db::Database::open(settings)
        .await
        .map_err(|e| e.to_string())?;
    let report = metadefs::load(&database, path, mode).await;
    database.close().await;
    let report = report?;
    for line in &report.lines {
        println!("{line}");
    }
    if report.failed > 0 {
        return Err(format!(
            "{} of {} definition files not loaded",
            report.failed,
            report.lines.len()
        ));
    }
    Ok(())
}

/// `glint db export-metadefs DIR`: every namespace written out as a definition file.
pub async fn export_metadefs(settings: &Settings, dir: &Path) -> Result<(), String> {
    sqlite_dir(settings).map_err(|e| e.to_string())?;
    let database = db::Database::open(settings)
        .await
        .map_err(|e| e.to_string())?;
    let written = metadefs::export(&database, dir).await;
    database.close().await;
    let written = written?;
    for path in &written {
        println!("{}", path.display());
    }
    println!("{} namespaces written to {}", written.len(), dir.display());
    Ok(())
}
