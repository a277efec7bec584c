//! The response head of a fast-path hit, written from the stored header lines exactly as
//! pingora writes a hit's head: the status line, the stored fields in their order and case
//! (less those meant for this cache only), then `Age`, `Accept-Ranges`, `Cache-Status` and
//! `Connection`, which pingora's hit path, its range filter, lacquer's response filter and
//! pingora's HTTP/1 writer add in that order. The stored `Date` stays where it is (lacquer
//! keeps a stored response's own `Date`, `proxy/respond.rs`).
//!
//! A stored header that already has one of the added fields (pingora would replace it where
//! it stands), no `Date` (pingora would add its clock) or no plain `Content-Length` is left to
//! pingora.

use crate::cache::meta_codec::StoredMeta;
use crate::config::PurgeConfig;

/// Fields pingora sets on a hit (replacing a stored one in place), and framing the fast path
/// does not write.
const SET_ON_A_HIT: [&[u8]; 5] = [
    b"age",
    b"accept-ranges",
    b"cache-status",
    b"connection",
    b"transfer-encoding",
];

/// A stored header whose head can be written here (`verdict`).
pub(super) const WRITABLE: u8 = 1;
/// ... with fields removed or renamed on the way (`write_stripped`).
pub(super) const STRIPPED: u8 = 2;

/// What `write` needs to know of `meta`'s stored header under `purge`: 0 when pingora must
/// write its head, else `WRITABLE`, with `STRIPPED` when fields go or `Date` is renamed. A
/// scan of every line: found once per object and `strip_tag_headers` setting, not at every hit.
pub(super) fn verdict(meta: &StoredMeta, purge: &PurgeConfig) -> u8 {
    let lines = meta.header_lines();
    let (mut date, mut length, mut strip, mut renamed) = (0, 0, false, false);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return 0;
        };
        let name = &line[..colon];
        if SET_ON_A_HIT.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return 0;
        }
        if name.eq_ignore_ascii_case(b"date") {
            date += 1;
            // pingora's writer sets `Date` by its constant name: the stored spelling goes
            renamed = name != b"Date";
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // pingora's range filter reads it as a number; anything else is left to it
            let value = line[colon + 1..].trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return 0;
            }
            length += 1;
        }
        strip |= stripped(name, purge);
    }
    if date != 1 || length != 1 {
        return 0;
    }
    if strip || renamed {
        WRITABLE | STRIPPED
    } else {
        WRITABLE
    }
}

/// Write the head of a 200 hit from `meta`, whose `verdict` under `purge` this is, to `out`;
/// false when pingora must write it.
pub(super) fn write(
    out: &mut Vec<u8>,
    meta: &StoredMeta,
    verdict: u8,
    age: u64,
    cache_status: &str,
    keep_alive: bool,
    purge: &PurgeConfig,
) -> bool {
    if verdict & WRITABLE == 0 {
        return false;
    }
    let lines = meta.header_lines();
    out.reserve(lines.len() + 128);
    out.extend_from_slice(b"HTTP/1.1 200 ");
    out.extend_from_slice(meta.reason().unwrap_or("OK").as_bytes());
    out.extend_from_slice(b"\r\n");
    if verdict & STRIPPED != 0 {
        write_stripped(out, lines, age, cache_status, purge);
    } else {
        out.extend_from_slice(lines);
        write_added(out, Added::Age, age, cache_status);
        write_added(out, Added::AcceptRanges, age, cache_status);
        write_added(out, Added::CacheStatus, age, cache_status);
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    true
}

/// Whether `strip_cache_only_fields` removes the field `name` from responses to clients.
fn stripped(name: &[u8], purge: &PurgeConfig) -> bool {
    name.eq_ignore_ascii_case(b"cdn-cache-control")
        || (purge.strip_tag_headers
            && purge
                .tag_headers
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t.as_bytes())))
}

/// A field the hit path adds after the stored ones.
#[derive(Clone, Copy)]
enum Added {
    Age,
    AcceptRanges,
    CacheStatus,
}

