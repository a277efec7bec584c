//! Table tests of the freshness rules (RFC 9111, RFC 9213).
use super::*;
use NoStoreReason::*;

const DEFAULTS: FreshnessDefaults = FreshnessDefaults {
    default_ttl: None,
    force_ttl: None,
    strip_set_cookie: false,
    stale_while_revalidate: Duration::ZERO,
    stale_if_error: Duration::ZERO,
    max_object_size: 1 << 20,
};

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn lifetime(status: u16, headers: &[(&str, &str)]) -> Result<u64, NoStoreReason> {
    match assess(&resp(status, headers), &DEFAULTS, SystemTime::now()) {
        Storability::Store(f) => Ok(f.lifetime.as_secs()),
        Storability::DontStore(r) => Err(r),
    }
}

#[test]
fn lifetimes_and_refusals() {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let cases: Vec<(u16, Vec<(&str, &str)>, Result<u64, NoStoreReason>)> = vec![
        (200, vec![("Cache-Control", "max-age=60")], Ok(60)),
        (200, vec![("Cache-Control", "MAX-AGE=60")], Ok(60)),
        (
            200,
            vec![("Cache-Control", "max-age=60, s-maxage=5")],
            Ok(5),
        ),
        (200, vec![("Cache-Control", "public")], Err(NoFreshness)),
        (200, vec![], Err(NoFreshness)),
        (
            200,
            vec![("Cache-Control", "no-store, max-age=60")],
            Err(NoStore),
        ),
        (
            200,
            vec![("Cache-Control", "Private, max-age=60")],
            Err(Private),
        ),
        (
            200,
            vec![("Cache-Control", "private=\"x-user\", max-age=60")],
            Ok(60),
        ),
        (200, vec![("Cache-Control", "no-cache, max-age=60")], Ok(0)),
        (200, vec![("Cache-Control", "no-cache")], Ok(0)),
        (200, vec![("Cache-Control", "max-age=abc")], Ok(0)),
        (
            200,
            vec![("Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")],
            Err(SetCookie),
        ),
        (
            200,
            vec![("Cache-Control", "max-age=60"), ("Vary", "Accept, *")],
            Err(VaryStar),
        ),
        (200, vec![("Expires", "garbage")], Ok(0)),
        (
            200,
            vec![("Expires", in_an_hour.as_str()), ("Date", date.as_str())],
            Ok(3600),
        ),
        (
            200,
            vec![
                ("Expires", in_an_hour.as_str()),
                ("Expires", in_an_hour.as_str()),
            ],
            Ok(0),
        ),
        (
            200,
            vec![
                ("Cache-Control", "max-age=10"),
                ("Expires", in_an_hour.as_str()),
            ],
            Ok(10),
        ),
        (301, vec![("Cache-Control", "max-age=600")], Ok(600)),
        (404, vec![("Cache-Control", "max-age=30")], Ok(30)),
        (410, vec![("Cache-Control", "max-age=30")], Ok(30)),
        (500, vec![("Cache-Control", "max-age=30")], Err(ErrorStatus)),
        // found by fuzzing (docs/fuzzing.md): junk or repeated values never lengthen a lifetime
        (200, vec![("Cache-Control", "max-age=4294967296x")], Ok(0)),
        (200, vec![("Cache-Control", "max-age=+60")], Ok(0)),
        (
            200,
            vec![("Cache-Control", "max-age=99999999999999999999")],
            Ok(1 << 31),
        ),
        (
            200,
            vec![("Cache-Control", "max-age=0, max-age=31536000")],
            Ok(0),
        ),
        (
            200,
            vec![
                ("Cache-Control", "max-age=60"),
                ("Cache-Control", "max-age=600"),
            ],
            Ok(60),
        ),
        (
            200,
            vec![("Cache-Control", "private, private=x, max-age=60")],
            Err(Private),
        ),
        (
            200,
            vec![("Cache-Control", "private=x, private, max-age=60")],
            Err(Private),
        ),
        (
            200,
            vec![("Cache-Control", "no-cache, no-cache=x, max-age=60")],
            Ok(0),
        ),
        (400, vec![("Cache-Control", "max-age=30")], Err(ErrorStatus)),
        (
            403,
            vec![("Cache-Control", "public, max-age=30")],
            Err(ErrorStatus),
        ),
        (
            431,
            vec![("Cache-Control", "s-maxage=30")],
            Err(ErrorStatus),
        ),
        (503, vec![("Cache-Control", "max-age=30")], Err(ErrorStatus)),
        (405, vec![("Cache-Control", "max-age=30")], Err(ErrorStatus)),
        (206, vec![("Cache-Control", "max-age=30")], Err(Status)),
        (304, vec![("Cache-Control", "max-age=30")], Err(Status)),
        (
            200,
            vec![
                ("Cache-Control", "max-age=30"),
                ("Content-Length", "2000000"),
            ],
            Err(TooLarge),
        ),
        // CDN-Cache-Control governs lacquer and replaces Cache-Control entirely (RFC 9213)
        (
            200,
            vec![
                ("Cache-Control", "private"),
                ("CDN-Cache-Control", "max-age=90"),
            ],
            Ok(90),
        ),
        (
            200,
            vec![
                ("Cache-Control", "max-age=90"),
                ("CDN-Cache-Control", "no-store"),
            ],
            Err(NoStore),
        ),
        (
            200,
            vec![
                ("CDN-Cache-Control", "public"),
                ("Expires", in_an_hour.as_str()),
            ],
            Err(NoFreshness),
        ),
    ];
    for (status, headers, want) in cases {
        assert_eq!(lifetime(status, &headers), want, "{status} {headers:?}");
    }
}

