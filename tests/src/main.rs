//! `traceflow-lab`: bring a lab up from a topology file, show it, run commands in its Pods, take
//! it down. See the library docs for what a lab is.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use traceflow_lab::{kubeapi, lab};

#[derive(Parser)]
#[command(
    name = "traceflow-lab",
    about = "Many Kubernetes-like clusters on one machine, real OVS"
)]
struct Cli {
    /// Lab directory (state, logs, OVS run directories, kubeconfigs).
    #[arg(long, global = true, env = "TRACEFLOW_LAB_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the topology's Nodes, Pods and control plane; prints `export TFCTL_CONFIG=...` last.
    Up {
        topology: PathBuf,
        /// Prefix of every network namespace name.
        #[arg(long, default_value = lab::DEFAULT_PREFIX)]
        prefix: String,
        /// Only the data plane (namespaces, OVS, veths): no API endpoints, manager, adapters,
        /// agents.
        #[arg(long)]
        no_control_plane: bool,
        /// How long to wait for every cluster to be Up.
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        ready_timeout: Duration,
        /// Directory of traceflow-manager, -adapter, -agent and tfctl.
        #[arg(long, env = "TRACEFLOW_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Stop every process and delete every namespace and file of the lab (idempotent).
    Down {
        /// Also delete every network namespace named `<PREFIX>-…`, for a lab whose directory
        /// is gone (only what you name: other labs may share the default prefix).
        #[arg(long)]
        orphans_with_prefix: Option<String>,
    },
    /// List clusters, Nodes, Pods, processes and namespaces.
    Status {
        /// The lab state as JSON (with process liveness and namespace presence).
        #[arg(long)]
        json: bool,
    },
    /// Start a lab process that died again, with the command line `up` used: `manager`,
    /// `adapter/<cluster>`, `agent/<cluster>/<node>`, `kubeapi/<cluster>` or
    /// `ovs-vswitchd/<cluster>/<node>` (names as `status` lists them).
    Restart { process: String },
    /// Run a command in a Pod's network namespace: CLUSTER/NAMESPACE/POD (or CLUSTER/NODE).
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Serve one cluster's Kubernetes API (started by `up`).
    #[command(hide = true)]
    ServeApi {
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        objects: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        addr_file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    traceflow_telemetry::init_logs(None, "warn,traceflow_lab=info");
    let cli = Cli::parse();
    let dir = lab::resolve_dir(cli.dir.as_deref());
    match cli.cmd {
        Cmd::Up {
            topology,
            prefix,
            no_control_plane,
            ready_timeout,
            bin_dir,
        } => {
            let opts = lab::up::UpOptions {
                topology,
                dir: dir.clone(),
                prefix,
                control_plane: !no_control_plane,
                ready_timeout,
                bin_dir,
            };
            let state = match lab::up::up(&opts).await {
                Ok(state) => state,
                Err(e) => {
                    let left = dir.join("state.json").exists();
                    let hint = if left {
                        format!(
                            "traceflow-lab up failed; inspect with `traceflow-lab status --dir \
                             {d}`, clean up with `traceflow-lab down --dir {d}`",
                            d = dir.display()
                        )
                    } else {
                        "traceflow-lab up failed before creating anything".to_string()
                    };
                    return Err(anyhow::Error::new(e).context(hint));
                }
            };
            let paths = lab::Paths::new(&dir)?;
            eprint!("{}", lab::status::render(&paths)?);
            match state.tfctl_config {
                Some(cfg) => println!("export TFCTL_CONFIG={}", cfg.display()),
                None => println!("# data plane only: no tfctl config"),
            }
        }
        Cmd::Down {
            orphans_with_prefix,
        } => {
            let r = lab::down::down(&dir, orphans_with_prefix.as_deref())
                .await
                .context("traceflow-lab down")?;
            if r.had_lab || !r.netns.is_empty() {
                println!(
                    "lab in {} is down: stopped {} processes, deleted {} network namespaces",
                    dir.display(),
                    r.stopped.len(),
                    r.netns.len()
                );
            } else {
                println!("no lab in {}", dir.display());
            }
        }
        Cmd::Status { json } => {
            let paths = lab::Paths::new(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&lab::status::render_json(&paths)?)?
                );
            } else {
                print!("{}", lab::status::render(&paths)?);
            }
        }
        Cmd::Restart { process } => {
            let pid = lab::restart::restart(&dir, &process)
                .await
                .with_context(|| format!("traceflow-lab restart {process}"))?;
            println!("{process} restarted: pid {pid}");
        }
        Cmd::Exec { target, command } => {
            let paths = lab::Paths::new(&dir)?;
            let netns = lab::status::exec_netns(&paths, &target)?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &netns])
                .args(&command)
                .status()
                .with_context(|| format!("ip netns exec {netns} {}", command.join(" ")))?;
            return Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ));
        }
        Cmd::ServeApi {
            cluster,
            objects,
            cert,
            key,
            token_file,
            listen,
            addr_file,
        } => {
            kubeapi::run_daemon(kubeapi::DaemonConfig {
                cluster,
                objects,
                cert,
                key,
                token_file,
                listen,
                addr_file,
            })
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
