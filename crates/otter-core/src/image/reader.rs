//! Bounds-checked reads at absolute offsets, each naming what it reads for the error.

use super::{ImageError, Segment};

/// Returns `file[offset..offset + len]`, or a [`ImageError::Truncated`] naming `what`.
pub(super) fn slice<'a>(
    file: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ImageError> {
    offset
        .checked_add(len)
        .and_then(|end| file.get(offset..end))
        .ok_or(ImageError::Truncated {
            what,
            offset,
            needed: len,
            file_len: file.len(),
        })
}

/// Reads a little-endian u32.
pub(super) fn u32_le(file: &[u8], offset: usize, what: &'static str) -> Result<u32, ImageError> {
    let b = slice(file, offset, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a little-endian u16 from a slice already known to be long enough.
pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads a little-endian u32 from a slice already known to be long enough.
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A segment header `{u32 load_addr; u32 data_len;}` at `offset`.
pub(super) fn segment_header(
    file: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<(u32, u32), ImageError> {
    let b = slice(file, offset, 8, what)?;
    Ok((u32_at(b, 0), u32_at(b, 4)))
}

/// The segment whose 8-byte header at `header_at` said `load_addr` and `len`: its data must lie
/// within the file. The next segment header follows at `file_offset + len`.
pub(super) fn segment_data(
    file: &[u8],
    header_at: usize,
    load_addr: u32,
    len: u32,
) -> Result<Segment, ImageError> {
    let data_at = header_at + 8;
    slice(file, data_at, len as usize, "segment data")?;
    Ok(Segment {
        load_addr,
        file_offset: data_at,
        len: len as usize,
    })
}
