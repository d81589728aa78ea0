//! iCalendar (RFC 5545) rendering of a user's events: one VEVENT per event, with its RRULE and
//! EXDATEs, plus one VEVENT with RECURRENCE-ID per edited occurrence. Times carry the event's
//! IANA zone as TZID, which calendar apps resolve from their own zone database.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{EventRow, ExceptionRow};
use crate::time::from_ms;

/// RFC 5545 §3.3.11: backslash, semicolon, comma and newlines are escaped in TEXT values.
fn text(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends a content line, folded at 75 octets (RFC 5545 §3.1) without splitting a character.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// A DTSTART-style property for `ms` in the event's zone.
fn time_property(name: &str, ms: i64, tz: Tz, all_day: bool) -> String {
    let t = from_ms(ms).with_timezone(&tz);
    if all_day {
        format!("{name};VALUE=DATE:{}", t.format("%Y%m%d"))
    } else if tz == Tz::UTC {
        format!("{name}:{}", t.format("%Y%m%dT%H%M%SZ"))
    } else {
        format!("{name};TZID={}:{}", tz.name(), t.format("%Y%m%dT%H%M%S"))
    }
}

pub(super) fn calendar(events: &[(EventRow, Vec<ExceptionRow>)], host: &str, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//Convene//Calendar//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    let stamp = format!("DTSTAMP:{}", now.format("%Y%m%dT%H%M%SZ"));
    for (e, exceptions) in events {
        let tz: Tz = e.time_zone.parse().unwrap_or(Tz::UTC);
        let all_day = e.all_day != 0;
        let uid = format!("UID:{}@{}", e.id, text(host));
        let common = |out: &mut String, title: &str| {
            line(out, &uid);
            line(out, &stamp);
            line(out, &format!("SUMMARY:{}", text(title)));
            if !e.description.is_empty() {
                line(out, &format!("DESCRIPTION:{}", text(&e.description)));
            }
            if !e.location.is_empty() {
                line(out, &format!("LOCATION:{}", text(&e.location)));
            }
            line(out, &format!("CATEGORIES:{}", e.event_type.to_uppercase()));
        };
        line(&mut out, "BEGIN:VEVENT");
        common(&mut out, &e.title);
        line(&mut out, &time_property("DTSTART", e.starts_at, tz, all_day));
        line(&mut out, &time_property("DTEND", e.ends_at, tz, all_day));
        if let Some(rule) = &e.rrule {
            line(&mut out, &format!("RRULE:{rule}"));
            for x in exceptions.iter().filter(|x| x.cancelled != 0) {
                line(&mut out, &time_property("EXDATE", x.original_start, tz, all_day));
            }
        }
        line(&mut out, "END:VEVENT");
        for x in exceptions.iter().filter(|x| x.cancelled == 0) {
            let starts_at = x.starts_at.unwrap_or(x.original_start);
            let ends_at = x.ends_at.unwrap_or(starts_at + (e.ends_at - e.starts_at));
            line(&mut out, "BEGIN:VEVENT");
            common(&mut out, x.title.as_deref().unwrap_or(&e.title));
            line(&mut out, &time_property("RECURRENCE-ID", x.original_start, tz, all_day));
            line(&mut out, &time_property("DTSTART", starts_at, tz, all_day));
            line(&mut out, &time_property("DTEND", ends_at, tz, all_day));
            line(&mut out, "END:VEVENT");
        }
    }
    line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_lines_folded() {
        assert_eq!(text("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
        let mut out = String::new();
        line(&mut out, &format!("SUMMARY:{}", "é".repeat(60)));
        for l in out.split("\r\n") {
            assert!(l.len() <= 75, "{l}");
        }
        assert_eq!(out.replace("\r\n ", ""), format!("SUMMARY:{}\r\n", "é".repeat(60)));
    }
}
