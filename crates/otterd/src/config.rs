//! Settings, layered: defaults < config file < `OTTER_*` environment < command-line flags.
//!
//! Every setting is declared once, as one row of the [`settings!`] table below: its Rust field,
//! type and default, its section and key in the config file, its environment variable, its
//! command-line flag (if any) and its documentation. The struct fields, the defaults, the file
//! and environment layers, the layering, the sources map and `config show` are generated from
//! that table. Adding a setting is adding a row (and a check in [`Settings::validate`] if its
//! values need one).
//!
//! The config file is TOML with one table per section (`[http]`, `[database]`, `[blobs.s3]` ...);
//! unknown keys and sections are refused, naming where a misplaced key belongs. Secrets
//! ([`Secret`], [`SecretUrl`]) never appear in `Debug`, `config show` or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "command line",
        })
    }
}

/// One setting as the table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The Rust field (`settings.<field>` or `settings.limits.<field>`); also the key of
    /// [`Settings::sources`].
    pub field: &'static str,
    /// The config file's section (`http`, `blobs.s3` ...).
    pub section: &'static str,
    /// The key inside the section.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The command-line flag, if there is one.
    pub flag: Option<&'static str>,
    /// What it means.
    pub doc: &'static str,
}

impl Meta {
    /// Every way to set it, for error messages.
    fn ways(&self) -> String {
        let flag = self.flag.map(|f| format!("{f}, ")).unwrap_or_default();
        format!(
            "set it with {flag}{} or `{}` in [{}] of the config file",
            self.env, self.key, self.section
        )
    }
}

/// The settings table's rows, by Rust field name.
pub fn meta(field: &str) -> Option<&'static Meta> {
    SETTINGS.iter().find(|m| m.field == field)
}

/// How a value is shown by `config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A TOML literal.
    Plain(String),
    /// A redacted TOML literal: printed commented out, so that the output stays a valid config
    /// file that does not set the secret to its redaction.
    Hidden(String),
    /// An optional setting left unset.
    Unset,
}

/// A type a setting can have: read from the file and the environment, shown redacted.
pub trait Value: Sized {
    /// From the config file's TOML value.
    fn from_toml(v: toml::Value) -> Result<Self, String>;
    /// From an environment variable's (non-empty) text.
    fn from_env(s: &str) -> Result<Self, String>;
    /// As `config show` prints it.
    fn show(&self) -> Shown;
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn deserialize<T: serde::de::DeserializeOwned>(v: toml::Value) -> Result<T, String> {
    v.try_into::<T>().map_err(|e| e.message().to_string())
}

macro_rules! number_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                deserialize(v)
            }
            fn from_env(s: &str) -> Result<Self, String> {
                s.parse().map_err(|e| format!("{e}"))
            }
            fn show(&self) -> Shown {
                Shown::Plain(self.to_string())
            }
        }
    )*};
}
number_value!(u32, u64, usize, bool);

impl Value for String {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize(v)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
    fn show(&self) -> Shown {
        Shown::Plain(toml_str(self))
    }
}

impl Value for PathBuf {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize(v)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        Ok(PathBuf::from(s))
    }
    fn show(&self) -> Shown {
        Shown::Plain(toml_str(&self.display().to_string()))
    }
}

impl Value for SocketAddr {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize(v)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        s.parse().map_err(|e| format!("{e}"))
    }
    fn show(&self) -> Shown {
        Shown::Plain(toml_str(&self.to_string()))
    }
}

/// A list of IP addresses: a TOML array of strings, or comma-separated in the environment.
impl Value for Vec<IpAddr> {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize(v)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|a| {
                a.trim()
                    .parse::<IpAddr>()
                    .map_err(|e| format!("{a:?}: {e}; give IP addresses separated by commas"))
            })
            .collect()
    }
    fn show(&self) -> Shown {
        let items: Vec<String> = self.iter().map(|a| toml_str(&a.to_string())).collect();
        Shown::Plain(format!("[{}]", items.join(", ")))
    }
}

impl<T: Value> Value for Option<T> {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        T::from_toml(v).map(Some)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        T::from_env(s).map(Some)
    }
    fn show(&self) -> Shown {
        match self {
            Some(v) => v.show(),
            None => Shown::Unset,
        }
    }
}

/// A secret setting: `Debug` and `Display` show `***`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Value for Secret {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize(v).map(Secret)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        Ok(Secret(s.to_string()))
    }
    fn show(&self) -> Shown {
        Shown::Hidden(toml_str("***"))
    }
}

/// A URL that may hold a password (`scheme://user:password@host/...`): `Debug` and `Display`
/// show it with the password as `***`; [`SecretUrl::expose`] gives the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL itself, password included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl(s)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl(s.to_string())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Value for SecretUrl {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        deserialize::<String>(v).map(SecretUrl)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        Ok(SecretUrl(s.to_string()))
    }
    fn show(&self) -> Shown {
        let shown = redact_url(&self.0);
        if shown == self.0 {
            Shown::Plain(toml_str(&shown))
        } else {
            Shown::Hidden(toml_str(&shown))
        }
    }
}

