//! Where a request really came from and which base URL its client used, behind a proxy:
//! `server.public_endpoint` when set, else `X-Forwarded-Proto`/`-Host`/`-For` or
//! `Forwarded` (RFC 7239) — believed only from the peers in `server.trusted_proxies` —
//! else the request's own `Host` and peer. Nothing here decides who the caller is.

use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use http::header::HOST;
use ipnet::IpNet;

use super::PeerAddr;

/// What the request's client sees, for links and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    pub base_url: String,
    /// The client's address: the peer, or the one a trusted proxy forwarded for.
    pub client: IpAddr,
}

/// What the config says about proxies.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    pub public_endpoint: String,
    pub trusted_proxies: Vec<IpNet>,
}

impl ProxySettings {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&ip_as_mapped(ip)))
    }
}

fn ip_as_mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// A host as it may appear in a URL: no characters that would need escaping in JSON or
/// break out of the authority.
fn plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// One element of `Forwarded` (the one the nearest proxy wrote: the last).
#[derive(Default)]
struct Forwarded<'a> {
    proto: Option<&'a str>,
    host: Option<&'a str>,
    for_: Vec<&'a str>,
}

fn parse_forwarded(value: &str) -> Forwarded<'_> {
    let mut forwarded = Forwarded::default();
    for element in value.split(',') {
        for pair in element.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "proto" => forwarded.proto = Some(value),
                "host" => forwarded.host = Some(value),
                "for" => forwarded.for_.push(value),
                _ => {}
            }
        }
    }
    forwarded
}

/// An address from `X-Forwarded-For` or `Forwarded: for=` (`[v6]:port`, `v4:port`, bare).
fn parse_for(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    text.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
}

pub fn client_view(
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
    proxy: &ProxySettings,
) -> ClientView {
    let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.0.ip());
    let trusted = proxy.trusts(peer_ip);
    let forwarded = if trusted {
        header(headers, "forwarded").map(parse_forwarded)
    } else {
        None
    };
    // The client: walking the chain from the nearest hop back, the first address that is
    // not one of our proxies (a client could put anything at the far end).
    let client = if trusted {
        let chain: Vec<IpAddr> = match &forwarded {
            Some(f) if !f.for_.is_empty() => f.for_.iter().filter_map(|a| parse_for(a)).collect(),
            _ => header(headers, "x-forwarded-for")
                .map(|v| v.split(',').filter_map(parse_for).collect())
                .unwrap_or_default(),
        };
        chain
            .iter()
            .rev()
            .find(|ip| !proxy.trusts(**ip))
            .or(chain.first())
            .copied()
            .unwrap_or(peer_ip)
    } else {
        peer_ip
    };
    if !proxy.public_endpoint.is_empty() {
        return ClientView {
            base_url: proxy.public_endpoint.trim_end_matches('/').to_string(),
            client,
        };
    }
    let (proto, host) = match (trusted, &forwarded) {
        (true, Some(f)) if f.proto.is_some() || f.host.is_some() => (f.proto, f.host),
        (true, _) => (
            header(headers, "x-forwarded-proto").and_then(|p| p.split(',').next()),
            header(headers, "x-forwarded-host").and_then(|h| h.split(',').next()),
        ),
        _ => (None, None),
    };
    let scheme = match proto.map(|p| p.trim().to_ascii_lowercase()) {
        Some(p) if p == "https" => "https",
        _ => "http",
    };
    let host = host
        .map(str::trim)
        .or_else(|| header(headers, HOST.as_str()))
        .filter(|h| plausible_host(h))
        .unwrap_or("localhost:9292");
    ClientView {
        base_url: format!("{scheme}://{host}"),
        client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn peer(addr: &str) -> Option<PeerAddr> {
        Some(PeerAddr(addr.parse().unwrap()))
    }

    fn behind(proxies: &[&str]) -> ProxySettings {
        ProxySettings {
            public_endpoint: String::new(),
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let sent = headers(&[
            ("host", "glint.internal:9292"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "images.example.com"),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.9"),
        ]);
        let proxy = behind(&["10.0.0.0/24"]);
        let via_proxy = client_view(&sent, peer("10.0.0.2:40000"), &proxy);
        assert_eq!(via_proxy.base_url, "https://images.example.com");
        assert_eq!(via_proxy.client, "203.0.113.7".parse::<IpAddr>().unwrap());

        let direct = client_view(&sent, peer("198.51.100.4:40000"), &proxy);
        assert_eq!(direct.base_url, "http://glint.internal:9292");
        assert_eq!(direct.client, "198.51.100.4".parse::<IpAddr>().unwrap());

        let nobody_trusted = client_view(&sent, peer("10.0.0.2:40000"), &behind(&[]));
        assert_eq!(nobody_trusted.base_url, "http://glint.internal:9292");
    }

    #[test]
    fn a_client_cannot_hide_behind_a_forged_far_end() {
        // The client wrote "1.2.3.4" itself; the proxy appended the real address.
        let sent = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7")]);
        let view = client_view(&sent, peer("10.0.0.2:1"), &behind(&["10.0.0.0/8"]));
        assert_eq!(view.client, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rfc_7239_forwarded_is_read() {
        let sent = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https;host=cloud.example:8443",
        )]);
        let view = client_view(&sent, peer("[::1]:1"), &behind(&["::1/128"]));
        assert_eq!(view.base_url, "https://cloud.example:8443");
        assert_eq!(view.client, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn public_endpoint_wins_and_hostile_hosts_fall_back() {
        let proxy = ProxySettings {
            public_endpoint: "https://cloud.example/image/".into(),
            trusted_proxies: Vec::new(),
        };
        let view = client_view(&headers(&[("host", "x")]), None, &proxy);
        assert_eq!(view.base_url, "https://cloud.example/image");
        let view = client_view(
            &headers(&[("host", "a\"b")]),
            None,
            &ProxySettings::default(),
        );
        assert_eq!(view.base_url, "http://localhost:9292");
    }
}
