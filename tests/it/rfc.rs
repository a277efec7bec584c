//! Conformance points found by the HTTP caching test suite (cache-tests.fyi), each checked
//! through the real binary: HTTP-dates in every form (RFC 9110 section 5.6.7, RFC 9111
//! section 4.2).

use std::time::SystemTime;

use crate::support::{Client, Origin, Proxy, Reply};

/// A value `Expires` is given for each path, with `Date` now; the valid ones are fresh for
/// decades, the invalid ones mean "already expired" (RFC 9111 section 5.3). The values are the
/// suite's (`freshness-expires-*` in tests/expires-parse.mjs).
const EXPIRES: [(&str, &str, bool); 13] = [
    ("/imf", "Thu, 18 Aug 2050 02:01:18 GMT", true),
    ("/rfc850", "Thursday, 18-Aug-50 02:01:18 GMT", true),
    // 2050-08-08 is a Monday: the suite's own example names the wrong day
    ("/asctime", "Thu Aug  8 02:01:18 2050", true),
    ("/weekday-case", "THU, 18 Aug 2050 02:01:18 GMT", true),
    ("/month-case", "Thu, 18 AUG 2050 02:01:18 GMT", true),
    ("/tz-case", "Thu, 18 Aug 2050 02:01:18 gMT", true),
    ("/utc", "Thu, 18 Aug 2050 02:01:18 UTC", false),
    ("/two-digit-year", "Thu, 18 Aug 50 02:01:18 GMT", false),
    ("/no-comma", "Thu 18 Aug 2050 02:01:18 GMT", false),
    ("/spaces", "Thu, 18  Aug  2050 02:01:18 GMT", false),
    ("/dashes", "Thu, 18-Aug-2050 02:01:18 GMT", false),
    ("/periods", "Thu, 18 Aug 2050 02.01.18 GMT", false),
    ("/one-digit-hour", "Thu, 18 Aug 2050 2:01:18 GMT", false),
];

#[tokio::test]
async fn expires_is_read_in_the_obsolete_forms_and_in_any_case() {
    let origin = Origin::start(|s| {
        let expires = EXPIRES
            .iter()
            .find(|(p, _, _)| *p == s.path())
            .map_or("", |(_, e, _)| *e);
        Reply::ok(s.path().to_string())
            .header("Expires", expires)
            .header("Date", &httpdate::fmt_http_date(SystemTime::now()))
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for (path, expires, valid) in EXPIRES {
        let first = c.get(&proxy.url(path)).await;
        assert_eq!(first.status, 200, "{path}");
        let second = c.get(&proxy.url(path)).await;
        assert_eq!(second.text(), path);
        if valid {
            assert!(
                second.is_fresh_hit(),
                "Expires {expires:?} must be read: {}",
                second.cache_status()
            );
            assert_eq!(origin.hits(path), 1, "{path}");
        } else {
            assert!(
                second.fetched(),
                "Expires {expires:?} is invalid, so already expired: {}",
                second.cache_status()
            );
            assert_eq!(origin.hits(path), 2, "{path}");
        }
    }
}

/// `Expires - Date` is the lifetime (RFC 9111 section 4.2.1): a `Date` in an obsolete form or
/// the wrong case is read too, not replaced by lacquer's clock (which would make a 1994
/// `Expires` long past).
#[tokio::test]
async fn date_is_read_in_the_obsolete_forms_and_in_any_case() {
    let origin = Origin::start(|s| {
        let date = match s.path() {
            "/rfc850" => "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "/asctime" => "sun nov  6 08:49:37 1994",
            _ => "Sun, 06 Nov 1994 08:49:37 GMT",
        };
        Reply::ok("x")
            .header("Date", date)
            .header("Expires", "Sun, 06 Nov 1994 08:59:37 GMT")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for path in ["/imf", "/rfc850", "/asctime"] {
        c.get(&proxy.url(path)).await;
        let again = c.get(&proxy.url(path)).await;
        assert!(again.is_fresh_hit(), "{path}: {}", again.cache_status());
        assert_eq!(origin.hits(path), 1, "{path}");
    }
}

/// A client's `If-Modified-Since` against a stored `Last-Modified` in the asctime form with a
/// wrong day name and upper case: the dates are equal, so the hit is a 304.
#[tokio::test]
async fn if_modified_since_matches_a_last_modified_in_an_obsolete_form() {
    let origin = Origin::start(|_| {
        Reply::ok("page")
            .header("Cache-Control", "max-age=3600")
            .header("Last-Modified", "MON NOV  6 08:49:37 1994")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/lm")).await;
    let ims = [("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")];
    let not_modified = c.get_with(&proxy.url("/lm"), &ims).await;
    assert_eq!(not_modified.status, 304, "{}", not_modified.cache_status());
    assert!(not_modified.body.is_empty());
    assert!(
        not_modified.is_fresh_hit(),
        "{}",
        not_modified.cache_status()
    );
    let earlier = [("If-Modified-Since", "Sunday, 06-Nov-94 08:49:36 GMT")];
    let modified = c.get_with(&proxy.url("/lm"), &earlier).await;
    assert_eq!(modified.status, 200);
    assert_eq!(modified.text(), "page");
    assert_eq!(origin.hits("/lm"), 1);
}
