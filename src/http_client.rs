//! How glint builds its outbound HTTP clients (web-download, Keystone): rustls with ring,
//! the system's CAs, and Mozilla's roots built in for a system without a trust store. What
//! a client connects to and how long it waits is its user's business, not this file's.

/// Builds the client `builder` describes, trusting the system's CAs, or the built-in roots
/// when the system has no usable trust store (no ca-certificates).
pub fn build(
    builder: impl Fn() -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider; one is installed per process (a
    // second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match builder().build() {
        Ok(client) => Ok(client),
        Err(system) => {
            tracing::debug!(error = %crate::chain(&system), "system trust store unusable; using built-in roots");
            let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .filter_map(|der| reqwest::Certificate::from_der(der).ok());
            builder().tls_certs_only(roots).build()
        }
    }
}
