//! ESP8266 images: the ROM-loaded "version 1" layout (magic 0xE9, 8-byte header) and the SDK's
//! "version 2" layout (magic 0xEA header, the irom0 segment, then a version 1 header).
//!
//! Only the part the loader reads is validated (header, segments, checksum). The segments are
//! listed as esptool lists them: a v2 image's irom0 segment first (load address 0). Whatever follows it
//! (an Arduino sketch's flash-mapped code, a MicroPython image's irom0 part, the v2 CRC) is
//! counted in `trailing_len`: its integrity is what the manifest's SHA-256 covers.

use super::reader::{segment_data, segment_header, slice, u32_at};
use super::{
    sha256, verify_checksum, FlashSettings, ImageError, ImageFormat, ImageInfo, Segment,
    IMAGE_MAGIC, MAX_SEGMENTS,
};
use crate::Chip;

const HEADER_LEN: usize = 8;

pub(super) fn parse(file: &[u8], format: ImageFormat) -> Result<ImageInfo, ImageError> {
    let mut at = 0;
    // esptool lists the v2 irom0 segment first, at load address 0; the checksum leaves it out.
    let mut irom = None;
    if format == ImageFormat::Esp8266V2 {
        slice(file, 0, HEADER_LEN, "ESP8266 v2 header")?;
        let (_, irom_len) = segment_header(file, HEADER_LEN, "irom0 segment header")?;
        at = HEADER_LEN + 8;
        slice(file, at, irom_len as usize, "irom0 segment data")?;
        irom = Some(Segment {
            load_addr: 0,
            file_offset: at,
            len: irom_len as usize,
        });
        at += irom_len as usize;
        let second = slice(file, at, 1, "second (v1) header")?[0];
        if second != IMAGE_MAGIC {
            return Err(ImageError::BadMagic(second));
        }
    }

    let header = slice(file, at, HEADER_LEN, "ESP8266 image header")?;
    let count = header[1];
    if count == 0 || count as usize > MAX_SEGMENTS {
        return Err(ImageError::SegmentCount(count));
    }
    let flash = FlashSettings {
        mode: header[2],
        size_code: header[3] >> 4,
        freq_code: header[3] & 0x0F,
    };
    let entry_addr = u32_at(header, 4);

    let mut segments = Vec::with_capacity(count as usize);
    at += HEADER_LEN;
    for _ in 0..count {
        let (load_addr, len) = segment_header(file, at, "segment header")?;
        let segment = segment_data(file, at, load_addr, len)?;
        at = segment.file_offset + segment.len;
        segments.push(segment);
    }

    let (stored, image_len) = verify_checksum(file, &segments, at)?;
    if let Some(irom) = irom {
        segments.insert(0, irom);
    }
    Ok(ImageInfo {
        format,
        chip: Chip::Esp8266,
        entry_addr,
        flash,
        extended: None,
        min_chip_rev_full: 0,
        max_chip_rev_full: None,
        segments,
        checksum: stored,
        validation_hash: None,
        image_len,
        app: None,
        signatures: Vec::new(),
        trailing_len: file.len() - image_len,
        file_len: file.len(),
        sha256: sha256(file),
    })
}
