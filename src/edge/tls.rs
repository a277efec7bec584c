//! TLS on lacquer's own listeners (rustls, through pingora's listener): the certificates of
//! `listen[].tls.certificates`, one chosen per handshake by the name the client asks for (SNI),
//! the first when none matches; HTTP/2 offered by ALPN, HTTP/1.1 otherwise.

use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{CertificateDer, ClientHello, CryptoProvider, ResolvesServerCert, ServerName};

use crate::config::CertificateFiles;

/// The certificates of one listener, each with its leaf certificate's DER (to match names).
#[derive(Debug)]
struct ByServerName {
    entries: Vec<(CertificateDer<'static>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asked = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok());
        if let Some(name) = asked {
            for (leaf, key) in &self.entries {
                let valid = webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok());
                if valid {
                    return Some(key.clone());
                }
            }
        }
        self.entries.first().map(|(_, key)| key.clone())
    }
}

/// pingora's TLS settings for a listener with `certificates`; `path` names the config key in
/// errors (`listen[1].tls`).
pub(crate) fn settings(
    certificates: &[CertificateFiles],
    path: &str,
) -> Result<TlsSettings, String> {
    pingora_rustls::install_default_crypto_provider();
    let provider =
        CryptoProvider::get_default().ok_or_else(|| format!("{path}: no TLS crypto provider"))?;
    let mut entries = Vec::with_capacity(certificates.len());
    for (j, c) in certificates.iter().enumerate() {
        let here = format!("{path}.certificates[{j}]");
        let (cert, key) = (c.cert.display().to_string(), c.key.display().to_string());
        let (chain, private) = pingora_rustls::load_certs_and_key_files(&cert, &key)
            .map_err(|e| format!("{here}: {e}"))?
            .ok_or_else(|| format!("{here}: no certificate or no private key (PEM expected)"))?;
        let signing = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| format!("{here}.key: {e}"))?;
        let leaf = chain
            .first()
            .cloned()
            .ok_or_else(|| format!("{here}.cert: no certificate"))?;
        entries.push((leaf, Arc::new(CertifiedKey::new(chain, signing))));
    }
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| format!("{path}: {e}"))?;
    settings.set_cert_resolver(Arc::new(ByServerName { entries }));
    settings.enable_h2();
    Ok(settings)
}
