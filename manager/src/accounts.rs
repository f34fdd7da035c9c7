//! Who may speak to the manager, free of tonic: users (with a role and optional bearer
//! tokens), bootstrap tokens, and cluster registration (token + CSR → the cluster's only
//! certificate). The API edge and the command line (`ops`) both call these.
//!
//! Contract: a bootstrap token is single-use, expiring and bound to one cluster name; only a
//! secret's SHA-256 is stored. A cluster registered with a live certificate must be
//! deregistered before another registration. Every change is audited; writes are durable only
//! after the caller's flush.

use std::time::{Duration, UNIX_EPOCH};

use traceflow_core::{Invalid, naming};
use traceflow_pki::{CertificateAuthority, IdentityKind};

use crate::{
    auth::Role,
    store::{
        AuditEvent, ClusterRecord, Store, StoreError, TokenKind, TokenRecord, UserRecord,
        hash_secret, now_micros,
    },
};

/// Default lifetime of a bootstrap token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime of a bootstrap token.
pub const MAX_BOOTSTRAP_TOKEN_TTL: Duration =
    Duration::from_secs(traceflow_core::limits::MAX_BOOTSTRAP_TOKEN_TTL_SECS);

/// Why an account operation was refused. The API maps each kind to one status code.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A bad credential presented in the request (a bootstrap token).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> AccountError {
    AccountError::Invalid(Invalid::new(field, message))
}

/// Random secret with a readable prefix: `<prefix>-<64 hex>`.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}-{}", hex::encode(bytes))
}

/// RFC 3339 (seconds) of microseconds since the epoch.
pub fn rfc3339(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn audit(
    store: &Store,
    actor: &str,
    action: &str,
    subject: &str,
    detail: String,
) -> Result<(), StoreError> {
    store.audit(&AuditEvent {
        micros: now_micros(),
        actor: actor.to_string(),
        action: action.into(),
        subject: subject.to_string(),
        detail,
    })
}

/// The credential a user is given.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client certificate with this serial (already signed): it replaces the user's previous
    /// certificate, which stops working.
    Certificate { serial: String },
    /// A new bearer token that expires after `ttl`; the user's certificate is kept.
    Bearer { ttl: Duration },
}

/// A bearer token as issued: the secret (shown once), its id and expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuedToken {
    pub secret: String,
    /// Names the token for [`revoke_token`]: a prefix of its hash, not a secret.
    pub id: String,
    pub expires_micros: i64,
}

/// Length of a token id (hex characters of the secret's SHA-256).
pub const TOKEN_ID_LEN: usize = 16;

/// Stores `name` with `role` (keeping its creation time) and `credential`; returns the user
/// and, for a bearer credential, the token.
pub fn upsert_user(
    store: &Store,
    name: &str,
    role: Role,
    credential: Credential,
    actor: &str,
) -> Result<(UserRecord, Option<IssuedToken>), AccountError> {
    naming::check_cluster("name", name)?;
    let now = now_micros();
    let existing = store.user(name)?;
    let created = existing.as_ref().map_or(now, |u| u.created_micros);
    let mut serial = existing.map(|u| u.certificate_serial).unwrap_or_default();
    let mut token = None;
    let how = match &credential {
        Credential::Certificate { serial: new } => {
            serial = new.clone();
            format!("certificate serial {new}")
        }
        Credential::Bearer { ttl } => {
            let secret = new_secret("tfu");
            let hash = hash_secret(&secret);
            let expires = now.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64);
            store.put_token(
                &hash,
                &TokenRecord {
                    kind: TokenKind::User,
                    subject: name.to_string(),
                    created_micros: now,
                    expires_micros: expires,
                    used_micros: 0,
                },
            )?;
            let id = hash[..TOKEN_ID_LEN].to_string();
            let how = format!("bearer token {id} expiring {}", rfc3339(expires));
            token = Some(IssuedToken {
                secret,
                id,
                expires_micros: expires,
            });
            how
        }
    };
    let user = UserRecord {
        name: name.to_string(),
        role: role.as_str().to_string(),
        created_micros: created,
        certificate_serial: serial,
    };
    store.put_user(&user)?;
    audit(
        store,
        actor,
        "user-create",
        name,
        format!("role {role}, {how}"),
    )?;
    Ok((user, token))
}

/// Revokes the bearer token named `id` (from [`IssuedToken::id`]).
pub fn revoke_token(store: &Store, id: &str, actor: &str) -> Result<(), AccountError> {
    if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "token_id",
            "is not a token id: use the 16 hex characters CreateUser returned",
        ));
    }
    let subject = store
        .delete_user_token_by_prefix(&id.to_ascii_lowercase())?
        .ok_or_else(|| AccountError::NotFound(format!("no bearer token with id {id}")))?;
    audit(
        store,
        actor,
        "token-revoke",
        &subject,
        format!("bearer token {id} revoked"),
    )?;
    Ok(())
}

