//! web-download's side of the network: which URLs may be fetched (Glance's
//! `import_filtering_opts`, plus a refusal of every address that is not globally routable,
//! unless the operator named the host) and the fetch itself, each redirect checked like the
//! first URL and each connection pinned to addresses that were checked. It writes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Url;
use reqwest::header::{CONTENT_LENGTH, LOCATION};

use crate::chain;
use crate::config::WebDownloadConfig;
use crate::http_client;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL (or a redirect) is not one the filter lets through.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

pub struct WebDownload {
    config: WebDownloadConfig,
}

fn refused(message: impl Into<String>) -> FetchError {
    FetchError::Refused(message.into())
}

impl WebDownload {
    pub fn new(config: WebDownloadConfig) -> Self {
        WebDownload { config }
    }

    /// The checks that need no network: scheme, host and port lists. Run before an import
    /// is accepted, so a refused URL is the client's 400 and never a fetch.
    pub fn check(&self, uri: &str) -> Result<Url, FetchError> {
        let url = Url::parse(uri).map_err(|e| refused(format!("URI {uri} is not valid: {e}")))?;
        let config = &self.config;
        let scheme = url.scheme();
        let scheme_ok = if config.allowed_schemes.is_empty() {
            !config.disallowed_schemes.iter().any(|s| s == scheme)
        } else {
            config.allowed_schemes.iter().any(|s| s == scheme)
        };
        if !scheme_ok || !matches!(scheme, "http" | "https") {
            return Err(refused(format!(
                "URI scheme {scheme} is not allowed for web-download"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(
                "URI with credentials is not allowed for web-download",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| refused("URI has no host"))?
            .to_string();
        let host_ok = if config.allowed_hosts.is_empty() {
            !config
                .disallowed_hosts
                .iter()
                .any(|h| host_matches(h, &host))
        } else {
            self.host_named(&host)
        };
        if !host_ok {
            return Err(refused(format!(
                "Host {host} is not allowed for web-download"
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refused("URI has no port"))?;
        let port_ok = if config.allowed_ports.is_empty() {
            !config.disallowed_ports.contains(&port)
        } else {
            config.allowed_ports.contains(&port)
        };
        if !port_ok {
            return Err(refused(format!(
                "Port {port} is not allowed for web-download"
            )));
        }
        if let Some(ip) = literal_ip(&url) {
            if !self.host_named(&host) && !globally_routable(ip) {
                return Err(refused(format!(
                    "Address {} is not allowed for web-download",
                    describe(ip)
                )));
            }
        }
        Ok(url)
    }

    fn host_named(&self, host: &str) -> bool {
        self.config
            .allowed_hosts
            .iter()
            .any(|h| host_matches(h, host))
    }

    /// Opens `uri` for reading: the declared length (if any) and the body. Redirects are
    /// followed by hand, each target checked; every connection goes to an address that
    /// was checked, so DNS cannot swap in a private one between check and connect
    /// (rebinding).
    pub async fn open(
        &self,
        uri: &str,
        size_cap: u64,
    ) -> Result<
        (
            Option<u64>,
            impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + use<>,
        ),
        FetchError,
    > {
        let mut url = self.check(uri)?;
        for _ in 0..=self.config.max_redirects {
            let addresses = self.resolve(&url).await?;
            let host = url.host_str().unwrap_or_default().to_string();
            let client = self.client(&host, &addresses)?;
            let response =
                client.get(url.clone()).send().await.map_err(|e| {
                    FetchError::Failed(format!("Fetching {url} failed: {}", chain(&e)))
                })?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| url.join(v).ok())
                    .ok_or_else(|| {
                        FetchError::Failed(format!("{url} redirected without a valid Location"))
                    })?;
                url = self.check(next.as_str())?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Failed(format!(
                    "Fetching {url} failed: the server answered {status}"
                )));
            }
            let length = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(length) = length.filter(|l| *l > size_cap) {
                return Err(FetchError::Failed(format!(
                    "The image at {url} is too large: {length} bytes exceed the size cap of \
                     {size_cap} bytes"
                )));
            }
            let body = response
                .bytes_stream()
                .map(|chunk| chunk.map_err(std::io::Error::other));
            return Ok((length, Box::pin(body)));
        }
        Err(FetchError::Failed(format!(
            "Fetching {uri} followed more than {} redirects",
            self.config.max_redirects
        )))
    }

    /// A client that connects `host` to `addresses` only and follows no redirect itself. It
    /// trusts the system's CAs; a system without a trust store (no ca-certificates) gets
    /// Mozilla's roots, built in, rather than no web-download at all.
    fn client(&self, host: &str, addresses: &[SocketAddr]) -> Result<reqwest::Client, FetchError> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.config.connect_timeout)
                .read_timeout(self.config.read_timeout)
                .dns_resolver(NoLookups)
                .resolve_to_addrs(host, addresses)
                .no_proxy()
        };
        http_client::build(builder)
            .map_err(|e| FetchError::Failed(format!("HTTP client: {}", chain(&e))))
    }

    /// The addresses to connect to: every address the host resolves to that is globally
    /// routable (all of them when the operator named the host). Each is judged, not only the
    /// first, so a name cannot hide a private address behind a public one; none left is a
    /// refusal that names the host.
    async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, FetchError> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        // A resolver that never answers would otherwise hold the task forever; resolving
        // is part of connecting, so it gets the connect timeout.
        let timeout = self.config.connect_timeout;
        let resolved: Vec<SocketAddr> =
            tokio::time::timeout(timeout, tokio::net::lookup_host((lookup, port)))
                .await
                .map_err(|_| {
                    FetchError::Failed(format!(
                        "Cannot resolve {host}: no answer within {timeout:?}"
                    ))
                })?
                .map_err(|e| FetchError::Failed(format!("Cannot resolve {host}: {e}")))?
                .collect();
        if resolved.is_empty() {
            return Err(FetchError::Failed(format!("{host} has no address")));
        }
        if self.host_named(host) {
            return Ok(resolved);
        }
        keep_global(host, resolved)
    }
}

