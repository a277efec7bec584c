//! A client's conditional GET or HEAD against a stored response: whether a `304 Not Modified`
//! takes the place of the stored 200 (RFC 9110 sections 13.1.2, 13.1.3 and 13.2.2).
//!
//! pingora's own evaluation (`conditional_filter::not_modified_filter`) reads `If-Modified-Since`
//! and `Last-Modified` with `httpdate`, which refuses dates a cache must accept (the obsolete
//! forms with a wrong day name, any wrong case; see `http_date.rs`): such a stored response was
//! always answered in full. This is the same evaluation with lacquer's date reader; the `ETag`
//! comparison is pingora's.
//!
//! Not here: the validators lacquer sends to the app when it revalidates (pingora copies the
//! stored `ETag` and `Last-Modified` as they are).

use std::time::SystemTime;

use http::{header, Method, StatusCode};
use pingora_core::protocols::http::conditional_filter::weak_validate_etag;
use pingora_http::{RequestHeader, ResponseHeader};

use super::http_date;

/// Whether `req`'s preconditions make the answer from `stored` a 304.
///
/// `If-None-Match` takes precedence: with it, `If-Modified-Since` is ignored (section 13.2.2).
/// `If-Modified-Since` counts only on GET and HEAD, only with a valid date, and only against a
/// stored `Last-Modified` (section 13.1.3). Only a 200 is ever turned into a 304.
pub(crate) fn not_modified(req: &RequestHeader, stored: &ResponseHeader, now: SystemTime) -> bool {
    if stored.status != StatusCode::OK {
        return false;
    }
    if req.headers.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.headers.get(header::ETAG) else {
            return false;
        };
        return req
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|inm| weak_validate_etag(inm.as_bytes(), etag.as_bytes()));
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return false;
    }
    let date = |v: Option<&http::HeaderValue>| v.and_then(|v| http_date::parse(v.as_bytes(), now));
    match (
        date(req.headers.get(header::IF_MODIFIED_SINCE)),
        date(stored.headers.get(header::LAST_MODIFIED)),
    ) {
        (Some(since), Some(modified)) => since >= modified,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn stored(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn if_modified_since_in_every_form_against_last_modified_in_every_form() {
        let now = SystemTime::now();
        for (lm, ims, want) in [
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Sun, 06 Nov 1994 08:49:37 GMT",
                true,
            ),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Sun, 06 Nov 1994 08:49:36 GMT",
                false,
            ),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Mon, 07 Nov 1994 08:49:37 GMT",
                true,
            ),
            (
                "Sun Nov  6 08:49:37 1994",
                "Sun, 06 Nov 1994 08:49:37 GMT",
                true,
            ),
            (
                "Thu Nov  6 08:49:37 1994",
                "Sun, 06 Nov 1994 08:49:37 GMT",
                true,
            ),
            (
                "SUN, 06 NOV 1994 08:49:37 GMT",
                "Sunday, 06-Nov-94 08:49:37 GMT",
                true,
            ),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "sunday, 06-nov-94 08:49:37 gmt",
                true,
            ),
            ("Sun, 06 Nov 1994 08:49:37 GMT", "yesterday", false),
            ("garbage", "Sun, 06 Nov 1994 08:49:37 GMT", false),
        ] {
            let r = req("GET", &[("If-Modified-Since", ims)]);
            let s = stored(200, &[("Last-Modified", lm)]);
            assert_eq!(not_modified(&r, &s, now), want, "LM {lm:?}, IMS {ims:?}");
        }
    }

    #[test]
    fn if_none_match_decides_first_and_only_200_for_get_or_head() {
        let now = SystemTime::now();
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let s = stored(200, &[("ETag", "\"v1\""), ("Last-Modified", lm)]);
        let ims = ("If-Modified-Since", lm);
        assert!(not_modified(
            &req("GET", &[("If-None-Match", "\"v1\"")]),
            &s,
            now
        ));
        assert!(not_modified(
            &req("GET", &[("If-None-Match", "W/\"v1\"")]),
            &s,
            now
        ));
        // a failing If-None-Match wins over a matching If-Modified-Since
        assert!(!not_modified(
            &req("GET", &[("If-None-Match", "\"v2\""), ims]),
            &s,
            now
        ));
        assert!(not_modified(&req("HEAD", &[ims]), &s, now));
        assert!(!not_modified(&req("POST", &[ims]), &s, now));
        assert!(!not_modified(
            &req("GET", &[ims]),
            &stored(404, &[("Last-Modified", lm)]),
            now
        ));
        assert!(!not_modified(&req("GET", &[]), &s, now));
    }
}
