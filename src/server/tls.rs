//! Native TLS (rustls, ring): the certificate, key and optional client CAs `server.tls`
//! names, read into one acceptor per generation, and which listeners speak TLS. A reload
//! reads the files again, so new contents under the same names take effect for new
//! handshakes while established connections keep their session. The handshake itself is
//! `conn.rs`'s; nothing here touches a socket.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::listeners::store_name;
use crate::config::TlsConfig;

/// The TLS of one generation.
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Names of the listeners that speak TLS.
    listeners: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{key} = {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "server.tls.key = {} does not belong to server.tls.cert = {}: {reason}",
        key.display(), cert.display()
    )]
    Mismatch {
        key: std::path::PathBuf,
        cert: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "server.tls.listeners: {0:?} names no listener (a name as `glint ctl status` shows it, or an address of server.listen)"
    )]
    UnknownListener(String),
}

impl Tls {
    /// Reads what `config` names; `None` when it names no certificate. `listeners` are the
    /// generation's listeners, by name and bound address.
    pub fn load(
        config: &TlsConfig,
        listeners: &[(&str, SocketAddr)],
    ) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
            return Ok(None);
        };
        let certs = read_certs("cert", cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
            key: "key",
            path: key_path.clone(),
            reason: format!("no private key: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::File {
                key: "cert",
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs("client_ca", ca_path)? {
                    roots.add(ca).map_err(|e| TlsError::File {
                        key: "client_ca",
                        path: ca_path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::File {
                            key: "client_ca",
                            path: ca_path.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Mismatch {
                key: key_path.clone(),
                cert: cert_path.clone(),
                reason: e.to_string(),
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            listeners: speaking(&config.listeners, listeners)?,
        })))
    }

    /// The acceptor for a connection accepted on `listener`, if that listener speaks TLS.
    pub fn on(&self, listener: &str) -> Option<TlsAcceptor> {
        self.listeners
            .contains(listener)
            .then(|| self.acceptor.clone())
    }
}

/// The names of the listeners `wanted` names (all when it is empty): each entry is a name or
/// an address, configured (`server.listen`) or bound.
fn speaking(
    wanted: &[String],
    listeners: &[(&str, SocketAddr)],
) -> Result<BTreeSet<String>, TlsError> {
    if wanted.is_empty() {
        return Ok(listeners.iter().map(|(name, _)| name.to_string()).collect());
    }
    wanted
        .iter()
        .map(|entry| {
            let address: Option<SocketAddr> = entry.parse().ok();
            listeners
                .iter()
                .find(|(name, bound)| {
                    name == entry || address.is_some_and(|a| a == *bound || store_name(&a) == *name)
                })
                .map(|(name, _)| name.to_string())
                .ok_or_else(|| TlsError::UnknownListener(entry.clone()))
        })
        .collect()
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let refused = |reason: String| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(e.to_string()))?;
    if certs.is_empty() {
        return Err(refused("no PEM certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_named_by_name_or_address() {
        let configured: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let stored = store_name(&configured);
        let listeners = [
            ("api", "127.0.0.1:9292".parse().unwrap()),
            (stored.as_str(), "127.0.0.1:40000".parse().unwrap()),
        ];
        let all = speaking(&[], &listeners).unwrap();
        assert_eq!(all.len(), 2);
        let by_name = speaking(&["api".into()], &listeners).unwrap();
        assert_eq!(by_name.into_iter().collect::<Vec<_>>(), ["api"]);
        let by_bound = speaking(&["127.0.0.1:9292".into()], &listeners).unwrap();
        assert_eq!(by_bound.into_iter().collect::<Vec<_>>(), ["api"]);
        let by_configured = speaking(&["127.0.0.1:0".into()], &listeners).unwrap();
        assert_eq!(
            by_configured.into_iter().collect::<Vec<_>>(),
            vec![stored.clone()]
        );
        assert!(matches!(
            speaking(&["web".into()], &listeners),
            Err(TlsError::UnknownListener(name)) if name == "web"
        ));
    }
}
