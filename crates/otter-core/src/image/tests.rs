//! Tests of the image parser: synthetic images for every chip, one test per refusal, esptool and
//! espsecure (PyPI) as independent checks, and the real firmware corpus when it is present.

use super::synth::{self, SynthApp};
use super::*;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn synth_for(chip: Chip) -> Vec<u8> {
    synth::build(&SynthApp {
        chip,
        version: "2.4.1-rc.1".into(),
        secure_version: 7,
        payload_len: 1000,
        seed: 42,
        ..SynthApp::default()
    })
}

/// Rewrites the checksum and validation hash of an ESP-IDF synth image after a test edits it, so
/// that the test reaches the check it is about.
fn reseal(img: &mut Vec<u8>) {
    let info_len = img.len() - 32;
    img.truncate(info_len);
    let segs = [(
        0x20usize,
        u32::from_le_bytes(img[0x1C..0x20].try_into().unwrap()) as usize,
    )];
    let seg1_hdr = segs[0].0 + segs[0].1;
    let seg1_len = u32::from_le_bytes(img[seg1_hdr + 4..seg1_hdr + 8].try_into().unwrap()) as usize;
    let sum = checksum([
        &img[0x20..0x20 + segs[0].1],
        &img[seg1_hdr + 8..seg1_hdr + 8 + seg1_len],
    ]);
    let last = img.len() - 1;
    img[last] = sum;
    let digest = sha256(img);
    img.extend_from_slice(&digest);
}

#[test]
fn synthetic_images_parse_for_every_chip() {
    for chip in Chip::all() {
        let img = synth_for(chip);
        let info = parse(&img).unwrap_or_else(|e| panic!("{chip}: {e}"));
        assert_eq!(info.chip, chip);
        assert_eq!(info.file_len, img.len());
        assert_eq!(info.sha256, sha256(&img));
        assert_eq!(info.image_len + info.trailing_len, img.len());
        if chip == Chip::Esp8266 {
            assert_eq!(info.format, ImageFormat::Esp8266V1);
            assert!(info.app.is_none());
            continue;
        }
        assert_eq!(info.format, ImageFormat::EspIdf);
        let app = info.app.expect("app descriptor");
        assert_eq!(app.version, "2.4.1-rc.1");
        assert_eq!(app.project_name, "otter-synth");
        assert_eq!(app.secure_version, 7);
        assert_eq!(app.mmu_page_size, Some(65536));
        assert_eq!(info.validation_hash, Some(sha256(&img[..img.len() - 32])));
        assert_eq!(info.segments.len(), 2);
        assert!(info.signatures.is_empty());
    }
}

#[test]
fn every_truncation_is_refused_without_panic() {
    for chip in [Chip::Esp32C3, Chip::Esp8266] {
        let img = synth_for(chip);
        for len in 0..img.len() {
            let err = parse(&img[..len]).expect_err("a truncated image must be refused");
            if len > 0 {
                assert!(
                    matches!(err, ImageError::Truncated { .. }),
                    "{chip} cut at {len}: {err}"
                );
            }
        }
    }
}

