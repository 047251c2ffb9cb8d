//! Target chips and their identifiers.
//!
//! ESP-IDF images carry an `esp_chip_id_t` (u16) in their header; the manifest uses the same
//! value so a device can compare it with its own without a lookup table. The ESP8266 has no
//! `esp_chip_id_t`; Otter gives it `0x8266`.

use std::fmt;
use std::str::FromStr;

/// A chip that Otter can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Chip {
    /// ESP32 (Xtensa LX6).
    Esp32,
    /// ESP32-S2.
    Esp32S2,
    /// ESP32-C3 (RISC-V).
    Esp32C3,
    /// ESP32-S3.
    Esp32S3,
    /// ESP32-C2.
    Esp32C2,
    /// ESP32-C6.
    Esp32C6,
    /// ESP32-H2.
    Esp32H2,
    /// ESP32-P4.
    Esp32P4,
    /// ESP32-C61.
    Esp32C61,
    /// ESP32-C5.
    Esp32C5,
    /// ESP32-H21.
    Esp32H21,
    /// ESP32-H4.
    Esp32H4,
    /// ESP32-E22 (esptool only so far).
    Esp32E22,
    /// ESP32-S31.
    Esp32S31,
    /// ESP8266 (its own image format; Otter's id 0x8266).
    Esp8266,
}

/// Every chip, with its numeric id and its lowercase name, in one table so the two mappings
/// cannot drift apart.
const TABLE: &[(Chip, u16, &str)] = &[
    (Chip::Esp32, 0, "esp32"),
    (Chip::Esp32S2, 2, "esp32s2"),
    (Chip::Esp32C3, 5, "esp32c3"),
    (Chip::Esp32S3, 9, "esp32s3"),
    (Chip::Esp32C2, 12, "esp32c2"),
    (Chip::Esp32C6, 13, "esp32c6"),
    (Chip::Esp32H2, 16, "esp32h2"),
    (Chip::Esp32P4, 18, "esp32p4"),
    (Chip::Esp32C61, 20, "esp32c61"),
    (Chip::Esp32C5, 23, "esp32c5"),
    (Chip::Esp32H21, 25, "esp32h21"),
    (Chip::Esp32H4, 28, "esp32h4"),
    (Chip::Esp32E22, 31, "esp32e22"),
    (Chip::Esp32S31, 32, "esp32s31"),
    (Chip::Esp8266, 0x8266, "esp8266"),
];

impl Chip {
    /// All chips Otter knows.
    pub fn all() -> impl Iterator<Item = Chip> {
        TABLE.iter().map(|(c, _, _)| *c)
    }

    /// The numeric id: ESP-IDF's `esp_chip_id_t`, or 0x8266 for the ESP8266.
    pub fn id(self) -> u16 {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map(|e| e.1)
            .unwrap_or(u16::MAX)
    }

    /// The chip with this numeric id, if Otter knows it.
    pub fn from_id(id: u16) -> Option<Chip> {
        TABLE.iter().find(|(_, i, _)| *i == id).map(|e| e.0)
    }

    /// The lowercase name used on the command line, in JSON and by esptool (`esp32c3`).
    pub fn name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map(|e| e.2)
            .unwrap_or("unknown")
    }

    /// The name as Espressif writes it in documents (`ESP32-C3`).
    pub fn display_name(self) -> String {
        let n = self.name().to_ascii_uppercase();
        match n.strip_prefix("ESP32") {
            Some(rest) if !rest.is_empty() => format!("ESP32-{rest}"),
            _ => n,
        }
    }
}

impl fmt::Display for Chip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a chip name Otter does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chip {given:?}; expected one of: {}", Chip::all().map(|c| c.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownChip {
    /// What was given.
    pub given: String,
}

impl FromStr for Chip {
    type Err = UnknownChip;

    /// Accepts `esp32c3`, `ESP32-C3` and `esp32_c3` alike.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        TABLE
            .iter()
            .find(|(_, _, n)| *n == norm)
            .map(|e| e.0)
            .ok_or_else(|| UnknownChip {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for chip in Chip::all() {
            assert_eq!(Chip::from_id(chip.id()), Some(chip));
            assert_eq!(chip.name().parse::<Chip>().unwrap(), chip);
            assert_eq!(chip.display_name().parse::<Chip>().unwrap(), chip);
        }
        assert_eq!(Chip::Esp32C3.display_name(), "ESP32-C3");
        assert_eq!(Chip::Esp32.display_name(), "ESP32");
        assert_eq!(Chip::from_id(1), None);
        assert!("esp31"
            .parse::<Chip>()
            .unwrap_err()
            .to_string()
            .contains("esp32c3"));
    }
}
