//! Per-day focus statistics, computed from the sessions themselves (never from counters that
//! could drift from them).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

use super::clock::day_of;
use super::{Days, SessionRow};
use crate::error::{ApiError, ApiResult};

/// What stats need to know of one session.
pub(crate) struct SessionFacts {
    pub(crate) started_at: i64,
    pub(crate) work: bool,
    pub(crate) ended: bool,
    pub(crate) completed: bool,
    pub(crate) interruptions: i64,
    clock: super::Clock,
}

impl From<&SessionRow> for SessionFacts {
    fn from(r: &SessionRow) -> Self {
        Self {
            started_at: r.started_at,
            work: r.is_work(),
            ended: r.ended_at.is_some(),
            completed: r.status == "completed",
            interruptions: r.interruptions,
            clock: r.clock(),
        }
    }
}

impl SessionFacts {
    /// Focus time as of `now` (a running session counts up to now).
    pub(crate) fn focus_at(&self, now: i64) -> i64 {
        self.clock.focus_ms(now)
    }
}

#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub(crate) struct DayStats {
    /// `YYYY-MM-DD`.
    pub(crate) day: String,
    /// Focus time of work sessions started that day (breaks excluded), running ones up to now.
    pub(crate) focus_ms: i64,
    pub(crate) focus_minutes: i64,
    /// Work sessions started that day.
    pub(crate) sessions: i64,
    /// Work sessions that ended after their planned time.
    pub(crate) completed_sessions: i64,
    /// Mean focus time of the day's ended work sessions.
    pub(crate) average_session_ms: i64,
    pub(crate) interruptions: i64,
    pub(crate) goal_minutes: Option<i64>,
    pub(crate) goal_met: Option<bool>,
}

pub(crate) fn parse_day(field: &str, raw: &str) -> ApiResult<i64> {
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| ApiError::field(field, "expected YYYY-MM-DD"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    Ok(date.signed_duration_since(epoch).num_days())
}

pub(crate) fn format_day(day: i64) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    epoch
        .checked_add_signed(chrono::Duration::days(day))
        .unwrap_or(epoch)
        .format("%Y-%m-%d")
        .to_string()
}

/// One entry per day of `days` (empty days included), from `sessions` and `goals` (by day).
pub(crate) fn day_stats(
    sessions: &[SessionFacts],
    goals: &BTreeMap<String, i64>,
    days: &Days,
    now: i64,
) -> Vec<DayStats> {
    let mut out: BTreeMap<i64, DayStats> = (days.first..=days.last)
        .map(|d| {
            let day = format_day(d);
            let goal = goals.get(&day).copied();
            (
                d,
                DayStats {
                    day,
                    focus_ms: 0,
                    focus_minutes: 0,
                    sessions: 0,
                    completed_sessions: 0,
                    average_session_ms: 0,
                    interruptions: 0,
                    goal_minutes: goal,
                    goal_met: goal.map(|g| g == 0),
                },
            )
        })
        .collect();
    let mut ended: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for s in sessions.iter().filter(|s| s.work) {
        let d = day_of(s.started_at, days.offset_ms);
        let Some(stats) = out.get_mut(&d) else { continue };
        let focus = s.focus_at(now);
        stats.focus_ms += focus;
        stats.sessions += 1;
        stats.completed_sessions += i64::from(s.completed);
        stats.interruptions += s.interruptions;
        if s.ended {
            let e = ended.entry(d).or_default();
            e.0 += focus;
            e.1 += 1;
        }
    }
    for (d, stats) in &mut out {
        stats.focus_minutes = stats.focus_ms / 60_000;
        if let Some((total, n)) = ended.get(d) {
            stats.average_session_ms = total / n;
        }
        if let Some(goal) = stats.goal_minutes {
            stats.goal_met = Some(stats.focus_minutes >= goal);
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn session(started_at: i64, focus_min: i64, work: bool, completed: bool) -> SessionFacts {
        SessionFacts {
            started_at,
            work,
            ended: true,
            completed,
            interruptions: 1,
            clock: super::super::Clock {
                started_at,
                paused_at: None,
                paused_ms: 0,
                ended_at: Some(started_at + focus_min * MIN),
            },
        }
    }

    #[test]
    fn days_sum_their_sessions() {
        let day = parse_day("d", "2026-11-20").unwrap();
        let midnight = day * 86_400_000;
        let sessions = [
            session(midnight + 60 * MIN, 25, true, true),
            session(midnight + 90 * MIN, 35, true, false),
            // Breaks are not focus.
            session(midnight + 130 * MIN, 5, false, true),
            // 23:50 UTC is the next day two hours east.
            session(midnight + 1430 * MIN, 20, true, true),
        ];
        let goals = BTreeMap::from([("2026-11-20".to_owned(), 60), ("2026-11-21".to_owned(), 30)]);
        let utc = Days {
            first: day,
            last: day + 1,
            offset_ms: 0,
        };
        let stats = day_stats(&sessions, &goals, &utc, midnight + 2 * 86_400_000);
        assert_eq!(stats[0].focus_ms, 80 * MIN);
        assert_eq!(
            (stats[0].sessions, stats[0].completed_sessions, stats[0].interruptions),
            (3, 2, 3)
        );
        assert_eq!(stats[0].average_session_ms, 80 * MIN / 3);
        assert_eq!(stats[0].goal_met, Some(true));
        assert_eq!((stats[1].sessions, stats[1].goal_met), (0, Some(false)));
        let east = Days {
            first: day,
            last: day + 1,
            offset_ms: 120 * MIN,
        };
        let stats = day_stats(&sessions, &goals, &east, midnight + 2 * 86_400_000);
        assert_eq!((stats[0].focus_minutes, stats[1].focus_minutes), (60, 20));
        assert_eq!(stats[1].goal_met, Some(false));
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(parse_day("d", "1970-01-02").unwrap(), 1);
        assert_eq!(format_day(parse_day("d", "2026-11-21").unwrap()), "2026-11-21");
        assert!(parse_day("d", "2026-13-01").is_err());
        assert!(parse_day("d", "../etc").is_err());
    }
}
