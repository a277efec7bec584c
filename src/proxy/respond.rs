//! What the proxy writes itself: its own answers (a failure's status, a small JSON body),
//! what it removes from responses meant for this cache only, and the freshness policy a
//! response is judged by (the config's, with the request's rule).

use std::time::SystemTime;

use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{LacquerProxy, RequestCtx};
use crate::cache::freshness::FreshnessDefaults;
use crate::cache::http_date;
use crate::cache::status::{CacheStatus, Outcome};
use crate::config::Config;
use crate::guard;

impl LacquerProxy {
    /// lacquer's own answer to a request that failed before any response: `code`, no body,
    /// and a `Cache-Status` saying why (`detail`).
    pub(super) async fn respond_failure(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        code: u16,
        detail: &'static str,
    ) {
        let outcome = Outcome {
            status: ctx.bypass.map_or(CacheStatus::Miss, CacheStatus::Bypass),
            ttl: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            detail: Some(detail),
        };
        let Ok(mut resp) = ResponseHeader::build(code, Some(4)) else {
            return;
        };
        let headers = [
            ("Cache-Status", outcome.header_value()),
            ("Cache-Control", "private, no-store".to_string()),
            ("Content-Length", "0".to_string()),
            ("Connection", "close".to_string()),
        ];
        for (name, value) in headers {
            let _ = resp.insert_header(name, value);
        }
        session.set_keepalive(None);
        if let Err(err) = session.write_response_header(Box::new(resp), true).await {
            log::debug!("could not send the {code} for a failed request: {err}");
        }
    }

    /// The freshness policy for a response: the config's, with the request's rule applied.
    pub(super) fn freshness_defaults(
        config: &Config,
        rule: Option<usize>,
    ) -> FreshnessDefaults<'_> {
        let c = &config.cache;
        let rule = rule.and_then(|i| config.rules.get(i));
        let grace = rule.and_then(|r| r.grace);
        FreshnessDefaults {
            default_ttl: Some(rule.and_then(|r| r.ttl.as_ref()).unwrap_or(&c.default_ttl)),
            force_ttl: rule.and_then(|r| r.force_ttl.as_ref()),
            strip_set_cookie: rule.is_some_and(|r| r.strip_set_cookie),
            stale_while_revalidate: grace.unwrap_or(c.stale_while_revalidate),
            stale_if_error: grace.unwrap_or(c.stale_if_error),
            max_object_size: c.max_object_size,
        }
    }
}

/// Remove what is meant for this cache only from a response to a client, in one pass over its
/// own few names (a removal parses and hashes a name): the tag headers, and
/// `CDN-Cache-Control`, which is addressed to this cache (RFC 9213) and would otherwise reach
/// browsers and every cache after lacquer.
pub(super) fn strip_cache_only_fields(
    resp: &mut ResponseHeader,
    purge: &crate::config::PurgeConfig,
) {
    let (mut tags, mut targeted) = (false, false);
    for name in resp.headers.keys() {
        let n = name.as_str();
        targeted |= n == "cdn-cache-control";
        tags |= purge.strip_tag_headers && purge.tag_headers.iter().any(|t| t == n);
    }
    if tags {
        for name in &purge.tag_headers {
            resp.remove_header(name.as_str());
        }
    }
    if targeted {
        resp.remove_header("cdn-cache-control");
    }
}

/// Send a small JSON response from lacquer itself.
pub(super) async fn respond_json(session: &mut Session, status: u16, body: String) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(bytes::Bytes::from(body)), true)
        .await
}

/// A stored response goes out with the Date it was stored with, a relayed one (`from_app`)
/// with the app's: pingora's HTTP/1 writer would put its clock there (RFC 9110 section 6.6.1).
/// Its clock stays for a Date that is no HTTP-date (as for a response without one). (A stored
/// Date was checked when it was stored: only a relayed one is read here.)
pub(super) fn keep_date(session: &mut Session, resp: &ResponseHeader, from_app: bool) {
    if let Some(date) = resp
        .headers
        .get(http::header::DATE)
        .filter(|d| !from_app || http_date::parse(d.as_bytes(), SystemTime::now()).is_some())
    {
        guard::keep_date(session.as_downstream_mut(), date);
    }
}
