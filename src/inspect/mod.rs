//! What image data is, told from its bytes as they stream past: the disk format, its
//! virtual size, and whether it is safe to hand to a hypervisor. A port of oslo.utils'
//! `format_inspector` (the reference Glance checks uploads with): every format is watched
//! at once through the few byte ranges it needs (`Region`), nothing else is kept, and no
//! byte is read twice. Pure: no I/O, and it imports nothing of the crate; what a refusal
//! means to a client is `service`'s business.

mod formats;
#[cfg(test)]
mod tests;

use formats::Watcher;

/// A disk format the inspector recognises.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Qed,
    Vhd,
    Vhdx,
    Vmdk,
    Vdi,
    Iso,
    Gpt,
    Luks,
}

impl Format {
    /// The name Glance's `disk_format` uses.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Qed => "qed",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
            Format::Gpt => "gpt",
            Format::Luks => "luks",
        }
    }
}

/// A compression wrapper around image data, told by its magic number. The inspector says
/// so; it does not look inside (the import plugin `decompress` does, and its output is
/// inspected in its turn).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    /// The most bytes `detect` looks at.
    pub const MAGIC_LENGTH: usize = 6;

    /// The wrapper whose magic number `head` (the stream's first bytes) starts with.
    pub fn detect(head: &[u8]) -> Option<Compression> {
        match head {
            [0x1f, 0x8b, 0x08, ..] => Some(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some(Compression::Bzip2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }
}

/// A byte range of the stream one format needs, captured as it passes. Only bytes that
/// continue what it holds are taken: a range that starts behind the stream's position when
/// it is asked for never completes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Region {
    offset: u64,
    length: usize,
    /// Complete with this many bytes already (the rest is taken if it comes).
    min_length: Option<usize>,
    data: Vec<u8>,
}

impl Region {
    fn new(offset: u64, length: usize) -> Region {
        Region {
            offset,
            length,
            min_length: None,
            data: Vec::new(),
        }
    }

    fn at_least(offset: u64, length: usize, min_length: usize) -> Region {
        Region {
            min_length: Some(min_length),
            ..Region::new(offset, length)
        }
    }

    fn complete(&self) -> bool {
        self.data.len() >= self.min_length.unwrap_or(self.length)
    }

    /// Takes what `chunk` (the bytes at `start..`) holds of this range.
    fn capture(&mut self, chunk: &[u8], start: u64) {
        if self.data.len() >= self.length {
            return;
        }
        let next = self.offset + self.data.len() as u64;
        let end = start + chunk.len() as u64;
        if next < start || next >= end {
            return;
        }
        let from = usize::try_from(next - start).unwrap_or(usize::MAX);
        let wanted = self.length - self.data.len();
        let upto = from.saturating_add(wanted).min(chunk.len());
        self.data.extend_from_slice(&chunk[from..upto]);
    }
}

/// The last `length` bytes of the stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Tail {
    length: usize,
    data: Vec<u8>,
}

impl Tail {
    fn new(length: usize) -> Tail {
        Tail {
            length,
            data: Vec::new(),
        }
    }

    fn capture(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.length {
            self.data.clear();
            self.data
                .extend_from_slice(&chunk[chunk.len() - self.length..]);
            return;
        }
        self.data.extend_from_slice(chunk);
        if self.data.len() > self.length {
            let extra = self.data.len() - self.length;
            self.data.drain(..extra);
        }
    }
}

/// What the inspection of a whole stream found (kept beside staged data, so an import
/// judges it without reading the data again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inspection {
    /// The format the data is in: `Raw` when no other matched.
    pub format: Format,
    /// The disk's size as the format declares it (raw: the data's size).
    pub virtual_size: Option<u64>,
    /// Why the data cannot be taken as any one format (several matched), or why it is not
    /// safe as the one it is: the names of the failed checks with their reasons.
    pub refusal: Option<Refusal>,
    /// The compression wrapper the data is in, if any (then its format is `Raw`).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// A VMDK's `createType`, in lower case.
    #[serde(default)]
    pub subformat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// Data that is more than one format at once (`Multiple formats detected: a,b`).
    Ambiguous(Vec<Format>),
    /// The format's header is cut short (`Incomplete file cannot be safety checked`).
    Incomplete,
    /// Failed safety checks: `(check, reason)`.
    Unsafe(Vec<(String, String)>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Ambiguous(formats) => {
                let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
                write!(f, "Multiple formats detected: {}", names.join(","))
            }
            Refusal::Incomplete => f.write_str("Incomplete file cannot be safety checked"),
            Refusal::Unsafe(failures) => {
                let names: Vec<&str> = failures.iter().map(|(name, _)| name.as_str()).collect();
                write!(f, "Safety checks failed: {}", names.join(","))
            }
        }
    }
}

/// Watches a stream for every format at once. Feed it every chunk in order, then `finish`.
/// Its state serialises: an upload paused part-way carries its inspection to the process
/// that carries it on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Inspector {
    watchers: Vec<Watcher>,
    position: u64,
    /// The stream's first bytes, for its compression wrapper.
    head: Region,
}

impl Default for Inspector {
    fn default() -> Self {
        Inspector::new()
    }
}

impl Inspector {
    pub fn new() -> Inspector {
        Inspector {
            watchers: Watcher::all(),
            position: 0,
            head: Region::new(0, Compression::MAGIC_LENGTH),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.head.capture(chunk, self.position);
        for watcher in &mut self.watchers {
            watcher.feed(chunk, self.position);
        }
        self.position += chunk.len() as u64;
    }

    /// The verdict on the stream fed so far, taken as whole.
    pub fn finish(self) -> Inspection {
        let size = self.position;
        let mut matched: Vec<&Watcher> = self.watchers.iter().filter(|w| w.matches()).collect();
        // A bootable ISO carries an MBR; Glance takes the pair as the ISO it is.
        if matched.len() == 2
            && matched.iter().any(|w| w.format() == Format::Iso)
            && matched.iter().any(|w| w.format() == Format::Gpt)
        {
            matched.retain(|w| w.format() == Format::Iso);
        }
        let compression = Compression::detect(&self.head.data);
        match matched.as_slice() {
            [] => Inspection {
                format: Format::Raw,
                virtual_size: Some(size),
                refusal: None,
                compression,
                subformat: None,
            },
            [only] => {
                let refusal = if !only.complete() {
                    Some(Refusal::Incomplete)
                } else {
                    let failures: Vec<(String, String)> = only
                        .check()
                        .into_iter()
                        .map(|(name, reason)| (name.to_string(), reason))
                        .collect();
                    (!failures.is_empty()).then_some(Refusal::Unsafe(failures))
                };
                Inspection {
                    format: only.format(),
                    virtual_size: only.virtual_size(size),
                    refusal,
                    compression: None,
                    subformat: only.subformat(),
                }
            }
            several => Inspection {
                format: Format::Raw,
                virtual_size: None,
                refusal: Some(Refusal::Ambiguous(
                    several.iter().map(|w| w.format()).collect(),
                )),
                compression: None,
                subformat: None,
            },
        }
    }
}
