//! The PROXY protocol (HAProxy's spec, versions 1 and 2), as HAProxy, AWS NLB, stunnel and
//! nginx's `proxy_protocol on` send it: a header before the first byte of HTTP that carries
//! the address of the client the proxy accepted. Pure parsing here; reading it off a new
//! connection is [`read_header`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes that open a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most this long, its CRLF included.
const V1_MAX: usize = 107;
/// The longest version 2 header accepted (addresses plus TLVs a proxy may add).
const V2_MAX: usize = 16 + 1024;

/// What the bytes read so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// Not a PROXY protocol header, or a malformed one.
    Invalid,
    /// A whole header of `len` bytes. `client` is the address it carries; `None` for a
    /// `LOCAL` (v2) or `UNKNOWN` (v1) header, whose connection is the proxy's own (health
    /// checks): the TCP peer is then the client.
    Header {
        /// The source address the header names.
        client: Option<SocketAddr>,
        /// Bytes of the header; what follows is HTTP.
        len: usize,
    },
}

/// Parse the start of a connection's bytes.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < V2_SIGNATURE.len() {
        // a prefix of either signature may still become one
        let v1 = b"PROXY ".iter().zip(buf).all(|(a, b)| a == b);
        let v2 = V2_SIGNATURE.iter().zip(buf).all(|(a, b)| a == b);
        return if v1 || v2 {
            Parsed::Incomplete
        } else {
            Parsed::Invalid
        };
    }
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Parsed::Invalid
    }
}

/// `PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\n`, `PROXY TCP6 ...`, `PROXY UNKNOWN ...`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Header { client: None, len },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(_), Ok(sport), Ok(_)) = (
                src.parse::<IpAddr>(),
                dst.parse::<IpAddr>(),
                port(sport),
                port(dport),
            ) else {
                return Parsed::Invalid;
            };
            if src.is_ipv4() != (*family == "TCP4") {
                return Parsed::Invalid;
            }
            Parsed::Header {
                client: Some(SocketAddr::new(src, sport)),
                len,
            }
        }
        _ => Parsed::Invalid,
    }
}

/// A port as version 1 writes it: decimal, no sign, no leading zero.
fn port(text: &str) -> Result<u16, ()> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return Err(());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse().map_err(|_| ())
}

/// The binary header: signature, version and command, family and protocol, length, addresses.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Parsed::Invalid;
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid;
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    if command == 0 {
        // LOCAL: the proxy's own connection
        return Parsed::Header { client: None, len };
    }
    let a = &buf[16..len];
    let client = match buf[13] {
        // TCP or UDP over IPv4: source, destination, source port, destination port
        0x11 | 0x12 if a.len() >= 12 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        0x21 | 0x22 if a.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC (or a unix socket): no address to take; the peer stands
        0x00 | 0x31 | 0x32 => None,
        _ => return Parsed::Invalid,
    };
    Parsed::Header { client, len }
}

/// Read a PROXY protocol header off a new connection, within `timeout`. Returns the client
/// address it carries (`None`: keep the TCP peer) and the bytes read past it (the start of
/// the first request), or an error when the connection does not start with a valid header.
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match parse(&buf) {
                Parsed::Header { client, len } => return Ok((client, buf.split_off(len))),
                Parsed::Invalid => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "no valid PROXY protocol header",
                    ))
                }
                Parsed::Incomplete => {}
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header {
                client: Some("203.0.113.9:56324".parse().unwrap()),
                len: 44
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(matches!(parse(six), Parsed::Header { client: Some(a), .. } if a.is_ipv6()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                client: None,
                len: 15
            }
        );
        for bad in [
            &b"PROXY TCP4 203.0.113.9 192.0.2.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Invalid,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"PROX"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
        assert_eq!(parse(&[b'P'; 200]), Parsed::Invalid);
        let long = [b"PROXY ".to_vec(), vec![b'x'; 200]].concat();
        assert_eq!(parse(&long), Parsed::Invalid, "no CRLF within 107 bytes");
    }

    #[test]
    fn version_2() {
        let mut four = vec![203, 0, 113, 9, 192, 0, 2, 1];
        four.extend_from_slice(&56324u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &four);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&with_request),
            Parsed::Header {
                client: Some("203.0.113.9:56324".parse().unwrap()),
                len: h.len()
            }
        );
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&[0; 16]);
        six.extend_from_slice(&[0, 80, 1, 187]);
        assert_eq!(
            parse(&v2(1, 0x21, &six)),
            Parsed::Header {
                client: Some("[2001:db8::1]:80".parse().unwrap()),
                len: 16 + 36
            }
        );
        // LOCAL: a health check by the proxy itself
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Header {
                client: None,
                len: 16
            }
        );
        let mut bad_version = h.clone();
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Parsed::Invalid);
        assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Parsed::Invalid);
        assert_eq!(parse(&v2(1, 0x11, &vec![0; 2000])), Parsed::Invalid);
    }

    #[tokio::test]
    async fn reading_keeps_what_follows_the_header() {
        let mut bytes: &[u8] = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (client, rest) = read_header(&mut bytes, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(client, Some("203.0.113.9:56324".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let mut http: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(read_header(&mut http, Duration::from_secs(1))
            .await
            .is_err());
    }
}
