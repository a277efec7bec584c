//! Who is served from the cache: pure functions over the request header.
//!
//! lacquer caches for anonymous visitors only. A request with `Authorization`, a session cookie
//! (by default: any cookie, as Varnish's builtin VCL does) or a method other than GET/HEAD
//! bypasses the cache, as does one a `pass` rule matches. Cookies in `bypass.ignore_cookies`
//! (analytics, consent) never bypass; when session cookies are configured by name, other
//! cookies never bypass either. Cookies that do not bypass are stripped from the requests
//! the cache serves (looks up and fills), so they neither split the cache nor reach the app
//! for a page every visitor is served. A request that goes to the app anyway keeps them all.
//!
//! Not here: whether a response may be stored (see `freshness.rs`).

use crate::config::{BypassConfig, NamePattern, Rule};
use http::Method;
use pingora_http::RequestHeader;

/// Why a request does not use the cache. Reaches the `Cache-Status` header and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BypassReason {
    /// Not GET or HEAD.
    Method,
    /// The request carries `Authorization`.
    Authorization,
    /// The request carries a (session) cookie.
    Cookie,
    /// The request asks for a protocol upgrade (WebSocket).
    Upgrade,
    /// A GET or HEAD that carries a body: the key ignores bodies, so the app's answer to it
    /// must never be stored or coalesced with others (and its lock never wait on its upload).
    Body,
    /// A rule says `pass: true`.
    RulePass,
    /// The URL is remembered as uncacheable (hit-for-miss) and the request carries cookies:
    /// it goes to the app with all of them (a CSRF or flash cookie must survive a form page)
    /// and its answer, rendered for those cookies, is never stored.
    HitForMissCookies,
}

impl BypassReason {
    /// The label used in headers, logs and metrics.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::Authorization => "authorization",
            BypassReason::Cookie => "cookie",
            BypassReason::Upgrade => "upgrade",
            BypassReason::Body => "body",
            BypassReason::RulePass => "rule-pass",
            BypassReason::HitForMissCookies => "hit-for-miss",
        }
    }
}

/// What to do with a request before the cache sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestDecision {
    /// Look it up in the cache. `strip_cookies`: the request carries only non-session cookies,
    /// which must be removed before lookup and forwarding.
    Cache {
        /// Remove the `Cookie` header.
        strip_cookies: bool,
        /// The request says `Cache-Control: no-cache` (or `Pragma: no-cache`): from a client
        /// allowed to purge it fetches anew and replaces the stored copy (FOSHttpCache's
        /// refresh); from anyone else it changes nothing.
        refresh: bool,
    },
    /// Go straight to the origin; never store the response.
    Bypass(BypassReason),
    /// An invalidation (`PURGE`, `BAN`, `PURGEKEYS`): answered by lacquer, never forwarded.
    Purge,
}

