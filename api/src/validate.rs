//! Domain values built only through parsing, so handlers never see an invalid one.

use crate::error::ApiError;

/// Lower-cased e-mail address of plausible shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let e = raw.trim().to_lowercase();
        let valid = e.len() <= 254
            && e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !e.chars().any(|c| c.is_whitespace() || c.is_control())
                    && e.matches('@').count() == 1
            });
        if valid {
            Ok(Self(e))
        } else {
            Err(ApiError::field("email", "is not a valid e-mail address"))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// 3–32 characters of `a-z 0-9 _ . -`, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Username(String);

impl Username {
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let u = raw.trim().to_lowercase();
        let valid = (3..=32).contains(&u.len())
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(Self(u))
        } else {
            Err(ApiError::field(
                "username",
                "must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
            ))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8–128 characters; the upper bound keeps hashing cost bounded.
pub(crate) fn password(raw: &str) -> Result<&str, ApiError> {
    let n = raw.chars().count();
    if (8..=128).contains(&n) {
        Ok(raw)
    } else {
        Err(ApiError::field("password", "must be 8-128 characters"))
    }
}

/// A required, trimmed, single-line text of at most `max` characters.
pub(crate) fn name(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let v = raw.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("must be 1-{max} characters on one line"),
        ));
    }
    Ok(v.to_owned())
}

/// An optional free text of at most `max` characters; empty becomes `None`.
pub(crate) fn text(field: &str, raw: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > max => Err(ApiError::field(field, format!("must be at most {max} characters"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// An optional absolute http(s) URL.
pub(crate) fn url(field: &str, raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let v = text(field, raw, 2048)?;
    match &v {
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(char::is_whitespace) => {
            Err(ApiError::field(field, "must be an http(s) URL"))
        }
        _ => Ok(v),
    }
}

/// An optional IANA time zone name such as `Europe/Paris` (shape checked, not the database).
pub(crate) fn timezone(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let v = text("timezone", raw, 64)?;
    match &v {
        Some(tz)
            if !tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+')) =>
        {
            Err(ApiError::field(
                "timezone",
                "must be an IANA time zone name such as Europe/Paris",
            ))
        }
        _ => Ok(v),
    }
}

/// Serde helper: tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Bob@Example.COM ").map(|e| e.0).ok(),
            Some("bob@example.com".into())
        );
        for bad in ["", "bob", "@x.io", "bob@", "bob@io", "a b@x.io", "a@b@x.io", "bob@.io"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("Alice_1").is_ok());
        for bad in ["ab", "has space", "émile", &"x".repeat(33)] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_zones() {
        assert!(url("u", Some("https://x.io/a.png")).is_ok());
        assert!(url("u", Some("javascript:alert(1)")).is_err());
        assert!(timezone(Some("America/New_York")).is_ok());
        assert!(timezone(Some("Not a zone")).is_err());
        assert_eq!(text("t", Some("  "), 5).ok(), Some(None));
    }
}
