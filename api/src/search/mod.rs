//! `GET /api/v1/search?q=&types=&team=`: ranked full-text search over what the caller may see.
//!
//! The index is the `search_documents` table, kept current by triggers on the source tables
//! (migration 0030), so every write by any feature updates it in the same transaction. Ranking
//! and snippets are per dialect: SQLite FTS5 (`bm25`, `snippet`), PostgreSQL `tsvector`
//! (`ts_rank`, `ts_headline`), both without stemming so they agree.
//!
//! Adding a kind: triggers on its table that put `(kind, item_id, team_id,
//! channel_id, title, body)` into `search_documents`, a [`Kind`] variant, and its visibility rule
//! in [`visible`].

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::Backend;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppQuery, AuthUser};
use crate::state::AppState;
use crate::teams;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Note,
    File,
    Message,
    Channel,
    Team,
    Room,
    Project,
    Task,
}

impl Kind {
    const ALL: [Self; 8] = [
        Self::Task,
        Self::Project,
        Self::Note,
        Self::File,
        Self::Message,
        Self::Channel,
        Self::Team,
        Self::Room,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Note => "note",
            Self::File => "file",
            Self::Message => "message",
            Self::Channel => "channel",
            Self::Team => "team",
            Self::Room => "room",
            Self::Project => "project",
            Self::Task => "task",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who sees a document: `$1` is the caller. Team content is visible to the team's members;
/// channels and messages follow chat's rules (public channels: the team's non-guest members;
/// private channels and DMs: their members).
fn visible() -> &'static str {
    "((d.kind IN ('note', 'file', 'team', 'room', 'project', 'task') \
        AND d.team_id IN (SELECT tm.team_id FROM team_members tm WHERE tm.user_id = $1)) \
      OR (d.kind IN ('message', 'channel') AND ( \
        d.channel_id IN (SELECT cm.channel_id FROM chat_members cm WHERE cm.user_id = $1) \
        OR d.channel_id IN (SELECT c.id FROM chat_channels c JOIN team_members tm ON tm.team_id = c.team_id \
           AND tm.user_id = $1 AND tm.role <> 'guest' WHERE c.kind = 'public'))))"
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// Words to find (every word must match; the last may be a prefix).
    q: String,
    /// Comma-separated kinds: task, project, note, file, message, channel, team, room (default: all).
    types: Option<String>,
    /// Only results of this team.
    team: Option<String>,
    /// At most this many results, 1-50 (default 20).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Hit {
    kind: Kind,
    id: String,
    team_id: Option<String>,
    /// For messages and channels.
    channel_id: Option<String>,
    title: String,
    /// HTML-escaped text around the match, matched words in `<mark>`.
    snippet: String,
    /// Higher is better; comparable within one response only.
    rank: f64,
}

#[derive(FromRow)]
struct HitRow {
    kind: String,
    item_id: String,
    team_id: Option<String>,
    channel_id: Option<String>,
    title: String,
    snippet: String,
    rank: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResults {
    items: Vec<Hit>,
}

/// The words of a query: letters and digits only, so nothing reaches the engines' query syntax.
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .take(12)
        .collect()
}

/// The snippet as safe HTML: escaped text, with the engine's match markers (STX/ETX) as `<mark>`.
fn snippet_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            '\u{2}' => out.push_str("<mark>"),
            '\u{3}' => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Search everything the caller may see, best matches first.
#[utoipa::path(get, path = "", tag = "search", security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, body = SearchResults), (status = 404, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn search(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<SearchQuery>,
) -> ApiResult<AppJson<SearchResults>> {
    let words = words(&q.q);
    if words.is_empty() {
        return Err(ApiError::field("q", "needs at least one word"));
    }
    let kinds: Vec<Kind> = match q.types.as_deref() {
        None | Some("") => Kind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|t| Kind::parse(t.trim()).ok_or_else(|| ApiError::field("types", format!("unknown type `{t}`"))))
            .collect::<ApiResult<_>>()?,
    };
    if let Some(team) = &q.team {
        teams::member_role(&state.db, team, &auth.user_id).await?;
    }
    let limit = i64::from(q.limit.unwrap_or(20).clamp(1, 50));
    // Kinds are from a closed list, so they can be spelled into the SQL.
    let kind_list = kinds
        .iter()
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let filters = format!(
        "d.kind IN ({kind_list}) AND (CAST($3 AS TEXT) IS NULL OR d.team_id = $3) AND {}",
        visible()
    );
    let last = words.len() - 1;
    let sql = match state.db.backend() {
        Backend::Sqlite => format!(
            "SELECT d.kind, d.item_id, d.team_id, d.channel_id, d.title, \
             snippet(search_fts, 1, char(2), char(3), '…', 16) AS snippet, -bm25(search_fts, 4.0, 1.0) AS rank \
             FROM search_fts JOIN search_documents d ON d.rowid = search_fts.rowid \
             WHERE search_fts MATCH $2 AND {filters} ORDER BY rank DESC, d.item_id LIMIT $4"
        ),
        Backend::Postgres => format!(
            "SELECT d.kind, d.item_id, d.team_id, d.channel_id, d.title, \
             ts_headline('simple', d.body, q, 'StartSel=' || chr(2) || ', StopSel=' || chr(3) || \
               ', MaxWords=24, MinWords=8, MaxFragments=1') AS snippet, \
             CAST(ts_rank(d.tsv, q) AS DOUBLE PRECISION) AS rank \
             FROM search_documents d, to_tsquery('simple', $2) q \
             WHERE d.tsv @@ q AND {filters} ORDER BY rank DESC, d.item_id LIMIT $4"
        ),
    };
    let query = match state.db.backend() {
        Backend::Sqlite => words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == last {
                    format!("\"{w}\"*")
                } else {
                    format!("\"{w}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Backend::Postgres => words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == last { format!("{w}:*") } else { w.clone() })
            .collect::<Vec<_>>()
            .join(" & "),
    };
    let rows: Vec<HitRow> = sqlx::query_as(&sql)
        .bind(&auth.user_id)
        .bind(&query)
        .bind(&q.team)
        .bind(limit)
        .fetch_all(state.db.pool())
        .await?;
    let items = rows
        .into_iter()
        .filter_map(|r| {
            Some(Hit {
                kind: Kind::parse(&r.kind)?,
                id: r.item_id,
                team_id: r.team_id,
                channel_id: r.channel_id,
                title: r.title,
                snippet: snippet_html(&r.snippet),
                rank: r.rank,
            })
        })
        .collect();
    Ok(AppJson(SearchResults { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_keep_words_only() {
        assert_eq!(
            words("Hello, \"world\" OR NEAR(x*"),
            ["hello", "world", "or", "near", "x"]
        );
        assert!(words(" *-\" ").is_empty());
    }

    #[test]
    fn snippets_are_safe_html() {
        assert_eq!(
            snippet_html("<b>\u{2}x\u{3}</b> & 'y'"),
            "&lt;b&gt;<mark>x</mark>&lt;/b&gt; &amp; &#39;y&#39;"
        );
    }
}
