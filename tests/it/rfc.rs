//! Conformance points found by the HTTP caching test suite (cache-tests.fyi), each checked
//! through the real binary: HTTP-dates in every form (RFC 9110 section 5.6.7, RFC 9111
//! section 4.2), the stored `Date` on hits (RFC 9110 section 6.6.1), an invalid
//! `CDN-Cache-Control` (RFC 9213 section 2.1), and invalidation by any unsafe method (RFC 9111
//! section 4.4).

use std::time::{Duration, SystemTime};

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

/// A cache must not replace `Date` (the suite's `other-date-update`): a hit carries the `Date`
/// it was stored with, and `Age` counts the time since it was stored; a relayed response
/// carries the app's `Date`. A response without one, or with one that is no HTTP-date, is
/// stored with the time it came in.
#[tokio::test]
async fn responses_keep_their_date_on_a_miss_and_on_a_hit() {
    let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(10));
    let sent = date.clone();
    let origin = Origin::start(move |s| {
        let r = Reply::ok("dated").header("Cache-Control", "max-age=3600");
        match s.path() {
            "/undated" => r,
            "/junk-date" => r.header("Date", "yesterday"),
            "/uncached" => Reply::ok("u").header("Date", &sent),
            _ => r.header("Date", &sent),
        }
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();

    let miss = c.get(&proxy.url("/dated")).await;
    assert_eq!(
        miss.header("date"),
        Some(date.as_str()),
        "the app's Date, relayed"
    );
    let relayed = c.get(&proxy.url("/uncached")).await;
    assert!(relayed.fetched());
    assert_eq!(relayed.header("date"), Some(date.as_str()));

    let before = SystemTime::now() - Duration::from_secs(1);
    for path in ["/undated", "/junk-date"] {
        let r = c.get(&proxy.url(path)).await;
        let date = r.header("date").unwrap_or("");
        assert!(
            httpdate::parse_http_date(date).is_ok(),
            "{path}: lacquer's Date, not {date:?}"
        );
    }

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hit = c.get(&proxy.url("/dated")).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("date"), Some(date.as_str()), "the stored Date");
    let age: u64 = hit.header("age").unwrap_or("").parse().unwrap_or(0);
    assert!(age >= 2, "Age counts the time since it was stored: {age}");

    for path in ["/undated", "/junk-date"] {
        let hit = c.get(&proxy.url(path)).await;
        assert!(hit.is_fresh_hit(), "{path}: {}", hit.cache_status());
        let stored = hit
            .header("date")
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .expect("a Date");
        assert!(
            stored >= before && stored + Duration::from_secs(2) <= SystemTime::now(),
            "{path}: the time it was received, stored: {:?}",
            hit.header("date")
        );
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    assert_eq!(origin.hits("/dated"), 1);
}

/// RFC 9213 section 2.1: a `CDN-Cache-Control` that is not a valid Structured Field
/// Dictionary, or gives `max-age` a value of the wrong type, is ignored as a whole, and
/// `Cache-Control` decides (the suite's `cdn-cc-invalid-sh-type-unknown` and
/// `cdn-cc-invalid-sh-type-wrong`).
#[tokio::test]
async fn an_invalid_cdn_cache_control_is_ignored_and_cache_control_applies() {
    let origin = Origin::start(|s| {
        let (cdn, cc) = match s.path() {
            "/syntax" => ("max-age=10000, &&&&&", "no-store"),
            "/string" => ("max-age=\"10000\"", "no-store"),
            "/decimal" => ("max-age=1.5", "max-age=60"),
            "/string-cc-fresh" => ("max-age=\"0\"", "max-age=60"),
            _ => ("max-age=60", "no-store"),
        };
        Reply::ok(s.path().to_string())
            .header("CDN-Cache-Control", cdn)
            .header("Cache-Control", cc)
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    for (path, stored) in [
        ("/syntax", false),
        ("/string", false),
        ("/decimal", true),
        ("/string-cc-fresh", true),
        ("/valid", true),
    ] {
        let first = c.get(&proxy.url(path)).await;
        let second = c.get(&proxy.url(path)).await;
        assert_eq!(second.text(), path);
        if stored {
            assert!(second.is_fresh_hit(), "{path}: {}", second.cache_status());
            assert_eq!(origin.hits(path), 1, "{path}");
        } else {
            assert!(
                first.cache_status().contains("detail=no-store"),
                "{path}: {}",
                first.cache_status()
            );
            assert!(second.fetched(), "{path}: {}", second.cache_status());
            assert_eq!(origin.hits(path), 2, "{path}");
        }
    }
}

/// RFC 9111 section 4.4: every method that is not safe invalidates its URL when it succeeds,
/// an extension method such as `M-SEARCH` (the suite's `invalidate-M-SEARCH`) too. It is
/// relayed to the app as it is. A safe method (`OPTIONS`) and a failed one invalidate nothing.
#[tokio::test]
async fn a_successful_unknown_method_invalidates_like_post() {
    let origin = Origin::start(|s| match (s.method.as_str(), s.path()) {
        ("GET", _) => {
            Reply::ok(format!("{} {}", s.method, s.path())).header("Cache-Control", "max-age=3600")
        }
        (_, "/failed") => Reply::ok("no").status(500),
        _ => Reply::ok(format!("{} done", s.method)),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let paths = ["/m-search", "/foo", "/options", "/failed"];
    for p in paths {
        c.get(&proxy.url(p)).await;
        assert!(c.get(&proxy.url(p)).await.is_fresh_hit(), "{p}");
    }
    for (method, path, status) in [
        ("M-SEARCH", "/m-search", 200),
        ("FOO", "/foo", 200),
        ("OPTIONS", "/options", 200),
        ("M-SEARCH", "/failed", 500),
    ] {
        let r = c
            .send(method, &proxy.url(path), &[], Some(b"abc".to_vec()))
            .await;
        assert_eq!(r.status, status, "{method} {path}");
        assert!(r.fetched(), "{method} {path}: {}", r.cache_status());
        if status == 200 {
            assert_eq!(r.text(), format!("{method} done"));
        }
        let seen = origin.last(path).expect("relayed");
        assert_eq!((seen.method.as_str(), seen.body_len), (method, 3));
    }
    for (path, invalidated) in [
        ("/m-search", true),
        ("/foo", true),
        ("/options", false),
        ("/failed", false),
    ] {
        let r = c.get(&proxy.url(path)).await;
        let gets = origin
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path() == path)
            .count();
        if invalidated {
            assert!(
                r.fetched(),
                "{path} was not invalidated: {}",
                r.cache_status()
            );
            assert_eq!(gets, 2, "{path}");
        } else {
            assert!(r.is_fresh_hit(), "{path}: {}", r.cache_status());
            assert_eq!(gets, 1, "{path}");
        }
    }
}
