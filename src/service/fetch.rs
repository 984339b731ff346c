//! web-download's side of the network: which URLs may be fetched (Glance's
//! `import_filtering_opts`, plus a refusal of loopback, private and link-local addresses the
//! operator did not name) and the fetch itself, each redirect checked like the first URL
//! and each connection pinned to the address that was checked. It writes nothing.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Url;
use reqwest::header::{CONTENT_LENGTH, LOCATION};

use crate::config::WebDownloadConfig;

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
        // reqwest is built without a bundled crypto provider; this one is installed once
        // per process (a second install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
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
            if !self.host_named(&host) && !public(ip) {
                return Err(refused(format!(
                    "Address {ip} is not allowed for web-download"
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
    /// was checked, so DNS cannot swap in a private one between check and connect.
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
            let address = self.resolve(&url).await?;
            let host = url.host_str().unwrap_or_default().to_string();
            let client = self.client(&host, address)?;
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

    /// A client that connects `host` to `address` only and follows no redirect itself. It
    /// trusts the system's CAs; a system without a trust store (no ca-certificates) gets
    /// Mozilla's roots, built in, rather than no web-download at all.
    fn client(&self, host: &str, address: SocketAddr) -> Result<reqwest::Client, FetchError> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.config.connect_timeout)
                .read_timeout(self.config.read_timeout)
                .resolve(host, address)
                .no_proxy()
        };
        match builder().build() {
            Ok(client) => Ok(client),
            Err(system) => {
                tracing::debug!(error = %chain(&system), "system trust store unusable; using built-in roots");
                let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .filter_map(|der| reqwest::Certificate::from_der(der).ok());
                builder()
                    .tls_certs_only(roots)
                    .build()
                    .map_err(|e| FetchError::Failed(format!("HTTP client: {}", chain(&e))))
            }
        }
    }

    /// The address to connect to: the first the host resolves to, refused when it is not
    /// public and the operator did not name the host.
    async fn resolve(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let mut addresses = tokio::net::lookup_host((lookup, port))
            .await
            .map_err(|e| FetchError::Failed(format!("Cannot resolve {host}: {e}")))?;
        let address = addresses
            .next()
            .ok_or_else(|| FetchError::Failed(format!("{host} has no address")))?;
        if !self.host_named(host) && !public(address.ip()) {
            return Err(refused(format!(
                "{host} resolves to {}, which is not allowed for web-download",
                address.ip()
            )));
        }
        Ok(address)
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared, unspecified, multicast or broadcast (IPv4-mapped IPv6 judged as IPv4).
fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
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
}