#[test]
fn origin_age_counts_against_freshness() {
    let r = resp(200, &[("Cache-Control", "max-age=3600"), ("Age", "7200")]);
    let Storability::Store(f) = assess(&r, &DEFAULTS, SystemTime::now()) else {
        panic!("storable")
    };
    assert_eq!(f.initial_age, Duration::from_secs(7200));
    assert!(!f.fresh_on_arrival());
    let r = resp(200, &[("Cache-Control", "max-age=3600"), ("Age", "10")]);
    let Storability::Store(f) = assess(&r, &DEFAULTS, SystemTime::now()) else {
        panic!("storable")
    };
    assert!(f.fresh_on_arrival());
}

#[test]
fn heuristic_freshness_only_when_configured() {
    let table = TtlTable {
        any: Some(Duration::from_secs(120)),
        by_status: Vec::new(),
    };
    let d = FreshnessDefaults {
        default_ttl: Some(&table),
        ..DEFAULTS
    };
    let now = SystemTime::now();
    assert!(
        matches!(assess(&resp(200, &[]), &d, now), Storability::Store(f) if f.lifetime.as_secs() == 120)
    );
    assert!(matches!(
        assess(&resp(404, &[]), &d, now),
        Storability::Store(_)
    ));
    assert_eq!(
        assess(&resp(500, &[]), &d, now),
        Storability::DontStore(ErrorStatus)
    );
    assert_eq!(
        assess(&resp(414, &[]), &d, now),
        Storability::DontStore(ErrorStatus)
    );
    assert_eq!(
        assess(&resp(302, &[]), &d, now),
        Storability::DontStore(NoFreshness)
    );
}

#[test]
fn stale_windows_follow_directives() {
    let d = FreshnessDefaults {
        stale_while_revalidate: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(300),
        ..DEFAULTS
    };
    let now = SystemTime::now();
    let w = |h: &[(&str, &str)]| match assess(&resp(200, h), &d, now) {
        Storability::Store(f) => (f.stale_while_revalidate, f.stale_if_error),
        _ => panic!("storable"),
    };
    assert_eq!(w(&[("Cache-Control", "max-age=1")]), (10, 300));
    assert_eq!(
        w(&[(
            "Cache-Control",
            "max-age=1, stale-while-revalidate=5, stale-if-error=7"
        )]),
        (5, 7)
    );
    assert_eq!(
        w(&[("Cache-Control", "max-age=1, must-revalidate")]),
        (0, 0)
    );
    assert_eq!(
        w(&[("Cache-Control", "s-maxage=1, stale-while-revalidate=5")]),
        (0, 0)
    );
    assert_eq!(w(&[("Cache-Control", "no-cache")]), (0, 0));
}

