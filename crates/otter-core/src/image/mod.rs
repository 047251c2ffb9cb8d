//! Firmware image parsing and validation: ESP-IDF application images for every ESP32-family chip,
//! and ESP8266 images recognised by their header.
//!
//! [`parse`] takes the whole file and either returns what it found ([`ImageInfo`]) or the first
//! thing that is wrong with it ([`ImageError`]). It never panics, whatever the bytes: every
//! length read from the file is checked against the file before it is used (the fuzz target
//! `image_parse` holds it to that).
//!
//! The layouts are described in `docs/image-formats.md`; in short, an ESP-IDF app is
//!
//! ```text
//! header (24) | {segment header (8), data}* | zero pad | checksum (1) | [SHA-256 (32)]
//!   | [0xFF to 4 KiB | Secure Boot V2 signature sector (4096)] | [0xFF fill]
//! ```
//!
//! with `esp_app_desc_t` at file offset 0x20, at the start of the first segment.

mod esp8266;
mod idf;
mod reader;
mod sigblock;
pub mod sign;
pub mod synth;

use crate::Chip;
use sha2::{Digest, Sha256};

pub use sigblock::{SignatureBlock, SignatureScheme, SIGNATURE_SECTOR_LEN};

/// The first byte of an ESP-IDF image and of an ESP8266 "version 1" image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// The first byte of an ESP8266 "version 2" image (the SDK's OTA format).
pub const ESP8266_V2_MAGIC: u8 = 0xEA;
/// The seed of the checksum byte: the XOR of all segment data starts here.
pub const CHECKSUM_SEED: u8 = 0xEF;
/// `ESP_APP_DESC_MAGIC_WORD`.
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// Where `esp_app_desc_t` sits in an ESP-IDF application image.
pub const APP_DESC_OFFSET: usize = 0x20;
/// `sizeof(esp_app_desc_t)`.
pub const APP_DESC_LEN: usize = 256;
/// `ESP_IMAGE_MAX_SEGMENTS`.
pub const MAX_SEGMENTS: usize = 16;

/// Which container the image is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// An ESP-IDF application image (`esp_image_header_t` with the extended header).
    EspIdf,
    /// An ESP8266 image loaded by the ROM (magic 0xE9, 8-byte header).
    Esp8266V1,
    /// An ESP8266 image in the SDK's "version 2" layout (magic 0xEA, then an irom0 segment and a
    /// second header).
    Esp8266V2,
}

impl ImageFormat {
    /// The image version esptool reports: 2 for the ESP8266 "version 2" layout, 1 otherwise.
    pub fn esptool_version(self) -> u8 {
        match self {
            ImageFormat::Esp8266V2 => 2,
            _ => 1,
        }
    }

    /// A short name for people and JSON: `esp-idf`, `esp8266-v1`, `esp8266-v2`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::EspIdf => "esp-idf",
            ImageFormat::Esp8266V1 => "esp8266-v1",
            ImageFormat::Esp8266V2 => "esp8266-v2",
        }
    }
}

/// One segment as the loader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where the data is loaded or mapped (0 for padding segments).
    pub load_addr: u32,
    /// Offset of the segment's data in the file.
    pub file_offset: usize,
    /// Length of the data.
    pub len: usize,
}

/// The flash settings in the image header, as raw codes (their meaning differs per chip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashSettings {
    /// SPI mode: 0 QIO, 1 QOUT, 2 DIO, 3 DOUT.
    pub mode: u8,
    /// The size code (high nibble of byte 3): 0 = 1 MB ... 7 = 128 MB on ESP32 chips.
    pub size_code: u8,
    /// The frequency code (low nibble of byte 3), chip-specific.
    pub freq_code: u8,
}

