//! `otter release attach`: stores the client-format bytes of a published release (issue 13),
//! the output of `otter sign --esp8266-signed` or `--esp32-arduino-signed`, which the server
//! then serves to stock Arduino update clients instead of the plain image.

use std::path::Path;

use crate::client::Api;
use crate::error::{CliError, CliResult};
use crate::output::{text, Output};

/// The kinds `--kind` takes.
pub const KINDS: [&str; 2] = ["esp8266-signed", "esp32-arduino-signed"];

/// Uploads `file` as the release's payload of `kind`; the server checks it against the release.
pub fn attach(api: &Api, id: &str, kind: &str, file: &Path, o: Output) -> CliResult<()> {
    let bytes = std::fs::read(file).map_err(|e| CliError::io(file, "read", e))?;
    let r = api.post_bytes(
        &format!("/api/v1/releases/{id}/payloads?kind={kind}"),
        &bytes,
    )?;
    o.emit(&r, || {
        format!(
            "attached {} ({} bytes, MD5 {}) to release {id}: stock clients of that format get these bytes",
            text(&r, "kind"),
            text(&r, "size"),
            text(&r, "md5"),
        )
    });
    Ok(())
}
