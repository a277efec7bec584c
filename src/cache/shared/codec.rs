//! A stored variant as the shared tier keeps it: a magic and a version first, so that a node
//! of another version never misreads an entry (one it cannot read is a miss, and its own
//! fill replaces it), then the URL, the tags, the metadata (`meta_codec.rs`) and the body.
//! Every length is checked on the way in: bad bytes are a miss, never a panic.

use bytes::Bytes;

use crate::cache::meta_codec::{take, take_u32, StoredMeta};

const MAGIC: &[u8; 3] = b"LQS";
/// The encoding's version: a change to the layout takes a new one.
const VERSION: u8 = 1;
/// At most this many tags (more are not indexed in memory either).
const MAX_TAGS: usize = 4096;

/// A variant read back from the tier.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub(crate) url: Box<str>,
    pub(crate) tags: Box<[Box<str>]>,
    pub(crate) meta: StoredMeta,
    pub(crate) body: Bytes,
}

/// Encode a variant.
pub(crate) fn encode(url: &str, tags: &[Box<str>], meta: &StoredMeta, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + url.len() + meta.heap_size() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(url.len() as u32).to_be_bytes());
    out.extend_from_slice(url.as_bytes());
    let tags = &tags[..tags.len().min(MAX_TAGS)];
    out.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    for t in tags {
        out.extend_from_slice(&(t.len() as u32).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    meta.write_wire(&mut out);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode a variant; `None` for anything this version cannot read exactly.
pub(crate) fn decode(mut wire: Bytes) -> Option<Decoded> {
    let head = take(&mut wire, 4)?;
    if &head[..3] != MAGIC || head[3] != VERSION {
        return None;
    }
    let text = |wire: &mut Bytes| -> Option<Box<str>> {
        let n = take_u32(wire)? as usize;
        let b = take(wire, n)?;
        std::str::from_utf8(&b).ok().map(Into::into)
    };
    let url = text(&mut wire)?;
    let count = take_u32(&mut wire)? as usize;
    if count > MAX_TAGS {
        return None;
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push(text(&mut wire)?);
    }
    let meta = StoredMeta::read_wire(&mut wire)?;
    let len = take_u32(&mut wire)? as usize;
    let body = take(&mut wire, len)?;
    if !wire.is_empty() {
        return None;
    }
    Some(Decoded {
        url,
        tags: tags.into_boxed_slice(),
        meta,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheMeta;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn meta() -> StoredMeta {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("Cache-Control", "max-age=60").unwrap();
        let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 10, 20, header);
        m.set_variance([3u8; 16]);
        StoredMeta::from_meta(&m)
    }

    #[test]
    fn a_variant_survives_the_round_trip() {
        let tags: Vec<Box<str>> = vec!["news".into(), "p-1".into()];
        let wire = encode("http://h/p", &tags, &meta(), b"body");
        let d = decode(Bytes::from(wire)).unwrap();
        assert_eq!(&*d.url, "http://h/p");
        assert_eq!(d.tags.len(), 2);
        assert_eq!(&d.body[..], b"body");
        let m = d.meta.to_meta().unwrap();
        assert_eq!(m.variance(), Some([3u8; 16]));
        assert_eq!(m.stale_if_error_sec(), 20);
        assert_eq!(
            m.response_header().headers.get("cache-control").unwrap(),
            "max-age=60"
        );
    }

    #[test]
    fn cut_or_foreign_bytes_are_refused_without_a_panic() {
        let wire = encode("http://h/p", &[], &meta(), b"body");
        for n in 0..wire.len() {
            assert!(
                decode(Bytes::copy_from_slice(&wire[..n])).is_none(),
                "cut at {n}"
            );
        }
        let mut other = wire.clone();
        other[3] = VERSION + 1;
        assert!(decode(Bytes::from(other)).is_none(), "another version");
        let mut longer = wire;
        longer.push(0);
        assert!(decode(Bytes::from(longer)).is_none(), "trailing bytes");
    }
}
