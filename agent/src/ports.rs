//! The Node's local ports as the agent knows them: Pods, the gateway and the tunnel, derived
//! from OVSDB `Interface` rows with the conventions of docs/contracts.md ("How the lab leaves
//! a Node"), which are the ones Antrea's CNI leaves.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use traceflow_proto::v1 as pb;

use crate::ovs::ovsdb::Interface;

/// Name of the gateway port when `external_ids:antrea-type` is missing.
pub const GATEWAY_NAME: &str = "antrea-gw0";
/// Name of the tunnel port when `external_ids:antrea-type` is missing.
pub const TUNNEL_NAME: &str = "antrea-tun0";

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("invalid MAC address {s:?}"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address {s:?}"));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A port with an address: a Pod's veth or the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub interface: String,
    pub ofport: u32,
    pub mac: Mac,
    pub ips: Vec<IpAddr>,
}

/// A Pod's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    pub namespace: String,
    pub name: String,
    pub port: Port,
}

/// What is plugged into br-int. Ports without an ofport yet, or without a parseable MAC,
/// are left out until OVSDB completes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePorts {
    /// Sorted by (namespace, name).
    pub pods: Vec<PodPort>,
    pub gateway: Option<Port>,
    pub tunnel_ofport: Option<u32>,
}

/// Which local port a packet came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind<'a> {
    Pod(&'a PodPort),
    Gateway(&'a Port),
    Tunnel,
}

fn parse_ips(s: &str) -> Vec<IpAddr> {
    s.split(',')
        .filter_map(|p| p.trim().split('/').next().and_then(|ip| ip.parse().ok()))
        .collect()
}

impl NodePorts {
    /// Classifies interface rows (see the module doc for the conventions).
    pub fn from_interfaces(rows: &[Interface]) -> Self {
        let mut out = Self::default();
        for i in rows {
            let Some(ofport) = i.ofport else { continue };
            let ty = i.external_ids.get("antrea-type").map(String::as_str);
            let ips = i
                .external_ids
                .get("ip")
                .map(|s| parse_ips(s))
                .unwrap_or_default();
            if ty == Some("tunnel") || (ty.is_none() && i.name == TUNNEL_NAME) {
                out.tunnel_ofport = Some(ofport);
            } else if ty == Some("gateway") || (ty.is_none() && i.name == GATEWAY_NAME) {
                let Some(mac) = i.mac_in_use.as_deref().and_then(|m| m.parse().ok()) else {
                    continue;
                };
                out.gateway = Some(Port {
                    interface: i.name.clone(),
                    ofport,
                    mac,
                    ips,
                });
            } else if let Some(name) = i.external_ids.get("k8s_pod_name") {
                let mac = i
                    .external_ids
                    .get("attached-mac")
                    .or(i.mac_in_use.as_ref())
                    .and_then(|m| m.parse().ok());
                let Some(mac) = mac else { continue };
                out.pods.push(PodPort {
                    namespace: i
                        .external_ids
                        .get("k8s_pod_namespace")
                        .cloned()
                        .unwrap_or_default(),
                    name: name.clone(),
                    port: Port {
                        interface: i.name.clone(),
                        ofport,
                        mac,
                        ips,
                    },
                });
            }
        }
        out.pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodPort> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The local port with OpenFlow number `ofport`.
    pub fn by_ofport(&self, ofport: u32) -> Option<PortKind<'_>> {
        if self.tunnel_ofport == Some(ofport) {
            return Some(PortKind::Tunnel);
        }
        if let Some(g) = self.gateway.as_ref().filter(|g| g.ofport == ofport) {
            return Some(PortKind::Gateway(g));
        }
        self.pods
            .iter()
            .find(|p| p.port.ofport == ofport)
            .map(PortKind::Pod)
    }

    /// The local Pod owning `ip`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodPort> {
        self.pods.iter().find(|p| p.port.ips.contains(&ip))
    }

    /// Whether `ip` is one of the gateway's addresses.
    pub fn is_gateway_ip(&self, ip: IpAddr) -> bool {
        self.gateway.as_ref().is_some_and(|g| g.ips.contains(&ip))
    }

    /// The hello / ports message for the adapter.
    pub fn to_hello(&self, node: &str) -> pb::AgentHello {
        let conv = |ns: &str, name: &str, p: &Port| pb::LocalPort {
            pod_namespace: ns.to_string(),
            pod_name: name.to_string(),
            interface_name: p.interface.clone(),
            ofport: p.ofport,
            mac: p.mac.to_string(),
            ips: p.ips.iter().map(ToString::to_string).collect(),
        };
        pb::AgentHello {
            node: node.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pods: self
                .pods
                .iter()
                .map(|p| conv(&p.namespace, &p.name, &p.port))
                .collect(),
            gateway: self.gateway.as_ref().map(|g| conv("", "", g)),
            tunnel_ofport: self.tunnel_ofport.unwrap_or(0),
        }
    }
}

