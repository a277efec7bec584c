//! The purge requests that apps already send to Varnish, read into what lacquer purges:
//! `PURGE`, `BAN` and `PURGEKEYS` in the forms of WordPress (Proxy Cache Purge), Magento 2,
//! Drupal (purge_purger_http, varnish_purge), Symfony (FOSHttpCache), Shopware 6 and TYPO3
//! (docs/purging.md has one section per app). Pure functions over the request header.
//!
//! - A URL purge names the request's own host; tag purges and bans without a host condition
//!   apply to every host (Magento and Shopware send the cache's own host name).
//! - A tag pattern that is really a list of exact tags (Magento's `((^|,)a(,|$))|...`,
//!   FOSHttpCache's `(^|,)(a|b)(,|$)`, a plain `a|b`) becomes exact lookups in the tag index;
//!   another pattern is matched against the index's distinct tags, never every object.
//! - Host, URL and header conditions become a [`Ban`], which takes effect at once and is swept
//!   in the background.
//!
//! Not here: who may purge (`gate.rs`), running the purge (`purge.rs`).

use pingora_http::RequestHeader;
use regex::Regex;

use crate::cache::ban::{self, Ban};
use crate::cache::key::RequestKey;
use crate::cache::storage::PurgeScope;
use crate::cache::tags::{split_tags, valid_tag};

/// What one purge request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeOrder {
    /// URL, tag and "everything" purges.
    pub scopes: Vec<PurgeScope>,
    /// Patterns matched against every distinct tag in the index.
    pub tag_patterns: Vec<String>,
    /// Bans: conditions on host, URL, headers and tags, swept in the background.
    pub bans: Vec<Ban>,
    /// Mark stale instead of removing.
    pub soft: bool,
}

/// A set of tags named by a client's pattern.
#[derive(Debug, PartialEq)]
enum TagSet {
    /// These exact tags.
    Exact(Vec<String>),
    /// Every object (Magento's `.*`).
    All,
    /// Tags matching this unanchored pattern.
    Pattern(String),
}

/// The request headers a `BAN` reads tags from, by app: FOSHttpCache (`X-Cache-Tags`, a
/// regex), Drupal (`Purge-Cache-Tags` or `Cache-Tags`, `|`- or space-separated), TYPO3
/// (`xkey-purge`, space-separated).
const BAN_TAG_HEADERS: [&str; 4] = [
    "x-cache-tags",
    "purge-cache-tags",
    "cache-tags",
    "xkey-purge",
];