#[test]
fn corrupt_segment_data_fails_the_checksum() {
    let mut img = synth_for(Chip::Esp32);
    img[0x200] ^= 0x01;
    match parse(&img) {
        Err(ImageError::Checksum {
            stored, computed, ..
        }) => assert_ne!(stored, computed),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn corrupt_validation_hash_is_refused() {
    let mut img = synth_for(Chip::Esp32S3);
    let last = img.len() - 1;
    img[last] ^= 0x80;
    assert!(matches!(
        parse(&img),
        Err(ImageError::ValidationHash { .. })
    ));
}

#[test]
fn header_lies_are_refused_precisely() {
    let base = synth_for(Chip::Esp32C3);

    let mut img = base.clone();
    img[12] = 0x77;
    assert_eq!(parse(&img), Err(ImageError::UnknownChip(0x77)));

    let mut img = base.clone();
    img[23] = 2;
    assert_eq!(parse(&img), Err(ImageError::BadHashFlag(2)));

    let mut img = base.clone();
    img[1] = 0;
    assert_eq!(parse(&img), Err(ImageError::SegmentCount(0)));
    img[1] = 17;
    assert_eq!(parse(&img), Err(ImageError::SegmentCount(17)));

    // A segment length that runs past the end of the file.
    let mut img = base.clone();
    img[0x1C..0x20].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    assert!(matches!(
        parse(&img),
        Err(ImageError::Truncated {
            what: "segment data",
            ..
        })
    ));

    // A length that is not a multiple of 4.
    let mut img = base.clone();
    img[0x1C..0x20].copy_from_slice(&0x0000_0102u32.to_le_bytes());
    assert!(matches!(
        parse(&img),
        Err(ImageError::UnalignedSegment { index: 0, .. })
    ));

    // The flash-mapped segment moved by 4 bytes: the MMU would map the wrong bytes.
    let mut img = base.clone();
    img[0x18..0x1C].copy_from_slice(&0x3C00_0024u32.to_le_bytes());
    assert!(matches!(
        parse(&img),
        Err(ImageError::MisalignedFlashSegment { index: 0, .. })
    ));
}

#[test]
fn an_app_descriptor_is_required_and_checked() {
    let base = synth_for(Chip::Esp32);

    let mut img = base.clone();
    img[0x20..0x24].copy_from_slice(&[0x50, 0, 0, 1]);
    reseal(&mut img);
    let err = parse(&img).unwrap_err();
    assert!(matches!(err, ImageError::NotAnApp { .. }));
    assert!(err.to_string().contains("bootloader"), "{err}");

    // A version field with no NUL in its 32 bytes.
    let mut img = base.clone();
    img[0x30..0x50].fill(b'A');
    reseal(&mut img);
    assert_eq!(
        parse(&img),
        Err(ImageError::AppDescText {
            field: "version",
            offset: 0x30
        })
    );

    let mut img = base;
    img[0x50] = 0xC3; // a lone UTF-8 lead byte in project_name
    img[0x51] = 0;
    reseal(&mut img);
    assert!(matches!(
        parse(&img),
        Err(ImageError::AppDescText {
            field: "project_name",
            ..
        })
    ));
}

#[test]
fn trailing_bytes_must_be_fill_or_a_signature() {
    let base = synth_for(Chip::Esp32C3);

    let mut img = base.clone();
    img.extend_from_slice(&[0xFF; 3000]);
    let info = parse(&img).unwrap();
    assert_eq!(info.trailing_len, 3000);

    let mut img = base.clone();
    img.extend_from_slice(b"#!/bin/sh appended payload");
    assert!(matches!(
        parse(&img),
        Err(ImageError::TrailingData { len: 26, .. })
    ));
}

/// Builds a Secure Boot V2 ECDSA P-256 sector by hand, following espidf-formats.md section 2.3.
fn append_p256_block(img: &mut Vec<u8>, key_xy: &[u8; 64]) {
    img.resize(img.len().next_multiple_of(4096), 0xFF);
    let mut block = vec![0u8; 1216];
    block[0] = 0xE7;
    block[1] = 0x03;
    block[4..36].copy_from_slice(&sha256(img));
    block[36] = 2;
    block[37..101].copy_from_slice(key_xy);
    let crc = crc32fast::hash(&block[..1196]);
    block[1196..1200].copy_from_slice(&crc.to_le_bytes());
    img.extend_from_slice(&block);
    img.resize(img.len() + 4096 - 1216, 0xFF);
}

#[test]
fn signature_sectors_are_read_and_checked() {
    let mut img = synth_for(Chip::Esp32C6);
    let key = [0x5Au8; 64];
    append_p256_block(&mut img, &key);
    let info = parse(&img).unwrap();
    assert_eq!(info.signatures.len(), 1);
    let block = &info.signatures[0];
    assert_eq!(block.scheme, SignatureScheme::EcdsaP256);
    let mut key_bytes = vec![2u8];
    key_bytes.extend_from_slice(&key);
    assert_eq!(block.key_digest, Some(sha256(&key_bytes)));

    // The CRC no longer matches.
    let mut bad = img.clone();
    bad[block.offset + 50] ^= 1;
    let err = parse(&bad).unwrap_err();
    assert!(err.to_string().contains("CRC32"), "{err}");

    // The image changed after signing (checksum and hash made consistent again).
    let mut changed = img;
    let mut body = changed[..info.image_len].to_vec();
    body[0x200] ^= 1;
    reseal(&mut body);
    changed[..info.image_len].copy_from_slice(&body);
    let err = parse(&changed).unwrap_err();
    assert!(err.to_string().contains("changed after signing"), "{err}");
}

#[test]
fn esp8266_images_are_recognised_and_checked() {
    let img = synth_for(Chip::Esp8266);
    let info = parse(&img).unwrap();
    assert_eq!(info.chip, Chip::Esp8266);
    assert_eq!(info.entry_addr, 0x4010_0004);
    assert_eq!(info.segments[0].load_addr, 0x4010_0000);

    // ESP8266 images carry their flash-mapped part after the ROM-loaded one.
    let mut with_irom = img.clone();
    with_irom.extend_from_slice(&[0x12; 100]);
    assert_eq!(parse(&with_irom).unwrap().trailing_len, 100);

    let mut bad = img.clone();
    bad[20] ^= 0x10;
    assert!(matches!(parse(&bad), Err(ImageError::Checksum { .. })));

    // The v2 layout: an 0xEA header and irom0 segment in front of a v1 image.
    let mut v2 = vec![0xEA, 4, 2, 0x40, 4, 0, 0x10, 0x40, 0, 0, 0, 0, 16, 0, 0, 0];
    v2.extend_from_slice(&[0xAB; 16]);
    v2.extend_from_slice(&img);
    let info = parse(&v2).unwrap();
    assert_eq!(info.format, ImageFormat::Esp8266V2);
    // As esptool lists them: the irom0 segment first, at load address 0.
    assert_eq!(
        info.segments[0],
        Segment {
            load_addr: 0,
            file_offset: 16,
            len: 16
        }
    );
    assert_eq!(info.segments[1].file_offset, 32 + 16);
    assert_eq!(info.segments.len(), 3);
    v2[32] = 0xE8;
    assert_eq!(parse(&v2), Err(ImageError::BadMagic(0xE8)));
}

#[test]
fn not_an_image() {
    assert_eq!(parse(b""), Err(ImageError::Empty));
    assert_eq!(parse(b"PK\x03\x04"), Err(ImageError::BadMagic(b'P')));
    let err = parse(b"\x7fELF").unwrap_err().to_string();
    assert!(err.contains("0xe9"), "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn mutated_images_never_panic(chip in prop::sample::select(Chip::all().collect::<Vec<_>>()),
                                  edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut img = synth_for(chip);
        for (at, value) in edits {
            let i = at.index(img.len());
            img[i] = value;
        }
        if let Ok(info) = parse(&img) {
            prop_assert!(info.image_len <= img.len());
        }
    }

    #[test]
    fn synth_roundtrip(version in "[0-9a-zA-Z.+-]{1,31}", secure_version: u32, payload in 0usize..5000, seed: u64) {
        let img = synth::build(&SynthApp { version: version.clone(), secure_version, payload_len: payload, seed, ..SynthApp::default() });
        let app = parse(&img).unwrap().app.unwrap();
        prop_assert_eq!(app.version, version);
        prop_assert_eq!(app.secure_version, secure_version);
    }
}

// ---------- independent checks with Espressif's tools (PyPI esptool, installed by setup.sh) ----------

/// Runs an Espressif tool (`esptool`, `espsecure`), as a command or a Python module.
pub(super) fn espressif(tool: &str, args: &[&str]) -> std::process::Output {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv/bin")
        .join(tool);
    let direct = if venv.exists() {
        Command::new(venv).args(args).output()
    } else {
        Command::new(tool).args(args).output()
    };
    match direct {
        Ok(out) => out,
        Err(_) => Command::new("python3")
            .arg("-m")
            .arg(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{tool} is needed for this test (bash scripts/setup.sh installs it): {e}")
            }),
    }
}

fn image_info(path: &Path) -> String {
    let out = espressif("esptool", &["image-info", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "esptool image-info failed on {}: {text}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn esptool_accepts_synthetic_images_and_agrees_with_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    // esptool 5 does not know every chip Otter lists; these it does.
    let chips = [
        Chip::Esp32,
        Chip::Esp32S2,
        Chip::Esp32C3,
        Chip::Esp32S3,
        Chip::Esp32C2,
        Chip::Esp32C6,
        Chip::Esp32H2,
        Chip::Esp32P4,
        Chip::Esp32C61,
        Chip::Esp32C5,
        Chip::Esp8266,
    ];
    for chip in chips {
        let path = dir.path().join(format!("{chip}.bin"));
        std::fs::write(&path, synth_for(chip)).unwrap();
        agrees_with_esptool(&path);
    }
}

/// ESP8266 images as esptool reads them: the ESP8266 flash-size table (code 5 is `2MB-c1`, not
/// the ESP32 table's 32MB) and the v2 layout's irom0 segment counted as a segment.
#[test]
fn esp8266_flash_sizes_and_v2_segments_agree_with_esptool() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = synth_for(Chip::Esp8266);
    for (code, name) in [
        (0u8, "512KB"),
        (2, "1MB"),
        (4, "4MB"),
        (5, "2MB-c1"),
        (9, "16MB"),
    ] {
        let mut img = v1.clone();
        img[3] = (code << 4) | (img[3] & 0x0F);
        let info = parse(&img).unwrap();
        assert_eq!(info.flash.size_name(Chip::Esp8266), Some(name));
        let path = dir.path().join(format!("size{code}.bin"));
        std::fs::write(&path, &img).unwrap();
        agrees_with_esptool(&path);
    }
    let mut v2 = vec![0xEA, 4, 2, 0x50, 4, 0, 0x10, 0x40, 0, 0, 0, 0, 16, 0, 0, 0];
    v2.extend_from_slice(&[0xAB; 16]);
    let mut second = v1.clone();
    second[3] = 0x50;
    v2.extend_from_slice(&second);
    let info = parse(&v2).unwrap();
    assert_eq!(info.segments.len(), 3, "irom0 + the two loaded segments");
    let path = dir.path().join("v2.bin");
    std::fs::write(&path, &v2).unwrap();
    agrees_with_esptool(&path);
}

/// What esptool's `image-info` prints for an image, field by field, rendered from [`parse`]'s
/// result: the header lines as `(name, value)` and the segment table as
/// `(length, load address, header offset)`.
fn as_esptool_prints(info: &ImageInfo) -> (Vec<(String, String)>, Vec<[String; 3]>) {
    let mut f: Vec<(&str, String)> = vec![
        ("Image size", format!("{} bytes", info.file_len)),
        (
            "Detected image type",
            info.chip.display_name().to_uppercase(),
        ),
        ("Image version", info.format.esptool_version().to_string()),
        ("Entry point", format!("{:#8x}", info.entry_addr)),
        ("Segments", info.segments.len().to_string()),
        (
            "Flash size",
            info.flash.size_name(info.chip).unwrap_or("?").into(),
        ),
        (
            "Flash freq",
            info.flash.freq_name(info.chip).unwrap_or("?").into(),
        ),
        ("Flash mode", info.flash.mode_name().to_uppercase()),
    ];
    let rev = |full: u16| format!("{}.{}", full / 100, full % 100);
    if let Some(x) = info.extended {
        let d = x.pin_drive;
        f.extend([
            (
                "WP pin",
                format!(
                    "{:#x}{}",
                    x.wp_pin,
                    if x.wp_pin == 0xEE { " (disabled)" } else { "" }
                ),
            ),
            (
                "Flash pins drive settings",
                format!(
                    "clk_drv: {:#x}, q_drv: {:#x}, d_drv: {:#x}, cs0_drv: {:#x}, hd_drv: {:#x}, wp_drv: {:#x}",
                    d[0], d[1], d[2], d[3], d[4], d[5]
                ),
            ),
            (
                "Chip ID",
                format!("{} ({})", info.chip.id(), info.chip.display_name()),
            ),
            (
                "Minimal chip revision",
                format!(
                    "v{}, (legacy min_rev = {})",
                    rev(info.min_chip_rev_full),
                    x.min_chip_rev
                ),
            ),
            (
                "Maximal chip revision",
                format!("v{}", rev(x.max_chip_rev_full_raw)),
            ),
        ]);
    }
    f.push(("Checksum", format!("{:#04x} (valid)", info.checksum)));
    if let Some(h) = info.validation_hash {
        f.push(("Validation hash", format!("{} (valid)", hex::encode(h))));
    }
    if let Some(a) = &info.app {
        f.extend([
            ("Project name", a.project_name.clone()),
            ("App version", a.version.clone()),
            ("Compile time", format!("{} {}", a.date, a.time)),
            ("ELF file SHA256", hex::encode(a.elf_sha256)),
            ("ESP-IDF", a.idf_ver.clone()),
            (
                "Minimal eFuse block revision",
                rev(a.min_efuse_blk_rev_full),
            ),
            (
                "Maximal eFuse block revision",
                rev(a.max_efuse_blk_rev_full),
            ),
        ]);
        if let Some(page) = a.mmu_page_size {
            f.push(("MMU page size", format!("{} KB", page / 1024)));
        }
        f.push(("Secure version", a.secure_version.to_string()));
    }
    let fields = f
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    let segments = info
        .segments
        .iter()
        .map(|s| {
            [
                format!("{:#07x}", s.len),
                format!("{:#010x}", s.load_addr),
                format!("{:#010x}", s.file_offset - 8),
            ]
        })
        .collect();
    (fields, segments)
}

/// Runs `esptool image-info` on `path` and asserts that every field it prints (every
/// `Name: value` line and every segment row) is what Otter's parser read. The one column not
/// compared is a segment's "Memory types": esptool derives it from its own per-chip memory maps,
/// it is not stored in the image. Panics naming the file and the field on any disagreement.
fn agrees_with_esptool(path: &Path) {
    let name = path.display();
    let bytes = std::fs::read(path).unwrap();
    let info = parse(&bytes).unwrap_or_else(|e| panic!("{name}: Otter refuses it: {e}"));
    let text = image_info(path);
    let (fields, segments) = as_esptool_prints(&info);
    let mut seen_fields = Vec::new();
    let mut seen_segments = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() >= 4 && cells[0].parse::<usize>().is_ok() && cells[1].starts_with("0x") {
            seen_segments.push([cells[1].to_string(), cells[2].into(), cells[3].into()]);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue; // banner, titles, rules, table header
        };
        if key.starts_with("esptool") || key.starts_with("Segment ") {
            continue;
        }
        let expected = fields
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{name}: esptool prints {line:?}, a field Otter's comparison does not know:\n{text}"));
        assert_eq!(
            value.trim(),
            expected.1,
            "{name}: esptool and Otter disagree on {key:?}:\n{text}"
        );
        seen_fields.push(key.to_string());
    }
    let printed: Vec<&String> = fields.iter().map(|(k, _)| k).collect();
    assert_eq!(
        seen_fields.iter().collect::<Vec<_>>(),
        printed,
        "{name}: esptool printed other fields than expected:\n{text}"
    );
    assert_eq!(
        seen_segments, segments,
        "{name}: the segment tables disagree (length, load address, file offset):\n{text}"
    );
}

#[test]
fn espsecure_signature_blocks_are_found_with_the_right_key_digest() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("app.bin"), synth_for(Chip::Esp32C6)).unwrap();
    let run = |tool: &str, args: &[&str]| {
        let out = espressif(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "espsecure",
        &[
            "generate-signing-key",
            "--version",
            "2",
            "--scheme",
            "ecdsa256",
            &p("key.pem"),
        ],
    );
    run(
        "espsecure",
        &[
            "sign-data",
            "--version",
            "2",
            "--keyfile",
            &p("key.pem"),
            "--output",
            &p("signed.bin"),
            &p("app.bin"),
        ],
    );
    run(
        "espsecure",
        &[
            "digest-sbv2-public-key",
            "--keyfile",
            &p("key.pem"),
            "--output",
            &p("digest.bin"),
        ],
    );

    let signed = std::fs::read(p("signed.bin")).unwrap();
    let info = parse(&signed).unwrap();
    assert_eq!(info.signatures.len(), 1);
    assert_eq!(info.signatures[0].scheme, SignatureScheme::EcdsaP256);
    let digest = std::fs::read(p("digest.bin")).unwrap();
    assert_eq!(info.signatures[0].key_digest.unwrap().to_vec(), digest);
}

/// The real firmware corpus: `OTTER_FIRMWARE_DIR` when set, else `../shared/firmware` beside the
/// repository (CI has it). It is not part of the repository, so when the folder is absent the
/// test says so and passes; when it is present, every image in it must agree with esptool on
/// every field esptool prints.
#[test]
fn real_firmware_corpus_matches_esptool() {
    let dir = std::env::var_os("OTTER_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/firmware"));
    if !dir.is_dir() {
        eprintln!(
            "{} is absent: real firmware corpus not checked (set OTTER_FIRMWARE_DIR to point at it)",
            dir.display()
        );
        return;
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut files: Vec<PathBuf> = walk(&dir);
    files.sort();
    assert!(!files.is_empty(), "no .bin files under {}", dir.display());
    for path in &files {
        agrees_with_esptool(path);
    }
    eprintln!(
        "{} images under {} agree with esptool",
        files.len(),
        dir.display()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "bin") {
            out.push(path);
        }
    }
    out
}
