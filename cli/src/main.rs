//! tfctl: the command-line client of the traceflow manager, with antctl traceflow's flags.
//!
//! ```text
//!  flags ──spec::check / flow::parse_flow──▶ TraceflowSpec ──CreateTraceflow──▶ manager
//!                                                     WatchTraceflow until Succeeded/Failed
//!  stdout ◀── tables (-o table|wide, default) or output (-o yaml|json: antctl's object)
//!  stderr ◀── spinner while waiting (terminal only), errors saying what to do
//! ```
//!
//! Contract (what scripts and the lab rely on):
//! - `tfctl traceflow [--cluster C] -S SRC -D DST [-f FLOW] [-t 20s] [-o table|wide|yaml|json]
//!   [-L] [-d] [--nowait] [--dst-service]`: flags and flow syntax as antctl (reference §5), see
//!   [`flow`] and [`spec`]. A named destination is a Pod if the manager's inventory has a Pod of
//!   that name in the namespace, else a Service if it has that Service, else a Pod.
//! - `-o yaml|json`: one object with `name`, `cluster`, `uid`, `phase`, `reason` (only when
//!   set), `source`, `destination`, `results` (NodeResults in proto3 JSON: Antrea's field names,
//!   enum names, 64-bit integers as strings), `capturedPacket`, `traceId`, `startTimeMicros`,
//!   `endTimeMicros` (strings). `-o table` (default): a header and one row per observation in
//!   hop order ([`tables::trace`]); colour only on a terminal without `NO_COLOR`.
//! - exit 0 when the trace Succeeded (or was created with `--nowait`); exit 1 after printing
//!   when it Failed (stderr `Error: Traceflow <name> failed: <reason>`) or the wait ends first
//!   (`timeout waiting for Traceflow done`, after spec timeout + 10 s); exit 2 on any usage,
//!   flag, spec, config, connection or RPC error (stderr `Error: ...`, nothing on stdout).
//! - config: `--config`, else `$TFCTL_CONFIG`, else `~/.config/tfctl/config.yaml`; context
//!   `--context`, else `$TFCTL_CONTEXT`, else the file's current one ([`config`]).

mod client;
mod commands;
mod config;
mod flow;
mod output;
mod spec;
mod tables;
mod term;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand};

use commands::{CliError, fleet::Inventory};
use output::Format;

#[derive(Parser)]
#[command(
    name = "tfctl",
    version,
    about = "Trace packets through Kubernetes clusters (antctl traceflow flags)",
    after_help = "Examples:
  tfctl traceflow --cluster c1 -S default/p0 -D default/p1 -f tcp,tcp_dst=80
  tfctl list --cluster c1 --phase Failed --since 1h
  tfctl cluster list
  tfctl pods --cluster c1 -n default --node n1
  tfctl config use-context prod

