//! Vary (RFC 9111 section 4.1): which request headers select a stored variant.
//!
//! The variance of a request is a hash over the values of the headers the stored response
//! names in `Vary`. `Accept-Encoding` is normalised to the codings lacquer keys (`br`, `gzip`,
//! `zstd`, in one spelling), so the thousands of browser spellings share eight variants.
//! `Vary: *` is refused earlier, in `freshness.rs`.

use pingora_cache::key::HashBinary;
use pingora_cache::VarianceBuilder;
use pingora_http::{RequestHeader, ResponseHeader};

/// The variance hash of `req` against a stored response's `Vary`; `None` when the response
/// does not vary.
pub(crate) fn variance(resp: &ResponseHeader, req: &RequestHeader) -> Option<HashBinary> {
    variance_of(vary_names(resp), req)
}

/// The variance hash of `req` over the lower-cased header `names` a response varies on.
pub(crate) fn variance_of(names: Vec<String>, req: &RequestHeader) -> Option<HashBinary> {
    if names.is_empty() {
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in names {
        let value = if name == "accept-encoding" {
            normalize_accept_encoding(req).as_bytes().to_vec()
        } else {
            joined_values(req, &name)
        };
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// The lower-cased, de-duplicated header names listed in `Vary`.
pub(crate) fn vary_names(resp: &ResponseHeader) -> Vec<String> {
    names_in(
        resp.headers
            .get_all(http::header::VARY)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// The lower-cased, de-duplicated header names listed in these `Vary` values.
pub(crate) fn names_in<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for v in values {
        for token in v.split(|&b| b == b',') {
            let t = token.trim_ascii();
            if t.is_empty() {
                continue;
            }
            let name = String::from_utf8_lossy(t).to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn joined_values(req: &RequestHeader, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in req.headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes().trim_ascii());
    }
    out
}

/// The codings a client accepts among those lacquer keys separately (`br`, `gzip`, `zstd`),
/// honouring `q=0`, in one canonical spelling: `"br, gzip"` for a browser's
/// `gzip, deflate, br`, `""` for identity only. All of them reach the app, so a gzip-only app
/// still compresses for a browser that also takes br; the eight spellings are the only
/// variants, so a hit never carries a coding its client did not accept.
pub(crate) fn normalize_accept_encoding(req: &RequestHeader) -> &'static str {
    let (mut br, mut gzip, mut zstd) = (false, false, false);
    for v in req.headers.get_all(http::header::ACCEPT_ENCODING) {
        for item in v.as_bytes().split(|&b| b == b',') {
            // (compared without case, not lower-cased into copies: this runs for every
            // browser's request the cache serves)
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or(b"").trim_ascii();
            let refused = parts.any(|p| {
                let p = p.trim_ascii();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case(b"q=")
                    && p[2..].iter().all(|&c| c == b'0' || c == b'.')
            });
            if refused {
                continue;
            }
            let is = |name: &[u8]| coding.eq_ignore_ascii_case(name);
            if is(b"br") {
                br = true;
            } else if is(b"gzip") || is(b"x-gzip") {
                gzip = true;
            } else if is(b"zstd") {
                zstd = true;
            } else if coding == b"*" {
                br = true;
                gzip = true;
                zstd = true;
            }
        }
    }
    match (br, gzip, zstd) {
        (true, true, true) => "br, gzip, zstd",
        (true, true, false) => "br, gzip",
        (true, false, true) => "br, zstd",
        (true, false, false) => "br",
        (false, true, true) => "gzip, zstd",
        (false, true, false) => "gzip",
        (false, false, true) => "zstd",
        (false, false, false) => "",
    }
}

/// Whether `Vary` names `name` (lower-case) or `*`.
pub(crate) fn varies_on(resp: &ResponseHeader, name: &str) -> bool {
    resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(name.as_bytes())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn resp(vary: &[&str]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for v in vary {
            r.append_header("Vary", *v).unwrap();
        }
        r
    }

    #[test]
    fn accept_encoding_normalisation() {
        let cases = [
            ("gzip, deflate, br", "br, gzip"),
            ("gzip, deflate, br, zstd", "br, gzip, zstd"),
            ("br", "br"),
            ("gzip, deflate", "gzip"),
            ("GZIP", "gzip"),
            ("br;q=0, gzip", "gzip"),
            ("br;q=0.0", ""),
            ("BR ; Q=0 , X-Gzip", "gzip"),
            ("zstd;q=0.5, br;level=1;q=0", "zstd"),
            ("gzip;q=1", "gzip"),
            ("identity", ""),
            ("*", "br, gzip, zstd"),
            ("", ""),
        ];
        for (ae, want) in cases {
            assert_eq!(
                normalize_accept_encoding(&req(&[("Accept-Encoding", ae)])),
                want,
                "{ae}"
            );
        }
    }

    #[test]
    fn variance_follows_the_listed_headers() {
        let r = resp(&["Accept-Language"]);
        let en = variance(&r, &req(&[("Accept-Language", "en")]));
        let fr = variance(&r, &req(&[("Accept-Language", "fr")]));
        let en_other_ua = variance(&r, &req(&[("Accept-Language", "en"), ("User-Agent", "x")]));
        assert!(en.is_some());
        assert_ne!(en, fr);
        assert_eq!(en, en_other_ua);
        assert_eq!(variance(&resp(&[]), &req(&[])), None);
    }

    #[test]
    fn equivalent_encodings_share_a_variant() {
        let r = resp(&["accept-encoding"]);
        let a = variance(&r, &req(&[("Accept-Encoding", "gzip, deflate, br")]));
        let b = variance(&r, &req(&[("Accept-Encoding", "br, gzip")]));
        let c = variance(&r, &req(&[("Accept-Encoding", "gzip")]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn names_are_case_insensitive_and_deduplicated() {
        assert_eq!(
            vary_names(&resp(&[
                "Accept-Encoding, accept-language",
                "ACCEPT-ENCODING"
            ])),
            vec!["accept-encoding".to_string(), "accept-language".to_string()]
        );
    }
}
