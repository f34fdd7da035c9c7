//! Command line, environment (`TRACEFLOW_MANAGER_*`) and config file, in that precedence.
//!
//! The config file (`--config FILE`, YAML) may set `dataDir`, `listen`, `heartbeatInterval`,
//! `retentionMaxAge`, `retentionMaxCount`, `retentionInterval`, `consoleDir` and `log`;
//! durations are humantime strings ("5s", "30d").

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::{
    auth::Role,
    server::{Retention, ServeConfig},
};

/// traceflow-manager: CA, registration, users and the trace API of a fleet of clusters.
#[derive(Debug, Parser)]
#[command(name = "traceflow-manager", version)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "TRACEFLOW_MANAGER_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the manager's one TLS port.
    Serve(Box<ServeArgs>),
    /// Bootstrap tokens for cluster registration.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Users and their credentials.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// YAML config file; flags and environment override it.
    #[arg(long, env = "TRACEFLOW_MANAGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, CA, local admin credential, listen.addr).
    #[arg(long, env = "TRACEFLOW_MANAGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (see D/listen.addr). Default 127.0.0.1:7443.
    #[arg(long, env = "TRACEFLOW_MANAGER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// How often adapters send heartbeats; a cluster is Down after three missed. Default 5s.
    #[arg(long, env = "TRACEFLOW_MANAGER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Finished traces older than this are deleted. Default 30d.
    #[arg(long, env = "TRACEFLOW_MANAGER_RETENTION_MAX_AGE", value_parser = humantime::parse_duration)]
    pub retention_max_age: Option<Duration>,
    /// At most this many traces are kept (oldest finished ones go first). Default 100000.
    #[arg(long, env = "TRACEFLOW_MANAGER_RETENTION_MAX_COUNT")]
    pub retention_max_count: Option<usize>,
    /// How often retention runs. Default 60s.
    #[arg(long, env = "TRACEFLOW_MANAGER_RETENTION_INTERVAL", value_parser = humantime::parse_duration)]
    pub retention_interval: Option<Duration>,
    /// Built web console (index.html + assets/) served at `/`. Default: `console/` next to the
    /// executable when it exists, else no console.
    #[arg(long, env = "TRACEFLOW_MANAGER_CONSOLE_DIR")]
    pub console_dir: Option<PathBuf>,
    /// The fleet CA certificate (PEM) to adopt instead of generating one on first start, e.g.
    /// from a Kubernetes Secret; needs --ca-key. A store that already holds a different CA
    /// refuses to start.
    #[arg(long, env = "TRACEFLOW_MANAGER_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The private key (PEM) of --ca-cert.
    #[arg(long, env = "TRACEFLOW_MANAGER_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    #[command(flatten)]
    pub otlp: traceflow_telemetry::OtlpArgs,
    #[command(flatten)]
    pub edge: crate::api::guard::EdgeLimits,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a single-use bootstrap token for a cluster name; prints it.
    Create {
        #[arg(long)]
        cluster: String,
        /// Lifetime of the token.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, env = "TRACEFLOW_MANAGER_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (or give it a new credential); writes NAME.pem, NAME-key.pem, ca.pem and
    /// NAME.tfctl.yaml into --out.
    Create {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Issue a bearer token instead of a client certificate.
        #[arg(long)]
        token: bool,
        #[arg(long, env = "TRACEFLOW_MANAGER_DATA_DIR")]
        data_dir: PathBuf,
        /// Where to write the credential and tfctl config (default: current directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}; use view, edit or admin"))
}

/// Errors resolving the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("--data-dir is required (or TRACEFLOW_MANAGER_DATA_DIR, or dataDir in --config)")]
    NoDataDir,
    #[error("{0} is too short (heartbeats need at least 1s; retention more than 0)")]
    TooShort(&'static str),
    #[error(
        "--bearer-token-ttl is longer than --bearer-token-max-ttl; shorten it or raise the maximum"
    )]
    TokenTtlOverMax,
    #[error(
        "--leaf-cert-lifetime {0} is out of range: use at least 10s and at most 3650d (the CA's own lifetime)"
    )]
    LeafLifetime(String),
    #[error("config file {path}: {field}: {detail}")]
    Field {
        path: PathBuf,
        field: &'static str,
        detail: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    heartbeat_interval: Option<String>,
    retention_max_age: Option<String>,
    retention_max_count: Option<usize>,
    retention_interval: Option<String>,
    console_dir: Option<PathBuf>,
    log: Option<String>,
}

