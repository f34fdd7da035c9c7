//! `-f/--flow`: antctl's ovs-ofctl-like packet description → `spec.packet` (reference §5).
//!
//! Antrea semantics: spaces are removed and the text split on `,`; each item is `key=int` or a
//! bare `key`; `a=` and `=1` are errors (`<item> is not valid in flow`). `ipv6` selects an
//! `ipv6Header` (its `nextHeader` = the protocol given), otherwise an `ipHeader` is always
//! created (`protocol` 0 when none is given). `tcp_src`/`tcp_dst`/`tcp_flags` create a TCP
//! header, `udp_src`/`udp_dst` a UDP header; `nw_ttl` sets the TTL / hop limit.
//!
//! Ours on top: `sctp` (protocol 132) with `sctp_src`/`sctp_dst` (an SCTP header), `icmpv6`
//! (= `ipv6` + ICMPv6), `icmp_id`/`icmp_seq` (an ICMP echo header), `tp_src`/`tp_dst` (ports
//! of the tcp/udp/sctp protocol given), `ip_flags` (IPv4 flags, 0-7), hexadecimal values
//! (`tcp_flags=0x12`), and range checks. When several protocol keys are given, tcp > udp >
//! sctp > icmp (antctl picks one at random). Unlike antctl, which ignores a key it does not
//! know, an unknown key is an error naming it and listing [`KEYS`]: a typo (`tcp_dts=80`)
//! would otherwise trace another packet than the one asked for.
//!
//! Whether the packet makes a trace that can report (a destination port, TCP flags that open
//! a connection) is the spec's rule, checked by `traceflow_core::TraceSpec`.

use traceflow_proto::v1 as pb;

/// What is wrong with a flow string; messages follow antctl's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("{0} is not valid in flow")]
    NotValid(String),
    #[error("{key}={value}: value is not an integer")]
    NotInteger { key: String, value: String },
    #[error("{key}={value}: must be between {min} and {max}")]
    OutOfRange {
        key: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{key} needs a transport protocol in the flow: add tcp, udp or sctp")]
    NeedsTransport { key: String },
    #[error("{key} given twice in flow")]
    Duplicate { key: String },
    #[error("unknown key {key} in flow; use one of {}", KEYS.join(", "))]
    UnknownKey { key: String },
}

/// A parsed flow: the packet for `spec.packet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub packet: pb::Packet,
}

/// Every key a flow may have.
pub const KEYS: &[&str] = &[
    "ipv6",
    "icmpv6",
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "nw_ttl",
    "ip_flags",
    "tp_src",
    "tp_dst",
    "tcp_src",
    "tcp_dst",
    "tcp_flags",
    "udp_src",
    "udp_dst",
    "sctp_src",
    "sctp_dst",
    "icmp_id",
    "icmp_seq",
];

const PROTOCOLS: &[(&str, i32)] = &[
    ("tcp", 6),
    ("udp", 17),
    ("sctp", 132),
    ("icmp", 1),
    ("icmpv6", 58),
];

