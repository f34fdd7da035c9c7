//! `traceflow-adapter run | agent-cert | crd`: parses flags and wires the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "traceflow-adapter",
    version,
    about = "Per-cluster traceflow adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register (first start), watch the cluster, serve agents and coordinate traces.
    Run {
        #[command(flatten)]
        config: traceflow_adapter::RunConfig,
        #[arg(long, default_value = "127.0.0.1:9443")]
        agent_listen: String,
        #[command(flatten)]
        otlp: traceflow_telemetry::OtlpArgs,
    },
    /// Issue an agent certificate for a Node: DIR/N.pem, DIR/N-key.pem, DIR/agent-ca.pem; its
    /// serial becomes the Node's only valid one (AD/agent-serials/N), revoking the previous.
    AgentCert {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid; the agent renews it after two thirds.
        #[arg(long, env = "TRACEFLOW_AGENT_CERT_LIFETIME", default_value = traceflow_core::limits::DEFAULT_AGENT_CERT_LIFETIME, value_parser = humantime::parse_duration)]
        lifetime: std::time::Duration,
        /// Do not record the serial (the data dir is not the adapter's, e.g. a read-only copy
        /// of the agent CA): the adapter must run with --adopt-newer-agent-certs to accept it.
        #[arg(long)]
        no_record: bool,
    },
    /// Print the Traceflow CustomResourceDefinition (YAML) that the cluster chart installs.
    Crd,
}

/// `error: cause: cause`, skipping causes whose text the message before already contains.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            config,
            agent_listen,
            otlp,
        } => {
            let service = traceflow_telemetry::Service {
                name: "traceflow-adapter",
                attributes: vec![("traceflow.cluster", config.cluster.clone())],
            };
            let telemetry = traceflow_telemetry::init(&service, &otlp.config(), None)?;
            let listener = tokio::net::TcpListener::bind(&agent_listen)
                .await
                .with_context(|| format!("binding --agent-listen {agent_listen}"))?;
            let shutdown = traceflow_daemon::shutdown::signal();
            let result = traceflow_adapter::run(config, listener, shutdown).await;
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            result?;
        }
        Command::AgentCert {
            data_dir,
            node,
            out,
            lifetime,
            no_record,
        } => {
            traceflow_telemetry::init_logs(None, "info");
            let opts = traceflow_adapter::agents::pki::AgentCertOptions {
                lifetime,
                record: !no_record,
            };
            traceflow_adapter::agents::pki::issue_agent_cert_with(&data_dir, &node, &out, &opts)
                .with_context(|| format!("issuing the agent certificate for Node {node}"))?;
        }
        Command::Crd => {
            let yaml = traceflow_adapter::crd::resource::crd_yaml()
                .context("rendering the Traceflow CRD")?;
            print!("{yaml}");
        }
    }
    Ok(())
}
