//! Wiring: the data directory, the CA, and the one TLS port.
//!
//! ```text
//!   D/store (sled) ─▶ Store ─▶ CA (created on first start), local admin credential
//!   TcpListener ─▶ tonic (TLS, client cert optional, HTTP/1 + gRPC-Web)
//!        ├─ GET /metrics: Prometheus text, view role         (telemetry::MetricsLayer)
//!        ├─ GET / and /assets/…: the web console's files        (console::ConsoleLayer)
//!        ├─ api::access::AccessLayer: every gRPC call against one method → role table
//!        ├─ TraceflowService, ClusterService, UserService   (users by role)
//!        ├─ RegistrationService                              (token + CSR)
//!        ├─ AdapterService                                   (cluster certificates)
//!        ├─ reflection v1 + v1alpha                          (any known user)
//!        └─ grpc.health.v1                                   (open)
//! ```
//!
//! Files in the data directory: `store/` (sled), `ca.pem`, `local-admin.pem`,
//! `local-admin-key.pem`, and `listen.addr` (the bound address, written once listening); the
//! directory is 0700 and each of these 0600 ([`crate::private_dir`]).

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::net::TcpListener;
use traceflow_core::{
    limits::{MAX_ADAPTER_MESSAGE_BYTES, MAX_REQUEST_BYTES},
    phase::{is_terminal, of as phase},
};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1 as pb;

use crate::{
    api::{
        Ctx, cluster::ClusterSvc, registration::RegistrationSvc, traceflow::TraceflowSvc,
        user::UserSvc,
    },
    auth::{Authenticator, Role},
    fleet::{Fleet, attach::AdapterSvc, link::FleetLink},
    private_dir::FILE_MODE,
    store::{AuditEvent, Store, StoreError, StoredCa, UserRecord, now_micros},
    traces::{TraceHub, workflow::Traces},
};

/// How often changed inventories are written to the store.
pub const INVENTORY_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);

/// How long open streams get to end after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub use traceflow_core::limits::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
/// Concurrent streams (calls, watches) one connection may hold open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Name of the local admin user whose credential lives in the data directory.
pub const LOCAL_ADMIN: &str = "local-admin";

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("certificate authority: {0}")]
    Pki(#[from] traceflow_pki::PkiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    PrivateDir(#[from] crate::private_dir::PrivateDirError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error(
        "--ca-cert differs from the CA already in the store; start without --ca-cert, or restore \
         the store that belongs to this CA"
    )]
    CaMismatch,
    #[error(
        "{path} cannot be written ({why}): the manager keeps its CA, traces and audit log there; \
         make it writable (mount it read-write, free space) and start again"
    )]
    Unwritable { path: PathBuf, why: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file + rename), with `mode` on unix.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Retention of finished traces.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished traces older than this are deleted.
    pub max_age: Duration,
    /// Only the newest `max_count` traces are kept (in-flight ones are never deleted).
    pub max_count: usize,
    /// How often the background task runs.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_count: 100_000,
            interval: Duration::from_secs(60),
        }
    }
}

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub retention: Retention,
    /// The built web console to serve at `/`; `None` serves none.
    pub console_dir: Option<PathBuf>,
    /// `(certificate, key)` PEM files of an operator-supplied CA, adopted on first start.
    pub ca_files: Option<(PathBuf, PathBuf)>,
    /// Rate limits, token lifetimes and audit bounds at the edge.
    pub edge: crate::api::guard::EdgeLimits,
}

/// The opened data directory.
pub struct DataDir {
    pub store: Store,
    pub ca: Arc<CertificateAuthority>,
}

/// Path of the store inside a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}

/// Opens the store in `data_dir`, creating the CA (kept in the store) and the local admin
/// credential on first use; rewrites `ca.pem` and the local admin files when missing.
pub fn open_data_dir(data_dir: &Path) -> Result<DataDir, ServeError> {
    open_data_dir_with_ca(data_dir, None)
}

