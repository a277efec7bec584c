//! The fast path (`cache.fast_path`): the plainest and most common request, a fresh hit over
//! HTTP/1, answered below pingora by the connection loop (`guard.rs`) from the stored header
//! lines and body, without pingora's per-request session, its header maps or its cache state
//! machine.
//!
//! It takes a request only when pingora would serve it the same fresh hit, and decides that
//! with the functions the full path uses (`proxy.rs`, `request_filter`): the same parse
//! (httparse, as pingora), pingora's authority checks, the client and scheme
//! (`edge::resolve`), the rules, the cache policy, the key, the request as prepared for the
//! cache, and the storage's own lookup (`cache/storage/fresh.rs`). Everything else goes to
//! pingora as before: any method but GET and HEAD, a body, `Expect`, `Upgrade`, `Range`, a
//! conditional, an unusual `Connection`, a bypass or a refresh, a hit-for-miss URL, a miss,
//! a stale or soft-purged object, a status other than 200, a stored header the fast path
//! does not write as pingora would (`fast_path/head.rs`).
//!
//! A fast-path hit counts in the same metrics and writes the same access-log line as the full
//! path; `lacquer_fast_path_hits_total` tells them apart. `tests/it/fast_path.rs` sends one
//! corpus through lacquer with the fast path on and off and asserts identical responses,
//! metrics and log lines.

mod head;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use pingora_core::protocols::http::authority::validate_request_authority;
use pingora_http::RequestHeader;
use prometheus::{Histogram, IntCounter};

use crate::access_log::{arrival, AccessLog, Entry, RequestFields};
use crate::cache::key::{RequestKey, UrlHash};
use crate::cache::policy::{self, RequestDecision};
use crate::cache::status::{CacheStatus, Outcome};
use crate::cache::CacheRuntime;
use crate::edge;
use crate::live::SharedLive;
use crate::metrics::metrics;
use crate::request;
use crate::rules;
use crate::services::InFlight;

/// Header fields of requests the fast path leaves to pingora: framing and bodies, upgrades,
/// ranges and conditionals.
const LEFT_TO_PINGORA: [HeaderName; 10] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::UPGRADE,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// The most header fields a fast-path request may have (a browser sends 10 to 20).
const MAX_FIELDS: usize = 48;

/// What the connection loop needs to answer plain hits itself.
pub(crate) struct FastPath {
    live: SharedLive,
    cache: &'static CacheRuntime,
    access_log: Arc<AccessLog>,
    /// The `cache_status="hit"` series of the request counter and histogram, looked up once
    /// (made at the first hit, as the full path makes them).
    hit_series: OnceLock<(IntCounter, Histogram)>,
}

/// A request answered from memory: what to write, then what to record.
pub(crate) struct Answer {
    /// The response head.
    pub(crate) head: Vec<u8>,
    /// The body (empty for HEAD).
    pub(crate) body: Bytes,
    /// The connection stays open after it.
    pub(crate) keep_alive: bool,
    record: Record,
}

/// What the access log and the metrics need once the answer is written.
struct Record {
    started: Instant,
    _in_flight: InFlight,
    client: Option<IpAddr>,
    /// The request as the cache saw it (the log's host, referer and user agent).
    req: RequestHeader,
    /// The target as received, when preparing the request changed it.
    original_target: Option<String>,
}

impl FastPath {
    /// The fast path of a proxy serving `live`'s config from `cache`.
    pub(crate) fn new(
        live: SharedLive,
        cache: &'static CacheRuntime,
        access_log: Arc<AccessLog>,
    ) -> FastPath {
        FastPath {
            live,
            cache,
            access_log,
            hit_series: OnceLock::new(),
        }
    }

    /// Whether the current config has the fast path on (`cache.fast_path`).
    pub(crate) fn enabled(&self) -> bool {
        self.live.load().config.cache.fast_path
    }

