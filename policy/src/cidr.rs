//! CIDR parsing and set arithmetic for `ipBlock` peers.
//!
//! `ipBlock {cidr, except}` is compiled to a plain set of disjoint CIDRs (`cidr` minus every
//! `except`), so the flow layer needs no priorities or negative matches to express it.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Ctx, PolicyError};

/// Parses `value` as a CIDR (`a.b.c.d/n` or `x::/n`); host bits are cleared.
///
/// Errors: `InvalidCidr` naming the object and field when it is not a CIDR (a bare address is
/// refused, as the API server does).
pub(crate) fn parse_cidr(value: &str, ctx: &Ctx<'_>) -> Result<IpNet, PolicyError> {
    let net: IpNet = value.trim().parse().map_err(|e: ipnet::AddrParseError| {
        ctx.cidr(value, format!("{e}; expected e.g. 10.0.0.0/8"))
    })?;
    Ok(net.trunc())
}

/// `cidr` minus every entry of `except`, as a sorted list of disjoint CIDRs.
///
/// Errors: an except that is not strictly inside `cidr` (K8s validation rule) or does not parse.
pub(crate) fn ip_block(
    cidr: &str,
    except: &[String],
    ctx: &Ctx<'_>,
) -> Result<Vec<IpNet>, PolicyError> {
    let base = parse_cidr(cidr, &ctx.at(".cidr"))?;
    let mut holes = Vec::with_capacity(except.len());
    for (i, e) in except.iter().enumerate() {
        let ectx = ctx.at(format!(".except[{i}]"));
        let hole = parse_cidr(e, &ectx)?;
        if !base.contains(&hole) || hole == base {
            return Err(ectx.cidr(e, format!("must be a strict subset of cidr {base}")));
        }
        holes.push(hole);
    }
    let mut out = subtract(base, &holes);
    out.sort();
    Ok(out)
}

/// `base` minus the union of `holes`, as disjoint CIDRs.
pub fn subtract(base: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    let relevant: Vec<IpNet> = holes
        .iter()
        .copied()
        .filter(|h| base.contains(h) || h.contains(&base))
        .collect();
    if relevant.is_empty() {
        return vec![base];
    }
    if relevant.iter().any(|h| h.contains(&base)) {
        return Vec::new();
    }
    match halves(base) {
        Some((lo, hi)) => {
            let mut out = subtract(lo, &relevant);
            out.extend(subtract(hi, &relevant));
            out
        }
        None => Vec::new(),
    }
}

/// The two halves of a CIDR, or `None` for a host route.
fn halves(net: IpNet) -> Option<(IpNet, IpNet)> {
    match net {
        IpNet::V4(n) => {
            let len = n.prefix_len();
            if len >= 32 {
                return None;
            }
            let base = u32::from(n.network());
            let bit = 1u32 << (31 - len);
            let lo = Ipv4Net::new(base.into(), len + 1).ok()?;
            let hi = Ipv4Net::new((base | bit).into(), len + 1).ok()?;
            Some((IpNet::V4(lo), IpNet::V4(hi)))
        }
        IpNet::V6(n) => {
            let len = n.prefix_len();
            if len >= 128 {
                return None;
            }
            let base = u128::from(n.network());
            let bit = 1u128 << (127 - len);
            let lo = Ipv6Net::new(base.into(), len + 1).ok()?;
            let hi = Ipv6Net::new((base | bit).into(), len + 1).ok()?;
            Some((IpNet::V6(lo), IpNet::V6(hi)))
        }
    }
}

/// The host route of an address (`/32` or `/128`).
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().filter_map(|s| s.parse().ok()).collect()
    }

    #[test]
    fn except_is_subtracted() -> Result<(), PolicyError> {
        let ctx = Ctx::new("K8sNetworkPolicy:ns/p", "spec.ingress[0].from[0].ipBlock");
        let got = ip_block("10.0.0.0/24", &["10.0.0.128/25".into()], &ctx)?;
        assert_eq!(got, nets(&["10.0.0.0/25"]));
        let got = ip_block(
            "10.0.0.0/24",
            &["10.0.0.0/26".into(), "10.0.0.192/27".into()],
            &ctx,
        )?;
        assert_eq!(
            got,
            nets(&["10.0.0.64/26", "10.0.0.128/26", "10.0.0.224/27"])
        );
        let got = ip_block("fd00::/64", &["fd00::/65".into()], &ctx)?;
        assert_eq!(got, nets(&["fd00::8000:0:0:0/65"]));
        Ok(())
    }

    #[test]
    fn host_bits_cleared_and_single_host_holes() -> Result<(), PolicyError> {
        let ctx = Ctx::new("o", "f");
        let got = ip_block("192.168.1.7/30", &["192.168.1.5/32".into()], &ctx)?;
        assert_eq!(got, nets(&["192.168.1.4/32", "192.168.1.6/31"]));
        Ok(())
    }

    #[test]
    fn bad_cidr_names_field() {
        let ctx = Ctx::new("K8sNetworkPolicy:ns/p", "spec.ingress[0].from[0].ipBlock");
        match ip_block("10.0.0.300/8", &[], &ctx) {
            Err(PolicyError::InvalidCidr { field, value, .. }) => {
                assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
                assert_eq!(value, "10.0.0.300/8");
            }
            other => panic!("unexpected {other:?}"),
        }
        match ip_block("10.0.0.0/8", &["11.0.0.0/16".into()], &ctx) {
            Err(PolicyError::InvalidCidr { field, .. }) => {
                assert_eq!(field, "spec.ingress[0].from[0].ipBlock.except[0]");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(ip_block("10.0.0.1", &[], &ctx).is_err());
    }
}