/// The globally routable ones of the addresses `host` resolved to; the others are skipped
/// (and logged), and none left is a refusal naming the host and what it resolved to.
fn keep_global(host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, FetchError> {
    let (usable, skipped): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|a| globally_routable(a.ip()));
    let described = || {
        skipped
            .iter()
            .map(|a| describe(a.ip()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if usable.is_empty() {
        return Err(refused(format!(
            "{host} resolves only to addresses web-download does not fetch from: {}",
            described()
        )));
    }
    if !skipped.is_empty() {
        tracing::info!(
            host,
            skipped = %described(),
            "web-download skips addresses that are not globally routable"
        );
    }
    Ok(usable)
}

/// The resolver of web-download's HTTP client: it resolves nothing. Every host the client
/// connects to is an IP literal or was resolved and checked beforehand (`resolve_to_addrs`
/// answers for it), so a name reaching this resolver would be one nobody checked.
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(
            async move { Err(format!("{name} was not checked by the web-download filter").into()) },
        )
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
    pattern.eq_ignore_ascii_case(host)
}

/// The URL's host when it is an IP literal, in whatever encoding it was written (the URL
/// parser normalises `0x7f.1`, `2130706433` and the like).
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Address blocks that are not globally routable (IANA's IPv4 and IPv6 special-purpose
/// address registries, and multicast), named for the messages that refuse them.
const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    // Includes the limited broadcast address 255.255.255.255.
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

const SPECIAL_V6: &[(Ipv6Addr, u8, &str)] = &[
    // Unspecified (::), loopback (::1) and the deprecated IPv4-compatible addresses.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible"),
    // A mapped address reaches an IPv4 host by a path the IPv4 checks never saw.
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        "IPv4-mapped",
    ),
    // Translators reach IPv4 hosts, private ones included, behind an IPv6 prefix.
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, "NAT64"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local NAT64",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo"),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        "benchmarking",
    ),
    (
        Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0),
        28,
        "ORCHIDv2",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// The special-purpose block `ip` belongs to, if any.
fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            SPECIAL_V4
                .iter()
                .find(|(net, len, _)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    bits & mask == u32::from(*net)
                })
                .map(|(_, _, name)| *name)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            SPECIAL_V6
                .iter()
                .find(|(net, len, _)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    bits & mask == u128::from(*net)
                })
                .map(|(_, _, name)| *name)
        }
    }
}

