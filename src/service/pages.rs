//! Recently read catalogue pages (`GET /v2/images`), kept until the next write: a page is
//! stored under the count of write transactions finished before it was read
//! (`Database::writes_finished`), and every entry is dropped as soon as that count moves.
//! So no page is served once a write that could change it has finished; a read racing a
//! write may see it or not, as it would from the database. Only over SQLite, which belongs
//! to this process: other nodes' writes to a shared database would not move the count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::image::Image;
use crate::domain::query::ListQuery;

/// Enough for every page clients ask for between two writes; at the bound, the pages are
/// dropped and kept anew.
const MAX_PAGES: usize = 1024;

/// What a page depends on besides the catalogue: the query (with its marker) and who asks.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct PageKey {
    pub query: ListQuery,
    pub project: Option<String>,
    pub is_admin: bool,
}

#[derive(Default)]
pub(super) struct RecentPages {
    state: Mutex<Pages>,
}

#[derive(Default)]
struct Pages {
    /// The write count the pages were read after.
    writes: u64,
    pages: HashMap<PageKey, Arc<Vec<Image>>>,
}

impl RecentPages {
    fn lock(&self) -> MutexGuard<'_, Pages> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The page read for `key` since the `writes`-th write, if any.
    pub fn get(&self, writes: u64, key: &PageKey) -> Option<Arc<Vec<Image>>> {
        let mut state = self.lock();
        if writes > state.writes {
            state.pages.clear();
            state.writes = writes;
        }
        if writes != state.writes {
            // A reader that started before the latest write: it reads the database.
            return None;
        }
        state.pages.get(key).cloned()
    }

    /// Keeps `page`, read after `writes` writes, unless a write has finished since.
    pub fn put(&self, writes: u64, key: PageKey, page: Arc<Vec<Image>>) {
        let mut state = self.lock();
        if state.writes != writes {
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
    use crate::domain::query::MemberStatusFilter;

    fn key(project: &str) -> PageKey {
        PageKey {
            query: ListQuery {
                limit: 25,
                marker: None,
                sort: Vec::new(),
                filters: Vec::new(),
                visibility: None,
                member_status: MemberStatusFilter::Accepted,
                os_hidden: false,
            },
            project: Some(project.into()),
            is_admin: false,
        }
    }

    #[test]
    fn a_page_is_served_until_the_next_write_and_only_to_its_key() {
        let pages = RecentPages::default();
        let page = Arc::new(Vec::new());
        assert!(pages.get(7, &key("a")).is_none());
        pages.put(7, key("a"), page.clone());
        assert!(pages.get(7, &key("a")).is_some());
        assert!(pages.get(7, &key("b")).is_none(), "another project's page");
        assert!(pages.get(8, &key("a")).is_none(), "a write finished since");
        assert!(pages.get(7, &key("a")).is_none(), "and it is gone for good");
        assert!(pages.get(8, &key("a")).is_none());
        // A page read before a write that has since finished is not kept.
        pages.put(7, key("a"), page);
        assert!(pages.get(8, &key("a")).is_none());
    }
}