Exit codes: 0 succeeded, 1 the trace failed, 2 usage, invalid spec or connection error."
)]
struct Cli {
    /// tfctl config (contexts: server, ca, cert/key or token, default cluster);
    /// default ~/.config/tfctl/config.yaml.
    #[arg(long, global = true, env = "TFCTL_CONFIG")]
    config: Option<PathBuf>,
    /// The config context to use instead of its current one.
    #[arg(long, global = true, env = "TFCTL_CONTEXT")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `-o`, shared by every verb that prints objects.
#[derive(Args, Clone, Copy)]
struct OutputArg {
    /// Output format: table (default), wide, yaml or json.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `--cluster`, falling back to the context's default cluster.
#[derive(Args, Clone)]
struct ClusterArg {
    /// The cluster (default: the context's cluster).
    #[arg(long)]
    cluster: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a trace and print its result (antctl traceflow).
    #[command(
        visible_aliases = ["tf", "traceflows"],
        after_help = "Examples:
  # inject an ICMP echo from p0 to p1 and print the observations as a table
  tfctl traceflow --cluster c1 -S default/p0 -D default/p1
  # TCP SYN to a Service's port 80, as JSON
  tfctl traceflow --cluster c1 -S default/p0 -D default/web -f tcp,tcp_dst=80 -o json
  # the first real packet of a new connection, only if a policy drops it
  tfctl traceflow --cluster c1 -S default/p0 -D default/db -L -d -f tcp,tcp_dst=5432 -t 60s

Exit codes: 0 Succeeded, 1 Failed, 2 invalid flags or spec, or no connection."
    )]
    Traceflow {
        #[command(flatten)]
        cluster: ClusterArg,
        #[command(flatten)]
        flags: spec::TraceFlags,
        /// Treat a named destination as a Service without looking for a Pod of that name.
        #[arg(long)]
        dst_service: bool,
        /// ovs-ofctl-like packet fields, e.g. "tcp,tcp_dst=80" or "ipv6,udp,udp_dst=53"; an
        /// unknown key is an error. An injected TCP, UDP or SCTP packet needs its destination
        /// port unless the destination is a Service.
        #[arg(short = 'f', long, default_value = "")]
        flow: String,
        #[command(flatten)]
        output: OutputArg,
        /// Create the trace and print it without waiting for the result.
        #[arg(long, visible_alias = "no-wait")]
        nowait: bool,
    },
    /// Print one trace by name or uid (exit 0 whatever its phase).
    #[command(after_help = "Examples:
  tfctl get p0-to-p1-abcdefgh
  tfctl get 0b7c2a6e-0000-4000-8000-000000000001 -o yaml
  tfctl get p0-to-p1-abcdefgh -o wide")]
    Get {
        /// Trace name or uid.
        trace: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List traces, newest first, with filters and pages.
    #[command(after_help = "Examples:
  tfctl list
  tfctl list --cluster c1 --phase Failed --since 2h
  tfctl list --source default/p0 --destination 10.0.0.5 -o json
  tfctl list --limit 20 --continue <token printed by the previous page>")]
    List {
        #[command(flatten)]
        filters: commands::trace::ListOptions,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Follow a trace's status changes until it ends.
    #[command(after_help = "Examples:
  tfctl traceflow --cluster c1 -S p0 -D p1 --nowait -o json | jq -r .name | xargs tfctl watch
  tfctl watch p0-to-p1-abcdefgh -o json

Exit codes: 0 Succeeded, 1 Failed, 2 no such trace or no connection.")]
    Watch {
        /// Trace name or uid.
        trace: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete traces by name or uid (role edit).
    #[command(after_help = "Examples:
  tfctl delete p0-to-p1-abcdefgh
  tfctl delete p0-to-p1-abcdefgh p0-to-p2-ijklmnop")]
    Delete {
        /// Trace names or uids.
        #[arg(required = true)]
        traces: Vec<String>,
    },
    /// Run a trace's spec again as a new trace and print its result (role edit).
    #[command(after_help = "Examples:
  tfctl retrace p0-to-p1-abcdefgh
  tfctl retrace p0-to-p1-abcdefgh --nowait -o json

Exit codes: 0 Succeeded, 1 Failed, 2 no such trace or no connection.")]
    Retrace {
        /// Trace name or uid.
        trace: String,
        /// Print the new trace without waiting for its result.
        #[arg(long, visible_alias = "no-wait")]
        nowait: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Clusters: health, agents connected / expected, inventory counts.
    #[command(
        visible_alias = "clusters",
        after_help = "Examples:
  tfctl cluster list
  tfctl cluster get c1 -o yaml
  tfctl clusters -o wide"
    )]
    Cluster {
        #[command(subcommand)]
        command: Option<ClusterCommand>,
        /// Output format: table (default), wide, yaml or json.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
        output: Format,
    },
    /// Pods of a cluster's inventory.
    #[command(
        visible_alias = "pod",
        after_help = "Examples:
  tfctl pods --cluster c1
  tfctl pods --cluster c1 -n default --node n1 -o wide"
    )]
    Pods(InventoryArgs),
    /// Services of a cluster's inventory.
    #[command(visible_aliases = ["service", "svc"], after_help = "Examples:
  tfctl services --cluster c1 -n default")]
    Services(InventoryArgs),
    /// Nodes of a cluster's inventory.
    #[command(
        visible_alias = "node",
        after_help = "Examples:
  tfctl nodes --cluster c1 -o wide"
    )]
    Nodes(InventoryArgs),
    /// Namespaces of a cluster's inventory.
    #[command(visible_aliases = ["namespace", "ns"], after_help = "Examples:
  tfctl namespaces --cluster c1")]
    Namespaces(InventoryArgs),
    /// Config contexts: which manager, as whom, default cluster.
    #[command(after_help = "Examples:
  tfctl config set-context prod --server https://tf.example:7443 --ca ca.pem --token $TOKEN --cluster east
  tfctl config use-context prod
  tfctl config get-contexts
  tfctl --context lab list")]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Shell completion script for bash, zsh or fish.
    #[command(after_help = "Examples:
  source <(tfctl completion bash)
  tfctl completion zsh > \"${fpath[1]}/_tfctl\"
  tfctl completion fish > ~/.config/fish/completions/tfctl.fish")]
    Completion { shell: Shell },
    /// Client and manager versions.
    #[command(after_help = "Examples:
  tfctl version
  tfctl version --client -o json")]
    Version {
        /// Only the client's version (no connection).
        #[arg(long)]
        client: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Every registered cluster.
    List,
    /// One cluster by name.
    Get { name: String },
}

