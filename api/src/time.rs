use chrono::{DateTime, TimeZone, Utc};

/// A stored unix-millisecond time as a UTC timestamp.
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Serde helper: a unix-millisecond column rendered as an RFC 3339 timestamp.
pub(crate) fn serialize_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&from_ms(*ms), s)
}
