//! tfctl: the command-line client of the traceflow manager, with antctl traceflow's flags.
//!
//! ```text
//!  flags ──spec::check / flow::parse_flow──▶ TraceflowSpec ──CreateTraceflow──▶ manager
//!                                                     WatchTraceflow until Succeeded/Failed
//!  stdout ◀── output::trace_output (antctl's object, proto3 JSON / YAML)
//! ```
//!
//! Contract (what scripts and the lab rely on):
//! - `tfctl traceflow --cluster C -S SRC -D DST [-f FLOW] [-t 20s] [-o yaml|json] [-L] [-d]
//!   [--nowait] [--dst-service]`: flags and flow syntax as antctl (reference §5), see
//!   [`flow`] and [`spec`]. A named destination is a Pod if the manager's inventory has a Pod of
//!   that name in the namespace, else a Service if it has that Service, else a Pod.
//! - stdout: one object with `name`, `cluster`, `uid`, `phase`, `reason` (only when set),
//!   `source`, `destination`, `results` (NodeResults in proto3 JSON: Antrea's field names, enum
//!   names, 64-bit integers as strings), `capturedPacket`, `traceId`, `startTimeMicros`,
//!   `endTimeMicros` (strings). YAML by default, `-o json` for 2-space JSON.
//! - exit 0 when the trace Succeeded (or was created with `--nowait`); exit 1 after printing
//!   when it Failed (stderr `Error: Traceflow <name> failed: <reason>`), when the wait ends
//!   first (`timeout waiting for Traceflow done`, after spec timeout + 10 s), and on any flag,
//!   config or RPC error (stderr `Error: ...`, nothing on stdout).
//! - config: `--config`, else `$TFCTL_CONFIG`, else `~/.config/tfctl/config.yaml`.

mod client;
mod commands;
mod config;
mod flow;
mod output;
mod spec;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use output::Format;

#[derive(Parser)]
#[command(
    name = "tfctl",
    version,
    about = "Trace packets through Kubernetes clusters (antctl traceflow flags)"
)]
struct Cli {
    /// tfctl config (server, ca, cert/key or token); default ~/.config/tfctl/config.yaml.
    #[arg(long, global = true, env = "TFCTL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a trace and print its result (antctl traceflow).
    #[command(visible_aliases = ["tf", "traceflows"])]
    Traceflow {
        /// The cluster to trace in.
        #[arg(long)]
        cluster: String,
        /// Namespace/Pod, Pod (namespace default), or an IP (live traffic only).
        #[arg(short = 'S', long)]
        source: Option<String>,
        /// Namespace/Pod, Pod, Namespace/Service, Service, or an IP.
        #[arg(short = 'D', long)]
        destination: Option<String>,
        /// Treat a named destination as a Service without looking for a Pod of that name.
        #[arg(long)]
        dst_service: bool,
        /// ovs-ofctl-like packet fields, e.g. "tcp,tcp_dst=80" or "ipv6,udp,udp_dst=53".
        #[arg(short = 'f', long, default_value = "")]
        flow: String,
        /// Trace timeout, e.g. 20s (1s..300s); default 20s.
        #[arg(short = 't', long, value_parser = parse_timeout)]
        timeout: Option<Duration>,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
        /// Trace the first packet of a new matching connection instead of injecting one.
        #[arg(short = 'L', long, visible_short_alias = 'l')]
        live_traffic: bool,
        /// With --live-traffic: capture only a packet a NetworkPolicy drops.
        #[arg(short = 'd', long)]
        dropped_only: bool,
        /// Create the trace and print it without waiting for the result.
        #[arg(long, visible_alias = "no-wait")]
        nowait: bool,
    },
    /// Print one trace by name or uid.
    Get {
        trace: String,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// List traces, newest first.
    List {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i32,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// List clusters with their health.
    Clusters {
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
}

/// A Go-style duration (`20s`, `1m`) or bare seconds (`20`).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 20s: {e}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Flag problems are reported before touching the config or the network.
    if let Command::Traceflow {
        source,
        destination,
        live_traffic,
        dropped_only,
        timeout,
        flow,
        ..
    } = &cli.command
    {
        let flags = spec::TraceFlags {
            source: source.clone(),
            destination: destination.clone(),
            live_traffic: *live_traffic,
            dropped_only: *dropped_only,
            timeout: *timeout,
        };
        spec::check(&flags)?;
        flow::parse_flow(flow).map_err(commands::CliError::from)?;
    }
    let config = config::load(&config::locate(cli.config)?)?;
    let mut clients = client::connect(&config).await?;
    match cli.command {
        Command::Traceflow {
            cluster,
            source,
            destination,
            dst_service,
            flow,
            timeout,
            output,
            live_traffic,
            dropped_only,
            nowait,
        } => {
            let flags = spec::TraceFlags {
                source,
                destination,
                live_traffic,
                dropped_only,
                timeout,
            };
            let opts = commands::TraceOptions {
                cluster,
                flags,
                flow,
                output,
                no_wait: nowait,
                dst_service,
            };
            commands::traceflow(&mut clients, opts).await?;
        }
        Command::Get { trace, output } => commands::get(&mut clients, &trace, output).await?,
        Command::List {
            cluster,
            limit,
            output,
        } => commands::list(&mut clients, cluster, limit, output).await?,
        Command::Clusters { output } => commands::clusters(&mut clients, output).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
