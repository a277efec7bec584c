//! Metrics that add up, the health endpoint and the access log.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Client, Origin, Proxy, Reply};

/// One scrape: series name -> [(labels, value)].
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>, String);

impl Scrape {
    async fn take(c: &Client, proxy: &Proxy) -> Scrape {
        let r = c.get(&format!("http://{}/metrics", proxy.admin)).await;
        assert_eq!(r.status, 200);
        let text = r.text();
        let mut series = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels: BTreeMap<String, String> = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            series.push((name.to_string(), labels, value.parse::<f64>().unwrap()));
        }
        Scrape(series, text)
    }

    /// The sum of a metric over the series whose labels include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

#[tokio::test]
async fn every_counter_moves_by_exactly_what_was_sent() {
    let origin = Origin::start(|s| match s.path() {
        "/private" => Reply::ok("p").header("Cache-Control", "private"),
        "/fail" => Reply::ok("down").status(503),
        _ => Reply::ok("page").header("Cache-Control", "max-age=600"),
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "access_log:\n  target: off\n").await;
    let c = Client::new();
    c.get(&proxy.url("/cached")).await; // miss, stored
    c.get(&proxy.url("/cached")).await; // hit
    c.get(&proxy.url("/cached")).await; // hit
    c.get_with(&proxy.url("/cached"), &[("Cookie", "s=1")])
        .await; // bypass: cookie
    c.send("POST", &proxy.url("/form"), &[], Some(b"a=1".to_vec()))
        .await; // bypass: method
    c.get(&proxy.url("/private")).await; // miss: private
    c.get(&proxy.url("/private")).await; // hit-for-miss
    c.send("PURGE", &proxy.url("/cached"), &[], None).await; // purge
    c.get(&proxy.url("/cached")).await; // miss, stored again
    c.get(&proxy.url("/fail")).await; // miss: the app failed
    let sent = 10.0;

    // the last request's metrics are recorded as it ends; poll until they are in
    let mut s = Scrape::take(&c, &proxy).await;
    for _ in 0..50 {
        if s.sum("lacquer_requests_total", &[]) >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = Scrape::take(&c, &proxy).await;
    }
    assert_eq!(
        s.sum("lacquer_requests_total", &[]),
        sent,
        "each client request exactly once"
    );
    assert_eq!(s.sum("lacquer_request_duration_seconds_count", &[]), sent);
    let req = |status: &str, reason: &str| {
        s.sum(
            "lacquer_requests_total",
            &[("cache_status", status), ("reason", reason)],
        )
    };
    assert_eq!(req("hit", ""), 2.0);
    assert_eq!(req("miss", ""), 2.0);
    assert_eq!(req("miss", "private"), 1.0);
    assert_eq!(req("miss", "error-status"), 1.0);
    assert_eq!(req("bypass", "cookie"), 1.0);
    assert_eq!(req("bypass", "method"), 1.0);
    assert_eq!(
        s.sum(
            "lacquer_requests_total",
            &[("cache_status", "hit_for_miss")]
        ),
        1.0
    );
    assert_eq!(req("purge", ""), 1.0);

    let up = origin.addr.to_string();
    assert_eq!(
        s.sum("lacquer_upstream_requests_total", &[("upstream", &up)]),
        7.0
    );
    assert_eq!(
        s.sum(
            "lacquer_upstream_requests_total",
            &[("status_class", "5xx")]
        ),
        1.0
    );
    assert_eq!(s.sum("lacquer_upstream_response_seconds_count", &[]), 7.0);
    assert_eq!(origin.total(), 7, "the origin agrees");
    assert_eq!(s.sum("lacquer_cache_inserts_total", &[]), 2.0);
    assert_eq!(
        s.sum("lacquer_purges_total", &[("kind", "url"), ("result", "ok")]),
        1.0
    );
    assert_eq!(
        s.sum("lacquer_purged_objects_total", &[("kind", "url")]),
        1.0
    );
    assert_eq!(s.sum("lacquer_coalesced_requests_total", &[]), 0.0);
    assert!(s.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(
        s.sum("lacquer_cache_capacity_bytes", &[]),
        (256u64 << 20) as f64
    );

    // no label ever holds a URL, a host or a client address
    for (name, labels, _) in &s.0 {
        for (k, v) in labels {
            assert!(!v.contains('/'), "{name}{{{k}={v}}} holds a path");
            assert!(
                k == "upstream" || !v.contains("127.0.0.1"),
                "{name}{{{k}={v}}} holds an address"
            );
        }
    }
    assert!(!s.1.contains("cached") && !s.1.contains("form"));
}

#[tokio::test]
async fn cache_gauges_follow_inserts_and_evictions() {
    let origin = Origin::start(|s| {
        let mut body = vec![b'.'; 64 << 10];
        body[..s.target.len()].copy_from_slice(s.target.as_bytes());
        Reply::ok(body).header("Cache-Control", "max-age=600")
    })
    .await;
    let proxy = Proxy::start(
        &[origin.addr],
        "cache:\n  max_size: 1MiB\n  max_object_size: 128KiB\naccess_log:\n  target: off\n",
    )
    .await;
    let c = Client::new();
    for i in 0..40 {
        c.get(&proxy.url(&format!("/o/{i}"))).await;
    }
    let s = Scrape::take(&c, &proxy).await;
    let inserts = s.sum("lacquer_cache_inserts_total", &[]);
    let evicted = s.sum("lacquer_cache_evictions_total", &[("cause", "size")]);
    let objects = s.sum("lacquer_cache_objects", &[]);
    let bytes = s.sum("lacquer_cache_bytes", &[]);
    assert!(inserts > 0.0);
    assert!(evicted > 0.0, "a 1 MiB budget cannot hold 40 x 64 KiB");
    assert!(bytes <= (1 << 20) as f64, "{bytes} bytes over the budget");
    assert!(objects > 0.0 && objects < 20.0, "{objects}");
    // moka may refuse an object at admission (TinyLFU) rather than evict one: both leave
    assert!(
        objects <= inserts - evicted + 1.0,
        "objects {objects}, inserts {inserts}, evicted {evicted}"
    );
}

#[tokio::test]
async fn background_revalidations_are_not_client_requests() {
    let origin = Origin::start(|_| {
        Reply::ok("x").header("Cache-Control", "max-age=1, stale-while-revalidate=60")
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "access_log:\n  target: off\n").await;
    let c = Client::new();
    c.get(&proxy.url("/swr")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = c.get(&proxy.url("/swr")).await;
    assert!(stale.cache_status().contains("stale-while-revalidate"));
    let mut s = Scrape::take(&c, &proxy).await;
    for _ in 0..50 {
        if s.sum("lacquer_background_revalidations_total", &[]) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = Scrape::take(&c, &proxy).await;
    }
    assert_eq!(
        s.sum(
            "lacquer_background_revalidations_total",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(s.sum("lacquer_requests_total", &[]), 2.0);
    assert_eq!(
        s.sum("lacquer_requests_total", &[("cache_status", "stale")]),
        1.0
    );
    assert_eq!(origin.total(), 2);
}

#[tokio::test]
async fn coalesced_requests_are_counted_with_their_wait() {
    let origin = Origin::start(|_| {
        Reply::ok("slow")
            .header("Cache-Control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let proxy = Proxy::start(&[origin.addr], "access_log:\n  target: off\n").await;
    let c = Client::new();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            let url = proxy.url("/c");
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = Scrape::take(&c, &proxy).await;
    assert_eq!(origin.total(), 1);
    assert_eq!(s.sum("lacquer_coalesced_requests_total", &[]), 9.0);
    assert_eq!(s.sum("lacquer_coalesced_wait_seconds_count", &[]), 9.0);
    assert!(s.sum("lacquer_coalesced_wait_seconds_sum", &[]) > 9.0 * 0.2);
}

#[tokio::test]
async fn healthz_answers() {
    let origin = Origin::start(|_| Reply::ok("x")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let r = Client::new()
        .get(&format!("http://{}/healthz", proxy.admin))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_with_its_cache_status() {
    let origin = Origin::start(|_| Reply::ok("x").header("Cache-Control", "max-age=60")).await;
    let log = JsonLog::new();
    let proxy = Proxy::start(&[origin.addr], &log.config()).await;
    let c = Client::new();
    c.get_with(
        &proxy.url("/page?utm_source=x&id=1"),
        &[("User-Agent", "tester/1")],
    )
    .await;
    c.get(&proxy.url("/page?id=1")).await;
    c.get_with(&proxy.url("/page?id=1"), &[("Cookie", "s=1")])
        .await;
    let v = log.entries(3).await;
    assert_eq!(v[0]["cache_status"], "miss");
    assert_eq!(
        v[0]["url"], "/page?utm_source=x&id=1",
        "logged as the client sent it"
    );
    assert_eq!(v[0]["user_agent"], "tester/1");
    assert_eq!(v[0]["upstream"], origin.addr.to_string());
    assert!(v[0]["upstream_time"].as_f64().unwrap() > 0.0);
    assert_eq!(v[1]["cache_status"], "hit");
    assert_eq!(v[1]["upstream"], serde_json::Value::Null);
    assert_eq!(v[2]["cache_status"], "bypass");
    for e in &v {
        assert_eq!(e["status"], 200);
        assert_eq!(e["bytes"], 1);
        assert_eq!(e["client"], "127.0.0.1");
        assert_eq!(e["method"], "GET");
    }
}

#[tokio::test]
async fn the_default_access_log_is_combined_on_stdout() {
    let origin = Origin::start(|_| Reply::ok("hello").header("Cache-Control", "max-age=60")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let c = Client::new();
    c.get(&proxy.url("/x")).await;
    c.get(&proxy.url("/x")).await;
    let mut log = String::new();
    for _ in 0..100 {
        log = proxy.log();
        if log.matches("\"GET /x HTTP/1.1\" 200 5").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /x HTTP/1.1\""))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["));
    assert!(lines[0].contains(" miss "), "{}", lines[0]);
    assert!(lines[1].contains(" hit - -"), "{}", lines[1]);
}

#[tokio::test]
async fn an_access_log_entry_is_stamped_with_the_arrival_time() {
    let origin = Origin::start(|_| Reply::ok("slow").delay(Duration::from_millis(1000))).await;
    let log = JsonLog::new();
    let proxy = Proxy::start(&[origin.addr], &log.config()).await;
    let sent = std::time::SystemTime::now();
    Client::new().get(&proxy.url("/slow")).await;
    let v = log.entries(1).await;
    let time = v[0]["time"].as_str().unwrap().to_string();
    // ISO times of one width sort as the instants they name: the entry is stamped when the
    // request came in, not a second later when the app's answer was done
    let earliest = lacquer::access_log::iso_time(sent - Duration::from_millis(50));
    let latest = lacquer::access_log::iso_time(sent + Duration::from_millis(500));
    assert!(
        earliest <= time && time <= latest,
        "{earliest} <= {time} <= {latest}"
    );
}

/// A JSON access log in a file of its own, for a proxy to write and a test to read.
struct JsonLog {
    dir: tempfile::TempDir,
}

impl JsonLog {
    fn new() -> JsonLog {
        JsonLog {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The `access_log:` section that sends the log here.
    fn config(&self) -> String {
        format!(
            "access_log:\n  target: file\n  path: \"{}\"\n  format: json\n",
            self.dir.path().join("access.log").display()
        )
    }

    /// The entries, once there are `n` of them (the log is written in the background).
    async fn entries(&self, n: usize) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for _ in 0..100 {
            lines = std::fs::read_to_string(self.dir.path().join("access.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            if lines.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lines.len(), n, "{lines:?}");
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// `/healthz` says whether lacquer can serve, not whether the app can: with every app server
/// out of rotation it still answers 200 (lacquer serves from the cache, and a quick 503 per
/// request otherwise).
#[tokio::test]
async fn healthz_is_200_while_no_app_server_is_healthy() {
    let origin = Origin::start(|_| Reply::ok("failing").status(500)).await;
    let proxy = Proxy::start(
        &[origin.addr],
        "health_check:\n  type: http\n  path: /h\n  interval: 100ms\n  failures: 1\n  successes: 1\n",
    )
    .await;
    let c = Client::new();
    let series = format!("lacquer_upstream_healthy{{upstream=\"{}\"}}", origin.addr);
    let mut down = false;
    for _ in 0..100 {
        if proxy.metric(&series).await == 0.0 && origin.hits("/h") > 0 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(down, "the app server failing its check is out of rotation");
    let r = c.get(&format!("http://{}/healthz", proxy.admin)).await;
    assert_eq!(
        r.status, 200,
        "no app server is healthy, lacquer still serves"
    );
    assert_eq!(r.text(), "ok\n");
    let r = c.get(&proxy.url("/anything")).await;
    assert_eq!(r.status, 503, "{}", r.cache_status());
    assert_eq!(origin.hits("/anything"), 0, "nothing was sent to the app");
}

#[tokio::test]
async fn the_admin_listener_keeps_a_connection_open_across_requests() {
    let origin = Origin::start(|_| Reply::ok("x")).await;
    let proxy = Proxy::start(&[origin.addr], "").await;
    let mut conn = crate::support::raw::RawConn::connect(proxy.admin).await;
    for path in ["/stats", "/metrics", "/stats"] {
        let reply = conn
            .exchange(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
            .await;
        assert_eq!(reply.statuses(), vec![200], "{path}: {}", reply.text());
        assert!(!reply.closed, "{path}: the connection stays open");
        assert!(
            reply
                .text()
                .to_ascii_lowercase()
                .contains("content-length:"),
            "{path}"
        );
    }
}
