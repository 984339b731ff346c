//! Recently written catalogue pages (`GET /v2/images`, in the form the API wrote them),
//! kept until the next commit: a page is stored under the database's commit marker read
//! before it (`Database::commit_marker`: SQLite's `data_version`, the servers' count of
//! commits, which every commit of any connection of any process or node moves), and every
//! entry is dropped as soon as the marker moves. So no page is served once a commit that
//! could change it is visible; a read racing a commit may see it or not, as it would from
//! the database.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::db::CommitMarker;

/// Enough for every page clients ask for between two commits; at the bound, the pages are
/// dropped and kept anew.
const MAX_PAGES: usize = 1024;

/// What a written page depends on besides the catalogue and the generation: the query as
/// sent (with its marker) and who asks (visibility; roles, for property protections).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct PageKey {
    pub query: String,
    pub project: Option<String>,
    pub is_admin: bool,
    pub roles: Vec<String>,
}

#[derive(Default)]
pub(super) struct RecentPages {
    state: Mutex<Pages>,
}

#[derive(Default)]
struct Pages {
    /// The commit marker the pages were read after.
    commits: CommitMarker,
    pages: HashMap<PageKey, Bytes>,
}

impl RecentPages {
    fn lock(&self) -> MutexGuard<'_, Pages> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The page read for `key` since the commit marker was `commits`, if any.
    pub fn get(&self, commits: CommitMarker, key: &PageKey) -> Option<Bytes> {
        let mut state = self.lock();
        if commits != state.commits {
            // Markers are not ordered: any other one starts afresh (a reader that started
            // before the latest commit costs the others their pages, never their freshness).
            state.pages.clear();
            state.commits = commits;
            return None;
        }
        state.pages.get(key).cloned()
    }

    /// Keeps `page`, read when the marker was `commits`, unless it has moved since.
    pub fn put(&self, commits: CommitMarker, key: PageKey, page: Bytes) {
        let mut state = self.lock();
        if state.commits != commits {
            return;
        }
        if state.pages.len() >= MAX_PAGES {
            state.pages.clear();
        }
        state.pages.insert(key, page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(project: &str) -> PageKey {
        PageKey {
            query: "limit=25".into(),
            project: Some(project.into()),
            is_admin: false,
            roles: vec!["reader".into()],
        }
    }

    #[test]
    fn a_page_is_served_until_the_next_commit_and_only_to_its_key() {
        let pages = RecentPages::default();
        let page = Bytes::from_static(b"{}");
        let (seven, eight) = (CommitMarker::new(1, 7), CommitMarker::new(1, 8));
        assert!(pages.get(seven, &key("a")).is_none());
        pages.put(seven, key("a"), page.clone());
        assert!(pages.get(seven, &key("a")).is_some());
        assert!(
            pages.get(seven, &key("b")).is_none(),
            "another project's page"
        );
        assert!(pages.get(eight, &key("a")).is_none(), "a commit since");
        assert!(
            pages.get(eight, &key("a")).is_none(),
            "and it is gone for good"
        );
        // A page read before a commit that is now visible is not kept.
        pages.put(seven, key("a"), page.clone());
        assert!(pages.get(eight, &key("a")).is_none());
        // A new connection's answers are not the old one's, even when they are equal.
        pages.put(eight, key("a"), page);
        assert!(pages.get(CommitMarker::new(2, 8), &key("a")).is_none());
    }
}
