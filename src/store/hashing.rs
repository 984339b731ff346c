//! The checksums of data as it streams in: md5 (Glance's `checksum`) and the configured
//! SHA-2 (`os_hash_value`), each on a thread of its own, never on an async worker; and
//! their state when paused part-way (`HashState`), which another process carries on. It
//! does not know where the bytes go.

use std::io;

use bytes::Bytes;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
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

/// Hashing stopped part-way (`Hashing::pause`), to be carried on by another process
/// (`Hashing::resume`): each hash's internal state, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashState {
    pub size: u64,
    pub md5: String,
    pub hash_algo: String,
    pub hash: String,
}

/// The configured SHA-2.
enum Sha {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Sha {
    fn new(hash_algo: &str) -> Sha {
        match hash_algo {
            "sha256" => Sha::Sha256(Sha256::new()),
            "sha384" => Sha::Sha384(Sha384::new()),
            _ => Sha::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Sha::Sha256(sha) => sha.update(data),
            Sha::Sha384(sha) => sha.update(data),
            Sha::Sha512(sha) => sha.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Sha::Sha256(sha) => hex::encode(sha.finalize()),
            Sha::Sha384(sha) => hex::encode(sha.finalize()),
            Sha::Sha512(sha) => hex::encode(sha.finalize()),
        }
    }

    fn state(&self) -> String {
        match self {
            Sha::Sha256(sha) => hex::encode(sha.serialize()),
            Sha::Sha384(sha) => hex::encode(sha.serialize()),
            Sha::Sha512(sha) => hex::encode(sha.serialize()),
        }
    }

    fn restore(hash_algo: &str, state: &str) -> io::Result<Sha> {
        Ok(match hash_algo {
            "sha256" => Sha::Sha256(restore(state)?),
            "sha384" => Sha::Sha384(restore(state)?),
            _ => Sha::Sha512(restore(state)?),
        })
    }
}

/// A hash's state from its hex form (`SerializableState`).
fn restore<T: SerializableState>(state: &str) -> io::Result<T> {
    let bytes = hex::decode(state).map_err(io::Error::other)?;
    let serialized = SerializedState::<T>::try_from(bytes.as_slice())
        .map_err(|_| io::Error::other("a hash state of the wrong length"))?;
    T::deserialize(&serialized).map_err(|_| io::Error::other("a hash state that does not hold"))
}

/// Data being hashed. `update` blocks (the md5 queue may be full): call it off the async
/// workers.
pub struct Hashing {
    md5_chunks: Option<std::sync::mpsc::SyncSender<Bytes>>,
    /// The md5 worker's hash, sent once its chunks end.
    md5: std::sync::mpsc::Receiver<Md5>,
    sha: Sha,
    hash_algo: String,
    size: u64,
}

impl Hashing {
    /// Starts the md5 thread: one of the runtime's blocking pool inside a runtime (reused,
    /// bounded), an OS thread of its own outside one. md5 and the SHA-2 one after the other
    /// would halve the upload rate on a machine with a second core.
    pub fn start(hash_algo: &str) -> io::Result<Hashing> {
        Hashing::with(Md5::new(), Sha::new(hash_algo), hash_algo, 0)
    }

    /// Carries on hashing from where `Hashing::pause` left it.
    pub fn resume(state: &HashState) -> io::Result<Hashing> {
        Hashing::with(
            restore(&state.md5)?,
            Sha::restore(&state.hash_algo, &state.hash)?,
            &state.hash_algo,
            state.size,
        )
    }

    fn with(mut md5: Md5, sha: Sha, hash_algo: &str, size: u64) -> io::Result<Hashing> {
        let (md5_chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(MD5_QUEUE);
        let (md5_done, done) = std::sync::mpsc::sync_channel::<Md5>(1);
        let hash_md5 = move || {
            for chunk in received {
                Digest::update(&mut md5, &chunk);
            }
            let _ = md5_done.send(md5);
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
            md5: done,
            sha,
            hash_algo: hash_algo.to_string(),
            size,
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

    /// The md5 once the thread has hashed every chunk sent.
    fn md5(&mut self) -> io::Result<Md5> {
        drop(self.md5_chunks.take());
        self.md5
            .recv()
            .map_err(|_| io::Error::other("the md5 worker ended without a result"))
    }

    pub fn finish(mut self) -> io::Result<Digests> {
        let md5 = self.md5()?;
        Ok(Digests {
            size: self.size,
            md5: hex::encode(md5.finalize()),
            hash_algo: self.hash_algo,
            hash: self.sha.finish(),
        })
    }

    /// Stops hashing and returns where it stands, for `resume`.
    pub fn pause(mut self) -> io::Result<HashState> {
        let md5 = self.md5()?;
        Ok(HashState {
            size: self.size,
            md5: hex::encode(md5.serialize()),
            hash_algo: self.hash_algo,
            hash: self.sha.state(),
        })
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

    /// Paused after "a" (its state through JSON, as a record carries it) and resumed with
    /// "bc": the digests of "abc", for every SHA-2 glint offers.
    #[test]
    fn hashing_paused_and_resumed_is_hashing_of_the_whole() {
        for algo in ["sha256", "sha384", "sha512"] {
            let mut whole = Hashing::start(algo).unwrap();
            whole.update(&Bytes::from_static(b"abc"));
            let whole = whole.finish().unwrap();
            let mut first = Hashing::start(algo).unwrap();
            first.update(&Bytes::from_static(b"a"));
            let state = first.pause().unwrap();
            let state: HashState =
                serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            let mut rest = Hashing::resume(&state).unwrap();
            rest.update(&Bytes::from_static(b"bc"));
            assert_eq!(rest.finish().unwrap(), whole, "{algo}");
        }
        let broken = HashState {
            md5: "00".into(),
            ..Hashing::start("sha256").unwrap().pause().unwrap()
        };
        assert!(Hashing::resume(&broken).is_err());
    }
}
