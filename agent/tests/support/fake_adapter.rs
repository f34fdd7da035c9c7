//! An in-process fake adapter: `AgentService` with real mTLS, recording what agents send and
//! letting a test send commands.

#![allow(dead_code, clippy::unwrap_used)]

use std::pin::Pin;

use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1::{self as pb, agent_message::Kind as Msg};

/// What the fake adapter saw: the peer's CN and each message; and a way to send commands.
pub struct Attached {
    pub cn: String,
    pub inbound: mpsc::Receiver<Msg>,
    pub commands: mpsc::Sender<pb::AgentCommand>,
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
}

pub struct Pki {
    pub ca: String,
    pub server: (String, String),
    pub agent: (String, String),
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
