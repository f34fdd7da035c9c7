//! Who may call what: one table of every gRPC method this port serves, applied in front of
//! every service.
//!
//! ```text
//!   request ─▶ AccessLayer ─┬─ not gRPC (console, metrics, 404s) ─▶ inner, unchanged
//!                           ├─ path not in METHODS ───────────────▶ PERMISSION_DENIED
//!                           ├─ Anonymous: source under its rate ──▶ inner
//!                           └─ Cluster / User(role): authenticate ─▶ inner, with the
//!                              (cert or bearer) and check          Principal in extensions
//! ```
//!
//! Per source address ([`Guard`]): anonymous calls and failed authentications are rate limited
//! (RESOURCE_EXHAUSTED), counted in metrics and audited once per burst, without payload.
//!
//! A method missing from [`METHODS`] is denied, so a new RPC is unreachable until someone
//! decides its role here. Handlers read the caller with [`caller`]; none names a role itself.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::{
    codegen::http::{Request, Response, header},
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{error::ApiError, guard::Guard};
use crate::auth::{Authenticator, Principal, Role};

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential (registration presents a bootstrap token in its body; health probes).
    Anonymous,
    /// A current cluster certificate (the adapter's stream).
    Cluster,
    /// A user with at least this role (client certificate or bearer token).
    User(Role),
}

/// Every method served on the manager's port and what it needs. The only place roles are
/// decided (reference: the seed's RBAC: view reads, edit also runs traces, admin also manages
/// clusters, tokens and users).
pub const METHODS: &[(&str, Access)] = &[
    (
        "/traceflow.v1.TraceflowService/CreateTraceflow",
        Access::User(Role::Edit),
    ),
    (
        "/traceflow.v1.TraceflowService/GetTraceflow",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.TraceflowService/ListTraceflows",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.TraceflowService/WatchTraceflow",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.TraceflowService/DeleteTraceflow",
        Access::User(Role::Edit),
    ),
    (
        "/traceflow.v1.TraceflowService/Retrace",
        Access::User(Role::Edit),
    ),
    (
        "/traceflow.v1.ClusterService/ListClusters",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/GetCluster",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/ListNodes",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/ListNamespaces",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/ListPods",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/ListServices",
        Access::User(Role::View),
    ),
    (
        "/traceflow.v1.ClusterService/CreateBootstrapToken",
        Access::User(Role::Admin),
    ),
    (
        "/traceflow.v1.ClusterService/DeregisterCluster",
        Access::User(Role::Admin),
    ),
    (
        "/traceflow.v1.UserService/CreateUser",
        Access::User(Role::Admin),
    ),
    (
        "/traceflow.v1.UserService/ListUsers",
        Access::User(Role::Admin),
    ),
    (
        "/traceflow.v1.UserService/DeleteUser",
        Access::User(Role::Admin),
    ),
    (
        "/traceflow.v1.UserService/RevokeToken",
        Access::User(Role::Admin),
    ),
    ("/traceflow.v1.UserService/WhoAmI", Access::User(Role::View)),
    (
        "/traceflow.v1.RegistrationService/Register",
        Access::Anonymous,
    ),
    (
        "/traceflow.v1.RegistrationService/RenewClusterCertificate",
        Access::Cluster,
    ),
    ("/traceflow.v1.AdapterService/Attach", Access::Cluster),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::User(Role::View),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::User(Role::View),
    ),
    ("/grpc.health.v1.Health/Check", Access::Anonymous),
    ("/grpc.health.v1.Health/Watch", Access::Anonymous),
];

/// What `path` needs according to `table`; `None` means it is not served (denied).
pub fn lookup(table: &[(&str, Access)], path: &str) -> Option<Access> {
    table.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// `Service.Method` of a listed path, for messages.
fn short(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((svc, method)) => format!("{}.{method}", svc.rsplit('.').next().unwrap_or(svc)),
        None => path.to_string(),
    }
}

/// The decision for one call: the caller to hand to the handler, or the refusal.
pub fn decide<B>(
    auth: &Authenticator,
    table: &[(&str, Access)],
    req: &Request<B>,
) -> Result<Option<Principal>, ApiError> {
    let path = req.uri().path();
    let Some(access) = lookup(table, path) else {
        return Err(ApiError::PermissionDenied(
            "this method is not served here; see the manager's API (grpc reflection)".into(),
        ));
    };
    if access == Access::Anonymous {
        return Ok(None);
    }
    let probe = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(req.headers().clone()),
        req.extensions().clone(),
        (),
    );
    let who = match access {
        Access::Cluster => {
            let (name, serial) = auth.cluster(&probe)?;
            Principal::Cluster { name, serial }
        }
        Access::User(role) => auth.require(&probe, role, &short(path))?,
        Access::Anonymous => return Ok(None),
    };
    Ok(Some(who))
}

