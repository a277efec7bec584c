//! Value types of the config that are more than a number or a string: IP networks (`Cidr`),
//! name globs (`NamePattern`) and TLS certificates read from their files (`load_certificate`).
//! The runtime imports them from `config`.

/// An IP network such as `127.0.0.1/32` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix` (a bare address means a single host).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A name, or a glob with `*` standing for any run of characters (`utm_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// A pattern from its text.
    pub fn new(text: &str) -> Self {
        NamePattern(text.to_string())
    }

    /// Whether `name` matches, case-sensitively.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // iterative glob with single-star backtracking: O(p * t) worst case, no recursion
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Read a PEM certificate chain and its private key into what rustls serves: the chain must
/// hold a certificate, the key must parse and be the leaf's own. `Err` says which in words.
pub fn load_certificate(
    cert: &str,
    key: &str,
) -> Result<pingora_rustls::sign::CertifiedKey, String> {
    pingora_rustls::install_default_crypto_provider();
    let provider = pingora_rustls::CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider".to_string())?;
    let (chain, private) = pingora_rustls::load_certs_and_key_files(cert, key)
        .map_err(|e| format!("cannot read \"{cert}\" or \"{key}\": {e}"))?
        .ok_or_else(|| {
            format!("no certificate in \"{cert}\" or no private key in \"{key}\" (PEM expected)")
        })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("\"{key}\": not a usable private key: {e}"))?;
    // a certificate out of its validity period would make every handshake fail
    if let Some(leaf) = chain.first() {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, parsed) = X509Certificate::from_der(leaf.as_ref())
            .map_err(|e| format!("\"{cert}\": not a readable certificate: {e}"))?;
        let validity = parsed.validity();
        if !validity.is_valid() {
            return Err(format!(
                "\"{cert}\" is valid only from {} to {}, not now",
                validity.not_before, validity.not_after
            ));
        }
    }
    let certified = pingora_rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| format!("\"{key}\" is not the key of the certificate in \"{cert}\""))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("utm_*", "utm_source", true),
            ("utm_*", "utm_", true),
            ("utm_*", "xutm_a", false),
            ("gclid", "gclid", true),
            ("gclid", "gclidx", false),
            ("*_logged_in_*", "wordpress_logged_in_abc", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(NamePattern::new(p).matches(t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn networks() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
    }
}
