//! What a trace does to conntrack, and undoing exactly that.
//!
//! ```text
//!  trace packet-in, ct_state +new, ct_mark TRACE ─▶ TraceConnections::record (its tuple)
//!  FlushConntrack at the trace's end ─▶ TraceConnections::own: only recorded tuples flushed
//!  InjectPacket own_connection ─▶ in_use: dpctl/dump-conntrack (control socket) ─▶ refuse,
//!                                 or another free source port
//! ```
//!
//! A trace packet's connection carries the trace ct_mark (pipeline::regs::TRACE_CT_MARK), so it
//! admits no real traffic while it exists; it is still removed when the trace ends, and only
//! the connections this Node saw a trace packet create are: a real connection that happens to
//! have the tuple a user named is never flushed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use traceflow_proto::v1 as pb;

use crate::ovs::openflow::PacketIn;
use crate::ovs::openflow::oxm::ct_state;
use crate::ovs::unixctl::{self, UnixctlError};
use crate::pipeline::regs;

use super::packet::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, ParsedPacket};

/// A connection by its original-direction tuple, as the userspace datapath's conntrack keys
/// it: ports for TCP and UDP, the echo id (in `src_port`, `dst_port` 0) for ICMP and ICMPv6,
/// addresses only otherwise (SCTP included: it keeps no ports for SCTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Whether conntrack keeps ports for `protocol`.
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, PROTO_TCP | PROTO_UDP)
}

/// Where a connection is tracked: the Pod zone or the Service SNAT (hairpin) zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    Pods,
    ServiceSnat,
}

impl Zone {
    fn of_ct_zone(zone: u16) -> Self {
        use crate::pipeline::services::{SNAT_CT_ZONE, SNAT_CT_ZONE_V6};
        if zone == SNAT_CT_ZONE || zone == SNAT_CT_ZONE_V6 {
            Self::ServiceSnat
        } else {
            Self::Pods
        }
    }

    fn of_flush(zone: i32) -> Self {
        if zone == pb::ConntrackZone::ServiceSnat as i32 {
            Self::ServiceSnat
        } else {
            Self::Pods
        }
    }
}

impl ConnTuple {
    /// The same connection seen from its other end.
    pub fn reversed(&self) -> Self {
        let echo = matches!(self.protocol, PROTO_ICMP | PROTO_ICMPV6);
        Self {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
            src_port: if echo { self.src_port } else { self.dst_port },
            dst_port: if echo { 0 } else { self.src_port },
        }
    }

    /// The connection a trace packet-in shows: conntrack's original tuple where the packet-in
    /// carries it (a Service's DNAT does not hide the address the client used), else the
    /// packet's own addresses and ports.
    pub fn of_packet_in(pin: &PacketIn, pkt: &ParsedPacket) -> Self {
        let f = &pin.fields;
        let (ct_src, ct_dst) = match pkt.src {
            IpAddr::V4(_) => (f.ct_nw_src().map(IpAddr::V4), f.ct_nw_dst().map(IpAddr::V4)),
            IpAddr::V6(_) => (
                f.ct_ipv6_src().map(IpAddr::V6),
                f.ct_ipv6_dst().map(IpAddr::V6),
            ),
        };
        let (src_port, dst_port) = match pkt.protocol {
            PROTO_ICMP | PROTO_ICMPV6 => (pkt.icmp_echo.map_or(0, |(id, _)| id), 0),
            p if has_ports(p) => (
                f.ct_tp_src().or(pkt.src_port).unwrap_or(0),
                f.ct_tp_dst().or(pkt.dst_port).unwrap_or(0),
            ),
            _ => (0, 0),
        };
        Self {
            protocol: pkt.protocol,
            src: ct_src.filter(|a| !a.is_unspecified()).unwrap_or(pkt.src),
            dst: ct_dst.filter(|a| !a.is_unspecified()).unwrap_or(pkt.dst),
            src_port,
            dst_port,
        }
    }

