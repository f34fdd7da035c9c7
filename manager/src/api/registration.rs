//! Cluster registration: bootstrap tokens and `RegistrationService.Register`.
//!
//! Contract: a bootstrap token is single-use, expiring and bound to one cluster name; only its
//! SHA-256 is stored. Register turns token + CSR into a certificate with CN = cluster, OU
//! traceflow-cluster, and makes that certificate's serial the only one the cluster may use.
//! A cluster registered with a live certificate must be deregistered before another
//! registration. Every attempt, accepted or refused, is in the audit log.

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use traceflow_core::{Invalid, naming};
use traceflow_pki::IdentityKind;
use traceflow_proto::v1 as pb;

use super::{
    Ctx,
    error::{ApiError, ApiResult},
    new_secret,
};
use crate::store::{
    AuditEvent, ClusterRecord, Store, TokenKind, TokenRecord, hash_secret, now_micros,
};

/// Default lifetime of a bootstrap token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// RFC 3339 (seconds) of microseconds since the epoch.
pub fn rfc3339(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Mints a bootstrap token for `cluster` valid for `ttl`; returns `(token, expires_micros)`.
/// The write is durable only after the caller's flush.
pub fn mint_bootstrap_token(
    store: &Store,
    cluster: &str,
    ttl: Duration,
    actor: &str,
) -> Result<(String, i64), ApiError> {
    naming::check_cluster("cluster", cluster)?;
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
    store.audit(&AuditEvent {
        micros: now,
        actor: actor.to_string(),
        action: "token-create".into(),
        subject: cluster.to_string(),
        detail: format!("bootstrap token expiring {}", rfc3339(expires)),
    })?;
    Ok((token, expires))
}

/// The RegistrationService implementation.
#[derive(Clone, Debug)]
pub struct RegistrationSvc {
    pub ctx: Ctx,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

impl RegistrationSvc {
    async fn register(&self, req: pb::RegisterRequest) -> ApiResult<pb::RegisterResponse> {
        let cluster = req.cluster.clone();
        let result = self.try_register(req).await;
        let (action, detail) = match &result {
            Ok(_) => ("register", "registered".to_string()),
            Err(e) => ("register-refused", e.to_string()),
        };
        let event = AuditEvent {
            micros: now_micros(),
            actor: "anonymous".into(),
            action: action.into(),
            subject: cluster.clone(),
            detail,
        };
        self.ctx.store.audit(&event)?;
        self.ctx.store.durable().await?;
        match &result {
            Ok(_) => tracing::info!(cluster = %cluster, "cluster registered"),
            Err(error) => tracing::warn!(cluster = %cluster, %error, "registration refused"),
        }
        result
    }

    async fn try_register(&self, req: pb::RegisterRequest) -> ApiResult<pb::RegisterResponse> {
        let pb::RegisterRequest {
            cluster,
            token,
            csr_pem,
        } = req;
        naming::check_cluster("cluster", &cluster)?;
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
        let hash = hash_secret(&token);
        let store = &self.ctx.store;
        let rec = store
            .token(&hash)?
            .filter(|r| r.kind == TokenKind::Bootstrap)
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "bootstrap token is not known to this manager; mint one with traceflow-manager token create --cluster NAME".into(),
                )
            })?;
        check_token(&rec, &cluster, now_micros())?;
        if let Some(existing) = store.cluster(&cluster)?
            && existing.certificate_not_after > now_micros() / 1_000_000
        {
            return Err(ApiError::AlreadyExists(format!(
                "cluster {cluster:?} is already registered with a live certificate (serial {}); deregister it first (ClusterService.DeregisterCluster)",
                existing.certificate_serial
            )));
        }
        let issued = self
            .ctx
            .ca
            .sign_csr(&csr_pem, &cluster, IdentityKind::Cluster)
            .map_err(|e| invalid("csr_pem", e.to_string()))?;
        // Consume the token atomically; a concurrent registration with it loses here.
        let before = store.use_token(&hash, now_micros())?.ok_or_else(|| {
            ApiError::Unauthenticated("bootstrap token is not known to this manager".into())
        })?;
        check_token(&before, &cluster, now_micros())?;
        let not_after = traceflow_pki::pem_identity(&issued.cert_pem)
            .map(|id| id.not_after)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        store.put_cluster(&ClusterRecord {
            name: cluster.clone(),
            certificate_serial: issued.serial.clone(),
            certificate_not_after: not_after,
            registered_micros: now_micros(),
            last_heartbeat_micros: 0,
        })?;
        Ok(pb::RegisterResponse {
            certificate_pem: issued.cert_pem,
            ca_pem: self.ctx.ca.cert_pem().to_string(),
        })
    }
}

/// Whether bootstrap token `rec` may register `cluster` at `now`.
pub fn check_token(rec: &TokenRecord, cluster: &str, now: i64) -> ApiResult<()> {
    if rec.subject != cluster {
        return Err(ApiError::PermissionDenied(format!(
            "bootstrap token was minted for cluster {:?}, not {cluster:?}",
            rec.subject
        )));
    }
    if rec.used_micros != 0 {
        return Err(ApiError::Unauthenticated(format!(
            "bootstrap token was already used (at {}); mint a new one with traceflow-manager token create --cluster {cluster}",
            rfc3339(rec.used_micros)
        )));
    }
    if rec.expires_micros != 0 && rec.expires_micros <= now {
        return Err(ApiError::Unauthenticated(format!(
            "bootstrap token expired at {}; mint a new one with traceflow-manager token create --cluster {cluster}",
            rfc3339(rec.expires_micros)
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::registration_service_server::RegistrationService for RegistrationSvc {
    #[tracing::instrument(skip_all, name = "register", fields(cluster = %request.get_ref().cluster))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(
            RegistrationSvc::register(self, request.into_inner()).await?,
        ))
    }
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
}