/// The caller of an RPC, as [`AccessLayer`] authenticated it. Without one the call did not
/// pass the table, which must never happen: deny.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Principal, ApiError> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::PermissionDenied("no access decision for this call; it is refused".into())
    })
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The peer's address, from the TLS connection tonic accepted.
fn source<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
        })
        .map(|a| a.ip())
}

/// Whether the peer presented a client certificate (verified against our CA by the handshake).
fn has_certificate<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty())
}

/// Whether a refusal is about the credential itself (counts toward brute force).
fn bad_credential(e: &ApiError) -> bool {
    use crate::auth::AuthError;
    matches!(
        e,
        ApiError::Auth(
            AuthError::BadToken
                | AuthError::UnknownUser(_)
                | AuthError::Revoked(_)
                | AuthError::UserCertificateRevoked(_)
                | AuthError::BadCertificate(_)
        )
    )
}

/// Applies [`METHODS`] and the [`Guard`]'s per-source limits to every gRPC call (gRPC-Web
/// arrives here already translated).
#[derive(Debug, Clone)]
pub struct AccessLayer {
    auth: Authenticator,
    guard: Arc<Guard>,
    table: &'static [(&'static str, Access)],
}

impl AccessLayer {
    pub fn new(auth: Authenticator, guard: Arc<Guard>) -> Self {
        Self::with_table(auth, guard, METHODS)
    }

    /// With another table (tests prove that an unlisted method is denied).
    pub fn with_table(
        auth: Authenticator,
        guard: Arc<Guard>,
        table: &'static [(&'static str, Access)],
    ) -> Self {
        AccessLayer { auth, guard, table }
    }

    /// The decision for one call, with the per-source limits applied first.
    fn admit<B>(&self, req: &Request<B>) -> Result<Option<Principal>, ApiError> {
        let ip = source(req);
        let now = Instant::now();
        let guard = &self.guard;
        match (lookup(self.table, req.uri().path()), ip) {
            (Some(Access::Anonymous), Some(ip)) if !guard.anonymous.take(ip, now) => {
                guard.refused(
                    "rate-limit",
                    "",
                    Some(ip),
                    "anonymous calls over the per-address rate",
                );
                return Err(ApiError::ResourceExhausted(
                    "too many anonymous calls from this address; retry in a few seconds".into(),
                ));
            }
            // A verified client certificate cannot be guessed; bearer tokens can.
            (Some(Access::Cluster | Access::User(_)), Some(ip))
                if !has_certificate(req) && !guard.failures.has(ip, now) =>
            {
                guard.refused(
                    "rate-limit",
                    "",
                    Some(ip),
                    "failed authentications over the per-address rate",
                );
                return Err(ApiError::ResourceExhausted(
                    "too many failed authentications from this address; wait a minute, then use a valid credential".into(),
                ));
            }
            _ => {}
        }
        let decision = decide(&self.auth, self.table, req);
        if let Err(e) = &decision
            && bad_credential(e)
        {
            if let Some(ip) = ip {
                guard.failures.take(ip, now);
            }
            guard.refused(
                "authenticate",
                "",
                ip,
                "credential refused (bad bearer token, unknown user or revoked certificate)",
            );
        }
        decision
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    layer: AccessLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for AccessService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if is_grpc(&req) {
            match self.layer.admit(&req) {
                Ok(Some(who)) => {
                    req.extensions_mut().insert(who);
                }
                Ok(None) => {}
                Err(e) => {
                    let refused = tonic::Status::from(e).into_http::<ResBody>();
                    return Box::pin(async move { Ok(refused) });
                }
            }
        }
        let fut = self.inner.call(req);
        Box::pin(fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_rpc_is_listed_once() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(traceflow_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let mut served = Vec::new();
        for file in &set.file {
            for svc in &file.service {
                // The agent's service is served by the adapter, not here.
                if svc.name() == "AgentService" {
                    continue;
                }
                for m in &svc.method {
                    served.push(format!("/{}.{}/{}", file.package(), svc.name(), m.name()));
                }
            }
        }
        assert!(served.len() > 15, "descriptor has the services: {served:?}");
        for path in &served {
            assert!(lookup(METHODS, path).is_some(), "{path} has no access rule");
        }
        for (i, (p, _)) in METHODS.iter().enumerate() {
            assert!(
                METHODS[i + 1..].iter().all(|(q, _)| q != p),
                "{p} is listed twice"
            );
        }
    }

    #[test]
    fn unlisted_methods_are_denied() {
        assert_eq!(lookup(METHODS, "/traceflow.v1.TraceflowService/Nope"), None);
        assert_eq!(lookup(&METHODS[1..], METHODS[0].0), None);
    }
}
