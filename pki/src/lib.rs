//! Certificates and TLS configuration: the one place that knows how identities are encoded.
//!
//! ```text
//!   manager CA ──signs──▶ manager server cert (SAN localhost, 127.0.0.1)
//!        │      ──signs──▶ cluster certs  (CN = cluster, OU = traceflow-cluster)   ◀─ CSR + token
//!        │      ──signs──▶ user certs     (CN = user,    OU = traceflow-user)
//!   adapter's agent CA ──▶ adapter server cert, agent certs (CN = node, OU = traceflow-agent)
//! ```
//!
//! An identity is read only from a verified peer certificate ([`peer_identity`]): the subject CN
//! names the principal, the OU says what kind of principal it is, the serial lets the manager
//! revoke one certificate without touching others.

use std::{fmt, str::FromStr};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

/// Errors creating, signing or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate signing request is not valid PEM PKCS#10: {0}")]
    InvalidCsr(String),
    #[error("certificate signing request names {found:?} but must name {expected:?}")]
    CsrNameMismatch { expected: String, found: String },
    #[error("certificate is not valid X.509: {0}")]
    InvalidCertificate(String),
    #[error("certificate has no subject common name")]
    NoCommonName,
    #[error(
        "certificate kind {0:?} is not one of traceflow-cluster, traceflow-user, traceflow-agent"
    )]
    UnknownKind(String),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("certificate lifetime {0:?} is out of range (at least 10 s, at most 3650 days)")]
    Lifetime(std::time::Duration),
}

/// What a certificate's subject is; encoded as the subject OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// An adapter speaking for the cluster named by the CN.
    Cluster,
    /// A person or program using the user-facing APIs.
    User,
    /// An agent speaking for the Node named by the CN.
    Agent,
    /// A server certificate (manager or adapter endpoint).
    Server,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Cluster => "traceflow-cluster",
            IdentityKind::User => "traceflow-user",
            IdentityKind::Agent => "traceflow-agent",
            IdentityKind::Server => "traceflow-server",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdentityKind {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "traceflow-cluster" => Ok(IdentityKind::Cluster),
            "traceflow-user" => Ok(IdentityKind::User),
            "traceflow-agent" => Ok(IdentityKind::Agent),
            "traceflow-server" => Ok(IdentityKind::Server),
            other => Err(PkiError::UnknownKind(other.to_string())),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
    /// Lower-case hex of the certificate serial.
    pub serial: String,
}

/// A certificate signed from a CSR (the private key stays with the requester).
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// Who a verified peer certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub name: String,
    pub kind: IdentityKind,
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

impl PeerIdentity {
    /// When this certificate should be renewed: once [`RENEW_AFTER_NUMERATOR`] /
    /// [`RENEW_AFTER_DENOMINATOR`] of its lifetime has passed (seconds since the Unix epoch).
    pub fn renew_at(&self) -> i64 {
        renew_at(self.not_before, self.not_after)
    }

    /// Whether the certificate has expired at `now` (seconds since the Unix epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        now >= self.not_after
    }
}

/// A leaf is renewed after 2/3 of its lifetime: a third of it remains to retry in.
pub const RENEW_AFTER_NUMERATOR: i64 = 2;
/// See [`RENEW_AFTER_NUMERATOR`].
pub const RENEW_AFTER_DENOMINATOR: i64 = 3;

/// The renewal time of a certificate valid from `not_before` to `not_after` (seconds since the
/// Unix epoch): 2/3 into its validity, counted from the moment it was issued (our leaves are
/// back-dated by [`BACKDATE`] against clock skew, which does not count as lifetime).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let issued = not_before + BACKDATE.whole_seconds();
    let lifetime = (not_after - issued).max(0);
    issued + lifetime * RENEW_AFTER_NUMERATOR / RENEW_AFTER_DENOMINATOR
}

/// A certificate authority: its certificate and the key that signs with it.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Lifetime of the leaves this CA issues ([`LEAF_VALIDITY`] unless set).
    leaf_lifetime: Duration,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// Default lifetime of leaf certificates.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
const CA_VALIDITY: Duration = Duration::days(3650);
/// Leaves start this long before they are issued, so a peer whose clock is a little behind
/// accepts them.
const BACKDATE: Duration = Duration::minutes(5);
/// The shortest leaf lifetime accepted (tests use tens of seconds).
pub const MIN_LEAF_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10);

fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, non-zero leading byte keeps the DER INTEGER exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (SerialNumber::from_slice(&bytes), hex)
}

fn leaf_params(
    common_name: &str,
    kind: IdentityKind,
    sans: &[String],
    lifetime: Duration,
) -> Result<(CertificateParams, String), PkiError> {
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, kind.as_str());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        IdentityKind::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let (serial, hex) = random_serial();
    params.serial_number = Some(serial);
    Ok((params, hex))
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial().0);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// Loads a CA from its PEM certificate and key (as stored or supplied by an operator).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
            leaf_lifetime: LEAF_VALIDITY,
        })
    }

    /// This CA issuing leaves (server, cluster, user, agent) valid for `lifetime` from now.
    ///
    /// Errors: [`PkiError::Lifetime`] below [`MIN_LEAF_LIFETIME`] or beyond the CA's own ten
    /// years.
    pub fn with_leaf_lifetime(mut self, lifetime: std::time::Duration) -> Result<Self, PkiError> {
        let d = Duration::try_from(lifetime).map_err(|_| PkiError::Lifetime(lifetime))?;
        if lifetime < MIN_LEAF_LIFETIME || d > CA_VALIDITY {
            return Err(PkiError::Lifetime(lifetime));
        }
        self.leaf_lifetime = d;
        Ok(self)
    }

    /// How long the leaves this CA issues are valid.
    pub fn leaf_lifetime(&self) -> std::time::Duration {
        std::time::Duration::try_from(self.leaf_lifetime).unwrap_or_default()
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for the given DNS names and IP addresses, valid [`LEAF_VALIDITY`]
    /// whatever the leaf lifetime (servers issue theirs at every start; nothing renews them).
    pub fn issue_server(
        &self,
        common_name: &str,
        sans: &[String],
    ) -> Result<CertifiedKey, PkiError> {
        self.issue_for(common_name, IdentityKind::Server, sans, LEAF_VALIDITY)
    }

    /// A certificate and fresh key for `common_name` of the given kind.
    pub fn issue(
        &self,
        common_name: &str,
        kind: IdentityKind,
        sans: &[String],
    ) -> Result<CertifiedKey, PkiError> {
        self.issue_for(common_name, kind, sans, self.leaf_lifetime)
    }

    fn issue_for(
        &self,
        common_name: &str,
        kind: IdentityKind,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let (params, serial) = leaf_params(common_name, kind, sans, lifetime)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// Signs a CSR whose subject CN must be `expected_name`; the certificate's subject is rebuilt
    /// here (CN and OU), so nothing else the requester put in the CSR is trusted.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected_name: &str,
        kind: IdentityKind,
    ) -> Result<IssuedCertificate, PkiError> {
        let found = csr_common_name(csr_pem)?;
        if found != expected_name {
            return Err(PkiError::CsrNameMismatch {
                expected: expected_name.to_string(),
                found,
            });
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let (params, serial) = leaf_params(expected_name, kind, &[], self.leaf_lifetime)?;
        let not_after = params.not_after.unix_timestamp();
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            serial,
            not_after,
        })
    }
}

fn csr_common_name(csr_pem: &str) -> Result<String, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| PkiError::InvalidCsr(format!("bad signature: {e}")))?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(PkiError::NoCommonName)?;
    Ok(cn.to_string())
}