/// Deletes user `name` and its bearer tokens.
pub fn delete_user(store: &Store, name: &str, actor: &str) -> Result<(), AccountError> {
    naming::check_cluster("name", name)?;
    if !store.delete_user(name)? {
        return Err(AccountError::NotFound(format!(
            "user {name:?} does not exist"
        )));
    }
    store.delete_user_tokens(name)?;
    audit(
        store,
        actor,
        "user-delete",
        name,
        "user and bearer tokens removed".into(),
    )?;
    Ok(())
}

/// Mints a bootstrap token for `cluster` valid for `ttl`; returns `(token, expires_micros)`.
pub fn mint_bootstrap_token(
    store: &Store,
    cluster: &str,
    ttl: Duration,
    actor: &str,
) -> Result<(String, i64), AccountError> {
    naming::check_cluster("cluster", cluster)?;
    if ttl > MAX_BOOTSTRAP_TOKEN_TTL || ttl.is_zero() {
        return Err(invalid(
            "ttl",
            format!(
                "must be more than 0 and at most {}; mint a shorter-lived token",
                humantime::format_duration(MAX_BOOTSTRAP_TOKEN_TTL)
            ),
        ));
    }
    let token = new_secret("tfb");
    let now = now_micros();
    let expires = now + ttl.as_micros() as i64;
    store.put_token(
        &hash_secret(&token),
        &TokenRecord {
            kind: TokenKind::Bootstrap,
            subject: cluster.to_string(),
            created_micros: now,
            expires_micros: expires,
            used_micros: 0,
        },
    )?;
    let detail = format!("bootstrap token expiring {}", rfc3339(expires));
    audit(store, actor, "token-create", cluster, detail)?;
    Ok((token, expires))
}

/// Whether bootstrap token `rec` may register `cluster` at `now`.
pub fn check_token(rec: &TokenRecord, cluster: &str, now: i64) -> Result<(), AccountError> {
    if rec.subject != cluster {
        return Err(AccountError::PermissionDenied(format!(
            "bootstrap token was minted for cluster {:?}, not {cluster:?}",
            rec.subject
        )));
    }
    if rec.used_micros != 0 {
        return Err(AccountError::Unauthenticated(format!(
            "bootstrap token was already used (at {}); mint a new one with traceflow-manager token create --cluster {cluster}",
            rfc3339(rec.used_micros)
        )));
    }
    if rec.expires_micros != 0 && rec.expires_micros <= now {
        return Err(AccountError::Unauthenticated(format!(
            "bootstrap token expired at {}; mint a new one with traceflow-manager token create --cluster {cluster}",
            rfc3339(rec.expires_micros)
        )));
    }
    Ok(())
}

/// Registers `cluster` with bootstrap `token` and a CSR: consumes the token and returns the
/// cluster's certificate (PEM), now the only one that may speak for it.
pub fn register(
    store: &Store,
    ca: &CertificateAuthority,
    cluster: &str,
    token: &str,
    csr_pem: &str,
) -> Result<String, AccountError> {
    naming::check_cluster("cluster", cluster)?;
    if token.is_empty() {
        return Err(invalid(
            "token",
            "is required; mint one with traceflow-manager token create --cluster NAME",
        ));
    }
    if csr_pem.is_empty() {
        return Err(invalid(
            "csr_pem",
            "is required (PEM PKCS#10, CN = cluster name)",
        ));
    }
    let hash = hash_secret(token);
    let unknown = || {
        AccountError::Unauthenticated(
            "bootstrap token is not known to this manager; mint one with traceflow-manager token create --cluster NAME".into(),
        )
    };
    let rec = store
        .token(&hash)?
        .filter(|r| r.kind == TokenKind::Bootstrap)
        .ok_or_else(unknown)?;
    check_token(&rec, cluster, now_micros())?;
    if let Some(existing) = store.cluster(cluster)?
        && existing.certificate_not_after > now_micros() / 1_000_000
    {
        return Err(AccountError::AlreadyExists(format!(
            "cluster {cluster:?} is already registered with a live certificate (serial {}); deregister it first (ClusterService.DeregisterCluster)",
            existing.certificate_serial
        )));
    }
    let issued = ca
        .sign_csr(csr_pem, cluster, IdentityKind::Cluster)
        .map_err(|e| invalid("csr_pem", e.to_string()))?;
    // Consume the token atomically; a concurrent registration with it loses here.
    let before = store.use_token(&hash, now_micros())?.ok_or_else(unknown)?;
    check_token(&before, cluster, now_micros())?;
    let not_after = traceflow_pki::pem_identity(&issued.cert_pem)
        .map(|id| id.not_after)
        .map_err(|e| AccountError::Internal(e.to_string()))?;
    store.put_cluster(&ClusterRecord {
        name: cluster.to_string(),
        certificate_serial: issued.serial.clone(),
        certificate_not_after: not_after,
        registered_micros: now_micros(),
        last_heartbeat_micros: 0,
    })?;
    Ok(issued.cert_pem)
}