/// [`open_data_dir`], adopting the CA in `ca_files` (`(certificate, key)` PEM files) instead of
/// generating one when the store has none yet.
///
/// Errors: [`ServeError::CaMismatch`] when the store already holds a different CA (the supplied
/// one would not verify the certificates issued so far).
pub fn open_data_dir_with_ca(
    data_dir: &Path,
    ca_files: Option<&(PathBuf, PathBuf)>,
) -> Result<DataDir, ServeError> {
    crate::private_dir::prepare(data_dir)?;
    let store = Store::open(&store_path(data_dir)).map_err(|e| match e.unwritable() {
        Some(why) => ServeError::Unwritable {
            path: data_dir.to_path_buf(),
            why,
        },
        None => e.into(),
    })?;
    let supplied = match ca_files {
        Some((cert, key)) => Some((
            std::fs::read_to_string(cert).map_err(io_err(cert))?,
            std::fs::read_to_string(key).map_err(io_err(key))?,
        )),
        None => None,
    };
    let ca = match store.ca()? {
        Some(c) => {
            if let Some((cert_pem, _)) = &supplied
                && cert_pem.trim() != c.cert_pem.trim()
            {
                return Err(ServeError::CaMismatch);
            }
            CertificateAuthority::from_pem(&c.cert_pem, &c.key_pem)?
        }
        None => {
            let (ca, origin) = match &supplied {
                Some((cert_pem, key_pem)) => (
                    CertificateAuthority::from_pem(cert_pem, key_pem)?,
                    "certificate authority adopted from --ca-cert",
                ),
                None => (
                    CertificateAuthority::generate("traceflow-manager CA")?,
                    "certificate authority created",
                ),
            };
            store.put_ca(&StoredCa {
                cert_pem: ca.cert_pem().to_string(),
                key_pem: ca.key_pem().to_string(),
            })?;
            store.audit(&AuditEvent {
                micros: now_micros(),
                actor: "local".into(),
                action: "ca-create".into(),
                subject: "traceflow-manager CA".into(),
                detail: origin.into(),
            })?;
            ca
        }
    };
    write_file(
        &data_dir.join("ca.pem"),
        ca.cert_pem().as_bytes(),
        FILE_MODE,
    )?;
    // The local admin's certificate lives in this (private) directory; the store records its
    // serial like any user's, so only that certificate works as the local admin.
    let cert = data_dir.join("local-admin.pem");
    let key = data_dir.join("local-admin-key.pem");
    let serial = if !cert.exists() || !key.exists() {
        let issued = ca.issue(LOCAL_ADMIN, IdentityKind::User, &[])?;
        write_file(&key, issued.key_pem.as_bytes(), FILE_MODE)?;
        write_file(&cert, issued.cert_pem.as_bytes(), FILE_MODE)?;
        issued.serial
    } else {
        let pem = std::fs::read_to_string(&cert).map_err(io_err(&cert))?;
        traceflow_pki::pem_identity(&pem)?.serial
    };
    let admin = store.user(LOCAL_ADMIN)?;
    if admin
        .as_ref()
        .is_none_or(|u| u.certificate_serial != serial)
    {
        store.put_user(&UserRecord {
            name: LOCAL_ADMIN.into(),
            role: Role::Admin.as_str().into(),
            created_micros: admin.map_or_else(now_micros, |u| u.created_micros),
            certificate_serial: serial,
        })?;
    }
    store.flush_blocking()?;
    Ok(DataDir {
        store,
        ca: Arc::new(ca),
    })
}

/// Deletes finished traces past the retention limits; returns how many.
pub async fn enforce_retention(hub: &TraceHub, r: &Retention) -> Result<usize, StoreError> {
    let oldest = now_micros() - r.max_age.as_micros() as i64;
    let mut doomed = Vec::new();
    for (i, t) in hub.store().all_traces().enumerate() {
        let t = t?;
        if !is_terminal(phase(&t)) {
            continue;
        }
        if i >= r.max_count || t.creation_time_micros < oldest {
            doomed.push(t.uid);
        }
    }
    for uid in &doomed {
        hub.delete(uid).await?;
    }
    Ok(doomed.len())
}

/// Reflection over the services this port serves (not the agent's, which shares the files).
fn reflection_builder(own: &str) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(traceflow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in [
        "traceflow.v1.TraceflowService",
        "traceflow.v1.ClusterService",
        "traceflow.v1.UserService",
        "traceflow.v1.RegistrationService",
        "traceflow.v1.AdapterService",
        "grpc.health.v1.Health",
        own,
    ] {
        b = b.with_service_name(name);
    }
    b
}