/// Resolved `serve` settings: the server config, the listen address and the log filter.
pub fn resolve_serve(
    args: ServeArgs,
    log: Option<String>,
) -> Result<(ServeConfig, SocketAddr, Option<String>), ConfigError> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            serde_yaml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                detail: e.to_string(),
            })?
        }
        None => FileConfig::default(),
    };
    let path = args.config.clone().unwrap_or_default();
    let dur = |field: &'static str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
        v.as_deref()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| ConfigError::Field {
                    path: path.clone(),
                    field,
                    detail: e.to_string(),
                })
            })
            .transpose()
    };
    let defaults = Retention::default();
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or(ConfigError::NoDataDir)?;
    let cfg = ServeConfig {
        data_dir,
        heartbeat_interval: args
            .heartbeat_interval
            .or(dur("heartbeatInterval", &file.heartbeat_interval)?)
            .unwrap_or(Duration::from_secs(5)),
        retention: Retention {
            max_age: args
                .retention_max_age
                .or(dur("retentionMaxAge", &file.retention_max_age)?)
                .unwrap_or(defaults.max_age),
            max_count: args
                .retention_max_count
                .or(file.retention_max_count)
                .unwrap_or(defaults.max_count),
            interval: args
                .retention_interval
                .or(dur("retentionInterval", &file.retention_interval)?)
                .unwrap_or(defaults.interval),
        },
        console_dir: args
            .console_dir
            .or(file.console_dir)
            .or_else(crate::console::default_dir),
        ca_files: args.ca_cert.zip(args.ca_key),
        edge: args.edge,
    };
    if cfg.heartbeat_interval < Duration::from_secs(1) {
        return Err(ConfigError::TooShort("--heartbeat-interval"));
    }
    if cfg.edge.bearer_token_ttl > cfg.edge.bearer_token_max_ttl {
        return Err(ConfigError::TokenTtlOverMax);
    }
    let lifetime = cfg.edge.leaf_cert_lifetime;
    if lifetime < traceflow_pki::MIN_LEAF_LIFETIME
        || lifetime > Duration::from_secs(3650 * 24 * 3600)
    {
        return Err(ConfigError::LeafLifetime(
            humantime::format_duration(lifetime).to_string(),
        ));
    }
    if cfg.retention.interval.is_zero() {
        return Err(ConfigError::TooShort("--retention-interval"));
    }
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7443)));
    Ok((cfg, listen, log.or(file.log)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            config,
            data_dir: None,
            listen: None,
            heartbeat_interval: None,
            retention_max_age: None,
            retention_max_count: None,
            retention_interval: None,
            console_dir: None,
            ca_cert: None,
            ca_key: None,
            otlp: Default::default(),
            edge: Default::default(),
        }
    }

    #[test]
    fn file_fills_what_flags_leave_unset() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.yaml");
        std::fs::write(
            &path,
            "dataDir: /var/lib/tf\nlisten: 127.0.0.1:9000\nheartbeatInterval: 2s\nretentionMaxCount: 7\n",
        )?;
        let mut a = args(Some(path));
        a.retention_max_count = Some(9);
        let (cfg, listen, _) = resolve_serve(a, None)?;
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/tf"));
        assert_eq!(listen.port(), 9000);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(cfg.retention.max_count, 9, "flag wins over file");
        Ok(())
    }

    #[test]
    fn data_dir_is_required_and_defaults_apply() {
        assert!(matches!(
            resolve_serve(args(None), None),
            Err(ConfigError::NoDataDir)
        ));
        let mut a = args(None);
        a.data_dir = Some("/d".into());
        let r = resolve_serve(a, None).map(|(c, l, _)| (c.heartbeat_interval, l.port()));
        assert!(matches!(r, Ok((d, 7443)) if d == Duration::from_secs(5)));
    }

    #[test]
    fn zero_intervals_are_refused() {
        let mut a = args(None);
        a.data_dir = Some("/d".into());
        a.heartbeat_interval = Some(Duration::ZERO);
        assert!(matches!(
            resolve_serve(a, None),
            Err(ConfigError::TooShort(_))
        ));
    }

    #[test]
    fn unknown_file_keys_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, "dataDri: /x\n")?;
        assert!(matches!(
            resolve_serve(args(Some(path)), None),
            Err(ConfigError::File { .. })
        ));
        Ok(())
    }
}
