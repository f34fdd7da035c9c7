//! Who is calling, and may they: identities from verified client certificates or bearer tokens,
//! roles from the store.
//!
//! ```text
//!   request ──▶ peer cert (OU traceflow-user → user, role from store, serial must be its one;
//!                          OU traceflow-cluster → cluster, serial must be the current one)
//!           └─▶ or `authorization: Bearer <token>` (sha256 lookup) → user
//!   then Role check: view < edit < admin
//! ```
//!
//! Contract: every RPC except `RegistrationService.Register` and `grpc.health.v1` passes through
//! [`Authenticator::require`] (users) or [`Authenticator::cluster`] (adapters).

use std::fmt;

use traceflow_pki::IdentityKind;
use traceflow_proto::v1 as pb;

use crate::store::{Store, StoreError, TokenKind, hash_secret, now_micros};

/// A user's role; each includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    View,
    Edit,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Edit => "edit",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "view" => Some(Role::View),
            "edit" => Some(Role::Edit),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn from_pb(r: i32) -> Option<Role> {
        match pb::Role::try_from(r).ok()? {
            pb::Role::View => Some(Role::View),
            pb::Role::Edit => Some(Role::Edit),
            pb::Role::Admin => Some(Role::Admin),
            pb::Role::Unspecified => None,
        }
    }

    pub fn to_pb(self) -> pb::Role {
        match self {
            Role::View => pb::Role::View,
            Role::Edit => pb::Role::Edit,
            Role::Admin => pb::Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User { name: String, role: Role },
    Cluster { name: String, serial: String },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::User { name, .. } | Principal::Cluster { name, .. } => name,
        }
    }
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: present a client certificate signed by the manager's CA, or an 'authorization: Bearer <token>' header"
    )]
    NoCredentials,
    #[error("client certificate is not usable: {0}")]
    BadCertificate(String),
    #[error("user {0:?} is not known to this manager; ask an admin to create it")]
    UnknownUser(String),
    #[error(
        "bearer token is not valid; ask an admin for a new one (traceflow-manager user create NAME --role R --token)"
    )]
    BadToken,
    #[error(
        "certificate of cluster {0:?} is revoked or superseded; register the cluster again with a new bootstrap token"
    )]
    Revoked(String),
    #[error(
        "certificate of user {0:?} is revoked or superseded; ask an admin for a new one \
         (traceflow-manager user create NAME --role R)"
    )]
    UserCertificateRevoked(String),
    #[error("{what} requires role {needed}; {who} has role {has}")]
    RoleTooLow {
        what: String,
        needed: Role,
        who: String,
        has: Role,
    },
    #[error(
        "{0} is only for users; a cluster certificate may only call AdapterService.Attach and \
         RegistrationService.RenewClusterCertificate"
    )]
    ClusterNotAllowed(String),
    #[error(
        "AdapterService.Attach and RegistrationService.RenewClusterCertificate require a cluster \
         certificate (OU traceflow-cluster)"
    )]
    NotACluster,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::NoCredentials
            | AuthError::BadCertificate(_)
            | AuthError::UnknownUser(_)
            | AuthError::BadToken
            | AuthError::Revoked(_)
            | AuthError::UserCertificateRevoked(_) => tonic::Status::unauthenticated(msg),
            AuthError::RoleTooLow { .. }
            | AuthError::ClusterNotAllowed(_)
            | AuthError::NotACluster => tonic::Status::permission_denied(msg),
            AuthError::Store(_) => tonic::Status::internal(msg),
        }
    }
}

/// Checks identities and roles against the store.
#[derive(Clone, Debug)]
pub struct Authenticator {
    store: Store,
}

