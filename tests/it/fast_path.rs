//! The hit fast path (`cache.fast_path`) changes nothing but speed.
//!
//! With the fast path on, plain fresh hits over HTTP/1 are answered in the connection layer
//! (`guard.rs`) instead of through pingora's phases. This differential test proves that a
//! client, the app, the metrics and the access log cannot tell the difference: two lacquers
//! with one config but `cache.fast_path`, each in front of its own copy of one deterministic
//! origin, are sent one corpus of raw requests in lockstep (case i to both, then compare),
//! and must give byte-for-byte the same answers:
//!
//! - every response: the status line, every header line in order (name case included) with
//!   the values of `Date` and `Age` masked and `Cache-Status`'s `ttl=N` allowed to differ by 1
//!   (a second may tick between the two), how the body is framed, and the body's bytes; and
//!   whether the connection is still usable afterwards (each case ends with a probe request on
//!   its connection, whose answer, or the close that takes its place, is compared too);
//! - what each app received: every request, in order, with its method, target, headers and
//!   body length;
//! - every `lacquer_` metric series but those that measure time (see [`compared_series`]);
//! - every access log line, with its timestamps and durations masked.
//!
//! The corpus ([`corpus`]) covers what a hit can meet: HEAD, Vary, tracking parameters, tag
//! headers and `CDN-Cache-Control`, cookies, `Authorization`, conditionals, ranges, purges
//! and soft purges, stale objects, rules, HTTP/1.0, `Connection: close`, keep-alive and
//! pipelining, malformed requests, bodies, underscores, absolute-form targets, `Expect` and
//! `Upgrade`. Where both proxies do the same questionable thing (a pipelined request left
//! unanswered, say) this test passes: it asserts sameness, not correctness; the other modules
//! assert correctness. It cannot pass because the fast path is never taken: it asserts that
//! the fast-path proxy took it, and [`the_fast_path_serves_plain_hits_and_can_be_switched_off`]
//! that the switch works.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::origin::Seen;
use crate::support::{Client, Counter, Origin, Proxy, Reply};

/// The fast path's own counter: the one series the two proxies must not agree on.
const FAST_PATH_HITS: &str = "lacquer_fast_path_hits_total";

/// Sent on each case's connection after the case, to see whether the connection is still
/// usable (and, being a plain hit after the first time, one more chance for the fast path).
const PROBE: &str = "GET /probe HTTP/1.1\r\nHost: site.example\r\n\r\n";

/// Differing cases shown in full (request, both transcripts) in a failure; those after are
/// listed in a line each (one difference often brings others after it).
const SHOWN_IN_FULL: usize = 3;

