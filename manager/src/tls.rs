//! The TLS side of the manager's one port.
//!
//! tonic's built-in TLS acceptor advertises only ALPN `h2`, so an HTTP/1.1 client (gRPC-Web
//! from a browser `fetch` that negotiates `http/1.1`, curl --http1.1) fails the handshake with
//! `no_application_protocol`. This acceptor offers `h2` and `http/1.1`, verifies client
//! certificates against the manager CA when presented (optional, as
//! `traceflow_pki::tonic_server_tls(.., true)`; a certificate from another CA fails the
//! handshake), and yields `tokio_rustls` streams that tonic reads peer certificates from.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

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

/// How many connections may be open at once, in all and per source address. A connection
/// holds its slot from `accept` (so half-done handshakes count) until tonic drops it.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    max: usize,
    per_address: usize,
    open: Arc<Mutex<OpenConnections>>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    pub fn new(max: usize, per_address: usize) -> Self {
        ConnectionLimits {
            max: max.max(1),
            per_address: per_address.max(1),
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or None when either bound is reached.
    fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().ok()?;
        let from_ip = open.by_address.get(&ip).copied().unwrap_or(0);
        if open.total >= self.max || from_ip >= self.per_address {
            return None;
        }
        open.total += 1;
        open.by_address.insert(ip, from_ip + 1);
        Some(ConnectionSlot {
            open: self.open.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().map(|o| o.total).unwrap_or(0)
    }
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
struct ConnectionSlot {
    open: Arc<Mutex<OpenConnections>>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_address.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.by_address.remove(&self.ip);
                }
            }
        }
    }
}

/// A TLS connection that holds its [`ConnectionSlot`] for as long as it lives.
#[derive(Debug)]
pub struct AdmittedStream {
    tls: TlsStream<TcpStream>,
    _slot: ConnectionSlot,
}

impl Connected for AdmittedStream {
    // The same information as a bare TLS stream, so tonic's `peer_certs()` and
    // `remote_addr()` read it as before.
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// Accepts connections on `listener` within `limits` and completes their handshakes
/// concurrently; a refused connection is closed at once (and counted), a failed handshake is
/// logged and dropped; neither ends the stream.
pub fn incoming(
    listener: TcpListener,
    config: ServerConfig,
    limits: ConnectionLimits,
) -> ReceiverStream<Result<AdmittedStream, io::Error>> {
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
            let Some(slot) = limits.admit(peer.ip()) else {
                crate::telemetry::global().refused("connection-limit");
                tracing::debug!(%peer, "connection refused: too many open connections");
                drop(tcp);
                continue;
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
                        let _ = conn_tx.send(Ok(AdmittedStream { tls, _slot: slot })).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_address_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = limits.admit(a);
        let a2 = limits.admit(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(limits.admit(a).is_none(), "third from one address");
        let b1 = limits.admit(b);
        assert!(b1.is_some());
        assert!(limits.admit(b).is_none(), "fourth in all");
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(
            limits.admit(a).is_some(),
            "a slot freed by a closed connection"
        );
        drop((a2, b1));
        assert_eq!(limits.open(), 0);
        assert!(
            limits
                .open
                .lock()
                .map(|o| o.by_address.is_empty())
                .unwrap_or(false)
        );
    }
}