/// A fresh key and a CSR for `common_name`, both PEM: `(csr_pem, key_pem)`.
pub fn generate_csr(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory (mode 0600
/// when `private`, for keys), synced, then renamed over `path`, so a reader (or a restart
/// after a crash) sees the old file or the new one, never a part. The temporary name is unique
/// per process and call.
pub fn write_file_atomic(
    path: &std::path::Path,
    contents: &str,
    private: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the identity of a peer from its (already verified) DER leaf certificate.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(PkiError::NoCommonName)?
        .to_string();
    let kind = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .ok_or_else(|| PkiError::UnknownKind(String::new()))?
        .parse()?;
    let serial = cert
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(PeerIdentity {
        name,
        kind,
        serial,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Reads the identity of the first certificate in a PEM bundle.
pub fn pem_identity(cert_pem: &str) -> Result<PeerIdentity, PkiError> {
    let der = first_cert_der(cert_pem)?;
    peer_identity(&der)
}

fn first_cert_der(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let mut reader = cert_pem.as_bytes();
    rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| PkiError::Pem("no CERTIFICATE block".into()))?
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::Pem(e.to_string()))
}

/// tonic server TLS: our certificate, and client certificates verified against `client_ca_pem`.
/// With `client_auth_optional`, peers without a certificate complete the handshake and each RPC
/// decides (registration and bearer tokens need that); a certificate from another CA is always
/// refused during the handshake.
pub fn tonic_server_tls(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
    client_auth_optional: bool,
) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(tonic::transport::Certificate::from_pem(client_ca_pem))
        .client_auth_optional(client_auth_optional)
}

/// tonic client TLS trusting only `ca_pem`, presenting `identity` (cert, key) when given.
pub fn tonic_client_tls(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    server_name: &str,
) -> tonic::transport::ClientTlsConfig {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name(server_name);
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    tls
}

/// The verified identity of a tonic request's peer, if it presented a client certificate.
pub fn request_identity<T>(request: &tonic::Request<T>) -> Option<Result<PeerIdentity, PkiError>> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    Some(peer_identity(leaf.as_ref()))
}

/// A rustls server config for non-gRPC TLS endpoints (the lab's Kubernetes API).
pub fn rustls_server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, PkiError> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?
        .ok_or_else(|| PkiError::Pem("no PRIVATE KEY block".into()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Pem(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PkiError::Pem(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_round_trip_carries_identity() -> Result<(), PkiError> {
        let ca = CertificateAuthority::generate("test ca")?;
        let (csr, _key) = generate_csr("cluster-a")?;
        let issued = ca.sign_csr(&csr, "cluster-a", IdentityKind::Cluster)?;
        let id = pem_identity(&issued.cert_pem)?;
        assert_eq!(id.name, "cluster-a");
        assert_eq!(id.kind, IdentityKind::Cluster);
        assert_eq!(id.serial, issued.serial);
        Ok(())
    }

    #[test]
    fn csr_for_another_name_is_refused() -> Result<(), PkiError> {
        let ca = CertificateAuthority::generate("test ca")?;
        let (csr, _key) = generate_csr("cluster-b")?;
        let err = ca.sign_csr(&csr, "cluster-a", IdentityKind::Cluster);
        assert!(matches!(err, Err(PkiError::CsrNameMismatch { .. })));
        Ok(())
    }

    #[test]
    fn ca_reloads_from_pem_and_signs() -> Result<(), PkiError> {
        let ca = CertificateAuthority::generate("test ca")?;
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem())?;
        let leaf = again.issue("alice", IdentityKind::User, &[])?;
        assert_eq!(pem_identity(&leaf.cert_pem)?.kind, IdentityKind::User);
        Ok(())
    }

    #[test]
    fn leaf_lifetime_is_configurable_and_renewal_is_at_two_thirds() -> Result<(), PkiError> {
        let ca = CertificateAuthority::generate("test ca")?
            .with_leaf_lifetime(std::time::Duration::from_secs(30))?;
        let (csr, _key) = generate_csr("n1")?;
        let issued = ca.sign_csr(&csr, "n1", IdentityKind::Agent)?;
        let id = pem_identity(&issued.cert_pem)?;
        assert_eq!(id.not_after, issued.not_after);
        let issued_at = id.not_before + 300;
        assert_eq!(id.not_after - issued_at, 30, "{id:?}");
        assert_eq!(id.renew_at(), issued_at + 20);
        let leaf = ca.issue("n2", IdentityKind::Agent, &[])?;
        let id = pem_identity(&leaf.cert_pem)?;
        assert_eq!(id.not_after - id.not_before, 330);
        assert!(matches!(
            CertificateAuthority::generate("x")?
                .with_leaf_lifetime(std::time::Duration::from_secs(1)),
            Err(PkiError::Lifetime(_))
        ));
        Ok(())
    }

    #[test]
    fn garbage_csr_is_an_error_not_a_panic() {
        let ca = CertificateAuthority::generate("test ca");
        let Ok(ca) = ca else { panic!("ca") };
        assert!(matches!(
            ca.sign_csr("not a csr", "x", IdentityKind::Cluster),
            Err(PkiError::InvalidCsr(_))
        ));
    }
}
