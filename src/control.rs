//! The control socket: a Unix stream socket speaking one JSON line each way. The server
//! side turns requests into `Control` events; the client side is `glint ctl`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::server::Control;
use crate::server::status::{ReloadOutcome, StatusReport};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Reload,
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Reload(ReloadOutcome),
    Status(Box<StatusReport>),
    Error { message: String },
}

/// How long `glint ctl` waits for an answer: a reload builds a whole generation.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest request line accepted from a client.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another glint is serving {}", .0.display())]
    InUse(PathBuf),
    #[error("control socket {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("malformed reply from {}: {source}", path.display())]
    Reply {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Binds the socket, replacing a stale file but never a live server's socket. Owner and
/// group may use it (the packaged service runs as `glint`, operators use root or the group).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_error)?;
    Ok(listener)
}

/// Answers clients until the event channel closes.
pub async fn serve(listener: UnixListener, events: mpsc::Sender<Control>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like persist for a while: retrying at once would spin.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let events = events.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => answer(request, &events).await,
                    Err(e) => Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                },
                Err(e) => Reply::Error {
                    message: format!("cannot read request: {e}"),
                },
            };
            if let Ok(mut text) = serde_json::to_string(&reply) {
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            }
        });
    }
}

async fn answer(request: Request, events: &mpsc::Sender<Control>) -> Reply {
    let stopped = || Reply::Error {
        message: "glint is stopping".into(),
    };
    match request {
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            if events.send(Control::Reload(Some(tx))).await.is_err() {
                return stopped();
            }
            rx.await.map_or_else(|_| stopped(), Reply::Reload)
        }
        Request::Status => {
            let (tx, rx) = oneshot::channel();
            if events.send(Control::Status(tx)).await.is_err() {
                return stopped();
            }
            rx.await
                .map_or_else(|_| stopped(), |status| Reply::Status(Box::new(status)))
        }
    }
}

/// Sends one request and waits for its reply (blocking: `glint ctl` has no runtime).
pub fn request(path: &Path, request: &Request) -> Result<Reply, ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io_error)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_error)?;
    let mut line = serde_json::to_string(request).map_err(|source| ControlError::Reply {
        path: path.to_path_buf(),
        source,
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_error)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(io_error)?;
    serde_json::from_str(&reply).map_err(|source| ControlError::Reply {
        path: path.to_path_buf(),
        source,
    })
}
