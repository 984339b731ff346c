//! The bound of the S3 data-path benchmark (`tests/bench/s3.py`): the same client crate
//! glint uses (object_store), putting a file as a multipart upload with glint's part size and
//! parts in flight, then getting it back as a stream; no hashing, no HTTP server in between.
//! Prints `put <MiB/s>` and `get <MiB/s>`.
//!
//! Usage: s3_direct ENDPOINT BUCKET ACCESS_KEY SECRET_KEY FILE PART_MIB PARTS_IN_FLIGHT

use std::process::ExitCode;
use std::time::Instant;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, bucket, access, secret, file, part_mib, in_flight] = args.as_slice() else {
        eprintln!(
            "usage: s3_direct ENDPOINT BUCKET ACCESS_KEY SECRET_KEY FILE PART_MIB PARTS_IN_FLIGHT"
        );
        return ExitCode::FAILURE;
    };
    match run(endpoint, bucket, access, secret, file, part_mib, in_flight).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3_direct: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    endpoint: &str,
    bucket: &str,
    access: &str,
    secret: &str,
    file: &str,
    part_mib: &str,
    in_flight: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let part_size = part_mib.parse::<usize>()? << 20;
    let in_flight: usize = in_flight.parse()?;
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(access)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout_disabled(),
        )
        .build()?;
    let key = Path::from("direct/object");

    let mut source = tokio::fs::File::open(file).await?;
    let started = Instant::now();
    let mut upload =
        WriteMultipart::new_with_chunk_size(store.put_multipart(&key).await?, part_size);
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = source.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        upload.wait_for_capacity(in_flight).await?;
        upload.write(&buffer[..read]);
        size += read as u64;
    }
    upload.finish().await?;
    let mib = size as f64 / f64::from(1 << 20);
    println!("put {:.1}", mib / started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut stream = store.get(&key).await?.into_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk?.len() as u64;
    }
    if got != size {
        return Err(format!("got {got} bytes of {size}").into());
    }
    println!("get {:.1}", mib / started.elapsed().as_secs_f64());
    store.delete(&key).await?;
    Ok(())
}
