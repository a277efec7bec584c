//! The `rules:` and `pools:` sections and the per-status lifetimes (`cache.default_ttl`,
//! `rules[].status_ttl`): raw as serde reads them, and validated into [`Rule`] and
//! [`TtlTable`]. Kept beside `raw.rs`/`validate.rs` rather than in them: rules are one concept
//! with their own raw form, checks and typed values.
//!
//! Not here: matching a request against the rules (`rules.rs` at the top) and what a rule does to
//! freshness (`cache/freshness.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::validate::duration;
use super::NamePattern;

/// One entry of `rules:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `rules[].name`: the label in metrics (default: the rule's index).
    #[serde(default)]
    pub name: Option<String>,
    /// `rules[].match`: which requests; empty matches every request.
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    /// `rules[].pass`: straight to the app, never stored.
    #[serde(default)]
    pub pass: bool,
    /// `rules[].cookies`: `ignore` or `default`.
    #[serde(default)]
    pub cookies: Option<String>,
    /// `rules[].ttl`: lifetime when the app gives none.
    #[serde(default)]
    pub ttl: Option<String>,
    /// `rules[].force_ttl`: lifetime whatever the app says.
    #[serde(default)]
    pub force_ttl: Option<String>,
    /// `rules[].status_ttl`: lifetimes by status.
    #[serde(default)]
    pub status_ttl: BTreeMap<String, String>,
    /// `rules[].strip_set_cookie`: store responses with `Set-Cookie`, without it.
    #[serde(default)]
    pub strip_set_cookie: bool,
    /// `rules[].grace`: stale-while-revalidate and stale-if-error when the app gives none.
    #[serde(default)]
    pub grace: Option<String>,
    /// `rules[].pool`: the named pool of app servers (`pools:`).
    #[serde(default)]
    pub pool: Option<String>,
}

/// `rules[].match` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// `match.host`: a name or glob, or a list of them.
    #[serde(default)]
    pub host: OneOrMany,
    /// `match.path`: a glob or a list of globs.
    #[serde(default)]
    pub path: OneOrMany,
    /// `match.method`: a method or a list of methods.
    #[serde(default)]
    pub method: OneOrMany,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `cache.default_ttl` as written: one duration, or durations by status.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTtl {
    /// For every heuristically cacheable status.
    One(String),
    /// Only for the statuses named.
    ByStatus(BTreeMap<String, String>),
}

impl Default for RawTtl {
    fn default() -> Self {
        RawTtl::One("0s".to_string())
    }
}

/// Lifetimes by response status: the status's own entry, else `any` for the statuses RFC 9110
/// section 15.1 calls heuristically cacheable (200, 203, 204, 300, 301, 308, 404, 405, 410,
/// 414, 501; the errors among them are still refused by `freshness.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TtlTable {
    /// For every heuristically cacheable status without its own entry.
    pub any: Option<Duration>,
    /// Per status, overriding `any`.
    pub by_status: Vec<(u16, Duration)>,
}

impl TtlTable {
    /// The lifetime for a response with `status`, if the table gives one.
    pub fn lifetime(&self, status: u16) -> Option<Duration> {
        if let Some((_, d)) = self.by_status.iter().find(|(s, _)| *s == status) {
            return Some(*d);
        }
        self.any.filter(|_| heuristically_cacheable(status))
    }

    /// Whether the table gives no lifetime at all.
    pub fn is_empty(&self) -> bool {
        self.any.is_none() && self.by_status.is_empty()
    }
}

/// RFC 9110 section 15.1: statuses that are heuristically cacheable.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// One validated rule. The first rule whose `match` fits a request applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its label in metrics: `name`, or its index in the file.
    pub label: String,
    /// Host globs, lower-case (empty: any host).
    pub hosts: Vec<NamePattern>,
    /// Path globs (empty: any path); `*` matches any run of characters, `/` included.
    pub paths: Vec<NamePattern>,
    /// Methods (empty: any method).
    pub methods: Vec<http::Method>,
    /// Straight to the app with every cookie; never looked up, stored or coalesced.
    pub pass: bool,
    /// Cookies neither bypass the cache nor reach the app on the requests the cache serves.
    pub ignore_cookies: bool,
    /// Lifetimes when the app states none (`ttl` and `status_ttl`).
    pub ttl: Option<TtlTable>,
    /// Lifetimes whatever the app says (`force_ttl` and `status_ttl`).
    pub force_ttl: Option<TtlTable>,
    /// Store responses with `Set-Cookie`, without the field in the stored copy.
    pub strip_set_cookie: bool,
    /// stale-while-revalidate and stale-if-error when the app gives none.
    pub grace: Option<Duration>,
    /// The named pool of app servers (`pools:`).
    pub pool: Option<String>,
}

