//! A tonic channel to the manager from a [`Config`]: TLS trusting the config's CA, the client
//! certificate if any, and `authorization: Bearer <token>` on every call if a token is set.

use tonic::{
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use traceflow_proto::v1::{
    cluster_service_client::ClusterServiceClient, traceflow_service_client::TraceflowServiceClient,
};

use crate::config::Config;

/// Adds the bearer token, when configured.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Chan = InterceptedService<Channel, Auth>;

/// Connection problems, with the server named.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the manager at {server} (context {context}): {detail}; check that it runs and that the context's server and ca are right (`tfctl config get-contexts`)"
    )]
    Connect {
        server: String,
        context: String,
        detail: String,
    },
    #[error(
        "the token in the config is not a valid header value: set it again with `tfctl config set-context NAME --token TOKEN`"
    )]
    BadToken,
}

/// The manager's clients.
pub struct Clients {
    pub traces: TraceflowServiceClient<Chan>,
    pub clusters: ClusterServiceClient<Chan>,
}

/// An error and its sources, `: `-separated (tonic's own text is only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Connects to the manager the config names.
pub async fn connect(config: &Config) -> Result<Clients, ClientError> {
    let err = |e: tonic::transport::Error| ClientError::Connect {
        server: config.server.clone(),
        context: config.context.clone(),
        detail: chain(&e),
    };
    let tls = traceflow_pki::tonic_client_tls(
        &config.ca_pem,
        config
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_str(), k.as_str())),
        &config.server_name,
    );
    let channel = tonic::transport::Endpoint::from_shared(config.server.clone())
        .map_err(err)?
        .tls_config(tls)
        .map_err(err)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(err)?;
    let auth = match &config.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::BadToken)?,
        ),
        None => None,
    };
    Ok(Clients {
        traces: TraceflowServiceClient::with_interceptor(channel.clone(), Auth(auth.clone())),
        clusters: ClusterServiceClient::with_interceptor(channel, Auth(auth)),
    })
}