/// Read a purge request (`method` is `PURGE`, `BAN` or `PURGEKEYS`); `url` is the key of its
/// target. `Err` says what is wrong, for a 400.
pub fn parse(req: &RequestHeader, url: &RequestKey) -> Result<PurgeOrder, String> {
    // every line of a field: a client may send its tags in several (`xkey-purge: a`,
    // `xkey-purge: b`); lines of a pattern field are joined the same way and then refused
    // as a pattern unless they read as one list
    let joined: Vec<(String, String)> = req
        .headers
        .keys()
        .map(|name| {
            let lines: Vec<&str> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
                .collect();
            let sep = if name.as_str().starts_with("xkey") {
                " "
            } else {
                "|"
            };
            (name.as_str().to_string(), lines.join(sep))
        })
        .collect();
    let header = |name: &str| -> Option<&str> {
        joined
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let flag = |name: &str| header(name).is_some_and(|v| v.trim() == "1");
    let mut order = PurgeOrder {
        scopes: Vec::new(),
        tag_patterns: Vec::new(),
        bans: Vec::new(),
        soft: flag("soft-purge"),
    };
    match req.method.as_str() {
        "PURGEKEYS" => {
            // FOSHttpCache's xkey mode: soft by default, and nothing named is an error
            let (hard, soft) = (header("xkey-purge"), header("xkey-softpurge"));
            if hard.is_none() && soft.is_none() {
                return Err("PURGEKEYS needs an xkey-purge or xkey-softpurge header".into());
            }
            order.soft |= hard.is_none();
            for v in [hard, soft].into_iter().flatten() {
                order.scopes.extend(exact_tags("xkey-purge", v)?);
            }
        }
        "BAN" => ban_request(&header, url, &mut order)?,
        _ => purge_request(&header, url, &mut order)?,
    }
    Ok(order)
}

/// `PURGE`: a URL (the request's host), or tags (xkey, Magento, WordPress), or a URL
/// regex on the request's host (WordPress's `X-Purge-Method: regex`).
fn purge_request<'a>(
    header: &impl Fn(&str) -> Option<&'a str>,
    url: &RequestKey,
    order: &mut PurgeOrder,
) -> Result<(), String> {
    let mut named = false;
    for (name, soft) in [
        ("xkey-purge", false),
        ("xkey-softpurge", true),
        ("xkey", false),
    ] {
        if let Some(v) = header(name) {
            // Shopware sends `xkey:`, Varnish xkey's own clients `xkey-purge:`
            order.scopes.extend(exact_tags(name, v)?);
            order.soft |= soft;
            named = true;
        }
    }
    if let Some(pattern) = header("x-magento-tags-pattern") {
        order.soft |= header("x-magento-purge-soft").is_some_and(|v| v.trim() == "1");
        let tags = tag_set(pattern)?;
        match header("x-pool") {
            Some(pool) if pool.trim() != ".*" => {
                // the pool is a response header condition: a ban
                order.bans.push(Ban {
                    headers: vec![("x-pool".to_string(), ban::pattern(pool.trim())?)],
                    tags: tags_condition(&tags)?,
                    ..Ban::default()
                });
            }
            _ => add_tags(order, tags),
        }
        named = true;
    }
    match header("x-purge-method").map(|m| m.trim().to_ascii_lowercase()) {
        Some(m) if m == "regex" => {
            // WordPress: ban `req.http.host == <host> && req.url ~ <path>`; `/.*` empties a site
            order.bans.push(Ban {
                host: Some(ban::pattern(&format!("^{}$", regex::escape(&url.host)))?),
                url: Some(ban::pattern(&url.path_and_query)?),
                ..Ban::default()
            });
            named = true;
        }
        Some(m) if m == "tags" => {
            let pattern = header("x-cache-tags-pattern")
                .ok_or("X-Purge-Method: tags needs an X-Cache-Tags-Pattern header")?;
            add_tags(order, tag_set(pattern)?);
            named = true;
        }
        _ => {}
    }
    if !named {
        order
            .scopes
            .push(PurgeScope::AnySchemeUrl(url.both_scheme_hashes()));
    }
    Ok(())
}

/// `BAN`: FOSHttpCache's `X-Host`/`X-Url`/`X-Content-Type`/`X-Cache-Tags`, Drupal's tag list,
/// TYPO3's site and page headers; with none of them, the target path as a URL regex
/// (`BAN /` is everything: Shopware's "purge all").
fn ban_request<'a>(
    header: &impl Fn(&str) -> Option<&'a str>,
    url: &RequestKey,
    order: &mut PurgeOrder,
) -> Result<(), String> {
    // `.*` is FOSHttpCache's "no condition"
    let condition = |name: &str| -> Result<Option<Regex>, String> {
        match header(name).map(str::trim) {
            None | Some(".*") | Some("") => Ok(None),
            Some(p) => ban::pattern(p).map(Some),
        }
    };
    let host = condition("x-host")?;
    let path = condition("x-url")?;
    let content_type = condition("x-content-type")?;
    let mut headers = Vec::new();
    for (request_field, response_field) in [
        ("varnish-ban-typo3-sitename", "typo3-sitename"),
        ("varnish-ban-typo3-pid", "typo3-pid"),
    ] {
        if let Some(v) = header(request_field) {
            let exact = format!("^{}$", regex::escape(v.trim()));
            headers.push((response_field.to_string(), ban::pattern(&exact)?));
        }
    }
    let mut tags = None;
    for name in BAN_TAG_HEADERS {
        if let Some(v) = header(name) {
            tags = Some(tag_set(v)?);
            break;
        }
    }
    let everything = header("varnish-ban-all").is_some_and(|v| v.trim() == "1");
    let any_condition = host.is_some()
        || path.is_some()
        || content_type.is_some()
        || !headers.is_empty()
        || tags.is_some()
        || everything;
    let path = match (any_condition, path) {
        (true, p) => p,
        // no condition: the target itself is the URL regex
        (false, _) if url.path_and_query == "/" => {
            order.scopes.push(PurgeScope::All);
            return Ok(());
        }
        (false, _) => Some(ban::pattern(&url.path_and_query)?),
    };
    let only_tags =
        host.is_none() && path.is_none() && content_type.is_none() && headers.is_empty();
    match tags {
        Some(t) if only_tags => add_tags(order, t),
        None if only_tags => order.scopes.push(PurgeScope::All),
        t => {
            let tags = match &t {
                Some(t) => tags_condition(t)?,
                None => None,
            };
            order.bans.push(Ban {
                host,
                url: path,
                content_type,
                headers,
                tags,
            });
        }
    }
    Ok(())
}

