//! The CLI's errors and the exit codes they map to. The codes are part of the interface that CI
//! scripts rely on (docs/cli.md); do not renumber them.

use std::fmt;

/// Exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Verification failed, or the server refused the request as invalid (4xx other than auth).
    Refused = 1,
    /// Bad command line or bad local input: unreadable file, malformed key or image.
    Usage = 2,
    /// The server could not be reached, is overloaded, or failed (5xx).
    Server = 3,
    /// The credential is missing, invalid or not allowed to do this (401/403).
    Auth = 4,
}

/// An error to show to a person (or as JSON to a script), with what to do about it.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// A stable short code: the server's `error` code, or one of the CLI's own.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, code: &str, message: impl Into<String>) -> Self {
        CliError {
            exit,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Bad local input or arguments.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, "usage", message)
    }

    /// A check that failed (verification, a refusal).
    pub fn refused(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::Refused, code, message)
    }

    /// A file that could not be read or written.
    pub fn io(path: &std::path::Path, action: &str, err: std::io::Error) -> Self {
        Self::usage(format!("cannot {action} {}: {err}", path.display()))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T> = Result<T, CliError>;
