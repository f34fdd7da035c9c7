//! traceflow-manager: parses configuration and wires the library together.

use anyhow::Context;
use clap::Parser;
use traceflow_manager::{
    config::{self, Cli, Command, TokenCommand, UserCommand},
    ops, server,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let otlp = args.otlp.config();
            let (cfg, listen, log) = config::resolve_serve(*args, cli.log)?;
            let service = traceflow_telemetry::Service {
                name: "traceflow-manager",
                attributes: Vec::new(),
            };
            let telemetry = traceflow_telemetry::init(&service, &otlp, log.as_deref())?;
            // A stale address from a previous run must not be mistaken for this one.
            let _ = std::fs::remove_file(cfg.data_dir.join("listen.addr"));
            let data = server::open_data_dir_with_ca(&cfg.data_dir, cfg.ca_files.as_ref())
                .with_context(|| format!("opening data directory {}", cfg.data_dir.display()))?;
            let listener = server::bind(&cfg.data_dir, listen).await?;
            let shutdown = traceflow_daemon::shutdown::signal();
            let addr_file = cfg.data_dir.join("listen.addr");
            let result = server::run(cfg, data, listener, shutdown).await;
            let _ = std::fs::remove_file(addr_file);
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            result?;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    cluster,
                    ttl,
                    data_dir,
                },
        } => {
            traceflow_telemetry::init_logs(cli.log.as_deref(), "warn");
            let token = ops::token_create(&data_dir, &cluster, ttl).await?;
            println!("{token}");
        }
        Command::User {
            command:
                UserCommand::Create {
                    name,
                    role,
                    token,
                    data_dir,
                    out,
                },
        } => {
            traceflow_telemetry::init_logs(cli.log.as_deref(), "warn");
            let created = ops::user_create(&data_dir, &name, role, token, &out).await?;
            if let Some(t) = created.token {
                println!("token: {t}");
            }
            println!("config: {}", created.config.display());
        }
    }
    Ok(())
}
