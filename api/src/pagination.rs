//! Keyset pagination: `?limit=&after=<cursor>`, where the cursor is the last item's id
//! (ids are time-ordered UUIDv7s). Unlike offsets, pages stay stable under inserts.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// Items per page, 1-200 (default 50).
    pub(crate) limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub(crate) after: Option<String>,
}

impl PageQuery {
    pub(crate) fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(50).clamp(1, 200))
    }

    /// The cursor to compare ids against; the empty string sorts before every id.
    pub(crate) fn after(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in id order.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(id)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}
