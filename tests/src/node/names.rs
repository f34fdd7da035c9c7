//! Names of namespaces and interfaces (Linux limits interface names to 15 bytes).

use crate::topology::fnv1a;

/// Network namespace of a Node: `<prefix>-<cluster>-<node>`.
pub fn node_netns(prefix: &str, cluster: &str, node: &str) -> String {
    format!("{prefix}-{cluster}-{node}")
}

/// Network namespace of a Pod: `<prefix>-<cluster>-<namespace>-<pod>`.
pub fn pod_netns(prefix: &str, cluster: &str, namespace: &str, pod: &str) -> String {
    format!("{prefix}-{cluster}-{namespace}-{pod}")
}

/// Network namespace holding a cluster's underlay bridge.
pub fn underlay_netns(prefix: &str, cluster: &str) -> String {
    format!("{prefix}-{cluster}-underlay")
}

/// Host end of a Pod's veth (on br-int), Antrea-style: up to 6 characters of the Pod name,
/// '-', 8 hex digits of a hash of `namespace/pod`.
pub fn pod_host_veth(namespace: &str, pod: &str) -> String {
    let short: String = pod
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    let h = fnv1a(&format!("{namespace}/{pod}")) as u32;
    format!("{short}-{h:08x}")
}

/// Underlay bridge end of a Node's underlay veth.
pub fn underlay_veth(node: &str) -> String {
    if node.len() <= 13 {
        format!("u-{node}")
    } else {
        format!("u{:08x}", fnv1a(node) as u32)
    }
}

/// A stable container id for a Pod (what a CNI would have recorded).
pub fn container_id(cluster: &str, namespace: &str, pod: &str) -> String {
    let a = fnv1a(&format!("{cluster}/{namespace}/{pod}"));
    let b = fnv1a(&format!("{pod}/{namespace}/{cluster}"));
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for (ns, pod) in [
            ("default", "p0"),
            ("a-very-long-namespace", "a-very-long-pod-name"),
        ] {
            let v = pod_host_veth(ns, pod);
            assert!(v.len() <= 15, "{v}");
        }
        assert_eq!(underlay_veth("n1"), "u-n1");
        assert!(underlay_veth("a-node-with-a-long-name").len() <= 15);
        assert_ne!(pod_host_veth("a", "p0"), pod_host_veth("b", "p0"));
    }
}
