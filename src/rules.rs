//! Per-route rules (`rules:`), matched once per request: the first rule whose host, path and
//! method all fit applies, and later phases read it from the request context by index. No
//! rules: one emptiness check per request.
//!
//! The rules themselves are validated in `config/routes.rs`; what they change is applied where
//! the thing itself is decided: bypass and cookies in `cache/policy.rs`, lifetimes in
//! `cache/freshness.rs`, the pool in `upstream.rs` (through `live.rs`).

use std::borrow::Cow;

use pingora_http::RequestHeader;

use crate::config::Rule;
use crate::metrics::metrics;

/// The index of the first rule that applies to `req`, counted in
/// `lacquer_rule_requests_total`.
pub(crate) fn find(rules: &[Rule], req: &RequestHeader) -> Option<usize> {
    let found = matching(rules, req)?;
    count(rules, found);
    Some(found)
}

/// The index of the first rule that applies to `req`, not counted (yet: the fast path counts
/// it with [`count`] once it answers the request itself).
pub(crate) fn matching(rules: &[Rule], req: &RequestHeader) -> Option<usize> {
    if rules.is_empty() {
        return None;
    }
    let host = request_host(req);
    let path = match_path(req.uri.path());
    rules.iter().position(|r| {
        (r.methods.is_empty() || r.methods.contains(&req.method))
            && (r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(&host)))
            && (r.paths.is_empty() || r.paths.iter().any(|p| p.matches(&path)))
    })
}

/// Count a request that rule `index` applied to.
pub(crate) fn count(rules: &[Rule], index: usize) {
    if let Some(rule) = rules.get(index) {
        metrics()
            .rule_requests
            .with_label_values(&[rule.label.as_str()])
            .inc();
    }
}

/// The host a rule is matched against: the authority of an absolute target or HTTP/2's
/// `:authority`, else `Host`; lower-case, without a port or a trailing dot.
fn request_host(req: &RequestHeader) -> String {
    // pingora leaves an absolute-form target's authority in the raw path, not on the `Uri`
    let raw_path = std::str::from_utf8(req.raw_path()).unwrap_or("");
    let from_target = ["http://", "https://"].iter().find_map(|scheme| {
        let rest = raw_path
            .get(..scheme.len())?
            .eq_ignore_ascii_case(scheme)
            .then(|| &raw_path[scheme.len()..])?;
        Some(rest.split(['/', '?']).next().unwrap_or(rest))
    });
    let raw = match req.uri.host().or(from_target) {
        Some(h) => h,
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    // an IPv6 literal keeps the colons inside its brackets
    let without_port = match raw.find(']') {
        Some(end) if raw.starts_with('[') => &raw[..=end],
        _ => raw.split(':').next().unwrap_or(raw),
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The path as an app reads it for matching, so that no spelling slips past a pass rule:
/// percent-encoded unreserved characters and `/` decoded (`/%61dmin/` and `/admin%2Fusers`
/// reach Django, Rails and PHP as `/admin/...`), repeated slashes collapsed (Rails squeezes
/// them), `.` and `..` segments resolved (as nginx and browsers do). Matching only: the
/// request goes on as sent.
fn match_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(yaml: &str) -> Vec<Rule> {
        Config::from_yaml(&format!("upstreams: [{{addr: \"127.0.0.1:1\"}}]\n{yaml}"))
            .unwrap()
            .rules
    }

    fn req(method: &str, target: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        // an absolute target, as pingora parses one off the wire
        r.set_uri(target.parse().unwrap());
        if let Some(h) = host {
            r.insert_header("Host", h).unwrap();
        }
        r
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let set = rules(
            r#"
rules:
  - match: {path: ["/admin", "/admin/*"]}
    pass: true
  - match: {host: "*.example.com", path: "/articles/*", method: GET}
    ttl: 5m
  - match: {path: "/*"}
    ttl: 1m
"#,
        );
        let cases = [
            ("GET", "/admin", Some("a.test"), Some(0)),
            ("POST", "/admin/login?next=/", Some("a.test"), Some(0)),
            ("GET", "/%61dmin/", Some("a.test"), Some(0)),
            ("GET", "/articles/1", Some("www.Example.com:8080"), Some(1)),
            ("GET", "/articles/1", Some("www.example.com."), Some(1)),
            ("HEAD", "/articles/1", Some("www.example.com"), Some(2)),
            ("GET", "/articles/1", Some("example.org"), Some(2)),
            ("GET", "http://www.example.com/articles/2", None, Some(1)),
            ("GET", "/admin%2Fusers", Some("a.test"), Some(0)),
            ("GET", "//admin/x", Some("a.test"), Some(0)),
            ("GET", "/static/../admin/", Some("a.test"), Some(0)),
            ("GET", "/.well-known/x", Some("a.test"), Some(2)),
        ];
        for (method, target, host, want) in cases {
            assert_eq!(
                find(&set, &req(method, target, host)),
                want,
                "{method} {target} {host:?}"
            );
        }
        assert_eq!(find(&[], &req("GET", "/", None)), None);
        // an absolute target as pingora leaves it: the authority in the raw path only
        let mut raw = RequestHeader::build("GET", b"/", None).unwrap();
        raw.set_raw_path(b"http://www.example.com/articles/3")
            .unwrap();
        assert_eq!(find(&set, &raw), Some(1));
    }

    #[test]
    fn paths_are_matched_as_apps_read_them() {
        for (path, want) in [
            ("/a/b", "/a/b"),
            ("/", "/"),
            ("/admin/", "/admin/"),
            ("//admin//x", "/admin/x"),
            ("/a/./b/../c/", "/a/c/"),
            ("/../..", "/"),
            ("/%61dmin%2Fusers", "/admin/users"),
            ("/a%20b", "/a%20b"),
        ] {
            assert_eq!(match_path(path), want, "{path}");
        }
    }

    #[test]
    fn hosts_lose_ports_and_case() {
        for (host, want) in [
            ("Example.COM:80", "example.com"),
            ("example.com.", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(request_host(&req("GET", "/", Some(host))), want, "{host}");
        }
    }
}
