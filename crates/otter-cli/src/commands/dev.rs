//! `otter dev ...`: tools for developing and testing Otter itself.

use std::path::Path;

use otter_core::image::synth::{self, SynthApp};
use otter_core::Chip;
use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::Output;

/// Writes a format-valid (not runnable) application image: for trying Otter without a build of
/// one's own, for tests and for benchmarks.
pub fn synth_image(
    chip: &str,
    version: &str,
    size: Option<usize>,
    secure_version: u32,
    seed: u64,
    out: &Path,
    o: Output,
) -> CliResult<()> {
    let chip: Chip = chip.parse().map_err(|e| CliError::usage(format!("{e}")))?;
    if version.is_empty() || version.len() > 31 {
        return Err(CliError::usage(
            "--version must be 1 to 31 bytes (the size of esp_app_desc_t.version)",
        ));
    }
    let overhead = synth::overhead(chip);
    let payload_len = match size {
        Some(s) if s < overhead => {
            return Err(CliError::usage(format!(
                "--size {s} is below the smallest image for {chip} ({overhead} bytes)"
            )))
        }
        Some(s) => s - overhead,
        None => 64 * 1024,
    };
    let bytes = synth::build(&SynthApp {
        chip,
        version: version.into(),
        secure_version,
        payload_len,
        seed,
        ..SynthApp::default()
    });
    std::fs::write(out, &bytes).map_err(|e| CliError::io(out, "write", e))?;
    o.emit(
        &json!({"path": out, "chip": chip.name(), "version": version, "size": bytes.len()}),
        || {
            format!(
                "wrote {} ({} bytes, {chip} {version}; format-valid, not runnable)",
                out.display(),
                bytes.len()
            )
        },
    );
    Ok(())
}
