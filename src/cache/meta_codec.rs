//! How a stored object's `CacheMeta` is kept: the freshness facts as plain fields and the
//! response header as compact `Name: value` lines, rebuilt into a `CacheMeta` on each hit.
//!
//! pingora's own `CacheMeta::serialize` compresses the header with zstd and encodes the rest
//! with MessagePack; decoding that on every hit was the largest user-space cost of a hit
//! (see docs/benchmarks.md). Rebuilding from these fields costs a header parse of a few
//! hundred bytes and no decompression.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;

/// A `CacheMeta` at rest.
#[derive(Debug, Clone)]
pub(crate) struct StoredMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    epoch: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    status: u16,
    reason: Option<Box<str>>,
    /// `Name: value\r\n` lines, names in their original case. Shared: a hit's header names and
    /// values are slices of it, not copies.
    headers: Bytes,
    /// `headers` has a `Vary` line (noted whenever they are set, so that a hit of a page that
    /// varies on nothing does not look through them for one).
    varies: bool,
}

impl StoredMeta {
    /// Capture `meta`.
    pub(crate) fn from_meta(meta: &CacheMeta) -> StoredMeta {
        let header = meta.response_header();
        let mut headers = Vec::with_capacity(256);
        header.header_to_h1_wire(&mut headers);
        StoredMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            status: header.status.as_u16(),
            // only a non-standard phrase is kept: "OK" for every 200 would be one more
            // allocation per object, and one more place in memory for a hit to read
            reason: header
                .get_reason_phrase()
                .filter(|r| Some(*r) != header.status.canonical_reason())
                .map(Into::into),
            varies: has_vary(&headers),
            headers: exact(headers),
        }
    }

    /// Until when it is fresh.
    pub(crate) fn fresh_until(&self) -> SystemTime {
        self.fresh_until
    }

    /// When it was stored (pingora's `created`, which is also its provenance).
    pub(crate) fn created(&self) -> SystemTime {
        self.created
    }

    /// Where its age is counted from (pingora's `epoch`).
    pub(crate) fn epoch(&self) -> SystemTime {
        self.epoch
    }

    /// The Vary variance it was stored under, if any.
    pub(crate) fn variance(&self) -> Option<HashBinary> {
        self.variance
    }

    /// The response status.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// A reason phrase other than the status's standard one.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The response's header field lines, `Name: value\r\n` each, in pingora's order.
    pub(crate) fn header_lines(&self) -> &[u8] {
        &self.headers
    }

    /// The values of its `Vary` lines.
    pub(crate) fn vary_values(&self) -> impl Iterator<Item = &[u8]> {
        let lines: &[u8] = if self.varies { &self.headers } else { b"" };
        vary_values(lines)
    }

    /// Rebuild the `CacheMeta`.
    pub(crate) fn to_meta(&self) -> Result<CacheMeta> {
        let count = self.headers.split(|&b| b == b'\n').count();
        let mut header = ResponseHeader::build(self.status, Some(count))?;
        if let Some(r) = &self.reason {
            header.set_reason_phrase(Some(r))?;
        }
        let all = &self.headers;
        let mut start = 0;
        while start < all.len() {
            let end = all[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(all.len(), |i| start + i);
            let line_end = if end > start && all[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            let line = &all[start..line_end];
            if !line.is_empty() {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    return Error::e_explain(ErrorType::InternalError, "corrupt stored header");
                };
                let mut value_start = start + colon + 1;
                while value_start < line_end
                    && (all[value_start] == b' ' || all[value_start] == b'\t')
                {
                    value_start += 1;
                }
                let name = all.slice(start..start + colon);
                let value = HeaderValue::from_maybe_shared(all.slice(value_start..line_end))
                    .map_err(|_| {
                        Error::explain(ErrorType::InternalError, "corrupt stored header")
                    })?;
                header.append_header(name, value)?;
            }
            start = end + 1;
        }
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            header,
        );
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        if self.epoch != self.created {
            meta.set_epoch_override(self.epoch);
        }
        Ok(meta)
    }

    /// Record the stored body's length in the header: `Content-Length` replaces any
    /// `Transfer-Encoding`, so a hit is written with its length known, in one piece (as
    /// Varnish does), even when the app streamed it chunked. Not for 1xx, 204 and 304, which
    /// have no body.
    pub(crate) fn set_body_length(&mut self, len: usize) {
        if self.status < 200 || self.status == 204 || self.status == 304 {
            return;
        }
        let mut out = Vec::with_capacity(self.headers.len() + 24);
        for line in self.headers.split_inclusive(|&b| b == b'\n') {
            let name_end = line.iter().position(|&b| b == b':').unwrap_or(0);
            let name = &line[..name_end];
            if name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
            {
                continue;
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
        self.varies = has_vary(&out);
        self.headers = exact(out);
    }

    /// Append this to `out` in the shared tier's encoding (`shared/codec.rs` versions it):
    /// times as Unix milliseconds, then the Vary variance, status, reason and header lines.
    pub(crate) fn write_wire(&self, out: &mut Vec<u8>) {
        for t in [self.fresh_until, self.created, self.epoch] {
            out.extend_from_slice(&unix_ms(t).to_be_bytes());
        }
        out.extend_from_slice(&self.stale_while_revalidate.to_be_bytes());
        out.extend_from_slice(&self.stale_if_error.to_be_bytes());
        match self.variance {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.status.to_be_bytes());
        let reason = self.reason.as_deref().unwrap_or("").as_bytes();
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.headers);
    }

    /// Read what [`StoredMeta::write_wire`] wrote from the front of `wire`; `None` when it is
    /// cut short or does not make sense (bad bytes from the shared tier are a miss, never a
    /// panic).
    pub(crate) fn read_wire(wire: &mut Bytes) -> Option<StoredMeta> {
        let mut times = [UNIX_EPOCH; 3];
        for t in &mut times {
            *t = UNIX_EPOCH + Duration::from_millis(take_u64(wire)?);
        }
        let stale_while_revalidate = take_u32(wire)?;
        let stale_if_error = take_u32(wire)?;
        let variance = match take(wire, 1)?[0] {
            0 => None,
            1 => Some(<HashBinary>::try_from(&take(wire, 16)?[..]).ok()?),
            _ => return None,
        };
        let status = u16::from_be_bytes(take(wire, 2)?[..].try_into().ok()?);
        if !(100..1000).contains(&status) {
            return None;
        }
        let reason_len = u16::from_be_bytes(take(wire, 2)?[..].try_into().ok()?) as usize;
        let reason = take(wire, reason_len)?;
        let reason = match std::str::from_utf8(&reason).ok()? {
            "" => None,
            r => Some(r.into()),
        };
        let headers_len = take_u32(wire)? as usize;
        let headers = take(wire, headers_len)?;
        Some(StoredMeta {
            fresh_until: times[0],
            created: times[1],
            epoch: times[2],
            stale_while_revalidate,
            stale_if_error,
            variance,
            status,
            reason,
            varies: has_vary(&headers),
            headers,
        })
    }

    /// Until when it is fresh (Unix ms).
    pub(crate) fn fresh_until_ms(&self) -> u64 {
        unix_ms(self.fresh_until)
    }

    /// Bytes this takes beyond its fixed fields.
    pub(crate) fn heap_size(&self) -> usize {
        self.headers.len() + self.reason.as_ref().map_or(0, |r| r.len())
    }
}

