//! Native TLS against the real binary and the fake systemd, with certificates `openssl`
//! makes: the served certificate rotated by reload under handshake load (no failed
//! handshake, established connections keep theirs), refused certificates naming the file,
//! client certificates, TLS on some listeners only, ALPN, and TLS connections closed (not
//! parked) at restart.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{FakeSystemd, field};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Runs `openssl` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`) in `dir`.
fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=glint test CA",
        ],
    );
}

/// A certificate `<name>.pem` with key `<name>.key` for 127.0.0.1, signed by the CA.
fn make_leaf(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .expect("ext");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("a PEM certificate")
}

/// A client trusting the CA in `dir`, offering h2 and http/1.1, with a client
/// certificate `<name>` when given.
fn connector(dir: &Path, client: Option<&str>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&dir.join("ca.pem"))).expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                vec![der(&dir.join(format!("{name}.pem")))],
                PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("key"),
            )
            .expect("client cert"),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    connector.connect(name, tcp).await
}

/// The certificate the server presented.
fn served(stream: &TlsStream<tokio::net::TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// One HTTP/1.1 client over a TLS stream.
struct TlsConn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    cert: CertificateDer<'static>,
}

impl TlsConn {
    async fn open(connector: &TlsConnector, addr: SocketAddr) -> Result<TlsConn, String> {
        let stream = handshake(connector, addr)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let cert = served(&stream);
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
        let (send, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(TlsConn { send, cert })
    }

    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let request = http::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .expect("request");
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// TLS with `certs/served.pem` and its key: paths relative to the config file's directory.
fn tls_config(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{}\"]\n[server.tls]\ncert = \"certs/served.pem\"\n\
         key = \"certs/served.key\"\n{extra}\n",
        support::SOCKET_UNIT_LISTEN,
    )
}

/// `certs/` beside the config: a CA, the certificates `leaves` it signed, and the first of
/// them installed as `served`.
fn certificates(sd: &FakeSystemd, leaves: &[&str]) -> PathBuf {
    let certs = sd.path("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    make_ca(&certs);
    for leaf in leaves {
        make_leaf(&certs, leaf);
    }
    install(&certs, leaves[0]);
    certs
}

fn install(dir: &Path, name: &str) {
    for ext in ["pem", "key"] {
        std::fs::copy(
            dir.join(format!("{name}.{ext}")),
            dir.join(format!("served.{ext}")),
        )
        .expect("install");
    }
}

/// Rotation by reload while clients shake hands continuously: none fails, every handshake
/// after the reload presents the new certificate, and a connection established before it
/// keeps working. A certificate that does not parse, or a key of another certificate, is
/// refused by the reload naming the file, and the certificate in use stays. A restart closes
/// TLS connections (a session is not handed over) instead of parking them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_rotates_the_certificate_under_load() {
    let mut sd = FakeSystemd::new();
    let certs = certificates(&sd, &["first", "second"]);
    let (first, second) = (
        der(&certs.join("first.pem")),
        der(&certs.join("second.pem")),
    );
    let addr = sd.add_socket_unit("api");
    sd.write_config(&tls_config(""));
    sd.start().await;

    let connector = connector(&certs, None);
    let mut kept = TlsConn::open(&connector, addr).await.expect("TLS");
    assert_eq!(kept.cert, first);
    assert_eq!(kept.get("/versions").await, Ok(200));

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (connector, stop) = (connector.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut done, mut failed) = (0_u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match TlsConn::open(&connector, addr).await {
                        Ok(mut conn) => match conn.get("/versions").await {
                            Ok(200) => done += 1,
                            other => failed.push(format!("{other:?}")),
                        },
                        Err(e) => failed.push(e),
                    }
                }
                (done, failed)
            })
        })
        .collect();

    install(&certs, "second");
    let (_, ready) = sd.reload().await;
    let status = field(&ready, "STATUS").unwrap_or_default().to_string();
    assert!(status.starts_with("serving generation 2"), "{status}");
    for _ in 0..5 {
        let fresh = TlsConn::open(&connector, addr).await.expect("TLS");
        assert_eq!(fresh.cert, second, "a handshake after the reload");
    }
    assert_eq!(kept.get("/versions").await, Ok(200), "established before");
    assert_eq!(kept.cert, first);

    // Refused: a certificate that does not parse; a key that is not the certificate's.
    std::fs::write(certs.join("served.pem"), "not a certificate\n").expect("write");
    let (_, ready) = sd.reload().await;
    let status = field(&ready, "STATUS").unwrap_or_default().to_string();
    assert!(
        status.starts_with("reload failed:") && status.contains("served.pem"),
        "{status}"
    );
    std::fs::copy(certs.join("second.pem"), certs.join("served.pem")).expect("copy");
    std::fs::copy(certs.join("first.key"), certs.join("served.key")).expect("copy");
    let (_, ready) = sd.reload().await;
    let status = field(&ready, "STATUS").unwrap_or_default().to_string();
    assert!(
        status.starts_with("reload failed:")
            && status.contains("server.tls.key")
            && status.contains("served.key"),
        "{status}"
    );
    let fresh = TlsConn::open(&connector, addr).await.expect("TLS");
    assert_eq!(fresh.cert, second, "the certificate in use stays");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        let (done, failed) = task.await.expect("join");
        assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
        assert!(done > 0);
    }

    assert_eq!(sd.stop().await, 0);
    assert!(
        !sd.fd_store
            .iter()
            .any(|(name, _)| name.starts_with("conn-")),
        "TLS connections are not parked: {:?}",
        sd.fd_store
    );
    assert!(kept.get("/versions").await.is_err(), "closed at stop");
}

/// TLS on one listener only, with client certificates: the plain listener answers plain
/// HTTP; the TLS one refuses a client without a certificate and serves one whose
/// certificate the configured CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_certificates_and_tls_on_some_listeners() {
    let mut sd = FakeSystemd::new();
    let certs = certificates(&sd, &["first", "client"]);
    let plain = sd.add_socket_unit("api");
    let secure = sd.add_socket_unit("secure");
    let extra = format!(
        "listeners = [\"secure\"]\nclient_ca = \"{}\"",
        certs.join("ca.pem").display()
    );
    sd.write_config(&tls_config(&extra));
    sd.start().await;

    let status = sd.status().await;
    let speaks: Vec<(&str, bool)> = status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| (l["name"].as_str().unwrap_or(""), l["tls"] == true))
        .collect();
    assert_eq!(speaks, [("api", false), ("secure", true)], "{status:#}");
    let mut conn = support::Conn::open(plain).await.expect("plain");
    assert_eq!(conn.get("/versions").await.expect("plain HTTP").status, 200);

    let anonymous = TlsConn::open(&connector(&certs, None), secure).await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(mut conn) => conn.get("/versions").await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    let mut known = TlsConn::open(&connector(&certs, Some("client")), secure)
        .await
        .expect("TLS with a client certificate");
    assert_eq!(known.get("/versions").await, Ok(200));
    assert_eq!(sd.stop().await, 0);
}