/// Replaces the password in `scheme://user:password@host` and in a `password=` query
/// parameter (PostgreSQL accepts both) with `***`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = base.to_string();
    if let Some((scheme, rest)) = base.split_once("://") {
        // The host follows the last `@` of the authority (a password may hold an `@`).
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if let Some((creds, host)) = authority.rsplit_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                out = format!("{scheme}://{user}:***@{host}{path}");
            }
        }
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// A settings error that names the flag, the variable and the key to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Generates everything from the table of settings; see the module's documentation.
///
/// A row: doc comment, `field: Type = default => ["section"] key, env "OTTER_X"` and optionally
/// `, flag "--x"`, then `;`. Rows of the `limits` group become fields of [`Limits`].
macro_rules! settings {
    (@flag) => { None };
    (@flag $flag:literal) => { Some($flag) };
    (
        settings {$(
            $(#[doc = $doc:literal])+
            $field:ident : $ty:ty = $default:expr
                => [$section:literal] $key:ident, env $env:literal $(, flag $flag:literal)?;
        )*}
        limits {$(
            $(#[doc = $ldoc:literal])+
            $lfield:ident : $lty:ty = $ldefault:expr
                => [$lsection:literal] $lkey:ident, env $lenv:literal $(, flag $lflag:literal)?;
        )*}
    ) => {
        /// The server's settings.
        #[derive(Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
            /// Bounds on device data and the database's log.
            pub limits: Limits,
            /// Where each value came from, by Rust field name.
            pub sources: BTreeMap<&'static str, Source>,
        }

        /// Bounds on what devices can make the server store, and on the database's log
        /// (docs/configuration.md; docs/security.md says what each protects against).
        /// Per-product enrolment bounds are not here: admins set them per product
        /// (`otter product update`).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Limits {
            $( $(#[doc = $ldoc])+ pub $lfield: $lty, )*
        }

        impl Default for Limits {
            fn default() -> Self {
                Limits { $( $lfield: $ldefault, )* }
            }
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $( $field: $default, )*
                    limits: Limits::default(),
                    sources: SETTINGS.iter().map(|m| (m.field, Source::Default)).collect(),
                }
            }
        }

        /// Every setting, in the table's order.
        pub const SETTINGS: &[Meta] = &[
            $( Meta {
                field: stringify!($field),
                section: $section,
                key: stringify!($key),
                env: $env,
                flag: settings!(@flag $($flag)?),
                doc: concat!($($doc),+),
            }, )*
            $( Meta {
                field: stringify!($lfield),
                section: $lsection,
                key: stringify!($lkey),
                env: $lenv,
                flag: settings!(@flag $($lflag)?),
                doc: concat!($($ldoc),+),
            }, )*
        ];

        /// One layer of settings: what a file, the environment or the command line sets.
        #[derive(Debug, Default)]
        pub struct Layer {
            $( pub $field: Option<$ty>, )*
            $( pub $lfield: Option<$lty>, )*
        }

        impl Layer {
            /// Sets `field` from its text or TOML value.
            fn set(&mut self, field: &str, v: Raw<'_>) -> Result<(), String> {
                match field {
                    $( stringify!($field) => self.$field = Some(v.parse()?), )*
                    $( stringify!($lfield) => self.$lfield = Some(v.parse()?), )*
                    _ => unreachable!("{field} is not in the settings table"),
                }
                Ok(())
            }
        }

        impl Settings {
            /// Applies one layer on top.
            pub fn apply(&mut self, layer: Layer, source: Source) {
                $( if let Some(v) = layer.$field {
                    self.$field = v;
                    self.sources.insert(stringify!($field), source);
                } )*
                $( if let Some(v) = layer.$lfield {
                    self.limits.$lfield = v;
                    self.sources.insert(stringify!($lfield), source);
                } )*
            }

            /// Each setting's value as `config show` prints it, in the table's order.
            fn shown(&self) -> Vec<(&'static Meta, Shown)> {
                let values = [
                    $( Value::show(&self.$field), )*
                    $( Value::show(&self.limits.$lfield), )*
                ];
                SETTINGS.iter().zip(values).collect()
            }
        }

        impl fmt::Debug for Settings {
            /// Every value; secrets redacted by their types.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Settings")
                    $( .field(stringify!($field), &self.$field) )*
                    .field("limits", &self.limits)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A value on its way into a [`Layer`].
enum Raw<'a> {
    Toml(toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn parse<T: Value>(self) -> Result<T, String> {
        match self {
            Raw::Toml(v) => T::from_toml(v),
            Raw::Env(s) => T::from_env(s),
        }
    }
}

settings! {
    settings {
        /// Holds the SQLite database, the blobs and the initial admin token.
        data_dir: PathBuf = PathBuf::from("otter-data")
            => ["server"] data_dir, env "OTTER_DATA_DIR", flag "--data-dir";
        /// `text` or `json` log lines.
        log_format: String = "text".into()
            => ["server"] log_format, env "OTTER_LOG_FORMAT", flag "--log-format";

        /// Address of the HTTP listener.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080))
            => ["http"] listen, env "OTTER_LISTEN", flag "--listen";
        /// Requests handled at once before new ones get 429.
        max_in_flight: usize = 512
            => ["http"] max_in_flight, env "OTTER_MAX_IN_FLIGHT";
        /// Open client connections at once; more are answered 503 and closed.
        max_connections: usize = 1024
            => ["http"] max_connections, env "OTTER_MAX_CONNECTIONS";
        /// Seconds a client may take to send a request's head once it sent its first byte.
        header_read_timeout_s: u64 = 10
            => ["http"] header_read_timeout_s, env "OTTER_HEADER_READ_TIMEOUT_S";
        /// Seconds a connection may stay open with no request in progress.
        keepalive_timeout_s: u64 = 15
            => ["http"] keepalive_timeout_s, env "OTTER_KEEPALIVE_TIMEOUT_S";
        /// Seconds to let requests finish on shutdown (downloads get this long too).
        shutdown_grace_s: u64 = 30
            => ["http"] shutdown_grace_s, env "OTTER_SHUTDOWN_GRACE_S";
        /// Addresses of reverse proxies whose `X-Forwarded-For` is believed: for a request
        /// from one of them, the audit log records the client address the proxies forwarded too.
        trusted_proxies: Vec<IpAddr> = Vec::new()
            => ["http"] trusted_proxies, env "OTTER_TRUSTED_PROXIES";

        /// Database URL: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`;
        /// unset: `sqlite://<data_dir>/otter.db`. Its password is never shown.
        database_url: Option<SecretUrl> = None
            => ["database"] url, env "OTTER_DATABASE_URL", flag "--database-url";
        /// Connections to PostgreSQL this server holds open at most (SQLite ignores it).
        database_max_connections: u32 = 10
            => ["database"] max_connections, env "OTTER_DATABASE_MAX_CONNECTIONS";
        /// Seconds a query waits for a free PostgreSQL connection before it fails (SQLite
        /// ignores it).
        database_acquire_timeout_s: u64 = 10
            => ["database"] acquire_timeout_s, env "OTTER_DATABASE_ACQUIRE_TIMEOUT_S";

        /// Where blobs live: `local` (under `data_dir/blobs`) or `s3` (an S3-compatible bucket).
        blob_backend: String = "local".into()
            => ["blobs"] backend, env "OTTER_BLOB_BACKEND";
        /// Seconds between passes of the blob collector (blobs no release references, staging
        /// leftovers); it also runs once at start. 0: only at start.
        blob_gc_interval_s: u64 = 3600
            => ["blobs"] gc_interval_s, env "OTTER_BLOB_GC_INTERVAL_S";
        /// Blobs and staged uploads younger than this many seconds are never collected.
        blob_gc_grace_s: u64 = 3600
            => ["blobs"] gc_grace_s, env "OTTER_BLOB_GC_GRACE_S";

        /// The bucket, for `[blobs] backend = "s3"`.
        s3_bucket: Option<String> = None
            => ["blobs.s3"] bucket, env "OTTER_S3_BUCKET";
        /// Endpoint URL of an S3-compatible server (MinIO, Garage, Ceph ...); unset: AWS.
        s3_endpoint: Option<String> = None
            => ["blobs.s3"] endpoint, env "OTTER_S3_ENDPOINT";
        /// The bucket's region.
        s3_region: String = "us-east-1".into()
            => ["blobs.s3"] region, env "OTTER_S3_REGION";
        /// Key prefix inside the bucket (e.g. `otter/`); empty: the bucket's root.
        s3_prefix: String = String::new()
            => ["blobs.s3"] prefix, env "OTTER_S3_PREFIX";
        /// Access key id; unset: the AWS_* environment or the instance's role.
        s3_access_key_id: Option<String> = None
            => ["blobs.s3"] access_key_id, env "OTTER_S3_ACCESS_KEY_ID";
        /// Secret access key (never shown).
        s3_secret_access_key: Option<Secret> = None
            => ["blobs.s3"] secret_access_key, env "OTTER_S3_SECRET_ACCESS_KEY";
        /// Allow plain `http://` endpoints (local test servers only).
        s3_allow_http: bool = false
            => ["blobs.s3"] allow_http, env "OTTER_S3_ALLOW_HTTP";

        /// What a device's `download_url` points at: `off` (otterd), `presigned` (a presigned
        /// URL of the S3 object) or a CDN base URL (`<base>/images/<sha256>`).
        download_redirect: String = "off".into()
            => ["downloads"] redirect, env "OTTER_DOWNLOAD_REDIRECT";
        /// Seconds a presigned download URL stays valid.
        download_presign_ttl_s: u64 = 3600
            => ["downloads"] presign_ttl_s, env "OTTER_DOWNLOAD_PRESIGN_TTL_S";
        /// Image downloads in progress at once (all devices); more get 429.
        max_downloads: usize = 256
            => ["downloads"] max_in_progress, env "OTTER_MAX_DOWNLOADS";
        /// Image downloads in progress at once for one device; more get 429.
        max_downloads_per_device: usize = 2
            => ["downloads"] max_per_device, env "OTTER_MAX_DOWNLOADS_PER_DEVICE";
        /// Bytes read from disk at a time for one download: at most this much of an image is
        /// in memory per download in progress (4096 to 4194304).
        download_chunk_bytes: usize = 128 * 1024
            => ["downloads"] chunk_bytes, env "OTTER_DOWNLOAD_CHUNK_BYTES";

        /// Largest release upload accepted, in bytes.
        max_upload_bytes: u64 = 32 * 1024 * 1024
            => ["releases"] max_upload_bytes, env "OTTER_MAX_UPLOAD_BYTES";
        /// How far, in seconds, a manifest's creation time may lie ahead of the server's clock.
        manifest_max_future_s: u64 = otter_core::publish::DEFAULT_MAX_FUTURE_S
            => ["releases"] manifest_max_future_s, env "OTTER_MANIFEST_MAX_FUTURE_S";

        /// Seconds between passes of the rollout worker (soak times, auto-advance, thresholds
        /// of stages whose devices changed; docs/rollouts.md). With several instances one runs
        /// it (a database lease of this length).
        rollout_eval_interval_s: u64 = 30
            => ["rollouts"] eval_interval_s, env "OTTER_ROLLOUT_EVAL_INTERVAL_S";

        /// Base device poll interval in seconds (devices get it with ±10 % jitter).
        poll_interval_s: u64 = 3600
            => ["devices"] poll_interval_s, env "OTTER_POLL_INTERVAL_S";
        /// Most tags one device may carry.
        max_tags_per_device: usize = 32
            => ["devices"] max_tags, env "OTTER_MAX_TAGS_PER_DEVICE";
        /// Devices one page of `GET /api/v1/devices` examines at most for terms the database
        /// cannot evaluate (version order); the page then ends early and names where to
        /// continue.
        device_filter_scan_max: u64 = 20_000
            => ["devices"] filter_scan_max, env "OTTER_DEVICE_FILTER_SCAN_MAX";

        /// Refused unauthenticated attempts (401) recorded one by one a minute; beyond it they
        /// are counted and recorded as one `audit.unrecorded` entry. 0: no limit.
        audit_unauthenticated_per_minute: u32 = 60
            => ["audit"] unauthenticated_per_minute, env "OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE";

        /// Seconds a dashboard session may stay unused before it ends (issue 11).
        dashboard_session_idle_s: u64 = 30 * 60
            => ["dashboard"] session_idle_s, env "OTTER_DASHBOARD_SESSION_IDLE_S";
        /// Seconds a dashboard session lasts at most from its sign-in, used or not.
        dashboard_session_max_s: u64 = 12 * 3600
            => ["dashboard"] session_max_s, env "OTTER_DASHBOARD_SESSION_MAX_S";
        /// Dashboard cookies carry `Secure` (and the `__Host-` prefix), so browsers send them
        /// over HTTPS only. Turn off only to try the dashboard over plain HTTP on localhost.
        dashboard_secure_cookies: bool = true
            => ["dashboard"] secure_cookies, env "OTTER_DASHBOARD_SECURE_COOKIES";
        /// Wrong passwords in a row after which a person is locked out (0: never).
        dashboard_failures_before_lockout: u32 = 5
            => ["dashboard"] failures_before_lockout, env "OTTER_DASHBOARD_FAILURES_BEFORE_LOCKOUT";
        /// Seconds a locked-out person cannot sign in (doubling with each further lockout
        /// in a row, up to a day).
        dashboard_lockout_s: u64 = 300
            => ["dashboard"] lockout_s, env "OTTER_DASHBOARD_LOCKOUT_S";
        /// Failed sign-ins a minute, sustained, from one client address, whatever the name
        /// (0: no limit). Beyond it sign-ins from there are refused, unchecked, for a while.
        dashboard_address_failures_per_minute: u32 = 10
            => ["dashboard"] address_failures_per_minute, env "OTTER_DASHBOARD_ADDRESS_FAILURES_PER_MINUTE";
        /// Failed sign-ins allowed at once from one address before the per-minute rate applies.
        dashboard_address_failures_burst: u32 = 20
            => ["dashboard"] address_failures_burst, env "OTTER_DASHBOARD_ADDRESS_FAILURES_BURST";
        /// Sign-in password checks (Argon2id, 19 MiB each) running at once; more wait their
        /// turn.
        dashboard_password_checks_at_once: usize = 4
            => ["dashboard"] password_checks_at_once, env "OTTER_DASHBOARD_PASSWORD_CHECKS_AT_ONCE";
        /// Shortest password a person may choose.
        dashboard_password_min_chars: usize = 12
            => ["dashboard"] password_min_chars, env "OTTER_DASHBOARD_PASSWORD_MIN_CHARS";

        /// Failed HTTP Basic attempts on `/arduino/v1` a minute, sustained, per product and
        /// per client address (0: no limit). Beyond it `429` with `Retry-After`, the secret
        /// unchecked.
        arduino_auth_failures_per_minute: u32 = 10
            => ["arduino"] auth_failures_per_minute, env "OTTER_ARDUINO_AUTH_FAILURES_PER_MINUTE";
        /// Failed attempts allowed at once before the per-minute rate applies.
        arduino_auth_failures_burst: u32 = 10
            => ["arduino"] auth_failures_burst, env "OTTER_ARDUINO_AUTH_FAILURES_BURST";

        /// Base URL of the GitHub REST API (GitHub Enterprise: `https://HOST/api/v3`).
        github_api_url: String = "https://api.github.com".into()
            => ["github"] api_url, env "OTTER_GITHUB_API_URL";
        /// Seconds between polls of the followed repositories' releases (0: never poll).
        github_poll_interval_s: u64 = 600
            => ["github"] poll_interval_s, env "OTTER_GITHUB_POLL_INTERVAL_S";
        /// Seconds one request to GitHub (the release list, or one asset's download) may take.
        github_timeout_s: u64 = 120
            => ["github"] timeout_s, env "OTTER_GITHUB_TIMEOUT_S";
        /// Newest releases of a repository looked at in one poll (1 to 100).
        github_releases_per_poll: u32 = 10
            => ["github"] releases_per_poll, env "OTTER_GITHUB_RELEASES_PER_POLL";
        /// A release private key (PKCS#8 PEM) for follows with `sign_on_import`: assets that
        /// are not bundles are signed with it at import (the weaker mode, docs/security.md).
        github_import_key_file: Option<PathBuf> = None
            => ["github"] import_key_file, env "OTTER_GITHUB_IMPORT_KEY_FILE";
    }
    limits {
        /// Status reports a device may send a minute, sustained (0: no limit). Beyond it the
        /// device gets `429` with `Retry-After`.
        device_reports_per_minute: u32 = 60
            => ["limits"] device_reports_per_minute, env "OTTER_DEVICE_REPORTS_PER_MINUTE";
        /// Reports a device may send at once before the per-minute rate applies.
        device_reports_burst: u32 = 60
            => ["limits"] device_reports_burst, env "OTTER_DEVICE_REPORTS_BURST";
        /// Newest history events kept per device (0: keep all).
        device_history_max: u32 = 1000
            => ["limits"] device_history_max, env "OTTER_DEVICE_HISTORY_MAX";
        /// SQLite `journal_size_limit`: the write-ahead log is cut back to this size after a
        /// checkpoint.
        wal_size_limit_bytes: u64 = 16 * 1024 * 1024
            => ["database"] wal_size_limit_bytes, env "OTTER_WAL_SIZE_LIMIT_BYTES";
        /// Seconds between checkpoints that empty the write-ahead log.
        wal_checkpoint_interval_s: u64 = 60
            => ["database"] wal_checkpoint_interval_s, env "OTTER_WAL_CHECKPOINT_INTERVAL_S";
    }
}

/// The config file's sections, in the order `config show` prints them.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for m in SETTINGS {
        if !out.contains(&m.section) {
            out.push(m.section);
        }
    }
    out
}

impl Layer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Layer::from_toml(&text, &path.display().to_string())
    }

    /// Parses a config file's text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Layer, ConfigError> {
        // The error names the line but does not quote it: it may hold a secret.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| format!(" line {}:", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            ConfigError(format!("config file {origin}:{line} {}", e.message()))
        })?;
        let mut layer = Layer::default();
        layer
            .read_table(table, "")
            .map_err(|e| ConfigError(format!("config file {origin}: {e}")))?;
        Ok(layer)
    }

    fn read_table(&mut self, table: toml::Table, section: &str) -> Result<(), String> {
        let sections = sections();
        for (key, value) in table {
            if let Some(m) = SETTINGS
                .iter()
                .find(|m| m.section == section && m.key == key)
            {
                self.set(m.field, Raw::Toml(value))
                    .map_err(|e| format!("[{section}] {key}: {e}"))?;
                continue;
            }
            let sub = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            let is_section = sections
                .iter()
                .any(|s| *s == sub || s.starts_with(&format!("{sub}.")));
            match value {
                toml::Value::Table(t) if is_section => self.read_table(t, &sub)?,
                _ => return Err(unknown(section, &key, is_section)),
            }
        }
        Ok(())
    }

    /// Reads `OTTER_*` variables from `get` (the process environment in production); empty
    /// values count as unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        for m in SETTINGS {
            if let Some(v) = get(m.env).filter(|v| !v.is_empty()) {
                layer.set(m.field, Raw::Env(&v)).map_err(|e| {
                    ConfigError(format!(
                        "{}={v:?} is not valid: {e} (also settable as `{}` in [{}] of the config file)",
                        m.env, m.key, m.section
                    ))
                })?;
            }
        }
        Ok(layer)
    }
}

