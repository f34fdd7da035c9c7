//! An in-process fake adapter: `AgentService` with real mTLS, recording what agents send and
//! letting a test send commands; and a `NodeRuntime` built by hand for agents without OVS.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use traceflow_agent::adapter::AdapterConfig;
use traceflow_agent::ovs::openflow::Switch;
use traceflow_agent::pipeline::DatapathHandle;
use traceflow_agent::ports::NodePorts;
use traceflow_agent::runtime::NodeRuntime;
use traceflow_agent::trace::{Observed, Tracer};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1::{self as pb, agent_command::Kind as Cmd, agent_message::Kind as Msg};

/// What the fake adapter saw: the peer's CN and each message; and a way to send commands.
pub struct Attached {
    pub cn: String,
    pub inbound: mpsc::Receiver<Msg>,
    pub commands: mpsc::Sender<pb::AgentCommand>,
}

impl Attached {
    /// The agent's next message within 10 s, passing over its counters (sent whenever they
    /// changed, every `COUNTERS_INTERVAL`, so no session test can expect them in order).
    pub async fn next(&mut self) -> Msg {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = tokio::time::timeout_at(deadline, self.inbound.recv())
                .await
                .unwrap_or_else(|_| panic!("agent sent nothing but counters for 10 s"))
                .unwrap_or_else(|| panic!("agent stream ended"));
            if !matches!(m, Msg::Counters(_)) {
                return m;
            }
        }
    }

    /// Sends the agent one command.
    pub async fn send(&self, kind: Cmd) {
        self.commands
            .send(pb::AgentCommand { kind: Some(kind) })
            .await
            .unwrap();
    }
}

#[derive(Clone)]
struct FakeAdapter {
    attached: mpsc::Sender<Attached>,
}

type Commands = Pin<Box<dyn Stream<Item = Result<pb::AgentCommand, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for FakeAdapter {
    type AttachStream = Commands;
    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let id = traceflow_pki::request_identity(&request)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut stream = request.into_inner();
        let (in_tx, in_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if let Some(k) = m.kind {
                    let _ = in_tx.send(k).await;
                }
            }
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let _ = self
            .attached
            .send(Attached {
                cn: id.name,
                inbound: in_rx,
                commands: cmd_tx,
            })
            .await;
        Ok(Response::new(Box::pin(ReceiverStream::new(cmd_rx).map(Ok))))
    }

    /// These tests' certificates outlive them; renewal is tested against the real adapter
    /// (adapter-k8s/tests/renewal.rs).
    async fn renew_certificate(
        &self,
        _request: Request<pb::RenewAgentCertificateRequest>,
    ) -> Result<Response<pb::RenewAgentCertificateResponse>, Status> {
        Err(Status::unimplemented("the fake adapter does not renew"))
    }
}

pub struct Pki {
    pub ca: String,
    pub server: (String, String),
    pub agent: (String, String),
}

impl Pki {
    /// How the agent `node-a` reaches the fake adapter listening on `addr`.
    pub fn agent_config(&self, addr: SocketAddr) -> AdapterConfig {
        AdapterConfig {
            endpoint: format!("https://{addr}"),
            ca_pem: self.ca.clone(),
            cert_pem: self.agent.0.clone(),
            key_pem: self.agent.1.clone(),
            server_name: "localhost".into(),
            files: None,
        }
    }
}

pub fn pki() -> Pki {
    let ca = CertificateAuthority::generate("agent-ca").unwrap();
    let server = ca
        .issue_server(
            "traceflow-adapter",
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
    let agent = ca.issue("node-a", IdentityKind::Agent, &[]).unwrap();
    Pki {
        ca: ca.cert_pem().to_string(),
        server: (server.cert_pem, server.key_pem),
        agent: (agent.cert_pem, agent.key_pem),
    }
}

pub async fn serve(
    listener: TcpListener,
    pki: &Pki,
    attached: mpsc::Sender<Attached>,
    stop: CancellationToken,
) {
    let tls = traceflow_pki::tonic_server_tls(&pki.server.0, &pki.server.1, &pki.ca, false);
    let svc = pb::agent_service_server::AgentServiceServer::new(FakeAdapter { attached });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
            .await
            .unwrap();
    });
}

/// The test's ends of a [`hand_runtime`]: its ports and observations; the switch never
/// connects and nothing is ever programmed (both senders live as long as this).
pub struct HandRuntime {
    pub ports: watch::Sender<NodePorts>,
    pub observations: mpsc::Sender<Observed>,
    _switch: watch::Sender<Option<Switch>>,
    _programmed: watch::Sender<u64>,
}

/// A `NodeRuntime` of `node-a` built by hand (no OVS) with `ports`.
pub fn hand_runtime(ports: NodePorts) -> (NodeRuntime, HandRuntime) {
    let (ports_tx, ports_rx) = watch::channel(ports);
    let (sw_tx, sw_rx) = watch::channel(None);
    let (prog_tx, prog_rx) = watch::channel(0);
    let (obs_tx, obs_rx) = mpsc::channel(16);
    let rt = NodeRuntime {
        tracer: Tracer::new("node-a", ports_rx.clone(), sw_rx.clone()),
        ports: ports_rx,
        datapath: DatapathHandle {
            switch: sw_rx,
            programmed: prog_rx,
            programmed_state: watch::channel(Default::default()).1,
            tunnel_key: watch::channel(None).1,
        },
        observations: obs_rx,
    };
    let ends = HandRuntime {
        ports: ports_tx,
        observations: obs_tx,
        _switch: sw_tx,
        _programmed: prog_tx,
    };
    (rt, ends)
}
