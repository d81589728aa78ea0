//! Fractional ordering keys: a task or column gets a key strictly between its neighbours', so
//! a move writes one row and never renumbers the others.
//!
//! A key is a base-36 fraction (`0-9a-z`, compared as bytes) that never ends in `0`, so there
//! is always room between two different keys (the scheme of David Greenspan's "Implementing
//! Fractional Indexing"). Appending at the end increments rather than halves, so a column that
//! only grows at the bottom gains one character per 35 tasks instead of one per five.

const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE: usize = DIGITS.len();

fn digit(c: u8) -> usize {
    DIGITS.iter().position(|&d| d == c).unwrap_or(0)
}

/// A key strictly between `before` and `after` (either open), with `before < after`.
pub(crate) fn between(before: Option<&str>, after: Option<&str>) -> String {
    match (before, after) {
        (None, None) => "i".to_owned(),
        (Some(a), None) => increment(a),
        (None, Some(b)) => decrement(b),
        (Some(a), Some(b)) => midpoint(a.as_bytes(), Some(b.as_bytes())),
    }
}

/// The shortest key above `a`: its first non-maximal digit plus one, truncated there.
fn increment(a: &str) -> String {
    let bytes = a.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        let d = digit(c);
        if d + 1 < BASE {
            let mut out = bytes[..i].to_vec();
            out.push(DIGITS[d + 1]);
            return String::from_utf8(out).unwrap_or_default();
        }
    }
    // All digits maximal: extend with the smallest digit, leaving the most room above.
    format!("{a}1")
}

/// The shortest key below `b` found by lowering one digit, else the midpoint with zero.
fn decrement(b: &str) -> String {
    let bytes = b.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        let d = digit(c);
        if d > 1 {
            let mut out = bytes[..i].to_vec();
            out.push(DIGITS[d - 1]);
            return String::from_utf8(out).unwrap_or_default();
        }
    }
    midpoint(b"", Some(bytes))
}

/// The midpoint of two fractions `0.a` and `0.b` (`None` is 1), `a < b`.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> String {
    if let Some(b) = b {
        let common = b
            .iter()
            .enumerate()
            .take_while(|&(i, &c)| a.get(i).copied().unwrap_or(DIGITS[0]) == c)
            .count();
        if common > 0 {
            let prefix = String::from_utf8(b[..common].to_vec()).unwrap_or_default();
            let rest_a = a.get(common..).unwrap_or_default();
            return prefix + &midpoint(rest_a, Some(&b[common..]));
        }
    }
    let da = a.first().map_or(0, |&c| digit(c));
    let db = b.map_or(BASE, |b| b.first().map_or(0, |&c| digit(c)));
    if db - da > 1 {
        return char::from(DIGITS[(da + db).div_ceil(2)]).to_string();
    }
    match b {
        Some(b) if b.len() > 1 => char::from(b[0]).to_string(),
        _ => {
            let rest = a.get(1..).unwrap_or_default();
            format!("{}{}", char::from(DIGITS[da]), midpoint(rest, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid(key: &str) -> bool {
        !key.is_empty() && key.bytes().all(|b| DIGITS.contains(&b)) && !key.ends_with('0')
    }

    fn check(a: Option<&str>, b: Option<&str>) -> String {
        let k = between(a, b);
        assert!(is_valid(&k), "{a:?} {b:?} -> {k}");
        if let Some(a) = a {
            assert!(a < k.as_str(), "{a} < {k}");
        }
        if let Some(b) = b {
            assert!(k.as_str() < b, "{k} < {b}");
        }
        k
    }

    #[test]
    fn keys_fall_strictly_between() {
        assert_eq!(check(None, None), "i");
        assert_eq!(check(Some("i"), None), "j");
        assert_eq!(check(None, Some("i")), "h");
        assert_eq!(check(Some("z"), None), "z1");
        check(None, Some("1"));
        check(None, Some("01"));
        check(Some("a"), Some("b"));
        check(Some("a"), Some("a1"));
        check(Some("az"), Some("b"));
        check(Some("ay"), Some("az"));
        check(Some("01"), Some("02"));
        check(Some("0001"), Some("001"));
    }

    #[test]
    fn repeated_inserts_stay_ordered() {
        // Always inserting just after the first key, just before the last, and at both ends.
        let mut keys = vec![between(None, None)];
        for n in 0..2000 {
            let (a, b) = match n % 4 {
                0 => (Some(keys[0].clone()), keys.get(1).cloned()),
                1 => (keys.get(keys.len() - 2).cloned(), keys.last().cloned()),
                2 => (None, Some(keys[0].clone())),
                _ => (keys.last().cloned(), None),
            };
            let k = check(a.as_deref(), b.as_deref());
            keys.push(k);
            keys.sort();
        }
        keys.dedup();
        assert_eq!(keys.len(), 2001);
        let appended = (0..1000).fold("i".to_owned(), |k, _| between(Some(&k), None));
        assert!(appended.len() <= 1000 / 30, "{} characters: {appended}", appended.len());
    }
}
