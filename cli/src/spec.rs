//! `-S`/`-D`/`-L`/`--dropped-only`/`-t` → a `TraceflowSpec` and an antctl-style name
//! (reference §5). Pure; the caller decides whether a destination name is a Pod or a Service.

use std::{net::IpAddr, time::Duration};

use traceflow_proto::v1 as pb;

/// Antrea's largest `spec.timeout` (CRD maximum, reference §1.2).
pub const MAX_TIMEOUT: Duration =
    Duration::from_secs(traceflow_core::limits::MAX_TIMEOUT_SECS as u64);

/// Errors in the trace flags; antctl's message where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("Please provide source")]
    NoSource,
    #[error("Please provide destination")]
    NoDestination,
    #[error("One of source and destination must be a Pod")]
    NoPod,
    #[error("--dropped-only works only with live-traffic Traceflow")]
    DroppedOnlyWithoutLive,
    #[error("--reply works only with injected Traceflow; drop --live-traffic or --reply")]
    ReplyWithLive,
    #[error("source must be a Pod if not a live-traffic Traceflow")]
    SourceNotPod,
    #[error("source should be in the format of Namespace/Pod or Pod, or an IP address")]
    BadSource,
    #[error(
        "destination should be in the format of Namespace/Pod, Pod, Namespace/Service or Service"
    )]
    BadDestination,
    #[error("timeout must be between 1s and {max}s (Antrea's limits), got {0:?}", max = traceflow_core::limits::MAX_TIMEOUT_SECS)]
    Timeout(Duration),
    /// The spec breaks a rule the manager enforces (the same `TraceSpec` conversion).
    #[error("invalid trace: {0}")]
    Invalid(#[from] traceflow_core::Invalid),
}

/// A `-S` / `-D` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `Namespace/Name` or `Name` (namespace `default`; `typed_namespace` false).
    Named {
        namespace: String,
        name: String,
        typed_namespace: bool,
    },
    Ip(IpAddr),
}

impl Endpoint {
    /// Parses `ns/name`, `name` or an IP; `None` when the text has another shape.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Endpoint::Ip(ip));
        }
        let valid = |s: &str| !s.is_empty() && !s.contains('/');
        match text.split_once('/') {
            Some((ns, name)) if valid(ns) && valid(name) => Some(Endpoint::Named {
                namespace: ns.into(),
                name: name.into(),
                typed_namespace: true,
            }),
            None if valid(text) => Some(Endpoint::Named {
                namespace: "default".into(),
                name: text.into(),
                typed_namespace: false,
            }),
            _ => None,
        }
    }

    /// The name fragment antctl uses: `ns-name`, `name`, or the IP with `:` replaced by `-`.
    fn name_part(&self) -> String {
        match self {
            Endpoint::Named {
                namespace,
                name,
                typed_namespace: true,
            } => format!("{namespace}-{name}"),
            Endpoint::Named { name, .. } => name.clone(),
            Endpoint::Ip(ip) => ip.to_string().replace("::", "-").replace(':', "-"),
        }
    }
}

/// What a named destination turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    Pod,
    Service,
}

/// The trace flags (antctl's), as clap parses them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TraceFlags {
    /// Namespace/Pod, Pod (namespace default), or an IP (live traffic only).
    #[arg(short = 'S', long)]
    pub source: Option<String>,
    /// Namespace/Pod, Pod, Namespace/Service, Service, or an IP.
    #[arg(short = 'D', long)]
    pub destination: Option<String>,
    /// Trace the first packet of a new matching connection instead of injecting one.
    #[arg(short = 'L', long, visible_short_alias = 'l')]
    pub live_traffic: bool,
    /// With --live-traffic: capture only a packet a NetworkPolicy drops.
    #[arg(short = 'd', long)]
    pub dropped_only: bool,
    /// Also trace the reply the destination Pod would send (TCP SYN-ACK, ICMP echo reply,
    /// UDP/SCTP with ports swapped) back to the source; injected traces only (`spec.reply`).
    #[arg(long)]
    pub reply: bool,
    /// Trace timeout, e.g. 20s (1s..300s); default 20s.
    #[arg(short = 't', long, value_parser = crate::parse_duration)]
    pub timeout: Option<Duration>,
}

