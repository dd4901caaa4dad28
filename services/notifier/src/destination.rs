//! Where a webhook may be sent. A job's `webhook_url` is chosen by whoever submits the job, so
//! without a check the service would POST, from inside the network, to any address the
//! submitter names (server-side request forgery): loopback admin ports, cloud metadata at
//! 169.254.169.254, private services. Only http(s) URLs whose host resolves to public addresses
//! are accepted, unless WEBHOOK_ALLOW_PRIVATE=true. The check runs at submission (a clear 422)
//! and again at every delivery through [`PublicOnlyResolver`], because DNS answers can change
//! between the two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// A webhook URL that may not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DestinationError {
    #[error("expected an absolute http(s) URL")]
    NotAUrl,
    #[error("only http and https are allowed")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "{host} is {address}, a {kind} address; webhooks go to public addresses only (WEBHOOK_ALLOW_PRIVATE=true allows it)"
    )]
    NotPublic {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
    #[error("cannot resolve {host}: {reason}")]
    Unresolvable { host: String, reason: String },
}

/// Parses `raw` and checks what can be checked without DNS: scheme, host, and the address when
/// the host is an IP literal.
pub fn parse(raw: &str, allow_private: bool) -> Result<Url, DestinationError> {
    let url = Url::parse(raw).map_err(|_| DestinationError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DestinationError::Scheme);
    }
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => None,
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => return Err(DestinationError::NoHost),
    };
    if let Some(address) = host
        && !allow_private
    {
        refuse_if_not_public(url.host_str().unwrap_or_default(), address)?;
    }
    Ok(url)
}

/// [`parse`], then resolves the host and refuses it if any of its addresses is not public (a
/// host with one public and one private address could be made to use either).
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, DestinationError> {
    let url = parse(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    if let Some(url::Host::Domain(domain)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses = tokio::net::lookup_host((domain, port))
            .await
            .map_err(|err| DestinationError::Unresolvable {
                host: domain.to_owned(),
                reason: err.to_string(),
            })?;
        for address in addresses {
            refuse_if_not_public(domain, address.ip())?;
        }
    }
    Ok(url)
}

fn refuse_if_not_public(host: &str, address: IpAddr) -> Result<(), DestinationError> {
    match non_public_kind(address) {
        Some(kind) => Err(DestinationError::NotPublic {
            host: host.to_owned(),
            address,
            kind,
        }),
        None => Ok(()),
    }
}

/// What kind of non-public address `address` is, or `None` for a public one.
pub fn non_public_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(ip) => v4_kind(ip),
        IpAddr::V6(ip) if ip.is_unspecified() || ip.is_loopback() => v6_kind(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped().or_else(|| embedded_v4(ip)) {
            Some(inner) => v4_kind(inner),
            None => v6_kind(ip),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        // RFC 6598 shared address space (carrier-grade NAT): private in practice.
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_broadcast() || ip.is_multicast() {
        Some("broadcast or multicast")
    } else if a >= 240
        || (a == 198 && (18..20).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
    {
        // 240/4 reserved, 198.18/15 benchmarking, 192.0.0/24 protocol assignments.
        Some("reserved")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv6 address that carries one: NAT64 (64:ff9b::/96),
/// IPv4-compatible (::a.b.c.d) and 6to4 (2002::/16). Through a gateway, these reach the IPv4
/// address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
        Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ))
    } else if segments[0] == 0x2002 {
        Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        // fc00::/7, unique local: the IPv6 private range.
        Some("private")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        // fec0::/10, the deprecated site-local range.
        Some("private")
    } else if ip.is_multicast() {
        Some("broadcast or multicast")
    } else {
        None
    }
}

/// The webhook client's DNS resolver: resolves as usual and refuses names with a non-public
/// address, so that the address checked is the address connected to.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for address in &addresses {
                refuse_if_not_public(&host, address.ip())?;
            }
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> Option<&'static str> {
        non_public_kind(address.parse().expect("an address"))
    }

    #[test]
    fn non_public_addresses_are_named_by_kind() {
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
        assert_eq!(kind("::1"), Some("loopback"));
        assert_eq!(kind("10.1.2.3"), Some("private"));
        assert_eq!(kind("172.16.0.1"), Some("private"));
        assert_eq!(kind("192.168.1.1"), Some("private"));
        assert_eq!(kind("100.64.0.1"), Some("private"));
        assert_eq!(kind("fd00::1"), Some("private"));
        assert_eq!(kind("169.254.169.254"), Some("link-local"));
        assert_eq!(kind("fe80::1"), Some("link-local"));
        assert_eq!(kind("0.0.0.0"), Some("unspecified"));
        assert_eq!(kind("::"), Some("unspecified"));
        assert_eq!(kind("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(kind("64:ff9b::a9fe:a9fe"), Some("link-local"));
        assert_eq!(kind("::10.0.0.1"), Some("private"));
        assert_eq!(kind("2002:7f00:1::"), Some("loopback"));
        assert_eq!(kind("fec0::1"), Some("private"));
        assert_eq!(kind("198.18.0.1"), Some("reserved"));
        assert_eq!(kind("240.0.0.1"), Some("reserved"));
        assert_eq!(kind("64:ff9b::5db8:d70e"), None);
        assert_eq!(kind("93.184.215.14"), None);
        assert_eq!(kind("2606:2800:21f:cb07:6820:80da:af6b:8b2c"), None);
    }

    #[test]
    fn urls_are_refused_with_the_reason() {
        assert_eq!(
            parse("ftp://example.org/x", false),
            Err(DestinationError::Scheme)
        );
        assert_eq!(parse("not a url", false), Err(DestinationError::NotAUrl));
        assert!(matches!(
            parse("http://127.0.0.1:8080/hook", false),
            Err(DestinationError::NotPublic {
                kind: "loopback",
                ..
            })
        ));
        assert!(matches!(
            parse("http://[::1]/hook", false),
            Err(DestinationError::NotPublic {
                kind: "loopback",
                ..
            })
        ));
        assert!(parse("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(parse("https://example.org/hook", false).is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let refused = check("http://localhost:9/hook", false).await;
        assert!(
            matches!(
                refused,
                Err(DestinationError::NotPublic {
                    kind: "loopback",
                    ..
                })
            ),
            "{refused:?}"
        );
        assert!(check("http://localhost:9/hook", true).await.is_ok());
    }
}
