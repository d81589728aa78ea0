//! The RFC 5545 §3.3.10 recurrence subset calendars exchange in practice: `FREQ` daily, weekly or
//! monthly, `INTERVAL`, `COUNT` or `UNTIL`, `BYDAY` (with an ordinal in monthly rules, `2MO`,
//! `-1FR`) and `BYMONTHDAY`. Occurrences repeat in the event's local time zone, so a weekly 09:00
//! meeting stays at 09:00 across a DST change.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freq {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    freq: Freq,
    interval: u32,
    count: Option<u32>,
    until: Option<DateTime<Utc>>,
    /// Weekdays, each with an optional ordinal within the month (monthly rules only).
    by_day: Vec<(Option<i8>, Weekday)>,
    /// Days of the month, negative from its end.
    by_month_day: Vec<i8>,
}

/// Periods examined without finding an occurrence before a rule is considered exhausted.
const MAX_EMPTY_PERIODS: u32 = 1000;

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_code(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

/// `UNTIL` as a UTC date-time (`19970714T173000Z`) or a date (`19970714`, the end of that day).
fn parse_until(v: &str) -> Option<DateTime<Utc>> {
    if let Some(stamp) = v.strip_suffix('Z') {
        NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
            .ok()
            .map(|n| n.and_utc())
    } else {
        NaiveDate::parse_from_str(v, "%Y%m%d")
            .ok()
            .and_then(|d| d.and_hms_opt(23, 59, 59))
            .map(|n| n.and_utc())
    }
}

impl Rule {
    /// Parses an RRULE value (without the `RRULE:` prefix), rejecting parts outside the subset.
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let raw = raw.strip_prefix("RRULE:").unwrap_or(raw);
        let mut freq = None;
        let mut rule = Self {
            freq: Freq::Daily,
            interval: 1,
            count: None,
            until: None,
            by_day: Vec::new(),
            by_month_day: Vec::new(),
        };
        for part in raw.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KEY=VALUE"))?;
            match key.to_ascii_uppercase().as_str() {
                "FREQ" => {
                    freq = Some(match value.to_ascii_uppercase().as_str() {
                        "DAILY" => Freq::Daily,
                        "WEEKLY" => Freq::Weekly,
                        "MONTHLY" => Freq::Monthly,
                        other => return Err(format!("FREQ={other} is not supported (DAILY, WEEKLY, MONTHLY)")),
                    });
                }
                "INTERVAL" => {
                    rule.interval = value
                        .parse()
                        .ok()
                        .filter(|i| (1..=1000).contains(i))
                        .ok_or("INTERVAL must be 1-1000")?;
                }
                "COUNT" => {
                    rule.count = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|c| (1..=1000).contains(c))
                            .ok_or("COUNT must be 1-1000")?,
                    );
                }
                "UNTIL" => rule.until = Some(parse_until(value).ok_or("UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ")?),
                "BYDAY" => {
                    for item in value.split(',') {
                        let item = item.trim().to_ascii_uppercase();
                        let split = item.len().saturating_sub(2);
                        let (ordinal, code) = item.split_at(split);
                        let day = weekday(code).ok_or_else(|| format!("BYDAY value `{item}` is not a weekday"))?;
                        let ordinal = if ordinal.is_empty() {
                            None
                        } else {
                            let n: i8 = ordinal
                                .trim_start_matches('+')
                                .parse()
                                .ok()
                                .filter(|n: &i8| *n != 0 && (-5..=5).contains(n))
                                .ok_or_else(|| format!("BYDAY ordinal in `{item}` must be ±1-5"))?;
                            Some(n)
                        };
                        rule.by_day.push((ordinal, day));
                    }
                }
                "BYMONTHDAY" => {
                    for item in value.split(',') {
                        let n: i8 = item
                            .trim()
                            .parse()
                            .ok()
                            .filter(|n: &i8| *n != 0 && (-31..=31).contains(n))
                            .ok_or("BYMONTHDAY values must be ±1-31")?;
                        rule.by_month_day.push(n);
                    }
                }
                "WKST" if value.eq_ignore_ascii_case("MO") => {}
                other => return Err(format!("{other} is not supported")),
            }
        }
        rule.freq = freq.ok_or("FREQ is required")?;
        if rule.count.is_some() && rule.until.is_some() {
            return Err("COUNT and UNTIL are exclusive".to_owned());
        }
        if rule.freq != Freq::Monthly {
            if rule.by_day.iter().any(|(n, _)| n.is_some()) {
                return Err("BYDAY ordinals are only valid in MONTHLY rules".to_owned());
            }
            if !rule.by_month_day.is_empty() {
                return Err("BYMONTHDAY is only supported in MONTHLY rules".to_owned());
            }
        }
        Ok(rule)
    }

    /// Whether the series has a last occurrence.
    pub(crate) fn is_finite(&self) -> bool {
        self.count.is_some() || self.until.is_some()
    }

    /// Candidate dates of the `k`-th period after the one containing `start`, in order.
    fn period(&self, start: NaiveDate, k: u32) -> Vec<NaiveDate> {
        let step = i64::from(k) * i64::from(self.interval);
        match self.freq {
            Freq::Daily => {
                let d = start + Duration::days(step);
                if self.by_day.is_empty() || self.by_day.iter().any(|(_, w)| *w == d.weekday()) {
                    vec![d]
                } else {
                    Vec::new()
                }
            }
            Freq::Weekly => {
                let monday = start - Duration::days(i64::from(start.weekday().num_days_from_monday()));
                let week = monday + Duration::weeks(step);
                let mut days: Vec<NaiveDate> = if self.by_day.is_empty() {
                    vec![week + Duration::days(i64::from(start.weekday().num_days_from_monday()))]
                } else {
                    self.by_day
                        .iter()
                        .map(|(_, w)| week + Duration::days(i64::from(w.num_days_from_monday())))
                        .collect()
                };
                days.sort_unstable();
                days.dedup();
                days
            }
            Freq::Monthly => {
                let months = i64::from(start.year()) * 12 + i64::from(start.month0()) + step;
                let (Ok(year), Ok(month0)) = (
                    i32::try_from(months.div_euclid(12)),
                    u32::try_from(months.rem_euclid(12)),
                ) else {
                    return Vec::new();
                };
                let Some(first) = NaiveDate::from_ymd_opt(year, month0 + 1, 1) else {
                    return Vec::new();
                };
                let days_in_month = (first + chrono::Months::new(1) - first).num_days();
                let in_month = |n: i64| {
                    let day = if n > 0 { n } else { days_in_month + 1 + n };
                    (1..=days_in_month)
                        .contains(&day)
                        .then(|| first + Duration::days(day - 1))
                };
                let mut days: Vec<NaiveDate> = if !self.by_month_day.is_empty() {
                    self.by_month_day
                        .iter()
                        .filter_map(|n| in_month(i64::from(*n)))
                        .collect()
                } else if !self.by_day.is_empty() {
                    let all: Vec<NaiveDate> = (0..days_in_month).map(|i| first + Duration::days(i)).collect();
                    self.by_day
                        .iter()
                        .flat_map(|(ordinal, w)| {
                            let matching: Vec<NaiveDate> = all.iter().copied().filter(|d| d.weekday() == *w).collect();
                            match ordinal {
                                None => matching,
                                Some(n) if *n > 0 => matching
                                    .get(usize::from(n.unsigned_abs()) - 1)
                                    .copied()
                                    .into_iter()
                                    .collect(),
                                Some(n) => matching
                                    .len()
                                    .checked_sub(usize::from(n.unsigned_abs()))
                                    .and_then(|i| matching.get(i).copied())
                                    .into_iter()
                                    .collect(),
                            }
                        })
                        .collect()
                } else {
                    // The 31st repeats only in months that have one (RFC 5545 §3.3.10: invalid
                    // dates are ignored, not moved).
                    in_month(i64::from(start.day())).into_iter().collect()
                };
                days.sort_unstable();
                days.dedup();
                days
            }
        }
    }

    /// Occurrence starts of a series whose first occurrence is `start` in `tz`, in order, up to
    /// and including `horizon` (or to the rule's end).
    pub(crate) fn occurrences(&self, start: DateTime<Tz>, horizon: Option<DateTime<Utc>>) -> Vec<DateTime<Utc>> {
        let tz = start.timezone();
        let local = start.naive_local();
        let (first_day, time) = (local.date(), local.time());
        let mut out = Vec::new();
        let mut empty = 0;
        let mut k = 0;
        loop {
            let mut found = false;
            for day in self.period(first_day, k) {
                if day < first_day {
                    continue;
                }
                found = true;
                let at = resolve(tz, day.and_time(time));
                if self.until.is_some_and(|u| at > u) || horizon.is_some_and(|h| at > h) {
                    return out;
                }
                out.push(at);
                if self.count.is_some_and(|c| out.len() >= c as usize) {
                    return out;
                }
            }
            empty = if found { 0 } else { empty + 1 };
            if empty > MAX_EMPTY_PERIODS || (horizon.is_none() && !self.is_finite()) {
                return out;
            }
            k += 1;
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let freq = match self.freq {
            Freq::Daily => "DAILY",
            Freq::Weekly => "WEEKLY",
            Freq::Monthly => "MONTHLY",
        };
        write!(f, "FREQ={freq}")?;
        if self.interval != 1 {
            write!(f, ";INTERVAL={}", self.interval)?;
        }
        if let Some(c) = self.count {
            write!(f, ";COUNT={c}")?;
        }
        if let Some(u) = self.until {
            write!(f, ";UNTIL={}", u.format("%Y%m%dT%H%M%SZ"))?;
        }
        if !self.by_day.is_empty() {
            let days: Vec<String> = self
                .by_day
                .iter()
                .map(|(n, d)| format!("{}{}", n.map(|n| n.to_string()).unwrap_or_default(), weekday_code(*d)))
                .collect();
            write!(f, ";BYDAY={}", days.join(","))?;
        }
        if !self.by_month_day.is_empty() {
            let days: Vec<String> = self.by_month_day.iter().map(ToString::to_string).collect();
            write!(f, ";BYMONTHDAY={}", days.join(","))?;
        }
        Ok(())
    }
}

