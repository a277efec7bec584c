//! The response header as it is stored: built from the app's response (no `Age`, no
//! hop-by-hop fields, no fields named by `private="..."`/`no-cache="..."`), and updated with
//! every field of a 304 on revalidation (RFC 9111 section 3.2).

use std::time::{Duration, SystemTime};

use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

use super::freshness::{self, Freshness};
use super::http_date;

/// Hop-by-hop fields (RFC 9110 section 7.6.1) that must not be stored with an object.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// The stored header updated with a 304's fields (RFC 9111 section 3.2): every field of the 304
/// replaces the stored one, except `Content-Length` and hop-by-hop fields. pingora merges only
/// a handful of fields itself, so lacquer completes the merge before storing.
pub(crate) fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut merged = stored.clone();
    let mut replaced: Vec<http::HeaderName> = Vec::new();
    for (name, value) in not_modified.headers.iter() {
        let n = name.as_str();
        if n == "content-length" || HOP_BY_HOP.contains(&n) {
            continue;
        }
        // first line of a field replaces the stored field, later lines append to it
        let result = if replaced.contains(name) {
            merged
                .append_header(name.clone(), value.clone())
                .map(|_| ())
        } else {
            replaced.push(name.clone());
            merged.insert_header(name.clone(), value.clone())
        };
        if result.is_err() {
            log::debug!("could not merge header {n} from a 304");
        }
    }
    merged
}

/// Build the `CacheMeta` to store for `resp`, received `now` with freshness `f`.
///
/// The stored header loses `Age` (pingora recomputes it on every hit from the meta's epoch,
/// which is set back by the origin's Age), hop-by-hop fields, and the fields named by
/// `private="..."`/`no-cache="..."`; it gains a `Date` (the time received) if it has none, or
/// one that is no HTTP-date.
pub(crate) fn build_meta(resp: &ResponseHeader, f: &Freshness, now: SystemTime) -> CacheMeta {
    let mut header = resp.clone();
    freshness::strip_qualified_fields(&mut header);
    let listed: Vec<String> = header
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(listed) {
        header.remove_header(&name);
    }
    header.remove_header(&http::header::AGE);
    // only a rule's strip_set_cookie lets a response with Set-Cookie be stored: the cookie
    // was the filling visitor's, never every visitor's
    header.remove_header(&http::header::SET_COOKIE);
    header.remove_header("set-cookie2");
    // a body the app encoded depends on Accept-Encoding even when the app forgot to say so:
    // without the Vary, a gzip body would be served to a client that never accepted gzip
    if encoded(&header) && !super::vary::varies_on(&header, "accept-encoding") {
        if let Err(e) = header.append_header(http::header::VARY, "Accept-Encoding") {
            log::debug!("could not add Vary: {e}");
        }
    }
    // RFC 9110 section 6.6.1: a cache adds the Date a response lacks (or has as no
    // HTTP-date), so that its hits say when it was received (and Age counts from there)
    let dated = header
        .headers
        .get(http::header::DATE)
        .is_some_and(|d| http_date::parse(d.as_bytes(), now).is_some());
    if !dated {
        let _ = header.insert_header(http::header::DATE, httpdate::fmt_http_date(now));
    }

    let epoch = now.checked_sub(f.initial_age).unwrap_or(now);
    let fresh_until = if f.fresh_on_arrival() {
        epoch + f.lifetime
    } else {
        // already stale on arrival: stored for revalidation only
        now - Duration::from_secs(1)
    };
    let mut meta = CacheMeta::new(
        fresh_until,
        now,
        f.stale_while_revalidate,
        f.stale_if_error,
        header,
    );
    if !f.initial_age.is_zero() {
        meta.set_epoch_override(epoch);
    }
    meta
}

/// Whether the body carries a content coding other than identity.
fn encoded(header: &ResponseHeader) -> bool {
    header
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            v.as_bytes().split(|&b| b == b',').any(|c| {
                !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_accounts_for_origin_age_and_strips_hop_by_hop() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Age", "100").unwrap();
        resp.append_header("Connection", "close, x-hop").unwrap();
        resp.append_header("X-Hop", "1").unwrap();
        resp.append_header("X-Kept", "1").unwrap();
        let now = SystemTime::now();
        let f = Freshness {
            lifetime: Duration::from_secs(300),
            initial_age: Duration::from_secs(100),
            stale_while_revalidate: 0,
            stale_if_error: 0,
        };
        let meta = build_meta(&resp, &f, now);
        assert!(meta.age() >= Duration::from_secs(100));
        assert!(meta.is_fresh(now + Duration::from_secs(150)));
        assert!(!meta.is_fresh(now + Duration::from_secs(250)));
        assert!(meta.headers().get("age").is_none());
        assert!(meta.headers().get("connection").is_none());
        assert!(meta.headers().get("x-hop").is_none());
        assert!(meta.headers().get("x-kept").is_some());
        assert_eq!(
            meta.headers().get("date").unwrap(),
            &httpdate::fmt_http_date(now),
            "a response without Date is stored with the time it was received"
        );
        resp.append_header("Date", "yesterday").unwrap();
        let meta = build_meta(&resp, &f, now);
        assert_eq!(
            meta.headers().get("date").unwrap(),
            &httpdate::fmt_http_date(now),
            "nor is a Date that is no HTTP-date"
        );
        resp.insert_header("Date", "Sun Nov  6 08:49:37 1994")
            .unwrap();
        let meta = build_meta(&resp, &f, now);
        assert_eq!(
            meta.headers().get("date").unwrap(),
            "Sun Nov  6 08:49:37 1994"
        );
    }

    #[test]
    fn a_304_replaces_stored_fields_but_not_content_length() {
        let mut stored = ResponseHeader::build(200, None).unwrap();
        stored.append_header("Content-Length", "10").unwrap();
        stored.append_header("X-Version", "1").unwrap();
        stored.append_header("Content-Type", "text/html").unwrap();
        let mut nm = ResponseHeader::build(304, None).unwrap();
        nm.append_header("X-Version", "2").unwrap();
        nm.append_header("Content-Length", "0").unwrap();
        nm.append_header("Link", "</a>").unwrap();
        nm.append_header("Link", "</b>").unwrap();
        let merged = merge_not_modified(&stored, &nm);
        assert_eq!(merged.status.as_u16(), 200);
        assert_eq!(merged.headers.get("x-version").unwrap(), "2");
        assert_eq!(merged.headers.get("content-length").unwrap(), "10");
        assert_eq!(merged.headers.get("content-type").unwrap(), "text/html");
        assert_eq!(merged.headers.get_all("link").iter().count(), 2);
    }

    #[test]
    fn stale_on_arrival_is_stored_stale() {
        let resp = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        let f = Freshness {
            lifetime: Duration::from_secs(3600),
            initial_age: Duration::from_secs(7200),
            stale_while_revalidate: 0,
            stale_if_error: 0,
        };
        assert!(!build_meta(&resp, &f, now).is_fresh(now));
    }
}
