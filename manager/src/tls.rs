//! The TLS side of the manager's one port.
//!
//! tonic's built-in TLS acceptor advertises only ALPN `h2`, so an HTTP/1.1 client (gRPC-Web
//! from a browser `fetch` that negotiates `http/1.1`, curl --http1.1) fails the handshake with
//! `no_application_protocol`. This acceptor offers `h2` and `http/1.1`, verifies client
//! certificates against the manager CA when presented (optional, as
//! `traceflow_pki::tonic_server_tls(.., true)`; a certificate from another CA fails the
//! handshake), and yields `tokio_rustls` streams that tonic reads peer certificates from.

use std::{io, sync::Arc, time::Duration};

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Server config: our certificate, optional client certificates from `client_ca_pem`, ALPN
/// `h2` then `http/1.1`.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<ServerConfig, TlsError> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or_else(|| TlsError::Pem("no PRIVATE KEY block".into()))?;
    let mut roots = RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| TlsError::Pem(e.to_string()))?;
        roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections on `listener` and completes their handshakes concurrently; a failed
/// handshake is logged and dropped, never ends the stream.
pub fn incoming(
    listener: TcpListener,
    config: ServerConfig,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            if tx.is_closed() {
                return;
            }
            let conn_tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "tls handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