impl FlashSettings {
    /// The SPI mode's name (`qio`, `dio`, ...).
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            0 => "qio",
            1 => "qout",
            2 => "dio",
            3 => "dout",
            4 => "fast_read",
            5 => "slow_read",
            _ => "unknown",
        }
    }

    /// The flash size in bytes the header declares, for ESP32-family codes (0 = 1 MB ...).
    /// ESP8266 images use another table: see [`FlashSettings::size_bytes_for`].
    pub fn size_bytes(&self) -> Option<u64> {
        (self.size_code <= 7).then(|| (1u64 << 20) << self.size_code)
    }

    /// The flash size in bytes the header declares, read with `chip`'s table. The ESP8266 codes
    /// 5 and 6 (`2MB-c1`, `4MB-c1`) are 2 and 4 MB with another partition layout.
    pub fn size_bytes_for(&self, chip: Chip) -> Option<u64> {
        if chip != Chip::Esp8266 {
            return self.size_bytes();
        }
        const KB: u64 = 1024;
        Some(match self.size_code {
            0 => 512 * KB,
            1 => 256 * KB,
            2 => 1024 * KB,
            3 | 5 => 2048 * KB,
            4 | 6 => 4096 * KB,
            8 => 8192 * KB,
            9 => 16384 * KB,
            _ => return None,
        })
    }

    /// The flash size as esptool names it (`4MB`, `512KB`, `2MB-c1`), with `chip`'s table;
    /// `None` for a code esptool calls invalid.
    pub fn size_name(&self, chip: Chip) -> Option<&'static str> {
        if chip == Chip::Esp8266 {
            const NAMES: [Option<&str>; 10] = [
                Some("512KB"),
                Some("256KB"),
                Some("1MB"),
                Some("2MB"),
                Some("4MB"),
                Some("2MB-c1"),
                Some("4MB-c1"),
                None,
                Some("8MB"),
                Some("16MB"),
            ];
            return NAMES.get(self.size_code as usize).copied().flatten();
        }
        const NAMES: [&str; 8] = ["1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"];
        NAMES.get(self.size_code as usize).copied()
    }

    /// The SPI flash frequency as esptool names it (`40m`, `80m`, ...), with `chip`'s table;
    /// `None` for a code esptool calls invalid.
    pub fn freq_name(&self, chip: Chip) -> Option<&'static str> {
        let table: &[(u8, &'static str)] = match chip {
            Chip::Esp32C2 => &[(0xF, "60m"), (0x0, "30m"), (0x1, "20m"), (0x2, "15m")],
            // ESP32-C6: esptool maps code 0 to "80m" (a ROM workaround) and knows no code 0xF.
            Chip::Esp32C6 => &[(0x0, "80m"), (0x2, "20m")],
            Chip::Esp32C61 | Chip::Esp32C5 | Chip::Esp32S31 => {
                &[(0xF, "80m"), (0x0, "40m"), (0x2, "20m")]
            }
            Chip::Esp32H2 => &[(0xF, "48m"), (0x0, "24m"), (0x1, "16m"), (0x2, "12m")],
            Chip::Esp32H21 | Chip::Esp32H4 => &[(0xF, "48m"), (0x0, "24m")],
            _ => &[(0xF, "80m"), (0x0, "40m"), (0x1, "26m"), (0x2, "20m")],
        };
        table
            .iter()
            .find(|(code, _)| *code == self.freq_code)
            .map(|(_, name)| *name)
    }
}

/// The fields of the ESP-IDF extended header (`esp_image_header_t` bytes 8 to 23) that the
/// loader reads, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedHeader {
    /// `spi_pin_drv`'s pin for flash write protect; 0xEE means disabled.
    pub wp_pin: u8,
    /// Drive strengths of the flash pins: clk, q, d, cs0, hd, wp (4 bits each).
    pub pin_drive: [u8; 6],
    /// The legacy one-byte minimum chip revision (`min_chip_rev`).
    pub min_chip_rev: u8,
    /// `max_chip_rev_full` exactly as stored (0 or 0xFFFF when unset).
    pub max_chip_rev_full_raw: u16,
}

/// `esp_app_desc_t`: what the build system wrote about the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDesc {
    /// `secure_version`: the anti-rollback counter of ESP-IDF's bootloader.
    pub secure_version: u32,
    /// The application version (`PROJECT_VER`, `version.txt` or `git describe`).
    pub version: String,
    /// The project name.
    pub project_name: String,
    /// Build time (`__TIME__`).
    pub time: String,
    /// Build date (`__DATE__`).
    pub date: String,
    /// ESP-IDF version.
    pub idf_ver: String,
    /// SHA-256 of the ELF file the image was made from.
    pub elf_sha256: [u8; 32],
    /// Minimum eFuse block revision, major*100+minor (IDF 5.4+; 0 before).
    pub min_efuse_blk_rev_full: u16,
    /// Maximum eFuse block revision, major*100+minor (IDF 5.4+; 0 before).
    pub max_efuse_blk_rev_full: u16,
    /// The MMU page size the app was built for, in bytes (IDF 5.4+; `None` before).
    pub mmu_page_size: Option<u32>,
}

