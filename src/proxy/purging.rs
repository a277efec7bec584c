//! The proxy's purge work: a `PURGE` request answered by lacquer itself, and the
//! invalidation after a successful unsafe request (RFC 9111 section 4.4). The rules (who may,
//! what a request names) are in `purge.rs`.

use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{respond_json, LacquerProxy};
use crate::cache::key::RequestKey;
use crate::cache::storage::PurgeScope;
use crate::edge::Client;
use crate::live::Live;
use crate::purge::{self, PurgeSource};

impl LacquerProxy {
    /// Answer a `PURGE`, `BAN` or `PURGEKEYS` request in any Varnish purge client's form
    /// (see `purge/wire.rs`); it never reaches the app.
    pub(super) async fn handle_purge(
        &self,
        session: &mut Session,
        live: &Live,
        client: Client,
    ) -> Result<()> {
        if let Err(refused) = live.purge.admit_on_proxy(client.addr, session.req_header()) {
            let status = refused.status.as_u16();
            return respond_json(session, status, refused.body.to_string()).await;
        }
        let key = match RequestKey::from_request(
            client.scheme,
            session.req_header(),
            &live.config.cache.tracking_params,
        ) {
            Ok(k) => k,
            Err(e) => {
                purge::count_refused("invalid");
                let body = serde_json::json!({ "error": e.as_str() }).to_string();
                return respond_json(session, 400, body).await;
            }
        };
        let order = match purge::wire::parse(session.req_header(), &key) {
            Ok(o) => o,
            Err(e) => {
                // Magento and FOSHttpCache expect a 400 for a request that names nothing
                purge::count_refused("invalid");
                let body = serde_json::json!({ "error": e }).to_string();
                return respond_json(session, 400, body).await;
            }
        };
        if !self.cache.storage.may_ban(order.bans.len()) {
            // each outstanding ban is checked on every hit until its sweep retires it
            purge::count_refused("rate_limited");
            let body = serde_json::json!({ "error": "too many bans outstanding, try again" });
            return respond_json(session, 429, body.to_string()).await;
        }
        let local = purge::run_order(self.cache, &order, PurgeSource::Request);
        let (report, replication) = match self.cluster {
            Some(cluster) => {
                let (r, rep) = cluster.purge(&order, PurgeSource::Request, local).await;
                (r, Some(rep))
            }
            None => (local.await, None),
        };
        let n = report.urls + report.tags + report.all;
        // 200 even when nothing was stored: the URL is not in the cache, which is what the
        // client asked for (Varnish answers 200 too; purge clients count a 404 as a failure)
        let mut body = serde_json::json!({ "purged": n, "soft": order.soft, "bans": report.bans });
        let mut status = 200;
        if let Some(replication) = replication {
            if !replication.replicated {
                // applied on this node only: a purge client retries a 503
                status = 503;
            }
            body["replicated"] = replication.replicated.into();
            body["nodes"] = serde_json::json!(replication.nodes);
        }
        respond_json(session, status, body.to_string()).await
    }

    /// RFC 9111 section 4.4: a successful unsafe request invalidates its URL, and with
    /// `purge.invalidate_locations` the same-host URLs in `Location` and `Content-Location`
    /// (off by default: post/redirect/get sends `Location: /` on every logout and form, and
    /// anyone could evict the home page at will).
    pub(super) async fn invalidate_after_unsafe(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        live: &Live,
        client: Client,
    ) {
        let req = session.req_header();
        let status = resp.status.as_u16();
        if !live.config.purge.invalidate_on_unsafe
            || !purge::invalidating_method(&req.method)
            || !(200..400).contains(&status)
        {
            return;
        }
        // anyone can send a POST that the app answers 2xx: without purge rights, the
        // invalidations it causes are rate-limited (per client and overall), so nobody can
        // keep evicting pages and make the app render them again and again
        if !live.purge.admit_invalidation(client.addr, req) {
            return;
        }
        let tracking = &live.config.cache.tracking_params;
        let Ok(key) = RequestKey::from_request(client.scheme, req, tracking) else {
            return;
        };
        // the URL as an http and as an https visitor would have stored it
        let mut scopes = vec![PurgeScope::AnySchemeUrl(key.both_scheme_hashes())];
        let locations = if live.config.purge.invalidate_locations {
            &[http::header::LOCATION, http::header::CONTENT_LOCATION][..]
        } else {
            &[]
        };
        for name in locations {
            let target = resp
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| purge::location_key(v, &key, tracking));
            if let Some(k) = target {
                scopes.push(PurgeScope::AnySchemeUrl(k.both_scheme_hashes()));
            }
        }
        let local = purge::run(self.cache, &scopes, false, PurgeSource::Unsafe);
        match self.cluster {
            // (the response does not wait for the other nodes' acknowledgements)
            Some(cluster) => {
                let order = purge::wire::PurgeOrder {
                    scopes: scopes.clone(),
                    tag_patterns: Vec::new(),
                    bans: Vec::new(),
                    soft: false,
                };
                cluster.purge(&order, PurgeSource::Unsafe, local).await;
            }
            None => {
                local.await;
            }
        }
    }
}
