//! `AgentService.Attach`: one bidirectional stream per Node, opened by the agent.
//!
//! ```text
//!  agent ──AgentMessage (hello, ports, report, failure)──▶ attach task ──▶ Agents / Coordinator
//!  agent ◀──AgentCommand (inject)──────────────────────── Agents::send ◀── Coordinator
//!  agent ◀──AgentCommand (node_state)──────────────────── Agents::send_on ◀── nodestate publisher
//! ```
//!
//! Every `AgentHello` (not `ports`) asks the [`nodestate`](crate::nodestate) publisher for a
//! replace `NodeState` on this connection; deltas follow as the inventory changes.
//!
//! The Node is the verified client certificate's CN (OU `traceflow-agent`); the hello's `node`
//! field is informational. Once the Node list has synced, a certificate for a Node the cluster
//! does not have is refused (`PERMISSION_DENIED`); before that it is accepted and logged.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use traceflow_pki::{IdentityKind, PkiError};
use traceflow_proto::v1::{self as pb, agent_message::Kind as Msg};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Agents;
use crate::{
    coordinator::CoordinatorHandle,
    inventory::{Inventory, Kind},
    nodestate::PublisherHandle,
};

/// Why an agent's stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("a client certificate from this adapter's agent CA is required")]
    NoCertificate,
    #[error("client certificate is not usable: {0}")]
    BadCertificate(#[from] PkiError),
    #[error("certificate kind {0} may not attach as an agent; use a traceflow-agent certificate")]
    NotAnAgent(IdentityKind),
    #[error("Node {0:?} is not a Node of this cluster")]
    UnknownNode(String),
}

/// The one place agent-facing errors become gRPC statuses.
impl From<AttachError> for Status {
    fn from(e: AttachError) -> Self {
        let msg = e.to_string();
        match e {
            AttachError::NoCertificate | AttachError::BadCertificate(_) => {
                Status::unauthenticated(msg)
            }
            AttachError::NotAnAgent(_) | AttachError::UnknownNode(_) => {
                Status::permission_denied(msg)
            }
        }
    }
}

/// The tonic service; cheap to clone.
#[derive(Clone)]
pub struct AgentServer {
    agents: Agents,
    inventory: Inventory,
    coordinator: CoordinatorHandle,
    nodestate: PublisherHandle,
}

impl AgentServer {
    pub fn new(
        agents: Agents,
        inventory: Inventory,
        coordinator: CoordinatorHandle,
        nodestate: PublisherHandle,
    ) -> Self {
        Self {
            agents,
            inventory,
            coordinator,
            nodestate,
        }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<String, AttachError> {
        let id = traceflow_pki::request_identity(request).ok_or(AttachError::NoCertificate)??;
        if id.kind != IdentityKind::Agent {
            return Err(AttachError::NotAnAgent(id.kind));
        }
        let index = self.inventory.read();
        if index.node(&id.name).is_none() {
            if index.is_synced(Kind::Node) {
                return Err(AttachError::UnknownNode(id.name));
            }
            warn!(node = %id.name, "agent attached before the Node list synced; accepting");
        }
        Ok(id.name)
    }
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::AgentCommand, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentServer {
    type AttachStream = CommandStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let node = self.authorize(&request).map_err(|e| {
            warn!(error = %e, "agent refused");
            Status::from(e)
        })?;
        let (conn, commands) = self.agents.register(&node);
        info!(node = %node, conn, "agent attached");
        let inbound = request.into_inner();
        let this = self.clone();
        let span = info_span!("agent", node = %node, conn);
        tokio::spawn(async move { this.read_agent(node, conn, inbound).await }.instrument(span));
        Ok(Response::new(ReceiverStream::new(commands).map(Ok).boxed()))
    }
}

impl AgentServer {
    async fn read_agent(self, node: String, conn: u64, mut inbound: Streaming<pb::AgentMessage>) {
        loop {
            match inbound.message().await {
                Ok(Some(pb::AgentMessage { kind: Some(kind) })) => {
                    self.handle(&node, conn, kind).await
                }
                Ok(Some(pb::AgentMessage { kind: None })) => debug!("empty agent message"),
                Ok(None) => break,
                Err(status) => {
                    debug!(%status, "agent stream failed");
                    break;
                }
            }
        }
        self.agents.unregister(&node, conn);
        info!("agent detached");
        // A newer connection of the same Node replaced this one: nothing was lost.
        if !self.agents.is_connected(&node) {
            self.coordinator.agent_detached(&node).await;
        }
    }

    async fn handle(&self, node: &str, conn: u64, msg: Msg) {
        match msg {
            Msg::Hello(hello) => {
                if !hello.node.is_empty() && hello.node != node {
                    warn!(hello_node = %hello.node, "hello names another Node; the certificate wins");
                }
                info!(pods = hello.pods.len(), version = %hello.version, "agent hello");
                self.agents.set_hello(node, conn, hello);
                self.nodestate.hello(node, conn);
                self.coordinator.agent_attached(node).await;
            }
            Msg::Ports(hello) => {
                info!(pods = hello.pods.len(), "agent ports");
                self.agents.set_hello(node, conn, hello);
            }
            Msg::Report(report) => self.coordinator.report(node, report).await,
            Msg::Failure(failure) => self.coordinator.agent_failure(node, failure).await,
            Msg::LiveArmed(armed) => self.coordinator.live_armed(node, armed.trace_uid).await,
            Msg::Counters(c) => self.agents.set_counters(node, conn, c.counters),
        }
    }
}

/// Serves `AgentService` on `listener` with mTLS until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: tonic::transport::ServerTlsConfig,
    server: AgentServer,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // Agents send observations and node state; anything larger is refused on purpose.
        .add_service(
            pb::agent_service_server::AgentServiceServer::new(server)
                .max_decoding_message_size(traceflow_core::limits::MAX_AGENT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