/// Renews the certificate of `cluster`, whose adapter presented the current one (`serial`):
/// signs `csr_pem` (CN must be `cluster`) and makes the new serial the only valid one, so the
/// presented certificate stops working. Returns the new certificate.
///
/// Errors: `Invalid` for a bad CSR or one naming another cluster; `Unauthenticated` when
/// `serial` is no longer current (deregistered or renewed meanwhile).
pub fn renew_cluster(
    store: &Store,
    ca: &CertificateAuthority,
    cluster: &str,
    serial: &str,
    csr_pem: &str,
) -> Result<traceflow_pki::IssuedCertificate, AccountError> {
    if csr_pem.is_empty() {
        return Err(invalid(
            "csr_pem",
            "is required (PEM PKCS#10, CN = cluster name)",
        ));
    }
    let issued = ca
        .sign_csr(csr_pem, cluster, IdentityKind::Cluster)
        .map_err(|e| invalid("csr_pem", e.to_string()))?;
    if !store.replace_cluster_serial(cluster, serial, &issued.serial, issued.not_after)? {
        return Err(AccountError::Unauthenticated(format!(
            "certificate of cluster {cluster:?} is no longer current (deregistered or renewed \
             meanwhile); nothing was renewed"
        )));
    }
    audit(
        store,
        cluster,
        "renew-certificate",
        cluster,
        format!(
            "certificate serial {} replaces {serial}, valid until {}",
            issued.serial,
            rfc3339(issued.not_after.saturating_mul(1_000_000))
        ),
    )?;
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_token(subject: &str, expires: i64, used: i64) -> TokenRecord {
        TokenRecord {
            kind: TokenKind::Bootstrap,
            subject: subject.into(),
            created_micros: 0,
            expires_micros: expires,
            used_micros: used,
        }
    }

    #[test]
    fn token_rules() {
        assert!(check_token(&mk_token("a", 100, 0), "a", 50).is_ok());
        let e = check_token(&mk_token("a", 100, 0), "a", 150).map_err(|e| e.to_string());
        assert!(e.is_err_and(|m| m.contains("expired at")));
        let e = check_token(&mk_token("a", 100, 10), "a", 50).map_err(|e| e.to_string());
        assert!(e.is_err_and(|m| m.contains("already used")));
        let e = check_token(&mk_token("a", 100, 0), "b", 50).map_err(|e| e.to_string());
        assert!(e.is_err_and(|m| m.contains("minted for cluster \"a\"")));
    }

    #[test]
    fn renewal_replaces_the_serial_once_and_only_for_the_same_cluster()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("store"))?;
        let ca = CertificateAuthority::generate("test")?;
        store.put_cluster(&ClusterRecord {
            name: "a".into(),
            certificate_serial: "old".into(),
            certificate_not_after: 1,
            registered_micros: 1,
            last_heartbeat_micros: 7,
        })?;
        let (other, _) = traceflow_pki::generate_csr("b")?;
        let e = renew_cluster(&store, &ca, "a", "old", &other).map_err(|e| e.to_string());
        assert!(e.is_err_and(|m| m.contains("must name \"a\"")));
        let (csr, _) = traceflow_pki::generate_csr("a")?;
        let issued = renew_cluster(&store, &ca, "a", "old", &csr)?;
        let rec = store.cluster("a")?.ok_or("cluster gone")?;
        assert_eq!(rec.certificate_serial, issued.serial);
        assert_eq!(rec.certificate_not_after, issued.not_after);
        assert_eq!(
            rec.last_heartbeat_micros, 7,
            "the rest of the record is kept"
        );
        // The presented certificate is now superseded: renewing with it again is refused.
        assert!(matches!(
            renew_cluster(&store, &ca, "a", "old", &csr),
            Err(AccountError::Unauthenticated(_))
        ));
        store.delete_cluster("a")?;
        assert!(matches!(
            renew_cluster(&store, &ca, "a", &issued.serial, &csr),
            Err(AccountError::Unauthenticated(_))
        ));
        Ok(())
    }
}
