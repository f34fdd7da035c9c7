//! The access table, in process: the real server (TLS, every service, the AccessLayer) on
//! port 0 inside this test, and every method of `api::access::METHODS` called by every kind of
//! caller. The expected outcome of each call comes from the table itself, so a method added to
//! the table is covered here without editing this file, and one missing from it is denied.

use std::{path::Path, time::Duration};

use tokio::sync::oneshot;
use tonic::{
    Code, Request,
    transport::{Channel, Endpoint},
};
use traceflow_manager::{
    accounts::{Credential, upsert_user},
    api::access::{Access, METHODS},
    auth::Role,
    server::{self, ServeConfig},
    store::{ClusterRecord, now_micros},
};
use traceflow_pki::IdentityKind;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Who calls.
#[derive(Clone)]
enum Caller {
    Anonymous,
    Cluster {
        cert: String,
        key: String,
    },
    UserCert {
        role: Role,
        cert: String,
        key: String,
    },
    UserToken {
        role: Role,
        token: String,
    },
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::Cluster { .. } => f.write_str("cluster certificate"),
            Caller::UserCert { role, .. } => write!(f, "{role} user by certificate"),
            Caller::UserToken { role, .. } => write!(f, "{role} user by bearer token"),
        }
    }
}

struct InProcess {
    addr: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    callers: Vec<Caller>,
}

impl InProcess {
    /// A manager in this process with a registered cluster and a user of each role, by
    /// certificate and by bearer token.
    async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let data = server::open_data_dir(dir.path())?;
        let mut callers = vec![Caller::Anonymous];
        for role in [Role::View, Role::Edit, Role::Admin] {
            let name = format!("u-{role}");
            let ttl = std::time::Duration::from_secs(3600);
            let (_, token) =
                upsert_user(&data.store, &name, role, Credential::Bearer { ttl }, "test")?;
            let token = token.ok_or("no token issued")?.secret;
            let issued = data.ca.issue(&name, IdentityKind::User, &[])?;
            let serial = issued.serial.clone();
            upsert_user(
                &data.store,
                &name,
                role,
                Credential::Certificate { serial },
                "test",
            )?;
            callers.push(Caller::UserCert {
                role,
                cert: issued.cert_pem,
                key: issued.key_pem,
            });
            callers.push(Caller::UserToken { role, token });
        }
        let cluster = data.ca.issue("alpha", IdentityKind::Cluster, &[])?;
        data.store.put_cluster(&ClusterRecord {
            name: "alpha".into(),
            certificate_serial: cluster.serial.clone(),
            certificate_not_after: 0,
            registered_micros: now_micros(),
            last_heartbeat_micros: 0,
        })?;
        callers.push(Caller::Cluster {
            cert: cluster.cert_pem,
            key: cluster.key_pem,
        });
        data.store.flush_blocking()?;
        let ca_pem = data.ca.cert_pem().to_string();
        let listener = server::bind(dir.path(), "127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr()?.to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let cfg = config(dir.path());
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = server::run(cfg, data, listener, shutdown).await {
                eprintln!("in-process manager stopped: {e}");
            }
        });
        Ok(InProcess {
            addr,
            ca_pem,
            stop: Some(stop),
            _dir: dir,
            callers,
        })
    }

    async fn channel(&self, caller: &Caller) -> Result<Channel, Error> {
        let identity = match caller {
            Caller::Cluster { cert, key } | Caller::UserCert { cert, key, .. } => {
                Some((cert.as_str(), key.as_str()))
            }
            _ => None,
        };
        let tls = traceflow_pki::tonic_client_tls(&self.ca_pem, identity, "localhost");
        Ok(Endpoint::from_shared(format!("https://{}", self.addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        data_dir: dir.to_path_buf(),
        heartbeat_interval: Duration::from_secs(1),
        retention: server::Retention::default(),
        console_dir: None,
        ca_files: None,
        edge: Default::default(),
    }
}

/// Calls `path` with an empty request message (every request message decodes from no bytes)
/// and returns the status code; OK when the call got past the access check and succeeded.
async fn call(ch: Channel, caller: &Caller, path: &'static str) -> Result<Code, Error> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await?;
    let mut req = Request::new(());
    if let Caller::UserToken { token, .. } = caller {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    // Streaming methods are called as streams too, so an allowed call is not mistaken for a
    // refused one by a unary client expecting exactly one message.
    let streaming = path.path().ends_with("/Attach")
        || path.path().ends_with("/WatchTraceflow")
        || path.path().ends_with("ServerReflectionInfo")
        || path.path().ends_with("Health/Watch");
    let result = if streaming {
        let req = req.map(|()| tokio_stream::iter([()]));
        let res = tokio::time::timeout(Duration::from_secs(5), grpc.streaming(req, path, codec))
            .await
            .map_err(|_| "streaming call did not answer")?;
        res.map(|_| ())
    } else {
        grpc.unary(req, path, codec).await.map(|_| ())
    };
    Ok(match result {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    })
}

/// Whether `caller` may call a method that needs `access`.
fn allowed(caller: &Caller, access: Access) -> bool {
    match (access, caller) {
        (Access::Anonymous, _) => true,
        (Access::Cluster, Caller::Cluster { .. }) => true,
        (Access::User(need), Caller::UserCert { role, .. } | Caller::UserToken { role, .. }) => {
            *role >= need
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_by_every_caller_follows_the_table() -> Result<(), Error> {
    let m = InProcess::start().await?;
    let mut checked = 0;
    for caller in &m.callers {
        for (path, access) in METHODS {
            let code = call(m.channel(caller).await?, caller, path).await?;
            if allowed(caller, *access) {
                assert!(
                    code != Code::PermissionDenied && code != Code::Unauthenticated,
                    "{caller:?} should pass the access check of {path}, got {code:?}"
                );
            } else {
                // No credential at all is UNAUTHENTICATED; a credential without the right
                // is PERMISSION_DENIED.
                let want = match caller {
                    Caller::Anonymous => Code::Unauthenticated,
                    _ => Code::PermissionDenied,
                };
                assert_eq!(code, want, "{caller:?} calling {path}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, m.callers.len() * METHODS.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_missing_from_the_table_is_denied_to_everyone() -> Result<(), Error> {
    let m = InProcess::start().await?;
    for caller in &m.callers {
        let code = call(
            m.channel(caller).await?,
            caller,
            "/traceflow.v1.TraceflowService/NotInTheTable",
        )
        .await?;
        assert_eq!(code, Code::PermissionDenied, "{caller:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusal_names_the_role_needed_and_the_caller_role() -> Result<(), Error> {
    let m = InProcess::start().await?;
    let viewer = m
        .callers
        .iter()
        .find(|c| {
            matches!(
                c,
                Caller::UserCert {
                    role: Role::View,
                    ..
                }
            )
        })
        .ok_or("no view user")?;
    let mut grpc = tonic::client::Grpc::new(m.channel(viewer).await?);
    grpc.ready().await?;
    let status = grpc
        .unary(
            Request::new(()),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/traceflow.v1.TraceflowService/CreateTraceflow",
            ),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .err()
        .ok_or("a view user created a trace")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("TraceflowService.CreateTraceflow requires role edit"),
        "{status:?}"
    );
    assert!(status.message().contains("has role view"), "{status:?}");
    Ok(())
}