/// Validate `rules:` against the pool names of `pools:`.
pub(super) fn rules(errors: &mut Vec<String>, raw: &[RawRule], pools: &[&str]) -> Vec<Rule> {
    let mut out = Vec::with_capacity(raw.len());
    let mut labels: Vec<String> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let here = format!("rules[{i}]");
        let label = match &r.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                errors.push(format!(
                    "{here}.name: expected letters, digits, '-' or '_' (at most 64), got \"{n}\""
                ));
                n.clone()
            }
            None => i.to_string(),
        };
        if labels.contains(&label) {
            errors.push(format!(
                "{here}.name: \"{label}\" is used by an earlier rule"
            ));
        }
        labels.push(label.clone());
        let hosts = globs(
            errors,
            &format!("{here}.match.host"),
            &r.matches.host,
            |h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
            },
        )
        .into_iter()
        .map(|h| NamePattern::new(&h.to_ascii_lowercase()))
        .collect();
        let paths = globs(
            errors,
            &format!("{here}.match.path"),
            &r.matches.path,
            |p| {
                (p.starts_with('/') || p.starts_with('*'))
                    && p.bytes().all(|b| b.is_ascii_graphic())
            },
        )
        .into_iter()
        .map(|p| NamePattern::new(&p))
        .collect();
        let mut methods = Vec::new();
        for (j, m) in r.matches.method.as_slice().iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !upper.is_empty() => methods.push(method),
                _ => errors.push(format!(
                    "{here}.match.method[{j}]: expected a method like \"GET\", got \"{m}\""
                )),
            }
        }
        let ignore_cookies = match r.cookies.as_deref() {
            None | Some("default") => false,
            Some("ignore") => true,
            Some(other) => {
                errors.push(format!(
                    "{here}.cookies: expected \"ignore\" or \"default\", got \"{other}\""
                ));
                false
            }
        };
        let ttl = r
            .ttl
            .as_ref()
            .map(|t| duration(errors, &format!("{here}.ttl"), t));
        let force = r
            .force_ttl
            .as_ref()
            .map(|t| duration(errors, &format!("{here}.force_ttl"), t));
        let by_status = status_durations(errors, &format!("{here}.status_ttl"), &r.status_ttl);
        let grace = r
            .grace
            .as_ref()
            .map(|t| duration(errors, &format!("{here}.grace"), t));
        if ttl.is_some() && force.is_some() {
            errors.push(format!(
                "{here}: ttl and force_ttl exclude each other (force_ttl applies whatever the app says)"
            ));
        }
        if r.pass {
            let useless = [
                ("cookies", r.cookies.is_some()),
                ("ttl", ttl.is_some()),
                ("force_ttl", force.is_some()),
                ("status_ttl", !by_status.is_empty()),
                ("strip_set_cookie", r.strip_set_cookie),
                ("grace", grace.is_some()),
            ];
            for (key, set) in useless {
                if set {
                    errors.push(format!(
                        "{here}.{key}: has no effect with pass: true (nothing is stored)"
                    ));
                }
            }
        }
        if let Some(p) = &r.pool {
            if !pools.contains(&p.as_str()) {
                errors.push(format!("{here}.pool: no pool \"{p}\" in pools"));
            }
        }
        let (ttl, force_ttl) = match force {
            Some(f) => (
                None,
                Some(TtlTable {
                    any: Some(f),
                    by_status,
                }),
            ),
            None if ttl.is_some() || !by_status.is_empty() => (
                Some(TtlTable {
                    any: ttl.filter(|d| !d.is_zero()),
                    by_status,
                }),
                None,
            ),
            None => (None, None),
        };
        out.push(Rule {
            label,
            hosts,
            paths,
            methods,
            pass: r.pass,
            ignore_cookies,
            ttl,
            force_ttl,
            strip_set_cookie: r.strip_set_cookie,
            grace,
            pool: r.pool.clone(),
        });
    }
    out
}

/// `cache.default_ttl`: one duration (`0s`: off) or durations by status.
pub(super) fn default_ttl(errors: &mut Vec<String>, raw: &RawTtl) -> TtlTable {
    match raw {
        RawTtl::One(t) => {
            let d = duration(errors, "cache.default_ttl", t);
            TtlTable {
                any: (!d.is_zero()).then_some(d),
                by_status: Vec::new(),
            }
        }
        RawTtl::ByStatus(map) => TtlTable {
            any: None,
            by_status: status_durations(errors, "cache.default_ttl", map),
        },
    }
}