/// Decide whether `req` may be served from, and fill, the cache, under the rule that
/// matched it, if any.
pub(crate) fn request_decision(
    req: &RequestHeader,
    bypass: &BypassConfig,
    rule: Option<&Rule>,
) -> RequestDecision {
    if matches!(req.method.as_str(), "PURGE" | "BAN" | "PURGEKEYS") {
        return RequestDecision::Purge;
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return RequestDecision::Bypass(BypassReason::Method);
    }
    if rule.is_some_and(|r| r.pass) {
        return RequestDecision::Bypass(BypassReason::RulePass);
    }
    // one pass over the request's own few fields instead of a lookup per name (the hit path)
    let (mut authorization, mut upgrade, mut body, mut refresh) = (false, false, false, false);
    for (name, value) in req.headers.iter() {
        if *name == http::header::AUTHORIZATION {
            authorization = true;
        } else if *name == http::header::UPGRADE {
            upgrade = true;
        } else if *name == http::header::TRANSFER_ENCODING {
            body = true;
        } else if *name == http::header::CONTENT_LENGTH {
            body |= announces_body(value.as_bytes());
        } else if *name == http::header::CACHE_CONTROL || *name == http::header::PRAGMA {
            refresh |= asks_no_cache(value.as_bytes());
        }
    }
    if authorization {
        return RequestDecision::Bypass(BypassReason::Authorization);
    }
    if upgrade {
        return RequestDecision::Bypass(BypassReason::Upgrade);
    }
    if body {
        return RequestDecision::Bypass(BypassReason::Body);
    }
    let cookies = req.headers.get_all(http::header::COOKIE);
    if cookies.iter().next().is_none() {
        return RequestDecision::Cache {
            strip_cookies: false,
            refresh,
        };
    }
    if rule.is_some_and(|r| r.ignore_cookies) {
        return RequestDecision::Cache {
            strip_cookies: true,
            refresh,
        };
    }
    let any_bypasses = bypass.session_cookies.is_empty();
    for value in cookies {
        let bytes = value.as_bytes();
        for pair in bytes.split(|&b| b == b';') {
            if pair.trim_ascii().is_empty() {
                continue;
            }
            let Some(name) = cookie_name(pair) else {
                // a nameless cookie (`=x`) cannot be told apart from a session: bypass
                return RequestDecision::Bypass(BypassReason::Cookie);
            };
            if is_listed(name, &bypass.ignore_cookies) == Some(true) {
                continue;
            }
            let session = if any_bypasses {
                // any other cookie marks a visitor who may be logged in
                true
            } else {
                // a name we cannot read counts as a session cookie: bypass is the safe side
                is_listed(name, &bypass.session_cookies).unwrap_or(true)
            };
            if session {
                return RequestDecision::Bypass(BypassReason::Cookie);
            }
        }
    }
    RequestDecision::Cache {
        strip_cookies: true,
        refresh,
    }
}

/// Whether a `Cache-Control` or `Pragma` value holds `no-cache`.
fn asks_no_cache(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
}

/// Whether a `Content-Length` value announces a body (RFC 9112 section 6.3; any
/// `Transfer-Encoding` does too). A GET body has no defined meaning (RFC 9110 section 9.3.1),
/// yet frameworks read it as form input, so the app's answer could depend on what the key
/// leaves out. Such a request goes to the app as it is (an API that reads GET bodies keeps
/// working) and never touches the cache: it is not stored, never coalesced with clean
/// requests, and never holds the cache lock while its client takes its time over the body.
fn announces_body(content_length: &[u8]) -> bool {
    content_length.trim_ascii() != b"0"
}

/// Whether a cookie name matches one of `patterns`; `None` when the name is not UTF-8.
fn is_listed(name: &[u8], patterns: &[NamePattern]) -> Option<bool> {
    let n = std::str::from_utf8(name).ok()?;
    Some(patterns.iter().any(|p| p.matches(n)))
}