    /// The tuple of a `FlushConntrack` entry (`None` when its fields do not parse).
    pub fn of_flush(req: &pb::FlushConntrack, t: &pb::ConntrackTuple) -> Option<Self> {
        let protocol = u8::try_from(req.protocol).ok()?;
        let echo = matches!(protocol, PROTO_ICMP | PROTO_ICMPV6);
        let ports = has_ports(protocol);
        let port = |v: i32| u16::try_from(v).ok();
        Some(Self {
            protocol,
            src: t.src_ip.parse().ok()?,
            dst: t.dst_ip.parse().ok()?,
            src_port: if echo {
                port(t.icmp_id)?
            } else if ports {
                port(t.src_port)?
            } else {
                0
            },
            dst_port: if ports { port(t.dst_port)? } else { 0 },
        })
    }
}

impl std::fmt::Display for ConnTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            PROTO_ICMP | PROTO_ICMPV6 => write!(
                f,
                "ICMP {} -> {} (echo id {})",
                self.src, self.dst, self.src_port
            ),
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                let name = match self.protocol {
                    PROTO_TCP => "TCP",
                    PROTO_UDP => "UDP",
                    _ => "SCTP",
                };
                let host = |ip: IpAddr, port: u16| match ip {
                    IpAddr::V4(_) => format!("{ip}:{port}"),
                    IpAddr::V6(_) => format!("[{ip}]:{port}"),
                };
                write!(
                    f,
                    "{name} {} -> {}",
                    host(self.src, self.src_port),
                    host(self.dst, self.dst_port)
                )
            }
            p => write!(f, "protocol {p} {} -> {}", self.src, self.dst),
        }
    }
}

/// One connection of a `dpctl/dump-conntrack` text: its original tuple and ct_mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpedConn {
    pub tuple: ConnTuple,
    pub mark: u32,
}