#[derive(Args)]
struct InventoryArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// Only this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only this Node (Pods).
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// List contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make a context the current one.
    UseContext { name: String },
    /// Create a context or change some of its fields (paths are relative to the config file).
    SetContext {
        name: String,
        /// The manager's URL, e.g. https://127.0.0.1:7443.
        #[arg(long)]
        server: Option<String>,
        /// The TLS name to verify (default localhost).
        #[arg(long)]
        server_name: Option<String>,
        /// The manager's CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate (PEM), with --key.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Client key (PEM), with --cert.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Bearer token instead of a client certificate.
        #[arg(long)]
        token: Option<String>,
        /// Default cluster for commands given no --cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A Go-style duration (`20s`, `1m`) or bare seconds (`20`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 20s: {e}"))
}

fn config_path(cli_config: Option<PathBuf>, must_exist: bool) -> Result<PathBuf, CliError> {
    Ok(config::locate(cli_config, must_exist)?)
}

async fn run(cli: Cli) -> Result<(), CliError> {
    // Commands that need no connection.
    match &cli.command {
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout();
            match shell {
                Shell::Bash => {
                    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "tfctl", &mut out)
                }
                Shell::Zsh => {
                    clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "tfctl", &mut out)
                }
                Shell::Fish => {
                    clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "tfctl", &mut out)
                }
            }
            return Ok(());
        }
        Command::Version {
            client: true,
            output,
        } => {
            return commands::fleet::version(None, output.output).await;
        }
        Command::Config { command } => {
            let must_exist = !matches!(command, ConfigCommand::SetContext { .. });
            let path = config_path(cli.config.clone(), must_exist)?;
            return match command {
                ConfigCommand::GetContexts => commands::config::get_contexts(&path),
                ConfigCommand::CurrentContext => commands::config::current_context(&path),
                ConfigCommand::UseContext { name } => commands::config::use_context(&path, name),
                ConfigCommand::SetContext {
                    name,
                    server,
                    server_name,
                    ca,
                    cert,
                    key,
                    token,
                    cluster,
                } => commands::config::set_context(
                    &path,
                    name,
                    config::Context {
                        name: name.clone(),
                        server: server.clone(),
                        server_name: server_name.clone(),
                        ca: ca.clone(),
                        cert: cert.clone(),
                        key: key.clone(),
                        token: token.clone(),
                        cluster: cluster.clone(),
                    },
                ),
            };
        }
        // Flag and spec problems are reported before touching the config or the network.
        Command::Traceflow {
            flags,
            flow,
            dst_service,
            ..
        } => commands::trace::precheck(flags, flow, *dst_service)?,
        _ => {}
    }
    let config = config::load(&config_path(cli.config, true)?, cli.context.as_deref())?;
    let default_cluster = config.cluster.clone();
    let mut clients = client::connect(&config).await?;
    let c = &mut clients;
    match cli.command {
        Command::Traceflow {
            cluster,
            flags,
            dst_service,
            flow,
            output,
            nowait,
        } => {
            let opts = commands::trace::TraceOptions {
                cluster: commands::cluster_or_default(cluster.cluster, default_cluster.as_deref())?,
                flags,
                flow,
                output: output.output,
                no_wait: nowait,
                dst_service,
            };
            commands::trace::traceflow(c, opts).await
        }
        Command::Get { trace, output } => commands::trace::get(c, &trace, output.output).await,
        Command::List { filters, output } => commands::trace::list(c, filters, output.output).await,
        Command::Watch { trace, output } => commands::trace::watch(c, &trace, output.output).await,
        Command::Delete { traces } => commands::trace::delete(c, &traces).await,
        Command::Retrace {
            trace,
            nowait,
            output,
        } => commands::trace::retrace(c, &trace, nowait, output.output).await,
        Command::Cluster { command, output } => match command {
            None | Some(ClusterCommand::List) => commands::fleet::list_clusters(c, output).await,
            Some(ClusterCommand::Get { name }) => {
                commands::fleet::get_cluster(c, &name, output).await
            }
        },
        Command::Pods(a) => inventory(c, Inventory::Pods, a, default_cluster).await,
        Command::Services(a) => inventory(c, Inventory::Services, a, default_cluster).await,
        Command::Nodes(a) => inventory(c, Inventory::Nodes, a, default_cluster).await,
        Command::Namespaces(a) => inventory(c, Inventory::Namespaces, a, default_cluster).await,
        Command::Version { output, .. } => commands::fleet::version(Some(c), output.output).await,
        Command::Completion { .. } | Command::Config { .. } => Ok(()),
    }
}

async fn inventory(
    clients: &mut client::Clients,
    kind: Inventory,
    a: InventoryArgs,
    default_cluster: Option<String>,
) -> Result<(), CliError> {
    let cluster = commands::cluster_or_default(a.cluster.cluster, default_cluster.as_deref())?;
    commands::fleet::inventory(clients, kind, cluster, a.namespace, a.node, a.output.output).await
}

#[tokio::main]
async fn main() -> ExitCode {
    // clap's own usage errors exit 2 as well (its default).
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_verb_has_examples_in_its_help() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Examples:"),
                "tfctl {} --help has no examples",
                sub.get_name()
            );
        }
    }
}