/// How long one response may take to begin and end. Every origin answer is immediate; a
/// response still missing after this is missing (a pipelined request left unanswered).
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn the_fast_path_changes_nothing_but_speed() {
    let (fast, slow) = tokio::join!(Side::start(true), Side::start(false));
    let mut failures = Vec::new();
    let mut differing_cases = 0;
    let started = Instant::now();
    for (i, step) in corpus().into_iter().enumerate() {
        match step {
            Step::Send(case) => {
                let (a, b) = tokio::join!(run(fast.proxy.addr, &case), run(slow.proxy.addr, &case));
                if let Some(difference) = compare(&a, &b) {
                    differing_cases += 1;
                    failures.push(if differing_cases <= SHOWN_IN_FULL {
                        format!(
                            "case {i}, {}:\n{difference}\n--- request bytes:\n{}\n--- fast path on:\n{}\n--- fast path off:\n{}",
                            case.what,
                            escape(&case.bytes()),
                            render_all(&a),
                            render_all(&b),
                        )
                    } else {
                        format!("case {i}, {}: {difference}", case.what)
                    });
                }
            }
            Step::At(at, _why) => {
                tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
            }
            Step::Refreshed(n, why) => {
                for side in [&fast, &slow] {
                    if !side.refreshed(n).await {
                        failures.push(format!(
                            "step {i}: {why}: {} did not finish {n} background refreshes",
                            side.name
                        ));
                    }
                }
            }
        }
    }

    // the app saw the same requests, in the same order
    let (seen_fast, seen_slow) = (seen(&fast.origin), seen(&slow.origin));
    if seen_fast != seen_slow {
        failures.push(format!(
            "the apps were asked different things\nrequests per path, where they differ:\n{}{}",
            per_path_difference(&fast.origin, &slow.origin),
            first_difference(&seen_fast, &seen_slow),
        ));
    }

    // the access logs: one line per request, equal but for times (written in the background:
    // read once both have stopped growing). Compared as multisets: a line is written when its
    // request's logging phase ends, which may come after the client has its response and has
    // sent the next request, so two close requests log in either order, on either proxy
    let (log_fast, log_slow) = settled_logs(&fast, &slow).await;
    if let Some(d) = multiset_difference(&log_fast, &log_slow) {
        failures.push(format!(
            "the access logs differ ({} lines with the fast path, {} without):\n{d}",
            log_fast.len(),
            log_slow.len(),
        ));
    }

    // the metrics (recorded as each request ends: polled until they agree, or 5 s)
    let deadline = Instant::now() + Duration::from_secs(5);
    let (difference, compared) = loop {
        let (m_fast, m_slow) = tokio::join!(fast.metrics(), slow.metrics());
        let difference = metrics_difference(&m_fast, &m_slow);
        if difference.is_none() || Instant::now() > deadline {
            break (difference, m_slow);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(d) = difference {
        failures.push(format!("the metrics differ:\n{d}"));
    }

    // nothing above compared two empty sets: the series, the log and the app's requests are there
    let hits = compared.get("lacquer_requests_total{cache_status=\"hit\",reason=\"\"}");
    if hits.is_none_or(|n| n == "0") || log_slow.len() < 100 || seen_slow.len() < 50 {
        failures.push(format!(
            "too little was compared: hits {hits:?}, {} log lines, {} requests to the app",
            log_slow.len(),
            seen_slow.len()
        ));
    }

    // and the comparison was not of the slow path with itself
    // (+ 0.0: an absent series sums to -0.0)
    let taken = fast.proxy.metric(FAST_PATH_HITS).await + 0.0;
    if taken <= 0.0 {
        failures.push(format!(
            "{FAST_PATH_HITS} is {taken} on the fast-path proxy: the corpus never took the fast path"
        ));
    }
    let untaken = slow.proxy.metric(FAST_PATH_HITS).await + 0.0;
    if untaken != 0.0 {
        failures.push(format!(
            "{FAST_PATH_HITS} is {untaken} with cache.fast_path: false"
        ));
    }

    assert!(
        failures.is_empty(),
        "{} difference(s) between fast path on and off:\n\n{}",
        failures.len(),
        failures.join("\n\n==========\n\n")
    );
}

#[tokio::test]
async fn the_fast_path_serves_plain_hits_and_can_be_switched_off() {
    for fast_path in [true, false] {
        let origin = Origin::start(site()).await;
        let proxy = Proxy::start(
            &[origin.addr],
            &format!("cache:\n  fast_path: {fast_path}\n"),
        )
        .await;
        let get = "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n";
        let miss = run(proxy.addr, &Case::one("a miss", get)).await;
        assert!(
            miss.answers[0].text().contains("fwd=miss"),
            "{}",
            render_all(&miss)
        );
        assert_eq!(
            proxy.metric(FAST_PATH_HITS).await,
            0.0,
            "a miss is no fast-path hit"
        );
        let hit = run(proxy.addr, &Case::one("a hit", get)).await;
        assert!(
            hit.answers[0].text().contains("lacquer; hit; ttl="),
            "{}",
            render_all(&hit)
        );
        // the probe after each case (a miss, then a hit) counts too
        let expected = if fast_path { 2.0 } else { 0.0 };
        let mut counted = proxy.metric(FAST_PATH_HITS).await + 0.0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while counted != expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            counted = proxy.metric(FAST_PATH_HITS).await + 0.0;
        }
        assert_eq!(
            counted, expected,
            "fast_path: {fast_path}: {FAST_PATH_HITS}"
        );
        assert_eq!(origin.hits("/page"), 1);
    }
}

#[tokio::test]
async fn a_reload_changes_what_fast_hits_of_stored_pages_strip() {
    // the fast path notes per object what its stored header needs, which depends on
    // `purge.strip_tag_headers`: a reload must not leave it writing a page as the old config
    // had it
    let origin = Origin::start(|_| {
        Reply::ok("tagged page")
            .header("Cache-Control", "max-age=300")
            .header("Surrogate-Key", "post-1")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "purge:\n  strip_tag_headers: false\n").await;
    let c = Client::new();
    let url = proxy.url("/post/1");
    c.get(&url).await;
    let hit = c.get(&url).await;
    assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("surrogate-key"), Some("post-1"), "kept");
    proxy.rewrite_config(&[origin.addr], "");
    proxy.signal("HUP");
    let mut stripped = false;
    for _ in 0..50 {
        let hit = c.get(&url).await;
        assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
        if hit.header("surrogate-key").is_none() {
            stripped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stripped,
        "after the reload, hits of the stored page lose its tag header"
    );
    assert!(
        proxy.metric(FAST_PATH_HITS).await >= 2.0,
        "answered by the fast path"
    );
    assert_eq!(origin.hits("/post/1"), 1);
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// One step of the corpus.
enum Step {
    /// Send a case to both proxies and compare what comes back.
    Send(Case),
    /// Wait until this long after the corpus began (for an object to go stale on both).
    At(Duration, &'static str),
    /// Wait until both proxies have finished this many background refreshes in all.
    Refreshed(usize, &'static str),
}

/// What one client does on one new connection.
struct Case {
    what: &'static str,
    /// Each write, with the requests it holds (their methods decide whether a body follows).
    writes: Vec<Vec<&'static str>>,
}

impl Case {
    /// One request.
    fn one(what: &'static str, request: &'static str) -> Case {
        Case {
            what,
            writes: vec![vec![request]],
        }
    }

    /// Every byte the case sends, for a failure message.
    fn bytes(&self) -> String {
        self.writes.iter().flatten().copied().collect()
    }
}

/// One request on a connection of its own.
fn one(what: &'static str, request: &'static str) -> Step {
    Step::Send(Case::one(what, request))
}

/// Requests one after the other on one keep-alive connection, each sent once the previous
/// answer is in.
fn keep_alive(what: &'static str, requests: &[&'static str]) -> Step {
    Step::Send(Case {
        what,
        writes: requests.iter().map(|r| vec![*r]).collect(),
    })
}

/// Requests written in one write, before any answer (HTTP/1.1 pipelining).
fn pipelined(what: &'static str, requests: &[&'static str]) -> Step {
    Step::Send(Case {
        what,
        writes: vec![requests.to_vec()],
    })
}

/// Every case, in order. The origin ([`site`]) numbers its renders per path (`X-Render`), so
/// an answer fetched once more on one side than on the other shows.
fn corpus() -> Vec<Step> {
    vec![
        // --- filled first, so that it is stale by the time it is asked for again
        one("a page with max-age=1 and stale-while-revalidate: miss", "GET /stale HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- a cacheable 1 KiB page
        one("1 KiB page: miss", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("1 KiB page: hit", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("1 KiB page: hit again", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("HEAD on a hit", "HEAD /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("HEAD on a miss (fills the GET entry)", "HEAD /head-first HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("GET after a HEAD miss: hit", "GET /head-first HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a browser-like hit", "GET /page HTTP/1.1\r\nHost: site.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nReferer: http://site.example/\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nPriority: u=0, i\r\n\r\n"),
        one("host in upper case and with the default port", "GET /page HTTP/1.1\r\nHost: SITE.example:80\r\n\r\n"),
        one("host with a trailing dot", "GET /page HTTP/1.1\r\nHost: site.example.\r\n\r\n"),
        one("host with another port: another key", "GET /page HTTP/1.1\r\nHost: site.example:8080\r\n\r\n"),
        one("another host: a miss", "GET /page HTTP/1.1\r\nHost: other.example\r\n\r\n"),
        one("path in another case: another key", "GET /PAGE HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("an empty query", "GET /page? HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a percent-encoded path", "GET /%70age HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a double slash", "GET //page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- a larger body
        one("64 KiB page: miss", "GET /big HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("64 KiB page: hit", "GET /big HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("64 KiB page: HEAD", "HEAD /big HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("chunked from the app: miss", "GET /chunked HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("chunked from the app: hit", "GET /chunked HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("empty body: miss", "GET /empty HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("empty body: hit", "GET /empty HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("204: miss", "GET /no-content HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("204: hit", "GET /no-content HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("404 with max-age: miss", "GET /gone HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("404 with max-age: hit", "GET /gone HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("301 with max-age: miss", "GET /moved HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("301 with max-age: hit", "GET /moved HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("no-store: miss", "GET /no-store HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("no-store: miss again", "GET /no-store HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Set-Cookie: not stored", "GET /sets-cookie HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Set-Cookie: hit-for-miss", "GET /sets-cookie HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- Vary
        one("Vary: Accept-Encoding, gzip: miss", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip\r\n\r\n"),
        one("Vary: Accept-Encoding, gzip: hit", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip\r\n\r\n"),
        one("Vary: Accept-Encoding, a browser's spelling", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n"),
        one("Vary: Accept-Encoding, the same again", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n"),
        one("Vary: Accept-Encoding, another order and case", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: BR, Deflate, GZip\r\n\r\n"),
        one("Vary: Accept-Encoding, none", "GET /enc HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Vary: Accept-Encoding, none again", "GET /enc HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Vary: Accept-Encoding, gzip refused with q=0", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip;q=0, deflate\r\n\r\n"),
        one("Vary: Accept-Encoding, identity", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: identity\r\n\r\n"),
        one("Vary: Accept-Encoding, two fields", "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: deflate\r\nAccept-Encoding: gzip\r\n\r\n"),
        one("Vary: Accept-Language, en: miss", "GET /lang HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\n\r\n"),
        one("Vary: Accept-Language, en: hit", "GET /lang HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\n\r\n"),
        one("Vary: Accept-Language, de: miss", "GET /lang HTTP/1.1\r\nHost: site.example\r\nAccept-Language: de\r\n\r\n"),
        one("Vary: Accept-Language, none: miss", "GET /lang HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Vary: Accept-Language, de: hit", "GET /lang HTTP/1.1\r\nHost: site.example\r\nAccept-Language: de\r\n\r\n"),
        one("Vary: Accept-Language, none: hit", "GET /lang HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // a URL remembered as uncacheable (one of its variants was not storable) while another
        // variant is stored fresh: with a stripped cookie it goes to the app (hit-for-miss)
        one("mixed Vary, en: miss", "GET /lang-mixed HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\n\r\n"),
        one("mixed Vary, en: hit", "GET /lang-mixed HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\n\r\n"),
        one("mixed Vary, xx: not storable", "GET /lang-mixed HTTP/1.1\r\nHost: site.example\r\nAccept-Language: xx\r\n\r\n"),
        one("mixed Vary, en with an analytics cookie: hit-for-miss", "GET /lang-mixed HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\nCookie: _ga=GA1.2.3\r\n\r\n"),
        one("mixed Vary, en without cookies: hit", "GET /lang-mixed HTTP/1.1\r\nHost: site.example\r\nAccept-Language: en\r\n\r\n"),
        // --- tracking parameters share the key, and never reach the app
        one("tracking parameters: miss", "GET /tracked?id=1&utm_source=news HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("tracking parameters: other ones, hit", "GET /tracked?gclid=abc&id=1 HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("tracking parameters: none, hit", "GET /tracked?id=1 HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("only tracking parameters: the page's key", "GET /page?utm_campaign=x&fbclid=y HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a parameter that is not tracking: another key", "GET /tracked?id=2&utm_medium=mail HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- tag headers and CDN-Cache-Control are not passed on
        one("tags and CDN-Cache-Control: miss", "GET /tagged HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("tags and CDN-Cache-Control: hit", "GET /tagged HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("purge by tag", "PURGE / HTTP/1.1\r\nHost: site.example\r\nxkey-purge: k-tagged\r\n\r\n"),
        one("tagged page after its tag's purge: miss", "GET /tagged HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- cookies (bypass.session_cookies: [sessionid])
        one("cookie page: miss", "GET /cookie HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("cookie page: a session cookie bypasses", "GET /cookie HTTP/1.1\r\nHost: site.example\r\nCookie: sessionid=abc123\r\n\r\n"),
        one("cookie page: an analytics and a preference cookie, hit", "GET /cookie HTTP/1.1\r\nHost: site.example\r\nCookie: _ga=GA1.2.3.4; theme=dark\r\n\r\n"),
        one("cookie page: the session cookie among others", "GET /cookie HTTP/1.1\r\nHost: site.example\r\nCookie: theme=dark; sessionid=abc123\r\n\r\n"),
        one("cookie page: two Cookie fields", "GET /cookie HTTP/1.1\r\nHost: site.example\r\nCookie: theme=dark\r\nCookie: sessionid=abc123\r\n\r\n"),
        one("cookie page: an empty Cookie field", "GET /cookie HTTP/1.1\r\nHost: site.example\r\nCookie: \r\n\r\n"),
        // --- Authorization
        one("Authorization bypasses", "GET /page HTTP/1.1\r\nHost: site.example\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n"),
        one("Authorization on a HEAD", "HEAD /page HTTP/1.1\r\nHost: site.example\r\nAuthorization: Bearer t0ken\r\n\r\n"),
        // --- conditionals
        one("If-None-Match with the stored ETag: 304", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: \"page-v1\"\r\n\r\n"),
        one("If-None-Match, weak form: 304", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: W/\"page-v1\"\r\n\r\n"),
        one("If-None-Match, a list", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: \"old\", \"page-v1\"\r\n\r\n"),
        one("If-None-Match: *", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: *\r\n\r\n"),
        one("If-None-Match, another ETag: 200", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: \"other\"\r\n\r\n"),
        one("If-Modified-Since, the Last-Modified: 304", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n"),
        one("If-Modified-Since, earlier: 200", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-Modified-Since: Tue, 20 Oct 2015 07:28:00 GMT\r\n\r\n"),
        one("If-Modified-Since, not a date", "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-Modified-Since: yesterday\r\n\r\n"),
        one("HEAD with If-None-Match", "HEAD /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: \"page-v1\"\r\n\r\n"),
        one("no-cache stored page: miss", "GET /revalidate HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("no-cache stored page: revalidated (the app says 304)", "GET /revalidate HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- ranges
        one("Range, one range: 206", "GET /big HTTP/1.1\r\nHost: site.example\r\nRange: bytes=0-99\r\n\r\n"),
        one("Range, a suffix", "GET /big HTTP/1.1\r\nHost: site.example\r\nRange: bytes=-10\r\n\r\n"),
        one("Range, open-ended", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=1000-\r\n\r\n"),
        one("Range, past the end: 416", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=5000-6000\r\n\r\n"),
        one("Range, not a range", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: pages=1\r\n\r\n"),
        one("Range, two ranges", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=0-9,20-29\r\n\r\n"),
        one("Range with If-Range, the ETag", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=0-9\r\nIf-Range: \"page-v1\"\r\n\r\n"),
        one("Range with If-Range, another ETag", "GET /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=0-9\r\nIf-Range: \"other\"\r\n\r\n"),
        one("HEAD with a Range", "HEAD /page HTTP/1.1\r\nHost: site.example\r\nRange: bytes=0-9\r\n\r\n"),
        // --- purges
        one("a page to purge: miss", "GET /purge-me HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a page to purge: hit", "GET /purge-me HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("PURGE of its URL", "PURGE /purge-me HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("after the purge: miss again", "GET /purge-me HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("after the purge: hit", "GET /purge-me HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("PURGE of a URL that is not stored", "PURGE /never HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a page to soft-purge: miss", "GET /soft HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a page to soft-purge: hit", "GET /soft HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("soft PURGE of its URL", "PURGE /soft HTTP/1.1\r\nHost: site.example\r\nSoft-Purge: 1\r\n\r\n"),
        one("after the soft purge: stale, refreshed in the background", "GET /soft HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        Step::Refreshed(1, "the soft-purged /soft is refreshed"),
        one("after the refresh: a fresh hit of the new version", "GET /soft HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- rules: force_ttl on /forced/*, pass on /pass/*
        one("force_ttl rule over private: miss", "GET /forced/a HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("force_ttl rule over private: hit", "GET /forced/a HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("pass rule: to the app", "GET /pass/a HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("pass rule: to the app again", "GET /pass/a HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("pass rule, matched as apps read the path", "GET /pass/%61 HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- HTTP/1.0 and connection handling
        one("HTTP/1.0 hit", "GET /page HTTP/1.0\r\nHost: site.example\r\n\r\n"),
        one("HTTP/1.0 hit with Connection: keep-alive", "GET /page HTTP/1.0\r\nHost: site.example\r\nConnection: keep-alive\r\n\r\n"),
        one("HTTP/1.0 HEAD with Connection: keep-alive", "HEAD /page HTTP/1.0\r\nHost: site.example\r\nConnection: keep-alive\r\n\r\n"),
        one("HTTP/1.0 without Host", "GET /page HTTP/1.0\r\n\r\n"),
        one("HTTP/1.0 miss with Connection: keep-alive", "GET /one-oh HTTP/1.0\r\nHost: site.example\r\nConnection: keep-alive\r\n\r\n"),
        one("HTTP/1.1 hit with Connection: close", "GET /page HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"),
        one("HTTP/1.1 hit with Connection: Close, keep-alive tokens", "GET /page HTTP/1.1\r\nHost: site.example\r\nConnection: keep-alive, Close\r\n\r\n"),
        one("HTTP/1.1 HEAD with Connection: close", "HEAD /big HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"),
        one("HTTP/1.1 miss with Connection: close", "GET /closing HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n"),
        keep_alive(
            "several requests on one keep-alive connection",
            &[
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "HEAD /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /big HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /enc HTTP/1.1\r\nHost: site.example\r\nAccept-Encoding: gzip\r\n\r\n",
                "GET /kept-alive HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /page HTTP/1.1\r\nHost: site.example\r\nIf-None-Match: \"page-v1\"\r\n\r\n",
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
            ],
        ),
        keep_alive(
            "a hit after a bypassed POST with a body on one connection",
            &[
                "POST /form HTTP/1.1\r\nHost: site.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\ntitle=Hello",
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
            ],
        ),
        pipelined(
            "three pipelined hits",
            &[
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /big HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /probe HTTP/1.1\r\nHost: site.example\r\n\r\n",
            ],
        ),
        pipelined(
            "two pipelined hits, HEAD then GET",
            &[
                "HEAD /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
            ],
        ),
        pipelined(
            "a pipelined miss between two hits",
            &[
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /pipelined-miss HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
            ],
        ),
        pipelined(
            "a pipelined hit, then one asking to close",
            &[
                "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n",
                "GET /big HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n",
            ],
        ),
        // --- at last /stale is past its freshness
        Step::At(Duration::from_millis(2200), "/stale (max-age=1) was filled 2.2 s ago"),
        one("a stale page with stale-while-revalidate: served stale", "GET /stale HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        Step::Refreshed(2, "the stale /stale is refreshed"),
        one("after its refresh: a fresh hit", "GET /stale HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- malformed requests
        one("a header line without a colon", "GET /page HTTP/1.1\r\nHost: site.example\r\nThis is no header\r\n\r\n"),
        one("an invalid Host", "GET /page HTTP/1.1\r\nHost: bad/host\r\n\r\n"),
        one("two Host fields", "GET /page HTTP/1.1\r\nHost: site.example\r\nHost: other.example\r\n\r\n"),
        one("no Host in HTTP/1.1", "GET /page HTTP/1.1\r\n\r\n"),
        one("an empty Host", "GET /page HTTP/1.1\r\nHost: \r\n\r\n"),
        one("a target that is not a path", "GET page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a target with a fragment", "GET /page#top HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("the asterisk target on a GET", "GET * HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a space before the colon", "GET /page HTTP/1.1\r\nHost: site.example\r\nAccept : */*\r\n\r\n"),
        one("an obs-fold line", "GET /page HTTP/1.1\r\nHost: site.example\r\nX-Folded: one\r\n two\r\n\r\n"),
        one("bare LF line ends", "GET /page HTTP/1.1\nHost: site.example\n\n"),
        one("an unknown version", "GET /page HTTP/1.2\r\nHost: site.example\r\n\r\n"),
        one("HTTP/2.0 on the request line", "GET /page HTTP/2.0\r\nHost: site.example\r\n\r\n"),
        one("two spaces in the request line", "GET  /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("no version", "GET /page\r\nHost: site.example\r\n\r\n"),
        one("a NUL byte in a header value", "GET /page HTTP/1.1\r\nHost: site.example\r\nX-Nul: a\0b\r\n\r\n"),
        one("garbage", "\x16\x03\x01\x00\x25\x01\x00\x00\x21\x03\x03\r\n\r\n"),
        // --- the guard's limits (the defaults: 8 KiB of URL, 32 KiB of header, 100 fields)
        one("a URL over limits.max_url_length: 414", leak(format!("GET /page?q={} HTTP/1.1\r\nHost: site.example\r\n\r\n", "a".repeat(9000)))),
        one("a header over limits.max_header_size: 431", leak(format!("GET /page HTTP/1.1\r\nHost: site.example\r\nX-Big: {}\r\n\r\n", "b".repeat(33 * 1024)))),
        one("more fields than limits.max_headers: 431", leak(format!("GET /page HTTP/1.1\r\nHost: site.example\r\n{}\r\n", "X-Many: 1\r\n".repeat(101)))),
        one("a header just within the limits: hit", leak(format!("GET /page HTTP/1.1\r\nHost: site.example\r\nX-Big: {}\r\n\r\n", "b".repeat(30 * 1024)))),
        // --- bodies
        one("a POST with a body", "POST /form HTTP/1.1\r\nHost: site.example\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
        one("a chunked POST", "POST /form HTTP/1.1\r\nHost: site.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        one("the form page: miss", "GET /form HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("the form page: hit", "GET /form HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("a GET with Content-Length: 0", "GET /page HTTP/1.1\r\nHost: site.example\r\nContent-Length: 0\r\n\r\n"),
        one("a GET with a body", "GET /page HTTP/1.1\r\nHost: site.example\r\nContent-Length: 4\r\n\r\nbody"),
        one("a HEAD with a chunked body", "HEAD /page HTTP/1.1\r\nHost: site.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        one("two Content-Length fields", "GET /page HTTP/1.1\r\nHost: site.example\r\nContent-Length: 0\r\nContent-Length: 4\r\n\r\nbody"),
        // --- other request fields a hit may carry
        one("an underscore header name", "GET /page HTTP/1.1\r\nHost: site.example\r\nX_Forwarded_Host: evil.example\r\n\r\n"),
        one("an unkeyed header", "GET /page HTTP/1.1\r\nHost: site.example\r\nX-Forwarded-Host: evil.example\r\n\r\n"),
        one("X-Forwarded-For from an untrusted client", "GET /page HTTP/1.1\r\nHost: site.example\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"),
        one("absolute-form target", "GET http://site.example/page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("absolute-form target naming another host", "GET http://other.example/page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("absolute-form target with a port", "GET http://site.example:80/page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("Cache-Control: no-cache from the client (fetched again)", "GET /page HTTP/1.1\r\nHost: site.example\r\nCache-Control: no-cache\r\n\r\n"),
        one("Cache-Control: max-age=0 from the client", "GET /page HTTP/1.1\r\nHost: site.example\r\nCache-Control: max-age=0\r\n\r\n"),
        one("Pragma: no-cache from the client (fetched again)", "GET /page HTTP/1.1\r\nHost: site.example\r\nPragma: no-cache\r\n\r\n"),
        one("Expect: 100-continue on a GET", "GET /page HTTP/1.1\r\nHost: site.example\r\nExpect: 100-continue\r\n\r\n"),
        one("Expect: 100-continue on a POST, body sent at once", "POST /form HTTP/1.1\r\nHost: site.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"),
        one("an unknown Expect", "GET /page HTTP/1.1\r\nHost: site.example\r\nExpect: something-else\r\n\r\n"),
        one("Upgrade: websocket", "GET /page HTTP/1.1\r\nHost: site.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
        one("Upgrade: h2c", "GET /page HTTP/1.1\r\nHost: site.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
        one("TE: trailers", "GET /page HTTP/1.1\r\nHost: site.example\r\nTE: trailers\r\nConnection: TE\r\n\r\n"),
        one("Max-Forwards", "GET /page HTTP/1.1\r\nHost: site.example\r\nMax-Forwards: 0\r\n\r\n"),
        one("OPTIONS", "OPTIONS /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("the 1 KiB page at the end: still a hit", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        // --- methods are case-sensitive: `get` and `FROB` are unknown methods, and their 2xx
        // invalidates the URL like a POST's
        one("a method in lower case", "get /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("after it: a miss", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("an unknown method", "FROB /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("after it: a miss", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
        one("and a hit", "GET /page HTTP/1.1\r\nHost: site.example\r\n\r\n"),
    ]
}

/// The app behind both proxies: every answer a function of the request and of how many times
/// its path was asked for (`X-Render`), never of the time. Called once per origin.
fn site() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let renders = Counter::default();
    move |req: &Seen| {
        let path = req.path().to_string();
        let n = renders.bump(&path);
        let cacheable = |body: Vec<u8>| {
            Reply::ok(body)
                .header("Content-Type", "text/html; charset=utf-8")
                .header("Cache-Control", "public, max-age=300")
                .header("X-Render", &n.to_string())
        };
        let versioned = || format!("{path}, version {n}").into_bytes();
        match (req.method.as_str(), path.as_str()) {
            ("POST", _) => Reply::ok(format!("thanks for {} bytes", req.body_len))
                .header("Cache-Control", "no-store"),
            (_, "/page") => cacheable(pattern(1024))
                .header("ETag", "\"page-v1\"")
                .header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            (_, "/big") => cacheable(pattern(64 * 1024)).header("ETag", "\"big-v1\""),
            (_, "/chunked") => cacheable(pattern(3000)).chunked(),
            (_, "/empty") => cacheable(Vec::new()),
            (_, "/no-content") => cacheable(Vec::new()).status(204),
            (_, "/gone") => cacheable(b"not here".to_vec()).status(404),
            (_, "/moved") => cacheable(b"see /page".to_vec())
                .status(301)
                .header("Location", "/page"),
            (_, "/no-store") => Reply::ok(versioned()).header("Cache-Control", "no-store"),
            (_, "/sets-cookie") => Reply::ok(versioned())
                .header("Cache-Control", "max-age=300")
                .header("Set-Cookie", "sessionid=new; Path=/; HttpOnly"),
            (_, "/enc") => {
                let accepted = req.header("accept-encoding").unwrap_or("").to_string();
                let coding = ["br", "gzip"].into_iter().find(|c| accepted.contains(c));
                let reply = cacheable(
                    format!("{} bytes for [{accepted}]", coding.unwrap_or("plain")).into_bytes(),
                )
                .header("Vary", "Accept-Encoding");
                match coding {
                    Some(c) => reply.header("Content-Encoding", c),
                    None => reply,
                }
            }
            (_, "/lang") => {
                let lang = req.header("accept-language").unwrap_or("none").to_string();
                cacheable(format!("hello in {lang}").into_bytes())
                    .header("Vary", "Accept-Language")
                    .header("Content-Language", &lang)
            }
            (_, "/lang-mixed") => {
                let lang = req.header("accept-language").unwrap_or("none").to_string();
                let reply = Reply::ok(format!("hello in {lang}, version {n}").into_bytes())
                    .header("Vary", "Accept-Language");
                if lang == "xx" {
                    reply.header("Cache-Control", "no-store")
                } else {
                    reply.header("Cache-Control", "public, max-age=300")
                }
            }
            (_, "/tracked") => {
                cacheable(format!("the app was asked for {}", req.target).into_bytes())
            }
            (_, "/tagged") => cacheable(versioned())
                .header("X-Cache-Tags", "t-tagged t-all")
                .header("xkey", "k-tagged")
                .header("Surrogate-Key", "s-tagged s-all")
                .header("CDN-Cache-Control", "max-age=600"),
            (_, "/cookie") => cacheable(
                format!(
                    "the app saw cookies [{}]",
                    req.header("cookie").unwrap_or("")
                )
                .into_bytes(),
            ),
            (_, "/revalidate") => {
                if req.header("if-none-match") == Some("\"reval-v1\"") {
                    Reply::ok("")
                        .status(304)
                        .header("ETag", "\"reval-v1\"")
                        .header("X-Render", &n.to_string())
                } else {
                    Reply::ok(versioned())
                        .header("Cache-Control", "no-cache")
                        .header("ETag", "\"reval-v1\"")
                        .header("X-Render", &n.to_string())
                }
            }
            // the first copy goes stale within the corpus; its refresh stays fresh, so that
            // the hit after the refresh cannot find it stale on one side only
            (_, "/stale") if n == 1 => Reply::ok(versioned())
                .header("Cache-Control", "max-age=1, stale-while-revalidate=30")
                .header("X-Render", &n.to_string()),
            (_, p) if p.starts_with("/forced/") => Reply::ok(versioned())
                .header("Cache-Control", "private")
                .header("X-Render", &n.to_string()),
            (_, "/probe") => cacheable(b"probe".to_vec()),
            _ => cacheable(versioned()),
        }
    }
}

/// A request built at run time, kept for the whole test like the literal ones.
fn leak(request: String) -> &'static str {
    Box::leak(request.into_boxed_str())
}

/// `n` bytes of printable text that is not the same in every kilobyte.
fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i + i / 1024) % 36])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The two sides

/// One origin and the lacquer in front of it, with its access log.
struct Side {
    name: &'static str,
    origin: Origin,
    proxy: Proxy,
    log_dir: tempfile::TempDir,
}

impl Side {
    /// One side of the comparison: the same config but `cache.fast_path`.
    async fn start(fast_path: bool) -> Side {
        let origin = Origin::start(site()).await;
        let log_dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            r#"cache:
  fast_path: {fast_path}
bypass:
  session_cookies: ["sessionid"]
rules:
  - name: forced
    match: {{path: "/forced/*"}}
    force_ttl: "5m"
  - name: passed
    match: {{path: "/pass/*"}}
    pass: true
access_log:
  target: file
  path: "{}"
  format: json
"#,
            log_dir.path().join("access.log").display()
        );
        let proxy = Proxy::start(&[origin.addr], &config).await;
        Side {
            name: if fast_path {
                "the fast-path proxy"
            } else {
                "the proxy without fast path"
            },
            origin,
            proxy,
            log_dir,
        }
    }

    /// Whether this many background refreshes have finished (within 5 s).
    async fn refreshed(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .proxy
                .metric("lacquer_background_revalidations_total")
                .await
                >= n as f64
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The access log lines, each as JSON with what differs from run to run masked: the
    /// arrival time, the durations (`upstream_time` keeps whether there was one), and the
    /// origin's port in `upstream`.
    fn log(&self) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.log_dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
                    return format!("(not JSON) {line}");
                };
                v["time"] = "<time>".into();
                v["duration"] = "<duration>".into();
                if !v["upstream_time"].is_null() {
                    v["upstream_time"] = "<duration>".into();
                }
                if v["upstream"] == self.origin.addr.to_string() {
                    v["upstream"] = "<origin>".into();
                }
                v.to_string()
            })
            .collect()
    }

    /// The compared metric series ([`compared_series`]).
    async fn metrics(&self) -> BTreeMap<String, String> {
        let text = Client::new()
            .get(&format!("http://{}/metrics", self.proxy.admin))
            .await
            .text();
        compared_series(&text, self.origin.addr)
    }
}

/// Every `lacquer_` series of a `/metrics` page that the fast path must leave as it is, by
/// name and labels (the origin's address, which differs between the two sides, written
/// `<origin>`), with its value. Left out:
///
/// - the `_sum` and `_bucket` series of the histograms (`lacquer_request_duration_seconds`,
///   `lacquer_upstream_response_seconds`, `lacquer_coalesced_wait_seconds`, ...): they
///   measure time, which is what the fast path changes. Their `_count` is compared: every
///   request must still be observed once, with the same `cache_status`;
/// - `lacquer_fast_path_hits_total`, which counts what differs;
/// - every series not named `lacquer_`: the process collector's CPU time, memory, open file
///   descriptors and start time.
///
/// The cache gauges (`lacquer_cache_objects`, `lacquer_cache_bytes`) are compared: both
/// proxies store the same objects, and the admin app brings the gauges up to date before each
/// scrape.
fn compared_series(text: &str, origin: SocketAddr) -> BTreeMap<String, String> {
    let origin = origin.to_string();
    text.lines()
        .filter(|l| l.starts_with("lacquer_"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or(series);
            let timing = name.ends_with("_seconds_bucket") || name.ends_with("_seconds_sum");
            !timing && name != FAST_PATH_HITS
        })
        .map(|(series, value)| (series.replace(&origin, "<origin>"), value.to_string()))
        .collect()
}

/// What differs between two sets of series, or `None`.
fn metrics_difference(
    fast: &BTreeMap<String, String>,
    slow: &BTreeMap<String, String>,
) -> Option<String> {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = fast.keys().chain(slow.keys()).collect();
    for name in names {
        let (a, b) = (fast.get(name), slow.get(name));
        if a != b {
            let show = |v: Option<&String>| v.map_or("(absent)".to_string(), Clone::clone);
            let _ = writeln!(
                out,
                "  {name}: {} with the fast path, {} without",
                show(a),
                show(b)
            );
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Both access logs once each has stopped growing (lines are written by a background thread).
async fn settled_logs(fast: &Side, slow: &Side) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (fast.log(), slow.log());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (fast.log(), slow.log());
        let still = now.0.len() == last.0.len() && now.1.len() == last.1.len();
        last = now;
        if (still && last.0.len() == last.1.len()) || Instant::now() > deadline {
            return last;
        }
    }
}

/// The lines that occur more often in one list than in the other, with both counts.
fn multiset_difference(fast: &[String], slow: &[String]) -> Option<String> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for l in fast {
        counts.entry(l).or_default().0 += 1;
    }
    for l in slow {
        counts.entry(l).or_default().1 += 1;
    }
    let mut out = String::new();
    for (line, (a, b)) in counts.into_iter().filter(|(_, (a, b))| a != b) {
        let _ = writeln!(out, "  {a} with the fast path, {b} without: {line}");
    }
    (!out.is_empty()).then_some(out)
}

/// What the app received, in order, without which connection it came on.
fn seen(origin: &Origin) -> Vec<String> {
    origin
        .seen()
        .iter()
        .map(|s| {
            format!(
                "{} {} {:?} body {}",
                s.method, s.target, s.headers, s.body_len
            )
        })
        .collect()
}

/// The paths for which the two apps received different numbers of requests, with both.
fn per_path_difference(fast: &Origin, slow: &Origin) -> String {
    let count = |origin: &Origin| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in origin.seen() {
            *counts.entry(s.path().to_string()).or_default() += 1;
        }
        counts
    };
    let (a, b) = (count(fast), count(slow));
    let mut out = String::new();
    for path in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (x, y) = (a.get(path).unwrap_or(&0), b.get(path).unwrap_or(&0));
        if x != y {
            let _ = writeln!(out, "  {path}: {x} with the fast path, {y} without");
        }
    }
    out
}

/// The first entry where two lists differ, shown from both.
fn first_difference(fast: &[String], slow: &[String]) -> String {
    let i = fast
        .iter()
        .zip(slow)
        .position(|(a, b)| a != b)
        .unwrap_or(fast.len().min(slow.len()));
    let show = |l: &[String]| l.get(i).cloned().unwrap_or_else(|| "(none)".into());
    format!(
        "first difference at entry {i}:\n  with the fast path: {}\n  without:            {}",
        show(fast),
        show(slow)
    )
}

// ---------------------------------------------------------------------------------------------
// Running a case on raw TCP

/// What came back for a case: one answer per request (fewer if the connection ended), then the
/// answer to the probe.
struct Transcript {
    answers: Vec<Answer>,
    /// The connection outlived the case, and the last answer is the probe's.
    probed: bool,
}

/// What came back for one request.
enum Answer {
    Response(Response),
    /// The connection ended before a whole response (with the bytes of a partial one).
    Closed(Vec<u8>),
    /// Nothing more came within [`RESPONSE_TIMEOUT`] (with the bytes of a partial response).
    TimedOut(Vec<u8>),
}

/// One whole response as it was on the wire.
struct Response {
    /// Interim (1xx) responses before it, each head as sent.
    interim: Vec<String>,
    /// The status line and header lines, as sent.
    lines: Vec<String>,
    /// How the body was delimited.
    framing: &'static str,
    /// The body, de-chunked.
    body: Vec<u8>,
}

impl Answer {
    /// Its head and body as text (for the single-proxy test's assertions).
    fn text(&self) -> String {
        match self {
            Answer::Response(r) => format!(
                "{}\r\n\r\n{}",
                r.lines.join("\r\n"),
                String::from_utf8_lossy(&r.body)
            ),
            Answer::Closed(b) | Answer::TimedOut(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }

    /// Whether the connection is known to be over after it.
    fn ends_connection(&self) -> bool {
        !matches!(self, Answer::Response(_))
    }
}

/// Run `case` on a new connection to `addr`: each write, the answers to its requests, then
/// the probe.
async fn run(addr: SocketAddr, case: &Case) -> Transcript {
    let mut conn = Wire::connect(addr).await;
    let mut answers = Vec::new();
    let mut over = false;
    for write in &case.writes {
        let bytes: String = write.iter().copied().collect();
        conn.send(bytes.as_bytes()).await;
        for request in write {
            let answer = conn.response(is_head(request)).await;
            over = answer.ends_connection();
            answers.push(answer);
            if over {
                break;
            }
        }
        if over {
            break;
        }
    }
    if !over {
        conn.send(PROBE.as_bytes()).await;
        answers.push(conn.response(false).await);
    }
    Transcript {
        answers,
        probed: !over,
    }
}

fn is_head(request: &str) -> bool {
    request.starts_with("HEAD ")
}

/// A client connection that reads responses by their framing.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Why no more bytes came.
enum Ended {
    Closed,
    TimedOut,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // a failed write shows as the missing answer that follows
        let _ = self.stream.write_all(bytes).await;
    }

    /// Read more bytes into the buffer.
    async fn more(&mut self, deadline: Instant) -> Result<(), Ended> {
        let mut chunk = [0u8; 65536];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(Ended::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(_) => Err(Ended::TimedOut),
        }
    }

    /// The buffer up to and including `end`, once it is in.
    async fn until(&mut self, end: &[u8], deadline: Instant) -> Result<Vec<u8>, Ended> {
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                return Ok(self.buf.drain(..i + end.len()).collect());
            }
            self.more(deadline).await?;
        }
    }

    /// The next `n` bytes, once they are in.
    async fn take(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, Ended> {
        while self.buf.len() < n {
            self.more(deadline).await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The next response (to a HEAD, if `head`), with any interim responses before it.
    async fn response(&mut self, head: bool) -> Answer {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let mut wire = Vec::new();
        let partial = |wire: &[u8], buf: &[u8], e: Ended| {
            let bytes = [wire, buf].concat();
            match e {
                Ended::Closed => Answer::Closed(bytes),
                Ended::TimedOut => Answer::TimedOut(bytes),
            }
        };
        let mut interim = Vec::new();
        let (lines, status) = loop {
            let head_bytes = match self.until(b"\r\n\r\n", deadline).await {
                Ok(h) => h,
                Err(e) => return partial(&wire, &self.buf, e),
            };
            wire.extend_from_slice(&head_bytes);
            let text = String::from_utf8_lossy(&head_bytes[..head_bytes.len() - 4]).into_owned();
            let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                interim.push(text);
                continue;
            }
            break (
                text.split("\r\n").map(str::to_string).collect::<Vec<_>>(),
                status,
            );
        };
        let field = |name: &str| {
            lines.iter().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let chunked =
            field("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = field("content-length").and_then(|v| v.parse::<usize>().ok());
        let (framing, body) = if head || status == 204 || status == 304 || status == 101 {
            ("none", Ok(Vec::new()))
        } else if chunked {
            ("chunked", self.chunked(deadline).await)
        } else if let Some(n) = length {
            ("content-length", self.take(n, deadline).await)
        } else {
            ("close", self.until_close(deadline).await)
        };
        match body {
            Ok(body) => Answer::Response(Response {
                interim,
                lines,
                framing,
                body,
            }),
            Err(e) => partial(&wire, &self.buf, e),
        }
    }

    /// A chunked body, de-chunked (trailers dropped).
    async fn chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, Ended> {
        let mut body = Vec::new();
        loop {
            let line = self.until(b"\r\n", deadline).await?;
            let text = String::from_utf8_lossy(&line);
            let size =
                usize::from_str_radix(text.trim().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| Ended::Closed)?;
            if size == 0 {
                // trailer fields, up to an empty line
                while self.until(b"\r\n", deadline).await?.len() > 2 {}
                return Ok(body);
            }
            let mut piece = self.take(size + 2, deadline).await?;
            piece.truncate(size);
            body.extend_from_slice(&piece);
        }
    }

    /// A body delimited by the connection's close.
    async fn until_close(&mut self, deadline: Instant) -> Result<Vec<u8>, Ended> {
        loop {
            match self.more(deadline).await {
                Ok(()) => {}
                Err(Ended::Closed) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// The boundary of a `multipart/byteranges` response: random, so masked.
fn boundary(r: &Response) -> Option<String> {
    r.lines.iter().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let (_, rest) = value.split_once("boundary=")?;
        let token = rest.split(';').next()?.trim();
        (name.eq_ignore_ascii_case("content-type") && !token.is_empty()).then(|| token.to_string())
    })
}

/// A response's body as compared: a multipart boundary masked.
fn comparable_body(r: &Response) -> Vec<u8> {
    match boundary(r) {
        Some(b) => String::from_utf8_lossy(&r.body)
            .replace(&b, "<boundary>")
            .into_bytes(),
        None => r.body.clone(),
    }
}

/// A response's lines as compared: `Date` and `Age` values masked (the clock), and a
/// multipart boundary; the body's framing and length last.
fn comparable(r: &Response) -> Vec<String> {
    let boundary = boundary(r);
    let mut out: Vec<String> = r.interim.iter().map(|h| format!("(interim) {h}")).collect();
    for (i, line) in r.lines.iter().enumerate() {
        let masked = line.split_once(':').and_then(|(name, _)| {
            let masked =
                i > 0 && (name.eq_ignore_ascii_case("date") || name.eq_ignore_ascii_case("age"));
            masked.then(|| format!("{name}: <masked>"))
        });
        let line = masked.unwrap_or_else(|| line.clone());
        out.push(match &boundary {
            Some(b) => line.replace(b, "<boundary>"),
            None => line,
        });
    }
    out.push(format!("(body: {}, {} bytes)", r.framing, r.body.len()));
    out
}

/// Whether two compared lines are the same, a `Cache-Status` `ttl=N` allowed to be off by 1.
fn same_line(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let is_status = |l: &str| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case("cache-status"))
    };
    if !is_status(a) || !is_status(b) {
        return false;
    }
    let parts = |l: &str| l.split("; ").map(str::to_string).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    pa.len() == pb.len()
        && pa.iter().zip(&pb).all(|(x, y)| {
            if x == y {
                return true;
            }
            let ttl = |p: &str| p.strip_prefix("ttl=").and_then(|t| t.parse::<i64>().ok());
            matches!((ttl(x), ttl(y)), (Some(m), Some(n)) if (m - n).abs() <= 1)
        })
}

/// What differs between the two transcripts of a case, or `None`.
fn compare(fast: &Transcript, slow: &Transcript) -> Option<String> {
    if fast.answers.len() != slow.answers.len() {
        return Some(format!(
            "{} answers with the fast path, {} without (the last being the probe's, or the end of the connection)",
            fast.answers.len(),
            slow.answers.len()
        ));
    }
    for (i, (a, b)) in fast.answers.iter().zip(&slow.answers).enumerate() {
        let which = if fast.probed && i + 1 == fast.answers.len() {
            "the probe's answer"
        } else {
            "answer"
        };
        match (a, b) {
            (Answer::Response(x), Answer::Response(y)) => {
                let (lx, ly) = (comparable(x), comparable(y));
                if lx.len() != ly.len() || lx.iter().zip(&ly).any(|(p, q)| !same_line(p, q)) {
                    let at = lx
                        .iter()
                        .zip(&ly)
                        .position(|(p, q)| !same_line(p, q))
                        .unwrap_or(lx.len().min(ly.len()));
                    return Some(format!(
                        "{which} {i}: head line {at} differs: {:?} with the fast path, {:?} without",
                        lx.get(at),
                        ly.get(at)
                    ));
                }
                let (bx, by) = (comparable_body(x), comparable_body(y));
                if bx != by {
                    let at = bx.iter().zip(&by).position(|(p, q)| p != q).unwrap_or(0);
                    return Some(format!("{which} {i}: the bodies differ from byte {at}"));
                }
            }
            (Answer::Closed(x), Answer::Closed(y)) | (Answer::TimedOut(x), Answer::TimedOut(y)) => {
                if x != y {
                    return Some(format!(
                        "{which} {i}: different partial bytes before the end"
                    ));
                }
            }
            _ => {
                return Some(format!(
                    "{which} {i}: {} with the fast path, {} without",
                    a.kind(),
                    b.kind()
                ))
            }
        }
    }
    None
}

impl Answer {
    fn kind(&self) -> &'static str {
        match self {
            Answer::Response(_) => "a response",
            Answer::Closed(_) => "the connection closed",
            Answer::TimedOut(_) => "no answer in time",
        }
    }
}

#[test]
fn the_comparison_masks_the_clock_and_nothing_else() {
    let response = |lines: &[&str], body: &str| Response {
        interim: vec![],
        lines: lines.iter().map(|l| l.to_string()).collect(),
        framing: "content-length",
        body: body.as_bytes().to_vec(),
    };
    let a = response(
        &[
            "HTTP/1.1 200 OK",
            "Date: Tue, 01 Dec 2026 17:49:56 GMT",
            "Age: 3",
            "Cache-Status: lacquer; hit; ttl=299",
        ],
        "x",
    );
    let same = |x: &Response, y: &Response| {
        let (lx, ly) = (comparable(x), comparable(y));
        lx.len() == ly.len() && lx.iter().zip(&ly).all(|(p, q)| same_line(p, q))
    };
    let b = response(
        &[
            "HTTP/1.1 200 OK",
            "Date: Tue, 01 Dec 2026 17:49:57 GMT",
            "Age: 4",
            "Cache-Status: lacquer; hit; ttl=298",
        ],
        "x",
    );
    assert!(same(&a, &b), "Date and Age masked, ttl off by one");
    for other in [
        // a ttl off by two, a header in another place or case, another status or length
        &[
            "HTTP/1.1 200 OK",
            "Date: x",
            "Age: 3",
            "Cache-Status: lacquer; hit; ttl=297",
        ][..],
        &[
            "HTTP/1.1 200 OK",
            "Age: 3",
            "Date: x",
            "Cache-Status: lacquer; hit; ttl=299",
        ],
        &[
            "HTTP/1.1 200 OK",
            "date: x",
            "Age: 3",
            "Cache-Status: lacquer; hit; ttl=299",
        ],
        &[
            "HTTP/1.1 200 OK",
            "Date: x",
            "Age: 3",
            "Cache-Status: lacquer; hit; ttl=299; detail=x",
        ],
        &[
            "HTTP/1.1 200 OK",
            "Date: x",
            "Age: 3",
            "Cache-Status: lacquer; fwd=miss; ttl=299",
        ],
        &[
            "HTTP/1.1 304 OK",
            "Date: x",
            "Age: 3",
            "Cache-Status: lacquer; hit; ttl=299",
        ],
        &[
            "HTTP/1.1 200 OK",
            "Date: x",
            "Cache-Status: lacquer; hit; ttl=299",
        ],
    ] {
        assert!(!same(&a, &response(other, "x")), "{other:?}");
    }
    let multipart = |boundary: &str| {
        response(
            &[&format!(
                "Content-Type: multipart/byteranges; boundary={boundary}"
            )],
            &format!("--{boundary}\r\nContent-Range: bytes 0-0/1\r\n\r\nx\r\n--{boundary}--"),
        )
    };
    assert!(same(&multipart("aaa"), &multipart("bbb")));
    assert_eq!(
        comparable_body(&multipart("aaa")),
        comparable_body(&multipart("bbb"))
    );
    assert_ne!(comparable_body(&a), comparable_body(&response(&[], "y")));
}

/// A transcript as text, for a failure message.
fn render_all(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, a) in t.answers.iter().enumerate() {
        let _ = writeln!(out, "[{i}] {}", a.kind());
        match a {
            Answer::Response(r) => {
                for line in r.interim.iter().chain(&r.lines) {
                    let _ = writeln!(out, "    {line}");
                }
                let shown = String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned();
                let _ = writeln!(
                    out,
                    "    ({}, {} bytes) {}{}",
                    r.framing,
                    r.body.len(),
                    escape(&shown),
                    if r.body.len() > 200 { "..." } else { "" }
                );
            }
            Answer::Closed(b) | Answer::TimedOut(b) if !b.is_empty() => {
                let _ = writeln!(out, "    partial: {}", escape(&String::from_utf8_lossy(b)));
            }
            _ => {}
        }
    }
    out
}

/// Text with line ends and control bytes visible.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' => "\\r".to_string(),
            '\n' => "\\n\n      ".to_string(),
            c if c.is_control() => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}
