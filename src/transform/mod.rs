//! The import plugins that change an image's bytes before an import stores them:
//! `decompress` (gzip, zstd, xz, bzip2, bounded by the size cap) and `convert` (`qemu-img
//! convert` as a confined child process). Each step reads one local file and writes the next
//! into the import's own work directory, so a step cut by a stop or a crash is simply run
//! again from the staged data. Whether the result is taken is not decided here: the import
//! judges it like any data as it copies it into its stores. Imports nothing of the crate
//! but `inspect`.

mod decompress;
mod qemu;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use qemu::QemuImg;

/// One step, in the order `import.plugins` lists them.
#[derive(Debug, Clone)]
pub enum Step {
    Decompress,
    Convert(QemuImg),
}

/// Data an import works on: a local file and the formats its image declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub path: PathBuf,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    /// What the inspector found in the file, when that is known already (a stage keeps it).
    pub inspection: Option<crate::inspect::Inspection>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The data is not fit for the step (Glance's words where it has them).
    #[error("{0}")]
    Refused(String),
    #[error("Image exceeds the size cap of {cap} bytes once decompressed")]
    TooLarge { cap: u64 },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("qemu-img failed: {0}")]
    Qemu(String),
    /// The import was dropped (a stop, a drain deadline) while a step ran.
    #[error("the step was cut short")]
    Cancelled,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> TransformError {
    let what = what.into();
    move |source| TransformError::Io { what, source }
}

/// Runs `steps` over `data`, each writing into `work` (made empty first); returns the data
/// the last step left, which is `data` itself when no step changed it. Dropping the future
/// stops the step under way (a `qemu-img` child is killed).
pub async fn run(
    steps: &[Step],
    data: Data,
    work: &Path,
    size_cap: u64,
) -> Result<Data, TransformError> {
    clear(work).await?;
    let mut current = data;
    for (n, step) in steps.iter().enumerate() {
        let output = work.join(format!("step-{n}"));
        let next = match step {
            Step::Decompress => {
                let (input, cancel) = (current.clone(), CancellationToken::new());
                // Dropping this future stops the blocking thread at its next chunk.
                let _stop = cancel.clone().drop_guard();
                tokio::task::spawn_blocking(move || {
                    decompress::run(&input, &output, size_cap, &cancel)
                })
                .await
                .map_err(|e| io_error("decompression")(io::Error::other(e)))??
            }
            Step::Convert(qemu) => qemu.convert(&current, &output, work).await?,
        };
        if let Some(next) = next {
            current = next;
        }
    }
    Ok(current)
}

/// Empties (or makes) `work`.
pub async fn clear(work: &Path) -> Result<(), TransformError> {
    remove(work).await?;
    tokio::fs::create_dir_all(work)
        .await
        .map_err(io_error(format!("creating {}", work.display())))
}

/// Removes `work` and what it holds, if it is there.
pub async fn remove(work: &Path) -> Result<(), TransformError> {
    match tokio::fs::remove_dir_all(work).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", work.display()))(e))
        }
        _ => Ok(()),
    }
}

/// How long `qemu-img` may run at most, and what it may map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_time: Duration,
    pub address_space: u64,
}