#[test]
fn qualified_private_fields_are_stripped() {
    let mut r = resp(
        200,
        &[
            ("Cache-Control", "private=\"x-user\", max-age=60"),
            ("X-User", "alice"),
            ("X-Other", "1"),
        ],
    );
    strip_qualified_fields(&mut r);
    assert!(r.headers.get("x-user").is_none());
    assert!(r.headers.get("x-other").is_some());
    // every occurrence counts, not only the last one
    let mut two = resp(
        200,
        &[
            (
                "Cache-Control",
                "private=\"x-a\", no-cache=\"x-b, x-c\", private=\"x-d\"",
            ),
            ("X-A", "1"),
            ("X-B", "1"),
            ("X-C", "1"),
            ("X-D", "1"),
            ("X-Other", "1"),
        ],
    );
    strip_qualified_fields(&mut two);
    for gone in ["x-a", "x-b", "x-c", "x-d"] {
        assert!(two.headers.get(gone).is_none(), "{gone}");
    }
    assert!(two.headers.get("x-other").is_some());
}

#[test]
fn age_takes_the_first_member_and_overflows_to_2_pow_31() {
    let age = |v: &str| age_header(&resp(200, &[("Age", v)])).as_secs();
    assert_eq!(age("30"), 30);
    assert_eq!(age("5, 10"), 5);
    assert_eq!(age("99999999999999999999"), 1 << 31);
    assert_eq!(age("junk"), 0);
    assert_eq!(age("-5"), 0);
}

#[test]
fn per_status_default_lifetimes() {
    let table = TtlTable {
        any: None,
        by_status: vec![
            (200, Duration::from_secs(60)),
            (302, Duration::from_secs(5)),
        ],
    };
    let d = FreshnessDefaults {
        default_ttl: Some(&table),
        ..DEFAULTS
    };
    let now = SystemTime::now();
    let lifetime = |status| match assess(&resp(status, &[]), &d, now) {
        Storability::Store(f) => Some(f.lifetime.as_secs()),
        Storability::DontStore(_) => None,
    };
    assert_eq!(lifetime(200), Some(60));
    assert_eq!(
        lifetime(302),
        Some(5),
        "a listed status needs no heuristic cacheability"
    );
    assert_eq!(lifetime(404), None, "an unlisted status gets no default");
}

#[test]
fn forced_lifetimes_override_the_app_but_not_cookies_or_errors() {
    let forced = TtlTable {
        any: Some(Duration::from_secs(300)),
        by_status: vec![(404, Duration::from_secs(10))],
    };
    let d = FreshnessDefaults {
        force_ttl: Some(&forced),
        ..DEFAULTS
    };
    let now = SystemTime::now();
    let lifetime = |status, h: &[(&str, &str)], d: &FreshnessDefaults| match assess(
        &resp(status, h),
        d,
        now,
    ) {
        Storability::Store(f) => Ok(f.lifetime.as_secs()),
        Storability::DontStore(r) => Err(r),
    };
    for cc in ["private", "no-store", "no-cache", "max-age=0"] {
        assert_eq!(lifetime(200, &[("Cache-Control", cc)], &d), Ok(300), "{cc}");
    }
    assert_eq!(lifetime(404, &[], &d), Ok(10));
    assert_eq!(lifetime(500, &[], &d), Err(ErrorStatus));
    assert_eq!(lifetime(200, &[("Vary", "*")], &d), Err(VaryStar));
    let cookie = [("Set-Cookie", "a=1"), ("Cache-Control", "max-age=60")];
    assert_eq!(lifetime(200, &cookie, &d), Err(SetCookie));
    let stripping = FreshnessDefaults {
        strip_set_cookie: true,
        ..d
    };
    assert_eq!(lifetime(200, &cookie, &stripping), Ok(300));
    // a status the table does not cover falls back to what the app says
    assert_eq!(lifetime(302, &[("Cache-Control", "max-age=7")], &d), Ok(7));
}

/// RFC 9110 section 5.6.7 and RFC 9111 section 4.2: `Expires` and `Date` in any of the three
/// HTTP-date forms, in any case; a zone other than GMT is an invalid `Expires` (stale).
#[test]
fn expires_and_date_in_every_http_date_form() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    for (expires, date, want) in [
        ("Sun, 06 Nov 1994 08:50:37 GMT", date, 60),
        ("Sunday, 06-Nov-94 08:50:37 GMT", date, 60),
        ("Sun Nov  6 08:50:37 1994", date, 60),
        ("SUN, 06 NOV 1994 08:50:37 gmt", date, 60),
        (
            "Sun, 06 Nov 1994 08:50:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            60,
        ),
        (
            "Sun, 06 Nov 1994 08:50:37 GMT",
            "sun nov  6 08:49:37 1994",
            60,
        ),
        ("Sun, 06 Nov 1994 08:50:37 UTC", date, 0),
        ("Sun, 06  Nov 1994 08:50:37 GMT", date, 0),
    ] {
        assert_eq!(
            lifetime(200, &[("Expires", expires), ("Date", date)]),
            Ok(want),
            "Expires {expires:?}, Date {date:?}"
        );
    }
}

