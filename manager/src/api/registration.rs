//! `RegistrationService.Register`: the tonic edge of [`accounts::register`] (token + CSR → a
//! certificate with CN = cluster, OU traceflow-cluster, whose serial is then the only one the
//! cluster may use). Every attempt, accepted or refused, is in the audit log.

use tonic::{Request, Response, Status};
use traceflow_proto::v1 as pb;

use super::{Ctx, error::ApiResult};
use crate::{
    accounts,
    store::{AuditEvent, now_micros},
};

/// The RegistrationService implementation.
#[derive(Clone, Debug)]
pub struct RegistrationSvc {
    pub ctx: Ctx,
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
        let certificate_pem =
            accounts::register(&self.ctx.store, &self.ctx.ca, &cluster, &token, &csr_pem)?;
        Ok(pb::RegisterResponse {
            certificate_pem,
            ca_pem: self.ctx.ca.cert_pem().to_string(),
        })
    }
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
