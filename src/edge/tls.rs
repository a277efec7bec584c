//! TLS on lacquer's own listeners (rustls, through pingora's listener): the certificates of
//! `listen[].tls.certificates`, one chosen per handshake by the name the client asks for (SNI),
//! the first when none matches; HTTP/2 offered by ALPN, HTTP/1.1 otherwise. The files are read
//! again on SIGHUP ([`reload_certificates`]): new handshakes get the renewed certificates, open
//! connections and the cache are untouched.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{CertificateDer, ClientHello, ResolvesServerCert, ServerName};

use crate::config::{load_certificate, CertificateFiles};

/// One listener's certificates, each with its leaf (to match names), the first the default.
type Entries = Vec<(CertificateDer<'static>, Arc<CertifiedKey>)>;

/// The certificates of one listener, swapped whole on reload.
#[derive(Debug)]
struct ByServerName {
    entries: ArcSwap<Entries>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let entries = self.entries.load();
        let asked = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok());
        if let Some(name) = asked {
            for (leaf, key) in entries.iter() {
                let valid = webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok());
                if valid {
                    return Some(key.clone());
                }
            }
        }
        entries.first().map(|(_, key)| key.clone())
    }
}

/// Every TLS listener of the process: its files, its config key, its resolver.
type Registered = (Vec<CertificateFiles>, String, Arc<ByServerName>);
static LISTENERS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Read `certificates` (the files of the listener at config key `path`).
fn load(certificates: &[CertificateFiles], path: &str) -> Result<Entries, String> {
    let mut entries = Vec::with_capacity(certificates.len());
    for (j, c) in certificates.iter().enumerate() {
        let (cert, key) = (c.cert.display().to_string(), c.key.display().to_string());
        let certified =
            load_certificate(&cert, &key).map_err(|e| format!("{path}.certificates[{j}]: {e}"))?;
        let leaf = certified
            .cert
            .first()
            .cloned()
            .ok_or_else(|| format!("{path}.certificates[{j}].cert: no certificate"))?;
        entries.push((leaf, Arc::new(certified)));
    }
    Ok(entries)
}

/// pingora's TLS settings for a listener with `certificates`; `path` names the config key in
/// errors (`listen[1].tls`).
pub(crate) fn settings(
    certificates: &[CertificateFiles],
    path: &str,
) -> Result<TlsSettings, String> {
    let resolver = Arc::new(ByServerName {
        entries: ArcSwap::from_pointee(load(certificates, path)?),
    });
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).push((
        certificates.to_vec(),
        path.to_string(),
        resolver.clone(),
    ));
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| format!("{path}: {e}"))?;
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    Ok(settings)
}

/// Read every TLS listener's certificate files again (SIGHUP). A listener whose files no
/// longer load keeps the certificates it has; what went wrong is returned, one line each.
pub(crate) fn reload_certificates() -> Vec<String> {
    let listeners = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    let mut problems = Vec::new();
    for (files, path, resolver) in listeners.iter() {
        match load(files, path) {
            Ok(entries) => resolver.entries.store(Arc::new(entries)),
            Err(e) => problems.push(e),
        }
    }
    problems
}