fn add_tags(order: &mut PurgeOrder, tags: TagSet) {
    match tags {
        TagSet::Exact(list) => order.scopes.extend(list.into_iter().map(PurgeScope::Tag)),
        TagSet::All => order.scopes.push(PurgeScope::All),
        TagSet::Pattern(p) => order.tag_patterns.push(p),
    }
}

/// A tag set as one ban condition (`None`: every object).
fn tags_condition(tags: &TagSet) -> Result<Option<Regex>, String> {
    match tags {
        TagSet::All => Ok(None),
        TagSet::Pattern(p) => ban::pattern(p).map(Some),
        TagSet::Exact(list) => {
            let alternatives: Vec<String> = list.iter().map(|t| regex::escape(t)).collect();
            ban::pattern(&format!("^(?:{})$", alternatives.join("|"))).map(Some)
        }
    }
}

/// The tags of a space- or comma-separated list; an empty one names nothing (a 400).
fn exact_tags(header: &str, value: &str) -> Result<Vec<PurgeScope>, String> {
    // a tag no stored object can carry (too long, not visible ASCII) cannot match anything
    let tags: Vec<PurgeScope> = split_tags(header, value)
        .filter(|t| valid_tag(t))
        .map(|t| PurgeScope::Tag(t.to_string()))
        .collect();
    if tags.is_empty() && !value.trim().is_empty() {
        return Ok(tags);
    }
    if tags.is_empty() {
        return Err(format!("{header}: no tag named"));
    }
    Ok(tags)
}

/// Read a client's tag pattern: Magento's and FOSHttpCache's regex forms of a tag list, a
/// plain `a|b` or space-separated list, Magento's `.*`, or a real pattern.
fn tag_set(text: &str) -> Result<TagSet, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty tag pattern".into());
    }
    if matches!(t, ".*" | ".+" | "^.*$" | "(.*)") {
        return Ok(TagSet::All);
    }
    let list = |pieces: &mut dyn Iterator<Item = &str>| -> Option<Vec<String>> {
        let out: Option<Vec<String>> = pieces.map(literal).collect();
        out.filter(|v| !v.is_empty())
    };
    // FOSHttpCache: (^|,)(a|b)(,|$)
    if let Some(inner) = t
        .strip_prefix("(^|,)(")
        .and_then(|r| r.strip_suffix(")(,|$)"))
    {
        if let Some(tags) = list(&mut inner.split('|')) {
            return Ok(TagSet::Exact(tags));
        }
    }
    // Magento: ((^|,)a(,|$))|((^|,)b(,|$))
    if let Some(inner) = t
        .strip_prefix("((^|,)")
        .and_then(|r| r.strip_suffix("(,|$))"))
    {
        if let Some(tags) = list(&mut inner.split("(,|$))|((^|,)")) {
            return Ok(TagSet::Exact(tags));
        }
    }
    // Drupal and WordPress: a|b; Drupal's zero-config: a b
    let plain = if t.contains('|') {
        list(&mut t.split('|'))
    } else {
        list(&mut t.split_ascii_whitespace())
    };
    if let Some(tags) = plain {
        return Ok(TagSet::Exact(tags));
    }
    ban::pattern(t)?;
    Ok(TagSet::Pattern(t.to_string()))
}

