//! Topology files: multi-document YAML where a `LabCluster` document opens a cluster and the
//! ordinary Kubernetes objects after it belong to that cluster.
//!
//! ```text
//!  file ──parse──▶ documents ──validate──▶ LabClusterDoc + objects ──allocate──▶ Topology
//!                                            (names, kinds, nodeName)    (underlay, Pod IPs,
//!                                                                         MACs, cluster IPs,
//!                                                                         Node/Pod status)
//! ```
//!
//! Every error names the file, the document (1-based, as an editor counts `---` sections), the
//! object and the field.

mod model;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};

pub use model::*;

use crate::kubeapi::resources;

/// A topology that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: document {doc}: not valid YAML: {message}")]
    Yaml {
        file: String,
        doc: usize,
        message: String,
    },
    #[error("{file}: document {doc}{what}: {field}: {message}")]
    Invalid {
        file: String,
        doc: usize,
        /// " (Kind name)" or empty.
        what: String,
        field: String,
        message: String,
    },
    #[error("{file}: no LabCluster document: the first document must be a LabCluster")]
    NoCluster { file: String },
}

/// Where a problem is, while parsing one document.
struct Ctx<'a> {
    file: &'a str,
    doc: usize,
    what: String,
}

impl Ctx<'_> {
    fn err(&self, field: &str, message: impl fmt::Display) -> TopologyError {
        TopologyError::Invalid {
            file: self.file.to_string(),
            doc: self.doc,
            what: self.what.clone(),
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// A `LabCluster` document (with its document number) and the `(document, object)` pairs after it.
type PendingCluster = (usize, LabClusterDoc, Vec<(usize, Value)>);

/// Reads and resolves the topology file at `path`.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parses and resolves a topology; `file` is used in error messages only.
pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    let mut pending: Vec<PendingCluster> = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = Value::deserialize(doc).map_err(|e| TopologyError::Yaml {
            file: file.to_string(),
            doc: doc_no,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let mut ctx = Ctx {
            file,
            doc: doc_no,
            what: String::new(),
        };
        let Some(obj) = value.as_object() else {
            return Err(ctx.err("(document)", "must be a mapping with apiVersion and kind"));
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() {
            return Err(ctx.err("kind", "missing"));
        }
        if api_version.is_empty() {
            return Err(ctx.err("apiVersion", "missing"));
        }
        if kind == LAB_CLUSTER_KIND {
            ctx.what = format!(" ({LAB_CLUSTER_KIND})");
            if api_version != LAB_API_VERSION {
                return Err(ctx.err(
                    "apiVersion",
                    format!("must be {LAB_API_VERSION}, not {api_version:?}"),
                ));
            }
            let header: LabClusterDoc =
                serde_json::from_value(value.clone()).map_err(|e| ctx.err("(document)", e))?;
            pending.push((doc_no, header, Vec::new()));
            continue;
        }
        let Some((_, _, objects)) = pending.last_mut() else {
            return Err(TopologyError::NoCluster {
                file: file.to_string(),
            });
        };
        objects.push((doc_no, value));
    }
    if pending.is_empty() {
        return Err(TopologyError::NoCluster {
            file: file.to_string(),
        });
    }
    let mut clusters: Vec<Cluster> = Vec::new();
    for (index, (doc_no, header, objects)) in pending.into_iter().enumerate() {
        let cluster = resolve_cluster(file, index, doc_no, header, objects)?;
        if clusters.iter().any(|c| c.name == cluster.name) {
            return Err(TopologyError::Invalid {
                file: file.to_string(),
                doc: doc_no,
                what: format!(" ({LAB_CLUSTER_KIND} {})", cluster.name),
                field: "name".into(),
                message: "another LabCluster has this name".into(),
            });
        }
        clusters.push(cluster);
    }
    Ok(Topology { clusters })
}

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: labels joined by '.'.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn parse_cidrs(ctx: &Ctx<'_>, field: &str, raw: &[String]) -> Result<Vec<IpNet>, TopologyError> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            let net: IpNet = s
                .parse()
                .map_err(|e| ctx.err(&format!("{field}[{i}]"), format!("{s:?}: {e}")))?;
            if net.trunc() != net {
                return Err(ctx.err(
                    &format!("{field}[{i}]"),
                    format!("{s:?} has host bits set; did you mean {}?", net.trunc()),
                ));
            }
            Ok(net)
        })
        .collect()
}

/// The `n`-th address of `net` (0 = network address), if inside it.
fn nth_addr(net: &IpNet, n: u128) -> Option<IpAddr> {
    match net {
        IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u128;
            let addr = base.checked_add(n)?;
            let addr = u32::try_from(addr).ok()?;
            let ip = Ipv4Addr::from(addr);
            v4.contains(&ip).then_some(IpAddr::V4(ip))
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            let ip = Ipv6Addr::from(base.checked_add(n)?);
            v6.contains(&ip).then_some(IpAddr::V6(ip))
        }
    }
}