/// Serves on `listener` until `shutdown` completes. `data` comes from [`open_data_dir`].
pub async fn run(
    cfg: ServeConfig,
    data: DataDir,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let DataDir { store, ca } = data;
    // The leaves signed while serving get the configured lifetime.
    let ca = Arc::new(
        CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem())?
            .with_leaf_lifetime(cfg.edge.leaf_cert_lifetime)?,
    );
    let console = cfg
        .console_dir
        .as_deref()
        .map(crate::console::Console::open)
        .transpose()?;
    match &console {
        Some(c) => tracing::info!(dir = %c.root().display(), "serving the web console at /"),
        None => tracing::info!("no web console (see --console-dir)"),
    }
    let hub = TraceHub::new(store.clone());
    let recovered = hub.recover()?;
    if recovered > 0 {
        tracing::warn!(
            count = recovered,
            "traces in flight at the last stop ended Failed"
        );
    }
    let server_cert = ca.issue_server(
        "traceflow-manager",
        &["localhost".into(), "127.0.0.1".into(), "::1".into()],
    )?;
    let tls =
        crate::tls::server_config(&server_cert.cert_pem, &server_cert.key_pem, ca.cert_pem())?;
    let auth = Authenticator::new(store.clone());
    let guard = Arc::new(crate::api::guard::Guard::new(
        store.clone(),
        cfg.edge.clone(),
    ));
    let fleet = Fleet::new(cfg.heartbeat_interval);
    let fleet_for_stop = fleet.clone();
    let ctx = Ctx {
        store: store.clone(),
        auth: auth.clone(),
        fleet: fleet.clone(),
        hub: hub.clone(),
        ca,
        traces: Traces::new(
            hub.clone(),
            FleetLink {
                store: store.clone(),
                fleet: fleet.clone(),
            },
        ),
        guard: guard.clone(),
    };

    let reflection_v1 = reflection_builder("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection_builder("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::traceflow_service_server::TraceflowServiceServer<TraceflowSvc>>()
        .await;
    health
        .set_serving::<pb::cluster_service_server::ClusterServiceServer<ClusterSvc>>()
        .await;
    health
        .set_serving::<pb::registration_service_server::RegistrationServiceServer<RegistrationSvc>>(
        )
        .await;
    health
        .set_serving::<pb::adapter_service_server::AdapterServiceServer<AdapterSvc>>()
        .await;

    for (cluster, inv) in store.inventories()? {
        if store.cluster(&cluster)?.is_some() {
            fleet.load_inventory(&cluster, inv);
        } else {
            store.delete_inventory(&cluster)?;
        }
    }
    // Inventory is a cache of what adapters report: snapshots are stored every few seconds
    // so listings survive a restart until the adapters sync again.
    let snap_fleet = fleet.clone();
    let snap_store = store.clone();
    let snapshot_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(INVENTORY_SNAPSHOT_INTERVAL);
        loop {
            tick.tick().await;
            // Encoding and writing a large fleet's snapshots is blocking work: off the workers.
            let (fleet, store) = (snap_fleet.clone(), snap_store.clone());
            let _ = tokio::task::spawn_blocking(move || {
                fleet.drain_dirty(|cluster, inv| {
                    if let Err(error) = store.put_inventory(cluster, inv) {
                        tracing::warn!(%error, cluster, "cannot store inventory snapshot");
                    }
                })
            })
            .await;
        }
    });

    let retention = cfg.retention;
    let retention_hub = hub.clone();
    let edge = cfg.edge.clone();
    let retention_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match enforce_retention(&retention_hub, &retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention deleted finished traces"),
                Err(error) => tracing::warn!(%error, "retention failed"),
            }
            let store = retention_hub.store();
            let oldest = now_micros() - edge.audit_max_age.as_micros() as i64;
            match store.prune_audit(edge.audit_max_count, oldest) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit log pruned"),
                Err(error) => tracing::warn!(%error, "audit pruning failed"),
            }
            match store.purge_tokens(now_micros()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "spent or expired tokens purged"),
                Err(error) => tracing::warn!(%error, "token purge failed"),
            }
        }
    });

    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, data_dir = %cfg.data_dir.display(), "manager serving");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        // A half-open peer (adapter host gone, cable cut) is noticed within seconds.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .layer(crate::telemetry::MetricsLayer::new(auth.clone()))
        .layer(crate::console::ConsoleLayer::new(console))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::api::access::AccessLayer::new(auth.clone(), guard))
        // Each service decodes at most what its largest honest request needs; more is
        // refused by tonic (RESOURCE_EXHAUSTED) before a handler sees it.
        .add_service(
            pb::traceflow_service_server::TraceflowServiceServer::new(TraceflowSvc {
                ctx: ctx.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::cluster_service_server::ClusterServiceServer::new(ClusterSvc { ctx: ctx.clone() })
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::user_service_server::UserServiceServer::new(UserSvc { ctx: ctx.clone() })
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::registration_service_server::RegistrationServiceServer::new(RegistrationSvc {
                ctx: ctx.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::adapter_service_server::AdapterServiceServer::new(AdapterSvc {
                auth: auth.clone(),
                fleet,
                hub,
                store: store.clone(),
                max_inventory_objects: cfg.edge.max_inventory_objects,
            })
            .max_decoding_message_size(MAX_ADAPTER_MESSAGE_BYTES),
        )
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(health_svc)
        .serve_with_incoming_shutdown(
            crate::tls::incoming(
                listener,
                tls,
                crate::tls::ConnectionLimits::new(
                    cfg.edge.max_connections,
                    cfg.edge.max_connections_per_address,
                ),
            ),
            async {
                let _ = stop_rx.await;
            },
        );
    tokio::pin!(server);
    // Adapter streams and watches never end by themselves: after the shutdown signal, open
    // streams get SHUTDOWN_GRACE to finish, then the server stops regardless.
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!("streams still open after the grace period; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    retention_task.abort();
    snapshot_task.abort();
    fleet_for_stop.drain_dirty(|cluster, inv| {
        let _ = store.put_inventory(cluster, inv);
    });
    store.flush_blocking()?;
    result?;
    Ok(())
}

/// Connections the kernel may hold before the manager accepts them (capped by
/// net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `listen`, writes `D/listen.addr` with the bound address, and returns the listener.
pub async fn bind(data_dir: &Path, listen: SocketAddr) -> Result<TcpListener, ServeError> {
    let at = |e| io_err(Path::new("listen address"))(e);
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(at)?;
    socket.set_reuseaddr(true).map_err(at)?;
    socket.bind(listen).map_err(at)?;
    // A deep accept queue: under a burst of connections (a fleet reconnecting, a flood) a
    // short one overflows between two wake-ups of the accept loop, and every SYN dropped
    // costs its client a 1 s retransmission.
    let listener = socket.listen(LISTEN_BACKLOG).map_err(at)?;
    let addr = listener
        .local_addr()
        .map_err(io_err(Path::new("listen address")))?;
    write_file(
        &data_dir.join("listen.addr"),
        format!("{addr}\n").as_bytes(),
        FILE_MODE,
    )?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supplied_ca_is_adopted_once_and_a_different_one_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pem = |name: &str, ca: &CertificateAuthority| -> std::io::Result<(PathBuf, PathBuf)> {
            let cert = dir.path().join(format!("{name}.pem"));
            let key = dir.path().join(format!("{name}-key.pem"));
            std::fs::write(&cert, ca.cert_pem())?;
            std::fs::write(&key, ca.key_pem())?;
            Ok((cert, key))
        };
        let ours = CertificateAuthority::generate("operator CA")?;
        let files = pem("ours", &ours)?;
        let data = dir.path().join("data");
        let opened = open_data_dir_with_ca(&data, Some(&files))?;
        assert_eq!(opened.ca.cert_pem(), ours.cert_pem());
        assert_eq!(
            std::fs::read_to_string(data.join("ca.pem"))?,
            ours.cert_pem()
        );
        drop(opened);
        // Restarting with the same Secret, or without one, keeps it.
        drop(open_data_dir_with_ca(&data, Some(&files))?);
        assert_eq!(open_data_dir(&data)?.ca.cert_pem(), ours.cert_pem());
        let other = pem("other", &CertificateAuthority::generate("another CA")?)?;
        assert!(matches!(
            open_data_dir_with_ca(&data, Some(&other)),
            Err(ServeError::CaMismatch)
        ));
        Ok(())
    }
}
