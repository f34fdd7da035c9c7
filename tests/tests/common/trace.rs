//! Traces through a running lab: the manager's gRPC API with the admin certificate from the
//! lab's tfctl config, `tfctl` runs, and the full ordered observation check every suite uses.
//!
//! Observations are compared in their proto3 JSON form (what `tfctl -o json` prints and what
//! pbjson makes of a gRPC `NodeResult`), so one checker serves both entry points.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use traceflow_proto::v1::{
    self as pb, cluster_service_client::ClusterServiceClient,
    traceflow_service_client::TraceflowServiceClient, user_service_client::UserServiceClient,
};

use super::{Lab, bin_dir};

/// The binaries every lab suite runs; panics with the fix when one is missing.
pub fn require_binaries() {
    for bin in [
        "traceflow-manager",
        "traceflow-adapter",
        "traceflow-agent",
        "tfctl",
    ] {
        assert!(
            bin_dir().join(bin).is_file(),
            "{bin} is not in {}: run `cargo build --workspace --bins` first",
            bin_dir().display()
        );
    }
}

/// `up` and the tfctl config path it printed on its last stdout line.
pub fn up_with_config(lab: &mut Lab, topology: &Path) -> PathBuf {
    let out = lab.up(topology, &["--ready-timeout", "90s"]);
    let last = out.lines().last().unwrap_or_default();
    match last.strip_prefix("export TFCTL_CONFIG=") {
        Some(cfg) if Path::new(cfg).is_file() => PathBuf::from(cfg),
        _ => panic!("last stdout line of up is not `export TFCTL_CONFIG=<file>`: {out}"),
    }
}

/// A multi-threaded runtime for a test body.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

/// `server:` of the lab's (single-context) tfctl config.
pub fn manager_url(cfg: &Path) -> String {
    let text = std::fs::read_to_string(cfg).unwrap_or_default();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("server:"))
        .map(|s| s.trim().to_string());
    match url {
        Some(u) => u,
        None => panic!("{} names no server: {text}", cfg.display()),
    }
}

/// `tfctl ARGS` with the lab's config.
pub fn tfctl(cfg: &Path, args: &[&str]) -> Output {
    match Command::new(bin_dir().join("tfctl"))
        .args(args)
        .env("TFCTL_CONFIG", cfg)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run tfctl: {e}"),
    }
}

/// `tfctl traceflow --cluster C ARGS -o json`: the printed object, or why there is none.
pub fn tfctl_trace(cfg: &Path, cluster: &str, args: &[&str]) -> Result<(Output, Value), String> {
    let mut all = vec!["traceflow", "--cluster", cluster, "-o", "json"];
    all.extend_from_slice(args);
    let out = tfctl(cfg, &all);
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("tfctl {all:?} printed no JSON ({e}): {}", super::text(&out)))?;
    Ok((out, v))
}

/// The manager's user-facing services, as the lab's admin.
#[derive(Clone)]
pub struct Api {
    pub traces: TraceflowServiceClient<Channel>,
    pub clusters: ClusterServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
}

impl Api {
    /// Connects with the server, CA and client certificate named in the tfctl config `cfg`.
    pub async fn connect(cfg: &Path) -> Result<Self, String> {
        let channel = traceflow_lab::client::connect(cfg).await?;
        Ok(Self {
            traces: TraceflowServiceClient::new(channel.clone()),
            clusters: ClusterServiceClient::new(channel.clone()),
            users: UserServiceClient::new(channel),
        })
    }

