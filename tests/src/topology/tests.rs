use super::*;

const HEADER: &str = "apiVersion: lab.traceflow.io/v1\nkind: LabCluster\nname: c1\n\
serviceCIDRs: [10.96.0.0/16]\nnodes:\n- name: n1\n  podCIDRs: [10.10.0.0/24]\n";

fn pod(name: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: x}}}}\n\
         spec: {{nodeName: {node}}}\n"
    )
}

fn err_text(text: &str) -> String {
    match parse("t.yaml", text) {
        Ok(_) => String::from("(parsed)"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_topologies_parse() -> Result<(), TopologyError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let one = load(&dir.join("one-node.yaml"))?;
    assert_eq!(one.clusters.len(), 1);
    let c = &one.clusters[0];
    assert_eq!(c.pods.len(), 3);
    let two = load(&dir.join("two-clusters.yaml"))?;
    assert_eq!(two.clusters.len(), 2);
    assert!(two.clusters.iter().all(|c| c.nodes.len() == 2));
    assert_eq!(two.clusters[0].underlay[0].to_string(), "192.168.77.0/24");
    assert_eq!(two.clusters[1].underlay[0].to_string(), "192.168.78.0/24");
    Ok(())
}

#[test]
fn pods_get_addresses_after_the_gateway_in_order() -> Result<(), TopologyError> {
    let text = format!(
        "{HEADER}{}{}{}",
        pod("p0", "n1"),
        pod("p1", "n1"),
        pod("p2", "n1")
    );
    let t = parse("t.yaml", &text)?;
    let c = &t.clusters[0];
    let ips: Vec<String> = c.pods.iter().map(|p| p.ips[0].to_string()).collect();
    assert_eq!(ips, ["10.10.0.2", "10.10.0.3", "10.10.0.4"]);
    assert_eq!(c.nodes[0].gateway_ips[0].to_string(), "10.10.0.1");
    assert_eq!(c.nodes[0].internal_ips[0].to_string(), "192.168.77.2/24");
    let p0 = c
        .objects
        .iter()
        .find(|o| str_at(o, "/metadata/name") == Some("p0"));
    let Some(p0) = p0 else {
        panic!("p0 object missing")
    };
    assert_eq!(str_at(p0, "/status/phase"), Some("Running"));
    assert_eq!(str_at(p0, "/status/podIPs/0/ip"), Some("10.10.0.2"));
    assert_eq!(str_at(p0, "/metadata/namespace"), Some("default"));
    assert!(c.pods[0].mac.starts_with("0a:58:"));
    Ok(())
}

#[test]
fn dual_stack_gives_one_address_per_family() -> Result<(), TopologyError> {
    let text = "apiVersion: lab.traceflow.io/v1\nkind: LabCluster\nname: d\n\
ipFamilies: [IPv4, IPv6]\nserviceCIDRs: [10.96.0.0/16, 'fd00:96::/112']\nnodes:\n\
- name: n1\n  podCIDRs: [10.10.0.0/24, 'fd00:10::/64']\n"
        .to_string()
        + &pod("p0", "n1")
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  \
           ipFamilyPolicy: PreferDualStack\n  selector: {app: x}\n  ports: [{port: 80}]\n";
    let t = parse("t.yaml", &text)?;
    let c = &t.clusters[0];
    let ips: Vec<String> = c.pods[0].ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.10.0.2", "fd00:10::2"]);
    assert_eq!(c.nodes[0].internal_ips.len(), 2);
    let svc = c
        .objects
        .iter()
        .find(|o| str_at(o, "/kind") == Some("Service"));
    let Some(svc) = svc else {
        panic!("service missing")
    };
    assert_eq!(str_at(svc, "/spec/clusterIPs/0"), Some("10.96.0.1"));
    assert_eq!(str_at(svc, "/spec/clusterIPs/1"), Some("fd00:96::1"));
    Ok(())
}

#[test]
fn namespaces_are_created_for_referenced_names() -> Result<(), TopologyError> {
    let text = format!(
        "{HEADER}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: web}}\n\
         spec: {{nodeName: n1}}\n"
    );
    let t = parse("t.yaml", &text)?;
    let names: Vec<&str> = t.clusters[0]
        .objects
        .iter()
        .filter(|o| str_at(o, "/kind") == Some("Namespace"))
        .filter_map(|o| str_at(o, "/metadata/name"))
        .collect();
    assert_eq!(names, ["default", "web"]);
    Ok(())
}

#[test]
fn explicit_pod_ips_are_honoured_and_skipped_by_allocation() -> Result<(), TopologyError> {
    let text = format!(
        "{HEADER}{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: fixed}}\n\
         spec: {{nodeName: n1}}\nstatus: {{podIPs: [{{ip: 10.10.0.2}}]}}\n",
        pod("p0", "n1")
    );
    let t = parse("t.yaml", &text)?;
    let c = &t.clusters[0];
    assert_eq!(
        c.pod("default", "p0")
            .map(|p| p.ips[0].to_string())
            .as_deref(),
        Some("10.10.0.3")
    );
    assert_eq!(
        c.pod("default", "fixed")
            .map(|p| p.ips[0].to_string())
            .as_deref(),
        Some("10.10.0.2")
    );
    Ok(())
}

#[test]
fn errors_name_file_document_and_field() {
    let e = err_text(&format!("{HEADER}{}", pod("p0", "n9")));
    assert!(
        e.contains("t.yaml: document 2 (Pod p0): spec.nodeName"),
        "{e}"
    );
    assert!(e.contains("n9"), "{e}");

    let e = err_text(&HEADER.replace("10.10.0.0/24", "10.10.0.1/24"));
    assert!(
        e.contains("document 1 (LabCluster c1): nodes[0].podCIDRs[0]"),
        "{e}"
    );
    assert!(e.contains("host bits"), "{e}");

    let e = err_text(&HEADER.replace("nodes:", "nodez: []\nnodes:"));
    assert!(e.contains("unknown field `nodez`"), "{e}");

    let e = err_text(&format!(
        "{HEADER}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"
    ));
    assert!(e.contains("document 2 (ConfigMap x): kind"), "{e}");

    let e = err_text(&pod("p0", "n1"));
    assert!(e.contains("no LabCluster document"), "{e}");

    let e = err_text(&format!("{HEADER}{}{}", pod("p0", "n1"), pod("p0", "n1")));
    assert!(e.contains("document 3 (Pod p0): metadata.name"), "{e}");

    let e = err_text(&format!(
        "{HEADER}---\nkind: Pod\napiVersion: v1\nmetadata: {{name: Bad}}\n"
    ));
    assert!(e.contains("metadata.name"), "{e}");

    let e = err_text(
        "apiVersion: lab.traceflow.io/v1\nkind: LabCluster\nname: c\nnodes: [{name: n, podCIDRs: [10.0.0.0/24]}]\n",
    );
    assert!(e.contains("serviceCIDRs"), "{e}");

    let e = err_text(&format!("{HEADER}: : bad yaml ["));
    assert!(e.contains("t.yaml: document"), "{e}");
}

#[test]
fn overlapping_pod_cidrs_are_refused() {
    let text = "apiVersion: lab.traceflow.io/v1\nkind: LabCluster\nname: c\n\
serviceCIDRs: [10.96.0.0/16]\nnodes:\n- {name: a, podCIDRs: [10.10.0.0/16]}\n\
- {name: b, podCIDRs: [10.10.1.0/24]}\n";
    let e = err_text(text);
    assert!(
        e.contains("nodes[1].podCIDRs") && e.contains("overlaps"),
        "{e}"
    );
}

#[test]
fn services_get_cluster_ips_from_the_service_cidr() -> Result<(), TopologyError> {
    let svc = |n: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\n\
             spec: {{selector: {{app: x}}, ports: [{{port: 80}}]}}\n"
        )
    };
    let t = parse("t.yaml", &format!("{HEADER}{}{}", svc("a"), svc("b")))?;
    let ips: Vec<&str> = t.clusters[0]
        .objects
        .iter()
        .filter(|o| str_at(o, "/kind") == Some("Service"))
        .filter_map(|o| str_at(o, "/spec/clusterIP"))
        .collect();
    assert_eq!(ips, ["10.96.0.1", "10.96.0.2"]);
    Ok(())
}

mod fuzz {
    use proptest::prelude::*;

    use super::{HEADER, parse, pod};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any text is a topology or an error naming the file; never a panic.
        #[test]
        fn any_text_is_parsed_or_refused(text in any::<String>()) {
            if let Err(e) = parse("t.yaml", &text) {
                prop_assert!(e.to_string().contains("t.yaml"), "{}", e);
            }
        }

        /// A valid topology cut anywhere, or with a byte replaced, never panics.
        #[test]
        fn damaged_topologies_never_panic(cut in 0usize..400, at in 0usize..400, b in any::<u8>()) {
            let text = format!("{HEADER}{}{}", pod("a", "n1"), pod("b", "n1"));
            let mut bytes = text.into_bytes();
            if at < bytes.len() {
                bytes[at] = b;
            }
            bytes.truncate(cut.min(bytes.len()));
            let _ = parse("t.yaml", &String::from_utf8_lossy(&bytes));
        }
    }
}