/// The tag a pattern piece names literally (backslash escapes of punctuation, as PHP's
/// `preg_quote` writes them, undone; `.` taken as itself, as in `config:system.site`), or
/// `None` when it is a pattern.
fn literal(piece: &str) -> Option<String> {
    let mut out = String::with_capacity(piece.len());
    let mut chars = piece.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => out.push(e),
                _ => return None,
            },
            '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => return None,
            c if c.is_ascii_graphic() => out.push(c),
            _ => return None,
        }
    }
    valid_tag(&out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> (RequestHeader, RequestKey) {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        r.insert_header("Host", "shop.test").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        let key = RequestKey::from_request("http", &r, &[]).unwrap();
        (r, key)
    }

    fn order(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<PurgeOrder, String> {
        let (r, k) = req(method, target, headers);
        parse(&r, &k)
    }

    fn tags(list: &[&str]) -> Vec<PurgeScope> {
        list.iter()
            .map(|t| PurgeScope::Tag(t.to_string()))
            .collect()
    }

    #[test]
    fn tag_patterns_that_are_lists_become_exact_tags() {
        let exact = |v: &[&str]| TagSet::Exact(v.iter().map(|s| s.to_string()).collect());
        let cases = [
            (
                "((^|,)cat_p_1(,|$))|((^|,)cat_p(,|$))",
                exact(&["cat_p_1", "cat_p"]),
            ),
            ("(^|,)(a|b\\-c|d\\:1)(,|$)", exact(&["a", "b-c", "d:1"])),
            ("node:1|node_list", exact(&["node:1", "node_list"])),
            ("config:system.site", exact(&["config:system.site"])),
            ("t1 t2", exact(&["t1", "t2"])),
            (".*", TagSet::All),
            ("^node:\\d+$", TagSet::Pattern("^node:\\d+$".into())),
        ];
        for (text, want) in cases {
            assert_eq!(tag_set(text).unwrap(), want, "{text}");
        }
        assert!(tag_set("(").is_err());
        assert!(tag_set("  ").is_err());
    }

    #[test]
    fn each_clients_purge_forms() {
        // WordPress: a URL, exact; regex on the host; tags
        let (_, key) = req("PURGE", "/hello/", &[]);
        let url = order("PURGE", "/hello/", &[("X-Purge-Method", "default")]).unwrap();
        assert_eq!(
            url.scopes,
            vec![PurgeScope::AnySchemeUrl(key.both_scheme_hashes())]
        );
        let site = order("PURGE", "/.*", &[("X-Purge-Method", "regex")]).unwrap();
        assert!(site.scopes.is_empty());
        assert_eq!(
            site.bans[0].host.as_ref().unwrap().as_str(),
            "^shop\\.test$"
        );
        assert_eq!(site.bans[0].url.as_ref().unwrap().as_str(), "/.*");
        let wp = order(
            "PURGE",
            "/",
            &[
                ("X-Purge-Method", "tags"),
                ("X-Cache-Tags-Pattern", "p-12|feed"),
            ],
        )
        .unwrap();
        assert_eq!(wp.scopes, tags(&["p-12", "feed"]));
        // Magento: tags (all hosts), soft, flush all, a pool
        let m = order(
            "PURGE",
            "/",
            &[
                (
                    "X-Magento-Tags-Pattern",
                    "((^|,)cat_p_1(,|$))|((^|,)cms_b(,|$))",
                ),
                ("X-Magento-Purge-Soft", "1"),
            ],
        )
        .unwrap();
        assert_eq!(m.scopes, tags(&["cat_p_1", "cms_b"]));
        assert!(m.soft);
        let all = order("PURGE", "/", &[("X-Magento-Tags-Pattern", ".*")]).unwrap();
        assert_eq!(all.scopes, vec![PurgeScope::All]);
        let pool = order(
            "PURGE",
            "/",
            &[("X-Magento-Tags-Pattern", ".*"), ("X-Pool", "^blue$")],
        )
        .unwrap();
        assert_eq!(pool.bans[0].headers[0].0, "x-pool");
        // Shopware: xkey request header; BAN / is everything
        let sw = order("PURGE", "/", &[("xkey", "product-1 category-2")]).unwrap();
        assert_eq!(sw.scopes, tags(&["product-1", "category-2"]));
        assert_eq!(
            order("BAN", "/", &[]).unwrap().scopes,
            vec![PurgeScope::All]
        );
        // Drupal: BAN with a pipe list; zero-config URL regex
        let d = order("BAN", "/", &[("Purge-Cache-Tags", "node:1|node_list")]).unwrap();
        assert_eq!(d.scopes, tags(&["node:1", "node_list"]));
        let re = order("BAN", "/.*projects.*", &[]).unwrap();
        assert_eq!(re.bans[0].url.as_ref().unwrap().as_str(), "/.*projects.*");
        assert!(re.bans[0].host.is_none(), "every host");
        // FOSHttpCache: BAN with X-Host/X-Url/X-Content-Type, tags; PURGEKEYS
        let fos = order(
            "BAN",
            "/",
            &[
                ("X-Host", "^shop\\.test$"),
                ("X-Url", ".*"),
                ("X-Content-Type", ".*"),
                ("X-Cache-Tags", "(^|,)(a|b)(,|$)"),
            ],
        )
        .unwrap();
        assert_eq!(fos.bans[0].tags.as_ref().unwrap().as_str(), "^(?:a|b)$");
        assert!(fos.bans[0].url.is_none());
        let fos_tags = order("BAN", "/", &[("X-Cache-Tags", "(^|,)(a|b)(,|$)")]).unwrap();
        assert_eq!(fos_tags.scopes, tags(&["a", "b"]));
        let soft = order("PURGEKEYS", "/", &[("xkey-softpurge", "t1 t2")]).unwrap();
        assert_eq!(soft.scopes, tags(&["t1", "t2"]));
        assert!(soft.soft);
        let hard = order("PURGEKEYS", "/", &[("xkey-purge", "t1")]).unwrap();
        assert!(!hard.soft);
        // TYPO3: site and page conditions on response headers
        let typo3 = order(
            "BAN",
            "/",
            &[
                ("Varnish-Ban-TYPO3-Sitename", "abc"),
                ("Varnish-Ban-TYPO3-Pid", "12"),
            ],
        )
        .unwrap();
        assert_eq!(typo3.bans[0].headers.len(), 2);
        assert!(typo3.bans[0].headers[1].1.is_match("12"));
        assert!(!typo3.bans[0].headers[1].1.is_match("123"));
    }

    #[test]
    fn tags_in_several_lines_are_all_read() {
        let two = order("PURGE", "/", &[("xkey-purge", "a b"), ("xkey-purge", "c")]).unwrap();
        assert_eq!(two.scopes, tags(&["a", "b", "c"]));
        let drupal = order(
            "BAN",
            "/",
            &[
                ("Purge-Cache-Tags", "node:1"),
                ("Purge-Cache-Tags", "node:2"),
            ],
        )
        .unwrap();
        assert_eq!(drupal.scopes, tags(&["node:1", "node:2"]));
    }

    #[test]
    fn requests_that_name_nothing_are_refused() {
        for (method, headers) in [
            ("PURGEKEYS", vec![]),
            ("PURGE", vec![("X-Magento-Tags-Pattern", "")]),
            ("PURGE", vec![("xkey-purge", "")]),
            ("PURGE", vec![("X-Purge-Method", "tags")]),
            ("BAN", vec![("X-Url", "(")]),
        ] {
            assert!(
                order(method, "/", &headers).is_err(),
                "{method} {headers:?}"
            );
        }
    }
}
