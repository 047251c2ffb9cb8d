//! ESP-IDF application images: `esp_image_header_t`, segments, checksum, validation hash,
//! `esp_app_desc_t`, and whatever follows (fill, signature sector).

use super::reader::{segment_data, segment_header, slice, u16_at, u32_at, u32_le};
use super::{
    sha256, sigblock, verify_checksum, AppDesc, ExtendedHeader, FlashSettings, ImageError,
    ImageFormat, ImageInfo, Segment, APP_DESC_LEN, APP_DESC_MAGIC, APP_DESC_OFFSET, MAX_SEGMENTS,
};
use crate::Chip;

const HEADER_LEN: usize = 24;
/// `wp_pin` value meaning "disabled": what every ESP-IDF build writes.
const WP_PIN_DISABLED: u8 = 0xEE;
const DEFAULT_MMU_PAGE: u32 = 0x1_0000;
/// `esp_bootloader_desc_t` starts with this byte.
const BOOTLOADER_DESC_MAGIC: u8 = 0x50;

/// Whether an 0xE9 image has the ESP-IDF extended header rather than being an ESP8266 image.
///
/// Byte 8 is `wp_pin` in ESP-IDF images (always 0xEE) and the low byte of the first segment's
/// load address in ESP8266 images, which is 4-byte aligned and so never 0xEE. An image whose
/// byte 8 is not 4-aligned but has a valid `hash_appended` byte is read as ESP-IDF too, so that
/// a damaged ESP-IDF header gets an ESP-IDF error rather than an ESP8266 one.
pub(super) fn looks_like_idf(file: &[u8]) -> bool {
    match (file.get(8), file.get(23)) {
        (Some(&WP_PIN_DISABLED), _) => true,
        (Some(&wp), Some(&hash_flag)) => wp % 4 != 0 && hash_flag <= 1,
        _ => false,
    }
}

pub(super) fn parse(file: &[u8]) -> Result<ImageInfo, ImageError> {
    let header = slice(file, 0, HEADER_LEN, "image header")?;
    let chip_id = u16_at(header, 12);
    let chip = Chip::from_id(chip_id)
        .filter(|c| *c != Chip::Esp8266)
        .ok_or(ImageError::UnknownChip(chip_id))?;
    let hash_flag = header[23];
    if hash_flag > 1 {
        return Err(ImageError::BadHashFlag(hash_flag));
    }
    let count = header[1];
    if count == 0 || count as usize > MAX_SEGMENTS {
        return Err(ImageError::SegmentCount(count));
    }

    let segments = read_segments(file, count as usize)?;
    let app = read_app_desc(file, &segments)?;
    let page = app
        .as_ref()
        .and_then(|a| a.mmu_page_size)
        .unwrap_or(DEFAULT_MMU_PAGE);
    check_flash_mapping(chip, &segments, page)?;

    let data_end = segments
        .last()
        .map_or(HEADER_LEN, |s| s.file_offset + s.len);
    let (stored, mut image_len) = verify_checksum(file, &segments, data_end)?;
    let validation_hash = if hash_flag == 1 {
        let stored = slice(file, image_len, 32, "validation hash (SHA-256)")?;
        let computed = sha256(&file[..image_len]);
        if stored != computed {
            return Err(ImageError::ValidationHash {
                offset: image_len,
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            });
        }
        image_len += 32;
        Some(computed)
    } else {
        None
    };

    let (signatures, trailing_len) = read_after_image(file, image_len)?;
    Ok(ImageInfo {
        format: ImageFormat::EspIdf,
        chip,
        entry_addr: u32_at(header, 4),
        flash: FlashSettings {
            mode: header[2],
            size_code: header[3] >> 4,
            freq_code: header[3] & 0x0F,
        },
        extended: Some(ExtendedHeader {
            wp_pin: header[8],
            pin_drive: [
                header[9] & 0x0F,
                header[9] >> 4,
                header[10] & 0x0F,
                header[10] >> 4,
                header[11] & 0x0F,
                header[11] >> 4,
            ],
            min_chip_rev: header[14],
            max_chip_rev_full_raw: u16_at(header, 17),
        }),
        min_chip_rev_full: u16_at(header, 15),
        max_chip_rev_full: match u16_at(header, 17) {
            0 | 0xFFFF => None,
            v => Some(v),
        },
        segments,
        checksum: stored,
        validation_hash,
        image_len,
        app,
        signatures,
        trailing_len,
        file_len: file.len(),
        sha256: sha256(file),
    })
}

fn read_segments(file: &[u8], count: usize) -> Result<Vec<Segment>, ImageError> {
    let mut segments = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for index in 0..count {
        let (load_addr, len) = segment_header(file, at, "segment header")?;
        if len % 4 != 0 {
            return Err(ImageError::UnalignedSegment {
                index,
                offset: at,
                len,
            });
        }
        let segment = segment_data(file, at, load_addr, len)?;
        at = segment.file_offset + segment.len;
        segments.push(segment);
    }
    Ok(segments)
}

