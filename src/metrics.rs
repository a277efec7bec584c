//! lacquer's Prometheus metrics: one [`Metrics`] registered into an owned registry, served on
//! the admin listener at `/metrics`. Labels are bounded enums or configured upstream addresses,
//! never a URL, a host or a client address.
//!
//! The process-wide instance ([`metrics()`]) is reachable from pingora's hooks, the storage's
//! eviction listener and the admin app alike.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for request and upstream times: 100 µs to 30 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];

/// Every metric lacquer exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// `lacquer_requests_total{cache_status, reason}`.
    pub(crate) requests: IntCounterVec,
    /// `lacquer_request_duration_seconds{cache_status}`.
    pub(crate) request_duration: HistogramVec,
    /// `lacquer_background_revalidations_total{result}`.
    pub(crate) background_revalidations: IntCounterVec,
    /// `lacquer_upstream_requests_total{upstream, status_class}`.
    pub(crate) upstream_requests: IntCounterVec,
    /// `lacquer_upstream_response_seconds{upstream}`.
    pub(crate) upstream_response: HistogramVec,
    /// `lacquer_upstream_healthy{upstream}`.
    pub(crate) upstream_healthy: IntGaugeVec,
    /// `lacquer_upstream_retries_total`.
    pub(crate) upstream_retries: IntCounter,
    /// `lacquer_coalesced_requests_total`.
    pub(crate) coalesced: IntCounter,
    /// `lacquer_coalesced_wait_seconds`.
    pub(crate) coalesced_wait: Histogram,
    /// `lacquer_cache_objects`.
    pub(crate) cache_objects: IntGauge,
    /// `lacquer_cache_bytes`.
    pub(crate) cache_bytes: IntGauge,
    /// `lacquer_cache_capacity_bytes`.
    pub(crate) cache_capacity: IntGauge,
    /// `lacquer_cache_inserts_total`.
    pub(crate) cache_inserts: IntCounter,
    /// `lacquer_cache_evictions_total{cause}`.
    pub(crate) cache_evictions: IntCounterVec,
    /// `lacquer_purges_total{kind, result}`.
    pub(crate) purges: IntCounterVec,
    /// `lacquer_purged_objects_total{kind}`.
    pub(crate) purged_objects: IntCounterVec,
    /// `lacquer_access_log_dropped_total`.
    pub(crate) access_log_dropped: IntCounter,
    /// `lacquer_client_limit_rejections_total{reason}`.
    pub(crate) client_limit_rejections: IntCounterVec,
    /// `lacquer_client_idle_closed_total`.
    pub(crate) client_idle_closed: IntCounter,
    /// `lacquer_fast_path_hits_total`.
    pub(crate) fast_path_hits: IntCounter,
    /// `lacquer_client_gone_fills_total`.
    pub(crate) client_gone_fills: IntCounter,
    /// `lacquer_client_gone_fills_refused_total`.
    pub(crate) client_gone_fills_refused: IntCounter,
    /// `lacquer_cache_fills_over_memory_total`.
    pub(crate) fills_over_memory: IntCounter,
    /// `lacquer_unsafe_invalidations_limited_total`.
    pub(crate) unsafe_invalidations_limited: IntCounter,
    /// `lacquer_rule_requests_total{rule}`.
    pub(crate) rule_requests: IntCounterVec,
    /// `lacquer_cluster_redis_up`.
    pub(crate) cluster_redis_up: IntGauge,
    /// `lacquer_cluster_purges_published_total{result}`.
    pub(crate) cluster_purges_published: IntCounterVec,
    /// `lacquer_cluster_purges_applied_total`.
    pub(crate) cluster_purges_applied: IntCounter,
    /// `lacquer_cluster_purge_delay_seconds`.
    pub(crate) cluster_purge_delay: Histogram,
    /// `lacquer_cluster_memory_drops_total`.
    pub(crate) cluster_memory_drops: IntCounter,
    /// `lacquer_cluster_nodes`.
    pub(crate) cluster_nodes: IntGauge,
    /// `lacquer_shared_lookups_total{result}`.
    pub(crate) shared_lookups: IntCounterVec,
    /// `lacquer_shared_stores_total{result}`.
    pub(crate) shared_stores: IntCounterVec,
    /// `lacquer_shared_seconds{op}`.
    pub(crate) shared_seconds: HistogramVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, name, Box::new(c.clone()));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, name, Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, name, Box::new(g.clone()));
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, labels).unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, name, Box::new(h.clone()));
    h
}

