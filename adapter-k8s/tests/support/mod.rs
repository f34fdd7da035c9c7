//! Fakes for in-process adapter tests: the lab's Kubernetes API server (in process, TLS), a
//! manager (registration + AdapterService over mTLS) and agent identities.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use traceflow_lab::kubeapi::{
    resources,
    server::{self, ApiState},
    store::{EventType, Key, Store},
};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1 as pb;

/// The sender to the currently attached adapter's stream, once one attached.
type Outbound = Arc<Mutex<Option<mpsc::Sender<Result<pb::ManagerMessage, tonic::Status>>>>>;

const API_TOKEN: &str = "adapter-test-token";

/// The Kubernetes API: the lab's own server (`traceflow_lab::kubeapi`, the one every lab
/// cluster runs) in process on port 0, over TLS with a bearer token, so the adapter's tests
/// and the lab's talk to one fake. Objects are set and changed through its store; watchers
/// see every change as the real `kube` client does.
#[derive(Clone)]
pub struct LabKubeApi {
    state: Arc<ApiState>,
    pub addr: SocketAddr,
    ca_pem: String,
    /// Traceflow objects the adapter changed (status writes): (status path, object).
    pub patched: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>>,
}

/// The resource index of a collection path (`/api/v1/pods`, `/apis/G/V/plural`).
fn resource_of(path: &str) -> (usize, bool) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, plural) = match parts.as_slice() {
        ["api", v, p] => ("", *v, *p),
        ["apis", g, v, p] => (*g, *v, *p),
        _ => panic!("not a collection path: {path}"),
    };
    let (index, rt) = resources::by_path(group, version, plural)
        .unwrap_or_else(|| panic!("the lab's API does not serve {path}"));
    (index, rt.namespaced)
}

fn key_of(resource: usize, namespaced: bool, obj: &Value) -> Key {
    let meta = |f: &str| obj["metadata"][f].as_str().unwrap_or_default().to_string();
    Key {
        resource,
        namespace: if namespaced {
            meta("namespace")
        } else {
            String::new()
        },
        name: meta("name"),
    }
}

/// `obj` without the resource version a fixture carries (the store assigns its own).
fn fresh(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    obj
}

