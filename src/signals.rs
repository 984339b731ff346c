//! Turns SIGHUP, SIGTERM and SIGINT into `Control` events; nothing else handles signals.

use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::server::Control;

/// Installs the handlers now (so a SIGHUP after READY never takes the default action) and
/// forwards them from a task of the current runtime.
pub fn forward(events: mpsc::Sender<Control>) -> io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                Some(()) = hangup.recv() => Control::Reload(None),
                Some(()) = terminate.recv() => Control::Stop,
                Some(()) = interrupt.recv() => Control::Stop,
                else => return,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
