//! The browser client (`web/`): embedded into release builds (read from the source tree in debug
//! builds) and served for GET requests outside `/api/` and `/ws/`. The pages route by URL hash,
//! so the only paths are the files themselves and `/`.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../web/"]
#[exclude = "tests/*"]
#[exclude = "*.md"]
struct Assets;

/// Scripts and styles come only from the server itself; media arrives over WebRTC, not URLs.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; \
                   media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The router's fallback: a client file, or the JSON 404 for everything API-shaped.
pub(crate) async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let api = ["/api", "/ws"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    if api || !(method == Method::GET || method == Method::HEAD) || path.split('/').any(|s| s == "..") {
        return ApiError::NotFound("route").into_response();
    }
    // A folder's page is its index.html (`/` and `/dashboard/`).
    let name = format!(
        "{}{}",
        path.trim_start_matches('/'),
        if path.ends_with('/') { "index.html" } else { "" }
    );
    let name = name.as_str();
    let Some(file) = Assets::get(name) else {
        return ApiError::NotFound("file").into_response();
    };
    // Hex of the SHA-256: always a valid header value.
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    // No build step means no hashed file names: browsers revalidate every time.
    let cache = [
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (ETAG, etag.clone()),
    ];
    if headers.get(IF_NONE_MATCH) == Some(&etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type(name))),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        ],
        cache,
        file.data,
    )
        .into_response()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