/// The values of the `Vary` lines among header lines.
fn vary_values(lines: &[u8]) -> impl Iterator<Item = &[u8]> {
    lines.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"vary")
            .then(|| line[colon + 1..].trim_ascii_start())
    })
}

fn has_vary(lines: &[u8]) -> bool {
    vary_values(lines).next().is_some()
}

/// `lines` in an allocation of their own size: a `Bytes` made from a vector with spare room
/// keeps the room and adds a separate reference-count allocation (21 bytes more per stored
/// 1 KiB object on average, measured with `bench/run.py --only memory`).
fn exact(lines: Vec<u8>) -> Bytes {
    Bytes::from(lines.into_boxed_slice())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The first `n` bytes of `wire`, taken off it (shared, not copied).
pub(crate) fn take(wire: &mut Bytes, n: usize) -> Option<Bytes> {
    (wire.len() >= n).then(|| wire.split_to(n))
}

pub(crate) fn take_u32(wire: &mut Bytes) -> Option<u32> {
    Some(u32::from_be_bytes(take(wire, 4)?[..].try_into().ok()?))
}

pub(crate) fn take_u64(wire: &mut Bytes) -> Option<u64> {
    Some(u64::from_be_bytes(take(wire, 8)?[..].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_meta_survives_the_round_trip() {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(404, None).unwrap();
        header.append_header("Cache-Control", "max-age=60").unwrap();
        header.append_header("X-Custom-Case", "a: b").unwrap();
        header.append_header("Set-Thing", "1").unwrap();
        header.append_header("Set-Thing", "2").unwrap();
        header.set_reason_phrase(Some("Nope")).unwrap();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 5, 7, header);
        meta.set_variance([7u8; 16]);
        meta.set_epoch_override(now - Duration::from_secs(30));
        let back = StoredMeta::from_meta(&meta).to_meta().unwrap();
        assert_eq!(back.fresh_until(), meta.fresh_until());
        assert_eq!(back.created(), meta.created());
        assert_eq!(back.epoch(), meta.epoch());
        assert_eq!(back.stale_while_revalidate_sec(), 5);
        assert_eq!(back.stale_if_error_sec(), 7);
        assert_eq!(back.variance(), Some([7u8; 16]));
        let h = back.response_header();
        assert_eq!(h.status.as_u16(), 404);
        assert_eq!(h.get_reason_phrase(), Some("Nope"));
        assert_eq!(h.headers.get("x-custom-case").unwrap(), "a: b");
        assert_eq!(h.headers.get_all("set-thing").iter().count(), 2);
        let mut wire = Vec::new();
        h.header_to_h1_wire(&mut wire);
        assert!(
            String::from_utf8(wire)
                .unwrap()
                .contains("X-Custom-Case: a: b"),
            "case kept"
        );
    }

    #[test]
    fn a_standard_reason_is_not_kept() {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("X-A", "1").unwrap();
        let meta = CacheMeta::new(now, now, 0, 0, header);
        let stored = StoredMeta::from_meta(&meta);
        assert!(stored.reason.is_none(), "\"OK\" is the status's own phrase");
        let back = stored.to_meta().unwrap();
        assert_eq!(back.response_header().get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn the_stored_length_replaces_chunked_framing() {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(200, None).unwrap();
        header
            .append_header("Transfer-Encoding", "chunked")
            .unwrap();
        header.append_header("X-A", "1").unwrap();
        let meta = CacheMeta::new(now, now, 0, 0, header);
        let mut stored = StoredMeta::from_meta(&meta);
        stored.set_body_length(1234);
        let back = stored.to_meta().unwrap();
        let h = back.response_header();
        assert!(h.headers.get("transfer-encoding").is_none());
        assert_eq!(h.headers.get("content-length").unwrap(), "1234");
        assert_eq!(h.headers.get("x-a").unwrap(), "1");
    }
}