/// The error for a key or section the table does not have, naming where it belongs.
fn unknown(section: &str, key: &str, is_section: bool) -> String {
    let here = if section.is_empty() {
        format!("`{key}`")
    } else {
        format!("`{key}` in [{section}]")
    };
    if is_section {
        return format!("{here} must be a table (a section [{key}])");
    }
    if let Some(m) = SETTINGS.iter().find(|m| m.key == key) {
        return format!(
            "unknown key {here}: `{key}` is a key of [{}] (write it under a `[{}]` line)",
            m.section, m.section
        );
    }
    if let Some(m) = SETTINGS.iter().find(|m| m.field == key) {
        return format!(
            "unknown key {here}: the setting is now `{}` in [{}] (write it under a `[{}]` line)",
            m.key, m.section, m.section
        );
    }
    let names = sections()
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ");
    if section.is_empty() {
        format!("unknown key or section {here}; the sections are {names} (docs/configuration.md)")
    } else {
        let keys = SETTINGS
            .iter()
            .filter(|m| m.section == section)
            .map(|m| m.key)
            .collect::<Vec<_>>()
            .join(", ");
        format!("unknown key {here}; its keys are {keys} (docs/configuration.md)")
    }
}

impl Settings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| {
            let m = meta(field).expect("validate names fields of the settings table");
            Err(ConfigError(format!(
                "[{}] {} {why}: {}",
                m.section,
                m.key,
                m.ways()
            )))
        };
        if self.log_format != "text" && self.log_format != "json" {
            return bad("log_format", "must be `text` or `json`");
        }
        if self.max_upload_bytes < 1024 {
            return bad("max_upload_bytes", "must be at least 1024");
        }
        if self.poll_interval_s == 0 {
            return bad("poll_interval_s", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.database_max_connections == 0 {
            return bad("database_max_connections", "must be at least 1");
        }
        if self.database_acquire_timeout_s == 0 {
            return bad("database_acquire_timeout_s", "must be at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "is empty");
        }
        if self.limits.device_reports_per_minute > 0 && self.limits.device_reports_burst == 0 {
            return bad(
                "device_reports_burst",
                "must be at least 1 while device_reports_per_minute limits reports",
            );
        }
        if self.rollout_eval_interval_s == 0 {
            return bad("rollout_eval_interval_s", "must be at least 1");
        }
        if self.dashboard_session_idle_s == 0 {
            return bad("dashboard_session_idle_s", "must be at least 1");
        }
        if self.dashboard_session_max_s < self.dashboard_session_idle_s {
            return bad(
                "dashboard_session_max_s",
                "must be at least [dashboard] session_idle_s",
            );
        }
        if self.dashboard_failures_before_lockout > 0 && self.dashboard_lockout_s == 0 {
            return bad(
                "dashboard_lockout_s",
                "must be at least 1 while failures_before_lockout locks people out",
            );
        }
        if self.dashboard_address_failures_per_minute > 0
            && self.dashboard_address_failures_burst == 0
        {
            return bad(
                "dashboard_address_failures_burst",
                "must be at least 1 while address_failures_per_minute limits sign-ins",
            );
        }
        if !(1..=1024).contains(&self.dashboard_password_checks_at_once) {
            return bad(
                "dashboard_password_checks_at_once",
                "must be between 1 and 1024",
            );
        }
        if !(8..=128).contains(&self.dashboard_password_min_chars) {
            return bad("dashboard_password_min_chars", "must be between 8 and 128");
        }
        if self.limits.wal_checkpoint_interval_s == 0 {
            return bad("wal_checkpoint_interval_s", "must be at least 1");
        }
        // --- Connections and downloads (issue 8, items 5 and 17) ---
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.header_read_timeout_s == 0 {
            return bad("header_read_timeout_s", "must be at least 1");
        }
        if self.keepalive_timeout_s == 0 {
            return bad("keepalive_timeout_s", "must be at least 1");
        }
        if self.max_downloads == 0 {
            return bad("max_downloads", "must be at least 1");
        }
        if self.max_downloads_per_device == 0 {
            return bad("max_downloads_per_device", "must be at least 1");
        }
        if !(4096..=4 * 1024 * 1024).contains(&self.download_chunk_bytes) {
            return bad(
                "download_chunk_bytes",
                "must be between 4096 and 4194304 bytes",
            );
        }
        // --- end of connections and downloads ---
        // --- Devices and targeting (issue 9) ---
        if !(1..=1000).contains(&self.max_tags_per_device) {
            return bad("max_tags_per_device", "must be from 1 to 1000");
        }
        if self.device_filter_scan_max < 1000 {
            return bad(
                "device_filter_scan_max",
                "must be at least 1000 (a page holds up to 1000 devices)",
            );
        }
        // --- end of devices and targeting ---
        // --- Blob store and downloads (issue 9) ---
        match self.blob_backend.as_str() {
            "local" => {}
            "s3" => {
                if self.s3_bucket.as_deref().unwrap_or("").is_empty() {
                    return bad(
                        "s3_bucket",
                        "must name a bucket when [blobs] backend is `s3`",
                    );
                }
                if self.s3_access_key_id.is_some() != self.s3_secret_access_key.is_some() {
                    return bad(
                        "s3_secret_access_key",
                        "and access_key_id must be set together (or neither, for the AWS_* environment)",
                    );
                }
                if let Some(e) = &self.s3_endpoint {
                    if !(e.starts_with("https://") || e.starts_with("http://")) {
                        return bad("s3_endpoint", "must be an http:// or https:// URL");
                    }
                    if e.starts_with("http://") && !self.s3_allow_http {
                        return bad(
                            "s3_allow_http",
                            "must be true for a plain http:// endpoint (test servers only)",
                        );
                    }
                }
            }
            _ => return bad("blob_backend", "must be `local` or `s3`"),
        }
        match self.download_redirect.as_str() {
            "off" => {}
            "presigned" if self.blob_backend != "s3" => {
                return bad(
                    "download_redirect",
                    "is `presigned`, which needs [blobs] backend = `s3`",
                )
            }
            "presigned" => {}
            base if base.starts_with("https://") || base.starts_with("http://") => {}
            _ => {
                return bad(
                    "download_redirect",
                    "must be `off`, `presigned` or a CDN base URL (https://...)",
                )
            }
        }
        if self.download_presign_ttl_s == 0 || self.download_presign_ttl_s > 604_800 {
            return bad(
                "download_presign_ttl_s",
                "must be between 1 and 604800 (seven days, S3's longest)",
            );
        }
        // --- end of blob store and downloads ---
        // Arduino clients and GitHub Releases (issue 13).
        if self.arduino_auth_failures_per_minute > 0 && self.arduino_auth_failures_burst == 0 {
            return bad(
                "arduino_auth_failures_burst",
                "must be at least 1 while auth_failures_per_minute limits failures",
            );
        }
        if !(self.github_api_url.starts_with("https://")
            || self.github_api_url.starts_with("http://"))
        {
            return bad("github_api_url", "must be an http:// or https:// URL");
        }
        if self.github_timeout_s == 0 {
            return bad("github_timeout_s", "must be at least 1");
        }
        if !(1..=100).contains(&self.github_releases_per_poll) {
            return bad("github_releases_per_poll", "must be from 1 to 100");
        }
        Ok(())
    }

    /// The database URL in effect, password included (for connecting; log it with
    /// [`redact_url`]).
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("otter.db").display()),
        }
    }

    /// The settings as a config file, one `[section]` per table, secrets redacted (commented
    /// out), with each value's source as a comment when `with_sources`.
    pub fn show(&self, with_sources: bool) -> String {
        let shown = self.shown();
        let mut out = String::new();
        for section in sections() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{section}]\n"));
            for (m, v) in shown.iter().filter(|(m, _)| m.section == section) {
                let line = match v {
                    Shown::Plain(v) => format!("{} = {v}", m.key),
                    Shown::Hidden(v) => format!("# {} = {v}", m.key),
                    Shown::Unset if m.field == "database_url" => format!(
                        "# {} is unset: {}",
                        m.key,
                        toml_str(&redact_url(&self.database_url()))
                    ),
                    Shown::Unset => format!("# {} is unset", m.key),
                };
                if with_sources {
                    let source = self
                        .sources
                        .get(m.field)
                        .copied()
                        .unwrap_or(Source::Default);
                    out.push_str(&format!("{line}  # {source}\n"));
                } else {
                    out.push_str(&format!("{line}\n"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Layer {
        Layer::from_toml(text, "otterd.toml").unwrap()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Layer {
        Layer::from_env(|k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn every_setting_is_declared_once_with_unique_names() {
        let mut seen = std::collections::HashSet::new();
        for m in SETTINGS {
            assert!(seen.insert(("field", m.field.to_string())), "{m:?}");
            assert!(seen.insert(("env", m.env.to_string())), "{m:?}");
            let place = format!("{}.{}", m.section, m.key);
            assert!(seen.insert(("key", place)), "{m:?}");
            assert!(
                m.env.starts_with("OTTER_") && !m.doc.trim().is_empty(),
                "{m:?}"
            );
        }
        assert_eq!(Settings::default().sources.len(), SETTINGS.len());
    }

    #[test]
    fn the_documentation_names_every_setting() {
        let doc = include_str!("../../../docs/configuration.md");
        for m in SETTINGS {
            assert!(
                doc.contains(&format!("`{}`", m.env)) && doc.contains(&format!("`{}`", m.key)),
                "docs/configuration.md lacks {} / [{}] {}",
                m.env,
                m.section,
                m.key
            );
            assert!(doc.contains(&format!("[{}]", m.section)), "{}", m.section);
        }
    }

    #[test]
    fn a_file_with_sections_layers_under_env_and_flags() {
        let mut s = Settings::default();
        s.apply(
            file(
                "[server]\ndata_dir = \"/srv/otter\"\n\n[http]\nlisten = \"127.0.0.1:9000\"\n\
                 max_connections = 100\n\n[devices]\npoll_interval_s = 60\n\n\
                 [blobs]\nbackend = \"s3\"\n\n[blobs.s3]\nbucket = \"fw\"\n\n\
                 [database]\nwal_checkpoint_interval_s = 5\n",
            ),
            Source::File,
        );
        s.apply(env(&[("OTTER_POLL_INTERVAL_S", "30")]), Source::Env);
        s.apply(
            Layer {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            },
            Source::Flag,
        );
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.max_connections, 100);
        assert_eq!(s.poll_interval_s, 30);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.blob_backend, "s3");
        assert_eq!(s.s3_bucket.as_deref(), Some("fw"));
        assert_eq!(s.limits.wal_checkpoint_interval_s, 5);
        assert_eq!(s.sources["listen"], Source::File);
        assert_eq!(s.sources["poll_interval_s"], Source::Env);
        assert_eq!(s.sources["data_dir"], Source::Flag);
        assert_eq!(s.sources["max_in_flight"], Source::Default);
        assert_eq!(s.sources["wal_checkpoint_interval_s"], Source::File);
        let shown = s.show(true);
        assert!(
            shown.contains("[devices]\npoll_interval_s = 30  # environment\n"),
            "{shown}"
        );
        assert!(
            shown.contains("[blobs.s3]\nbucket = \"fw\"  # config file\n"),
            "{shown}"
        );
        assert!(
            shown.contains("data_dir = \"/tmp/x\"  # command line"),
            "{shown}"
        );
    }

    #[test]
    fn a_flat_key_of_the_old_format_is_refused_naming_its_section() {
        let e = Layer::from_toml("listen = \"127.0.0.1:9000\"\n", "/etc/otter/otterd.toml")
            .unwrap_err()
            .0;
        assert!(
            e.contains("/etc/otter/otterd.toml") && e.contains("`listen` is a key of [http]"),
            "{e}"
        );
        // A renamed one names its new key too.
        let e = Layer::from_toml("s3_bucket = \"fw\"\n", "f.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("`bucket` in [blobs.s3]"), "{e}");
        // A key in the wrong section names the right one.
        let e = Layer::from_toml("[http]\nbucket = \"fw\"\n", "f.toml")
            .unwrap_err()
            .0;
        assert!(
            e.contains("`bucket` in [http]") && e.contains("[blobs.s3]"),
            "{e}"
        );
        // Unknown keys and sections are refused, listing what exists.
        let e = Layer::from_toml("[http]\nbogus = 1\n", "f.toml")
            .unwrap_err()
            .0;
        assert!(
            e.contains("`bogus` in [http]") && e.contains("listen"),
            "{e}"
        );
        let e = Layer::from_toml("[bogus]\nx = 1\n", "f.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("`bogus`") && e.contains("[blobs.s3]"), "{e}");
        let e = Layer::from_toml("http = 1\n", "f.toml").unwrap_err().0;
        assert!(e.contains("[http]"), "{e}");
        // A bad value names the file, the section and the key.
        let e = Layer::from_toml("[http]\nlisten = \"nope\"\n", "f.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("f.toml") && e.contains("[http] listen"), "{e}");
        // A syntax error names the line without quoting it (it may hold a secret).
        let e = Layer::from_toml(
            "[blobs.s3]\nbucket = \"fw\"\nsecret_access_key = \"sup3rsecret\n",
            "f.toml",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("f.toml: line 3:") && !e.contains("sup3rsecret"),
            "{e}"
        );
    }

    #[test]
    fn show_round_trips() {
        let mut s = Settings::default();
        s.apply(
            file(
                "[http]\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]\nmax_in_flight = 7\n\
                 [server]\nlog_format = \"json\"\ndata_dir = \"/var/lib/otter \\\"x\\\"\"\n\
                 [blobs]\nbackend = \"s3\"\n[blobs.s3]\nbucket = \"fw\"\nprefix = \"otter/\"\n\
                 access_key_id = \"AKIA1\"\nsecret_access_key = \"sup3rsecret\"\n\
                 [database]\nurl = \"postgres://otter@db/otter\"\n[limits]\ndevice_history_max = 5\n",
            ),
            Source::File,
        );
        for with_sources in [false, true] {
            let shown = s.show(with_sources);
            let mut again = Settings::default();
            again.apply(Layer::from_toml(&shown, "shown").unwrap(), Source::File);
            // Everything comes back but the secret, which the output does not hold.
            assert_eq!(again.s3_secret_access_key, None);
            let without_secret = Settings {
                s3_secret_access_key: None,
                ..s.clone()
            };
            assert_eq!(
                format!("{again:?}"),
                format!("{without_secret:?}"),
                "{shown}"
            );
            assert_eq!(again.database_url(), "postgres://otter@db/otter");
            assert_eq!(again.trusted_proxies.len(), 2);
        }
        // The defaults' output is a valid file too.
        let d = Settings::default();
        let mut again = Settings::default();
        again.apply(
            Layer::from_toml(&d.show(true), "shown").unwrap(),
            Source::File,
        );
        assert_eq!(format!("{again:?}"), format!("{d:?}"));
    }

    #[test]
    fn bad_values_name_every_way_to_fix_them() {
        let e = Layer::from_env(|k| (k == "OTTER_LISTEN").then(|| "nope".to_string())).unwrap_err();
        assert!(
            e.0.contains("OTTER_LISTEN") && e.0.contains("`listen` in [http]"),
            "{}",
            e.0
        );
        let s = Settings {
            log_format: "xml".into(),
            ..Settings::default()
        };
        let e = s.validate().unwrap_err().0;
        assert!(
            e.contains("--log-format") && e.contains("OTTER_LOG_FORMAT") && e.contains("[server]"),
            "{e}"
        );
    }

    #[test]
    fn release_hygiene_settings_come_from_every_layer() {
        let mut s = Settings::default();
        assert_eq!(
            (
                s.blob_gc_interval_s,
                s.blob_gc_grace_s,
                s.manifest_max_future_s
            ),
            (3600, 3600, 600)
        );
        s.apply(
            file("[blobs]\ngc_interval_s = 60\ngc_grace_s = 120\n"),
            Source::File,
        );
        s.apply(env(&[("OTTER_MANIFEST_MAX_FUTURE_S", "30")]), Source::Env);
        assert_eq!(
            (
                s.blob_gc_interval_s,
                s.blob_gc_grace_s,
                s.manifest_max_future_s
            ),
            (60, 120, 30)
        );
        let shown = s.show(true);
        assert!(shown.contains("gc_grace_s = 120  # config file"), "{shown}");
        assert!(
            shown.contains("manifest_max_future_s = 30  # environment"),
            "{shown}"
        );
    }

    #[test]
    fn limits_layer_like_every_other_setting() {
        let mut s = Settings::default();
        assert_eq!(s.limits, Limits::default());
        s.apply(
            file("[limits]\ndevice_history_max = 50\ndevice_reports_per_minute = 10\n"),
            Source::File,
        );
        s.apply(env(&[("OTTER_DEVICE_HISTORY_MAX", "20")]), Source::Env);
        assert_eq!(s.limits.device_history_max, 20);
        assert_eq!(s.limits.device_reports_per_minute, 10);
        let shown = s.show(true);
        assert!(
            shown.contains("device_history_max = 20  # environment"),
            "{shown}"
        );
        assert!(
            shown.contains("device_reports_per_minute = 10  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("wal_size_limit_bytes = 16777216  # default"),
            "{shown}"
        );
        s.limits.wal_checkpoint_interval_s = 0;
        let e = s.validate().unwrap_err().0;
        assert!(e.contains("OTTER_WAL_CHECKPOINT_INTERVAL_S"), "{e}");
    }

    #[test]
    fn connection_and_download_limits_are_layered_settings() {
        let mut s = Settings::default();
        s.apply(
            file("[http]\nmax_connections = 100\nkeepalive_timeout_s = 5\n"),
            Source::File,
        );
        s.apply(
            env(&[
                ("OTTER_MAX_DOWNLOADS_PER_DEVICE", "4"),
                ("OTTER_HEADER_READ_TIMEOUT_S", "3"),
            ]),
            Source::Env,
        );
        assert_eq!((s.max_connections, s.keepalive_timeout_s), (100, 5));
        assert_eq!(
            (s.max_downloads_per_device, s.header_read_timeout_s),
            (4, 3)
        );
        let shown = s.show(true);
        assert!(
            shown.contains("max_connections = 100  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("max_per_device = 4  # environment"),
            "{shown}"
        );
        assert!(
            shown.contains("max_in_progress = 256  # default"),
            "{shown}"
        );
        let zero = Settings {
            max_downloads: 0,
            ..Settings::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_MAX_DOWNLOADS"));
    }

    #[test]
    fn fleet_limits_are_layered_settings() {
        let mut s = Settings::default();
        assert_eq!(
            (s.max_tags_per_device, s.device_filter_scan_max),
            (32, 20_000)
        );
        s.apply(file("[devices]\nmax_tags = 8\n"), Source::File);
        s.apply(
            env(&[("OTTER_DEVICE_FILTER_SCAN_MAX", "5000")]),
            Source::Env,
        );
        let shown = s.show(true);
        assert!(shown.contains("max_tags = 8  # config file"), "{shown}");
        assert!(
            shown.contains("filter_scan_max = 5000  # environment"),
            "{shown}"
        );
        s.validate().unwrap();
        s.max_tags_per_device = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_MAX_TAGS_PER_DEVICE"));
        s.max_tags_per_device = 8;
        s.device_filter_scan_max = 10;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("[devices] filter_scan_max"));
    }

    #[test]
    fn arduino_auth_throttle_is_a_layered_setting() {
        let mut s = Settings::default();
        assert_eq!(
            (
                s.arduino_auth_failures_per_minute,
                s.arduino_auth_failures_burst
            ),
            (10, 10)
        );
        s.apply(
            file("[arduino]\nauth_failures_per_minute = 3\n"),
            Source::File,
        );
        s.apply(
            env(&[("OTTER_ARDUINO_AUTH_FAILURES_BURST", "5")]),
            Source::Env,
        );
        assert_eq!(s.arduino_auth_failures_per_minute, 3);
        assert_eq!(s.arduino_auth_failures_burst, 5);
        let shown = s.show(true);
        assert!(
            shown.contains("auth_failures_per_minute = 3  # config file"),
            "{shown}"
        );
        s.arduino_auth_failures_burst = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("[arduino] auth_failures_burst"));
    }

    #[test]
    fn github_settings_are_layered_and_checked() {
        let mut s = Settings::default();
        assert_eq!(s.github_api_url, "https://api.github.com");
        s.apply(
            file("[github]\npoll_interval_s = 60\nreleases_per_poll = 5\n"),
            Source::File,
        );
        s.apply(
            env(&[("OTTER_GITHUB_API_URL", "http://127.0.0.1:9/api")]),
            Source::Env,
        );
        assert_eq!(
            (s.github_poll_interval_s, s.github_releases_per_poll),
            (60, 5)
        );
        assert_eq!(s.github_api_url, "http://127.0.0.1:9/api");
        let shown = s.show(true);
        assert!(
            shown.contains("api_url = \"http://127.0.0.1:9/api\"  # environment"),
            "{shown}"
        );
        assert!(s.validate().is_ok());
        s.github_releases_per_poll = 101;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("[github] releases_per_poll"));
        s.github_releases_per_poll = 5;
        s.github_api_url = "ftp://x".into();
        assert!(s.validate().unwrap_err().0.contains("[github] api_url"));
    }

    #[test]
    fn audit_budget_is_a_layered_setting() {
        let mut s = Settings::default();
        assert_eq!(s.audit_unauthenticated_per_minute, 60);
        s.apply(
            file("[audit]\nunauthenticated_per_minute = 10\n"),
            Source::File,
        );
        assert_eq!(s.audit_unauthenticated_per_minute, 10);
        s.apply(
            env(&[("OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE", "0")]),
            Source::Env,
        );
        assert_eq!(s.audit_unauthenticated_per_minute, 0);
        assert!(s
            .show(true)
            .contains("unauthenticated_per_minute = 0  # environment"));
        let bad = Layer::from_env(|k| {
            (k == "OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE").then(|| "-1".into())
        });
        assert!(bad
            .unwrap_err()
            .0
            .contains("OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE"));
    }

    #[test]
    fn trusted_proxies_are_a_layered_list() {
        let mut s = Settings::default();
        assert!(s.show(false).contains("trusted_proxies = []"));
        s.apply(
            file("[http]\ntrusted_proxies = [\"10.0.0.1\"]\n"),
            Source::File,
        );
        assert_eq!(s.trusted_proxies, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        s.apply(
            env(&[("OTTER_TRUSTED_PROXIES", "127.0.0.1, ::1")]),
            Source::Env,
        );
        assert!(s
            .show(true)
            .contains("trusted_proxies = [\"127.0.0.1\", \"::1\"]  # environment"));
        let bad = Layer::from_env(|k| (k == "OTTER_TRUSTED_PROXIES").then(|| "10.0.0.0/8".into()));
        assert!(bad.unwrap_err().0.contains("OTTER_TRUSTED_PROXIES"));
        assert!(Layer::from_toml("[http]\ntrusted_proxies = [\"proxy\"]", "f").is_err());
    }

    #[test]
    fn rollout_worker_interval_is_a_layered_setting() {
        let mut s = Settings::default();
        assert_eq!(s.rollout_eval_interval_s, 30);
        s.apply(file("[rollouts]\neval_interval_s = 10\n"), Source::File);
        assert_eq!(s.rollout_eval_interval_s, 10);
        s.apply(env(&[("OTTER_ROLLOUT_EVAL_INTERVAL_S", "5")]), Source::Env);
        assert!(s
            .show(true)
            .contains("[rollouts]\neval_interval_s = 5  # environment"));
        s.rollout_eval_interval_s = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_ROLLOUT_EVAL_INTERVAL_S"));
    }

    #[test]
    fn the_database_password_is_redacted_everywhere() {
        let mut s = Settings::default();
        s.apply(
            file("[database]\nurl = \"postgres://otter:hunter2@db/otter\"\n"),
            Source::File,
        );
        assert_eq!(s.database_url(), "postgres://otter:hunter2@db/otter");
        for text in [
            format!("{s:?}"),
            s.show(false),
            s.show(true),
            format!("{:?}", s.database_url),
            format!("{}", s.database_url.as_ref().unwrap()),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(s
            .show(true)
            .contains("# url = \"postgres://otter:***@db/otter\"  # config file"));
        // From the environment too, and in a bad value's error.
        let env = Layer::from_env(|k| {
            (k == "OTTER_DATABASE_URL").then(|| "postgres://u:hunter2@db/x".into())
        })
        .unwrap();
        assert!(!format!("{env:?}").contains("hunter2"));
        // A password with an `@` in it is hidden whole, and so is a `password=` parameter.
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
        for url in [
            "postgres://otter:hunter2@db:5432/otter?sslmode=require",
            "postgres://otter@db/otter?sslmode=require&password=hunter2",
        ] {
            let r = redact_url(url);
            assert!(!r.contains("hunter2") && r.contains("@db"), "{r}");
        }
        // The pool bounds are settings like any other, checked.
        let env = Layer::from_env(|k| match k {
            "OTTER_DATABASE_MAX_CONNECTIONS" => Some("3".into()),
            "OTTER_DATABASE_ACQUIRE_TIMEOUT_S" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        let mut pg = Settings::default();
        pg.apply(env, Source::Env);
        assert_eq!(pg.database_max_connections, 3);
        assert!(pg
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_DATABASE_ACQUIRE_TIMEOUT_S"));
        // An unset URL shows the SQLite default, commented out.
        assert!(Settings::default()
            .show(false)
            .contains("# url is unset: \"sqlite://otter-data/otter.db\""));
    }

    #[test]
    fn s3_settings_layer_validate_and_hide_the_secret() {
        let mut s = Settings::default();
        s.apply(
            file(
                "[blobs]\nbackend = \"s3\"\n[blobs.s3]\nbucket = \"fw\"\naccess_key_id = \"AKIA1\"\n\
                 secret_access_key = \"sup3rsecret\"\n",
            ),
            Source::File,
        );
        s.apply(
            env(&[
                ("OTTER_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("OTTER_DOWNLOAD_REDIRECT", "presigned"),
            ]),
            Source::Env,
        );
        let e = s.validate().unwrap_err().0;
        assert!(e.contains("OTTER_S3_ALLOW_HTTP"), "{e}");
        s.s3_allow_http = true;
        s.validate().unwrap();
        let shown = s.show(true);
        assert!(!shown.contains("sup3rsecret"), "{shown}");
        assert!(!format!("{s:?}").contains("sup3rsecret"));
        assert!(
            shown.contains("# secret_access_key = \"***\"  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("[downloads]\nredirect = \"presigned\"  # environment"),
            "{shown}"
        );
        assert!(
            shown.contains("region = \"us-east-1\"  # default"),
            "{shown}"
        );
        let from_env = env(&[("OTTER_S3_SECRET_ACCESS_KEY", "sup3rsecret")]);
        assert!(!format!("{from_env:?}").contains("sup3rsecret"));
        s.blob_backend = "local".into();
        let e = s.validate().unwrap_err().0;
        assert!(
            e.contains("[downloads] redirect") && e.contains("[blobs] backend"),
            "{e}"
        );
        s.download_redirect = "https://cdn.example.com/fw".into();
        s.validate().unwrap();
        s.download_redirect = "sometimes".into();
        assert!(s.validate().is_err());
        let no_bucket = Settings {
            blob_backend: "s3".into(),
            ..Settings::default()
        };
        assert!(no_bucket
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_S3_BUCKET"));
        let half = Settings {
            blob_backend: "s3".into(),
            s3_bucket: Some("b".into()),
            s3_access_key_id: Some("AKIA1".into()),
            ..Settings::default()
        };
        assert!(half.validate().is_err());
    }
}
