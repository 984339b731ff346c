//! The `decompress` step (Glance's `image_decompression`): data in a gzip, zstd, xz or bzip2
//! wrapper is unwrapped into the work directory, never past the size cap and with the
//! decoders' memory bounded, so a bomb costs a bounded read and nothing else. Data that is
//! not compressed, or whose image says `container_format = compressed`, is left as it is.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Data, TransformError, io_error};
use crate::inspect::Compression;

/// The most memory an xz stream's decoder may take (its dictionary); `xz -9` needs 65 MiB.
const XZ_MEMORY_LIMIT: u64 = 256 << 20;
/// Read and written in pieces of this size.
const CHUNK: usize = 1 << 20;

/// Unwraps `input` into `output`; `None` when there is nothing to unwrap.
pub(super) fn run(
    input: &Data,
    output: &Path,
    size_cap: u64,
    cancel: &CancellationToken,
) -> Result<Option<Data>, TransformError> {
    if input.container_format.as_deref() == Some("compressed") {
        return Ok(None);
    }
    let mut file =
        File::open(&input.path).map_err(io_error(format!("opening {}", input.path.display())))?;
    let mut head = Vec::with_capacity(Compression::MAGIC_LENGTH);
    (&mut file)
        .take(Compression::MAGIC_LENGTH as u64)
        .read_to_end(&mut head)
        .map_err(io_error("reading the staged data"))?;
    let Some(compression) = Compression::detect(&head) else {
        return Ok(None);
    };
    let mut source = BufReader::with_capacity(CHUNK, head.chain(file));
    let mut decoder = decoder(compression, &mut source)?;
    let mut sink =
        File::create(output).map_err(io_error(format!("creating {}", output.display())))?;
    let mut buffer = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(TransformError::Cancelled);
        }
        let n = match decoder.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(TransformError::Refused(format!(
                    "The {} data could not be decompressed: {e}",
                    compression.name()
                )));
            }
        };
        written += n as u64;
        if written > size_cap {
            return Err(TransformError::TooLarge { cap: size_cap });
        }
        sink.write_all(&buffer[..n])
            .map_err(io_error(format!("writing {}", output.display())))?;
    }
    sink.sync_all()
        .map_err(io_error(format!("writing {}", output.display())))?;
    tracing::info!(
        compression = compression.name(),
        size = written,
        "image data decompressed"
    );
    Ok(Some(Data {
        path: output.to_path_buf(),
        inspection: None,
        ..input.clone()
    }))
}

/// A reader of what `source` holds once unwrapped; concatenated streams (as `pigz`,
/// `pbzip2` and `xz -T` write) are read to their end. zstd's decoder keeps its default
/// window limit (2^27 bytes), xz's is `XZ_MEMORY_LIMIT`.
fn decoder<'a, R: io::BufRead + 'a>(
    compression: Compression,
    source: R,
) -> Result<Box<dyn Read + 'a>, TransformError> {
    let refused = |e: io::Error| {
        TransformError::Refused(format!(
            "The {} data could not be decompressed: {e}",
            compression.name()
        ))
    };
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(source)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| refused(e.into()))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(source, stream))
        }
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(source).map_err(refused)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn data(path: &Path, container: &str) -> Data {
        Data {
            path: path.to_path_buf(),
            disk_format: Some("raw".into()),
            container_format: Some(container.into()),
            inspection: None,
        }
    }

    fn compressed(compression: Compression, plain: &[u8]) -> Vec<u8> {
        match compression {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(plain, 1).unwrap(),
        }
    }

    #[test]
    fn each_wrapper_is_unwrapped_byte_exact_and_plain_data_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for compression in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            let input = dir.path().join(compression.name());
            // Two streams back to back, as parallel compressors write them.
            let mut bytes = compressed(compression, &plain[..1_000_000]);
            bytes.extend(compressed(compression, &plain[1_000_000..]));
            std::fs::write(&input, bytes).unwrap();
            let output = dir.path().join(format!("{}.out", compression.name()));
            let done = run(
                &data(&input, "bare"),
                &output,
                1 << 30,
                &CancellationToken::new(),
            )
            .unwrap()
            .expect("unwrapped");
            assert_eq!(done.path, output);
            assert_eq!(
                std::fs::read(&output).unwrap(),
                plain,
                "{}",
                compression.name()
            );
            // Left compressed when the image says it is.
            let kept = run(
                &data(&input, "compressed"),
                &output,
                1 << 30,
                &CancellationToken::new(),
            );
            assert!(matches!(kept, Ok(None)));
        }
        let input = dir.path().join("plain");
        std::fs::write(&input, &plain).unwrap();
        let left = run(
            &data(&input, "bare"),
            &dir.path().join("x"),
            1 << 30,
            &CancellationToken::new(),
        );
        assert!(matches!(left, Ok(None)));
    }

    #[test]
    fn a_bomb_stops_at_the_size_cap_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("bomb.gz");
        // 64 MiB of zeros in a 64 KiB file.
        std::fs::write(&input, compressed(Compression::Gzip, &vec![0u8; 64 << 20])).unwrap();
        let output = dir.path().join("out");
        let cut = run(
            &data(&input, "bare"),
            &output,
            8 << 20,
            &CancellationToken::new(),
        );
        assert!(matches!(cut, Err(TransformError::TooLarge { cap }) if cap == 8 << 20));

        let mut broken = compressed(Compression::Xz, &[1u8; 100_000]);
        let middle = broken.len() / 2;
        broken[middle] ^= 0xff;
        std::fs::write(&input, broken).unwrap();
        let refused = run(
            &data(&input, "bare"),
            &output,
            1 << 30,
            &CancellationToken::new(),
        );
        assert!(
            matches!(refused, Err(TransformError::Refused(_))),
            "{refused:?}"
        );

        let cancel = CancellationToken::new();
        cancel.cancel();
        std::fs::write(&input, compressed(Compression::Zstd, &[1u8; 10])).unwrap();
        let stopped = run(&data(&input, "bare"), &output, 1 << 30, &cancel);
        assert!(matches!(stopped, Err(TransformError::Cancelled)));
    }
}
