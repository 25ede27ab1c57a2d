//! TLS on the public listener: versions, suites, HSTS, and certificate reload on SIGHUP
//! without dropping open connections.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{Gateway, PRODUCTION, TempDir, Upstream, catch_all};

/// A fresh self-signed certificate for `localhost`: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        certified.cert.der().clone(),
    )
}

fn client(
    trusted: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    client_with_alpn(trusted, versions, b"http/1.1")
}

fn client_with_alpn(
    trusted: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    gateway: &Gateway,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(gateway.addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// One keep-alive request on `stream`; returns the response head and body as text.
async fn request(stream: &mut TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut buffer = vec![0u8; 16 * 1024];
    let mut text = String::new();
    // The upstream's answers are small and carry Content-Length; read until the body is in.
    while !text.contains("\r\n\r\n") || !text.contains("received=") {
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(n > 0, "connection closed after: {text}");
        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    text
}

#[tokio::test]
async fn tls_serves_1_2_and_1_3_sends_hsts_and_reloads_on_sighup_keeping_connections() {
    let upstream = Upstream::start("APP");
    let dir = TempDir::new("tls");
    let (cert_a, key_a, der_a) = certificate();
    let cert = dir.write("cert.pem", &cert_a);
    let key = dir.write("key.pem", &key_a);
    let head = format!(
        "{PRODUCTION}[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let gateway = Gateway::start(&catch_all(&head, &upstream.url(), ""), &[]);

    let tls13 = client(&der_a, &[&rustls::version::TLS13]);
    let mut open = connect(&gateway, &tls13).await.expect("TLS 1.3 handshake");
    assert_eq!(
        open.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let reply = request(&mut open).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{reply}"
    );
    assert!(reply.contains("proto=https"), "{reply}");

    let tls12 = client(&der_a, &[&rustls::version::TLS12]);
    let mut old = connect(&gateway, &tls12).await.expect("TLS 1.2 handshake");
    let suite = old
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    let suite = suite.unwrap_or_default();
    assert!(
        suite.contains("ECDHE") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );

    // New pair on disk, then SIGHUP: new handshakes get it, open connections keep working.
    let (cert_b, key_b, der_b) = certificate();
    std::fs::write(&cert, cert_b).expect("write cert");
    std::fs::write(&key, key_b).expect("write key");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let trusts_b = client(&der_b, &[&rustls::version::TLS13]);
    let mut reloaded = None;
    for _ in 0..50 {
        if let Ok(stream) = connect(&gateway, &trusts_b).await {
            reloaded = Some(stream);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut reloaded = reloaded.expect("handshake with the reloaded certificate");
    assert!(request(&mut reloaded).await.starts_with("HTTP/1.1 200"));
    assert!(
        connect(&gateway, &tls13).await.is_err(),
        "the old certificate is still served"
    );
    assert!(
        request(&mut open).await.starts_with("HTTP/1.1 200"),
        "open connection dropped"
    );
    assert!(
        request(&mut old).await.starts_with("HTTP/1.1 200"),
        "open TLS 1.2 connection dropped"
    );
}

#[tokio::test]
async fn http2_clients_are_served_through_alpn() {
    let upstream = Upstream::start("APP");
    let dir = TempDir::new("h2");
    let (cert_pem, key_pem, der) = certificate();
    let head = format!(
        "{PRODUCTION}[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        dir.write("cert.pem", &cert_pem).display(),
        dir.write("key.pem", &key_pem).display()
    );
    let gateway = Gateway::start(&catch_all(&head, &upstream.url(), ""), &[]);
    let stream = connect(
        &gateway,
        &client_with_alpn(&der, &[&rustls::version::TLS13], b"h2"),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get("https://localhost/over/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert!(response.headers().contains_key("strict-transport-security"));
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("APP path=/over/h2 "), "{body}");
}
