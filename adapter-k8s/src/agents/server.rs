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
//! does not have is refused (`PERMISSION_DENIED`); before that it is accepted and logged. On
//! every call (each stream, each renewal) the certificate's serial must be the one recorded
//! for its Node ([`super::serials`]), else `UNAUTHENTICATED` saying to re-issue it.
//!
//! `AgentService.RenewCertificate`: an agent sends a CSR for its own Node over its mTLS
//! connection; the adapter signs it with the agent CA (CN = the authenticated Node), records the
//! new serial as the Node's only valid one, and returns the certificate.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use traceflow_pki::{CertificateAuthority, IdentityKind, PkiError};
use traceflow_proto::v1::{self as pb, agent_message::Kind as Msg};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Agents,
    serials::{AgentSerials, SerialError},
};
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
    #[error(transparent)]
    Serial(#[from] SerialError),
}

/// The one place agent-facing errors become gRPC statuses.
impl From<AttachError> for Status {
    fn from(e: AttachError) -> Self {
        let msg = e.to_string();
        match e {
            AttachError::NoCertificate
            | AttachError::BadCertificate(_)
            | AttachError::Serial(
                SerialError::NotRecorded { .. } | SerialError::Superseded { .. },
            ) => Status::unauthenticated(msg),
            AttachError::Serial(SerialError::BadNodeName(_)) => Status::permission_denied(msg),
            AttachError::Serial(SerialError::Files(_)) => Status::internal(msg),
            AttachError::NotAnAgent(_) | AttachError::UnknownNode(_) => {
                Status::permission_denied(msg)
            }
        }
    }
}

/// What the agent server signs and checks agent certificates with.
#[derive(Clone)]
pub struct AgentCerts {
    /// The agent CA, issuing leaves with the configured lifetime (`--agent-cert-lifetime`).
    pub ca: Arc<CertificateAuthority>,
    pub serials: AgentSerials,
    /// `--adopt-newer-agent-certs` ([`AgentSerials::check`]).
    pub adopt_newer: bool,
}

/// The tonic service; cheap to clone.
#[derive(Clone)]
pub struct AgentServer {
    agents: Agents,
    inventory: Inventory,
    coordinator: CoordinatorHandle,
    nodestate: PublisherHandle,
    certs: AgentCerts,
}

impl AgentServer {
    pub fn new(
        agents: Agents,
        inventory: Inventory,
        coordinator: CoordinatorHandle,
        nodestate: PublisherHandle,
        certs: AgentCerts,
    ) -> Self {
        Self {
            agents,
            inventory,
            coordinator,
            nodestate,
            certs,
        }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<String, AttachError> {
        let id = traceflow_pki::request_identity(request).ok_or(AttachError::NoCertificate)??;
        if id.kind != IdentityKind::Agent {
            return Err(AttachError::NotAnAgent(id.kind));
        }
        {
            let index = self.inventory.read();
            if index.node(&id.name).is_none() {
                if index.is_synced(Kind::Node) {
                    return Err(AttachError::UnknownNode(id.name));
                }
                warn!(node = %id.name, "agent attached before the Node list synced; accepting");
            }
        }
        if self.certs.serials.check(&id, self.certs.adopt_newer)? {
            info!(node = %id.name, serial = %id.serial, "newer agent certificate adopted; the Node's previous one is revoked");
        }
        Ok(id.name)
    }

    /// Signs `csr_pem` for `node` and records the new serial as its only valid one.
    fn renew(&self, node: &str, csr_pem: &str) -> Result<String, Status> {
        traceflow_core::limits::check_len("csr_pem", csr_pem, traceflow_core::limits::MAX_CSR_LEN)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let issued = self
            .certs
            .ca
            .sign_csr(csr_pem, node, IdentityKind::Agent)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let id = traceflow_pki::pem_identity(&issued.cert_pem)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.certs
            .serials
            .record(node, &issued.serial, id.not_before)
            .map_err(|e| Status::internal(format!("recording the new serial: {e}")))?;
        Ok(issued.cert_pem)
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

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewAgentCertificateRequest>,
    ) -> Result<Response<pb::RenewAgentCertificateResponse>, Status> {
        let node = self.authorize(&request).map_err(|e| {
            warn!(error = %e, "agent certificate renewal refused");
            Status::from(e)
        })?;
        let pb::RenewAgentCertificateRequest { csr_pem } = request.into_inner();
        let certificate_pem = self.renew(&node, &csr_pem).inspect_err(|status| {
            warn!(node = %node, %status, "agent certificate renewal failed");
        })?;
        info!(node = %node, "agent certificate renewed; the previous one is revoked");
        Ok(Response::new(pb::RenewAgentCertificateResponse {
            certificate_pem,
        }))
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
        .http2_keepalive_interval(Some(traceflow_core::limits::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(traceflow_core::limits::KEEPALIVE_TIMEOUT))
        // Agents send observations and node state; anything larger is refused on purpose.
        .add_service(
            pb::agent_service_server::AgentServiceServer::new(server)
                .max_decoding_message_size(traceflow_core::limits::MAX_AGENT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(no_delay(listener), shutdown)
        .await
}

/// `listener`'s connections with Nagle's algorithm off (`serve_with_incoming` does not apply
/// the server's `tcp_nodelay`). The adapter writes small commands an agent does not answer
/// (a trace's `FlushConntrack`): with Nagle on, the next `Inject` behind one waits for the
/// agent's delayed ACK, 40 ms, and every trace after another one takes that long.
fn no_delay(listener: TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(tcp) = &conn {
            let _ = tcp.set_nodelay(true);
        }
        conn
    })
}
