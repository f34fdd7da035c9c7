//! Fakes for in-process adapter tests: a scripted Kubernetes API (list + watch over plain HTTP
//! on loopback), a manager (registration + AdapterService over mTLS) and agent identities.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream, TcpListenerStream};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1 as pb;

type Body = BoxBody<Bytes, Infallible>;
/// The sender to the currently attached adapter's stream, once one attached.
type Outbound = Arc<Mutex<Option<mpsc::Sender<Result<pb::ManagerMessage, tonic::Status>>>>>;

/// A fake API server: objects per collection path, watch events broadcast per path.
#[derive(Clone)]
pub struct FakeApi {
    lists: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    /// PATCH requests: (path, body).
    patches: mpsc::UnboundedSender<(String, Value)>,
    pub patched: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>>,
    events: broadcast::Sender<(String, Value)>,
    pub addr: SocketAddr,
}

fn full(status: u16, v: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (events, _) = broadcast::channel(1024);
        let (patches, patched) = mpsc::unbounded_channel();
        let api = FakeApi {
            lists: Arc::default(),
            patches,
            patched: Arc::new(tokio::sync::Mutex::new(patched)),
            events,
            addr,
        };
        let served = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let api = served.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        api
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if req.method() == hyper::Method::PATCH {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = self.patches.send((path, v.clone()));
            return full(200, v);
        }
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
        let items = self.lists.lock().expect("lock").get(&path).cloned();
        let Some(items) = items else {
            return full(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
            );
        };
        if !watch {
            return full(
                200,
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
            );
        }
        let rx = BroadcastStream::new(self.events.subscribe());
        let stream = rx.filter_map(move |e| {
            let path = path.clone();
            async move {
                match e {
                    Ok((p, ev)) if p == path => Some(Ok::<_, Infallible>(Frame::data(
                        Bytes::from(format!("{ev}\n")),
                    ))),
                    _ => None,
                }
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    }

    /// Sets the objects a list of `path` returns (and makes the path exist).
    pub fn set(&self, path: &str, items: Vec<Value>) {
        self.lists
            .lock()
            .expect("lock")
            .insert(path.to_string(), items);
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) to watchers of `path`.
    pub fn event(&self, path: &str, kind: &str, obj: Value) {
        let _ = self
            .events
            .send((path.to_string(), json!({"type": kind, "object": obj})));
    }

    pub fn kubeconfig(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: abc\n",
            self.addr
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }
}

pub fn node(name: &str, cidr: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "resourceVersion": "1"},
           "spec": {"podCIDRs": [cidr]},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

pub fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "labels": {"app": name}},
           "spec": {"nodeName": node, "containers": [{"name": "c"}]},
           "status": {"podIPs": [{"ip": ip}], "podIP": ip}})
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "resourceVersion": "1"}})
}

pub fn service(ns: &str, name: &str, ip: &str, port: i32) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
           "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"protocol": "TCP", "port": port, "targetPort": 8080}]}})
}

/// Fills the fake API with a two-Node cluster and one Pod whose IP is invalid (to be skipped).
pub fn standard_cluster(api: &FakeApi) {
    api.set(
        "/api/v1/nodes",
        vec![
            node("n1", "10.10.1.0/24", "192.168.77.1"),
            node("n2", "10.10.2.0/24", "192.168.77.2"),
        ],
    );
    api.set(
        "/api/v1/namespaces",
        vec![namespace("default"), namespace("web")],
    );
    api.set(
        "/api/v1/pods",
        vec![
            pod("default", "p0", "n1", "10.10.1.2"),
            pod("default", "p1", "n2", "10.10.2.3"),
            pod("default", "bad", "n1", "10.10.1.999"),
        ],
    );
    api.set(
        "/api/v1/services",
        vec![service("web", "api", "10.96.0.10", 80)],
    );
    api.set("/apis/networking.k8s.io/v1/networkpolicies", vec![]);
}

