//! Where a probe may connect. A declared endpoint is the developer's input and a redirect is the
//! endpoint's: either could point SIGMA's own network at itself (loopback, the private network,
//! the cloud metadata service). Every address a host resolves to is checked before connecting,
//! the connection is pinned to the checked addresses (no second lookup to rebind), and each
//! redirect hop is checked again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Addresses no probe reaches, named for the refusal; the first block that holds an address
/// names it (so the metadata addresses come before the ranges that hold them).
const FORBIDDEN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "cloud metadata"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("2001::/32", "Teredo"),
    ("fec0::/10", "site-local"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard"),
    ("2001:db8::/32", "documentation"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The address policy: everything public, except what a test-only allowlist opens.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<Allowed>,
}

#[derive(Clone, Debug)]
enum Allowed {
    Net(IpNet),
    Socket(SocketAddr),
}

impl AddressPolicy {
    /// `allow` holds CIDR blocks (`10.1.0.0/16`) or single sockets (`127.0.0.1:8081`); it exists
    /// for tests and private deployments, and is empty by default.
    pub fn new(allow: &[String]) -> anyhow::Result<Self> {
        let allow = allow
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                if let Ok(socket) = entry.parse::<SocketAddr>() {
                    Ok(Allowed::Socket(socket))
                } else if let Ok(net) = entry.parse::<IpNet>() {
                    Ok(Allowed::Net(net))
                } else if let Ok(ip) = entry.parse::<IpAddr>() {
                    Ok(Allowed::Net(IpNet::from(ip)))
                } else {
                    anyhow::bail!("`{entry}` is neither an address, a CIDR block nor a socket")
                }
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { allow })
    }

    /// `Err` names why the address is refused.
    pub fn check(&self, socket: SocketAddr) -> Result<(), String> {
        let ip = canonical(socket.ip());
        let allowed = self.allow.iter().any(|a| match a {
            Allowed::Net(net) => net.contains(&ip),
            Allowed::Socket(s) => canonical(s.ip()) == ip && s.port() == socket.port(),
        });
        if allowed {
            return Ok(());
        }
        match forbidden_class(ip) {
            Some(class) => Err(format!("{ip} is a {class} address")),
            None => Ok(()),
        }
    }
}

/// An IPv4 address written as IPv6 (mapped or compatible) is judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    let ip = canonical(ip);
    if let IpAddr::V6(v6) = ip
        && let Some(embedded) = embedded_v4(v6)
    {
        return forbidden_class(IpAddr::V4(embedded));
    }
    FORBIDDEN.iter().find_map(|(net, class)| {
        let net: IpNet = net.parse().expect("a valid built-in block");
        net.contains(&ip).then_some(*class)
    })
}

/// IPv4 addresses carried inside IPv6 forms a router or relay would translate: NAT64
/// (`64:ff9b::/96`), IPv4-translated (`::ffff:0:a.b.c.d`), 6to4 (`2002:aabb:ccdd::/48`) and the
/// deprecated compatible form (`::a.b.c.d`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let tail = v4(s[6], s[7]);
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    let translated = s[..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0;
    let compatible = s[..6].iter().all(|x| *x == 0)
        && !tail.is_unspecified()
        && tail != Ipv4Addr::new(0, 0, 0, 1);
    (nat64 || translated || compatible).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, socket: &str) -> Option<String> {
        policy.check(socket.parse().unwrap()).err()
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        let policy = AddressPolicy::default();
        for (socket, class) in [
            ("127.0.0.1:80", "loopback"),
            ("127.9.9.9:443", "loopback"),
            ("169.254.169.254:80", "cloud metadata"),
            ("169.254.1.1:80", "link-local"),
            ("10.2.3.4:80", "private"),
            ("192.168.1.1:80", "private"),
            ("172.31.0.1:80", "private"),
            ("100.100.100.200:80", "shared address space"),
            ("0.0.0.0:80", "unspecified"),
            ("[::1]:80", "loopback"),
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("[::ffff:169.254.169.254]:80", "cloud metadata"),
            ("[64:ff9b::a9fe:a9fe]:80", "cloud metadata"),
            ("[::7f00:1]:80", "loopback"),
            ("[::ffff:0:a9fe:a9fe]:80", "cloud metadata"),
            ("[2002:a9fe:a9fe::1]:80", "cloud metadata"),
            ("[2002:c0a8:101::1]:80", "private"),
            ("[2001:0:4136:e378::1]:80", "Teredo"),
            ("[fec0::1]:80", "site-local"),
            ("[fd00:ec2::254]:80", "cloud metadata"),
            ("[fe80::1]:80", "link-local"),
            ("[fc00::1]:80", "private (unique local)"),
        ] {
            let why = refused(&policy, socket).unwrap_or_else(|| panic!("{socket} was allowed"));
            assert!(
                why.ends_with(&format!("a {class} address")),
                "{socket}: {why}"
            );
        }
        for public in [
            "93.184.215.14:443",
            "[2606:4700::6810:84e5]:443",
            "8.8.8.8:53",
        ] {
            assert_eq!(refused(&policy, public), None, "{public}");
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_what_it_names() {
        let policy = AddressPolicy::new(&["127.0.0.1:8081".into(), "10.1.0.0/16".into()]).unwrap();
        assert_eq!(refused(&policy, "127.0.0.1:8081"), None);
        assert_eq!(refused(&policy, "[::ffff:127.0.0.1]:8081"), None);
        assert!(refused(&policy, "127.0.0.1:8082").is_some());
        assert_eq!(refused(&policy, "10.1.200.3:80"), None);
        assert!(refused(&policy, "10.2.0.1:80").is_some());
        assert!(refused(&policy, "169.254.169.254:80").is_some());
        assert!(AddressPolicy::new(&["not an address".into()]).is_err());
    }
}
