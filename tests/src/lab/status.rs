//! `traceflow-lab status` and `exec`.

use std::fmt::Write as _;

use super::{LabError, LabState, Paths};
use crate::node::names;

/// Human-readable status of the lab in `paths`: clusters, Nodes, Pods, processes, namespaces.
pub fn render(paths: &Paths) -> Result<String, LabError> {
    let Some(st) = LabState::load(paths)? else {
        return Ok(format!("no lab in {}\n", paths.dir.display()));
    };
    let existing: Vec<String> = st
        .netns
        .iter()
        .filter(|n| std::path::Path::new("/run/netns").join(n).exists())
        .cloned()
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lab {} (topology {}, prefix {}, {})",
        st.dir.display(),
        st.topology_file,
        st.prefix,
        if st.ready {
            "ready"
        } else {
            "NOT READY: up did not finish"
        }
    );
    if let Some(m) = &st.manager {
        let _ = writeln!(out, "manager {m}");
    }
    if let Some(t) = &st.tfctl_config {
        let _ = writeln!(
            out,
            "tfctl config {}  (export TFCTL_CONFIG={})",
            t.display(),
            t.display()
        );
    }
    for c in &st.topology.clusters {
        let _ = writeln!(
            out,
            "cluster {}  families {:?}  api {}  kubeconfig {}",
            c.name,
            c.ip_families,
            st.kube_apis.get(&c.name).map_or("-", String::as_str),
            paths.kubeconfig(&c.name).display()
        );
        for n in &c.nodes {
            let ns = names::node_netns(&st.prefix, &c.name, &n.name);
            let ips: Vec<String> = n
                .internal_ips
                .iter()
                .map(|a| a.addr().to_string())
                .collect();
            let cidrs: Vec<String> = n.pod_cidrs.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  node {}  netns {} ({})  internalIP {}  podCIDRs {}  ovs {}",
                n.name,
                ns,
                if existing.contains(&ns) {
                    "present"
                } else {
                    "MISSING"
                },
                ips.join(","),
                cidrs.join(","),
                paths.ovs_rundir(&c.name, &n.name).display()
            );
            for p in c.pods.iter().filter(|p| p.node == n.name) {
                let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
                let where_ = if p.host_network {
                    "hostNetwork".to_string()
                } else {
                    let pns = names::pod_netns(&st.prefix, &c.name, &p.namespace, &p.name);
                    let present = if existing.contains(&pns) {
                        ""
                    } else {
                        " MISSING"
                    };
                    format!("netns {pns}{present}")
                };
                let _ = writeln!(
                    out,
                    "    pod {}/{}  {}  mac {}  {}",
                    p.namespace,
                    p.name,
                    ips.join(","),
                    if p.mac.is_empty() { "-" } else { &p.mac },
                    where_
                );
            }
        }
    }
    let _ = writeln!(out, "processes:");
    for p in &st.processes {
        let _ = writeln!(
            out,
            "  {:<28} pid {:<8} {:<5} log {}",
            p.name,
            p.pid,
            if p.alive() { "alive" } else { "DEAD" },
            p.log.display()
        );
    }
    let _ = writeln!(
        out,
        "namespaces ({} of {}):",
        existing.len(),
        st.netns.len()
    );
    for n in &existing {
        let _ = writeln!(out, "  {n}");
    }
    Ok(out)
}

/// The network namespace `exec` runs in for `CLUSTER/NAMESPACE/POD` (the Node's for a
/// hostNetwork Pod) or `CLUSTER/NODE`.
pub fn exec_netns(paths: &Paths, target: &str) -> Result<String, LabError> {
    let st = LabState::load(paths)?
        .ok_or_else(|| LabError::Precondition(format!("no lab in {}", paths.dir.display())))?;
    let parts: Vec<&str> = target.split('/').collect();
    let cluster_name = parts.first().copied().unwrap_or_default();
    let cluster = st
        .topology
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| LabError::Precondition(format!("no cluster {cluster_name:?} in the lab")))?;
    match parts.as_slice() {
        [_, node] => cluster
            .node(node)
            .map(|n| names::node_netns(&st.prefix, &cluster.name, &n.name))
            .ok_or_else(|| LabError::Precondition(format!("no Node {node} in {cluster_name}"))),
        [_, ns, pod] => {
            let p = cluster.pod(ns, pod).ok_or_else(|| {
                LabError::Precondition(format!("no Pod {ns}/{pod} in cluster {cluster_name}"))
            })?;
            Ok(if p.host_network {
                names::node_netns(&st.prefix, &cluster.name, &p.node)
            } else {
                names::pod_netns(&st.prefix, &cluster.name, ns, pod)
            })
        }
        _ => Err(LabError::Precondition(format!(
            "{target:?}: expected CLUSTER/NAMESPACE/POD or CLUSTER/NODE"
        ))),
    }
}

/// The lab's state as JSON, with `alive` added to each process and `present` to each
/// namespace; `null` when there is no lab.
pub fn render_json(paths: &Paths) -> Result<serde_json::Value, LabError> {
    let Some(st) = LabState::load(paths)? else {
        return Ok(serde_json::Value::Null);
    };
    let mut v = serde_json::to_value(&st)
        .map_err(|e| LabError::Other(format!("serialising lab state: {e}")))?;
    let procs: Vec<serde_json::Value> = st
        .processes
        .iter()
        .map(|p| {
            serde_json::json!({"name": p.name, "pid": p.pid, "alive": p.alive(),
                               "log": p.log, "command": p.command})
        })
        .collect();
    let netns: Vec<serde_json::Value> = st
        .netns
        .iter()
        .map(|n| {
            serde_json::json!({"name": n,
                               "present": std::path::Path::new("/run/netns").join(n).exists()})
        })
        .collect();
    crate::topology::set(&mut v, "/processes", serde_json::json!(procs));
    crate::topology::set(&mut v, "/netns", serde_json::json!(netns));
    Ok(v)
}
