//! Vary: each variant is stored and served to the requests it matches.

use crate::support::{Client, Origin, Proxy, Reply};

#[tokio::test]
async fn variants_are_stored_separately_and_served_to_matching_requests() {
    let origin = Origin::start(|s| {
        Reply::ok(format!(
            "lang={}",
            s.header("accept-language").unwrap_or("none")
        ))
        .header("Cache-Control", "max-age=60")
        .header("Vary", "Accept-Language")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let en = c
        .get_with(&proxy.url("/v"), &[("Accept-Language", "en")])
        .await;
    let fr = c
        .get_with(&proxy.url("/v"), &[("Accept-Language", "fr")])
        .await;
    let en2 = c
        .get_with(&proxy.url("/v"), &[("Accept-Language", "en")])
        .await;
    let fr2 = c
        .get_with(&proxy.url("/v"), &[("Accept-Language", "fr")])
        .await;
    let none = c.get(&proxy.url("/v")).await;
    assert_eq!(en.text(), "lang=en");
    assert_eq!(fr.text(), "lang=fr");
    assert_eq!(en2.text(), "lang=en");
    assert_eq!(fr2.text(), "lang=fr");
    assert_eq!(none.text(), "lang=none");
    assert!(en2.is_fresh_hit());
    assert!(fr2.is_fresh_hit());
    assert_eq!(origin.hits("/v"), 3);
}

#[tokio::test]
async fn accept_encoding_spellings_share_a_variant() {
    let origin = Origin::start(|s| {
        let enc = s.header("accept-encoding").unwrap_or("");
        let body = if enc.contains("gzip") {
            "gzip-body"
        } else {
            "identity-body"
        };
        Reply::ok(body)
            .header("Cache-Control", "max-age=60")
            .header("Vary", "Accept-Encoding")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let a = c
        .get_with(&proxy.url("/ae"), &[("Accept-Encoding", "gzip, deflate")])
        .await;
    let b = c
        .get_with(&proxy.url("/ae"), &[("Accept-Encoding", "deflate, GZIP")])
        .await;
    let plain = c
        .get_with(&proxy.url("/ae"), &[("Accept-Encoding", "identity")])
        .await;
    assert_eq!(a.text(), "gzip-body");
    assert_eq!(b.text(), "gzip-body");
    assert!(b.is_fresh_hit());
    assert_eq!(
        plain.text(),
        "identity-body",
        "a client that takes no gzip never gets it"
    );
    assert_eq!(origin.hits("/ae"), 2);
}

#[tokio::test]
async fn bodies_go_out_as_the_app_encoded_them() {
    let page = "<p>an anonymous page</p>\n".repeat(200);
    let served = page.clone();
    let origin = Origin::start(move |_| {
        Reply::ok(served.clone())
            .header("Content-Type", "text/html")
            .header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let gzip = [("Accept-Encoding", "gzip, br")];
    let miss = c.get_with(&proxy.url("/enc"), &gzip).await;
    let hit = c.get_with(&proxy.url("/enc"), &gzip).await;
    assert!(hit.is_fresh_hit());
    for r in [&miss, &hit] {
        assert_eq!(
            r.header("content-encoding"),
            None,
            "lacquer does not compress"
        );
        assert_eq!(r.text(), page, "the body is the app's, byte for byte");
        assert_eq!(
            r.header("content-length"),
            Some(page.len().to_string().as_str())
        );
    }
    assert_eq!(origin.hits("/enc"), 1);
}

#[tokio::test]
async fn vary_star_is_never_stored() {
    let origin = Origin::start(|_| {
        Reply::ok("x")
            .header("Cache-Control", "max-age=60")
            .header("Vary", "*")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/star")).await;
    let second = c.get(&proxy.url("/star")).await;
    assert!(second.fetched());
    assert_eq!(origin.hits("/star"), 2);
}

/// The app receives the `Accept-Encoding` of the variant the response will be stored under
/// (`br`, `gzip` or none), never the client's spelling: a "gzip, deflate" client must not
/// get a deflate body stored that a gzip-only client is then served. `q=0` refuses a coding,
/// `*` accepts both. Requests that bypass the cache keep the client's header.
#[tokio::test]
async fn the_app_receives_the_normalised_accept_encoding() {
    let origin = Origin::start(|_| Reply::ok("x").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let cases = [
        ("gzip, deflate, br", Some("br, gzip")),
        ("gzip, deflate, br, zstd", Some("br, gzip, zstd")),
        ("gzip;q=0, br", Some("br")),
        ("br;q=0, gzip", Some("gzip")),
        ("br;q=0.0, gzip;q=0", None),
        ("deflate", None),
        ("identity", None),
        ("*", Some("br, gzip, zstd")),
        ("x-gzip", Some("gzip")),
        ("GZIP, deflate", Some("gzip")),
    ];
    for (i, (sent, want)) in cases.iter().enumerate() {
        let path = format!("/ae/{i}");
        let r = c
            .get_with(&proxy.url(&path), &[("Accept-Encoding", sent)])
            .await;
        assert_eq!(r.status, 200, "{sent}");
        let seen = origin.last(&path).expect("reached the app");
        assert_eq!(
            seen.header("accept-encoding"),
            *want,
            "the app got the wrong Accept-Encoding for {sent:?}"
        );
    }
    // a request that bypasses the cache is passed on as sent
    c.send(
        "POST",
        &proxy.url("/ae/post"),
        &[("Accept-Encoding", "gzip, deflate")],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(
        origin.last("/ae/post").unwrap().header("accept-encoding"),
        Some("gzip, deflate")
    );
    assert_eq!(origin.total(), cases.len() + 1);
}

/// An app that only knows gzip (Django's GZipMiddleware), and says `Vary: Accept-Encoding`
/// only when `vary` is set.
fn gzip_only_app(vary: bool) -> impl Fn(&crate::support::origin::Seen) -> Reply {
    move |s| {
        let gzip = s
            .header("accept-encoding")
            .is_some_and(|ae| ae.split(',').any(|c| c.trim() == "gzip"));
        let mut r = if gzip {
            Reply::ok("gzipped-bytes").header("Content-Encoding", "gzip")
        } else {
            Reply::ok("plain text")
        };
        r = r.header("Cache-Control", "max-age=60");
        if vary {
            r = r.header("Vary", "Accept-Encoding");
        }
        r
    }
}

#[tokio::test]
async fn a_gzip_only_app_still_compresses_for_a_browser_that_also_takes_br() {
    let origin = Origin::start(gzip_only_app(true)).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let browser = [("Accept-Encoding", "gzip, deflate, br")];
    let r = c.get_with(&proxy.url("/page"), &browser).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        origin.last("/page").unwrap().header("accept-encoding"),
        Some("br, gzip")
    );
    let hit = c.get_with(&proxy.url("/page"), &browser).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    // a client that takes only br has its own variant: never the gzip body
    let br = c
        .get_with(&proxy.url("/page"), &[("Accept-Encoding", "br")])
        .await;
    assert_eq!(br.header("content-encoding"), None);
    assert_eq!(br.text(), "plain text");
}

#[tokio::test]
async fn a_hit_never_carries_a_coding_the_client_did_not_accept_even_without_vary() {
    let origin = Origin::start(gzip_only_app(false)).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let gz = c
        .get_with(&proxy.url("/p"), &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let again = c
        .get_with(&proxy.url("/p"), &[("Accept-Encoding", "gzip")])
        .await;
    assert!(again.is_fresh_hit(), "{}", again.cache_status());
    assert_eq!(again.header("content-encoding"), Some("gzip"));
    assert_eq!(
        again.header("vary"),
        Some("Accept-Encoding"),
        "said on the stored copy"
    );
    let none = c
        .get_with(&proxy.url("/p"), &[("Accept-Encoding", "identity")])
        .await;
    assert_eq!(
        none.header("content-encoding"),
        None,
        "{}",
        none.cache_status()
    );
    assert_eq!(none.text(), "plain text");
    assert_eq!(origin.hits("/p"), 2);
}