fn read_app_desc(file: &[u8], segments: &[Segment]) -> Result<Option<AppDesc>, ImageError> {
    let magic = u32_le(file, APP_DESC_OFFSET, "esp_app_desc_t")?;
    if magic != APP_DESC_MAGIC {
        let hint = if file.get(APP_DESC_OFFSET) == Some(&BOOTLOADER_DESC_MAGIC) {
            "this looks like a bootloader image; OTA updates carry the application image (build/<project>.bin)"
        } else {
            "this is not an ESP-IDF application image, or it was built with an ESP-IDF older than v3.1"
        };
        return Err(ImageError::NotAnApp { found: magic, hint });
    }
    // The descriptor must lie inside the first segment, as the build system puts it there.
    let first = segments[0];
    if first.file_offset != APP_DESC_OFFSET || first.len < APP_DESC_LEN {
        return Err(ImageError::Truncated {
            what: "esp_app_desc_t in the first segment",
            offset: APP_DESC_OFFSET,
            needed: APP_DESC_LEN,
            file_len: first.file_offset + first.len,
        });
    }
    let d = &file[APP_DESC_OFFSET..APP_DESC_OFFSET + APP_DESC_LEN];
    let text = |field: &'static str, at: usize, len: usize| -> Result<String, ImageError> {
        let raw = &d[at..at + len];
        let bad = ImageError::AppDescText {
            field,
            offset: APP_DESC_OFFSET + at,
        };
        let end = raw.iter().position(|b| *b == 0).ok_or(bad.clone())?;
        std::str::from_utf8(&raw[..end])
            .map(str::to_owned)
            .map_err(|_| bad)
    };
    let mut elf_sha256 = [0u8; 32];
    elf_sha256.copy_from_slice(&d[144..176]);
    Ok(Some(AppDesc {
        secure_version: u32_at(d, 4),
        version: text("version", 16, 32)?,
        project_name: text("project_name", 48, 32)?,
        time: text("time", 80, 16)?,
        date: text("date", 96, 16)?,
        idf_ver: text("idf_ver", 112, 32)?,
        elf_sha256,
        min_efuse_blk_rev_full: u16_at(d, 176),
        max_efuse_blk_rev_full: u16_at(d, 178),
        mmu_page_size: match d[180] {
            // log2 of the page size; ESP chips use 8 KiB to 256 KiB pages.
            log2 @ 13..=18 => Some(1u32 << log2),
            _ => None,
        },
    }))
}

/// The flash-mapped address windows (IROM, DROM) per chip, from the chips' memory maps.
fn flash_windows(chip: Chip) -> &'static [(u32, u32)] {
    match chip {
        Chip::Esp32 => &[(0x400D_0000, 0x4040_0000), (0x3F40_0000, 0x3F80_0000)],
        Chip::Esp32S2 => &[(0x4008_0000, 0x40B8_0000), (0x3F00_0000, 0x3F3F_0000)],
        Chip::Esp32C3 => &[(0x4200_0000, 0x4280_0000), (0x3C00_0000, 0x3C80_0000)],
        Chip::Esp32S3 => &[(0x4200_0000, 0x4400_0000), (0x3C00_0000, 0x3E00_0000)],
        Chip::Esp32C2 => &[(0x4200_0000, 0x4240_0000), (0x3C00_0000, 0x3C40_0000)],
        Chip::Esp32C6 | Chip::Esp32H2 | Chip::Esp32C61 | Chip::Esp32H21 => {
            &[(0x4200_0000, 0x4300_0000)]
        }
        Chip::Esp32C5 | Chip::Esp32H4 => &[(0x4200_0000, 0x4400_0000)],
        Chip::Esp32P4 => &[(0x4000_0000, 0x4C00_0000)],
        // No verified memory map here yet: skip the check rather than refuse good images.
        _ => &[],
    }
}

/// A flash-mapped segment must sit at a file offset congruent to its address modulo the MMU page,
/// or the bootloader maps the wrong bytes.
fn check_flash_mapping(chip: Chip, segments: &[Segment], page: u32) -> Result<(), ImageError> {
    let windows = flash_windows(chip);
    for (index, s) in segments.iter().enumerate() {
        let mapped = windows
            .iter()
            .any(|(lo, hi)| (*lo..*hi).contains(&s.load_addr));
        if mapped && (s.file_offset as u64 % page as u64) != (s.load_addr % page) as u64 {
            return Err(ImageError::MisalignedFlashSegment {
                index,
                load_addr: s.load_addr,
                offset: s.file_offset,
                page,
            });
        }
    }
    Ok(())
}

/// After the image: nothing, 0xFF fill, a V1 signature, or 0xFF up to 4 KiB and a Secure Boot V2
/// signature sector (then 0xFF fill).
fn read_after_image(
    file: &[u8],
    image_len: usize,
) -> Result<(Vec<sigblock::SignatureBlock>, usize), ImageError> {
    let rest = &file[image_len..];
    if rest.iter().all(|b| *b == 0xFF) {
        return Ok((Vec::new(), rest.len()));
    }
    if let Some(v1) = sigblock::v1_signature(rest, image_len) {
        return Ok((vec![v1], 0));
    }
    let sector_at = image_len.next_multiple_of(4096);
    let fill_ok = file
        .get(image_len..sector_at)
        .is_some_and(|fill| fill.iter().all(|b| *b == 0xFF));
    if !fill_ok || file.len() < sector_at + sigblock::SIGNATURE_SECTOR_LEN {
        return Err(ImageError::TrailingData {
            offset: image_len,
            len: rest.len(),
        });
    }
    let blocks = sigblock::parse_v2_sector(file, sector_at)?;
    let after = sector_at + sigblock::SIGNATURE_SECTOR_LEN;
    if let Some(pos) = file[after..].iter().position(|b| *b != 0xFF) {
        return Err(ImageError::TrailingData {
            offset: after + pos,
            len: file.len() - after - pos,
        });
    }
    Ok((blocks, file.len() - after))
}
