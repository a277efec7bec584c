//! `Range` on responses from memory: pingora's range filter, with the one case it gets wrong
//! answered as RFC 9110 section 14.1.2 says.
//!
//! A suffix range of zero bytes (`bytes=-0`), or any range of an empty object, is not
//! satisfiable; pingora answers it with a 206 whose `Content-Range` reads `bytes 10--1/10`.

use pingora_http::ResponseHeader;
use pingora_proxy::{range_header_filter, RangeType, Session};

/// The most ranges one request may ask for before `Range` is ignored (pingora's default).
const MAX_RANGES: Option<usize> = Some(200);

/// Apply the request's `Range` to `resp`, a response about to be served from memory.
pub(crate) fn header_filter(session: &Session, resp: &mut ResponseHeader) -> RangeType {
    let range = range_header_filter(session.req_header(), resp, MAX_RANGES);
    match range {
        RangeType::Single(r) if r.is_empty() => not_satisfiable(resp),
        other => other,
    }
}

/// Turn the 206 pingora prepared into a 416 with `Content-Range: bytes */length`.
fn not_satisfiable(resp: &mut ResponseHeader) -> RangeType {
    let length = resp
        .headers
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once('/'))
        .map(|(_, len)| len.to_string())
        .unwrap_or_else(|| "*".to_string());
    let _ = resp.set_status(416);
    resp.remove_header(&http::header::CONTENT_TYPE);
    let headers = [
        (http::header::CONTENT_LENGTH, "0".to_string()),
        (http::header::CONTENT_RANGE, format!("bytes */{length}")),
    ];
    for (name, value) in headers {
        let _ = resp.insert_header(name, value);
    }
    RangeType::Invalid
}
