//! `traceflow-agent`: parses flags (docs/contracts.md), reads the certificates, runs the agent.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use traceflow_agent::{
    AgentConfig,
    adapter::{AdapterConfig, CertFiles},
    desired::Peer,
    runtime::OvsPaths,
};

/// Per-Node Traceflow agent: programs br-int, injects trace packets, reports observations.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// This Node's name (the certificate's CN).
    #[arg(long, env = "TRACEFLOW_NODE")]
    node: String,
    /// The adapter's agent endpoint, e.g. https://127.0.0.1:9443.
    #[arg(long, env = "TRACEFLOW_ADAPTER")]
    adapter: String,
    /// CA certificate (PEM) that signed the adapter's server certificate.
    #[arg(long, env = "TRACEFLOW_CA")]
    ca: PathBuf,
    /// This agent's certificate (PEM); rewritten when the agent renews it.
    #[arg(long, env = "TRACEFLOW_CERT")]
    cert: PathBuf,
    /// This agent's private key (PEM); rewritten (0600) when the agent renews its certificate.
    #[arg(long, env = "TRACEFLOW_KEY")]
    key: PathBuf,
    /// OVS run directory holding <bridge>.mgmt and db.sock.
    #[arg(long, env = "TRACEFLOW_OVS_RUNDIR")]
    ovs_rundir: PathBuf,
    /// The integration bridge.
    #[arg(long, env = "TRACEFLOW_BRIDGE", default_value = "br-int")]
    bridge: String,
    /// Another Node behind the tunnel: `CIDR[,CIDR...]=TUNNEL_IP` (repeatable). Interim, until
    /// the adapter sends peer Nodes; env TRACEFLOW_PEERS is space-separated.
    #[arg(long = "peer", env = "TRACEFLOW_PEERS", value_delimiter = ' ')]
    peers: Vec<Peer>,
    /// TLS name expected on the adapter's certificate.
    #[arg(
        long,
        env = "TRACEFLOW_ADAPTER_SERVER_NAME",
        default_value = "localhost"
    )]
    adapter_server_name: String,
    #[command(flatten)]
    otlp: traceflow_telemetry::OtlpArgs,
}

fn read(p: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let service = traceflow_telemetry::Service {
        name: "traceflow-agent",
        attributes: vec![("traceflow.node", a.node.clone())],
    };
    let telemetry = traceflow_telemetry::init(&service, &a.otlp.config(), None)?;
    let cfg = AgentConfig {
        node: a.node,
        adapter: AdapterConfig {
            endpoint: a.adapter,
            ca_pem: read(&a.ca)?,
            cert_pem: read(&a.cert)?,
            key_pem: read(&a.key)?,
            server_name: a.adapter_server_name,
            // Renewed certificates replace these files (the directory must be writable).
            files: Some(CertFiles {
                cert: a.cert,
                key: a.key,
            }),
        },
        ovs: OvsPaths::new(a.ovs_rundir, a.bridge),
        peers: a.peers,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        traceflow_daemon::shutdown::signal().await;
        stop.cancel();
    });
    traceflow_agent::run(cfg, shutdown).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
