//! Knowing when the catalogue changed, as a `CommitMarker` that any commit of any process
//! moves: on SQLite its `data_version`, asked on a connection of its own (here); on the
//! servers the sum of `catalogue_commits`, which triggers keep (the migrations, and
//! `Database::commit_marker`). What is kept until the next commit (the list pages) is the
//! service's; this only answers the question.

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// What `Database::commit_marker` answers: equal twice only if nothing was committed
/// in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitMarker(u64, i64);

impl CommitMarker {
    /// The marker of answer `data_version` on the `connection`-th connection.
    pub(crate) fn new(connection: u64, data_version: i64) -> Self {
        CommitMarker(connection, data_version)
    }
}

/// One SQLite connection of its own, outside any pool (a pool pings a connection each time
/// it comes back, a second trip to its thread), that only asks `PRAGMA data_version`: the
/// answer changes with every commit of any other connection, of this process or another,
/// and is comparable only within one connection, hence the count of connections made.
pub(super) struct CommitProbe {
    options: SqliteConnectOptions,
    connection: tokio::sync::Mutex<(u64, Option<sqlx::SqliteConnection>)>,
}

impl std::fmt::Debug for CommitProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitProbe")
    }
}

impl CommitProbe {
    pub(super) fn new(options: SqliteConnectOptions) -> Self {
        CommitProbe {
            options,
            connection: tokio::sync::Mutex::new((0, None)),
        }
    }

    /// The marker now; `None` when the database cannot be asked (the connection is made
    /// again next time).
    pub(super) async fn marker(&self) -> Option<CommitMarker> {
        let mut guard = self.connection.lock().await;
        let (connects, connection) = &mut *guard;
        if connection.is_none() {
            *connection = Some(self.options.connect().await.ok()?);
            *connects += 1;
        }
        let asked = match connection.as_mut() {
            Some(connection) => {
                sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(connection)
                    .await
            }
            None => return None,
        };
        match asked {
            Ok(data_version) => Some(CommitMarker::new(*connects, data_version)),
            Err(e) => {
                tracing::debug!(error = %e, "data_version not answered; connecting again");
                *connection = None;
                None
            }
        }
    }
}

/// The commit marker, asked once for every reader waiting at that moment: each reader is
/// answered by a question asked after it came (so it sees every commit visible then), and one
/// question answers every reader that came before it was asked. Under load a list costs a
/// fraction of a round trip to the database instead of one.
#[derive(Debug, Default)]
pub(super) struct SharedMarker {
    rounds: std::sync::Mutex<Rounds>,
    answered: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Questions asked so far; the last one may still be out.
    asked: u64,
    out: bool,
    /// The latest answer, and which question it answered.
    answer: (u64, Option<CommitMarker>),
}

impl SharedMarker {
    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The marker as a question asked after this call began answers it: `ask` asks it,
    /// run by one of the readers waiting when none is out.
    pub(super) async fn marker<F, Fut>(&self, ask: F) -> Option<CommitMarker>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<CommitMarker>>,
    {
        let wanted = self.rounds().asked + 1;
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            // Registered before the state is read: an answer published after cannot be
            // missed.
            answered.as_mut().enable();
            let round = {
                let mut rounds = self.rounds();
                if rounds.answer.0 >= wanted {
                    return rounds.answer.1;
                }
                if rounds.out {
                    None
                } else {
                    rounds.out = true;
                    rounds.asked += 1;
                    Some(rounds.asked)
                }
            };
            let Some(round) = round else {
                answered.await;
                continue;
            };
            // Should this reader go away while its question is out, the others ask again.
            let out = Out { shared: self };
            let answer = ask().await;
            out.answer(round, answer);
            return answer;
        }
    }
}

/// A question out, on behalf of every reader waiting.
struct Out<'a> {
    shared: &'a SharedMarker,
}

impl Out<'_> {
    fn answer(self, round: u64, answer: Option<CommitMarker>) {
        self.shared.rounds().answer = (round, answer);
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.shared.rounds().out = false;
        self.shared.answered.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use super::*;

    /// Readers that come while a question is out wait for the next one, asked once for all
    /// of them, whose answer includes what was committed before they came; a reader that
    /// goes away with its question out does not leave the others waiting.
    #[tokio::test]
    async fn one_question_answers_every_reader_that_came_before_it() {
        let shared = Arc::new(SharedMarker::default());
        let commits = Arc::new(AtomicI64::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let ask = {
            let (commits, asked, gate) = (commits.clone(), asked.clone(), gate.clone());
            move || {
                let (commits, asked, mut gate) = (commits.clone(), asked.clone(), gate.clone());
                async move {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let seen = commits.load(Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    Some(CommitMarker::new(0, seen))
                }
            }
        };
        // The first reader's question is out (held at the gate); a commit lands; readers
        // who come now must not take the first answer, which predates the commit.
        let first = tokio::spawn({
            let (shared, ask) = (shared.clone(), ask.clone());
            async move { shared.marker(ask).await }
        });
        while asked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        commits.store(1, Ordering::SeqCst);
        let later: Vec<_> = (0..8)
            .map(|_| {
                let (shared, ask) = (shared.clone(), ask.clone());
                tokio::spawn(async move { shared.marker(ask).await })
            })
            .collect();
        tokio::task::yield_now().await;
        gate_tx.send_replace(true);
        assert_eq!(first.await.unwrap(), Some(CommitMarker::new(0, 0)));
        for reader in later {
            assert_eq!(
                reader.await.unwrap(),
                Some(CommitMarker::new(0, 1)),
                "the commit before it came"
            );
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "one question for the 8 later readers"
        );

        // A reader dropped while its question is out.
        gate_tx.send_replace(false);
        let dropped = tokio::spawn({
            let (shared, ask) = (shared.clone(), ask.clone());
            async move { shared.marker(ask).await }
        });
        while asked.load(Ordering::SeqCst) == 2 {
            tokio::task::yield_now().await;
        }
        let waiting = tokio::spawn({
            let (shared, ask) = (shared.clone(), ask.clone());
            async move { shared.marker(ask).await }
        });
        tokio::task::yield_now().await;
        dropped.abort();
        let _ = dropped.await;
        gate_tx.send_replace(true);
        assert_eq!(waiting.await.unwrap(), Some(CommitMarker::new(0, 1)));
    }
}
