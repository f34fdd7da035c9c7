//! `UserService` (admin only): users, their roles, and their credentials.
//!
//! Contract: CreateUser either signs the caller's CSR (CN must equal the user name) into a
//! client certificate with OU traceflow-user, whose serial is then the user's only valid one,
//! or issues an expiring bearer token stored only as its SHA-256. Creating an existing user
//! updates its role and issues another credential (a new certificate revokes the old one).
//! DeleteUser removes the user and its bearer tokens, so its certificate stops working;
//! RevokeToken removes one bearer token.

use std::time::Duration;
use tonic::{Request, Response, Status};

use traceflow_core::{
    Invalid,
    limits::{MAX_CSR_LEN, check_len},
    naming,
};
use traceflow_pki::IdentityKind;
use traceflow_proto::v1 as pb;

use super::{
    Ctx,
    access::caller,
    error::{ApiError, ApiResult},
};
use crate::{
    accounts::{self, Credential},
    auth::{Principal, Role},
    store::UserRecord,
};

/// The UserService implementation.
#[derive(Clone, Debug)]
pub struct UserSvc {
    pub ctx: Ctx,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

fn user_pb(u: &UserRecord) -> pb::User {
    pb::User {
        name: u.name.clone(),
        role: Role::parse(&u.role).map(|r| r.to_pb()).unwrap_or_default() as i32,
        created_micros: u.created_micros,
    }
}

impl UserSvc {
    async fn create(
        &self,
        actor: &str,
        req: pb::CreateUserRequest,
    ) -> ApiResult<pb::CreateUserResponse> {
        let pb::CreateUserRequest {
            name,
            role,
            bearer_token,
            csr_pem,
            token_ttl_seconds,
        } = req;
        let role = Role::from_pb(role)
            .ok_or_else(|| invalid("role", "is required: view, edit or admin"))?;
        naming::check_cluster("name", &name)?;
        check_len("csr_pem", &csr_pem, MAX_CSR_LEN)?;
        let limits = &self.ctx.guard.limits;
        let (credential, certificate_pem) = if bearer_token {
            let ttl = match token_ttl_seconds {
                0 => limits.bearer_token_ttl,
                n if n < 0 => return Err(invalid("token_ttl_seconds", "must not be negative")),
                n => Duration::from_secs(n as u64),
            };
            if ttl > limits.bearer_token_max_ttl {
                return Err(invalid(
                    "token_ttl_seconds",
                    format!(
                        "is longer than this manager's maximum of {}",
                        humantime::format_duration(limits.bearer_token_max_ttl)
                    ),
                ));
            }
            (Credential::Bearer { ttl }, String::new())
        } else {
            if csr_pem.is_empty() {
                return Err(invalid(
                    "csr_pem",
                    "is required unless bearer_token is set (PEM PKCS#10, CN = user name)",
                ));
            }
            let issued = self
                .ctx
                .ca
                .sign_csr(&csr_pem, &name, IdentityKind::User)
                .map_err(|e| invalid("csr_pem", e.to_string()))?;
            (
                Credential::Certificate {
                    serial: issued.serial,
                },
                issued.cert_pem,
            )
        };
        let (user, token) = accounts::upsert_user(&self.ctx.store, &name, role, credential, actor)?;
        self.ctx.store.durable().await?;
        tracing::info!(user = %name, role = %role, actor, "user created");
        let token = token.unwrap_or_default();
        Ok(pb::CreateUserResponse {
            user: Some(user_pb(&user)),
            token: token.secret,
            certificate_pem,
            ca_pem: self.ctx.ca.cert_pem().to_string(),
            token_id: token.id,
            token_expires_micros: token.expires_micros,
        })
    }

    async fn revoke(&self, actor: &str, id: &str) -> ApiResult<()> {
        accounts::revoke_token(&self.ctx.store, id, actor)?;
        self.ctx.store.durable().await?;
        tracing::info!(token_id = id, actor, "bearer token revoked");
        Ok(())
    }

    async fn delete(&self, actor: &str, name: &str) -> ApiResult<()> {
        accounts::delete_user(&self.ctx.store, name, actor)?;
        self.ctx.store.durable().await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserSvc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let who = caller(&request)?;
        Ok(Response::new(
            self.create(who.name(), request.into_inner()).await?,
        ))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        caller(&request)?;
        let users = self
            .ctx
            .store
            .users()
            .map_err(ApiError::from)?
            .iter()
            .map(user_pb)
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let who = caller(&request)?;
        let Principal::User { name, role } = who else {
            return Err(Status::permission_denied(
                "UserService.WhoAmI is for users; a cluster's identity is its certificate",
            ));
        };
        let created_micros = self
            .ctx
            .store
            .users()
            .map_err(ApiError::from)?
            .iter()
            .find(|u| u.name == name)
            .map_or(0, |u| u.created_micros);
        Ok(Response::new(pb::User {
            name,
            role: role.to_pb() as i32,
            created_micros,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let who = caller(&request)?;
        self.revoke(who.name(), &request.into_inner().token_id)
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let who = caller(&request)?;
        self.delete(who.name(), &request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }
}