/// Whether `ip` is a usable host address of `net` (not the network, nor IPv4 broadcast).
fn is_host_addr(net: &IpNet, ip: &IpAddr) -> bool {
    if !net.contains(ip) || *ip == net.network() {
        return false;
    }
    !(matches!(net, IpNet::V4(_)) && *ip == net.broadcast())
}

/// FNV-1a, for stable short names and MACs derived from object names.
pub fn fnv1a(data: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn pod_mac(cluster: &str, namespace: &str, name: &str) -> String {
    let h = fnv1a(&format!("{cluster}/{namespace}/{name}")).to_be_bytes();
    // 0a:58 like the CNI bridge plugin: locally administered, unicast.
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2], h[3])
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn resolve_cluster(
    file: &str,
    index: usize,
    doc_no: usize,
    header: LabClusterDoc,
    docs: Vec<(usize, Value)>,
) -> Result<Cluster, TopologyError> {
    let mut ctx = Ctx {
        file,
        doc: doc_no,
        what: format!(" ({LAB_CLUSTER_KIND})"),
    };
    let name = match (&header.name, &header.metadata) {
        (Some(n), _) => n.clone(),
        (None, Some(m)) => m.name.clone(),
        (None, None) => return Err(ctx.err("name", "missing")),
    };
    if !is_dns_label(&name) || name.len() > 20 {
        return Err(ctx.err(
            "name",
            format!(
                "{name:?} must be a DNS label of at most 20 characters (it becomes part of \
                 network namespace names)"
            ),
        ));
    }
    ctx.what = format!(" ({LAB_CLUSTER_KIND} {name})");
    let ip_families = if header.ip_families.is_empty() {
        vec![IpFamily::IPv4]
    } else {
        header.ip_families.clone()
    };
    if ip_families.len() > 2
        || (ip_families.len() == 2 && ip_families.first() == ip_families.get(1))
    {
        return Err(ctx.err("ipFamilies", "must be [IPv4], [IPv6] or both, once each"));
    }
    let service_cidrs = parse_cidrs(&ctx, "serviceCIDRs", &header.service_cidrs)?;
    for fam in &ip_families {
        if !service_cidrs.iter().any(|n| IpFamily::of_net(n) == *fam) {
            return Err(ctx.err(
                "serviceCIDRs",
                format!("needs a {fam:?} CIDR because ipFamilies lists {fam:?}"),
            ));
        }
    }
    if header.nodes.is_empty() {
        return Err(ctx.err("nodes", "a cluster needs at least one Node"));
    }
    // Underlay: 192.168.(77+index).0/24 and fd77:0:(index)::/64 unless Nodes name addresses.
    let third = u8::try_from(77 + index).map_err(|_| {
        ctx.err(
            "(document)",
            "too many clusters for the lab's underlay ranges",
        )
    })?;
    let mut underlay: Vec<IpNet> = Vec::new();
    let default_v4: IpNet = IpNet::V4(
        ipnet::Ipv4Net::new(Ipv4Addr::new(192, 168, third, 0), 24)
            .map_err(|e| ctx.err("(document)", e))?,
    );
    let default_v6: IpNet = IpNet::V6(
        ipnet::Ipv6Net::new(Ipv6Addr::new(0xfd77, 0, index as u16, 0, 0, 0, 0, 0), 64)
            .map_err(|e| ctx.err("(document)", e))?,
    );
    let mut nodes: Vec<Node> = Vec::new();
    let mut all_pod_cidrs: Vec<(String, IpNet)> = Vec::new();
    for (i, n) in header.nodes.iter().enumerate() {
        let field = format!("nodes[{i}]");
        if !is_dns_label(&n.name) || n.name.len() > 30 {
            return Err(ctx.err(
                &format!("{field}.name"),
                format!("{:?} must be a DNS label of at most 30 characters", n.name),
            ));
        }
        if nodes.iter().any(|o| o.name == n.name) {
            return Err(ctx.err(&format!("{field}.name"), format!("{:?} twice", n.name)));
        }
        let pod_cidrs = parse_cidrs(&ctx, &format!("{field}.podCIDRs"), &n.pod_cidrs)?;
        for fam in &ip_families {
            if pod_cidrs
                .iter()
                .filter(|c| IpFamily::of_net(c) == *fam)
                .count()
                != 1
            {
                return Err(ctx.err(
                    &format!("{field}.podCIDRs"),
                    format!("needs exactly one {fam:?} CIDR because ipFamilies lists {fam:?}"),
                ));
            }
        }
        for c in &pod_cidrs {
            if !ip_families.contains(&IpFamily::of_net(c)) {
                return Err(ctx.err(
                    &format!("{field}.podCIDRs"),
                    format!("{c} is not of a family listed in ipFamilies"),
                ));
            }
            if let Some((other, _)) = all_pod_cidrs
                .iter()
                .find(|(_, o)| o.contains(c) || c.contains(o))
            {
                return Err(ctx.err(
                    &format!("{field}.podCIDRs"),
                    format!("{c} overlaps the Pod CIDR of Node {other}"),
                ));
            }
            if c.prefix_len() >= c.max_prefix_len() - 1 {
                return Err(ctx.err(
                    &format!("{field}.podCIDRs"),
                    format!("{c} is too small for a gateway and a Pod"),
                ));
            }
            all_pod_cidrs.push((n.name.clone(), *c));
        }
        let gateway_ips = pod_cidrs
            .iter()
            .filter_map(|c| nth_addr(c, 1))
            .collect::<Vec<_>>();
        let mut internal_ips: Vec<IpNet> = Vec::new();
        let given = n
            .internal_ip
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
        for (k, s) in given.iter().enumerate() {
            let ip: IpAddr = s
                .parse()
                .map_err(|e| ctx.err(&format!("{field}.internalIP[{k}]"), format!("{s:?}: {e}")))?;
            let prefix = if ip.is_ipv4() { 24 } else { 64 };
            let net = IpNet::new(ip, prefix)
                .map_err(|e| ctx.err(&format!("{field}.internalIP[{k}]"), e))?;
            internal_ips.push(net);
        }
        let host_no = u128::try_from(i).unwrap_or(0) + 2;
        for fam in &ip_families {
            if internal_ips.iter().any(|a| IpFamily::of_net(a) == *fam) {
                continue;
            }
            let seg = match fam {
                IpFamily::IPv4 => default_v4,
                IpFamily::IPv6 => default_v6,
            };
            let ip = nth_addr(&seg, host_no)
                .ok_or_else(|| ctx.err("nodes", "too many Nodes for the underlay range"))?;
            let net = IpNet::new(ip, seg.prefix_len()).map_err(|e| ctx.err("nodes", e))?;
            internal_ips.push(net);
        }
        nodes.push(Node {
            name: n.name.clone(),
            pod_cidrs,
            internal_ips,
            gateway_ips,
            labels: n.labels.clone(),
        });
    }
    // Every Node of a cluster must share the underlay segment of each family.
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        let nets: BTreeSet<IpNet> = nodes
            .iter()
            .flat_map(|n| n.internal_ips.iter())
            .filter(|a| IpFamily::of_net(a) == fam)
            .map(IpNet::trunc)
            .collect();
        if nets.len() > 1 {
            return Err(ctx.err(
                "nodes[].internalIP",
                format!(
                    "{fam:?} addresses of the Nodes must share one /24 (IPv4) or /64 (IPv6) \
                     segment; found {}",
                    nets.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        underlay.extend(nets);
    }
    let mut seen_ips: HashSet<IpAddr> = nodes
        .iter()
        .flat_map(|n| n.internal_ips.iter().map(IpNet::addr))
        .collect();
    if seen_ips.len() != nodes.iter().map(|n| n.internal_ips.len()).sum::<usize>() {
        return Err(ctx.err("nodes[].internalIP", "two Nodes have the same address"));
    }

    let mut objects: Vec<Value> = Vec::new();
    let mut keys: HashSet<(usize, String, String)> = HashSet::new();
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    let mut pods: Vec<Pod> = Vec::new();
    let mut next_host: BTreeMap<IpNet, u128> = BTreeMap::new();
    let mut service_next: BTreeMap<IpNet, u128> = BTreeMap::new();
    // Explicit addresses first, so that allocation skips them.
    let mut explicit: HashSet<IpAddr> = HashSet::new();
    for (_, v) in &docs {
        for pointer in ["/status/podIPs", "/spec/clusterIPs"] {
            if let Some(list) = v.pointer(pointer).and_then(Value::as_array) {
                for item in list {
                    let s = item
                        .get("ip")
                        .and_then(Value::as_str)
                        .or_else(|| item.as_str())
                        .unwrap_or_default();
                    if let Ok(ip) = s.parse() {
                        explicit.insert(ip);
                    }
                }
            }
        }
        if let Some(Ok(ip)) = str_at(v, "/spec/clusterIP").map(str::parse::<IpAddr>) {
            explicit.insert(ip);
        }
    }

    for (doc, mut v) in docs {
        let kind = str_at(&v, "/kind").unwrap_or_default().to_string();
        let api_version = str_at(&v, "/apiVersion").unwrap_or_default().to_string();
        let obj_name = str_at(&v, "/metadata/name").unwrap_or_default().to_string();
        let octx = Ctx {
            file,
            doc,
            what: format!(" ({kind} {obj_name})"),
        };
        let Some((rindex, rtype)) = resources::by_kind(&api_version, &kind) else {
            let known = resources::RESOURCES
                .iter()
                .map(|r| format!("{} {}", r.api_version(), r.kind))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(octx.err(
                "kind",
                format!("{api_version} {kind} is not served by the lab; known: {known}"),
            ));
        };
        if kind == "Node" {
            return Err(octx.err(
                "kind",
                "Nodes are declared in the LabCluster document's nodes list",
            ));
        }
        if !is_dns_subdomain(&obj_name) {
            return Err(octx.err(
                "metadata.name",
                format!("{obj_name:?} must be a DNS-1123 subdomain (lower case, digits, '-', '.')"),
            ));
        }
        let namespace = if rtype.namespaced {
            let ns = str_at(&v, "/metadata/namespace")
                .unwrap_or("default")
                .to_string();
            if !is_dns_label(&ns) {
                return Err(octx.err("metadata.namespace", format!("{ns:?} is not a DNS label")));
            }
            set(&mut v, "/metadata/namespace", json!(ns));
            namespaces.insert(ns.clone());
            ns
        } else {
            if v.pointer("/metadata/namespace").is_some() {
                return Err(octx.err("metadata.namespace", format!("{kind} is cluster-scoped")));
            }
            if kind == "Namespace" {
                namespaces.insert(obj_name.clone());
            }
            String::new()
        };
        if !keys.insert((rindex, namespace.clone(), obj_name.clone())) {
            return Err(octx.err("metadata.name", "an earlier document has the same name"));
        }
        if let Some(labels) = v.pointer("/metadata/labels") {
            let ok = labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(octx.err("metadata.labels", "must map strings to strings"));
            }
        }
        match kind.as_str() {
            "Pod" => {
                let pod = resolve_pod(
                    &octx,
                    &name,
                    &nodes,
                    &namespace,
                    &obj_name,
                    &mut v,
                    &mut next_host,
                    &explicit,
                    &mut seen_ips,
                )?;
                pods.push(pod);
            }
            "Service" => resolve_service(
                &octx,
                &ip_families,
                &service_cidrs,
                &mut v,
                &mut service_next,
                &explicit,
                &mut seen_ips,
            )?,
            _ => {}
        }
        objects.push(v);
    }
    namespaces.insert("default".to_string());
    for ns in &namespaces {
        if !keys.contains(&(resources::NAMESPACE, String::new(), ns.clone())) {
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns},
            }));
        }
    }
    for o in &mut objects {
        if str_at(o, "/kind") == Some("Namespace") {
            let name = str_at(o, "/metadata/name").unwrap_or_default().to_string();
            set(
                o,
                "/metadata/labels/kubernetes.io~1metadata.name",
                json!(name),
            );
            set(o, "/status/phase", json!("Active"));
        }
    }
    for n in nodes.iter().rev() {
        objects.insert(0, node_object(n));
    }
    Ok(Cluster {
        name,
        ip_families,
        service_cidrs,
        underlay,
        nodes,
        pods,
        objects,
    })
}