fn write_added(out: &mut Vec<u8>, field: Added, age: u64, cache_status: &str) {
    match field {
        Added::Age => {
            out.extend_from_slice(b"Age: ");
            out.extend_from_slice(itoa::Buffer::new().format(age).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Added::AcceptRanges => out.extend_from_slice(b"Accept-Ranges: bytes\r\n"),
        Added::CacheStatus => {
            out.extend_from_slice(b"Cache-Status: ");
            out.extend_from_slice(cache_status.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// One entry of pingora's header map: a stored field's lines (all its values), or an added
/// field.
enum Entry<'a> {
    Stored { name: &'a [u8], lines: &'a [u8] },
    Added(Added),
}

/// The fields in the order pingora writes them once `strip_cache_only_fields` removed some:
/// a removal from its header map (`http::HeaderMap::remove`) moves the map's last entry into
/// the removed one's place, and the added fields are in the map by then; `Date` spelt as
/// pingora's writer spells it.
fn write_stripped(
    out: &mut Vec<u8>,
    lines: &[u8],
    age: u64,
    cache_status: &str,
    purge: &PurgeConfig,
) {
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(16);
    let mut start = 0;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(0);
        let name = &line[..name_end];
        let end = start + line.len();
        match entries.last_mut() {
            // the values of one name are one entry, and next to each other in the lines
            Some(Entry::Stored {
                name: last,
                lines: l,
            }) if last.eq_ignore_ascii_case(name) => {
                *l = &lines[end - l.len() - line.len()..end];
            }
            _ => entries.push(Entry::Stored {
                name,
                lines: &lines[start..end],
            }),
        }
        start = end;
    }
    entries.extend([Added::Age, Added::AcceptRanges, Added::CacheStatus].map(Entry::Added));
    let mut remove = |name: &[u8]| {
        let found = entries.iter().position(
            |e| matches!(e, Entry::Stored { name: n, .. } if n.eq_ignore_ascii_case(name)),
        );
        if let Some(i) = found {
            entries.swap_remove(i);
        }
    };
    // in `strip_cache_only_fields`'s order
    if purge.strip_tag_headers {
        for t in &purge.tag_headers {
            remove(t.as_bytes());
        }
    }
    remove(b"cdn-cache-control");
    for e in entries {
        match e {
            Entry::Stored { name, lines } if name.eq_ignore_ascii_case(b"date") => {
                out.extend_from_slice(b"Date");
                out.extend_from_slice(&lines[name.len()..]);
            }
            Entry::Stored { lines, .. } => out.extend_from_slice(lines),
            Entry::Added(field) => write_added(out, field, age, cache_status),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use pingora_cache::CacheMeta;
    use pingora_http::ResponseHeader;

    use super::*;

    /// `write` with the verdict found now.
    fn write_now(
        out: &mut Vec<u8>,
        meta: &StoredMeta,
        age: u64,
        cache_status: &str,
        keep_alive: bool,
        purge: &PurgeConfig,
    ) -> bool {
        write(
            out,
            meta,
            verdict(meta, purge),
            age,
            cache_status,
            keep_alive,
            purge,
        )
    }

    /// What pingora writes for a hit of `fields`: the stored header rebuilt, then the fields
    /// the hit path adds and removes, in its order (`proxy_cache.rs`, lacquer's response
    /// filter, the HTTP/1 writer), serialised.
    fn pingora_head(meta: &StoredMeta, purge: &PurgeConfig, keep_alive: bool) -> Vec<u8> {
        let mut h = meta.to_meta().unwrap().response_header_copy();
        h.insert_header("Age", "7").unwrap();
        h.insert_header("Accept-Ranges", "bytes").unwrap();
        h.insert_header("Cache-Status", "lacquer; hit; ttl=9")
            .unwrap();
        let present = |h: &ResponseHeader, n: &str| h.headers.contains_key(n);
        if purge.strip_tag_headers && purge.tag_headers.iter().any(|t| present(&h, t)) {
            for t in &purge.tag_headers {
                h.remove_header(t.as_str());
            }
        }
        if present(&h, "cdn-cache-control") {
            h.remove_header("cdn-cache-control");
        }
        let date = h.headers.get("date").unwrap().clone();
        h.insert_header(http::header::DATE, date).unwrap();
        let connection = if keep_alive { "keep-alive" } else { "close" };
        h.insert_header("Connection", connection).unwrap();
        let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
        h.header_to_h1_wire(&mut out);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The default `purge:` settings (its seven tag headers stripped).
    fn defaults() -> PurgeConfig {
        crate::config::Config::from_yaml("upstreams: [{addr: \"127.0.0.1:1\"}]\n")
            .unwrap()
            .purge
    }

    fn stored(fields: &[(&str, &str)]) -> StoredMeta {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (n, v) in fields {
            h.append_header(n.to_string(), *v).unwrap();
        }
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h);
        let mut m = StoredMeta::from_meta(&meta);
        m.set_body_length(5);
        m
    }

    #[test]
    fn the_head_is_the_one_pingora_writes() {
        let purge = defaults();
        let date = ("Date", "Tue, 01 Dec 2026 18:00:00 GMT");
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                date,
                ("Content-Type", "text/html"),
                ("Cache-Control", "max-age=60"),
            ],
            vec![("X-Cache-Tags", "a,b"), date, ("Content-Type", "text/html")],
            vec![
                ("Content-Type", "text/html"),
                ("xkey", "a"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("CDN-Cache-Control", "max-age=9"),
                date,
                ("Surrogate-Key", "k"),
                ("Vary", "Accept-Encoding"),
                ("Vary", "Accept-Language"),
            ],
            vec![("cdn-cache-control", "max-age=1"), date],
            // as h11 (uvicorn) writes it
            vec![
                ("content-type", "text/html"),
                ("date", date.1),
                ("server", "uvicorn"),
            ],
            vec![
                date,
                ("X-A", "1"),
                ("X-B", "2"),
                ("cache-tag", "t"),
                ("X-C", "3"),
            ],
        ];
        for fields in cases {
            let meta = stored(&fields);
            for keep_alive in [true, false] {
                let mut ours = Vec::new();
                assert!(write_now(
                    &mut ours,
                    &meta,
                    7,
                    "lacquer; hit; ttl=9",
                    keep_alive,
                    &purge
                ));
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&pingora_head(&meta, &purge, keep_alive)),
                    "{fields:?}"
                );
            }
        }
    }

    #[test]
    fn heads_pingora_would_write_differently_are_left_to_it() {
        let purge = defaults();
        let date = ("Date", "Tue, 01 Dec 2026 18:00:00 GMT");
        for fields in [
            vec![("Content-Type", "text/html")],
            vec![date, ("Age", "3")],
            vec![date, ("Cache-Status", "other; hit")],
            vec![date, ("Accept-Ranges", "none")],
            vec![date, ("Connection", "x")],
            vec![date, date],
        ] {
            let mut out = Vec::new();
            let meta = stored(&fields);
            assert!(
                !write_now(&mut out, &meta, 0, "x", true, &purge),
                "{fields:?}"
            );
        }
    }
}