    /// The cluster's Pods once the manager's inventory lists at least `want` of them (so the
    /// manager, not the adapter, answers the inventory-backed admission checks).
    pub async fn wait_pods(
        &mut self,
        cluster: &str,
        want: usize,
    ) -> Result<Vec<pb::InventoryPod>, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let req = pb::ListInventoryRequest {
                cluster: cluster.into(),
                page_size: 1000,
                ..Default::default()
            };
            let pods = self
                .clusters
                .list_pods(req)
                .await
                .map(|r| r.into_inner().pods)
                .unwrap_or_default();
            if pods.len() >= want {
                return Ok(pods);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "cluster {cluster}: {} Pods in the manager's inventory after 30s, want {want}",
                    pods.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The cluster's Nodes.
    pub async fn nodes(&mut self, cluster: &str) -> Result<Vec<pb::InventoryNode>, String> {
        let req = pb::ListInventoryRequest {
            cluster: cluster.into(),
            page_size: 1000,
            ..Default::default()
        };
        self.clusters
            .list_nodes(req)
            .await
            .map(|r| r.into_inner().nodes)
            .map_err(|s| format!("ListNodes {cluster}: {s:?}"))
    }

    /// CreateTraceflow.
    pub async fn create(
        &mut self,
        cluster: &str,
        spec: pb::TraceflowSpec,
    ) -> Result<pb::Traceflow, tonic::Status> {
        let req = pb::CreateTraceflowRequest {
            cluster: cluster.into(),
            spec: Some(spec),
            name: String::new(),
        };
        self.traces
            .create_traceflow(req)
            .await
            .map(|r| r.into_inner())
    }

    /// WatchTraceflow until a terminal phase (or `wait` passes): the last snapshot.
    pub async fn watch_done(&mut self, uid: &str, wait: Duration) -> Result<pb::Traceflow, String> {
        let req = pb::WatchTraceflowRequest {
            uid: uid.into(),
            name: String::new(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut stream = self
            .traces
            .watch_traceflow(req)
            .await
            .map_err(|s| format!("WatchTraceflow {uid}: {s:?}"))?
            .into_inner();
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(t))) => {
                    let done = is_terminal(&t);
                    last = Some(t);
                    if done {
                        break;
                    }
                }
                Ok(Some(Err(s))) => return Err(format!("WatchTraceflow {uid}: {s:?}")),
                Ok(None) | Err(_) => break,
            }
        }
        match last {
            Some(t) if is_terminal(&t) => Ok(t),
            Some(t) => Err(format!("not terminal after {wait:?}: {:#}", to_json(&t))),
            None => Err(format!("WatchTraceflow {uid}: no snapshot")),
        }
    }

    /// Create, then watch to the end.
    pub async fn run(
        &mut self,
        cluster: &str,
        spec: pb::TraceflowSpec,
    ) -> Result<pb::Traceflow, String> {
        let t = self
            .create(cluster, spec)
            .await
            .map_err(|s| format!("CreateTraceflow: {s:?}"))?;
        self.watch_done(&t.uid, Duration::from_secs(30)).await
    }
}

/// Succeeded or Failed.
pub fn is_terminal(t: &pb::Traceflow) -> bool {
    let p = t.status.as_ref().map_or(0, |s| s.phase);
    p == pb::TraceflowPhase::Succeeded as i32 || p == pb::TraceflowPhase::Failed as i32
}

/// The phase name (`Succeeded`, ...).
pub fn phase(t: &pb::Traceflow) -> &'static str {
    let p = t.status.as_ref().map_or(0, |s| s.phase);
    pb::TraceflowPhase::try_from(p).map_or("?", |p| p.as_str_name())
}

/// A trace in proto3 JSON, for messages and for [`check_results`].
pub fn to_json<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The results of a gRPC trace in proto3 JSON.
pub fn results_json(t: &pb::Traceflow) -> Value {
    to_json(&t.status.clone().unwrap_or_default().results)
}

/// A spec from `ns/pod` to a destination, with an optional packet.
pub fn spec(src: &str, dst: pb::Destination, packet: Option<pb::Packet>) -> pb::TraceflowSpec {
    let (namespace, pod) = src.split_once('/').unwrap_or(("default", src));
    pb::TraceflowSpec {
        source: Some(pb::Source {
            namespace: namespace.into(),
            pod: pod.into(),
            ip: String::new(),
        }),
        destination: Some(dst),
        packet,
        ..Default::default()
    }
}

/// Destination Pod `ns/name`.
pub fn to_pod(dst: &str) -> pb::Destination {
    let (namespace, pod) = dst.split_once('/').unwrap_or(("default", dst));
    pb::Destination {
        namespace: namespace.into(),
        pod: pod.into(),
        ..Default::default()
    }
}

/// Destination IP.
pub fn to_ip(ip: &str) -> pb::Destination {
    pb::Destination {
        ip: ip.into(),
        ..Default::default()
    }
}

/// What one Node must report, in order.
#[derive(Debug, Clone)]
pub struct NodeWant {
    pub node: String,
    pub role: &'static str,
    pub observations: Vec<Value>,
}

/// The sender Node's result.
pub fn sender(node: &str, observations: Vec<Value>) -> NodeWant {
    NodeWant {
        node: node.into(),
        role: "sender",
        observations,
    }
}

/// A receiving Node's result.
pub fn receiver(node: &str, observations: Vec<Value>) -> NodeWant {
    NodeWant {
        node: node.into(),
        role: "receiver",
        observations,
    }
}

/// `SpoofGuard Forwarded (srcPodIP)`.
pub fn spoofguard(src_pod_ip: &str) -> Value {
    json!({"component": "SpoofGuard", "action": "Forwarded", "srcPodIP": src_pod_ip})
}

/// `Forwarding Output <action>`.
pub fn output(action: &str) -> Value {
    json!({"component": "Forwarding", "componentInfo": "Output", "action": action})
}

/// `Forwarding Output Forwarded (tunnelDstIP)`.
pub fn output_tunnel(tunnel_dst_ip: &str) -> Value {
    json!({"component": "Forwarding", "componentInfo": "Output", "action": "Forwarded",
           "tunnelDstIP": tunnel_dst_ip})
}

