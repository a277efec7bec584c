//! Who the client really is, and over which scheme it came: the TCP peer, unless that peer is
//! one of `trusted_proxies` (a TLS terminator, a load balancer), whose `X-Forwarded-For` and
//! `X-Forwarded-Proto` are then believed.
//!
//! The client is the right-most address of `X-Forwarded-For` that is not itself trusted (each
//! proxy appends the address it received from, so everything left of the first untrusted
//! address could have been written by the client). What is resolved here is what the purge
//! gate, the access log, the app (`X-Forwarded-For`, `X-Forwarded-Proto`) and the cache key's
//! scheme see. Not here: the listeners (TLS, the PROXY protocol belong in `edge/` too).

pub(crate) mod proxy_protocol;
pub(crate) mod tls;

use std::net::IpAddr;

use pingora_http::RequestHeader;

use crate::config::Cidr;

/// The client of one request, as far as lacquer can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// The client's address: the TCP peer, or what trusted proxies said.
    pub(crate) addr: Option<IpAddr>,
    /// The TCP peer, when it is a trusted proxy (then its `X-Forwarded-For` is kept and the
    /// peer appended to it; otherwise the header is replaced).
    pub(crate) via_trusted: bool,
    /// `http` or `https`: the listener's scheme, or a trusted proxy's `X-Forwarded-Proto`.
    pub(crate) scheme: &'static str,
}

/// Resolve the client of `req`, received from `peer` on a listener speaking `scheme`.
pub(crate) fn resolve(
    peer: Option<IpAddr>,
    req: &RequestHeader,
    trusted: &[Cidr],
    scheme: &'static str,
) -> Client {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let Some(peer_ip) = peer.filter(|ip| !trusted.is_empty() && is_trusted(*ip)) else {
        // the common case: no trusted proxies, or a direct client; no header is looked at
        return Client {
            addr: peer,
            via_trusted: false,
            scheme,
        };
    };
    let mut addr = peer_ip;
    // right to left over every X-Forwarded-For line and member
    'lines: for line in req.headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = line.to_str() else {
            break;
        };
        for member in text.rsplit(',') {
            match parse_member(member) {
                Some(ip) => {
                    addr = ip;
                    if !is_trusted(ip) {
                        break 'lines;
                    }
                }
                // junk: nothing left of it can be believed
                None => break 'lines,
            }
        }
    }
    Client {
        addr: Some(addr),
        via_trusted: true,
        scheme: forwarded_scheme(req).unwrap_or(scheme),
    }
}

/// One `X-Forwarded-For` member: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`) or in brackets.
fn parse_member(member: &str) -> Option<IpAddr> {
    let m = member.trim();
    if let Ok(ip) = m.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = m.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = m.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A trusted proxy's `X-Forwarded-Proto`: its last value, `http` or `https` (any case).
fn forwarded_scheme(req: &RequestHeader) -> Option<&'static str> {
    let last = req
        .headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()?;
    let value = last.to_str().ok()?.rsplit(',').next()?.trim();
    if value.eq_ignore_ascii_case("https") {
        Some("https")
    } else if value.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// The `X-Forwarded-For` the app is sent: the chain a trusted proxy sent, plus that proxy;
/// from anyone else only the peer, so an app that reads the left-most address never sees one
/// a client made up. `None` without a peer address.
pub(crate) fn forwarded_for(
    peer: Option<std::net::IpAddr>,
    req: &RequestHeader,
    via_trusted: bool,
) -> Option<String> {
    let ip = peer?.to_string();
    let prev: Vec<&str> = if via_trusted {
        req.headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .collect()
    } else {
        Vec::new()
    };
    Some(if prev.is_empty() {
        ip
    } else {
        format!("{}, {ip}", prev.join(", "))
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let lb = ip("127.0.0.1");
        let cases: Vec<(Vec<(&str, &str)>, Option<IpAddr>)> = vec![
            (vec![], lb),
            (vec![("X-Forwarded-For", "203.0.113.9")], ip("203.0.113.9")),
            (
                vec![("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.1.1")],
                ip("203.0.113.9"),
            ),
            (
                vec![
                    ("X-Forwarded-For", "198.51.100.1"),
                    ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
                ],
                ip("198.51.100.1"),
            ),
            (
                vec![("X-Forwarded-For", "10.0.0.2, 10.0.0.3")],
                ip("10.0.0.2"),
            ),
            (
                vec![("X-Forwarded-For", "198.51.100.1, junk, 10.0.0.3")],
                ip("10.0.0.3"),
            ),
            (
                vec![("X-Forwarded-For", "203.0.113.9:4711")],
                ip("203.0.113.9"),
            ),
            (
                vec![("X-Forwarded-For", "[2001:db8::1]:443")],
                ip("2001:db8::1"),
            ),
        ];
        for (headers, want) in cases {
            let c = resolve(lb, &req(&headers), &trusted, "http");
            assert_eq!(c.addr, want, "{headers:?}");
            assert!(c.via_trusted);
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let spoof = req(&[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let far = ip("203.0.113.9");
        for trusted in [nets(&[]), nets(&["127.0.0.1/32"])] {
            let c = resolve(far, &spoof, &trusted, "http");
            assert_eq!(
                c,
                Client {
                    addr: far,
                    via_trusted: false,
                    scheme: "http"
                }
            );
        }
    }

    #[test]
    fn a_trusted_proxy_says_the_scheme() {
        let trusted = nets(&["127.0.0.1/32"]);
        let lb = ip("127.0.0.1");
        for (value, want) in [
            ("https", "https"),
            ("HTTPS", "https"),
            ("http", "http"),
            ("http, https", "https"),
            ("gopher", "http"),
        ] {
            let c = resolve(lb, &req(&[("X-Forwarded-Proto", value)]), &trusted, "http");
            assert_eq!(c.scheme, want, "{value}");
        }
    }
}
