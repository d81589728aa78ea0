//! `Range: bytes=` (RFC 9110 §14): one range is served; several, or other units, are ignored
//! (a full 200 is a valid answer to those). [`respond`] serves a file that way.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ApiError;

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

/// Answers a download of `file` (`size` bytes long) as the `Range` in `headers` asks: 200 with
/// the whole content, 206 with the one range, or 416. Sets the content type, length,
/// disposition and range headers and `nosniff`; the caller may add more.
pub(crate) async fn respond(
    mut file: tokio::fs::File,
    size: u64,
    headers: &HeaderMap,
    content_type: HeaderValue,
    disposition: HeaderValue,
) -> std::io::Result<Response> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse(v, size));
    let (status, start, len) = match range {
        None | Some(Range::Ignore) => (StatusCode::OK, 0, size),
        Some(Range::Bytes { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(Range::Unsatisfiable) => {
            let mut res = ApiError::RangeNotSatisfiable.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(res)
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