/// `Forwarding Received`.
pub fn received() -> Value {
    json!({"component": "Forwarding", "action": "Received"})
}

fn positive(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => s.parse::<i64>().is_ok_and(|n| n > 0),
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n > 0),
        _ => false,
    }
}

/// Checks `results` (proto3 JSON NodeResults) against `want` exactly: the Nodes in hop order
/// with their roles and a positive `timestamp`; per Node, exactly the wanted observations in
/// order (every field but `sequence` and `timestampMicros` compared, so an extra field fails);
/// `sequence` running 1..n across all Nodes; every `timestampMicros` > 0.
pub fn check_results(results: &Value, want: &[NodeWant]) -> Result<(), String> {
    let fail = |why: String| Err(format!("{why}\nresults: {results:#}\nwant: {want:#?}"));
    let Some(got) = results.as_array() else {
        return fail("results is not an array".into());
    };
    if got.len() != want.len() {
        return fail(format!("{} NodeResults, want {}", got.len(), want.len()));
    }
    let mut seq = 0u64;
    for (r, w) in got.iter().zip(want) {
        let node = r.get("node").and_then(Value::as_str).unwrap_or("");
        let role = r.get("role").and_then(Value::as_str).unwrap_or("");
        if node != w.node || role != w.role {
            return fail(format!(
                "NodeResult ({node}, {role}), want ({}, {})",
                w.node, w.role
            ));
        }
        if !positive(r.get("timestamp")) {
            return fail(format!("{node}: timestamp not > 0"));
        }
        let obs = r
            .get("observations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut bare = Vec::new();
        for o in &obs {
            seq += 1;
            if o.get("sequence").and_then(Value::as_u64) != Some(seq) {
                return fail(format!("{node}: observation {o} has not sequence {seq}"));
            }
            if !positive(o.get("timestampMicros")) {
                return fail(format!(
                    "{node}: observation {o} has no timestampMicros > 0"
                ));
            }
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("sequence");
                m.remove("timestampMicros");
            }
            bare.push(o);
        }
        if bare != w.observations {
            return fail(format!(
                "{node}: observations {}\nwant {}",
                Value::Array(bare),
                Value::Array(w.observations.clone())
            ));
        }
    }
    Ok(())
}

/// The first IP of `pod` in the wanted family.
pub fn pod_ip(pods: &[pb::InventoryPod], ns_name: &str, ipv6: bool) -> Result<String, String> {
    let (ns, name) = ns_name.split_once('/').unwrap_or(("default", ns_name));
    pods.iter()
        .find(|p| p.namespace == ns && p.name == name)
        .and_then(|p| {
            p.ips
                .iter()
                .find(|ip| ip.contains(':') == ipv6)
                .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        })
        .ok_or_else(|| {
            format!(
                "no {} address for Pod {ns_name}",
                if ipv6 { "IPv6" } else { "IPv4" }
            )
        })
}

/// The gateway address of a Node's Pod CIDR (its first address).
pub fn gateway_ip(node: &pb::InventoryNode, ipv6: bool) -> Result<String, String> {
    node.pod_cidrs
        .iter()
        .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
        .find(|c| c.addr().is_ipv6() == ipv6)
        .map(|c| match c.network() {
            std::net::IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + 1).to_string(),
            std::net::IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + 1).to_string(),
        })
        .ok_or_else(|| format!("Node {} has no Pod CIDR of that family", node.name))
}

/// `NetworkPolicy <table> <action>`, with `networkPolicy` and `networkPolicyRule` when not
/// empty (e.g. `("IngressMetric", "Dropped", "AntreaClusterNetworkPolicy:deny-db",
/// "drop-3306")`, or `("EgressDefaultRule", "Dropped", "", "")`).
pub fn network_policy(table: &str, action: &str, policy: &str, rule: &str) -> Value {
    let mut o = json!({"component": "NetworkPolicy", "componentInfo": table, "action": action});
    if !policy.is_empty() {
        o["networkPolicy"] = policy.into();
    }
    if !rule.is_empty() {
        o["networkPolicyRule"] = rule.into();
    }
    o
}

/// The first InternalIP of Node `name` in the wanted family (IPv4: the underlay address a
/// tunnel to that Node goes to, i.e. its `tunnelDstIP`).
pub fn node_ip(nodes: &[pb::InventoryNode], name: &str, ipv6: bool) -> Result<String, String> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| n.internal_ips.iter().find(|ip| ip.contains(':') == ipv6))
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        .ok_or_else(|| {
            format!(
                "no {} InternalIP for Node {name}",
                if ipv6 { "IPv6" } else { "IPv4" }
            )
        })
}

/// `Ok` when no case failed, else every failure, numbered.
pub fn all_passed(failures: Vec<String>) -> Result<(), String> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n----\n")
        ))
    }
}