/// A map of statuses to durations, each status one a shared cache may store: 2xx and 3xx
/// other than 206 and 304, and 404 and 410 (other errors are never stored, see
/// `freshness.rs`).
fn status_durations(
    errors: &mut Vec<String>,
    path: &str,
    map: &BTreeMap<String, String>,
) -> Vec<(u16, Duration)> {
    let mut out = Vec::with_capacity(map.len());
    for (status, text) in map {
        let here = format!("{path}.{status}");
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|&c| ((200..400).contains(&c) && c != 206 && c != 304) || c == 404 || c == 410);
        let d = duration(errors, &here, text);
        match code {
            Some(c) => out.push((c, d)),
            None => errors.push(format!(
                "{here}: expected a status that may be stored (2xx or 3xx other than 206 and 304, 404, 410), got \"{status}\""
            )),
        }
    }
    out
}

fn globs(
    errors: &mut Vec<String>,
    path: &str,
    list: &OneOrMany,
    valid: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (j, g) in list.as_slice().iter().enumerate() {
        if valid(g) {
            out.push(g.clone());
        } else {
            let what = if path.ends_with("path") {
                "a path glob starting with '/', like \"/static/*\""
            } else {
                "a host name or glob, like \"*.example.com\""
            };
            errors.push(format!("{path}[{j}]: expected {what}, got \"{g}\""));
        }
    }
    out
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn errors(yaml: &str) -> Vec<String> {
        let text = format!("upstreams:\n  - addr: \"127.0.0.1:1\"\n{yaml}");
        match Config::from_yaml(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn a_full_rule_set_validates() {
        let text = r#"
upstreams:
  - addr: "127.0.0.1:1"
pools:
  blog: [{addr: "127.0.0.1:2"}]
rules:
  - match: {path: "/static/*"}
    cookies: ignore
    ttl: "1d"
  - name: private-areas
    match: {path: ["/admin/*", "/accounts/*"]}
    pass: true
  - match: {host: "www.Example.com", path: ["/", "/articles/*"], method: [get, HEAD]}
    force_ttl: "5m"
    status_ttl: {"404": "10s", "301": "1h"}
    strip_set_cookie: false
    grace: "1h"
    pool: blog
"#;
        let c = Config::from_yaml(text).unwrap();
        assert_eq!(c.rules.len(), 3);
        assert_eq!(c.rules[0].label, "0");
        assert!(c.rules[0].ignore_cookies);
        assert_eq!(c.rules[1].label, "private-areas");
        assert!(c.rules[1].pass);
        let third = &c.rules[2];
        assert!(third.hosts[0].matches("www.example.com"));
        assert_eq!(third.methods, vec![http::Method::GET, http::Method::HEAD]);
        let forced = third.force_ttl.as_ref().unwrap();
        assert_eq!(
            forced.lifetime(200),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            forced.lifetime(404),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(forced.lifetime(500), None);
        assert_eq!(third.pool.as_deref(), Some("blog"));
        assert_eq!(c.pools.len(), 1);
    }

    #[test]
    fn bad_rules_are_named_by_path() {
        let got = errors(
            "rules:\n  - match: {path: \"static/*\"}\n    ttl: soon\n  - pass: true\n    force_ttl: 5m\n  - pool: nope\n    status_ttl: {\"500\": 5s}\n    cookies: eat\n",
        );
        assert_eq!(
            got,
            vec![
                "rules[0].match.path[0]: expected a path glob starting with '/', like \"/static/*\", got \"static/*\"",
                "rules[0].ttl: expected a duration like \"30s\", \"250ms\" or \"5m\", got \"soon\"",
                "rules[1].force_ttl: has no effect with pass: true (nothing is stored)",
                "rules[2].cookies: expected \"ignore\" or \"default\", got \"eat\"",
                "rules[2].status_ttl.500: expected a status that may be stored (2xx or 3xx other than 206 and 304, 404, 410), got \"500\"",
                "rules[2].pool: no pool \"nope\" in pools",
            ]
        );
        assert_eq!(
            errors("rules:\n  - match: {paths: \"/\"}\n"),
            vec!["rules[0].match.paths: unknown field `paths`, expected one of `host`, `path`, `method` at line 4 column 13"]
        );
    }

    #[test]
    fn default_ttl_takes_one_duration_or_statuses() {
        let one =
            Config::from_yaml("upstreams: [{addr: \"127.0.0.1:1\"}]\ncache: {default_ttl: 1m}\n")
                .unwrap();
        assert_eq!(
            one.cache.default_ttl.lifetime(404),
            Some(std::time::Duration::from_secs(60))
        );
        let by = Config::from_yaml(
            "upstreams: [{addr: \"127.0.0.1:1\"}]\ncache: {default_ttl: {\"200\": 1m}}\n",
        )
        .unwrap();
        assert_eq!(
            by.cache.default_ttl.lifetime(200),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(by.cache.default_ttl.lifetime(404), None);
        assert_eq!(
            errors("cache: {default_ttl: [1m]}\n"),
            vec!["cache.default_ttl: expected a duration like \"5m\" or statuses and durations like {\"200\": \"5m\", \"404\": \"10s\"} at line 3 column 8"]
        );
    }
}