fn bearer(md: &tonic::metadata::MetadataMap) -> Option<String> {
    let v = md.get("authorization")?.to_str().ok()?;
    let rest = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(rest.trim().to_string())
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Authenticator { store }
    }

    /// The caller's identity, from its verified certificate or else its bearer token.
    pub fn identify<T>(&self, req: &tonic::Request<T>) -> Result<Principal, AuthError> {
        if let Some(id) = traceflow_pki::request_identity(req) {
            let id = id.map_err(|e| AuthError::BadCertificate(e.to_string()))?;
            return match id.kind {
                IdentityKind::User => {
                    let user = self
                        .store
                        .user(&id.name)?
                        .ok_or_else(|| AuthError::UnknownUser(id.name.clone()))?;
                    if user.certificate_serial != id.serial {
                        return Err(AuthError::UserCertificateRevoked(id.name));
                    }
                    let role = Role::parse(&user.role).unwrap_or(Role::View);
                    Ok(Principal::User {
                        name: id.name,
                        role,
                    })
                }
                IdentityKind::Cluster => {
                    let current = self.store.cluster(&id.name)?;
                    match current {
                        Some(c) if c.certificate_serial == id.serial => Ok(Principal::Cluster {
                            name: id.name,
                            serial: id.serial,
                        }),
                        _ => Err(AuthError::Revoked(id.name)),
                    }
                }
                other => Err(AuthError::BadCertificate(format!(
                    "certificates of kind {other} cannot call the manager"
                ))),
            };
        }
        if let Some(token) = bearer(req.metadata()) {
            if token.len() > traceflow_core::limits::MAX_TOKEN_LEN {
                return Err(AuthError::BadToken);
            }
            let rec = self
                .store
                .token(&hash_secret(&token))?
                .ok_or(AuthError::BadToken)?;
            // Every token minted now has an expiry; 0 is only found on tokens minted before
            // expiry existed (re-issue those).
            if rec.kind != TokenKind::User
                || (rec.expires_micros != 0 && rec.expires_micros < now_micros())
            {
                return Err(AuthError::BadToken);
            }
            let user = self
                .store
                .user(&rec.subject)?
                .ok_or_else(|| AuthError::UnknownUser(rec.subject.clone()))?;
            let role = Role::parse(&user.role).unwrap_or(Role::View);
            return Ok(Principal::User {
                name: rec.subject,
                role,
            });
        }
        Err(AuthError::NoCredentials)
    }

    /// A user with at least role `needed`; `what` names the RPC in the refusal.
    pub fn require<T>(
        &self,
        req: &tonic::Request<T>,
        needed: Role,
        what: &str,
    ) -> Result<Principal, AuthError> {
        match self.identify(req)? {
            Principal::Cluster { .. } => Err(AuthError::ClusterNotAllowed(what.to_string())),
            Principal::User { name, role } if role < needed => Err(AuthError::RoleTooLow {
                what: what.to_string(),
                needed,
                who: format!("user {name:?}"),
                has: role,
            }),
            p => Ok(p),
        }
    }

    /// The cluster whose current certificate the caller presented.
    pub fn cluster<T>(&self, req: &tonic::Request<T>) -> Result<(String, String), AuthError> {
        match self.identify(req)? {
            Principal::Cluster { name, serial } => Ok((name, serial)),
            Principal::User { .. } => Err(AuthError::NotACluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::View < Role::Edit && Role::Edit < Role::Admin);
        assert_eq!(Role::parse("edit"), Some(Role::Edit));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::from_pb(pb::Role::Admin as i32), Some(Role::Admin));
        assert_eq!(Role::from_pb(0), None);
    }

    #[test]
    fn bearer_header_is_parsed() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&md), None);
        if let Ok(v) = "Bearer abc".parse() {
            md.insert("authorization", v);
        }
        assert_eq!(bearer(&md).as_deref(), Some("abc"));
    }

    #[test]
    fn denial_says_which_role() {
        let e = AuthError::RoleTooLow {
            what: "TraceflowService.CreateTraceflow".into(),
            needed: Role::Edit,
            who: "user \"v\"".into(),
            has: Role::View,
        };
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(
            s.message().contains("requires role edit"),
            "{}",
            s.message()
        );
    }
}
