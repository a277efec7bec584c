//! TLS on lacquer's own listener: certificates generated for the test (rcgen), HTTP/2 by
//! ALPN and HTTP/1.1 for clients that do not offer it, the certificate chosen by SNI, and the
//! `https` scheme reaching the app and the cache key.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::{Origin, Proxy, Reply};

/// A self-signed certificate for `names`, written as PEM files into `dir`; its DER.
fn certificate(dir: &Path, stem: &str, names: &[&str]) -> (String, String, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (
        cert.display().to_string(),
        key.display().to_string(),
        generated.cert.der().to_vec(),
    )
}

/// A client that trusts `roots` and sends requests for `names` to `addr`.
fn client(roots: &[&[u8]], names: &[&str], addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_info(true);
    for der in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_der(der).unwrap());
    }
    for name in names {
        b = b.resolve(name, addr);
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The DER of the certificate the server presented.
fn presented(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_tls_listener_speaks_h2_and_http11_with_the_certificate_the_client_asked_for() {
    let origin = Origin::start(|s| {
        Reply::ok(format!(
            "proto={}",
            s.header("x-forwarded-proto").unwrap_or("-")
        ))
        .header("Cache-Control", "max-age=60")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (site_cert, site_key, site_der) = certificate(dir.path(), "site", &["site.test"]);
    let (other_cert, other_key, other_der) = certificate(dir.path(), "other", &["other.test"]);
    let proxy = Proxy::start_with_listener(&[origin.addr], "", |addr| {
        format!(
            "{{addr: \"{addr}\", tls: {{certificates: [{{cert: \"{site_cert}\", key: \"{site_key}\"}}, {{cert: \"{other_cert}\", key: \"{other_key}\"}}]}}}}"
        )
    })
    .await;
    let port = proxy.addr.port();
    let roots = [site_der.as_slice(), other_der.as_slice()];
    let h2 = client(&roots, &["site.test", "other.test"], proxy.addr, false);

    let first = h2
        .get(format!("https://site.test:{port}/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        presented(&first),
        site_der,
        "the default and SNI-matching certificate"
    );
    let status = first.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(status.contains("fwd=miss"), "{status}");
    assert_eq!(first.text().await.unwrap(), "proto=https");
    let second = h2
        .get(format!("https://site.test:{port}/page"))
        .send()
        .await
        .unwrap();
    let status = second.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(status.starts_with("lacquer; hit"), "{status}");
    assert_eq!(origin.hits("/page"), 1);
    assert_eq!(
        origin.last("/page").unwrap().header("host"),
        Some(&*format!("site.test:{port}"))
    );

    // the second certificate for its own name
    let other = h2
        .get(format!("https://other.test:{port}/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(presented(&other), other_der, "chosen by SNI");

    // a client without HTTP/2 gets HTTP/1.1 on the same listener, from the same cache
    let h1 = client(&roots, &["site.test"], proxy.addr, true);
    let old = h1
        .get(format!("https://site.test:{port}/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.version(), reqwest::Version::HTTP_11);
    let status = old.headers()["cache-status"].to_str().unwrap().to_string();
    assert!(status.starts_with("lacquer; hit"), "{status}");
    assert_eq!(origin.hits("/page"), 2, "site.test once, other.test once");
}

#[tokio::test]
async fn a_missing_certificate_names_its_key() {
    let origin = Origin::start(|_| Reply::ok("x")).await;
    let err = crate::support::proxy::refused_config(&format!(
            "upstreams:\n  - addr: \"{}\"\nlisten:\n  - addr: \"127.0.0.1:1\"\n    tls:\n      certificates:\n        - {{cert: \"/nonexistent/site.pem\", key: \"/nonexistent/site.key\"}}\n",
            origin.addr
        ));
    assert!(
        err.contains("listen[0].tls.certificates[0]: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_by_test() {
    let origin = Origin::start(|_| Reply::ok("x")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = certificate(dir.path(), "one", &["site.test"]);
    let (_, other_key, _) = certificate(dir.path(), "two", &["site.test"]);
    let err = crate::support::proxy::refused_config(&format!(
            "upstreams:\n  - addr: \"{}\"\nlisten:\n  - addr: \"127.0.0.1:1\"\n    tls:\n      certificates:\n        - {{cert: \"{cert}\", key: \"{other_key}\"}}\n",
            origin.addr
        ));
    assert!(
        err.contains("listen[0].tls.certificates[0]:")
            && err.contains("is not the key of the certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn sighup_swaps_in_a_renewed_certificate_and_keeps_the_cache() {
    let origin = Origin::start(|_| Reply::ok("page").header("Cache-Control", "max-age=60")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, old_der) = certificate(dir.path(), "site", &["site.test"]);
    let proxy = Proxy::start_with_listener(&[origin.addr], "", |addr| {
        format!(
            "{{addr: \"{addr}\", tls: {{certificates: [{{cert: \"{cert}\", key: \"{key}\"}}]}}}}"
        )
    })
    .await;
    let url = format!("https://site.test:{}/page", proxy.addr.port());
    // the renewed certificate, written over the same files (as certbot does)
    let renewed_dir = tempfile::tempdir().unwrap();
    let (new_cert, new_key, new_der) = certificate(renewed_dir.path(), "site", &["site.test"]);
    let roots = [old_der.as_slice(), new_der.as_slice()];
    let first = client(&roots, &["site.test"], proxy.addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(presented(&first), old_der);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    proxy.signal("HUP");
    let mut swapped = None;
    for _ in 0..100 {
        // a new client: a new connection and handshake
        let r = client(&roots, &["site.test"], proxy.addr, false)
            .get(&url)
            .send()
            .await
            .unwrap();
        if presented(&r) == new_der {
            swapped = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = swapped.expect("the renewed certificate was never presented");
    let status = r.headers()["cache-status"].to_str().unwrap().to_string();
    assert!(
        status.starts_with("lacquer; hit"),
        "the cache survived: {status}"
    );
    assert_eq!(origin.hits("/page"), 1);
}

/// A TLS front for `origin` (as an app server that only speaks HTTPS): decrypts with `cert`
/// and `key` and relays to the plain origin. Returns its address.
async fn tls_front(origin: SocketAddr, cert: &str, key: &str) -> SocketAddr {
    use tokio_rustls::rustls;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let private = rustls::pki_types::pem::PemObject::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(origin).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_app_server_that_speaks_only_https_is_reached_over_verified_tls() {
    let origin =
        Origin::start(|_| Reply::ok("from https").header("Cache-Control", "max-age=60")).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "app", &["app.internal"]);
    let front = tls_front(origin.addr, &cert, &key).await;
    let c = crate::support::Client::new();
    // verified against the CA file, with the name it was given
    let good = format!("health_check:\n  type: none\nupstream_ca_file: \"{cert}\"\n");
    let yaml_upstream = |extra: &str| {
        format!("  - addr: \"{front}\"\n    tls: true\n    sni: \"app.internal\"\n{extra}")
    };
    let proxy = Proxy::start_raw_upstreams(&yaml_upstream(""), &good).await;
    let r = c.get(&proxy.url("/a")).await;
    assert_eq!(r.status, 200, "{}", proxy.log());
    assert_eq!(r.text(), "from https");
    assert!(c.get(&proxy.url("/a")).await.is_fresh_hit());
    assert_eq!(origin.hits("/a"), 1);
    // without the CA the certificate is not trusted: no response from the app
    let untrusted = Proxy::start_raw_upstreams(
        &yaml_upstream(""),
        "health_check:\n  type: none\nretries: 0\n",
    )
    .await;
    let r = c.get(&untrusted.url("/b")).await;
    assert_eq!(r.status, 502, "{}", r.cache_status());
    assert_eq!(origin.hits("/b"), 0);
    // unless verification is switched off for that app server
    let unverified = Proxy::start_raw_upstreams(
        &yaml_upstream("    verify: false\n"),
        "health_check:\n  type: none\n",
    )
    .await;
    assert_eq!(c.get(&unverified.url("/c")).await.text(), "from https");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_by_test() {
    let origin = Origin::start(|_| Reply::ok("x")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["site.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let expired = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("old.pem"), dir.path().join("old.key"));
    std::fs::write(&cert_path, expired.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let err = crate::support::proxy::refused_config(&format!(
        "upstreams:\n  - addr: \"{}\"\nlisten:\n  - addr: \"127.0.0.1:1\"\n    tls:\n      certificates:\n        - {{cert: \"{}\", key: \"{}\"}}\n",
        origin.addr,
        cert_path.display(),
        key_path.display()
    ));
    assert!(
        err.contains("listen[0].tls.certificates[0]:") && err.contains("not now"),
        "{err}"
    );
}
