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
    assert!(en2.is_hit());
    assert!(fr2.is_hit());
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
    assert!(b.is_hit());
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
    assert!(hit.is_hit());
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
    assert!(!second.is_hit());
    assert_eq!(origin.hits("/star"), 2);
}
