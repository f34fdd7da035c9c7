//! `RegistrationService.Register`: the tonic edge of [`accounts::register`] (token + CSR → a
//! certificate with CN = cluster, OU traceflow-cluster, whose serial is then the only one the
//! cluster may use). `RegistrationService.RenewClusterCertificate`: the edge of
//! [`accounts::renew_cluster`], for an adapter presenting its current certificate (the access
//! table admits only that); the new serial replaces it. Accepted registrations are audited; refused ones are counted and audited
//! once per burst ([`super::guard::Guard::refused`]), never with the request's content. Sizes
//! are checked before anything else, so a huge name costs nothing but the decode.

use tonic::{Request, Response, Status};
use traceflow_core::{
    Invalid,
    limits::{MAX_CSR_LEN, MAX_TOKEN_LEN, check_len},
    naming,
};
use traceflow_proto::v1 as pb;

use super::{
    Ctx,
    access::caller,
    error::{ApiError, ApiResult},
};
use crate::{
    accounts,
    auth::Principal,
    store::{AuditEvent, now_micros},
};

/// The request's shape, checked before any lookup: bounded sizes and a valid name.
fn check_shape(req: &pb::RegisterRequest) -> Result<(), Invalid> {
    naming::check_cluster("cluster", &req.cluster)?;
    check_len("token", &req.token, MAX_TOKEN_LEN)?;
    check_len("csr_pem", &req.csr_pem, MAX_CSR_LEN)
}

/// The RegistrationService implementation.
#[derive(Clone, Debug)]
pub struct RegistrationSvc {
    pub ctx: Ctx,
}

impl RegistrationSvc {
    async fn register(
        &self,
        source: Option<std::net::IpAddr>,
        req: pb::RegisterRequest,
    ) -> ApiResult<pb::RegisterResponse> {
        if let Err(invalid) = check_shape(&req) {
            // Nothing of the request is kept or logged: only which field was wrong.
            self.ctx
                .guard
                .refused("register", "", source, &invalid.to_string());
            self.ctx.store.durable().await?;
            tracing::debug!(%invalid, "registration refused");
            return Err(invalid.into());
        }
        let cluster = req.cluster.clone();
        let result = self.try_register(req).await;
        match &result {
            Ok(_) => {
                self.ctx.store.audit(&AuditEvent {
                    micros: now_micros(),
                    actor: "anonymous".into(),
                    action: "register".into(),
                    subject: cluster.clone(),
                    detail: "registered".into(),
                })?;
                self.ctx.store.durable().await?;
                tracing::info!(cluster = %cluster, "cluster registered");
            }
            Err(error) => {
                // The name passed check_cluster: short and plain, safe to keep.
                self.ctx
                    .guard
                    .refused("register", &cluster, source, &error.to_string());
                self.ctx.store.durable().await?;
                tracing::warn!(cluster = %cluster, %error, "registration refused");
            }
        }
        result
    }

    async fn try_register(&self, req: pb::RegisterRequest) -> ApiResult<pb::RegisterResponse> {
        let pb::RegisterRequest {
            cluster,
            token,
            csr_pem,
        } = req;
        let certificate_pem =
            accounts::register(&self.ctx.store, &self.ctx.ca, &cluster, &token, &csr_pem)?;
        Ok(pb::RegisterResponse {
            certificate_pem,
            ca_pem: self.ctx.ca.cert_pem().to_string(),
        })
    }
}

impl RegistrationSvc {
    async fn renew(
        &self,
        who: Principal,
        req: pb::RenewClusterCertificateRequest,
    ) -> ApiResult<pb::RenewClusterCertificateResponse> {
        let Principal::Cluster { name, serial } = who else {
            return Err(ApiError::PermissionDenied(
                "only a cluster certificate can renew itself".into(),
            ));
        };
        let pb::RenewClusterCertificateRequest { csr_pem } = req;
        check_len("csr_pem", &csr_pem, MAX_CSR_LEN)?;
        let result =
            accounts::renew_cluster(&self.ctx.store, &self.ctx.ca, &name, &serial, &csr_pem);
        self.ctx.store.durable().await?;
        match &result {
            Ok(issued) => tracing::info!(
                cluster = %name,
                old_serial = %serial,
                serial = %issued.serial,
                "cluster certificate renewed"
            ),
            Err(error) => {
                tracing::warn!(cluster = %name, %error, "cluster certificate renewal refused")
            }
        }
        Ok(pb::RenewClusterCertificateResponse {
            certificate_pem: result?.cert_pem,
        })
    }
}

#[tonic::async_trait]
impl pb::registration_service_server::RegistrationService for RegistrationSvc {
    #[tracing::instrument(skip_all, name = "renew_cluster_certificate")]
    async fn renew_cluster_certificate(
        &self,
        request: Request<pb::RenewClusterCertificateRequest>,
    ) -> Result<Response<pb::RenewClusterCertificateResponse>, Status> {
        let who = caller(&request)?;
        Ok(Response::new(
            RegistrationSvc::renew(self, who, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, name = "register")]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let source = request.remote_addr().map(|a| a.ip());
        Ok(Response::new(
            RegistrationSvc::register(self, source, request.into_inner()).await?,
        ))
    }
}
