//! Antrea's defaults and our bounds on every field a trace request carries. Each is defined
//! here once; the manager, the adapter, tfctl and the agent read them from here.

/// Antrea's `DefaultTraceflowTimeout` in seconds (reference §1.2), used when `timeout` is 0.
pub const DEFAULT_TIMEOUT_SECS: u16 = 20;
/// The largest `spec.timeout` in seconds (Antrea's CRD maximum).
pub const MAX_TIMEOUT_SECS: u16 = 300;
/// TTL / hop limit of an injected packet when the spec leaves it 0 (reference §3.2).
pub const DEFAULT_TTL: u8 = 64;
/// TCP flags of an injected TCP packet when the spec leaves them unset: SYN.
pub const DEFAULT_TCP_FLAGS: u8 = TCP_SYN;

/// A Kubernetes namespace or Service name: a DNS-1123 label.
pub const MAX_LABEL_LEN: usize = 63;
/// A Pod or trace name: a DNS-1123 subdomain.
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// The longest textual IP address (IPv6 with an embedded IPv4 tail).
pub const MAX_IP_LEN: usize = 45;
/// A failure reason kept with a trace (longer ones are cut, on a character boundary).
pub const MAX_REASON_LEN: usize = 1024;
/// A trace uid (a UUID is 36).
pub const MAX_UID_LEN: usize = 64;
/// A bearer or bootstrap token as presented (ours are 68: a 3-letter prefix, '-', 64 hex).
pub const MAX_TOKEN_LEN: usize = 128;
/// A PEM certificate signing request (an ECDSA or RSA-4096 CSR is well under this).
pub const MAX_CSR_LEN: usize = 16 * 1024;
/// A list filter (`namespace/name`, a name or an IP).
pub const MAX_FILTER_LEN: usize = MAX_LABEL_LEN + 1 + MAX_SUBDOMAIN_LEN;
/// A page token of ListTraceflows (hex of a store key: 8 bytes + uid).
pub const MAX_PAGE_TOKEN_LEN: usize = 2 * (8 + MAX_UID_LEN);

/// Largest request a user-facing service (traces, clusters, users, registration) decodes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message an adapter may send the manager (a whole-cluster inventory sync).
pub const MAX_ADAPTER_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Largest message an agent may send its adapter (observations, node state).
pub const MAX_AGENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 pings on every connection between the components (manager ⇄ adapter ⇄ agent, both
/// ends), and how long an unanswered one may wait: a half-open peer is noticed within 15 s.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every delay between a component's attempts to reconnect to the one above it (adapter →
/// manager, agent → adapter) stays below this, so a part that comes back is found within it
/// and every part is back within 5 s of a restart that itself takes a few seconds. A longer
/// cap saves little: a refused connect to a part that is down costs next to nothing.
pub const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest lifetime of a bootstrap token.
pub const MAX_BOOTSTRAP_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// Lifetime of the cluster and user certificates the manager signs (`--leaf-cert-lifetime`).
/// Adapters renew theirs after two thirds of it.
pub const DEFAULT_MANAGER_LEAF_CERT_LIFETIME: &str = "365d";
/// Lifetime of the agent certificates an adapter signs (`--agent-cert-lifetime`, also of
/// `traceflow-adapter agent-cert`). Agents renew theirs after two thirds of it: shorter than a
/// cluster's, as a Node is easier to lose than a cluster.
pub const DEFAULT_AGENT_CERT_LIFETIME: &str = "90d";

/// `value` of `field` is at most `max` bytes; the error never repeats the value.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), crate::Invalid> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(crate::Invalid::new(
            field,
            format!("is {} bytes; at most {max} are accepted", value.len()),
        ))
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// IP protocol numbers a trace can carry.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;
