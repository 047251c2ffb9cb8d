//! File modes of the data directory (issue 8, item 15): the directory is created `0700`, the
//! files in it `0600` (the process runs with umask `077`), and a start on a directory or files
//! that other users can read logs a warning saying how to fix it.

use std::path::{Path, PathBuf};

/// Files looked at below `blobs/` at most (a start should not stat a whole large store).
const MAX_BLOBS_CHECKED: usize = 1000;

/// Makes every file and directory this process creates private to its user.
pub fn private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data directory (and missing parents) with mode `0700`.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Creates an empty file with mode `0600` if it does not exist (so that SQLite, which gives its
/// WAL and shared-memory files the database file's mode, keeps them all private).
pub fn touch_private(file: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(file).map(|_| ())
}

/// Entries that other users may read or enter: `(path, mode)`.
pub fn loose_entries(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut check = |p: PathBuf| {
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    out.push((p, mode));
                }
            }
        };
        check(data_dir.to_path_buf());
        for name in [
            "otter.db",
            "otter.db-wal",
            "otter.db-shm",
            "initial-admin-token",
            "blobs",
        ] {
            check(data_dir.join(name));
        }
        let mut seen = 0;
        for sub in ["images", "staging"] {
            let dir = data_dir.join("blobs").join(sub);
            check(dir.clone());
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if seen >= MAX_BLOBS_CHECKED {
                    break;
                }
                seen += 1;
                check(entry.path());
            }
        }
    }
    out
}

/// Logs one warning when the data directory or its files are readable by other users.
pub fn warn_if_loose(data_dir: &Path) {
    let loose = loose_entries(data_dir);
    if loose.is_empty() {
        return;
    }
    let list: Vec<String> = loose
        .iter()
        .take(5)
        .map(|(p, m)| format!("{} ({m:04o})", p.display()))
        .collect();
    tracing::warn!(
        count = loose.len(),
        entries = ?list,
        fix = %format!("chmod -R go-rwx {}", data_dir.display()),
        "the data directory or files in it are readable by other users (they hold the database and token hashes); the directory should be 0700 and its files 0600"
    );
}