/// RFC 9213 section 2.1: `CDN-Cache-Control` is a Structured Field Dictionary; when it is not
/// one, or a lifetime has a value of the wrong type, it is ignored as a whole and
/// `Cache-Control` (and `Expires`) apply. The caching test suite's `cdn-*` cases are marked.
#[test]
fn an_invalid_cdn_cache_control_is_ignored_as_a_whole() {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let cdn = |cdn: &'static str, cc: &'static str| {
        vec![("CDN-Cache-Control", cdn), ("Cache-Control", cc)]
    };
    let cases: Vec<(Vec<(&str, &str)>, Result<u64, NoStoreReason>)> = vec![
        // cdn-cc-invalid-sh-type-unknown, cdn-cc-invalid-sh-type-wrong
        (cdn("max-age=10000, &&&&&", "no-store"), Err(NoStore)),
        (cdn("max-age=\"10000\"", "no-store"), Err(NoStore)),
        (cdn("max-age=1.5", "max-age=30"), Ok(30)),
        (cdn("max-age=-1", "max-age=30"), Ok(30)),
        (cdn("max-age=(1 2)", "max-age=30"), Ok(30)),
        (cdn("max-age=?1", "max-age=30"), Ok(30)),
        (cdn("s-maxage=abc, max-age=60", "max-age=30"), Ok(30)),
        (
            cdn("stale-if-error=\"5\", max-age=60", "max-age=30"),
            Ok(30),
        ),
        // cdn-max-age-space-before-equals, -after-equals (checks)
        (cdn("max-age =100", "max-age=1"), Ok(1)),
        (cdn("max-age= 100", "max-age=1"), Ok(1)),
        // a Dictionary's keys are lower-case (cdn-max-age-case-insensitive, a check)
        (cdn("MaX-aGe=3600", "max-age=1"), Ok(1)),
        (cdn("max-age=60,", "max-age=1"), Ok(1)),
        (cdn("", "max-age=30"), Ok(30)),
        (cdn("max-age=3600", "max-age=1"), Ok(3600)),
        (cdn("foobar, max-age=3600", "max-age=1"), Ok(3600)),
        (cdn("max-age=60;foo=bar", "max-age=1"), Ok(60)),
        (cdn("max-age=99999999999", "max-age=1"), Ok(1 << 31)),
        // a Dictionary keeps the last of a repeated key (RFC 8941 section 4.2.2)
        (cdn("max-age=0, max-age=90", "max-age=1"), Ok(90)),
        // restrictions count whatever their value; private/no-cache are qualified by names only
        (cdn("no-store=1, max-age=60", "max-age=30"), Err(NoStore)),
        (cdn("no-store=?0, max-age=60", "max-age=30"), Err(NoStore)),
        (cdn("private=5, max-age=60", "max-age=30"), Err(Private)),
        (cdn("private=\"x-user\", max-age=60", "private"), Ok(60)),
        (cdn("no-cache=?1, max-age=60", "max-age=30"), Ok(0)),
        (
            vec![
                ("CDN-Cache-Control", "max-age=60"),
                ("CDN-Cache-Control", "no-store"),
                ("Cache-Control", "max-age=30"),
            ],
            Err(NoStore),
        ),
        // ignored as a whole: Expires applies again
        (
            vec![
                ("CDN-Cache-Control", "max-age=\"5\""),
                ("Expires", in_an_hour.as_str()),
                ("Date", date.as_str()),
            ],
            Ok(3600),
        ),
        (
            vec![("CDN-Cache-Control", "max-age=\"5\"")],
            Err(NoFreshness),
        ),
    ];
    for (headers, want) in cases {
        assert_eq!(lifetime(200, &headers), want, "{headers:?}");
    }
}
