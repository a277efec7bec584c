//! Who is served from the cache: pure functions over the request header.
//!
//! lacquer caches for anonymous visitors only. A request with `Authorization`, a session cookie
//! (by default: any cookie, as Varnish's builtin VCL does) or a method other than GET/HEAD
//! bypasses the cache. When session cookies are configured by name, other cookies (analytics)
//! are stripped from the requests the cache serves so they neither bypass nor split the cache.
//!
//! Not here: whether a response may be stored (see `freshness.rs`).

use crate::config::{BypassConfig, NamePattern};
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
    },
    /// Go straight to the origin; never store the response.
    Bypass(BypassReason),
    /// An invalidation (`PURGE`): answered by lacquer, never forwarded.
    Purge,
}

/// Decide whether `req` may be served from, and fill, the cache.
pub(crate) fn request_decision(req: &RequestHeader, bypass: &BypassConfig) -> RequestDecision {
    if req.method.as_str() == "PURGE" {
        return RequestDecision::Purge;
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return RequestDecision::Bypass(BypassReason::Method);
    }
    // one pass over the request's own few fields instead of a lookup per name (the hit path)
    let (mut authorization, mut upgrade, mut body) = (false, false, false);
    for (name, value) in req.headers.iter() {
        if *name == http::header::AUTHORIZATION {
            authorization = true;
        } else if *name == http::header::UPGRADE {
            upgrade = true;
        } else if *name == http::header::TRANSFER_ENCODING {
            body = true;
        } else if *name == http::header::CONTENT_LENGTH {
            body |= announces_body(value.as_bytes());
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
    let mut has_cookie = false;
    for value in req.headers.get_all(http::header::COOKIE) {
        let bytes = value.as_bytes();
        if bypass.session_cookies.is_empty() && !bytes.trim_ascii().is_empty() {
            // any cookie at all, even a nameless one, marks a visitor who may be logged in
            return RequestDecision::Bypass(BypassReason::Cookie);
        }
        for name in cookie_names(bytes) {
            has_cookie = true;
            if is_session_cookie(name, &bypass.session_cookies) {
                return RequestDecision::Bypass(BypassReason::Cookie);
            }
        }
    }
    RequestDecision::Cache {
        strip_cookies: has_cookie || req.headers.contains_key(http::header::COOKIE),
    }
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

fn is_session_cookie(name: &[u8], patterns: &[NamePattern]) -> bool {
    match std::str::from_utf8(name) {
        Ok(n) => patterns.iter().any(|p| p.matches(n)),
        // a cookie name we cannot read is treated as a session cookie: bypass is the safe side
        Err(_) => true,
    }
}

/// The names of the cookies in one `Cookie` header value (RFC 6265 section 5.4), skipping
/// empty pairs.
pub(crate) fn cookie_names(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b';').filter_map(|pair| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
        let name = name.trim_ascii();
        (!name.is_empty()).then_some(name)
    })
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
        }
    }

    #[test]
    fn decisions() {
        use BypassReason::*;
        use RequestDecision::*;
        let any = BypassConfig::default();
        let named = sessions(&["sessionid", "wordpress_logged_in_*"]);
        let cases: Vec<(&str, Vec<(&str, &str)>, &BypassConfig, RequestDecision)> = vec![
            (
                "GET",
                vec![],
                &any,
                Cache {
                    strip_cookies: false,
                },
            ),
            (
                "HEAD",
                vec![],
                &any,
                Cache {
                    strip_cookies: false,
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
                },
            ),
            ("PURGE", vec![("Cookie", "sessionid=1")], &named, Purge),
        ];
        for (method, headers, cfg, want) in cases {
            assert_eq!(
                request_decision(&req(method, &headers), cfg),
                want,
                "{method} {headers:?}"
            );
        }
    }

    #[test]
    fn cookie_name_parsing() {
        let names: Vec<&[u8]> = cookie_names(b" a=1; b ; =x;;c=3=4").collect();
        assert_eq!(names, vec![&b"a"[..], b"b", b"c"]);
    }
}