/// A local time as UTC: the earlier of two in a DST fold; in a DST gap, shifted forward by the
/// gap's length (RFC 5545 §3.3.5: the offset before the transition applies).
pub(crate) fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            let before = tz.offset_from_utc_datetime(&(local - Duration::hours(3)));
            let offset = chrono::Offset::fix(&before);
            (local - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Tz> {
        tz.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap_or_else(|| panic!("valid local time"))
    }

    #[test]
    fn weekly_keeps_local_time_across_dst() {
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let rule = Rule::parse("FREQ=WEEKLY;BYDAY=MO,FR;COUNT=4").expect("rule");
        // Berlin switches to summer time on Sunday 2026-03-29.
        let occ = rule.occurrences(at(tz, 2026, 3, 23, 9, 0), None);
        let utc: Vec<String> = occ.iter().map(|t| t.format("%m-%d %H:%M").to_string()).collect();
        assert_eq!(utc, ["03-23 08:00", "03-27 08:00", "03-30 07:00", "04-03 07:00"]);
    }

    #[test]
    fn monthly_on_the_31st_skips_short_months() {
        let rule = Rule::parse("FREQ=MONTHLY;COUNT=4").expect("rule");
        let occ = rule.occurrences(at(Tz::UTC, 2026, 1, 31, 12, 0), None);
        let days: Vec<String> = occ.iter().map(|t| t.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(days, ["2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31"]);
    }

    #[test]
    fn monthly_nth_weekday_and_last_day() {
        let rule = Rule::parse("FREQ=MONTHLY;BYDAY=-1FR;COUNT=2").expect("rule");
        let occ = rule.occurrences(at(Tz::UTC, 2026, 1, 1, 10, 0), None);
        let days: Vec<String> = occ.iter().map(|t| t.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(days, ["2026-01-30", "2026-02-27"]);
        let rule = Rule::parse("FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=2").expect("rule");
        let occ = rule.occurrences(at(Tz::UTC, 2026, 1, 5, 10, 0), None);
        let days: Vec<String> = occ.iter().map(|t| t.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(days, ["2026-01-31", "2026-02-28"]);
    }

    #[test]
    fn daily_until_and_interval() {
        let rule = Rule::parse("FREQ=DAILY;INTERVAL=2;UNTIL=20260107T235959Z").expect("rule");
        let occ = rule.occurrences(at(Tz::UTC, 2026, 1, 1, 8, 0), None);
        assert_eq!(occ.len(), 4);
        assert_eq!(rule.to_string(), "FREQ=DAILY;INTERVAL=2;UNTIL=20260107T235959Z");
    }

    #[test]
    fn unbounded_rules_stop_at_the_horizon() {
        let rule = Rule::parse("FREQ=DAILY").expect("rule");
        let start = at(Tz::UTC, 2026, 1, 1, 8, 0);
        let occ = rule.occurrences(start, Some(start.with_timezone(&Utc) + Duration::days(9)));
        assert_eq!(occ.len(), 10);
    }

    #[test]
    fn unsupported_parts_are_rejected() {
        for bad in [
            "FREQ=YEARLY",
            "FREQ=DAILY;COUNT=0",
            "FREQ=WEEKLY;BYDAY=2MO",
            "COUNT=3",
            "FREQ=DAILY;BYHOUR=3",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gap_times_move_forward() {
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let local = NaiveDate::from_ymd_opt(2026, 3, 29)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .expect("time");
        assert_eq!(resolve(tz, local).format("%H:%M").to_string(), "01:30");
    }
}
