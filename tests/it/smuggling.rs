//! Request smuggling: ambiguous or malformed framing is refused with 400 (or handled so that
//! nothing after it is ever taken as a second request), and what a client sends after a
//! message's end never reaches the app as a request of its own. Each attack carries a
//! request for `/smuggled`: the origin must never see it.

use crate::support::{exchange, Origin, Proxy, RawConn, Reply};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::start(|_| Reply::ok("page").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    (origin, proxy)
}

/// Send `attack` on its own connection; assert one refusal (or one answer followed by a
/// close) and that nothing smuggled reached the app.
async fn assert_refused(proxy: &Proxy, origin: &Origin, name: &str, attack: &str) {
    let r = exchange(proxy.addr, attack.as_bytes()).await;
    let statuses = r.statuses();
    assert_eq!(statuses, vec![400], "{name}: {}", r.text());
    assert!(r.closed, "{name}: connection left open after a 400");
    assert_eq!(
        origin.hits("/smuggled"),
        0,
        "{name}: smuggled request reached the app"
    );
}

#[tokio::test]
async fn conflicting_or_invalid_content_lengths_are_400() {
    let (origin, proxy) = setup().await;
    let cases = [
        (
            "two different Content-Length",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a Content-Length list",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 37\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a signed Content-Length",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a Content-Length that is not a number",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x25\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, attack) in &cases {
        assert_refused(&proxy, &origin, name, attack).await;
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_never_forwarded_as_requests() {
    let (origin, proxy) = setup().await;
    let cases = [
        (
            "a chunk size that is not hex",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{SMUGGLED}"),
        ),
        (
            "an overflowing chunk size",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\n{SMUGGLED}"),
        ),
        (
            "an unknown transfer coding",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, attack) in &cases {
        let r = exchange(proxy.addr, attack.as_bytes()).await;
        // the header may already have been forwarded when the body turns out malformed: then
        // the answer is an error (400 or 502) and the connection closes; never a second answer
        let statuses = r.statuses();
        assert!(
            statuses.len() <= 1 && statuses.iter().all(|s| [400, 502].contains(s)),
            "{name}: {}",
            r.text()
        );
        assert!(r.closed, "{name}: connection left open");
        assert_eq!(
            origin.hits("/smuggled"),
            0,
            "{name}: smuggled request reached the app"
        );
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_never_lets_the_rest_through() {
    let (origin, proxy) = setup().await;
    // CL.TE: a front end trusting Content-Length would see one request; one trusting chunked
    // sees a second. RFC 9112 section 6.1: chunked wins and the connection must close.
    let attack = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let r = exchange(proxy.addr, attack.as_bytes()).await;
    assert!(r.statuses().len() <= 1, "{}", r.text());
    assert!(r.closed, "the connection must close after a CL+TE request");
    assert_eq!(origin.hits("/smuggled"), 0);
    // what the app got, if anything, has no Content-Length next to its Transfer-Encoding
    for seen in origin.seen() {
        assert!(
            !(seen.header("content-length").is_some()
                && seen.header("transfer-encoding").is_some()),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn bare_cr_obs_fold_and_http10_chunked_are_400() {
    let (origin, proxy) = setup().await;
    let cases = [
        (
            "a bare CR inside a header",
            format!("GET /a HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n{SMUGGLED}"),
        ),
        (
            "an obs-fold continuation line",
            format!("GET /a HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a space before the colon",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            format!("POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, attack) in &cases {
        assert_refused(&proxy, &origin, name, attack).await;
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn a_body_on_a_get_goes_to_the_app_as_a_body_never_as_a_request() {
    let (origin, proxy) = setup().await;
    let warm = exchange(proxy.addr, b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(warm.text().contains("stored"), "{}", warm.text());
    let mut conn = RawConn::connect(proxy.addr).await;
    let attack = format!(
        "GET /page HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let first = conn.exchange(attack.as_bytes()).await;
    assert_eq!(first.statuses(), vec![200], "{}", first.text());
    // a GET with a body bypasses the cache (security.md): the key ignores bodies
    assert!(
        first.text().contains("fwd=bypass") && first.text().contains("detail=body"),
        "{}",
        first.text()
    );
    // the same connection, if still open, answers the next real request, not /smuggled
    if !first.closed {
        let next = conn
            .exchange(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        assert_eq!(next.statuses(), vec![200], "{}", next.text());
        assert!(next.text().contains("lacquer; hit"), "{}", next.text());
    }
    assert_eq!(origin.hits("/smuggled"), 0);
    assert_eq!(origin.hits("/page"), 2);
    let with_body = origin
        .seen()
        .into_iter()
        .filter(|s| s.path() == "/page")
        .nth(1);
    assert_eq!(with_body.map(|s| s.body_len), Some(SMUGGLED.len()));
}

#[tokio::test]
async fn an_upgrade_the_app_does_not_accept_is_an_ordinary_request() {
    let (origin, proxy) = setup().await;
    // the app answers 200, not 101: the bytes after the header are not a tunnel
    let attack =
        format!("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n{SMUGGLED}");
    let r = exchange(proxy.addr, attack.as_bytes()).await;
    let statuses = r.statuses();
    assert!(!statuses.is_empty() && statuses.len() <= 2, "{}", r.text());
    // pipelined bytes are either refused or answered as the request they are, through the
    // proxy (one more response); never passed to the app raw behind the first request
    assert_eq!(origin.hits("/smuggled"), statuses.len() - 1, "{}", r.text());
    assert_eq!(origin.hits("/ws"), 1);
}
