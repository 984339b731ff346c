//! The checksums of data as it streams in: md5 (Glance's `checksum`) and the configured
//! SHA-2 (`os_hash_value`), each on a thread of its own, never on an async worker. It
//! does not know where the bytes go.

use std::io;

use bytes::Bytes;
use md5::Md5;
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Chunks queued for the md5 thread before the caller waits for it.
const MD5_QUEUE: usize = 16;

/// What hashing computed once its data ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub md5: String,
    pub hash_algo: String,
    pub hash: String,
}

/// Data being hashed. `update` blocks (the md5 queue may be full): call it off the async
/// workers.
pub struct Hashing {
    md5_chunks: Option<std::sync::mpsc::SyncSender<Bytes>>,
    /// The md5 worker's result, sent once its chunks end.
    md5: std::sync::mpsc::Receiver<String>,
    sha: Box<dyn DynDigest + Send>,
    hash_algo: String,
    size: u64,
}

impl Hashing {
    /// Starts the md5 thread: one of the runtime's blocking pool inside a runtime (reused,
    /// bounded), an OS thread of its own outside one. md5 and the SHA-2 one after the other
    /// would halve the upload rate on a machine with a second core.
    pub fn start(hash_algo: &str) -> io::Result<Hashing> {
        let sha: Box<dyn DynDigest + Send> = match hash_algo {
            "sha256" => Box::new(Sha256::new()),
            "sha384" => Box::new(Sha384::new()),
            _ => Box::new(Sha512::new()),
        };
        let (md5_chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(MD5_QUEUE);
        let (md5_done, md5) = std::sync::mpsc::sync_channel::<String>(1);
        let hash_md5 = move || {
            let mut md5 = Md5::new();
            for chunk in received {
                Digest::update(&mut md5, &chunk);
            }
            let _ = md5_done.send(hex::encode(md5.finalize()));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(hash_md5)),
            Err(_) => drop(
                std::thread::Builder::new()
                    .name("glint-md5".into())
                    .spawn(hash_md5)?,
            ),
        }
        Ok(Hashing {
            md5_chunks: Some(md5_chunks),
            md5,
            sha,
            hash_algo: hash_algo.to_string(),
            size: 0,
        })
    }

    pub fn update(&mut self, chunk: &Bytes) {
        if let Some(md5) = &self.md5_chunks {
            // The md5 thread ends only when this sender is dropped.
            let _ = md5.send(chunk.clone());
        }
        self.sha.update(chunk);
        self.size += chunk.len() as u64;
    }

    pub fn finish(mut self) -> io::Result<Digests> {
        drop(self.md5_chunks.take());
        let md5 = self
            .md5
            .recv()
            .map_err(|_| io::Error::other("the md5 worker ended without a result"))?;
        Ok(Digests {
            size: self.size,
            md5,
            hash_algo: self.hash_algo.clone(),
            hash: hex::encode(self.sha.finalize_reset()),
        })
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        drop(self.md5_chunks.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_and_sha2_of_chunks_are_those_of_the_whole() {
        let mut hashing = Hashing::start("sha256").unwrap();
        hashing.update(&Bytes::from_static(b"a"));
        hashing.update(&Bytes::from_static(b"bc"));
        let digests = hashing.finish().unwrap();
        assert_eq!(digests.size, 3);
        assert_eq!(digests.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            digests.hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
