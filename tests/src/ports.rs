//! Ports for servers that must be told theirs before they start (the NATS cluster's nodes name
//! each other's routes; SeaweedFS takes a flag per listener).

use std::net::TcpListener;

/// The first port tried, and how many after it: below Linux's ephemeral range (32768 and up),
/// so that no outgoing connection takes one of them while its server is down or restarting.
const FIRST: u16 = 20_000;
const SPAN: u16 = 12_000;

/// `count` distinct ports free on loopback now, each held until all are picked.
pub fn free_ports(count: usize) -> Vec<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let start = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % u32::from(SPAN);
    let mut held = Vec::with_capacity(count);
    for offset in 0..u32::from(SPAN) {
        if held.len() == count {
            break;
        }
        let port = FIRST + ((start + offset) % u32::from(SPAN)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(
        held.len(),
        count,
        "{count} free ports below the ephemeral range"
    );
    held.iter()
        .map(|listener| listener.local_addr().expect("bound").port())
        .collect()
}
