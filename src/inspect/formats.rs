//! One watcher per format: the byte ranges it reads, how it tells the format, its virtual
//! size and its safety checks, each as oslo.utils' `format_inspector` has them (offsets,
//! endianness and messages included).

use super::{Format, Region, Tail};

/// The largest VMDK descriptor qemu reads.
const VMDK_DESCRIPTOR_MAX: usize = (1 << 20) - 1;
const VMDK_DESCRIPTOR_AT: u64 = 0x200;
const VMDK_GD_AT_END: u64 = u64::MAX;
/// Region table and metadata table entries a VHDX may have.
const VHDX_MAX_ENTRIES: usize = 2048;
const VHDX_METADATA_REGION: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const VHDX_VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// A GUID as Microsoft writes it (mixed endianness), upper case.
fn guid(data: &[u8]) -> Option<String> {
    let d = data.get(..16)?;
    Some(format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le_u32(d, 0)?,
        le_u16(d, 4)?,
        le_u16(d, 6)?,
        d[8],
        d[9],
        d[10],
        d[11],
        d[12],
        d[13],
        d[14],
        d[15]
    ))
}

type Failures = Vec<(&'static str, String)>;

/// One format's watch over the stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) enum Watcher {
    Qcow2(Region),
    Qed(Region),
    Vhd(Region),
    Vhdx(Vhdx),
    Vmdk(Box<Vmdk>),
    Vdi(Region),
    Iso { system_area: Region, header: Region },
    Gpt(Region),
    Luks(Region),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Vhdx {
    ident: Region,
    header: Region,
    metadata: Option<Region>,
    size: Option<Region>,
    /// The structure did not hold together: no virtual size.
    broken: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Vmdk {
    /// `None` once the data turned out to be a text descriptor.
    header: Option<Region>,
    descriptor: Region,
    footer: Option<Tail>,
    /// Why the sparse header does not hold together.
    broken: Option<String>,
}

impl Watcher {
    pub(super) fn all() -> Vec<Watcher> {
        vec![
            Watcher::Qcow2(Region::new(0, 512)),
            Watcher::Qed(Region::new(0, 512)),
            Watcher::Vhd(Region::new(0, 512)),
            Watcher::Vhdx(Vhdx {
                ident: Region::new(0, 32),
                header: Region::new(192 << 10, 64 << 10),
                metadata: None,
                size: None,
                broken: false,
            }),
            Watcher::Vmdk(Box::new(Vmdk {
                header: Some(Region::at_least(0, 512, 64)),
                descriptor: Region::at_least(0, VMDK_DESCRIPTOR_MAX, 4),
                footer: None,
                broken: None,
            })),
            Watcher::Vdi(Region::new(0, 512)),
            Watcher::Iso {
                system_area: Region::new(0, 32 << 10),
                header: Region::new(32 << 10, 2048),
            },
            Watcher::Gpt(Region::new(0, 512)),
            Watcher::Luks(Region::new(0, 592)),
        ]
    }

    pub(super) fn format(&self) -> Format {
        match self {
            Watcher::Qcow2(_) => Format::Qcow2,
            Watcher::Qed(_) => Format::Qed,
            Watcher::Vhd(_) => Format::Vhd,
            Watcher::Vhdx(_) => Format::Vhdx,
            Watcher::Vmdk(_) => Format::Vmdk,
            Watcher::Vdi(_) => Format::Vdi,
            Watcher::Iso { .. } => Format::Iso,
            Watcher::Gpt(_) => Format::Gpt,
            Watcher::Luks(_) => Format::Luks,
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8], start: u64) {
        match self {
            Watcher::Qcow2(r)
            | Watcher::Qed(r)
            | Watcher::Vhd(r)
            | Watcher::Vdi(r)
            | Watcher::Gpt(r)
            | Watcher::Luks(r) => r.capture(chunk, start),
            Watcher::Iso {
                system_area,
                header,
            } => {
                system_area.capture(chunk, start);
                header.capture(chunk, start);
            }
            Watcher::Vhdx(vhdx) => vhdx.feed(chunk, start),
            Watcher::Vmdk(vmdk) => vmdk.feed(chunk, start),
        }
    }

    pub(super) fn complete(&self) -> bool {
        match self {
            Watcher::Qcow2(r)
            | Watcher::Qed(r)
            | Watcher::Vhd(r)
            | Watcher::Vdi(r)
            | Watcher::Gpt(r)
            | Watcher::Luks(r) => r.complete(),
            Watcher::Iso {
                system_area,
                header,
            } => system_area.complete() && header.complete(),
            Watcher::Vhdx(vhdx) => {
                vhdx.ident.complete()
                    && vhdx.header.complete()
                    && vhdx.metadata.as_ref().is_none_or(Region::complete)
                    && vhdx.size.as_ref().is_none_or(Region::complete)
            }
            Watcher::Vmdk(vmdk) => {
                vmdk.header.as_ref().is_none_or(Region::complete)
                    && (vmdk.descriptor.complete() || vmdk.broken.is_some())
            }
        }
    }

    pub(super) fn matches(&self) -> bool {
        match self {
            Watcher::Qcow2(r) => r.complete() && r.data.starts_with(b"QFI\xfb"),
            Watcher::Qed(r) => r.complete() && r.data.starts_with(b"QED\0"),
            Watcher::Vhd(r) => r.data.starts_with(b"conectix"),
            Watcher::Vhdx(vhdx) => vhdx.ident.data.starts_with(b"vhdxfile"),
            Watcher::Vmdk(vmdk) => match &vmdk.header {
                Some(header) => header.data.starts_with(b"KDMV"),
                None => vmdk.create_type().is_some(),
            },
            Watcher::Vdi(r) => r.complete() && le_u32(&r.data, 0x40) == Some(0xBEDA_107F),
            Watcher::Iso {
                system_area,
                header,
            } => {
                system_area.complete()
                    && header.complete()
                    && matches!(header.data.get(1..6), Some(b"CD001" | b"NSR02" | b"NSR03"))
            }
            Watcher::Gpt(r) => {
                let fat_boot_sector =
                    r.data.get(0x10) == Some(&2) && r.data.get(0x15) == Some(&0xF8);
                r.complete() && le_u16(&r.data, 510) == Some(0xAA55) && !fat_boot_sector
            }
            Watcher::Luks(r) => r.data.starts_with(b"LUKS\xba\xbe"),
        }
    }

    /// The variant of the format the header names (a VMDK's `createType`).
    pub(super) fn subformat(&self) -> Option<String> {
        match self {
            Watcher::Vmdk(vmdk) => vmdk.create_type(),
            _ => None,
        }
    }

    /// The disk's size as the format says; `size` is the whole stream's.
    pub(super) fn virtual_size(&self, size: u64) -> Option<u64> {
        match self {
            Watcher::Qcow2(r) => be_u64(&r.data, 24),
            Watcher::Qed(_) | Watcher::Gpt(_) => Some(size),
            Watcher::Vhd(r) => be_u64(&r.data, 40),
            Watcher::Vhdx(vhdx) => vhdx
                .size
                .as_ref()
                .filter(|r| r.complete() && !vhdx.broken)
                .and_then(|r| le_u64(&r.data, 0)),
            Watcher::Vmdk(vmdk) => {
                let header = vmdk.header.as_ref()?;
                matches!(
                    vmdk.create_type().as_deref(),
                    Some("monolithicsparse" | "streamoptimized")
                )
                .then(|| le_u64(&header.data, 12).map(|sectors| sectors.saturating_mul(512)))
                .flatten()
            }
            Watcher::Vdi(r) => le_u64(&r.data, 0x170),
            Watcher::Iso { header, .. } => {
                if header.data.first() != Some(&1) {
                    return None;
                }
                let blocks = u64::from(le_u32(&header.data, 80)?);
                let block_size = u64::from(le_u16(&header.data, 128)?);
                Some(blocks.saturating_mul(block_size))
            }
            Watcher::Luks(r) => {
                let payload = u64::from(be_u32(&r.data, 104)?);
                Some(size.saturating_sub(payload.saturating_mul(512)))
            }
        }
    }

    /// The failed safety checks of a stream that matched this format: `(check, reason)`.
    pub(super) fn check(&self) -> Failures {
        match self {
            Watcher::Qcow2(r) => qcow2_checks(&r.data),
            Watcher::Qed(_) => vec![("banned", "This file format is not allowed".into())],
            Watcher::Vhd(_) | Watcher::Vhdx(_) | Watcher::Vdi(_) | Watcher::Iso { .. } => {
                Vec::new()
            }
            Watcher::Vmdk(vmdk) => vmdk.checks(),
            Watcher::Gpt(r) => mbr_check(&r.data)
                .map(|reason| vec![("mbr", reason)])
                .unwrap_or_default(),
            Watcher::Luks(r) => {
                let version = r.data.get(6..8).map(|v| i16::from_be_bytes([v[0], v[1]]));
                match version {
                    Some(1) => Vec::new(),
                    other => vec![(
                        "version",
                        format!("LUKS version {} is not supported", other.unwrap_or(0)),
                    )],
                }
            }
        }
    }
}

fn qcow2_checks(header: &[u8]) -> Failures {
    let mut failures = Failures::new();
    if be_u64(header, 0x08).is_some_and(|offset| offset != 0) {
        failures.push(("backing_file", "Image has a backing file".into()));
    }
    // Incompatible feature bits, a big-endian u64 at 0x48: bit 2 is an external data file.
    let features = be_u64(header, 0x48).unwrap_or(0);
    if features & 0x04 != 0 {
        failures.push(("data_file", "Image has data_file set".into()));
    }
    match be_u32(header, 4) {
        Some(2) => {}
        Some(3) if features & !0x0F == 0 => {}
        Some(3) => failures.push(("unknown_features", "Unknown QCOW2 features found".into())),
        _ => failures.push(("unknown_features", "Unsupported qcow2 version".into())),
    }
    failures
}

/// An MBR's partition table that holds together (and, for a GPT's protective MBR, nothing
/// beside the protective partition).
fn mbr_check(mbr: &[u8]) -> Option<String> {
    let mut found_gpt = false;
    let mut valid = Vec::new();
    for i in 0..4 {
        let entry = mbr.get(446 + 16 * i..446 + 16 * (i + 1))?;
        let (boot, chs_start, kind, start_lba) =
            (entry[0], &entry[1..4], entry[4], le_u32(entry, 8)?);
        if boot != 0x00 && boot != 0x80 {
            return Some(format!("MBR PTE {i} has invalid boot flag"));
        }
        if kind != 0 {
            valid.push(i);
        }
        if kind == 0xEE {
            found_gpt = true;
            if chs_start != [0x00, 0x02, 0x00] {
                return Some("GPT MBR has invalid start CHS".into());
            }
            if start_lba != 1 {
                return Some("GPT MBR has invalid start LBA".into());
            }
        }
    }
    if found_gpt && valid != [0] {
        return Some("GPT MBR defines invalid extra partitions".into());
    }
    if valid.is_empty() {
        return Some("GPT MBR has no partitions defined".into());
    }
    None
}

impl Vhdx {
    fn feed(&mut self, chunk: &[u8], start: u64) {
        self.ident.capture(chunk, start);
        self.header.capture(chunk, start);
        if let Some(metadata) = &mut self.metadata {
            metadata.capture(chunk, start);
        }
        if let Some(size) = &mut self.size {
            size.capture(chunk, start);
        }
        if self.broken {
            return;
        }
        if self.metadata.is_none() && self.header.complete() {
            match self.metadata_region() {
                Ok(Some(region)) => {
                    let mut region = region;
                    region.capture(chunk, start);
                    self.metadata = Some(region);
                }
                Ok(None) => {}
                Err(()) => self.broken = true,
            }
        } else if self.size.is_none()
            && let Some(metadata) = &self.metadata
        {
            match Self::size_entry(metadata) {
                Ok(Some(mut region)) => {
                    region.capture(chunk, start);
                    self.size = Some(region);
                }
                Ok(None) => {}
                Err(()) => self.broken = true,
            }
        }
    }

    /// The metadata region the region table names.
    fn metadata_region(&self) -> Result<Option<Region>, ()> {
        let table = &self.header.data;
        if le_u32(table, 0) != Some(0x6967_6572) {
            return Err(());
        }
        let count = le_u32(table, 8).ok_or(())? as usize;
        if count >= VHDX_MAX_ENTRIES {
            return Err(());
        }
        for i in 0..count {
            let entry = table.get(16 + 32 * i..16 + 32 * (i + 1)).ok_or(())?;
            if guid(entry).as_deref() == Some(VHDX_METADATA_REGION) {
                let offset = le_u64(entry, 16).ok_or(())?;
                return Ok(Some(Region::new(offset, VHDX_MAX_ENTRIES * 32)));
            }
        }
        Ok(None)
    }

    /// The virtual disk size item, once the metadata table has arrived.
    fn size_entry(metadata: &Region) -> Result<Option<Region>, ()> {
        let data = &metadata.data;
        if data.len() < 32 {
            return Ok(None);
        }
        if !data.starts_with(b"metadata") {
            return Err(());
        }
        let count = usize::from(le_u16(data, 10).ok_or(())?);
        if count >= VHDX_MAX_ENTRIES {
            return Err(());
        }
        if data.len() < 32 + count * 32 {
            return Ok(None);
        }
        for i in 0..count {
            let entry = &data[32 + 32 * i..32 + 32 * (i + 1)];
            if guid(entry).as_deref() == Some(VHDX_VIRTUAL_DISK_SIZE) {
                let offset = u64::from(le_u32(entry, 16).ok_or(())?);
                let length = le_u32(entry, 20).ok_or(())? as usize;
                return Ok(Some(Region::new(
                    metadata.offset + offset,
                    length.min(VHDX_MAX_ENTRIES * 32),
                )));
            }
        }
        Ok(None)
    }
}

impl Vmdk {
    fn feed(&mut self, chunk: &[u8], start: u64) {
        if let Some(header) = &mut self.header {
            header.capture(chunk, start);
        }
        if self.broken.is_none() {
            self.descriptor.capture(chunk, start);
        }
        if let Some(footer) = &mut self.footer {
            footer.capture(chunk);
        }
        let Some(header) = &self.header else {
            return;
        };
        if !header.complete() || self.broken.is_some() || self.descriptor.offset != 0 {
            return;
        }
        let data = header.data.clone();
        if !data.starts_with(b"KDMV") {
            let text = data
                .iter()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
            if text {
                // A descriptor alone (monolithicFlat and friends): read as text from 0.
                self.header = None;
            } else {
                self.broken = Some("Signature KDMV not found".into());
            }
            return;
        }
        let version = le_u32(&data, 4).unwrap_or(0);
        if !(1..=3).contains(&version) {
            self.broken = Some(format!("Unsupported format version {version}"));
            return;
        }
        if le_u64(&data, 56) == Some(VMDK_GD_AT_END) && self.footer.is_none() {
            self.footer = Some(Tail::new(1536));
        }
        let sectors = le_u64(&data, 28).unwrap_or(0);
        if sectors.saturating_mul(512) != VMDK_DESCRIPTOR_AT {
            self.broken = Some("Wrong descriptor location".into());
            return;
        }
        let length = le_u64(&data, 36)
            .unwrap_or(0)
            .saturating_mul(512)
            .min(VMDK_DESCRIPTOR_MAX as u64) as usize;
        let mut descriptor = Region::new(VMDK_DESCRIPTOR_AT, length);
        descriptor.capture(chunk, start);
        self.descriptor = descriptor;
    }

    /// The descriptor's text up to its first NUL, if it is ASCII.
    fn text(&self) -> Option<String> {
        if !self.descriptor.complete() || self.broken.is_some() {
            return None;
        }
        let data = &self.descriptor.data;
        let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
        let text = std::str::from_utf8(&data[..end]).ok()?;
        text.is_ascii().then(|| text.to_string())
    }

    /// `createType`, lower case.
    fn create_type(&self) -> Option<String> {
        let text = self.text()?.to_ascii_lowercase();
        let start = text.find("createtype=\"")? + "createtype=\"".len();
        let value = &text[start..];
        let end = value.find('"')?;
        (end < 64).then(|| value[..end].to_string())
    }

    fn checks(&self) -> Failures {
        let mut failures = Failures::new();
        if let Some(reason) = self.descriptor_failure() {
            failures.push(("descriptor", reason.into()));
        }
        if let Some(reason) = self.footer_failure() {
            failures.push(("footer", reason.into()));
        }
        failures
    }

    fn descriptor_failure(&self) -> Option<&'static str> {
        let Some(text) = self.text() else {
            return Some("No descriptor found");
        };
        if !matches!(
            self.create_type().as_deref(),
            Some("monolithicsparse" | "streamoptimized")
        ) {
            return Some("Unsupported subformat");
        }
        let mut extents = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
                continue;
            }
            if let Some((key, _)) = line.split_once('=')
                && !key.contains(' ')
            {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(
                first.to_ascii_lowercase().as_str(),
                "rw" | "rdonly" | "noaccess"
            ) {
                extents.push(line);
                continue;
            }
            return Some("Invalid VMDK descriptor data");
        }
        if extents.iter().any(|line| line.contains('/')) {
            return Some("Invalid extent filenames found");
        }
        if extents.is_empty() {
            return Some("No extents found");
        }
        None
    }

    fn footer_failure(&self) -> Option<&'static str> {
        let footer = self.footer.as_ref()?;
        let header = &self.header.as_ref()?.data;
        let data = &footer.data;
        if data.len() < 1536 {
            return Some("Footer is missing");
        }
        let (marker, copy, end) = (&data[..512], &data[512..1024], &data[1024..]);
        if copy.get(..4) != header.get(..4) {
            return Some("Header and footer signature do not match");
        }
        if le_u32(copy, 4) != le_u32(header, 4) {
            return Some("Header and footer versions do not match");
        }
        if le_u64(copy, 28) != le_u64(header, 28) || le_u64(copy, 36) != le_u64(header, 36) {
            return Some("Footer specifies a different descriptor than header");
        }
        if le_u64(copy, 56) == Some(VMDK_GD_AT_END) {
            return Some("Footer indicates another footer");
        }
        let zero = |bytes: &[u8]| bytes.iter().all(|b| *b == 0);
        if le_u32(marker, 8) != Some(0) || le_u32(marker, 12) != Some(3) || !zero(&marker[16..]) {
            return Some("Footer marker is invalid");
        }
        if le_u64(end, 0) != Some(0)
            || le_u32(end, 8) != Some(0)
            || le_u32(end, 12) != Some(0)
            || !zero(&end[16..])
        {
            return Some("End-of-stream marker is invalid");
        }
        None
    }
}
