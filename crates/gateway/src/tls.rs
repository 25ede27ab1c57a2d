//! TLS on the public listener: TLS 1.2 and 1.3 only, forward-secret AEAD suites only (the
//! aws-lc-rs provider's defaults, which are exactly those: ECDHE with AES-GCM or
//! ChaCha20-Poly1305), ALPN for HTTP/2 and HTTP/1.1.
//!
//! Certificates are reloaded on SIGHUP: new handshakes use the new pair, open connections keep
//! theirs, and a pair that fails to load leaves the old one in place.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::settings::TlsSettings;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read as PEM certificates.
    #[error("certificate {path}: {source}")]
    Certificate {
        /// File.
        path: String,
        /// Cause.
        source: rustls_pki_types::pem::Error,
    },
    /// The key file could not be read as a PEM private key.
    #[error("private key {path}: {source}")]
    Key {
        /// File.
        path: String,
        /// Cause.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server configuration from the files in `tls`.
pub fn load_server_config(tls: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: tls.cert.display().to_string(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| TlsError::Key {
        path: tls.key.display().to_string(),
        source,
    })?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: aws_lc_rs::DEFAULT_CIPHER_SUITES.to_vec(),
        ..aws_lc_rs::default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration new handshakes use, swapped on SIGHUP.
#[derive(Debug)]
pub(crate) struct ReloadableTls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    pub(crate) fn new(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(load_server_config(&settings)?);
        Ok(Arc::new(Self { settings, current }))
    }

    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload(&self) {
        match load_server_config(&self.settings) {
            Ok(config) => {
                match self.current.write() {
                    Ok(mut guard) => *guard = config,
                    Err(poisoned) => *poisoned.into_inner() = config,
                }
                tracing::info!("tls certificate reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "tls reload failed; keeping the previous certificate")
            }
        }
    }

    /// Reloads on every SIGHUP until the process ends.
    pub(crate) fn reload_on_sighup(self: Arc<Self>) {
        tokio::spawn(async move {
            let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::error!("cannot listen for SIGHUP; tls reload disabled");
                return;
            };
            while hangups.recv().await.is_some() {
                self.reload();
            }
        });
    }
}
