//! Which addresses the agent and the gateway may reach on a registration's say-so: the
//! agent's health checks (`[health] check_deny_cidrs` / `check_allow_cidrs`) and the gateway's
//! upstreams (`[registry] deny_cidrs`). Pure: the caller resolves host names and passes the
//! addresses in.

use std::net::IpAddr;

use ipnet::IpNet;

/// The ranges refused unless configured otherwise: link-local IPv4 and IPv6, where cloud
/// metadata services live (`169.254.169.254`, `fe80::…`).
pub fn default_deny() -> Vec<IpNet> {
    vec![
        IpNet::from(ipnet::Ipv4Net::new_assert([169, 254, 0, 0].into(), 16)),
        IpNet::from(ipnet::Ipv6Net::new_assert(
            [0xfe80, 0, 0, 0, 0, 0, 0, 0].into(),
            10,
        )),
    ]
}

/// Ranges an address must stay out of (`deny`) and, when given, inside of (`allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Refused ranges; they win over `allow`.
    pub deny: Vec<IpNet>,
    /// When set, only these ranges are allowed.
    pub allow: Option<Vec<IpNet>>,
}

impl Default for AddressPolicy {
    /// The link-local ranges denied, everything else allowed.
    fn default() -> Self {
        AddressPolicy {
            deny: default_deny(),
            allow: None,
        }
    }
}

/// Why an address was refused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error,
)]
pub enum AddressRefusal {
    /// The address is in a denied range.
    #[error("{address} is in the denied range {range}")]
    Denied {
        /// The address.
        address: IpAddr,
        /// The range it is in.
        range: IpNet,
    },
    /// An allow list is set and the address is in none of its ranges.
    #[error("{address} is outside the allowed ranges")]
    NotAllowed {
        /// The address.
        address: IpAddr,
    },
}

impl AddressPolicy {
    /// Denies `deny`, allows everything else.
    pub fn deny_only(deny: Vec<IpNet>) -> Self {
        AddressPolicy { deny, allow: None }
    }

    /// Whether `address` may be reached. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// judged as the IPv4 address it carries too, so it cannot slip past an IPv4 range.
    pub fn check(&self, address: IpAddr) -> Result<(), AddressRefusal> {
        let mapped = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let within =
            |net: &IpNet| net.contains(&address) || mapped.is_some_and(|m| net.contains(&m));
        if let Some(range) = self.deny.iter().find(|n| within(n)) {
            return Err(AddressRefusal::Denied {
                address,
                range: *range,
            });
        }
        match &self.allow {
            Some(allow) if !allow.iter().any(within) => Err(AddressRefusal::NotAllowed { address }),
            _ => Ok(()),
        }
    }

    /// The first refusal among `addresses` (every address a name resolves to must pass: a
    /// name with one good and one denied address could be dialled at either).
    pub fn check_all(
        &self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), AddressRefusal> {
        addresses.into_iter().try_for_each(|a| self.check(a))
    }
}

/// The IP address an instance or check target names literally (`10.0.0.1`, `::1`, `[::1]`,
/// `fe80::1%eth0`); `None` for a host name, which the caller must resolve.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.split_once('%').map_or(host, |(ip, _zone)| ip);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_default_denies_link_local_and_nothing_else() {
        let p = AddressPolicy::default();
        for bad in ["169.254.169.254", "169.254.0.1", "fe80::1", "febf::1"] {
            let err = p.check(ip(bad)).unwrap_err();
            assert!(matches!(err, AddressRefusal::Denied { .. }), "{bad}");
        }
        for good in [
            "127.0.0.1",
            "10.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "::1",
            "fec0::1",
        ] {
            assert_eq!(p.check(ip(good)), Ok(()), "{good}");
        }
        let err = p.check(ip("169.254.169.254")).unwrap_err().to_string();
        assert_eq!(err, "169.254.169.254 is in the denied range 169.254.0.0/16");
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_as_ipv4() {
        let p = AddressPolicy::default();
        assert!(p.check(ip("::ffff:169.254.169.254")).is_err());
        assert_eq!(p.check(ip("::ffff:10.0.0.1")), Ok(()));
        let allow = AddressPolicy {
            deny: vec![],
            allow: Some(nets(&["10.0.0.0/8"])),
        };
        assert_eq!(allow.check(ip("::ffff:10.1.2.3")), Ok(()));
    }

    #[test]
    fn an_allow_list_refuses_what_it_does_not_name_and_deny_wins() {
        let p = AddressPolicy {
            deny: nets(&["10.9.0.0/16"]),
            allow: Some(nets(&["10.0.0.0/8", "127.0.0.0/8"])),
        };
        assert_eq!(p.check(ip("10.1.1.1")), Ok(()));
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(
            p.check(ip("192.168.1.1")),
            Err(AddressRefusal::NotAllowed {
                address: ip("192.168.1.1")
            })
        );
        assert!(matches!(
            p.check(ip("10.9.1.1")),
            Err(AddressRefusal::Denied { .. })
        ));
        assert!(p.check_all([ip("10.1.1.1"), ip("10.9.0.1")]).is_err());
        assert_eq!(p.check_all([ip("10.1.1.1"), ip("127.0.0.2")]), Ok(()));
    }

    #[test]
    fn literal_ips_are_recognised_and_names_are_not() {
        assert_eq!(literal_ip("10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(literal_ip("[::1]"), Some(ip("::1")));
        assert_eq!(literal_ip("fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(literal_ip(" 169.254.169.254 "), Some(ip("169.254.169.254")));
        assert_eq!(literal_ip("metadata.google.internal"), None);
        assert_eq!(literal_ip("localhost"), None);
    }
}
