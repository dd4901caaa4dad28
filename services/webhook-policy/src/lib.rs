//! Where a webhook may be sent. A job's `webhook_url` is chosen by whoever submits the job, so
//! without a check the service would POST, from inside the network, to any address the
//! submitter names (server-side request forgery): loopback admin ports, cloud metadata at
//! 169.254.169.254, private services. Only http(s) URLs whose host resolves to public addresses
//! are accepted, unless WEBHOOK_ALLOW_PRIVATE=true. The API checks at submission (a clear 422);
//! the notifier checks again at every delivery, through its HTTP client's resolver, because DNS
//! answers can change between the two.
//!
//! The non-public ranges are one table, [`NON_PUBLIC_RANGES`] (IANA's special-purpose
//! registries); IPv6 addresses that carry an IPv4 address (mapped, NAT64, 6to4,
//! IPv4-compatible) are judged by the IPv4 address they reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::Url;

/// A webhook URL that may not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DestinationError {
    #[error("expected an absolute http(s) URL")]
    NotAUrl,
    #[error("only http and https are allowed")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    /// The message names the host, not the address it resolved to: that would tell a submitter
    /// about the inside of the network.
    #[error(
        "{host} points to a {kind} address; webhooks go to public addresses only (WEBHOOK_ALLOW_PRIVATE=true allows it)"
    )]
    NotPublic {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
    #[error("cannot resolve {host}")]
    Unresolvable {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix))
}

const fn v6(first: u16, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0),
        prefix,
    ))
}

/// Address ranges a webhook may not reach, with the kind named in the refusal. The first match
/// names the kind.
pub const NON_PUBLIC_RANGES: &[(IpNet, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 168, 0, 0, 16), "private"),
    // RFC 6598 shared address space (carrier-grade NAT): private in practice.
    (v4(100, 64, 0, 0, 10), "private"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(255, 255, 255, 255, 32), "broadcast or multicast"),
    (v4(224, 0, 0, 0, 4), "broadcast or multicast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
    // Benchmarking.
    (v4(198, 18, 0, 0, 15), "reserved"),
    // IETF protocol assignments.
    (v4(192, 0, 0, 0, 24), "reserved"),
    // Documentation (TEST-NET-1, -2, -3).
    (v4(192, 0, 2, 0, 24), "reserved"),
    (v4(198, 51, 100, 0, 24), "reserved"),
    (v4(203, 0, 113, 0, 24), "reserved"),
    (
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128)),
        "unspecified",
    ),
    (
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        "loopback",
    ),
    // Unique local: the IPv6 private range.
    (v6(0xfc00, 7), "private"),
    (v6(0xfe80, 10), "link-local"),
    // The deprecated site-local range.
    (v6(0xfec0, 10), "private"),
    (v6(0xff00, 8), "broadcast or multicast"),
    // Documentation.
    (
        IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
        )),
        "reserved",
    ),
    // Local-use NAT64: translates to addresses chosen by the local network.
    (
        IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
            48,
        )),
        "reserved",
    ),
    // Teredo tunnels.
    (v6(0x2001, 32), "reserved"),
];

/// What kind of non-public address `address` is, or `None` for a public one.
pub fn non_public_kind(address: IpAddr) -> Option<&'static str> {
    let judged = match address {
        IpAddr::V6(ip) => embedded_v4(ip).map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    };
    NON_PUBLIC_RANGES
        .iter()
        .find(|(range, _)| range.contains(&judged))
        .map(|(_, kind)| *kind)
}

/// The IPv4 address inside an IPv6 address that carries one: IPv4-mapped (::ffff:a.b.c.d),
/// NAT64 (64:ff9b::/96), IPv4-compatible (::a.b.c.d, but not :: and ::1) and 6to4 (2002::/16).
/// Through a gateway, these reach the IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let [.., a, b, c, d] = ip.octets();
    let tail = Ipv4Addr::new(a, b, c, d);
    if ip.is_unspecified() || ip.is_loopback() {
        None
    } else if let Some(mapped) = ip.to_ipv4_mapped() {
        Some(mapped)
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6] {
        Some(tail)
    } else if segments[0] == 0x2002 {
        let [_, _, a, b, c, d, ..] = ip.octets();
        Some(Ipv4Addr::new(a, b, c, d))
    } else {
        None
    }
}

/// Parses `raw` and checks what can be checked without DNS: scheme, host, and the address when
/// the host is an IP literal.
pub fn parse(raw: &str, allow_private: bool) -> Result<Url, DestinationError> {
    let url = Url::parse(raw).map_err(|_| DestinationError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DestinationError::Scheme);
    }
    let literal = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => None,
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => return Err(DestinationError::NoHost),
    };
    if let Some(address) = literal
        && !allow_private
    {
        check_addresses(url.host_str().unwrap_or_default(), [address])?;
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
                source: Arc::new(err),
            })?;
        check_addresses(domain, addresses.map(|address| address.ip()))?;
    }
    Ok(url)
}

/// Refuses `host` if any of the addresses it resolved to is not public.
pub fn check_addresses(
    host: &str,
    addresses: impl IntoIterator<Item = IpAddr>,
) -> Result<(), DestinationError> {
    for address in addresses {
        if let Some(kind) = non_public_kind(address) {
            return Err(DestinationError::NotPublic {
                host: host.to_owned(),
                address,
                kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_named_by_kind() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("fd00::1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("::10.0.0.1", Some("private")),
            ("2002:7f00:1::", Some("loopback")),
            ("fec0::1", Some("private")),
            ("198.18.0.1", Some("reserved")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast or multicast")),
            ("224.0.0.1", Some("broadcast or multicast")),
            ("ff02::1", Some("broadcast or multicast")),
            ("192.0.2.10", Some("reserved")),
            ("198.51.100.7", Some("reserved")),
            ("203.0.113.200", Some("reserved")),
            ("2001:db8::1", Some("reserved")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("reserved")),
            ("64:ff9b:1::a00:1", Some("reserved")),
            ("2001:4860:4860::8888", None),
            ("64:ff9b::5db8:d70e", None),
            ("93.184.215.14", None),
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
        ];
        for (address, kind) in cases {
            let parsed: IpAddr = address.parse().expect("an address");
            assert_eq!(non_public_kind(parsed), kind, "{address}");
        }
    }

    #[test]
    fn urls_are_refused_with_the_reason() {
        let refused_kind = |raw: &str, allow_private| match parse(raw, allow_private) {
            Ok(_) => Ok(None),
            Err(DestinationError::NotPublic { kind, .. }) => Ok(Some(kind)),
            Err(other) => Err(other.to_string()),
        };
        let cases = [
            (
                "ftp://example.org/x",
                false,
                Err("only http and https are allowed"),
            ),
            ("not a url", false, Err("expected an absolute http(s) URL")),
            ("http://127.0.0.1:8080/hook", false, Ok(Some("loopback"))),
            ("http://[::1]/hook", false, Ok(Some("loopback"))),
            ("http://127.0.0.1:8080/hook", true, Ok(None)),
            ("https://example.org/hook", false, Ok(None)),
        ];
        for (raw, allow_private, expected) in cases {
            let expected = expected.map_err(str::to_owned);
            assert_eq!(refused_kind(raw, allow_private), expected, "{raw}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_without_naming_the_address() {
        let refused = check("http://localhost:9/hook", false).await;
        let text = refused
            .as_ref()
            .map_err(ToString::to_string)
            .expect_err("refused");
        assert!(
            text.starts_with("localhost points to a loopback address"),
            "{text}"
        );
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "{text}"
        );
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