/// An address with the block it belongs to, for messages.
fn describe(ip: IpAddr) -> String {
    match special_purpose(ip) {
        Some(block) => format!("{ip} ({block})"),
        None => ip.to_string(),
    }
}

/// Whether web-download may connect to `ip` on its own judgement: an address in none of
/// the special-purpose blocks.
fn globally_routable(ip: IpAddr) -> bool {
    special_purpose(ip).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(edit: impl FnOnce(&mut WebDownloadConfig)) -> WebDownload {
        let mut config = WebDownloadConfig::default();
        edit(&mut config);
        WebDownload::new(config)
    }

    #[test]
    fn the_default_filter_takes_public_http_on_standard_ports_only() {
        let web = filter(|_| {});
        assert!(web.check("https://example.com/image.qcow2").is_ok());
        assert!(web.check("http://example.com:80/x").is_ok());
        for refused in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://example.com:8080/x",
            "http://127.0.0.1/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[64:ff9b::a00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://user:secret@example.com/x",
            "not a url",
        ] {
            assert!(
                matches!(web.check(refused), Err(FetchError::Refused(_))),
                "{refused} was let through"
            );
        }
    }

    #[test]
    fn allowed_lists_are_the_whole_truth() {
        let web = filter(|c| {
            c.allowed_hosts = vec!["127.0.0.1".into()];
            c.allowed_ports = Vec::new();
            c.disallowed_ports = vec![22];
        });
        assert!(web.check("http://127.0.0.1:8123/x").is_ok());
        assert!(web.check("http://example.com/x").is_err());
        assert!(web.check("http://127.0.0.1:22/x").is_err());
        let web = filter(|c| c.disallowed_hosts = vec!["example.com".into()]);
        assert!(web.check("http://EXAMPLE.com/x").is_err());
        assert!(web.check("http://example.org/x").is_ok());
    }

    /// Each block both sides of each boundary: the address before its first (routable
    /// unless another block starts there), its first and last, and the one after.
    #[test]
    fn only_globally_routable_addresses_pass() {
        let cases: &[(&str, bool)] = &[
            // 0.0.0.0/8 this network (unspecified)
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("1.0.0.0", true),
            // 10/8 private
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("10.255.255.255", false),
            ("11.0.0.0", true),
            // 100.64/10 shared
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            // 127/8 loopback
            ("126.255.255.255", true),
            ("127.0.0.0", false),
            ("127.255.255.255", false),
            ("128.0.0.0", true),
            // 169.254/16 link-local
            ("169.253.255.255", true),
            ("169.254.0.0", false),
            ("169.254.255.255", false),
            ("169.255.0.0", true),
            // 172.16/12 private
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            // 192.0.0/24 IETF protocol assignments
            ("191.255.255.255", true),
            ("192.0.0.0", false),
            ("192.0.0.255", false),
            ("192.0.1.0", true),
            // 192.0.2/24 documentation
            ("192.0.1.255", true),
            ("192.0.2.0", false),
            ("192.0.2.255", false),
            ("192.0.3.0", true),
            // 192.168/16 private
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.168.255.255", false),
            ("192.169.0.0", true),
            // 198.18/15 benchmarking
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            // 198.51.100/24 documentation
            ("198.51.99.255", true),
            ("198.51.100.0", false),
            ("198.51.100.255", false),
            ("198.51.101.0", true),
            // 203.0.113/24 documentation
            ("203.0.112.255", true),
            ("203.0.113.0", false),
            ("203.0.113.255", false),
            ("203.0.114.0", true),
            // 224/4 multicast, then 240/4 reserved up to broadcast
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            // ordinary public addresses
            ("8.8.8.8", true),
            ("93.184.215.14", true),
            // ::/96 unspecified, loopback, IPv4-compatible
            ("::", false),
            ("::1", false),
            ("::8.8.8.8", false),
            ("::ffff:ffff", false),
            ("::1:0:0", true),
            // ::ffff:0:0/96 IPv4-mapped, even of a public IPv4 address
            ("::fffe:ffff:ffff", true),
            ("::ffff:0.0.0.0", false),
            ("::ffff:8.8.8.8", false),
            ("::ffff:255.255.255.255", false),
            ("::1:0:0:0", true),
            // 64:ff9b::/96 NAT64
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("64:ff9b::", false),
            ("64:ff9b::ffff:ffff", false),
            ("64:ff9b::1:0:0", true),
            // 64:ff9b:1::/48 local NAT64
            ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", true),
            ("64:ff9b:1::", false),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", false),
            ("64:ff9b:2::", true),
            // 100::/64 discard-only
            ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("100::", false),
            ("100::ffff:ffff:ffff:ffff", false),
            ("100:0:0:1::", true),
            // 2001::/32 Teredo
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001::", false),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:1::", true),
            // 2001:2::/48 benchmarking
            ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:2::", false),
            ("2001:2:0:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:2:1::", true),
            // 2001:20::/28 ORCHIDv2
            ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:20::", false),
            ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:30::", true),
            // 2001:db8::/32 documentation
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db8::", false),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db9::", true),
            // 2002::/16 6to4
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2002::", false),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2003::", true),
            // 3fff::/20 documentation
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("3fff::", false),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("3fff:1000::", true),
            // fc00::/7 unique local
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fc00::", false),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe00::", true),
            // fe80::/10 link-local, then fec0::/10 site-local, then ff00::/8 multicast
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fe80::", false),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fec0::", false),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("ff00::", false),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            // ordinary public addresses
            ("2606:4700:4700::1111", true),
            ("2a00:1450:4001:82a::200e", true),
        ];
        for (text, expected) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(globally_routable(ip), *expected, "{text}");
        }
    }

    /// The URL parser follows WHATWG's IPv4 parser: decimal, hex, octal and short forms
    /// are all IPv4 literals, so the literal check sees the address they mean.
    #[test]
    fn numeric_spellings_of_loopback_are_refused_as_loopback() {
        let web = filter(|_| {});
        for spelling in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
        ] {
            let url = Url::parse(spelling).unwrap();
            assert_eq!(
                url.host(),
                Some(url::Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{spelling}"
            );
            match web.check(spelling) {
                Err(FetchError::Refused(message)) => {
                    assert!(message.contains("127.0.0.1 (loopback)"), "{message}")
                }
                other => panic!(
                    "{spelling} was not refused: {:?}",
                    other.map(|u| u.to_string())
                ),
            }
        }
        assert!(matches!(
            web.check("http://0/"),
            Err(FetchError::Refused(_))
        ));
    }

    #[test]
    fn only_the_global_addresses_of_a_name_are_kept() {
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 443);
        let kept = keep_global(
            "mixed.example",
            vec![
                at("10.0.0.1"),
                at("93.184.215.14"),
                at("::1"),
                at("2606:4700::1"),
            ],
        )
        .unwrap();
        assert_eq!(kept, [at("93.184.215.14"), at("2606:4700::1")]);
        match keep_global("inside.example", vec![at("10.0.0.1"), at("fd00::1")]) {
            Err(FetchError::Refused(message)) => {
                assert!(message.contains("inside.example"), "{message}");
                assert!(message.contains("10.0.0.1 (private)"), "{message}");
                assert!(message.contains("fd00::1 (unique local)"), "{message}");
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_named() {
        let web = filter(|_| {});
        // A name passes `check` (it cannot know the addresses); the fetch refuses it.
        assert!(web.check("http://localhost/x").is_ok());
        match web.open("http://localhost/x", 1).await {
            Err(FetchError::Refused(message)) => {
                assert!(message.contains("localhost resolves only to"), "{message}");
                assert!(message.contains("(loopback)"), "{message}");
            }
            Err(other) => panic!("not refused: {other}"),
            Ok(_) => panic!("localhost was fetched"),
        }
        let web = filter(|c| c.allowed_hosts = vec!["localhost".into()]);
        let url = Url::parse("http://localhost:80/x").unwrap();
        let addresses = web.resolve(&url).await.unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
    }

    /// The client never resolves a name itself: one that was not checked fails before any
    /// connection is made.
    #[tokio::test]
    async fn the_client_connects_only_to_checked_names() {
        let web = filter(|_| {});
        let pinned = SocketAddr::new("93.184.215.14".parse().unwrap(), 80);
        let client = web.client("checked.example", &[pinned]).unwrap();
        let error = client
            .get("http://unchecked.example/x")
            .send()
            .await
            .unwrap_err();
        let text = chain(&error);
        assert!(text.contains("unchecked.example was not checked"), "{text}");
    }
}