/// The parsed endpoints, after antctl's pre-checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub source: Option<Endpoint>,
    pub destination: Option<Endpoint>,
}

/// antctl's pre-checks and endpoint parsing, in its order.
pub fn check(flags: &TraceFlags) -> Result<Endpoints, SpecError> {
    if let Some(t) = flags.timeout
        && (t.is_zero() || t > MAX_TIMEOUT)
    {
        return Err(SpecError::Timeout(t));
    }
    fn given(o: &Option<String>) -> Option<&str> {
        o.as_deref().filter(|s| !s.is_empty())
    }
    let (src, dst) = (given(&flags.source), given(&flags.destination));
    if !flags.live_traffic && src.is_none() {
        return Err(SpecError::NoSource);
    }
    if !flags.live_traffic && dst.is_none() {
        return Err(SpecError::NoDestination);
    }
    if src.is_none() && dst.is_none() {
        return Err(SpecError::NoPod);
    }
    if flags.reply && flags.live_traffic {
        return Err(SpecError::ReplyWithLive);
    }
    if flags.dropped_only && !flags.live_traffic {
        return Err(SpecError::DroppedOnlyWithoutLive);
    }
    let source = src
        .map(|s| Endpoint::parse(s).ok_or(SpecError::BadSource))
        .transpose()?;
    if !flags.live_traffic && matches!(source, Some(Endpoint::Ip(_))) {
        return Err(SpecError::SourceNotPod);
    }
    let destination = dst
        .map(|d| Endpoint::parse(d).ok_or(SpecError::BadDestination))
        .transpose()?;
    let src_is_pod = matches!(source, Some(Endpoint::Named { .. }));
    let dst_is_named = matches!(destination, Some(Endpoint::Named { .. }));
    if !src_is_pod && !dst_is_named {
        return Err(SpecError::NoPod);
    }
    Ok(Endpoints {
        source,
        destination,
    })
}

/// Builds the spec. `kind` says what a named destination is.
pub fn build_spec(
    flags: &TraceFlags,
    endpoints: &Endpoints,
    kind: DestinationKind,
    packet: pb::Packet,
) -> pb::TraceflowSpec {
    let source = match &endpoints.source {
        Some(Endpoint::Named {
            namespace, name, ..
        }) => pb::Source {
            namespace: namespace.clone(),
            pod: name.clone(),
            ip: String::new(),
        },
        Some(Endpoint::Ip(ip)) => pb::Source {
            ip: ip.to_string(),
            ..Default::default()
        },
        None => pb::Source::default(),
    };
    let destination = match (&endpoints.destination, kind) {
        (
            Some(Endpoint::Named {
                namespace, name, ..
            }),
            DestinationKind::Pod,
        ) => pb::Destination {
            namespace: namespace.clone(),
            pod: name.clone(),
            ..Default::default()
        },
        (
            Some(Endpoint::Named {
                namespace, name, ..
            }),
            DestinationKind::Service,
        ) => pb::Destination {
            namespace: namespace.clone(),
            service: name.clone(),
            ..Default::default()
        },
        (Some(Endpoint::Ip(ip)), _) => pb::Destination {
            ip: ip.to_string(),
            ..Default::default()
        },
        (None, _) => pb::Destination::default(),
    };
    let timeout = flags.timeout.map_or(0, |t| {
        let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    });
    pb::TraceflowSpec {
        source: Some(source),
        destination: Some(destination),
        packet: Some(packet),
        live_traffic: flags.live_traffic,
        dropped_only: flags.dropped_only,
        timeout,
        reply: flags.reply,
    }
}

