//! The verbs, by domain: [`trace`] (traceflow, get, list, watch, delete, retrace), [`fleet`]
//! (cluster list|get, pods, services, nodes, namespaces, version) and [`config`] (contexts).
//! Each prints to stdout; errors are [`CliError`]s whose [`CliError::exit_code`] is the
//! process's exit code.

pub mod config;
pub mod fleet;
pub mod trace;

use crate::{client::ClientError, config::ConfigError, flow::FlowError, spec::SpecError};

/// Exit code of a trace that ran and did not succeed.
pub const EXIT_TRACE_FAILED: u8 = 1;
/// Exit code of a usage, spec, config or connection problem.
pub const EXIT_USAGE: u8 = 2;

/// Errors a user sees; each says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("failed to parse flow: {0}")]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{action}: {} ({:?}){}", .status.message(), .status.code(), hint(.status.code()))]
    Rpc {
        action: &'static str,
        status: tonic::Status,
    },
    #[error("Traceflow {name} failed: {reason}")]
    TraceFailed { name: String, reason: String },
    #[error("timeout waiting for Traceflow done")]
    WaitTimeout,
    #[error("{0}")]
    Usage(String),
    #[error("rendering output: {0}")]
    Render(#[from] serde_json::Error),
}

/// What to do about an RPC error, by its code.
fn hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unavailable => {
            "; is the manager running at the context's server? `tfctl config get-contexts` shows it"
        }
        tonic::Code::Unauthenticated => {
            "; the context's certificate or token was not accepted: ask an admin for a new one"
        }
        tonic::Code::PermissionDenied => "; ask an admin for a role that allows this",
        _ => "",
    }
}

impl CliError {
    /// 1 when a trace ran and did not succeed, 2 for everything else (usage, invalid spec,
    /// config, connection and other RPC errors).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::TraceFailed { .. } | CliError::WaitTimeout => EXIT_TRACE_FAILED,
            _ => EXIT_USAGE,
        }
    }
}

/// Maps a gRPC status to [`CliError::Rpc`] for `action`.
pub fn rpc(action: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { action, status }
}

/// The cluster to use: the flag, else the context's default, else a usage error.
pub fn cluster_or_default(flag: Option<String>, default: Option<&str>) -> Result<String, CliError> {
    flag.filter(|c| !c.is_empty())
        .or_else(|| default.map(str::to_string))
        .ok_or_else(|| {
            CliError::Usage(
                "no cluster: pass --cluster C, or set a default with `tfctl config set-context NAME --cluster C`"
                    .into(),
            )
        })
}