fn parse_int(key: &str, value: &str) -> Result<i64, FlowError> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => i64::from_str_radix(hex, 16),
        None => value.parse::<i64>(),
    };
    parsed.map_err(|_| FlowError::NotInteger {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// Parses `flow` (may be empty) into a packet.
pub fn parse_flow(flow: &str) -> Result<Flow, FlowError> {
    let trimmed: String = flow.chars().filter(|c| !c.is_whitespace()).collect();
    let mut fields: Vec<(String, Option<i64>)> = Vec::new();
    if !trimmed.is_empty() {
        for item in trimmed.split(',') {
            let (key, value) = match item.split_once('=') {
                None => (item, None),
                Some((k, v)) if !k.is_empty() && !v.is_empty() && !v.contains('=') => (k, Some(v)),
                Some(_) => return Err(FlowError::NotValid(item.to_string())),
            };
            if key.is_empty() {
                return Err(FlowError::NotValid(item.to_string()));
            }
            if !KEYS.contains(&key) {
                return Err(FlowError::UnknownKey {
                    key: key.to_string(),
                });
            }
            let value = value.map(|v| parse_int(key, v)).transpose()?;
            if fields.iter().any(|(k, _)| k == key) {
                return Err(FlowError::Duplicate {
                    key: key.to_string(),
                });
            }
            fields.push((key.to_string(), value));
        }
    }
    let has = |k: &str| fields.iter().any(|(key, _)| key == k);
    let get = |k: &str, min: i64, max: i64| -> Result<Option<i32>, FlowError> {
        let Some((_, v)) = fields.iter().find(|(key, _)| key == k) else {
            return Ok(None);
        };
        let v = v.unwrap_or(0);
        if v < min || v > max {
            return Err(FlowError::OutOfRange {
                key: k.to_string(),
                value: v,
                min,
                max,
            });
        }
        Ok(Some(i32::try_from(v).unwrap_or(0)))
    };

    let ipv6 = has("ipv6") || has("icmpv6");
    let protocol = PROTOCOLS.iter().find(|(k, _)| has(k)).map(|(_, p)| *p);
    let mut packet = pb::Packet::default();
    let ttl = get("nw_ttl", 0, 255)?.unwrap_or(0);
    if ipv6 {
        packet.ipv6_header = Some(pb::IPv6Header {
            next_header: protocol,
            hop_limit: ttl,
        });
    } else {
        let protocol = match protocol {
            Some(58) => 1,
            p => p.unwrap_or(0),
        };
        packet.ip_header = Some(pb::IpHeader {
            protocol,
            ttl,
            flags: get("ip_flags", 0, 7)?.unwrap_or(0),
        });
    }

    let mut transport = pb::TransportHeader::default();
    let port = |k: &str| get(k, 0, 65535);
    let (tp_src, tp_dst) = (port("tp_src")?, port("tp_dst")?);
    let (tcp_src, tcp_dst, tcp_flags) = (
        port("tcp_src")?,
        port("tcp_dst")?,
        get("tcp_flags", 0, 255)?,
    );
    let tp_proto = if tp_src.is_some() || tp_dst.is_some() {
        match protocol {
            Some(p @ (6 | 17 | 132)) => Some(p),
            _ => {
                let key = if tp_src.is_some() { "tp_src" } else { "tp_dst" };
                return Err(FlowError::NeedsTransport {
                    key: key.to_string(),
                });
            }
        }
    } else {
        None
    };
    if tcp_src.is_some() || tcp_dst.is_some() || tcp_flags.is_some() || tp_proto == Some(6) {
        transport.tcp = Some(pb::TcpHeader {
            src_port: tcp_src.or(tp_src).unwrap_or(0),
            dst_port: tcp_dst.or(tp_dst).unwrap_or(0),
            flags: tcp_flags,
        });
    }
    let (udp_src, udp_dst) = (port("udp_src")?, port("udp_dst")?);
    if udp_src.is_some() || udp_dst.is_some() || tp_proto == Some(17) {
        transport.udp = Some(pb::UdpHeader {
            src_port: udp_src.or(tp_src).unwrap_or(0),
            dst_port: udp_dst.or(tp_dst).unwrap_or(0),
        });
    }
    let (sctp_src, sctp_dst) = (port("sctp_src")?, port("sctp_dst")?);
    if sctp_src.is_some() || sctp_dst.is_some() || tp_proto == Some(132) {
        transport.sctp = Some(pb::SctpHeader {
            src_port: sctp_src.or(tp_src).unwrap_or(0),
            dst_port: sctp_dst.or(tp_dst).unwrap_or(0),
        });
    }
    let (icmp_id, icmp_seq) = (port("icmp_id")?, port("icmp_seq")?);
    if icmp_id.is_some() || icmp_seq.is_some() {
        transport.icmp = Some(pb::IcmpEchoRequestHeader {
            id: icmp_id.unwrap_or(0),
            sequence: icmp_seq.unwrap_or(0),
        });
    }
    if transport != pb::TransportHeader::default() {
        packet.transport_header = Some(transport);
    }

    Ok(Flow { packet })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(flow: &str) -> pb::Packet {
        match parse_flow(flow) {
            Ok(f) => f.packet,
            Err(e) => panic!("{flow}: {e}"),
        }
    }

    #[test]
    fn empty_flow_is_an_empty_ipv4_header_like_antctl() {
        assert_eq!(
            packet(""),
            pb::Packet {
                ip_header: Some(pb::IpHeader::default()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn tcp_dst_port() {
        let p = packet("tcp, tcp_dst=80");
        assert_eq!(p.ip_header.map(|h| h.protocol), Some(6));
        let tcp = p.transport_header.and_then(|t| t.tcp);
        assert_eq!(
            tcp,
            Some(pb::TcpHeader {
                src_port: 0,
                dst_port: 80,
                flags: None
            })
        );
    }

    #[test]
    fn tcp_flags_accept_decimal_and_hex() {
        let flags = |f: &str| {
            packet(f)
                .transport_header
                .and_then(|t| t.tcp)
                .and_then(|t| t.flags)
        };
        assert_eq!(flags("tcp,tcp_flags=18"), Some(18));
        assert_eq!(flags("tcp,tcp_flags=0x12"), Some(18));
    }

    #[test]
    fn udp_ports_and_ttl() {
        let p = packet("udp,udp_src=1234,udp_dst=53,nw_ttl=9");
        assert_eq!(
            p.ip_header,
            Some(pb::IpHeader {
                protocol: 17,
                ttl: 9,
                flags: 0
            })
        );
        assert_eq!(
            p.transport_header.and_then(|t| t.udp),
            Some(pb::UdpHeader {
                src_port: 1234,
                dst_port: 53
            })
        );
    }

    #[test]
    fn ipv6_moves_protocol_and_ttl_to_ipv6_header() {
        let p = packet("ipv6,tcp,tcp_dst=443,nw_ttl=3");
        assert!(p.ip_header.is_none());
        assert_eq!(
            p.ipv6_header,
            Some(pb::IPv6Header {
                next_header: Some(6),
                hop_limit: 3
            })
        );
        let p = packet("ipv6");
        assert_eq!(
            p.ipv6_header,
            Some(pb::IPv6Header {
                next_header: None,
                hop_limit: 0
            })
        );
        let p = packet("icmpv6");
        assert_eq!(p.ipv6_header.and_then(|h| h.next_header), Some(58));
    }

    #[test]
    fn sctp_icmp_fields_and_tp_ports() {
        assert_eq!(packet("sctp").ip_header.map(|h| h.protocol), Some(132));
        for flow in ["sctp,tp_dst=9000", "sctp_dst=9000"] {
            assert_eq!(
                packet(flow).transport_header.and_then(|t| t.sctp),
                Some(pb::SctpHeader {
                    src_port: 0,
                    dst_port: 9000
                }),
                "{flow}"
            );
        }
        let icmp = packet("icmp,icmp_id=7,icmp_seq=2")
            .transport_header
            .and_then(|t| t.icmp);
        assert_eq!(icmp, Some(pb::IcmpEchoRequestHeader { id: 7, sequence: 2 }));
        let udp = packet("udp,tp_dst=53").transport_header.and_then(|t| t.udp);
        assert_eq!(
            udp,
            Some(pb::UdpHeader {
                src_port: 0,
                dst_port: 53
            })
        );
        assert_eq!(
            parse_flow("tp_dst=53"),
            Err(FlowError::NeedsTransport {
                key: "tp_dst".into()
            })
        );
    }

    #[test]
    fn antctl_errors() {
        assert_eq!(
            parse_flow("tcp,tcp_dst="),
            Err(FlowError::NotValid("tcp_dst=".into()))
        );
        assert_eq!(parse_flow("=1"), Err(FlowError::NotValid("=1".into())));
        assert!(matches!(
            parse_flow("tcp_dst=http"),
            Err(FlowError::NotInteger { .. })
        ));
        assert!(matches!(
            parse_flow("tcp_dst=70000"),
            Err(FlowError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_flow("nw_ttl=256"),
            Err(FlowError::OutOfRange { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key_and_the_keys() {
        let e = parse_flow("tcp,tcp_dts=80");
        assert_eq!(
            e,
            Err(FlowError::UnknownKey {
                key: "tcp_dts".into()
            })
        );
        let text = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("unknown key tcp_dts in flow; use one of ipv6, icmpv6, tcp,")
                && text.contains("tcp_dst")
                && text.ends_with("icmp_seq"),
            "{text}"
        );
        // Bare or with a value, whatever the value.
        for flow in ["nw_dst", "tcp,nw_dst=10", "nw_dst=x"] {
            assert!(
                matches!(parse_flow(flow), Err(FlowError::UnknownKey { .. })),
                "{flow}"
            );
        }
        // Every key the error lists is one the parser takes.
        for key in KEYS {
            let flow = if key.ends_with("_src") || key.ends_with("_dst") {
                format!("tcp,udp,{key}=1")
            } else {
                (*key).to_string()
            };
            assert!(parse_flow(&flow).is_ok(), "{flow}");
        }
    }

    #[test]
    fn protocol_precedence_is_deterministic() {
        assert_eq!(
            packet("icmp,udp,tcp").ip_header.map(|h| h.protocol),
            Some(6)
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::parse_flow;

        /// Words tfctl's flow syntax knows, so generated flows reach past the first check.
        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("tcp".to_string()),
                Just("udp".to_string()),
                Just("icmp".to_string()),
                Just("ipv6".to_string()),
                "[a-z_]{1,8}=[0-9a-fx-]{0,12}",
                "[a-z_]{1,8}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text parses or is refused with an error; never a panic.
            #[test]
            fn any_text_parses_or_is_refused(flow in any::<String>()) {
                let _ = parse_flow(&flow);
            }

            /// Comma-joined plausible fields: same, and an error names no more than the input.
            #[test]
            fn plausible_flows_parse_or_are_refused(
                parts in proptest::collection::vec(token(), 0..8)
            ) {
                let flow = parts.join(",");
                if let Err(e) = parse_flow(&flow) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