/// What [`parse`] found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The container format.
    pub format: ImageFormat,
    /// The target chip: from the header's `chip_id`, or [`Chip::Esp8266`].
    pub chip: Chip,
    /// The entry point address.
    pub entry_addr: u32,
    /// Flash settings from the header.
    pub flash: FlashSettings,
    /// Minimum chip revision, major*100+minor (ESP-IDF only; 0 otherwise).
    pub min_chip_rev_full: u16,
    /// Maximum chip revision, major*100+minor; `None` when unset (0 or 0xFFFF).
    pub max_chip_rev_full: Option<u16>,
    /// The ESP-IDF extended header (`None` for ESP8266 images).
    pub extended: Option<ExtendedHeader>,
    /// The segments, in file order, as esptool lists them: for an ESP8266 v2 image the first is
    /// the irom0 segment (load address 0, not covered by the checksum).
    pub segments: Vec<Segment>,
    /// The stored checksum byte (it has been verified).
    pub checksum: u8,
    /// The appended SHA-256 ("validation hash"), if the header says there is one (verified).
    pub validation_hash: Option<[u8; 32]>,
    /// The image proper: header to checksum, plus the validation hash if any.
    pub image_len: usize,
    /// The application descriptor (ESP-IDF images).
    pub app: Option<AppDesc>,
    /// Secure Boot signature blocks found after the image.
    pub signatures: Vec<SignatureBlock>,
    /// Bytes after everything understood above: 0xFF fill for ESP-IDF images; for ESP8266 images
    /// whatever follows the ROM-loaded part (typically the irom0 flash segment).
    pub trailing_len: usize,
    /// The whole file's length.
    pub file_len: usize,
    /// SHA-256 of the whole file: what a manifest signs.
    pub sha256: [u8; 32],
}

/// Why an image was refused. Every variant names the place in the file so that a person can
/// look at it with a hex viewer or `esptool image-info`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// The first byte is not an image magic.
    #[error("not an ESP firmware image: the first byte is {0:#04x}, expected 0xe9 (or 0xea for an ESP8266 v2 image)")]
    BadMagic(u8),
    /// The file ends inside a structure.
    #[error("truncated image: the {what} at offset {offset:#x} needs {needed} bytes, but the file ends at {file_len:#x}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// How many bytes it needs.
        needed: usize,
        /// The file's length.
        file_len: usize,
    },
    /// `chip_id` names no chip Otter knows.
    #[error("unknown chip id {0} (0x{0:04x}) in the image header; Otter knows: {known}", known = known_chip_ids())]
    UnknownChip(u16),
    /// `hash_appended` is neither 0 nor 1.
    #[error("the header's hash_appended byte is {0}, but only 0 or 1 are valid")]
    BadHashFlag(u8),
    /// No segments, or more than the loader accepts.
    #[error("the header declares {0} segments; an image has 1 to {MAX_SEGMENTS}")]
    SegmentCount(u8),
    /// A segment's length is not a multiple of 4.
    #[error(
        "segment {index} at offset {offset:#x} has length {len}, which is not a multiple of 4"
    )]
    UnalignedSegment {
        /// Segment index.
        index: usize,
        /// File offset of its header.
        offset: usize,
        /// Its declared length.
        len: u32,
    },
    /// A flash-mapped segment is at a file offset the MMU cannot map to its address.
    #[error("segment {index} maps to {load_addr:#010x} but its data is at file offset {offset:#x}; the two must agree modulo the {page}-byte MMU page")]
    MisalignedFlashSegment {
        /// Segment index.
        index: usize,
        /// Its load address.
        load_addr: u32,
        /// File offset of its data.
        offset: usize,
        /// The MMU page size.
        page: u32,
    },
    /// The checksum byte does not match the segment data.
    #[error("checksum mismatch at offset {offset:#x}: the image stores {stored:#04x}, the segments give {computed:#04x} (the image is corrupt)")]
    Checksum {
        /// Offset of the checksum byte.
        offset: usize,
        /// Stored value.
        stored: u8,
        /// Computed value.
        computed: u8,
    },
    /// The appended SHA-256 does not match.
    #[error("validation hash mismatch at offset {offset:#x}: the image stores {stored}, its bytes hash to {computed} (the image is corrupt)")]
    ValidationHash {
        /// Offset of the stored hash.
        offset: usize,
        /// Stored hash, hex.
        stored: String,
        /// Computed hash, hex.
        computed: String,
    },
    /// An ESP-IDF image without `esp_app_desc_t`: a bootloader, or not an app at all.
    #[error("no esp_app_desc_t at offset 0x20 (found {found:#010x}, expected 0xabcd5432): {hint}")]
    NotAnApp {
        /// The word found where the magic should be.
        found: u32,
        /// What it probably is.
        hint: &'static str,
    },
    /// A text field of `esp_app_desc_t` is not NUL-terminated UTF-8.
    #[error("esp_app_desc_t field {field} (offset {offset:#x}) is not NUL-terminated UTF-8 text")]
    AppDescText {
        /// The field.
        field: &'static str,
        /// Its file offset.
        offset: usize,
    },
    /// Bytes after the image that are neither fill nor a signature sector.
    #[error("{len} unexpected bytes after the image at offset {offset:#x}: neither 0xff fill nor a Secure Boot signature sector (was something appended to the image?)")]
    TrailingData {
        /// Where they start.
        offset: usize,
        /// How many.
        len: usize,
    },
    /// A signature block that is present (magic 0xE7) but corrupt or inconsistent.
    #[error("signature block {index} at offset {offset:#x}: {why}")]
    SignatureBlock {
        /// Block index in the sector (0..3).
        index: usize,
        /// File offset of the block.
        offset: usize,
        /// What is wrong.
        why: String,
    },
}