fn register(registry: &Registry, name: &str, c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = registry.register(c) {
        log::error!("metric {name} not registered: {e}");
    }
}

/// Metric definitions are constants: an invalid one is a programming error found by the
/// first test, never a runtime condition.
fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    panic!("invalid metric definition {name}: {e}")
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "lacquer_requests_total",
            "Client requests by cache outcome, each counted once when it ends.",
            &["cache_status", "reason"],
        );
        let request_duration = histogram_vec(
            &r,
            "lacquer_request_duration_seconds",
            "Time from a client request's arrival to its last byte.",
            &["cache_status"],
        );
        let background_revalidations = counter_vec(
            &r,
            "lacquer_background_revalidations_total",
            "Background fetches that refresh stale objects (not client requests).",
            &["result"],
        );
        let upstream_requests = counter_vec(
            &r,
            "lacquer_upstream_requests_total",
            "Requests sent to app servers, by response status class (error: no response).",
            &["upstream", "status_class"],
        );
        let upstream_response = histogram_vec(
            &r,
            "lacquer_upstream_response_seconds",
            "Time from connecting to an app server to its response header.",
            &["upstream"],
        );
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "lacquer_upstream_healthy",
                "Whether the app server is in rotation (1) or not (0).",
            ),
            &["upstream"],
        )
        .unwrap_or_else(|e| unreachable_metric("lacquer_upstream_healthy", e));
        register(
            &r,
            "lacquer_upstream_healthy",
            Box::new(upstream_healthy.clone()),
        );
        let upstream_retries = counter(
            &r,
            "lacquer_upstream_retries_total",
            "Requests retried on another app server after a connection failure.",
        );
        let coalesced = counter(
            &r,
            "lacquer_coalesced_requests_total",
            "Requests that waited for another request's fetch of the same object.",
        );
        let coalesced_wait = Histogram::with_opts(
            HistogramOpts::new(
                "lacquer_coalesced_wait_seconds",
                "How long coalesced requests waited for the other request's fetch.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable_metric("lacquer_coalesced_wait_seconds", e));
        register(
            &r,
            "lacquer_coalesced_wait_seconds",
            Box::new(coalesced_wait.clone()),
        );
        let cache_objects = gauge(
            &r,
            "lacquer_cache_objects",
            "Objects (variants) in the cache.",
        );
        let cache_bytes = gauge(
            &r,
            "lacquer_cache_bytes",
            "Bytes charged to the cache budget.",
        );
        let cache_capacity = gauge(
            &r,
            "lacquer_cache_capacity_bytes",
            "The cache budget (cache.max_size).",
        );
        let cache_inserts = counter(&r, "lacquer_cache_inserts_total", "Objects stored.");
        let cluster_redis_up = gauge(
            &r,
            "lacquer_cluster_redis_up",
            "Whether the last call to the cluster's Redis succeeded (1) or not (0).",
        );
        let cluster_purges_published = counter_vec(
            &r,
            "lacquer_cluster_purges_published_total",
            "Purges this node published to the other nodes, by result (error: not replicated).",
            &["result"],
        );
        let cluster_purges_applied = counter(
            &r,
            "lacquer_cluster_purges_applied_total",
            "Purges other nodes published that this node applied.",
        );
        let cluster_purge_delay = Histogram::with_opts(
            HistogramOpts::new(
                "lacquer_cluster_purge_delay_seconds",
                "From a purge's publication by another node to its application here.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable_metric("lacquer_cluster_purge_delay_seconds", e));
        register(
            &r,
            "lacquer_cluster_purge_delay_seconds",
            Box::new(cluster_purge_delay.clone()),
        );
        let cluster_memory_drops = counter(
            &r,
            "lacquer_cluster_memory_drops_total",
            "Times this node dropped its memory cache because it could not know which purges it missed.",
        );
        let cluster_nodes = gauge(
            &r,
            "lacquer_cluster_nodes",
            "Nodes with a heartbeat in the last 3 s, this one included (as this node last saw).",
        );
        let shared_lookups = counter_vec(
            &r,
            "lacquer_shared_lookups_total",
            "Memory misses looked up in the shared tier, by result (hit, miss, error, unreadable).",
            &["result"],
        );
        let shared_stores = counter_vec(
            &r,
            "lacquer_shared_stores_total",
            "Writes to the shared tier, by result (stored; purged or older: refused by compare-and-set; error).",
            &["result"],
        );
        let shared_seconds = histogram_vec(
            &r,
            "lacquer_shared_seconds",
            "Time of a call to the shared tier, by operation (lookup, store).",
            &["op"],
        );
        let rule_requests = counter_vec(
            &r,
            "lacquer_rule_requests_total",
            "Requests a rule applied to, by the rule's name (or index in rules:).",
            &["rule"],
        );
        let cache_evictions = counter_vec(
            &r,
            "lacquer_cache_evictions_total",
            "Objects removed from the cache, by cause (size, expired, purged).",
            &["cause"],
        );
        let purges = counter_vec(
            &r,
            "lacquer_purges_total",
            "Purge requests by kind (url, tag, prefix, all, unsafe) and result (ok, denied, invalid).",
            &["kind", "result"],
        );
        let purged_objects = counter_vec(
            &r,
            "lacquer_purged_objects_total",
            "Objects removed or marked stale by purges, by kind.",
            &["kind"],
        );
        let access_log_dropped = counter(
            &r,
            "lacquer_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        );
        let client_limit_rejections = counter_vec(
            &r,
            "lacquer_client_limit_rejections_total",
            "Request headers refused before parsing, by limit (header_timeout, url_too_long, header_too_large, too_many_headers).",
            &["reason"],
        );
        let client_idle_closed = counter(
            &r,
            "lacquer_client_idle_closed_total",
            "Keep-alive client connections closed after limits.idle_timeout without a request.",
        );
        let fast_path_hits = counter(
            &r,
            "lacquer_fast_path_hits_total",
            "Fresh hits answered below pingora by the connection's fast path (cache.fast_path).",
        );
        let client_gone_fills = counter(
            &r,
            "lacquer_client_gone_fills_total",
            "Cache fills completed after the client that started them went away.",
        );
        let client_gone_fills_refused = counter(
            &r,
            "lacquer_client_gone_fills_refused_total",
            "Fills ended with their client because limits.max_orphan_fills were already running.",
        );
        let fills_over_memory = counter(
            &r,
            "lacquer_cache_fills_over_memory_total",
            "Fills not stored because the bodies of all fills in flight reached cache.max_size.",
        );
        let unsafe_invalidations_limited = counter(
            &r,
            "lacquer_unsafe_invalidations_limited_total",
            "Invalidations after unsafe requests skipped by purge.unsafe_invalidation_rate.",
        );
        #[cfg(target_os = "linux")]
        register(
            &r,
            "process",
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        );
        Metrics {
            registry: r,
            requests,
            request_duration,
            background_revalidations,
            upstream_requests,
            upstream_response,
            upstream_healthy,
            upstream_retries,
            coalesced,
            coalesced_wait,
            cache_objects,
            cache_bytes,
            cache_capacity,
            cache_inserts,
            cache_evictions,
            purges,
            purged_objects,
            access_log_dropped,
            client_limit_rejections,
            client_idle_closed,
            fast_path_hits,
            client_gone_fills,
            client_gone_fills_refused,
            fills_over_memory,
            unsafe_invalidations_limited,
            rule_requests,
            cluster_redis_up,
            cluster_purges_published,
            cluster_purges_applied,
            cluster_purge_delay,
            cluster_memory_drops,
            cluster_nodes,
            shared_lookups,
            shared_stores,
            shared_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Record one finished client request.
    pub(crate) fn request(&self, cache_status: &str, reason: &str, duration: Duration) {
        self.requests
            .with_label_values(&[cache_status, reason])
            .inc();
        self.request_duration
            .with_label_values(&[cache_status])
            .observe(duration.as_secs_f64());
    }
}

/// The status class label of an HTTP status: `2xx`, `3xx`, ...
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The process-wide metrics.
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_prometheus_names() {
        let m = metrics();
        m.request("hit", "", Duration::from_millis(1));
        m.cache_evictions.with_label_values(&["size"]).inc();
        let text = m.render();
        for name in [
            "lacquer_requests_total",
            "lacquer_request_duration_seconds_bucket",
            "lacquer_cache_evictions_total",
            "lacquer_cache_objects",
            "lacquer_cache_capacity_bytes",
            "lacquer_coalesced_requests_total",
            "lacquer_upstream_retries_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(503), "5xx");
    }
}