    /// The answer to `header` (one whole request header, within the client limits), from
    /// `peer`, over TLS or not; `None` when pingora must answer it.
    pub(crate) fn answer(&self, header: &[u8], peer: Option<IpAddr>, tls: bool) -> Option<Answer> {
        let live = self.live.load();
        let config = &live.config;
        if !config.cache.fast_path {
            return None;
        }
        let started = Instant::now();
        let (mut req, keep_alive) = parse(header, config.limits.underscores_in_headers)?;
        // pingora refuses an ambiguous authority with a 400 before anything else
        validate_request_authority(&req).ok()?;
        let client = edge::resolve(
            peer,
            &req,
            &config.trusted_proxies,
            if tls { "https" } else { "http" },
        );
        let rule = if config.rules.is_empty() {
            None
        } else {
            rules::matching(&config.rules, &req)
        };
        let rule_config = rule.and_then(|i| config.rules.get(i));
        let strip_cookies = match policy::request_decision(&req, &config.bypass, rule_config) {
            RequestDecision::Cache {
                strip_cookies,
                refresh: false,
            } => strip_cookies,
            _ => return None,
        };
        let key =
            RequestKey::from_request(client.scheme, &req, &config.cache.tracking_params).ok()?;
        let mut cache_key = key.cache_key(None);
        if strip_cookies && self.cache.remembered_uncacheable(UrlHash::of(&cache_key)) {
            return None;
        }
        let original_target =
            request::prepare_for_cache(&mut req, &key, &config.cache, strip_cookies).ok()?;
        let now = SystemTime::now();
        let hit = self.cache.storage.fresh_hit(&mut cache_key, &req, now)?;
        let meta = hit.meta();
        // (whether its head can be written here is known before the head is made)
        let verdict = hit.head_verdict(config.purge.strip_tag_headers, |meta| {
            head::verdict(meta, &config.purge)
        });
        if meta.status() != 200 || verdict & head::WRITABLE == 0 {
            return None;
        }
        let age = now
            .duration_since(meta.epoch())
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let ttl = match meta.fresh_until().duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        let cache_status = Outcome {
            status: CacheStatus::Hit,
            ttl: Some(ttl),
            fwd_status: None,
            stored: false,
            collapsed: false,
            detail: None,
        }
        .header_value();
        let mut head = Vec::new();
        if !head::write(
            &mut head,
            meta,
            verdict,
            age,
            &cache_status,
            keep_alive,
            &config.purge,
        ) {
            return None;
        }
        if let Some(i) = rule {
            // (counted only now: a request left to pingora is counted there)
            rules::count(&config.rules, i);
        }
        let body = if req.method == Method::HEAD {
            Bytes::new()
        } else {
            hit.body().clone()
        };
        Some(Answer {
            head,
            body,
            keep_alive,
            record: Record {
                started,
                _in_flight: InFlight::enter(),
                client: client.addr,
                req,
                original_target,
            },
        })
    }

    /// Count an answer that was written (`written`: all of it) and log it; the time it ended.
    pub(crate) fn finish(&self, answer: Answer, written: bool) -> Instant {
        let Answer { body, record, .. } = answer;
        let ended = Instant::now();
        let duration = ended.saturating_duration_since(record.started);
        let m = metrics();
        m.fast_path_hits.inc();
        if written {
            let (count, seconds) = self.hit_series.get_or_init(|| {
                let hit = CacheStatus::Hit.as_str();
                (
                    m.requests.with_label_values(&[hit, ""]),
                    m.request_duration.with_label_values(&[hit]),
                )
            });
            count.inc();
            seconds.observe(duration.as_secs_f64());
        } else {
            // as the full path labels a hit whose response broke off
            m.request(CacheStatus::Hit.as_str(), "incomplete", duration);
        }
        if !self.access_log.enabled() {
            return ended;
        }
        let request = RequestFields::of(&record.req, record.original_target.as_deref());
        self.access_log.log(&Entry {
            time: arrival(duration),
            client: record.client,
            method: request.method,
            host: request.host,
            target: &request.target,
            status: 200,
            bytes: if written { body.len() } else { 0 },
            duration,
            cache_status: CacheStatus::Hit.as_str(),
            upstream: None,
            upstream_time: None,
            referer: request.referer,
            user_agent: request.user_agent,
        });
        ended
    }
}

/// `header` as pingora parses it, and whether the connection stays open after its answer
/// (pingora's rule: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
/// `Connection: keep-alive`); `None` for anything the fast path leaves to pingora.
fn parse(header: &[u8], underscores: bool) -> Option<(RequestHeader, bool)> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(header) {
        Ok(httparse::Status::Complete(n)) if n == header.len() => {}
        _ => return None,
    }
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let (version, mut keep_alive) = match parsed.version? {
        1 => (Version::HTTP_11, true),
        0 => (Version::HTTP_10, false),
        _ => return None,
    };
    // the fields go into the header map as they are: without their names' case, which only a
    // request forwarded to the app needs, and without pingora's `append_header`, which turns
    // each name into its case-keeping form and parses that again (a third of the work for a
    // browser's request)
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut connection = false;
    // a browser's dozen values share one copy of the header: one allocation, not one each
    let block = (parsed.headers.len() > 2).then(|| Bytes::copy_from_slice(header));
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        if LEFT_TO_PINGORA.contains(&name)
            || (!underscores && field.name.as_bytes().contains(&b'_'))
        {
            return None;
        }
        if name == header::CONNECTION {
            let value = field.value.trim_ascii();
            keep_alive = if connection {
                return None;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                true
            } else if value.eq_ignore_ascii_case(b"close") {
                false
            } else {
                return None;
            };
            connection = true;
        }
        let value = match &block {
            Some(block) => {
                let start = (field.value.as_ptr() as usize).checked_sub(header.as_ptr() as usize)?;
                // (httparse's value is a slice of `header`, so of the same place in `block`)
                let end = start.checked_add(field.value.len())?;
                if end > block.len() {
                    return None;
                }
                HeaderValue::from_maybe_shared(block.slice(start..end)).ok()?
            }
            None => HeaderValue::from_bytes(field.value).ok()?,
        };
        headers.try_append(name, value).ok()?;
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.version = version;
    parts.headers = headers;
    // (as `RequestHeader::build_no_case` makes it: no case map, the target parsed by pingora)
    let mut req = RequestHeader::from(parts);
    req.set_raw_path(parsed.path?.as_bytes()).ok()?;
    Some((req, keep_alive))
}