/// Every connection in a `dpctl/dump-conntrack` text; lines it cannot read are skipped. A line
/// reads `tcp,orig=(src=A,dst=B,sport=P,dport=Q),reply=(...),zone=Z,mark=M,...`, or with
/// `id=I,type=T,code=C` instead of ports for ICMP.
pub fn parse_dump(text: &str) -> Vec<DumpedConn> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<DumpedConn> {
    let (proto, rest) = line.trim().split_once(',')?;
    let protocol = match proto {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        "icmp" => PROTO_ICMP,
        "icmp6" | "icmpv6" => PROTO_ICMPV6,
        n => n.parse().ok()?,
    };
    let orig = rest.strip_prefix("orig=(")?;
    let close = orig.find(')')?;
    let (orig, after) = (&orig[..close], &orig[close..]);
    let field = |key: &str| {
        orig.split(',')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| field(key).and_then(|v| v.parse::<u16>().ok());
    let (src_port, dst_port) = match protocol {
        PROTO_ICMP | PROTO_ICMPV6 => (num("id").unwrap_or(0), 0),
        p if has_ports(p) => (num("sport").unwrap_or(0), num("dport").unwrap_or(0)),
        _ => (0, 0),
    };
    let mark = after
        .split(',')
        .find_map(|kv| kv.strip_prefix("mark="))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some(DumpedConn {
        tuple: ConnTuple {
            protocol,
            src: field("src")?.parse().ok()?,
            dst: field("dst")?.parse().ok()?,
            src_port,
            dst_port,
        },
        mark,
    })
}

/// Whether a real connection (one without the trace mark: what an earlier trace left behind
/// is no one's) in the Pod conntrack zone `zone` of the ovs-vswitchd in `rundir` uses `tuple`,
/// in either direction.
pub async fn in_use(rundir: &Path, zone: u16, tuple: &ConnTuple) -> Result<bool, UnixctlError> {
    let socket = unixctl::socket_path(rundir)?;
    let zone = format!("zone={zone}");
    let dump = unixctl::call(&socket, "dpctl/dump-conntrack", &[&zone]).await?;
    Ok(uses(&parse_dump(&dump), tuple))
}

/// Whether a real connection of `conns` uses `tuple` in either direction.
fn uses(conns: &[DumpedConn], tuple: &ConnTuple) -> bool {
    let reversed = tuple.reversed();
    conns
        .iter()
        .any(|c| c.mark & regs::TRACE_CT_MARK == 0 && (c.tuple == *tuple || c.tuple == reversed))
}

/// The connections trace packets created on this Node (Pod zone), until the trace's
/// `FlushConntrack` removes them or they are older than any trace. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TraceConnections(Arc<Mutex<HashMap<(Zone, ConnTuple), Instant>>>);

impl TraceConnections {
    /// Longer than any trace runs, reply leg included.
    const KEEP: Duration = Duration::from_secs(600);
    /// Above this many, entries older than [`Self::KEEP`] go on insert.
    const PRUNE_ABOVE: usize = 4096;

    fn lock(&self) -> MutexGuard<'_, HashMap<(Zone, ConnTuple), Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the connection of a trace packet-in if the packet created it (`+new`, with
    /// the trace mark the ConntrackCommit, EndpointDNAT or hairpin SNAT flow gave it), in the
    /// zone of the packet's last `ct` (a hairpin's is the Service SNAT zone).
    pub fn record(&self, pin: &PacketIn, pkt: &ParsedPacket) {
        let f = &pin.fields;
        let created = f
            .ct_state()
            .is_some_and(|s| s & (ct_state::NEW | ct_state::TRK) == ct_state::NEW | ct_state::TRK)
            && f.ct_mark()
                .is_some_and(|m| m & regs::TRACE_CT_MARK == regs::TRACE_CT_MARK);
        if !created {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > Self::PRUNE_ABOVE {
            map.retain(|_, at| now.duration_since(*at) < Self::KEEP);
        }
        let zone = f.ct_zone().map_or(Zone::Pods, Zone::of_ct_zone);
        map.insert((zone, ConnTuple::of_packet_in(pin, pkt)), now);
    }

    /// `req` if a trace packet created its connection here: one of its tuples (each the one
    /// connection in a zone) was recorded. `None` when none was: a connection that was there
    /// before is left alone. The recorded tuples are forgotten.
    pub fn own(&self, req: &pb::FlushConntrack) -> Option<pb::FlushConntrack> {
        let mut map = self.lock();
        let mut owned = false;
        for t in &req.tuples {
            let Some(tuple) = ConnTuple::of_flush(req, t) else {
                continue;
            };
            owned |= map.remove(&(Zone::of_flush(t.zone), tuple)).is_some();
        }
        owned.then(|| req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
tcp,orig=(src=10.10.0.2,dst=10.96.0.10,sport=40000,dport=80),reply=(src=10.10.0.3,dst=10.10.0.2,sport=8080,dport=40000),zone=65520,mark=16,protoinfo=(state=ESTABLISHED)
udp,orig=(src=10.10.0.4,dst=10.10.0.2,sport=5353,dport=40000),reply=(src=10.10.0.2,dst=10.10.0.4,sport=40000,dport=5353),zone=65520,mark=2147483648
icmp,orig=(src=10.10.0.2,dst=10.10.0.3,id=4711,type=8,code=0),reply=(src=10.10.0.3,dst=10.10.0.2,id=4711,type=0,code=0),zone=65520
icmp6,orig=(src=fd00::2,dst=fd00::3,id=9,type=128,code=0),reply=(src=fd00::3,dst=fd00::2,id=9,type=129,code=0),zone=65510
sctp,orig=(src=10.10.0.2,dst=10.10.0.3,sport=0,dport=0),reply=(src=10.10.0.3,dst=10.10.0.2,sport=0,dport=0),zone=65520
nonsense
";

    fn tuple(protocol: u8, src: &str, dst: &str, sp: u16, dp: u16) -> ConnTuple {
        ConnTuple {
            protocol,
            src: src.parse().unwrap_or(IpAddr::from([0; 4])),
            dst: dst.parse().unwrap_or(IpAddr::from([0; 4])),
            src_port: sp,
            dst_port: dp,
        }
    }

    #[test]
    fn a_dump_reads_as_original_tuples_and_marks() {
        let got: Vec<_> = parse_dump(DUMP).iter().map(|c| (c.tuple, c.mark)).collect();
        assert_eq!(
            got,
            vec![
                (tuple(PROTO_TCP, "10.10.0.2", "10.96.0.10", 40000, 80), 16),
                (
                    tuple(PROTO_UDP, "10.10.0.4", "10.10.0.2", 5353, 40000),
                    regs::TRACE_CT_MARK
                ),
                (tuple(PROTO_ICMP, "10.10.0.2", "10.10.0.3", 4711, 0), 0),
                (tuple(PROTO_ICMPV6, "fd00::2", "fd00::3", 9, 0), 0),
                (tuple(PROTO_SCTP, "10.10.0.2", "10.10.0.3", 0, 0), 0),
            ]
        );
        let conns = parse_dump(DUMP);
        let real = tuple(PROTO_TCP, "10.10.0.2", "10.96.0.10", 40000, 80);
        assert!(uses(&conns, &real), "a real connection uses its tuple");
        assert!(uses(&conns, &real.reversed()), "either way round");
        let traced = tuple(PROTO_UDP, "10.10.0.2", "10.10.0.4", 40000, 5353);
        assert!(
            !uses(&conns, &traced),
            "an earlier trace's connection (trace mark) is no real one"
        );
    }

    #[test]
    fn a_connection_is_one_tuple_in_either_direction() {
        let udp = tuple(PROTO_UDP, "10.10.0.2", "10.10.0.4", 40000, 5353);
        assert_eq!(
            udp.reversed(),
            tuple(PROTO_UDP, "10.10.0.4", "10.10.0.2", 5353, 40000)
        );
        let echo = tuple(PROTO_ICMP, "10.10.0.3", "10.10.0.2", 4711, 0);
        assert_eq!(
            echo.reversed(),
            tuple(PROTO_ICMP, "10.10.0.2", "10.10.0.3", 4711, 0)
        );
        assert_eq!(
            udp.to_string(),
            "UDP 10.10.0.2:40000 -> 10.10.0.4:5353",
            "the tuple a refusal names"
        );
    }

    #[test]
    fn only_what_a_trace_created_is_flushed() {
        let conns = TraceConnections::default();
        let created = tuple(PROTO_UDP, "10.10.0.3", "10.10.0.1", 40000, 53);
        conns
            .lock()
            .insert((Zone::ServiceSnat, created), Instant::now());
        let flush = |src_port: i32| pb::FlushConntrack {
            trace_uid: "u1".into(),
            ipv6: false,
            protocol: 17,
            tuples: vec![
                pb::ConntrackTuple {
                    zone: pb::ConntrackZone::Pods as i32,
                    src_ip: "10.10.0.2".into(),
                    dst_ip: "10.10.0.3".into(),
                    src_port,
                    dst_port: 53,
                    icmp_id: 0,
                },
                pb::ConntrackTuple {
                    zone: pb::ConntrackZone::ServiceSnat as i32,
                    src_ip: "10.10.0.3".into(),
                    dst_ip: "10.10.0.1".into(),
                    src_port,
                    dst_port: 53,
                    icmp_id: 0,
                },
            ],
        };
        assert_eq!(
            conns.own(&flush(40001)),
            None,
            "a connection no trace created here (a real one) is left alone"
        );
        let owned = conns.own(&flush(40000));
        assert_eq!(
            owned.map(|f| f.tuples.len()),
            Some(2),
            "a hairpin's SNAT-zone entry seen created: its whole connection goes"
        );
        assert_eq!(conns.own(&flush(40000)), None, "flushed once");
    }
}
