//! The inspector on headers built byte by byte as each format lays them out, fed whole and
//! in every chunking; and on any bytes at all, where it must never panic.

use proptest::prelude::*;

use super::*;

fn inspect_in(data: &[u8], chunk: usize) -> Inspection {
    let mut inspector = Inspector::new();
    for piece in data.chunks(chunk.max(1)) {
        inspector.feed(piece);
    }
    inspector.finish()
}

/// The same verdict whatever the chunk size.
fn inspect(data: &[u8]) -> Inspection {
    let whole = inspect_in(data, data.len());
    for chunk in [1, 7, 512, 4096, 65536] {
        assert_eq!(inspect_in(data, chunk), whole, "chunks of {chunk}");
    }
    whole
}

fn qcow2(version: u32, backing: u64, features: u64, size: u64) -> Vec<u8> {
    let mut data = vec![0u8; 1 << 16];
    data[..4].copy_from_slice(b"QFI\xfb");
    data[4..8].copy_from_slice(&version.to_be_bytes());
    data[8..16].copy_from_slice(&backing.to_be_bytes());
    data[20..24].copy_from_slice(&16u32.to_be_bytes());
    data[24..32].copy_from_slice(&size.to_be_bytes());
    data[0x48..0x50].copy_from_slice(&features.to_be_bytes());
    data
}

