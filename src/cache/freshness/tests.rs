//! Table tests of the freshness rules (RFC 9111, RFC 9213).
use super::*;
use NoStoreReason::*;

const DEFAULTS: FreshnessDefaults = FreshnessDefaults {
    default_ttl: None,
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
    let d = FreshnessDefaults {
        default_ttl: Some(Duration::from_secs(120)),
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