fn known_chip_ids() -> String {
    Chip::all()
        .filter(|c| *c != Chip::Esp8266)
        .map(|c| format!("{} ({})", c.id(), c.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and validates a whole firmware file.
///
/// ESP-IDF images are told apart from ESP8266 "version 1" images (both start with 0xE9) the way
/// esptool does: the ESP-IDF extended header has `wp_pin` 0xEE, a known `chip_id` and a
/// `hash_appended` byte of 0 or 1; an 0xE9 image without that is read as ESP8266.
pub fn parse(file: &[u8]) -> Result<ImageInfo, ImageError> {
    let Some(&magic) = file.first() else {
        return Err(ImageError::Empty);
    };
    match magic {
        ESP8266_V2_MAGIC => esp8266::parse(file, ImageFormat::Esp8266V2),
        IMAGE_MAGIC if idf::looks_like_idf(file) => idf::parse(file),
        IMAGE_MAGIC => esp8266::parse(file, ImageFormat::Esp8266V1),
        other => Err(ImageError::BadMagic(other)),
    }
}

/// The checksum byte over the given segment data slices.
pub(crate) fn checksum<'a>(data: impl IntoIterator<Item = &'a [u8]>) -> u8 {
    data.into_iter()
        .flat_map(|d| d.iter())
        .fold(CHECKSUM_SEED, |acc, b| acc ^ b)
}

/// Where the checksum byte goes after segment data ending at `end`: the last byte of a 16-byte
/// block.
pub(crate) fn checksum_offset(end: usize) -> usize {
    ((end + 1 + 15) & !15) - 1
}

/// Checks the checksum byte that follows the segments (whose data ends at `data_end`); returns
/// it and the offset just past it.
fn verify_checksum(
    file: &[u8],
    segments: &[Segment],
    data_end: usize,
) -> Result<(u8, usize), ImageError> {
    let at = checksum_offset(data_end);
    let stored = reader::slice(file, at, 1, "checksum byte")?[0];
    let computed = checksum(
        segments
            .iter()
            .map(|s| &file[s.file_offset..s.file_offset + s.len]),
    );
    if stored != computed {
        return Err(ImageError::Checksum {
            offset: at,
            stored,
            computed,
        });
    }
    Ok((stored, at + 1))
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests;
