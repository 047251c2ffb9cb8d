//! The bodies of the fuzz targets, shared by the libFuzzer binaries and the stable replay test.
//! Each must never panic, whatever the input, and must keep the invariants it asserts.

use otter_core::image;
use otter_core::manifest::{Bundle, BundleHead, Envelope, Manifest};

/// The firmware image parser: anything it accepts must be self-consistent.
pub fn image_parse(data: &[u8]) {
    if let Ok(info) = image::parse(data) {
        assert_eq!(info.file_len, data.len());
        assert!(info.image_len + info.trailing_len <= data.len());
        for s in &info.segments {
            assert!(s.file_offset + s.len <= data.len());
        }
    }
}

/// The signed-format decoders: anything they accept must re-encode to the same bytes.
pub fn manifest_decode(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode().expect("a decoded manifest encodes"), data);
    }
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data);
    }
    if let Ok(head) = BundleHead::decode(data) {
        assert!(head.head_len <= data.len());
    }
    let _ = Bundle::decode(data);
}
