//! Names: of clusters (what certificates and stream identities carry) and of traces (antctl's
//! `<src>-to-<dst>-<suffix>`, or the user's own).

use rand::Rng;

use crate::{
    limits::{MAX_LABEL_LEN, MAX_SUBDOMAIN_LEN},
    spec::{Destination, Invalid, Source, TraceSpec},
};

/// A cluster name: 1-63 lower-case letters, digits, '-', '.' or '_', not starting or ending
/// with '-'. The error never repeats the (possibly huge) input.
pub fn check_cluster(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "not a valid name: use 1-63 lower-case letters, digits, '-', '.' or '_'",
        ))
    }
}

/// A trace name chosen by a user: a DNS-1123 subdomain (what a Traceflow resource may be
/// called), 1-253 lower-case letters, digits, '-' or '.', starting and ending alphanumeric.
pub fn check_trace(field: &str, name: &str) -> Result<(), Invalid> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "not a valid trace name: use 1-253 lower-case letters, digits, '-' or '.', \
             starting and ending with a letter or digit",
        ))
    }
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && alnum_ends(s)
}

/// A DNS-1123 subdomain: 1-253 of `[a-z0-9.-]`, dot-separated labels alphanumeric at both ends.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBDOMAIN_LEN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && alnum_ends(label)
        })
}

fn alnum_ends(s: &str) -> bool {
    let ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    ok(s.as_bytes().first()) && ok(s.as_bytes().last())
}

/// An antctl-like name: `<src>-to-<dst>-<5 random lower-case alphanumerics>`, with `any` for a
/// side the spec leaves open and IPv6 colons turned into '-'. Always a valid trace name.
pub fn generate(spec: &TraceSpec) -> String {
    let src = match &spec.source {
        Source::Pod(p) => p.name.clone(),
        Source::Ip(ip) => ip.to_string(),
        Source::Unspecified => "any".into(),
    };
    let dst = match &spec.destination {
        Destination::Pod(p) | Destination::Service(p) => p.name.clone(),
        Destination::Ip(ip) => ip.to_string(),
        Destination::Unspecified => "any".into(),
    };
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect();
    // Each side is a valid name part already (DNS names or IPs); 100 bytes each keeps the
    // whole within a subdomain's 253.
    let cut = |s: String| {
        s.replace("::", "-")
            .replace(':', "-")
            .chars()
            .take(100)
            .collect::<String>()
    };
    let name = format!("{}-to-{}-{suffix}", cut(src), cut(dst));
    // "fd00::" → "fd00-" would end a side in '-': harmless inside the name, but a name that
    // starts with one is not valid, so trim it.
    name.trim_start_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceflow_proto::v1 as pb;

    fn spec(src: &str, dst_ip: &str) -> TraceSpec {
        let pb = pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: src.into(),
                ..Default::default()
            }),
            destination: Some(pb::Destination {
                ip: dst_ip.into(),
                ..Default::default()
            }),
            packet: dst_ip.contains(':').then(|| pb::Packet {
                ipv6_header: Some(pb::IPv6Header::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        match TraceSpec::try_from(pb) {
            Ok(s) => s,
            Err(e) => panic!("fixture spec is invalid: {e}"),
        }
    }

    #[test]
    fn generated_names_look_like_antctl_and_are_valid() {
        let n = generate(&spec("p0", "10.0.0.1"));
        assert!(n.starts_with("p0-to-10.0.0.1-"), "{n}");
        assert_eq!(n.len(), "p0-to-10.0.0.1-".len() + 5);
        let n6 = generate(&spec("p0", "fd00::1"));
        assert!(n6.starts_with("p0-to-fd00-1-"), "{n6}");
        assert!(check_trace("name", &n).is_ok() && check_trace("name", &n6).is_ok());
    }

    #[test]
    fn cluster_and_trace_names() {
        assert!(check_cluster("cluster", "kind-a").is_ok());
        assert!(check_cluster("cluster", "Bad Name").is_err());
        assert!(check_cluster("cluster", &"a".repeat(64)).is_err());
        let e = check_trace("name", &"x".repeat(100_000));
        assert!(e.is_err_and(|e| e.to_string().len() < 200));
        assert!(check_trace("name", "tf-1.a").is_ok());
        assert!(check_trace("name", "-tf").is_err());
        assert!(is_dns_label("web") && !is_dns_label("a.b"));
    }
}
