//! The bound for the /versions benchmark: bare hyper answering a fixed body of the same
//! size inline on the connection's task, on a runtime of the same size. Not part of glint.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9393".into());
    let workers = std::env::args()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let body = Bytes::from(vec![b'x'; 1059]);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
