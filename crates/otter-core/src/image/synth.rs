//! Format-valid synthetic images, for tests, benchmarks and `otter dev synth-image`.
//!
//! The bytes are not runnable firmware: they are what `esptool elf2image` would write for a tiny
//! program (a flash-mapped segment holding `esp_app_desc_t` and pseudo-random "code", and a small
//! IRAM segment), with a correct checksum and validation hash, so that every check of
//! [`super::parse`], of esptool's `image-info` and of a device's OTA code passes. The tests of this
//! module run esptool on them as an independent check.

use super::{
    checksum, checksum_offset, sha256, APP_DESC_LEN, APP_DESC_MAGIC, APP_DESC_OFFSET, IMAGE_MAGIC,
};
use crate::Chip;

/// What to put in a synthetic image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthApp {
    /// The target chip; [`Chip::Esp8266`] gives an ESP8266 "version 1" image.
    pub chip: Chip,
    /// `esp_app_desc_t.version` (at most 31 bytes; longer is cut).
    pub version: String,
    /// `esp_app_desc_t.project_name` (at most 31 bytes).
    pub project_name: String,
    /// `esp_app_desc_t.idf_ver` (at most 31 bytes).
    pub idf_ver: String,
    /// `esp_app_desc_t.secure_version`.
    pub secure_version: u32,
    /// Bytes of pseudo-random "code" after the descriptor (rounded up to a multiple of 4).
    pub payload_len: usize,
    /// Seed of the payload: the same seed gives the same bytes.
    pub seed: u64,
}

impl Default for SynthApp {
    fn default() -> Self {
        SynthApp {
            chip: Chip::Esp32C3,
            version: "1.0.0".into(),
            project_name: "otter-synth".into(),
            idf_ver: "v5.3.1".into(),
            secure_version: 0,
            payload_len: 4096,
            seed: 1,
        }
    }
}

/// Builds the image.
pub fn build(app: &SynthApp) -> Vec<u8> {
    if app.chip == Chip::Esp8266 {
        build_esp8266(app)
    } else {
        build_idf(app)
    }
}

/// The size `build` will produce for a payload, so callers can aim at a total file size.
pub fn overhead(chip: Chip) -> usize {
    let probe = SynthApp {
        chip,
        payload_len: 0,
        ..SynthApp::default()
    };
    build(&probe).len()
}

/// (flash-mapped data address, IRAM address) per chip, inside the windows the parser checks.
fn addresses(chip: Chip) -> (u32, u32) {
    match chip {
        Chip::Esp32 => (0x3F40_0000, 0x4008_0000),
        Chip::Esp32S2 => (0x3F00_0000, 0x4002_2000),
        Chip::Esp32C3 | Chip::Esp32C2 => (0x3C00_0000, 0x4038_0000),
        Chip::Esp32S3 => (0x3C00_0000, 0x4037_0000),
        Chip::Esp32P4 => (0x4000_0000, 0x4FF0_0000),
        Chip::Esp32C6 | Chip::Esp32H2 | Chip::Esp32C61 | Chip::Esp32H21 => {
            (0x4280_0000, 0x4080_0000)
        }
        _ => (0x4200_0000, 0x4080_0000),
    }
}

fn build_idf(app: &SynthApp) -> Vec<u8> {
    let (drom, iram) = addresses(app.chip);
    // esp_image_header_t: magic, 2 segments, DIO, 4 MB with frequency code 0.
    let mut out = vec![IMAGE_MAGIC, 2, 2, 0x20];
    out.extend_from_slice(&iram.to_le_bytes()); // entry point
    out.push(0xEE); // wp_pin disabled
    out.extend_from_slice(&[0, 0, 0]); // spi_pin_drv
    out.extend_from_slice(&app.chip.id().to_le_bytes());
    out.push(0); // min_chip_rev (legacy)
    out.extend_from_slice(&0u16.to_le_bytes()); // min_chip_rev_full
    out.extend_from_slice(&0xFFFFu16.to_le_bytes()); // max_chip_rev_full: unset
    out.extend_from_slice(&[0; 4]);
    out.push(1); // hash_appended

    // Segment 0: flash-mapped data, starting with esp_app_desc_t at file offset 0x20.
    let mut drom_data = app_desc(app);
    drom_data.extend(pseudo_random(app.seed, app.payload_len.next_multiple_of(4)));
    out.extend_from_slice(&(drom + APP_DESC_OFFSET as u32).to_le_bytes());
    out.extend_from_slice(&(drom_data.len() as u32).to_le_bytes());
    debug_assert_eq!(out.len(), APP_DESC_OFFSET);
    out.extend_from_slice(&drom_data);

    // Segment 1: a little IRAM "code" holding the entry point.
    let iram_data = pseudo_random(app.seed ^ 0x1A2A, 16);
    out.extend_from_slice(&iram.to_le_bytes());
    out.extend_from_slice(&(iram_data.len() as u32).to_le_bytes());
    out.extend_from_slice(&iram_data);

    finish(&mut out, [&drom_data[..], &iram_data[..]]);
    let digest = sha256(&out);
    out.extend_from_slice(&digest);
    out
}

fn build_esp8266(app: &SynthApp) -> Vec<u8> {
    let iram = 0x4010_0000u32;
    let mut out = vec![IMAGE_MAGIC, 2, 2, 0x40];
    out.extend_from_slice(&(iram + 4).to_le_bytes());
    let code = pseudo_random(app.seed, app.payload_len.next_multiple_of(4).max(4));
    let data = pseudo_random(app.seed ^ 0x8266, 16);
    for (addr, bytes) in [(iram, &code), (0x3FFE_8000, &data)] {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    finish(&mut out, [&code[..], &data[..]]);
    out
}

/// Pads with zeros and appends the checksum byte as the last byte of a 16-byte block.
fn finish<'a>(out: &mut Vec<u8>, segment_data: impl IntoIterator<Item = &'a [u8]>) {
    let sum = checksum(segment_data);
    out.resize(checksum_offset(out.len()), 0);
    out.push(sum);
}

fn app_desc(app: &SynthApp) -> Vec<u8> {
    let mut d = vec![0u8; APP_DESC_LEN];
    d[0..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    d[4..8].copy_from_slice(&app.secure_version.to_le_bytes());
    put_text(&mut d[16..48], &app.version);
    put_text(&mut d[48..80], &app.project_name);
    put_text(&mut d[80..96], "12:00:00");
    put_text(&mut d[96..112], "Jan  1 2026");
    put_text(&mut d[112..144], &app.idf_ver);
    d[144..176].copy_from_slice(&sha256(app.version.as_bytes())); // stands in for the ELF hash
    d[180] = 16; // MMU page: 64 KiB
    d
}

/// Writes `s` NUL-terminated into `field`, cut at a character boundary if too long.
fn put_text(field: &mut [u8], s: &str) {
    let mut end = s.len().min(field.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&s.as_bytes()[..end]);
}

/// Deterministic bytes (SplitMix64): payloads that differ per seed and do not compress.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