/// Test fixtures shared by unit tests across modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn mk_pod(name: &str, ofport: u32, mac: u8, ips: &[&str]) -> PodPort {
        PodPort {
            namespace: "default".into(),
            name: name.into(),
            port: Port {
                interface: format!("{name}-veth"),
                ofport,
                mac: Mac([2, 0, 0, 0, 0, mac]),
                ips: ips.iter().filter_map(|s| s.parse().ok()).collect(),
            },
        }
    }

    /// p0 (ofport 3, 10.1.0.2), p1 (ofport 4, 10.1.0.3), gateway 2 (10.1.0.1), tunnel 1.
    pub(crate) fn mk_node() -> NodePorts {
        NodePorts {
            pods: vec![
                mk_pod("p0", 3, 1, &["10.1.0.2", "fd00:1::2"]),
                mk_pod("p1", 4, 2, &["10.1.0.3", "fd00:1::3"]),
            ],
            gateway: Some(Port {
                interface: GATEWAY_NAME.into(),
                ofport: 2,
                mac: Mac([2, 0, 0, 0, 0, 0xfe]),
                ips: vec!["10.1.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            }),
            tunnel_ofport: Some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(name: &str, ofport: Option<u32>, ids: &[(&str, &str)], mac: Option<&str>) -> Interface {
        Interface {
            name: name.into(),
            ofport,
            external_ids: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            mac_in_use: mac.map(str::to_string),
            kind: String::new(),
        }
    }

    #[test]
    fn classifies_pods_gateway_and_tunnel() {
        let rows = vec![
            row(
                "antrea-gw0",
                Some(2),
                &[("antrea-type", "gateway"), ("ip", "10.1.0.1,fd00:1::1")],
                Some("02:00:00:00:00:fe"),
            ),
            row("antrea-tun0", Some(1), &[("antrea-type", "tunnel")], None),
            row(
                "p1-abc",
                Some(4),
                &[
                    ("k8s_pod_namespace", "web"),
                    ("k8s_pod_name", "p1"),
                    ("ip", "10.1.0.3"),
                    ("attached-mac", "02:00:00:00:00:02"),
                ],
                Some("aa:aa:aa:aa:aa:aa"),
            ),
            row("p2-pending", None, &[("k8s_pod_name", "p2")], None),
            row("br-int", Some(65534), &[], Some("02:00:00:00:00:99")),
        ];
        let n = NodePorts::from_interfaces(&rows);
        assert_eq!(n.tunnel_ofport, Some(1));
        assert_eq!(n.gateway.as_ref().map(|g| g.ips.len()), Some(2));
        assert_eq!(n.pods.len(), 1);
        let p1 = &n.pods[0];
        assert_eq!((p1.namespace.as_str(), p1.port.ofport), ("web", 4));
        assert_eq!(
            p1.port.mac.to_string(),
            "02:00:00:00:00:02",
            "attached-mac wins"
        );
        assert!(matches!(n.by_ofport(4), Some(PortKind::Pod(_))));
        assert!(matches!(n.by_ofport(1), Some(PortKind::Tunnel)));
        let hello = n.to_hello("n1");
        assert_eq!(hello.tunnel_ofport, 1);
        assert_eq!(hello.pods[0].ips, vec!["10.1.0.3"]);
    }

    #[test]
    fn mac_parse_and_display() {
        assert_eq!(
            "02:0a:00:00:00:01".parse::<Mac>().map(|m| m.to_string()),
            Ok("02:0a:00:00:00:01".into())
        );
        assert!("02:0a:00".parse::<Mac>().is_err());
        assert!("02:0a:00:00:00:01:07".parse::<Mac>().is_err());
    }
}

/// Follows OVSDB's `Interface` table on `db_sock` and publishes [`NodePorts`] whenever they
/// change (reconnecting with backoff if ovsdb-server goes away). Stops with `shutdown`.
pub fn spawn_watcher(
    db_sock: std::path::PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::sync::watch::Receiver<NodePorts> {
    use crate::ovs::ovsdb::Ovsdb;
    use tracing::{Instrument, debug, warn};
    let (tx, rx) = tokio::sync::watch::channel(NodePorts::default());
    let span = tracing::info_span!("ovsdb", db = %db_sock.display());
    tokio::spawn(
        async move {
            // Jittered, 0.1 s to just under 2 s; reset once a monitor delivered its snapshot.
            let mut backoff = traceflow_daemon::Reconnect::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(2),
            );
            while !shutdown.is_cancelled() {
                let run = async {
                    let mut mon = Ovsdb::connect(&db_sock).await?.monitor_interfaces().await?;
                    // The first snapshot of every connection is always published, so a
                    // consumer waiting for "OVSDB has been read" wakes even if nothing changed.
                    tx.send_replace(NodePorts::from_interfaces(&mon.interfaces()));
                    backoff.reset();
                    loop {
                        mon.changed().await?;
                        let ports = NodePorts::from_interfaces(&mon.interfaces());
                        tx.send_if_modified(|cur| {
                            if *cur == ports {
                                return false;
                            }
                            debug!(pods = ports.pods.len(), "local ports changed");
                            *cur = ports;
                            true
                        });
                    }
                };
                let result: Result<(), crate::ovs::ovsdb::OvsdbError> = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = run => r,
                };
                if let Err(error) = result {
                    warn!(%error, "ovsdb monitor failed; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
        .instrument(span),
    );
    rx
}
