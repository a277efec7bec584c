//! What a hostile client cannot do to other visitors through the cache.

use crate::support::{Client, Origin, Proxy, Reply};

#[tokio::test]
async fn unkeyed_headers_cannot_change_what_others_are_served() {
    let origin = Origin::start(|s| {
        let reflected: Vec<String> = [
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "forwarded",
        ]
        .iter()
        .filter_map(|h| s.header(h).map(|v| format!("{h}={v}")))
        .collect();
        Reply::ok(format!(
            "<a href=\"//{}/next\">{}</a>",
            s.header("x-forwarded-host").unwrap_or("site"),
            reflected.join(";")
        ))
        .header("Cache-Control", "max-age=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    let attack = c
        .get_with(
            &proxy.url("/page"),
            &[
                ("X-Forwarded-Host", "evil.example"),
                ("X-Original-URL", "/admin"),
                ("X-HTTP-Method-Override", "DELETE"),
                ("Forwarded", "host=evil.example"),
            ],
        )
        .await;
    assert!(!attack.text().contains("evil"), "{}", attack.text());
    let victim = c.get(&proxy.url("/page")).await;
    assert!(victim.is_hit());
    assert_eq!(victim.text(), "<a href=\"//site/next\"></a>");
    let seen = origin.last("/page").unwrap();
    assert!(seen.header("x-forwarded-host").is_none());
    assert!(seen.header("x-original-url").is_none());
    assert!(seen.header("x-http-method-override").is_none());

    // requests that bypass the cache reach the app unchanged: nobody else is served them
    let logged_in = c
        .get_with(
            &proxy.url("/page"),
            &[("Cookie", "sid=1"), ("X-Forwarded-Host", "me.example")],
        )
        .await;
    assert!(logged_in.text().contains("me.example"));
}
