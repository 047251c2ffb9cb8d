//! # otter-core: the rules and formats of Otter, with no I/O
//!
//! Brief overview of the main types:
//! - [`Chip`]: the target chips and their ids.
//! - [`image`]: ESP-IDF and ESP8266 application image parsing and validation.
//! - [`manifest::Manifest`]: the facts a device checks before it trusts a release, in one
//!   canonical byte encoding (docs/manifest.md).
//! - [`manifest::Envelope`]: a manifest plus signatures; [`manifest::Bundle`]: an envelope plus
//!   the image (the `release.otter` file).
//! - [`keys`]: ECDSA P-256 release keys: generation, PEM files, key ids, signing, verification.
//! - [`version::Version`]: the order in which releases are newer than each other.
//! - [`fleet`]: the facts of a device and the filters that pick devices.
//! - [`publish`]: what a release must meet to be published (installable, counter, clock).
//! - [`rollout`]: staged rollouts: stage membership, thresholds, maintenance windows.
//!
//! Nothing here touches the network or the file system; callers pass bytes in and get values
//! and precise errors back.
#![deny(missing_docs)]

pub mod chip;
pub mod fleet;
pub mod image;
pub mod keys;
pub mod manifest;
pub mod publish;
pub mod rollout;
pub mod version;

pub use chip::Chip;