/// The name of one `name=value` pair of a `Cookie` header (RFC 6265 section 5.4); `None`
/// when it has none.
fn cookie_name(pair: &[u8]) -> Option<&[u8]> {
    let name = pair
        .split(|&b| b == b'=')
        .next()
        .unwrap_or(pair)
        .trim_ascii();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn sessions(names: &[&str]) -> BypassConfig {
        BypassConfig {
            session_cookies: names.iter().map(|n| NamePattern::new(n)).collect(),
            ignore_cookies: vec![NamePattern::new("_ga*")],
        }
    }

    #[test]
    fn decisions() {
        use BypassReason::*;
        use RequestDecision::*;
        let any = BypassConfig::default();
        let named = sessions(&["sessionid", "wordpress_logged_in_*"]);
        let analytics_only = BypassConfig {
            session_cookies: Vec::new(),
            ignore_cookies: vec![NamePattern::new("_ga*")],
        };
        let cases: Vec<(&str, Vec<(&str, &str)>, &BypassConfig, RequestDecision)> = vec![
            (
                "GET",
                vec![],
                &any,
                Cache {
                    strip_cookies: false,
                    refresh: false,
                },
            ),
            (
                "HEAD",
                vec![],
                &any,
                Cache {
                    strip_cookies: false,
                    refresh: false,
                },
            ),
            ("POST", vec![], &any, Bypass(Method)),
            ("DELETE", vec![], &any, Bypass(Method)),
            (
                "GET",
                vec![("Authorization", "Basic eA==")],
                &any,
                Bypass(Authorization),
            ),
            ("GET", vec![("Cookie", "_ga=1")], &any, Bypass(Cookie)),
            (
                "GET",
                vec![("Cookie", "_ga=1; _gid=2")],
                &named,
                Cache {
                    strip_cookies: true,
                    refresh: false,
                },
            ),
            (
                "GET",
                vec![("Cookie", "_ga=1; sessionid=abc")],
                &named,
                Bypass(Cookie),
            ),
            (
                "GET",
                vec![("Cookie", "wordpress_logged_in_x=1")],
                &named,
                Bypass(Cookie),
            ),
            (
                "GET",
                vec![("Cookie", "a=1"), ("Cookie", "sessionid=2")],
                &named,
                Bypass(Cookie),
            ),
            (
                "GET",
                vec![("Cookie", "")],
                &any,
                Cache {
                    strip_cookies: true,
                    refresh: false,
                },
            ),
            ("GET", vec![("Cookie", "=x")], &any, Bypass(Cookie)),
            ("GET", vec![("Upgrade", "websocket")], &any, Bypass(Upgrade)),
            ("GET", vec![("Content-Length", "5")], &any, Bypass(Body)),
            ("HEAD", vec![("Content-Length", "1")], &any, Bypass(Body)),
            (
                "GET",
                vec![("Transfer-Encoding", "chunked")],
                &any,
                Bypass(Body),
            ),
            (
                "GET",
                vec![("Content-Length", "0")],
                &any,
                Cache {
                    strip_cookies: false,
                    refresh: false,
                },
            ),
            ("PURGE", vec![("Cookie", "sessionid=1")], &named, Purge),
            (
                "GET",
                vec![("Cookie", "_ga=1; _ga_X=2")],
                &analytics_only,
                Cache {
                    strip_cookies: true,
                    refresh: false,
                },
            ),
            (
                "GET",
                vec![("Cookie", "_ga=1; csrftoken=2")],
                &analytics_only,
                Bypass(Cookie),
            ),
            (
                "GET",
                vec![("Cookie", "_ga=1; =x")],
                &analytics_only,
                Bypass(Cookie),
            ),
        ];
        for (method, headers, cfg, want) in cases {
            assert_eq!(
                request_decision(&req(method, &headers), cfg, None),
                want,
                "{method} {headers:?}"
            );
        }
    }

    #[test]
    fn rules_pass_or_ignore_cookies() {
        let rules = crate::config::Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\nrules:\n  - match: {path: \"/a\"}\n    pass: true\n  - match: {path: \"/s\"}\n    cookies: ignore\n",
        )
        .unwrap()
        .rules;
        let any = BypassConfig::default();
        let cookie = [("Cookie", "sessionid=1")];
        assert_eq!(
            request_decision(&req("GET", &[]), &any, Some(&rules[0])),
            RequestDecision::Bypass(BypassReason::RulePass)
        );
        assert_eq!(
            request_decision(&req("POST", &[]), &any, Some(&rules[0])),
            RequestDecision::Bypass(BypassReason::Method),
            "an unsafe method stays one (it invalidates)"
        );
        assert_eq!(
            request_decision(&req("GET", &cookie), &any, Some(&rules[1])),
            RequestDecision::Cache {
                strip_cookies: true,
                refresh: false,
            }
        );
        assert_eq!(
            request_decision(
                &req("GET", &[("Authorization", "Basic eA==")]),
                &any,
                Some(&rules[1])
            ),
            RequestDecision::Bypass(BypassReason::Authorization)
        );
    }
}
