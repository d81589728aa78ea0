//! `Range: bytes=` (RFC 9110 §14): one range is served; several, or other units, are ignored
//! (a full 200 is a valid answer to those).

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// Serve the whole content.
    Ignore,
    /// Inclusive byte positions.
    Bytes {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub(crate) fn parse(header: &str, size: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignore;
    };
    if spec.contains(',') {
        return Range::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // bytes=-N: the last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(_) if size == 0 => Range::Unsatisfiable,
            Ok(n) => Range::Bytes {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Err(_) => Range::Ignore,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Range::Ignore;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Range::Ignore,
        }
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Bytes {
        start,
        end: end.min(size - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes=0-9", 100), Range::Bytes { start: 0, end: 9 });
        assert_eq!(parse("bytes=90-", 100), Range::Bytes { start: 90, end: 99 });
        assert_eq!(parse("bytes=-10", 100), Range::Bytes { start: 90, end: 99 });
        assert_eq!(parse("bytes=-500", 100), Range::Bytes { start: 0, end: 99 });
        assert_eq!(parse("bytes=50-500", 100), Range::Bytes { start: 50, end: 99 });
        assert_eq!(parse("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Range::Unsatisfiable);
        assert_eq!(parse("bytes=9-3", 100), Range::Ignore);
        assert_eq!(parse("bytes=0-1,5-6", 100), Range::Ignore);
        assert_eq!(parse("items=0-1", 100), Range::Ignore);
        assert_eq!(parse("bytes=x-y", 100), Range::Ignore);
    }
}
