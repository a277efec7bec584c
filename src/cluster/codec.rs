//! A purge as it travels on the cluster's stream: versioned JSON, so that a node of another
//! version never misreads one (an entry of an unknown version is refused, and the node that
//! cannot read it drops its memory cache rather than serve what it may have purged).

use serde_json::{json, Value};

use crate::cache::ban::{self, Ban};
use crate::cache::key::UrlHash;
use crate::cache::storage::PurgeScope;
use crate::purge::wire::PurgeOrder;
use crate::purge::PurgeSource;

/// The encoding's version.
const VERSION: u64 = 1;

/// Encode a purge order and where it came from.
pub(crate) fn encode(order: &PurgeOrder, source: PurgeSource) -> String {
    let scopes: Vec<Value> = order.scopes.iter().map(scope).collect();
    let bans: Vec<Value> = order.bans.iter().map(ban_value).collect();
    json!({
        "v": VERSION,
        "soft": order.soft,
        "scopes": scopes,
        "tag_patterns": order.tag_patterns,
        "bans": bans,
        "unsafe": source == PurgeSource::Unsafe,
    })
    .to_string()
}

fn scope(s: &PurgeScope) -> Value {
    match s {
        PurgeScope::Url(h) => json!({"url": format!("{:032x}", h.0)}),
        PurgeScope::AnySchemeUrl([a, b]) => {
            json!({"urls": [format!("{:032x}", a.0), format!("{:032x}", b.0)]})
        }
        PurgeScope::Tag(t) => json!({"tag": t}),
        PurgeScope::Prefix(p) => json!({"prefix": p}),
        PurgeScope::All => json!({"all": true}),
        PurgeScope::Ban(b) => json!({"ban": ban_value(b)}),
    }
}

fn ban_value(b: &Ban) -> Value {
    let text = |r: &Option<regex::Regex>| r.as_ref().map(|r| r.as_str().to_string());
    let headers: Vec<Value> = b
        .headers
        .iter()
        .map(|(n, r)| json!([n, r.as_str()]))
        .collect();
    json!({
        "host": text(&b.host),
        "url": text(&b.url),
        "content_type": text(&b.content_type),
        "headers": headers,
        "tags": text(&b.tags),
    })
}

/// Decode a purge order and where it came from; `Err` for anything this version cannot read
/// exactly.
pub(crate) fn decode(text: &str) -> Result<(PurgeOrder, PurgeSource), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("v").and_then(Value::as_u64) != Some(VERSION) {
        return Err(format!("unknown version {:?}", v.get("v")));
    }
    let soft = v.get("soft").and_then(Value::as_bool).unwrap_or(false);
    let mut scopes = Vec::new();
    for s in v
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        scopes.push(decode_scope(s)?);
    }
    let mut tag_patterns = Vec::new();
    for p in v
        .get("tag_patterns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let p = p.as_str().ok_or("a tag pattern that is not text")?;
        ban::pattern(p)?;
        tag_patterns.push(p.to_string());
    }
    let mut bans = Vec::new();
    for b in v
        .get("bans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bans.push(decode_ban(b)?);
    }
    let source = if v.get("unsafe").and_then(Value::as_bool) == Some(true) {
        PurgeSource::Unsafe
    } else {
        PurgeSource::Request
    };
    Ok((
        PurgeOrder {
            scopes,
            tag_patterns,
            bans,
            soft,
        },
        source,
    ))
}

fn hash(v: &Value) -> Result<UrlHash, String> {
    let text = v.as_str().ok_or("a URL hash that is not text")?;
    u128::from_str_radix(text, 16)
        .map(UrlHash)
        .map_err(|_| format!("not a URL hash: {text}"))
}

fn decode_scope(s: &Value) -> Result<PurgeScope, String> {
    if let Some(h) = s.get("url") {
        return Ok(PurgeScope::Url(hash(h)?));
    }
    if let Some(list) = s.get("urls").and_then(Value::as_array) {
        if let [a, b] = list.as_slice() {
            return Ok(PurgeScope::AnySchemeUrl([hash(a)?, hash(b)?]));
        }
    }
    if let Some(t) = s.get("tag").and_then(Value::as_str) {
        return Ok(PurgeScope::Tag(t.to_string()));
    }
    if let Some(p) = s.get("prefix").and_then(Value::as_str) {
        return Ok(PurgeScope::Prefix(p.to_string()));
    }
    if s.get("all").and_then(Value::as_bool) == Some(true) {
        return Ok(PurgeScope::All);
    }
    if let Some(b) = s.get("ban") {
        return Ok(PurgeScope::Ban(std::sync::Arc::new(decode_ban(b)?)));
    }
    Err(format!("unknown purge scope {s}"))
}

fn decode_ban(b: &Value) -> Result<Ban, String> {
    let pattern = |key: &str| -> Result<Option<regex::Regex>, String> {
        match b.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(p)) => ban::pattern(p).map(Some),
            Some(other) => Err(format!("ban {key}: not a pattern: {other}")),
        }
    };
    let mut headers = Vec::new();
    for h in b
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match h.as_array().map(Vec::as_slice) {
            Some([Value::String(n), Value::String(p)]) => {
                headers.push((n.to_string(), ban::pattern(p)?));
            }
            _ => return Err(format!("ban header: {h}")),
        }
    }
    Ok(Ban {
        host: pattern("host")?,
        url: pattern("url")?,
        content_type: pattern("content_type")?,
        headers,
        tags: pattern("tags")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purge_survives_the_trip() {
        let order = PurgeOrder {
            scopes: vec![
                PurgeScope::Url(UrlHash(7)),
                PurgeScope::AnySchemeUrl([UrlHash(u128::MAX), UrlHash(1)]),
                PurgeScope::Tag("node:1".into()),
                PurgeScope::Prefix("http://h/blog/".into()),
                PurgeScope::All,
            ],
            tag_patterns: vec!["^node:\\d+$".into()],
            bans: vec![Ban {
                host: Some(ban::pattern("^h$").unwrap()),
                url: None,
                content_type: Some(ban::pattern("^image/").unwrap()),
                headers: vec![("x-pool".into(), ban::pattern("blue").unwrap())],
                tags: None,
            }],
            soft: true,
        };
        assert_eq!(
            decode(&encode(&order, PurgeSource::Request)).unwrap(),
            (order, PurgeSource::Request)
        );
        let unsafe_one = PurgeOrder {
            scopes: vec![PurgeScope::All],
            tag_patterns: Vec::new(),
            bans: Vec::new(),
            soft: false,
        };
        assert_eq!(
            decode(&encode(&unsafe_one, PurgeSource::Unsafe)).unwrap().1,
            PurgeSource::Unsafe
        );
        assert!(
            decode("{\"v\": 2, \"scopes\": []}").is_err(),
            "another version"
        );
        assert!(decode("{\"v\": 1, \"scopes\": [{\"what\": 1}]}").is_err());
        assert!(decode("{\"v\": 1, \"bans\": [{\"url\": \"(\"}]}").is_err());
        assert!(decode("not json").is_err());
    }
}
