//! What lacquer changes in a client's request before the cache and the app see it: fields
//! with `_` in their names dropped, and for requests the cache serves, unkeyed headers and
//! non-session cookies removed, `Accept-Encoding` reduced to the variant it is stored under,
//! the Host the key names and the target without tracking parameters.
//!
//! The rule behind every step: the app must see exactly what the cache key says, and nothing
//! the key leaves out, or the app could render input into a page that every visitor is then
//! served (unkeyed input, docs/security.md). Not here: the key itself (`cache/key.rs`) and who
//! may use the cache (`cache/policy.rs`).

use pingora_error::Result;
use pingora_http::RequestHeader;

use crate::cache::key::RequestKey;
use crate::cache::vary;
use crate::config::CacheConfig;

/// Drop every header field whose name contains `_` (nginx's default,
/// `underscores_in_headers off`). CGI-style servers (wsgiref, Puma, PHP-FPM) turn both
/// `X_Forwarded_Host` and `X-Forwarded-Host` into `HTTP_X_FORWARDED_HOST`, so an underscore
/// spelling would slip past every list of stripped names; `Content_Length` and
/// `Transfer_Encoding` would reach such an app as framing it might trust.
pub(crate) fn drop_underscore_fields(req: &mut RequestHeader) {
    // one pass over the request's own few names; the removal (rare) hashes each name again
    if !req.headers.keys().any(|n| n.as_str().contains('_')) {
        return;
    }
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

/// Make a request the cache serves say no more than its key: what `prepare` changed in the
/// target, if anything, is returned as the target as received (for the access log).
pub(crate) fn prepare_for_cache(
    req: &mut RequestHeader,
    key: &RequestKey,
    cache: &CacheConfig,
    strip_cookies: bool,
) -> Result<Option<String>> {
    // headers outside the key that an app may trust (X-Forwarded-Host, X-Original-URL,
    // method overrides, ...) could make it render a page that every visitor is then served
    // (one pass over the request's own few headers; a removal hashes a name each time)
    let strip = &cache.strip_unkeyed_headers;
    if req.headers.keys().any(|name| strip.contains(name)) {
        for name in strip {
            req.remove_header(name);
        }
    }
    if strip_cookies {
        // only non-session cookies are left: they must neither split nor bypass the cache
        req.remove_header(&http::header::COOKIE);
    }
    // the app sees the same Accept-Encoding as the Vary variant it will be stored under, so
    // a "gzip, deflate" visitor can never store a deflate body that a gzip-only visitor
    // is then served (Varnish normalises the same way)
    if req.headers.contains_key(http::header::ACCEPT_ENCODING) {
        match vary::normalize_accept_encoding(req) {
            "" => {
                req.remove_header(&http::header::ACCEPT_ENCODING);
            }
            coding => {
                req.insert_header(http::header::ACCEPT_ENCODING, coding)?;
            }
        }
    }
    // the key's host: `Host: site.test.`, `site.test:`, `site.test:0080` and `SITE.test` share
    // one key, so they must reach the app as one host too, or a host-matching app answers one
    // spelling with a 404 (or builds `http:///...` links) that the others are then served
    let host_differs = req
        .headers
        .get(http::header::HOST)
        .is_none_or(|h| h.as_bytes() != key.host.as_bytes());
    if host_differs {
        req.insert_header(http::header::HOST, key.host.as_str())?;
    }
    let mut original = None;
    if key.stripped {
        // a parameter left out of the key must not reach the app either, or the app could
        // render it into a page that other visitors are then served (unkeyed input)
        if let Ok(uri) = key.path_and_query.parse::<http::Uri>() {
            original = Some(String::from_utf8_lossy(req.raw_path()).into_owned());
            req.set_uri(uri);
        }
    }
    Ok(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_names_are_dropped_and_others_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in [
            ("X_Forwarded_Host", "evil.example"),
            ("Content_Length", "5"),
            ("X-Forwarded-Host", "kept-here"),
            ("Accept", "text/html"),
        ] {
            req.append_header(name.to_string(), value).unwrap();
        }
        drop_underscore_fields(&mut req);
        let mut names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["accept", "x-forwarded-host"]);
    }
}
