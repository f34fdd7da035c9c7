//! The one place where failures of the API become gRPC statuses.

use traceflow_core::Invalid;

use crate::{
    accounts::AccountError, auth::AuthError, store::StoreError, traces::workflow::TraceError,
};

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bad credential in the request body (bootstrap token).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-source or per-user limit was reached; retrying later succeeds.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(i) => ApiError::Invalid(i),
            AccountError::Unauthenticated(m) => ApiError::Unauthenticated(m),
            AccountError::PermissionDenied(m) => ApiError::PermissionDenied(m),
            AccountError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            AccountError::NotFound(m) => ApiError::NotFound(m),
            AccountError::Internal(m) => ApiError::Internal(m),
            AccountError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Invalid(i) => ApiError::Invalid(i),
            TraceError::NotFound(m) => ApiError::NotFound(m),
            TraceError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            TraceError::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            TraceError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::Invalid(_) => tonic::Status::invalid_argument(msg),
            ApiError::NotFound(_) => tonic::Status::not_found(msg),
            ApiError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            ApiError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
            ApiError::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            ApiError::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
            ApiError::Auth(a) => a.into(),
            ApiError::Store(s) if s.unwritable().is_some() => {
                let why = s.unwritable().unwrap_or_default();
                tracing::error!(error = %msg, "the data directory cannot be written");
                // Nothing of this call was stored; what was stored before is intact.
                tonic::Status::unavailable(format!(
                    "the manager cannot write its data directory ({why}); nothing was changed: an operator must free space there (or make it writable), then restart the manager"
                ))
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                tonic::Status::internal(msg)
            }
        }
    }
}

/// Result of an API call.
pub type ApiResult<T> = Result<T, ApiError>;
