//! The lifecycle with fakes in place of systemd and logging: reload coalescing, outcomes as
//! values, rollback of a rejected reload.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::status::ReloadOutcome;
use super::supervisor::{LogLevel, Notice, Supervisor};
use super::{Control, RunArgs, run};
use crate::config::{self, ConfigSource};

#[derive(Default)]
struct Recorder {
    notices: Mutex<Vec<Notice>>,
    levels: Mutex<Vec<String>>,
}

impl Supervisor for Recorder {
    fn notify(&self, notices: &[Notice]) {
        self.notices.lock().unwrap().extend_from_slice(notices);
    }
    fn fd_store_capacity(&self) -> Option<usize> {
        None
    }
    fn store_fd(&self, _: &str, _: BorrowedFd<'_>) -> std::io::Result<()> {
        Ok(())
    }
    fn remove_fd(&self, _: &str) {}
}

impl LogLevel for Recorder {
    fn set_level(&self, directive: &str) -> Result<(), String> {
        self.levels.lock().unwrap().push(directive.to_string());
        Ok(())
    }
}

struct Running {
    dir: tempfile::TempDir,
    events: mpsc::Sender<Control>,
    recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<Result<(), super::ServerError>>,
}

const CONFIG: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n";

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("glint.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let source = ConfigSource::resolve(Some(file.clone()), &file, dir.path().join("state"));
    let loaded = config::load(&source).unwrap();
    let recorder = Arc::new(Recorder::default());
    let (events, controls) = mpsc::channel(16);
    let task = tokio::spawn(run(RunArgs {
        source,
        config: loaded,
        passed: Vec::new(),
        parked: Vec::new(),
        supervisor: recorder.clone(),
        log_level: recorder.clone(),
        controls,
        watchdog: None,
    }));
    let running = Running {
        dir,
        events,
        recorder,
        task,
    };
    // A status answer means start-up is over and the event loop runs.
    let (tx, rx) = oneshot::channel();
    running.events.send(Control::Status(tx)).await.unwrap();
    rx.await.unwrap();
    running
}

impl Running {
    fn count(&self, wanted: &Notice) -> usize {
        let notices = self.recorder.notices.lock().unwrap();
        notices.iter().filter(|n| *n == wanted).count()
    }

    async fn stop(mut self) {
        self.events.send(Control::Stop).await.unwrap();
        (&mut self.task).await.unwrap().unwrap();
        assert_eq!(self.count(&Notice::Stopping), 1);
    }
}

#[tokio::test]
async fn queued_reloads_coalesce_into_one_more() {
    let running = start().await;
    assert_eq!(running.count(&Notice::Ready), 1);
    let mut replies = Vec::new();
    for _ in 0..5 {
        let (tx, rx) = oneshot::channel();
        running
            .events
            .send(Control::Reload(Some(tx)))
            .await
            .unwrap();
        replies.push(rx);
    }
    let mut generations = Vec::new();
    for reply in replies {
        match reply.await.unwrap() {
            ReloadOutcome::Applied { generation, .. } => generations.push(generation),
            rejected => panic!("{rejected:?}"),
        }
    }
    assert_eq!(generations, vec![2, 3, 3, 3, 3]);
    assert_eq!(running.count(&Notice::Reloading), 2);
    assert_eq!(running.count(&Notice::Ready), 3);
    assert_eq!(running.recorder.levels.lock().unwrap().len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn a_rejected_reload_is_reported_and_changes_nothing() {
    let running = start().await;
    std::fs::write(
        running.dir.path().join("glint.toml"),
        "[log]\nlevel = \"=\"\n",
    )
    .unwrap();
    let (tx, rx) = oneshot::channel();
    running
        .events
        .send(Control::Reload(Some(tx)))
        .await
        .unwrap();
    let reason = match rx.await.unwrap() {
        ReloadOutcome::Rejected { reason } => reason,
        applied => panic!("{applied:?}"),
    };
    assert!(reason.contains("log.level"), "{reason}");
    assert_eq!(running.count(&Notice::Errno(22)), 1);
    assert_eq!(
        running.count(&Notice::Status(format!("reload failed: {reason}"))),
        1
    );
    assert!(running.recorder.levels.lock().unwrap().is_empty());

    let (tx, rx) = oneshot::channel();
    running.events.send(Control::Status(tx)).await.unwrap();
    let status = rx.await.unwrap();
    assert_eq!(status.current.id, 1);
    assert_eq!(status.reloads_rejected, 1);
    running.stop().await;
}