/// antctl's name: `<src>-to-<dst>-<8 random lower-case letters>` (`any` for a missing side).
pub fn trace_name(endpoints: &Endpoints, suffix: &str) -> String {
    let part = |e: &Option<Endpoint>| {
        e.as_ref()
            .map_or_else(|| "any".to_string(), Endpoint::name_part)
    };
    format!(
        "{}-to-{}-{suffix}",
        part(&endpoints.source),
        part(&endpoints.destination)
    )
}

/// Eight random lower-case letters.
pub fn random_suffix() -> String {
    (0..8)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(src: Option<&str>, dst: Option<&str>) -> TraceFlags {
        TraceFlags {
            source: src.map(Into::into),
            destination: dst.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_parse_like_antctl() {
        assert_eq!(
            Endpoint::parse("web/api"),
            Some(Endpoint::Named {
                namespace: "web".into(),
                name: "api".into(),
                typed_namespace: true
            })
        );
        assert_eq!(
            Endpoint::parse("api"),
            Some(Endpoint::Named {
                namespace: "default".into(),
                name: "api".into(),
                typed_namespace: false
            })
        );
        assert!(matches!(Endpoint::parse("fd00::1"), Some(Endpoint::Ip(_))));
        assert_eq!(Endpoint::parse("a/b/c"), None);
        assert_eq!(Endpoint::parse("/b"), None);
    }

    #[test]
    fn prechecks_in_antctls_order() {
        assert_eq!(check(&flags(None, Some("p1"))), Err(SpecError::NoSource));
        assert_eq!(
            check(&flags(Some("p0"), None)),
            Err(SpecError::NoDestination)
        );
        assert_eq!(
            check(&flags(Some("10.0.0.1"), Some("p1"))),
            Err(SpecError::SourceNotPod)
        );
        assert_eq!(
            check(&flags(Some("a/b/c"), Some("p1"))),
            Err(SpecError::BadSource)
        );
        let mut live = flags(None, None);
        live.live_traffic = true;
        assert_eq!(check(&live), Err(SpecError::NoPod));
        let mut dropped = flags(Some("p0"), Some("p1"));
        dropped.dropped_only = true;
        assert_eq!(check(&dropped), Err(SpecError::DroppedOnlyWithoutLive));
        let live_reply = TraceFlags {
            source: Some("p0".into()),
            live_traffic: true,
            reply: true,
            ..Default::default()
        };
        assert_eq!(check(&live_reply), Err(SpecError::ReplyWithLive));
        let mut slow = flags(Some("p0"), Some("p1"));
        slow.timeout = Some(Duration::from_secs(301));
        assert!(matches!(check(&slow), Err(SpecError::Timeout(_))));
    }

    #[test]
    fn live_traffic_accepts_source_ip_with_destination_pod() {
        let mut live = flags(Some("10.0.0.1"), Some("web/api"));
        live.live_traffic = true;
        assert!(check(&live).is_ok());
    }

    #[test]
    fn spec_for_service_destination_and_timeout_rounding() -> Result<(), SpecError> {
        let mut f = flags(Some("default/p0"), Some("web/api"));
        f.timeout = Some(Duration::from_millis(1500));
        let e = check(&f)?;
        let spec = build_spec(&f, &e, DestinationKind::Service, pb::Packet::default());
        assert_eq!(
            spec.destination.map(|d| (d.namespace, d.service)),
            Some(("web".into(), "api".into()))
        );
        assert_eq!(spec.source.map(|s| s.pod), Some("p0".into()));
        assert_eq!(spec.timeout, 2);
        Ok(())
    }

    #[test]
    fn names_like_antctl() -> Result<(), SpecError> {
        let e = check(&flags(Some("p0"), Some("web/p1")))?;
        assert_eq!(trace_name(&e, "abcdefgh"), "p0-to-web-p1-abcdefgh");
        let e = check(&flags(Some("p0"), Some("fd00::1")))?;
        assert_eq!(trace_name(&e, "x"), "p0-to-fd00-1-x");
        let s = random_suffix();
        assert!(s.len() == 8 && s.chars().all(|c| c.is_ascii_lowercase()));
        Ok(())
    }
}