/// Sets the value at a JSON pointer, creating objects on the way (`~1` escapes '/').
pub fn set(v: &mut Value, pointer: &str, value: Value) {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = v;
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert(part.clone(), value);
            return;
        }
        cur = map.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

fn node_object(n: &Node) -> Value {
    let mut labels: serde_json::Map<String, Value> = n
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    labels.insert("kubernetes.io/hostname".into(), json!(n.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    let mut addresses: Vec<Value> = n
        .internal_ips
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a.addr().to_string()}))
        .collect();
    addresses.push(json!({"type": "Hostname", "address": n.name}));
    let cidrs: Vec<String> = n.pod_cidrs.iter().map(ToString::to_string).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn resolve_pod(
    ctx: &Ctx<'_>,
    cluster: &str,
    nodes: &[Node],
    namespace: &str,
    name: &str,
    v: &mut Value,
    next_host: &mut BTreeMap<IpNet, u128>,
    explicit: &HashSet<IpAddr>,
    seen: &mut HashSet<IpAddr>,
) -> Result<Pod, TopologyError> {
    if name.contains('.') || name.len() > 40 {
        return Err(ctx.err(
            "metadata.name",
            "a lab Pod name must be a DNS label of at most 40 characters (it names a network \
             namespace)",
        ));
    }
    let node_name = str_at(v, "/spec/nodeName")
        .ok_or_else(|| ctx.err("spec.nodeName", "missing: the lab places Pods where told"))?
        .to_string();
    let node = nodes.iter().find(|n| n.name == node_name).ok_or_else(|| {
        ctx.err(
            "spec.nodeName",
            format!(
                "{node_name:?} is not a Node of this cluster (Nodes: {})",
                nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let host_network = v
        .pointer("/spec/hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if v.pointer("/spec/containers").is_none() {
        set(
            v,
            "/spec/containers",
            json!([{"name": "main", "image": "lab.traceflow.io/none"}]),
        );
    }
    let ips: Vec<IpAddr> = if host_network {
        node.internal_ips.iter().map(IpNet::addr).collect()
    } else if let Some(list) = v.pointer("/status/podIPs").and_then(Value::as_array) {
        let mut ips = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let field = format!("status.podIPs[{i}].ip");
            let s = item.get("ip").and_then(Value::as_str).unwrap_or_default();
            let ip: IpAddr = s
                .parse()
                .map_err(|e| ctx.err(&field, format!("{s:?}: {e}")))?;
            let cidr = node.pod_cidrs.iter().find(|c| c.contains(&ip));
            match cidr {
                Some(c) if is_host_addr(c, &ip) && Some(ip) != nth_addr(c, 1) => {}
                _ => {
                    return Err(ctx.err(
                        &field,
                        format!(
                            "{ip} is not a free Pod address of Node {node_name}'s Pod CIDRs \
                             (the first address is the gateway)"
                        ),
                    ));
                }
            }
            if !seen.insert(ip) {
                return Err(ctx.err(&field, format!("{ip} is used twice")));
            }
            ips.push(ip);
        }
        ips
    } else {
        let mut ips = Vec::new();
        for c in &node.pod_cidrs {
            let next = next_host.entry(*c).or_insert(2);
            loop {
                let ip = nth_addr(c, *next)
                    .filter(|ip| is_host_addr(c, ip))
                    .ok_or_else(|| {
                        ctx.err(
                            "spec.nodeName",
                            format!("Pod CIDR {c} of Node {node_name} is full"),
                        )
                    })?;
                *next += 1;
                if !explicit.contains(&ip) && seen.insert(ip) {
                    ips.push(ip);
                    break;
                }
            }
        }
        ips
    };
    let host_ips: Vec<Value> = node
        .internal_ips
        .iter()
        .map(|a| json!({"ip": a.addr().to_string()}))
        .collect();
    let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    set(
        v,
        "/status",
        json!({
            "phase": "Running",
            "podIP": ips.first().map(ToString::to_string),
            "podIPs": pod_ips,
            "hostIP": node.internal_ips.first().map(|a| a.addr().to_string()),
            "hostIPs": host_ips,
            "conditions": [{"type": "Ready", "status": "True"}],
        }),
    );
    Ok(Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        node: node_name,
        mac: if host_network {
            String::new()
        } else {
            pod_mac(cluster, namespace, name)
        },
        ips,
        host_network,
    })
}

fn resolve_service(
    ctx: &Ctx<'_>,
    families: &[IpFamily],
    service_cidrs: &[IpNet],
    v: &mut Value,
    next: &mut BTreeMap<IpNet, u128>,
    explicit: &HashSet<IpAddr>,
    seen: &mut HashSet<IpAddr>,
) -> Result<(), TopologyError> {
    if let Some(ports) = v.pointer("/spec/ports") {
        let Some(ports) = ports.as_array() else {
            return Err(ctx.err("spec.ports", "must be a list"));
        };
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                return Err(ctx.err(&format!("spec.ports[{i}].port"), "must be 1..65535"));
            }
        }
    }
    let headless = str_at(v, "/spec/clusterIP") == Some("None");
    if headless {
        return Ok(());
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(list) = v.pointer("/spec/clusterIPs").and_then(Value::as_array) {
        for (i, item) in list.iter().enumerate() {
            let s = item.as_str().unwrap_or_default();
            let ip: IpAddr = s
                .parse()
                .map_err(|e| ctx.err(&format!("spec.clusterIPs[{i}]"), format!("{s:?}: {e}")))?;
            ips.push(ip);
        }
    } else if let Some(s) = str_at(v, "/spec/clusterIP") {
        let ip: IpAddr = s
            .parse()
            .map_err(|e| ctx.err("spec.clusterIP", format!("{s:?}: {e}")))?;
        ips.push(ip);
    }
    for ip in &ips {
        if !service_cidrs.iter().any(|c| c.contains(ip)) {
            return Err(ctx.err(
                "spec.clusterIP",
                format!("{ip} is outside the serviceCIDRs"),
            ));
        }
    }
    if ips.is_empty() {
        let wanted: Vec<IpFamily> = match v.pointer("/spec/ipFamilies").and_then(Value::as_array) {
            Some(list) => {
                let mut out = Vec::new();
                for (i, f) in list.iter().enumerate() {
                    let fam: IpFamily = serde_json::from_value(f.clone()).map_err(|_| {
                        ctx.err(&format!("spec.ipFamilies[{i}]"), "must be IPv4 or IPv6")
                    })?;
                    if !families.contains(&fam) {
                        return Err(ctx.err(
                            &format!("spec.ipFamilies[{i}]"),
                            format!("the cluster has no {fam:?}"),
                        ));
                    }
                    out.push(fam);
                }
                out
            }
            None => match str_at(v, "/spec/ipFamilyPolicy") {
                Some("PreferDualStack") | Some("RequireDualStack") => families.to_vec(),
                _ => families.iter().take(1).copied().collect(),
            },
        };
        for fam in wanted {
            let Some(cidr) = service_cidrs.iter().find(|c| IpFamily::of_net(c) == fam) else {
                continue;
            };
            let n = next.entry(*cidr).or_insert(1);
            loop {
                let ip = nth_addr(cidr, *n)
                    .filter(|ip| is_host_addr(cidr, ip))
                    .ok_or_else(|| ctx.err("spec.clusterIP", format!("{cidr} is full")))?;
                *n += 1;
                if !explicit.contains(&ip) && seen.insert(ip) {
                    ips.push(ip);
                    break;
                }
            }
        }
    }
    let strs: Vec<String> = ips.iter().map(ToString::to_string).collect();
    let fams: Vec<IpFamily> = ips.iter().map(IpFamily::of).collect();
    set(v, "/spec/clusterIP", json!(strs.first()));
    set(v, "/spec/clusterIPs", json!(strs));
    set(v, "/spec/ipFamilies", json!(fams));
    if v.pointer("/spec/type").is_none() {
        set(v, "/spec/type", json!("ClusterIP"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