fn unsafe_checks(inspection: &Inspection) -> Vec<&str> {
    match &inspection.refusal {
        Some(Refusal::Unsafe(failures)) => failures.iter().map(|(name, _)| name.as_str()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_qcow2_tells_its_virtual_size_and_its_dangers() {
    let plain = inspect(&qcow2(3, 0, 0, 10 << 30));
    assert_eq!(plain.format, Format::Qcow2);
    assert_eq!(plain.virtual_size, Some(10 << 30));
    assert_eq!(plain.refusal, None);

    assert_eq!(
        unsafe_checks(&inspect(&qcow2(3, 0x200, 0, 1))),
        ["backing_file"]
    );
    assert_eq!(
        unsafe_checks(&inspect(&qcow2(3, 0, 0x04, 1))),
        ["data_file"]
    );
    assert_eq!(
        unsafe_checks(&inspect(&qcow2(3, 0, 0x10, 1))),
        ["unknown_features"]
    );
    assert_eq!(
        unsafe_checks(&inspect(&qcow2(4, 0, 0, 1))),
        ["unknown_features"]
    );
    assert_eq!(inspect(&qcow2(2, 0, 0, 1)).refusal, None);
    // Dirty and corrupt bits, and compression type, are known features.
    assert_eq!(inspect(&qcow2(3, 0, 0x0B, 1)).refusal, None);
    // Less than a header is not a qcow2.
    assert_eq!(inspect(&qcow2(3, 0x200, 0, 1)[..300]).format, Format::Raw);
}

#[test]
fn raw_data_is_its_own_size() {
    let data = vec![0x5Au8; 100_000];
    let raw = inspect(&data);
    assert_eq!(raw.format, Format::Raw);
    assert_eq!(raw.virtual_size, Some(100_000));
    assert_eq!(raw.refusal, None);
    assert_eq!(inspect(b"").format, Format::Raw);
}

#[test]
fn vdi_vhd_and_iso_read_their_sizes() {
    let mut vdi = vec![0u8; 4096];
    vdi[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
    vdi[0x170..0x178].copy_from_slice(&(3u64 << 30).to_le_bytes());
    let found = inspect(&vdi);
    assert_eq!(
        (found.format, found.virtual_size),
        (Format::Vdi, Some(3 << 30))
    );

    let mut vhd = vec![0u8; 4096];
    vhd[..8].copy_from_slice(b"conectix");
    vhd[40..48].copy_from_slice(&(5u64 << 20).to_be_bytes());
    let found = inspect(&vhd);
    assert_eq!(
        (found.format, found.virtual_size),
        (Format::Vhd, Some(5 << 20))
    );

    let mut iso = vec![0u8; 40 << 10];
    iso[0x8000] = 1;
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    iso[0x8000 + 80..0x8000 + 84].copy_from_slice(&20u32.to_le_bytes());
    iso[0x8000 + 128..0x8000 + 130].copy_from_slice(&2048u16.to_le_bytes());
    let found = inspect(&iso);
    assert_eq!(
        (found.format, found.virtual_size),
        (Format::Iso, Some(20 * 2048))
    );
    assert_eq!(found.refusal, None);

    // A bootable ISO with a protective MBR is the ISO it is.
    let mut hybrid = iso.clone();
    hybrid[510..512].copy_from_slice(&0xAA55u16.to_le_bytes());
    hybrid[446 + 4] = 0x83;
    hybrid[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(inspect(&hybrid).format, Format::Iso);
}

#[test]
fn a_qcow2_header_inside_an_iso_is_two_formats_at_once() {
    let mut both = qcow2(3, 0, 0, 1);
    both.resize(40 << 10, 0);
    both[0x8000] = 1;
    both[0x8001..0x8006].copy_from_slice(b"CD001");
    let found = inspect(&both);
    assert_eq!(
        found.refusal,
        Some(Refusal::Ambiguous(vec![Format::Qcow2, Format::Iso]))
    );
    assert_eq!(
        found.refusal.map(|r| r.to_string()).as_deref(),
        Some("Multiple formats detected: qcow2,iso")
    );
}

#[test]
fn a_gpt_protective_mbr_must_hold_together() {
    let mut gpt = vec![0u8; 8192];
    gpt[510..512].copy_from_slice(&0xAA55u16.to_le_bytes());
    let entry = 446;
    gpt[entry + 1..entry + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    gpt[entry + 4] = 0xEE;
    gpt[entry + 8..entry + 12].copy_from_slice(&1u32.to_le_bytes());
    let found = inspect(&gpt);
    assert_eq!((found.format, found.refusal.clone()), (Format::Gpt, None));
    assert_eq!(found.virtual_size, Some(8192));

    let mut extra = gpt.clone();
    extra[entry + 16 + 4] = 0x83;
    assert_eq!(unsafe_checks(&inspect(&extra)), ["mbr"]);
    let mut bad_flag = gpt.clone();
    bad_flag[entry] = 0x12;
    assert_eq!(unsafe_checks(&inspect(&bad_flag)), ["mbr"]);
}

#[test]
fn qed_is_refused_and_luks_must_be_version_1() {
    let mut qed = vec![0u8; 1024];
    qed[..4].copy_from_slice(b"QED\0");
    assert_eq!(unsafe_checks(&inspect(&qed)), ["banned"]);

    let mut luks = vec![0u8; 4096];
    luks[..6].copy_from_slice(b"LUKS\xba\xbe");
    luks[6..8].copy_from_slice(&1i16.to_be_bytes());
    luks[104..108].copy_from_slice(&4u32.to_be_bytes());
    let found = inspect(&luks);
    assert_eq!(
        (found.format, found.virtual_size),
        (Format::Luks, Some(4096 - 2048))
    );
    luks[6..8].copy_from_slice(&2i16.to_be_bytes());
    assert_eq!(unsafe_checks(&inspect(&luks)), ["version"]);
}

/// A sparse VMDK: header, then the descriptor at sector 1.
fn vmdk(descriptor: &str) -> Vec<u8> {
    let mut data = vec![0u8; 1 << 16];
    data[..4].copy_from_slice(b"KDMV");
    data[4..8].copy_from_slice(&1u32.to_le_bytes());
    data[12..20].copy_from_slice(&2048u64.to_le_bytes());
    data[28..36].copy_from_slice(&1u64.to_le_bytes());
    data[36..44].copy_from_slice(&20u64.to_le_bytes());
    data[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
    data
}

const SPARSE: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                      createType=\"monolithicSparse\"\n\nRW 2048 SPARSE \"disk.vmdk\"\n\
                      ddb.virtualHWVersion = \"4\"\n";

#[test]
fn a_vmdk_names_its_subformat_and_its_extents() {
    let found = inspect(&vmdk(SPARSE));
    assert_eq!(found.format, Format::Vmdk);
    assert_eq!(found.virtual_size, Some(2048 * 512));
    assert_eq!(found.refusal, None);
    assert_eq!(found.subformat.as_deref(), Some("monolithicsparse"));

    let flat = SPARSE.replace("monolithicSparse", "monolithicFlat");
    assert_eq!(unsafe_checks(&inspect(&vmdk(&flat))), ["descriptor"]);
    let outside = SPARSE.replace("\"disk.vmdk\"", "\"/etc/passwd\"");
    let refused = inspect(&vmdk(&outside));
    assert_eq!(
        refused.refusal,
        Some(Refusal::Unsafe(vec![(
            "descriptor".into(),
            "Invalid extent filenames found".into()
        )]))
    );
    let garbage = SPARSE.replace("RW 2048", "whatever is this\nRW 2048");
    assert_eq!(unsafe_checks(&inspect(&vmdk(&garbage))), ["descriptor"]);

    // A descriptor file alone (monolithicFlat points at another file): refused.
    let text = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n\
                RW 2048 FLAT \"disk-flat.vmdk\" 0\n";
    let found = inspect(text.as_bytes());
    assert_eq!(found.format, Format::Vmdk);
    assert_eq!(unsafe_checks(&found), ["descriptor"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes, in any chunking, give a verdict without a panic; a verdict of one format
    /// is the same however the bytes were cut.
    #[test]
    fn any_bytes_in_any_chunks_give_a_verdict(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        prefix in prop_oneof![
            Just(&b""[..]), Just(&b"QFI\xfb"[..]), Just(&b"KDMV"[..]), Just(&b"conectix"[..]),
            Just(&b"vhdxfile"[..]), Just(&b"LUKS\xba\xbe"[..]), Just(&b"QED\0"[..]),
        ],
        chunk in 1usize..700,
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&data);
        let whole = inspect_in(&bytes, bytes.len());
        let cut = inspect_in(&bytes, chunk);
        prop_assert_eq!(whole, cut);
    }

    /// A qcow2 header with any fields is read without a panic.
    #[test]
    fn any_qcow2_header_gives_a_verdict(
        version in any::<u32>(), backing in any::<u64>(), features in any::<u64>(), size in any::<u64>(),
    ) {
        let found = inspect_in(&qcow2(version, backing, features, size), 333);
        prop_assert_eq!(found.format, Format::Qcow2);
        prop_assert_eq!(found.virtual_size, Some(size));
    }
}

#[test]
fn compression_wrappers_are_told_by_their_magic_and_are_raw_data() {
    let cases: [(&[u8], Compression); 4] = [
        (b"\x1f\x8b\x08\x00\x00\x00", Compression::Gzip),
        (b"\x28\xb5\x2f\xfd\x24\x00", Compression::Zstd),
        (b"\xfd7zXZ\x00\x00\x04", Compression::Xz),
        (b"BZh91AY&SY", Compression::Bzip2),
    ];
    for (magic, compression) in cases {
        let mut data = magic.to_vec();
        data.resize(4096, 0x5a);
        let found = inspect(&data);
        assert_eq!(
            found.compression,
            Some(compression),
            "{}",
            compression.name()
        );
        assert_eq!(found.format, Format::Raw);
    }
    assert_eq!(inspect(b"BZh0....").compression, None);
    assert_eq!(inspect(b"\x1f\x8b").compression, None);
    assert_eq!(inspect(&qcow2(3, 0, 0, 1)).compression, None);
}

/// An inspection paused at any point (its state through JSON, as a paused upload's record
/// carries it) and carried on gives the verdict of the whole stream.
#[test]
fn an_inspection_carried_on_from_its_state_is_that_of_the_whole() {
    for data in [
        qcow2(3, 0, 0, 10 << 30),
        qcow2(3, 1 << 20, 0, 1 << 30),
        vmdk(SPARSE),
        vec![7u8; 100_000],
    ] {
        let whole = inspect_in(&data, data.len());
        for at in [0, 3, 100, 600, 40_000, data.len()] {
            let mut first = Inspector::new();
            first.feed(&data[..at]);
            let state = serde_json::to_string(&first).unwrap();
            let mut rest: Inspector = serde_json::from_str(&state).unwrap();
            rest.feed(&data[at..]);
            assert_eq!(rest.finish(), whole, "paused at {at}");
        }
    }
}