impl LabKubeApi {
    pub async fn start() -> LabKubeApi {
        let ca = CertificateAuthority::generate("adapter tests: kube API CA").expect("CA");
        let server = ca
            .issue_server("localhost", &["localhost".into(), "127.0.0.1".into()])
            .expect("server certificate");
        let tls = traceflow_pki::rustls_server_config(&server.cert_pem, &server.key_pem)
            .expect("TLS config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = ApiState::new("c1", API_TOKEN, Store::new());
        let (patches, patched) = mpsc::unbounded_channel();
        let (_, mut changes) = {
            let store = state.store.lock().await;
            store
                .watch_from(store.resource_version())
                .expect("watch the store")
        };
        let (traceflows, _) = resource_of("/apis/crd.traceflow.io/v1beta1/traceflows");
        tokio::spawn(async move {
            while let Ok(e) = changes.recv().await {
                if e.key.resource == traceflows && e.kind == EventType::Modified {
                    let path = format!(
                        "/apis/crd.traceflow.io/v1beta1/traceflows/{}/status",
                        e.key.name
                    );
                    let _ = patches.send((path, e.object));
                }
            }
        });
        let served = state.clone();
        tokio::spawn(async move {
            let _ = server::serve(listener, tls, served, std::future::pending()).await;
        });
        LabKubeApi {
            state,
            addr,
            ca_pem: ca.cert_pem().to_string(),
            patched: Arc::new(tokio::sync::Mutex::new(patched)),
        }
    }

    /// Makes `items` the objects of collection `path` (replacing what it held).
    pub async fn set(&self, path: &str, items: Vec<Value>) {
        let (resource, namespaced) = resource_of(path);
        let mut store = self.state.store.lock().await;
        for (key, _) in store.list(resource, None) {
            store.delete(&key).expect("delete");
        }
        for item in items {
            let key = key_of(resource, namespaced, &item);
            store
                .create(resource, &key.namespace, fresh(item))
                .expect("create");
        }
    }

    /// Changes one object of `path` as a watch event of `kind` (`ADDED`, `MODIFIED`,
    /// `DELETED`) would report it.
    pub async fn event(&self, path: &str, kind: &str, obj: Value) {
        let (resource, namespaced) = resource_of(path);
        let key = key_of(resource, namespaced, &obj);
        let mut store = self.state.store.lock().await;
        match kind {
            "ADDED" => {
                store
                    .create(resource, &key.namespace, fresh(obj))
                    .expect("create");
            }
            "MODIFIED" => {
                store.replace(&key, fresh(obj), false).expect("replace");
            }
            "DELETED" => {
                store.delete(&key).expect("delete");
            }
            other => panic!("unknown watch event type {other}"),
        }
    }

    /// A kubeconfig for this server (its CA, the bearer token) in `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> std::path::PathBuf {
        let ca = dir.join("kube-ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("kube CA");
        let path = dir.join("kubeconfig");
        let text = traceflow_lab::kubeapi::kubeconfig(
            "c1",
            &format!("https://localhost:{}", self.addr.port()),
            &ca,
            API_TOKEN,
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

/// An observation of `c` doing `a` (timestamp 1), as an agent reports it.
pub fn observation(c: pb::Component, a: pb::Action) -> pb::Observation {
    pb::Observation {
        component: c as i32,
        action: a as i32,
        timestamp_micros: 1,
        ..Default::default()
    }
}

/// The packet of `inject` as the Nodes it crosses see it (addresses only).
pub fn seen(inject: &pb::InjectPacket) -> pb::Packet {
    pb::Packet {
        src_ip: inject.src_ip.clone(),
        dst_ip: inject.dst_ip.clone(),
        ..Default::default()
    }
}

/// `result` for the trace of `inject`, as an agent that saw its packet reports it: the id,
/// family and secret the packet carries, and the packet as seen (the adapter refuses a report
/// without the trace's secret).
pub fn report_of(inject: &pb::InjectPacket, result: pb::NodeResult) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Report(pb::TraceReport {
            trace_id: inject.trace_id,
            ipv6: inject.ipv6,
            result: Some(result),
            captured_packet: None,
            dataplane_tag: 0,
            secret: inject.secret,
            seen_packet: Some(seen(inject)),
        })),
    }
}

/// Fills the fake API with a two-Node cluster and one Pod whose IP is invalid (to be skipped).
pub async fn standard_cluster(api: &LabKubeApi) {
    api.set(
        "/api/v1/nodes",
        vec![
            node("n1", "10.10.1.0/24", "192.168.77.1"),
            node("n2", "10.10.2.0/24", "192.168.77.2"),
        ],
    )
    .await;
    api.set(
        "/api/v1/namespaces",
        vec![namespace("default"), namespace("web")],
    )
    .await;
    api.set(
        "/api/v1/pods",
        vec![
            pod("default", "p0", "n1", "10.10.1.2"),
            pod("default", "p1", "n2", "10.10.2.3"),
            pod("default", "bad", "n1", "10.10.1.999"),
        ],
    )
    .await;
    api.set(
        "/api/v1/services",
        vec![service("web", "api", "10.96.0.10", 80)],
    )
    .await;
    api.set("/apis/networking.k8s.io/v1/networkpolicies", vec![])
        .await;
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

    /// The real manager's renewal is tested in manager/tests/e2e and the lab; here the
    /// adapter's certificates outlive the tests.
    async fn renew_cluster_certificate(
        &self,
        _req: tonic::Request<pb::RenewClusterCertificateRequest>,
    ) -> Result<tonic::Response<pb::RenewClusterCertificateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the fake manager does not renew",
        ))
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
    /// The status of the next update that ends a trace (of `uid`, or of any trace), within 20 s.
    pub async fn ended(&mut self, uid: Option<&str>) -> pb::TraceflowStatus {
        self.next_matching(|k| match k {
            pb::adapter_message::Kind::TraceUpdate(u) if uid.is_none_or(|id| u.uid == id) => u
                .status
                .filter(|s| s.phase != pb::TraceflowPhase::Running as i32),
            _ => None,
        })
        .await
    }

    /// Waits (20 s) for the adapter's next hello.
    pub async fn hello(&mut self) {
        self.next_matching(|k| matches!(k, pb::adapter_message::Kind::Hello(_)).then_some(()))
            .await;
    }
}