/// A fake manager: registration with one valid token, and AdapterService recording messages.
pub struct FakeManager {
    pub addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    /// Messages received from adapters.
    pub inbound: mpsc::UnboundedReceiver<pb::AdapterMessage>,
    /// Send ManagerMessages to the currently attached adapter.
    pub outbound: Outbound,
    pub attached_as: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct ManagerSvc {
    ca: Arc<CertificateAuthority>,
    token: String,
    inbound: mpsc::UnboundedSender<pb::AdapterMessage>,
    outbound: Outbound,
    attached_as: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl pb::registration_service_server::RegistrationService for ManagerSvc {
    async fn register(
        &self,
        req: tonic::Request<pb::RegisterRequest>,
    ) -> Result<tonic::Response<pb::RegisterResponse>, tonic::Status> {
        let req = req.into_inner();
        if req.token != self.token {
            return Err(tonic::Status::permission_denied(
                "bootstrap token was already used",
            ));
        }
        let issued = self
            .ca
            .sign_csr(&req.csr_pem, &req.cluster, IdentityKind::Cluster)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(pb::RegisterResponse {
            certificate_pem: issued.cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
        }))
    }
}

type ManagerStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::ManagerMessage, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::adapter_service_server::AdapterService for ManagerSvc {
    type AttachStream = ManagerStream;
    async fn attach(
        &self,
        req: tonic::Request<tonic::Streaming<pb::AdapterMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, tonic::Status> {
        let id = traceflow_pki::request_identity(&req)
            .and_then(Result::ok)
            .ok_or_else(|| tonic::Status::unauthenticated("certificate required"))?;
        if id.kind != IdentityKind::Cluster {
            return Err(tonic::Status::permission_denied("not a cluster"));
        }
        self.attached_as.lock().expect("lock").push(id.name);
        let (tx, rx) = mpsc::channel(1024);
        *self.outbound.lock().expect("lock") = Some(tx);
        let mut inbound = req.into_inner();
        let fwd = self.inbound.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let _ = fwd.send(m);
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx).boxed()))
    }
}

impl FakeManager {
    pub async fn start(token: &str) -> FakeManager {
        let ca = Arc::new(CertificateAuthority::generate("manager ca").expect("ca"));
        let server = ca
            .issue_server(
                "traceflow-manager",
                &["localhost".into(), "127.0.0.1".into()],
            )
            .expect("server cert");
        let tls =
            traceflow_pki::tonic_server_tls(&server.cert_pem, &server.key_pem, ca.cert_pem(), true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (in_tx, inbound) = mpsc::unbounded_channel();
        let outbound = Arc::new(Mutex::new(None));
        let attached_as = Arc::new(Mutex::new(Vec::new()));
        let svc = ManagerSvc {
            ca: ca.clone(),
            token: token.to_string(),
            inbound: in_tx,
            outbound: outbound.clone(),
            attached_as: attached_as.clone(),
        };
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("tls")
                .add_service(
                    pb::registration_service_server::RegistrationServiceServer::new(svc.clone()),
                )
                .add_service(pb::adapter_service_server::AdapterServiceServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        FakeManager {
            addr,
            ca,
            inbound,
            outbound,
            attached_as,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn write_ca(&self, dir: &Path) -> std::path::PathBuf {
        let p = dir.join("manager-ca.pem");
        std::fs::write(&p, self.ca.cert_pem()).expect("write ca");
        p
    }

    /// Sends a message to the attached adapter.
    pub async fn send(&self, m: pb::manager_message::Kind) {
        let tx = self
            .outbound
            .lock()
            .expect("lock")
            .clone()
            .expect("adapter attached");
        tx.send(Ok(pb::ManagerMessage { kind: Some(m) }))
            .await
            .expect("send");
    }

    /// Ends the attached adapter's stream with an error status.
    pub async fn break_stream(&self) {
        let tx = self
            .outbound
            .lock()
            .expect("lock")
            .take()
            .expect("adapter attached");
        tx.send(Err(tonic::Status::unavailable("manager restarting")))
            .await
            .expect("send");
    }

    /// The next inbound message matching `f`, within 20 s.
    pub async fn next_matching<T>(
        &mut self,
        mut f: impl FnMut(pb::adapter_message::Kind) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let m = tokio::time::timeout_at(deadline, self.inbound.recv())
                .await
                .expect("manager waited too long")
                .expect("inbound closed");
            if let Some(t) = m.kind.and_then(&mut f) {
                return t;
            }
        }
    }
    /// Waits (20 s) for the adapter's next hello.
    pub async fn hello(&mut self) {
        self.next_matching(|k| matches!(k, pb::adapter_message::Kind::Hello(_)).then_some(()))
            .await;
    }
}
