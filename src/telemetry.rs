//! Logging: tracing to journald (native fields such as GENERATION and REQUEST_ID), to
//! stderr as text, or as JSON lines; the level is reloadable, the sink is chosen at start.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;
use crate::server::supervisor::LogLevel;

type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.format = \"journald\" but the journal is not reachable: {0}")]
    Journald(std::io::Error),
    #[error("log.level: {0}")]
    Level(String),
    #[error("cannot install the logger: {0}")]
    Install(String),
}

pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogLevel for LogHandle {
    fn set_level(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// `auto` means journald when stderr is the journal, text otherwise.
pub fn init(
    format: LogFormat,
    level: &str,
    stderr_is_journal: bool,
) -> Result<LogHandle, TelemetryError> {
    let filter = EnvFilter::try_new(level).map_err(|e| TelemetryError::Level(e.to_string()))?;
    let (filter, handle) = reload::Layer::new(filter);
    let sink: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Journald => journald()?,
        LogFormat::Auto if stderr_is_journal => journald()?,
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Auto | LogFormat::Text => tracing_subscriber::fmt::layer()
            // Colours for a terminal only: a file or a pipe would get escape codes (and
            // writing them was a tenth of a /versions request).
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(sink)
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(LogHandle { filter: handle })
}

fn journald() -> Result<Box<dyn Layer<Filtered> + Send + Sync>, TelemetryError> {
    let layer = tracing_journald::layer()
        .map_err(TelemetryError::Journald)?
        .with_field_prefix(None)
        .with_syslog_identifier("glint".into());
    Ok(layer.boxed())
}
