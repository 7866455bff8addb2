//! Facts about the caller: IP address and user agent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{header, request::Parts, HeaderMap};

use crate::config::TrustedProxies;

/// The client IP of a request: the TCP peer, unless the peer is a trusted proxy
/// (`TRUSTED_PROXIES`), in which case [`forwarded_client`] walks `X-Forwarded-For` from the
/// right. `0.0.0.0` when the peer is unknown (in-process tests without `ConnectInfo`).
pub fn client_ip(
    parts_extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if trusted.is_empty() {
        return peer.to_canonical();
    }
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("!").split(','));
    forwarded_client(peer, entries, trusted)
}

/// The address the trusted proxies vouch for. Each proxy appends the address it received the
/// request from, so the list reads `client, proxy1, proxy2, …` with the peer the last proxy.
/// Starting at the peer, while the current hop is a trusted proxy, step one entry to the left;
/// the first address that is not trusted is the client. Entries further left were written by
/// the client itself and are never read. If the peer is not trusted, the header is ignored. An
/// entry that is not an IP address ends the walk at the last trusted hop (that proxy's address
/// is the key: a misconfigured proxy lumps its clients together rather than letting one choose).
/// If every entry is trusted, the leftmost is the answer.
pub fn forwarded_client<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut current = peer.to_canonical();
    for entry in forwarded_for.rev() {
        if !trusted.contains(current) {
            return current;
        }
        match parse_entry(entry) {
            Some(ip) => current = ip,
            None => return current,
        }
    }
    current
}

/// An `X-Forwarded-For` entry: an IP address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The `User-Agent`, at most 512 bytes of it.
pub fn user_agent(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn walk(peer: &str, xff: &str, trusted: &str) -> IpAddr {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        forwarded_client(ip(peer), xff.split(','), &trusted)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(
            walk("198.51.100.1", "203.0.113.7", "10.0.0.0/8"),
            ip("198.51.100.1")
        );
        assert_eq!(walk("198.51.100.1", "203.0.113.7", ""), ip("198.51.100.1"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        // One proxy: it appended the client's address.
        assert_eq!(
            walk("10.0.0.1", "203.0.113.7", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
        // The client wrote its own entries first: they are never read.
        assert_eq!(
            walk("10.0.0.1", "1.1.1.1, 2.2.2.2, 203.0.113.7", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
        // Two proxies, both trusted.
        assert_eq!(
            walk("10.0.0.1", "6.6.6.6, 203.0.113.7, 10.9.9.9", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
        // A hop that is not trusted stops the walk even if more trusted-looking ones follow.
        assert_eq!(
            walk("10.0.0.1", "10.5.5.5, 203.0.113.7", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn all_trusted_gives_the_leftmost_and_garbage_stops_at_the_last_trusted_hop() {
        assert_eq!(
            walk("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.0/8"),
            ip("10.0.0.2")
        );
        assert_eq!(
            walk("10.0.0.1", "203.0.113.7, bogus", "10.0.0.0/8"),
            ip("10.0.0.1")
        );
        assert_eq!(walk("10.0.0.1", "", "10.0.0.0/8"), ip("10.0.0.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        assert_eq!(
            walk("10.0.0.1", "203.0.113.7:4711", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
        assert_eq!(
            walk("10.0.0.1", "[2001:db8::1]:443", "10.0.0.0/8"),
            ip("2001:db8::1")
        );
        // A proxy reached over an IPv4-mapped IPv6 socket is still the IPv4 proxy.
        assert_eq!(
            walk("::ffff:10.0.0.1", "203.0.113.7", "10.0.0.0/8"),
            ip("203.0.113.7")
        );
        assert_eq!(
            walk("fd00::1", "2001:db8::7", "fd00::/8"),
            ip("2001:db8::7")
        );
    }
}
