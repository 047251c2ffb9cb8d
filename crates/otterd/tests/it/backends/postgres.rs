//! One PostgreSQL server for the whole test process, from Debian's server binaries.
//!
//! Started on first use: `initdb` and `pg_ctl` (found by glob under `/usr/lib/postgresql/*/bin`)
//! in a temporary directory, listening on a free loopback port with password authentication.
//! When the tests run as root, the server runs as the unprivileged user `OTTER_TEST_PG_USER`
//! (default `otter-test`, created by `scripts/setup.sh`), which owns the directory. A watcher
//! process stops the server and removes the directory when the test process exits, however
//! it exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The running server.
struct Server {
    bin: PathBuf,
    port: u16,
    password: String,
    socket_dir: PathBuf,
    user: Option<String>,
    /// Databases created so far, by data directory.
    databases: Mutex<HashMap<PathBuf, String>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The URL of the database for `data_dir`, creating it on first use.
pub fn database_for(data_dir: &Path) -> String {
    let server = SERVER.get_or_init(start);
    let mut dbs = server.databases.lock().unwrap();
    let n = dbs.len();
    let name = dbs
        .entry(data_dir.to_path_buf())
        .or_insert_with(|| {
            let name = format!("otter_t{n}");
            server.psql(&format!("CREATE DATABASE {name}"));
            name
        })
        .clone();
    server.url(&name)
}

/// A fresh, empty database that no data directory owns (for tests that start several servers
/// on one database).
pub fn fresh_database() -> String {
    database_for(&std::env::temp_dir().join(format!("otter-shared-{}", rand_suffix())))
}

impl Server {
    fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Runs SQL as the superuser over the server's Unix socket; panics on failure.
    fn psql(&self, sql: &str) {
        let out = self
            .command(&self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `program`, as the unprivileged user when there is one.
    fn command(&self, program: &Path) -> Command {
        as_user(self.user.as_deref(), program)
    }
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn server_binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("OTTER_TEST_DATABASE=postgres needs PostgreSQL's server binaries under /usr/lib/postgresql/*/bin: run scripts/setup.sh (Debian package `postgresql`)")
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start() -> Server {
    let bin = server_binaries();
    let is_root = rustix::process::geteuid().is_root();
    let user = is_root.then(|| {
        let u = std::env::var("OTTER_TEST_PG_USER").unwrap_or_else(|_| "otter-test".into());
        let known = Command::new("id")
            .arg(&u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            known,
            "the tests run as root, and PostgreSQL refuses to: create the unprivileged user {u:?} with scripts/setup.sh (or name another with OTTER_TEST_PG_USER)"
        );
        u
    });
    // Kept (not a TempDir): the watcher removes it after the server stopped.
    let dir = tempfile::Builder::new()
        .prefix("otter-pg-")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let password = format!("pw{}", rand_suffix().replace('-', ""));
    std::fs::write(dir.join("pwfile"), format!("{password}\n")).unwrap();
    if let Some(u) = &user {
        let mut c = Command::new("chown");
        c.arg("-R").arg(format!("{u}:")).arg(&dir);
        run(c, "chown of the PostgreSQL directory");
    }
    let mut c = as_user(user.as_deref(), &bin.join("initdb"));
    c.arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", dir.join("pwfile").display()));
    run(c, "initdb");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A throwaway cluster: durability off for speed; connections for many servers at once.
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400 -c shared_buffers=32MB",
        dir.display()
    );
    let mut c = as_user(user.as_deref(), &bin.join("pg_ctl"));
    c.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "-o", &opts, "start"])
        .stdout(Stdio::null());
    run(c, "pg_ctl start");
    watch_exit(&bin, &data, &dir, user.as_deref());
    Server {
        bin,
        port,
        password,
        socket_dir: dir,
        user,
        databases: Mutex::new(HashMap::new()),
    }
}

/// Starts a process that waits for this test process to end, then stops the server and removes
/// its directory.
fn watch_exit(bin: &Path, data: &Path, dir: &Path, user: Option<&str>) {
    let stop = match user {
        Some(u) => format!("runuser -u {u} -- "),
        None => String::new(),
    };
    let script = format!(
        "tail --pid={pid} -f /dev/null; {stop}'{pg_ctl}' -D '{data}' -m immediate stop; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid --fork` returns at once, leaving the watcher in a session of its own (a Ctrl-C
    // to the tests' process group does not reach it).
    let started = Command::new("setsid")
        .args(["--fork", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the PostgreSQL watcher starts");
    assert!(started.success(), "setsid --fork: {started}");
}
