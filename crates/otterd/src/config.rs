//! Settings, layered: defaults < config file < `OTTER_*` environment < command-line flags.
//!
//! Every setting can come from any layer; `otterd config show --sources` prints each value
//! with the layer it came from. `Debug` redacts the database URL's password.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// The server's settings.
#[derive(Clone)]
pub struct Settings {
    /// Holds the SQLite database, the blobs and the initial admin token.
    pub data_dir: PathBuf,
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` (default `sqlite://<data_dir>/otter.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL this server holds open at most (SQLite ignores it).
    pub database_max_connections: u32,
    /// Seconds a query waits for a free PostgreSQL connection before it fails.
    pub database_acquire_timeout_s: u64,
    /// Largest release upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Base device poll interval in seconds (devices get it with ±10 % jitter).
    pub poll_interval_s: u64,
    /// Requests handled at once before new ones get 429.
    pub max_in_flight: usize,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Seconds to let requests finish on shutdown (downloads get this long too).
    pub shutdown_grace_s: u64,
    // --- Release hygiene (issue 8, items 12 and 18) ---
    /// Seconds between passes of the blob collector (blobs no release references, staging
    /// leftovers); it also runs once at start. 0: only at start.
    pub blob_gc_interval_s: u64,
    /// Blobs and staged uploads younger than this many seconds are never collected.
    pub blob_gc_grace_s: u64,
    /// How far, in seconds, a manifest's creation time may lie ahead of the server's clock.
    pub manifest_max_future_s: u64,
    // --- end of release hygiene ---
    /// Seconds between passes of the rollout worker (soak times, auto-advance, thresholds of
    /// stages whose devices changed; docs/rollouts.md). With several instances one runs it
    /// (a database lease of this length).
    pub rollout_eval_interval_s: u64,
    /// Bounds on device data and enrolment (see [`LIMIT_KEYS`]).
    pub limits: Limits,
    // --- Connections and downloads (issue 8, items 5 and 17) ---
    /// Open client connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Seconds a client may take to send a request's head once it sent its first byte.
    pub header_read_timeout_s: u64,
    /// Seconds a connection may stay open with no request in progress.
    pub keepalive_timeout_s: u64,
    /// Image downloads in progress at once (all devices); more get 429.
    pub max_downloads: usize,
    /// Image downloads in progress at once for one device; more get 429.
    pub max_downloads_per_device: usize,
    // --- end of connections and downloads ---
    // --- Devices and targeting (issue 9) ---
    /// Most tags one device may carry.
    pub max_tags_per_device: usize,
    /// Devices one page of `GET /api/v1/devices` examines at most for terms the database cannot
    /// evaluate (version order); the page then ends early and names where to continue.
    pub device_filter_scan_max: u64,
    // --- end of devices and targeting ---
    // --- Audit log (issue 9) ---
    /// Refused unauthenticated attempts (401) recorded one by one a minute; beyond it they are
    /// counted and recorded as one `audit.unrecorded` entry. 0: no limit.
    pub audit_unauthenticated_per_minute: u32,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed: for a request from one
    /// of them, the audit log records the client address the proxies forwarded too.
    pub trusted_proxies: Vec<IpAddr>,
    // --- end of audit log ---
    // --- Blob store and downloads (issue 9) ---
    /// Where blobs live: `local` (under `data_dir/blobs`) or `s3` (an S3-compatible bucket).
    pub blob_backend: String,
    /// The bucket, for `blob_backend = "s3"`.
    pub s3_bucket: Option<String>,
    /// Endpoint URL of an S3-compatible server (MinIO, Garage, Ceph ...); unset: AWS.
    pub s3_endpoint: Option<String>,
    /// The bucket's region.
    pub s3_region: String,
    /// Key prefix inside the bucket (e.g. `otter/`); empty: the bucket's root.
    pub s3_prefix: String,
    /// Access key id; unset: the AWS_* environment or the instance's role.
    pub s3_access_key_id: Option<String>,
    /// Secret access key (never shown).
    pub s3_secret_access_key: Option<Secret>,
    /// Allow plain `http://` endpoints (local test servers only).
    pub s3_allow_http: bool,
    /// What a device's `download_url` points at: `off` (otterd), `presigned` (a presigned URL
    /// of the S3 object) or a CDN base URL (`<base>/images/<sha256>`).
    pub download_redirect: String,
    /// Seconds a presigned download URL stays valid.
    pub download_presign_ttl_s: u64,
    // --- end of blob store and downloads ---
    // --- Arduino clients (issue 13) ---
    /// Failed HTTP Basic attempts on `/arduino/v1` a minute, sustained, per product and per
    /// client address (0: no limit). Beyond it `429` with `Retry-After`, the secret unchecked.
    pub arduino_auth_failures_per_minute: u32,
    /// Failed attempts allowed at once before the per-minute rate applies.
    pub arduino_auth_failures_burst: u32,
    // --- end of arduino clients ---
    // --- GitHub Releases as a source (issue 13) ---
    /// Base URL of the GitHub REST API (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api_url: String,
    /// Seconds between polls of the followed repositories' releases (0: never poll).
    pub github_poll_interval_s: u64,
    /// Seconds one request to GitHub (the release list, or one asset's download) may take.
    pub github_timeout_s: u64,
    /// Newest releases of a repository looked at in one poll (1 to 100).
    pub github_releases_per_poll: u32,
    /// A release private key (PKCS#8 PEM) for follows with `sign_on_import`: assets that are
    /// not bundles are signed with it at import (the weaker mode, docs/security.md).
    pub github_import_key_file: Option<PathBuf>,
    // --- end of github releases ---
    /// Where each value came from.
    pub sources: BTreeMap<&'static str, Source>,
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Settings {
            data_dir: PathBuf::from("otter-data"),
            listen: "127.0.0.1:8080".parse().unwrap(),
            database_url: None,
            database_max_connections: 10,
            database_acquire_timeout_s: 10,
            max_upload_bytes: 32 * 1024 * 1024,
            poll_interval_s: 3600,
            max_in_flight: 512,
            log_format: "text".into(),
            shutdown_grace_s: 30,
            // Release hygiene (issue 8, items 12 and 18).
            blob_gc_interval_s: 3600,
            blob_gc_grace_s: 3600,
            manifest_max_future_s: otter_core::publish::DEFAULT_MAX_FUTURE_S,
            rollout_eval_interval_s: 30,
            limits: Limits::default(),
            // --- Connections and downloads (issue 8, items 5 and 17) ---
            max_connections: 1024,
            header_read_timeout_s: 10,
            keepalive_timeout_s: 15,
            max_downloads: 256,
            max_downloads_per_device: 2,
            // --- end of connections and downloads ---
            // --- Devices and targeting (issue 9) ---
            max_tags_per_device: 32,
            device_filter_scan_max: 20_000,
            // --- end of devices and targeting ---
            // Audit log (issue 9).
            audit_unauthenticated_per_minute: 60,
            trusted_proxies: Vec::new(),
            // --- Blob store and downloads (issue 9) ---
            blob_backend: "local".into(),
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_prefix: String::new(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
            download_redirect: "off".into(),
            download_presign_ttl_s: 3600,
            // --- end of blob store and downloads ---
            // --- Arduino clients (issue 13) ---
            arduino_auth_failures_per_minute: 10,
            arduino_auth_failures_burst: 10,
            // --- end of arduino clients ---
            // --- GitHub Releases as a source (issue 13) ---
            github_api_url: "https://api.github.com".into(),
            github_poll_interval_s: 600,
            github_timeout_s: 120,
            github_releases_per_poll: 10,
            github_import_key_file: None,
            // --- end of github releases ---
            sources: BTreeMap::new(),
        };
        for &k in KEYS.iter().chain(LIMIT_KEYS.iter()) {
            s.sources.insert(k, Source::Default);
        }
        s
    }
}

const KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "database_url",
    "database_max_connections",
    "database_acquire_timeout_s",
    "max_upload_bytes",
    "poll_interval_s",
    "max_in_flight",
    "log_format",
    "shutdown_grace_s",
    // Release hygiene (issue 8, items 12 and 18).
    "blob_gc_interval_s",
    "blob_gc_grace_s",
    "manifest_max_future_s",
    "rollout_eval_interval_s",
    // --- Connections and downloads (issue 8, items 5 and 17) ---
    "max_connections",
    "header_read_timeout_s",
    "keepalive_timeout_s",
    "max_downloads",
    "max_downloads_per_device",
    // --- end of connections and downloads ---
    // --- Devices and targeting (issue 9) ---
    "max_tags_per_device",
    "device_filter_scan_max",
    // --- end of devices and targeting ---
    // Audit log (issue 9).
    "audit_unauthenticated_per_minute",
    "trusted_proxies",
    // --- Blob store and downloads (issue 9) ---
    "blob_backend",
    "s3_bucket",
    "s3_endpoint",
    "s3_region",
    "s3_prefix",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_allow_http",
    "download_redirect",
    "download_presign_ttl_s",
    // --- end of blob store and downloads ---
    // --- Arduino clients (issue 13) ---
    "arduino_auth_failures_per_minute",
    "arduino_auth_failures_burst",
    // --- end of arduino clients ---
    // --- GitHub Releases as a source (issue 13) ---
    "github_api_url",
    "github_poll_interval_s",
    "github_timeout_s",
    "github_releases_per_poll",
    "github_import_key_file",
    // --- end of github releases ---
];

/// The config file's shape (TOML); unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub database_max_connections: Option<u32>,
    pub database_acquire_timeout_s: Option<u64>,
    pub max_upload_bytes: Option<u64>,
    pub poll_interval_s: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub log_format: Option<String>,
    pub shutdown_grace_s: Option<u64>,
    // Release hygiene (issue 8, items 12 and 18).
    pub blob_gc_interval_s: Option<u64>,
    pub blob_gc_grace_s: Option<u64>,
    pub manifest_max_future_s: Option<u64>,
    pub rollout_eval_interval_s: Option<u64>,
    pub device_reports_per_minute: Option<u32>,
    pub device_reports_burst: Option<u32>,
    pub device_history_max: Option<u32>,
    pub wal_size_limit_bytes: Option<u64>,
    pub wal_checkpoint_interval_s: Option<u64>,
    // --- Connections and downloads (issue 8, items 5 and 17) ---
    pub max_connections: Option<usize>,
    pub header_read_timeout_s: Option<u64>,
    pub keepalive_timeout_s: Option<u64>,
    pub max_downloads: Option<usize>,
    pub max_downloads_per_device: Option<usize>,
    // --- end of connections and downloads ---
    // --- Devices and targeting (issue 9) ---
    pub max_tags_per_device: Option<usize>,
    pub device_filter_scan_max: Option<u64>,
    // --- end of devices and targeting ---
    // Audit log (issue 9).
    pub audit_unauthenticated_per_minute: Option<u32>,
    pub trusted_proxies: Option<Vec<IpAddr>>,
    // --- Blob store and downloads (issue 9) ---
    pub blob_backend: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_prefix: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    pub s3_allow_http: Option<bool>,
    pub download_redirect: Option<String>,
    pub download_presign_ttl_s: Option<u64>,
    // --- end of blob store and downloads ---
    // --- Arduino clients (issue 13) ---
    pub arduino_auth_failures_per_minute: Option<u32>,
    pub arduino_auth_failures_burst: Option<u32>,
    // --- end of arduino clients ---
    // --- GitHub Releases as a source (issue 13) ---
    pub github_api_url: Option<String>,
    pub github_poll_interval_s: Option<u64>,
    pub github_timeout_s: Option<u64>,
    pub github_releases_per_poll: Option<u32>,
    pub github_import_key_file: Option<PathBuf>,
    // --- end of github releases ---
}

/// A settings error that names the flag, the variable and the key to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn env_name(key: &str) -> String {
    format!("OTTER_{}", key.to_ascii_uppercase())
}

impl Layer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }

    /// Reads `OTTER_*` variables from `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        fn parse<T: std::str::FromStr>(
            key: &str,
            v: Option<String>,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.map(|v| {
                v.parse::<T>().map_err(|e| {
                    ConfigError(format!(
                        "{}={v:?} is not valid: {e} (also settable as `{key}` in the config file)",
                        env_name(key)
                    ))
                })
            })
            .transpose()
        }
        let g = |k: &str| get(&env_name(k)).filter(|v| !v.is_empty());
        Ok(Layer {
            data_dir: g("data_dir").map(PathBuf::from),
            listen: parse("listen", g("listen"))?,
            database_url: g("database_url"),
            database_max_connections: parse(
                "database_max_connections",
                g("database_max_connections"),
            )?,
            database_acquire_timeout_s: parse(
                "database_acquire_timeout_s",
                g("database_acquire_timeout_s"),
            )?,
            max_upload_bytes: parse("max_upload_bytes", g("max_upload_bytes"))?,
            poll_interval_s: parse("poll_interval_s", g("poll_interval_s"))?,
            max_in_flight: parse("max_in_flight", g("max_in_flight"))?,
            log_format: g("log_format"),
            shutdown_grace_s: parse("shutdown_grace_s", g("shutdown_grace_s"))?,
            // Release hygiene (issue 8, items 12 and 18).
            blob_gc_interval_s: parse("blob_gc_interval_s", g("blob_gc_interval_s"))?,
            blob_gc_grace_s: parse("blob_gc_grace_s", g("blob_gc_grace_s"))?,
            manifest_max_future_s: parse("manifest_max_future_s", g("manifest_max_future_s"))?,
            rollout_eval_interval_s: parse(
                "rollout_eval_interval_s",
                g("rollout_eval_interval_s"),
            )?,
            device_reports_per_minute: parse(
                "device_reports_per_minute",
                g("device_reports_per_minute"),
            )?,
            device_reports_burst: parse("device_reports_burst", g("device_reports_burst"))?,
            device_history_max: parse("device_history_max", g("device_history_max"))?,
            wal_size_limit_bytes: parse("wal_size_limit_bytes", g("wal_size_limit_bytes"))?,
            wal_checkpoint_interval_s: parse(
                "wal_checkpoint_interval_s",
                g("wal_checkpoint_interval_s"),
            )?,
            // --- Connections and downloads (issue 8, items 5 and 17) ---
            max_connections: parse("max_connections", g("max_connections"))?,
            header_read_timeout_s: parse("header_read_timeout_s", g("header_read_timeout_s"))?,
            keepalive_timeout_s: parse("keepalive_timeout_s", g("keepalive_timeout_s"))?,
            max_downloads: parse("max_downloads", g("max_downloads"))?,
            max_downloads_per_device: parse(
                "max_downloads_per_device",
                g("max_downloads_per_device"),
            )?,
            // --- end of connections and downloads ---
            // --- Devices and targeting (issue 9) ---
            max_tags_per_device: parse("max_tags_per_device", g("max_tags_per_device"))?,
            device_filter_scan_max: parse("device_filter_scan_max", g("device_filter_scan_max"))?,
            // --- end of devices and targeting ---
            // Audit log (issue 9).
            audit_unauthenticated_per_minute: parse(
                "audit_unauthenticated_per_minute",
                g("audit_unauthenticated_per_minute"),
            )?,
            trusted_proxies: g("trusted_proxies")
                .map(|v| {
                    v.split(',')
                        .map(|a| {
                            a.trim().parse::<IpAddr>().map_err(|e| {
                                ConfigError(format!(
                                    "{}={v:?} is not valid: {a:?}: {e}; give IP addresses separated by commas (also settable as `trusted_proxies` in the config file)",
                                    env_name("trusted_proxies")
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?,
            // --- Blob store and downloads (issue 9) ---
            blob_backend: g("blob_backend"),
            s3_bucket: g("s3_bucket"),
            s3_endpoint: g("s3_endpoint"),
            s3_region: g("s3_region"),
            s3_prefix: g("s3_prefix"),
            s3_access_key_id: g("s3_access_key_id"),
            s3_secret_access_key: g("s3_secret_access_key").map(Secret),
            s3_allow_http: parse("s3_allow_http", g("s3_allow_http"))?,
            download_redirect: g("download_redirect"),
            download_presign_ttl_s: parse("download_presign_ttl_s", g("download_presign_ttl_s"))?,
            // --- end of blob store and downloads ---
            // --- Arduino clients (issue 13) ---
            arduino_auth_failures_per_minute: parse(
                "arduino_auth_failures_per_minute",
                g("arduino_auth_failures_per_minute"),
            )?,
            arduino_auth_failures_burst: parse(
                "arduino_auth_failures_burst",
                g("arduino_auth_failures_burst"),
            )?,
            // --- end of arduino clients ---
            // --- GitHub Releases as a source (issue 13) ---
            github_api_url: g("github_api_url"),
            github_poll_interval_s: parse("github_poll_interval_s", g("github_poll_interval_s"))?,
            github_timeout_s: parse("github_timeout_s", g("github_timeout_s"))?,
            github_releases_per_poll: parse(
                "github_releases_per_poll",
                g("github_releases_per_poll"),
            )?,
            github_import_key_file: g("github_import_key_file").map(PathBuf::from),
            // --- end of github releases ---
        })
    }
}

impl Settings {
    /// Applies one layer on top.
    pub fn apply(&mut self, layer: Layer, source: Source) {
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = layer.$field {
                    self.$field = v;
                    self.sources.insert(stringify!($field), source);
                }
            };
        }
        set!(data_dir);
        set!(listen);
        if let Some(v) = layer.database_url {
            self.database_url = Some(v);
            self.sources.insert("database_url", source);
        }
        set!(database_max_connections);
        set!(database_acquire_timeout_s);
        set!(max_upload_bytes);
        set!(poll_interval_s);
        set!(max_in_flight);
        set!(log_format);
        set!(shutdown_grace_s);
        // Release hygiene (issue 8, items 12 and 18).
        set!(blob_gc_interval_s);
        set!(blob_gc_grace_s);
        set!(manifest_max_future_s);
        set!(rollout_eval_interval_s);
        macro_rules! set_limit {
            ($field:ident) => {
                if let Some(v) = layer.$field {
                    self.limits.$field = v;
                    self.sources.insert(stringify!($field), source);
                }
            };
        }
        set_limit!(device_reports_per_minute);
        set_limit!(device_reports_burst);
        set_limit!(device_history_max);
        set_limit!(wal_size_limit_bytes);
        set_limit!(wal_checkpoint_interval_s);
        // --- Connections and downloads (issue 8, items 5 and 17) ---
        set!(max_connections);
        set!(header_read_timeout_s);
        set!(keepalive_timeout_s);
        set!(max_downloads);
        set!(max_downloads_per_device);
        // --- end of connections and downloads ---
        // --- Devices and targeting (issue 9) ---
        set!(max_tags_per_device);
        set!(device_filter_scan_max);
        // --- end of devices and targeting ---
        // Audit log (issue 9).
        set!(audit_unauthenticated_per_minute);
        set!(trusted_proxies);
        // --- Blob store and downloads (issue 9) ---
        macro_rules! set_some {
            ($field:ident) => {
                if let Some(v) = layer.$field {
                    self.$field = Some(v);
                    self.sources.insert(stringify!($field), source);
                }
            };
        }
        set!(blob_backend);
        set_some!(s3_bucket);
        set_some!(s3_endpoint);
        set!(s3_region);
        set!(s3_prefix);
        set_some!(s3_access_key_id);
        set_some!(s3_secret_access_key);
        set!(s3_allow_http);
        set!(download_redirect);
        set!(download_presign_ttl_s);
        // --- end of blob store and downloads ---
        // --- Arduino clients (issue 13) ---
        set!(arduino_auth_failures_per_minute);
        set!(arduino_auth_failures_burst);
        // --- end of arduino clients ---
        // --- GitHub Releases as a source (issue 13) ---
        set!(github_api_url);
        set!(github_poll_interval_s);
        set!(github_timeout_s);
        set!(github_releases_per_poll);
        if let Some(v) = layer.github_import_key_file {
            self.github_import_key_file = Some(v);
            self.sources.insert("github_import_key_file", source);
        }
        // --- end of github releases ---
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError(format!(
                "{key} {why}: set it with --{} , {} or `{key}` in the config file",
                key.replace('_', "-"),
                env_name(key)
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
        if self.database_max_connections == 0 {
            return bad("database_max_connections", "must be at least 1");
        }
        if self.database_acquire_timeout_s == 0 {
            return bad("database_acquire_timeout_s", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
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
                    return bad("s3_bucket", "must name a bucket when blob_backend is `s3`");
                }
                if self.s3_access_key_id.is_some() != self.s3_secret_access_key.is_some() {
                    return bad(
                        "s3_secret_access_key",
                        "and s3_access_key_id must be set together (or neither, for the AWS_* environment)",
                    );
                }
                if let Some(e) = &self.s3_endpoint {
                    if !(e.starts_with("https://") || e.starts_with("http://")) {
                        return bad("s3_endpoint", "must be an http:// or https:// URL");
                    }
                    if e.starts_with("http://") && !self.s3_allow_http {
                        return bad(
                            "s3_allow_http",
                            "must be true for a plain http:// s3_endpoint (test servers only)",
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
                    "is `presigned`, which needs blob_backend = `s3`",
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
        // --- Arduino clients (issue 13) ---
        if self.arduino_auth_failures_per_minute > 0 && self.arduino_auth_failures_burst == 0 {
            return bad(
                "arduino_auth_failures_burst",
                "must be at least 1 while arduino_auth_failures_per_minute limits failures",
            );
        }
        // --- end of arduino clients ---
        // --- GitHub Releases as a source (issue 13) ---
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
        // --- end of github releases ---
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("otter.db").display()))
    }

    /// `key = value  # source` lines, secrets redacted.
    pub fn show(&self, with_sources: bool) -> String {
        let values: Vec<(&str, String)> = vec![
            (
                "data_dir",
                format!("{:?}", self.data_dir.display().to_string()),
            ),
            ("listen", format!("{:?}", self.listen.to_string())),
            (
                "database_url",
                format!("{:?}", redact_url(&self.database_url())),
            ),
            (
                "database_max_connections",
                self.database_max_connections.to_string(),
            ),
            (
                "database_acquire_timeout_s",
                self.database_acquire_timeout_s.to_string(),
            ),
            ("max_upload_bytes", self.max_upload_bytes.to_string()),
            ("poll_interval_s", self.poll_interval_s.to_string()),
            ("max_in_flight", self.max_in_flight.to_string()),
            ("log_format", format!("{:?}", self.log_format)),
            ("shutdown_grace_s", self.shutdown_grace_s.to_string()),
            // Release hygiene (issue 8, items 12 and 18).
            ("blob_gc_interval_s", self.blob_gc_interval_s.to_string()),
            ("blob_gc_grace_s", self.blob_gc_grace_s.to_string()),
            (
                "manifest_max_future_s",
                self.manifest_max_future_s.to_string(),
            ),
            (
                "rollout_eval_interval_s",
                self.rollout_eval_interval_s.to_string(),
            ),
            // --- Connections and downloads (issue 8, items 5 and 17) ---
            ("max_connections", self.max_connections.to_string()),
            (
                "header_read_timeout_s",
                self.header_read_timeout_s.to_string(),
            ),
            ("keepalive_timeout_s", self.keepalive_timeout_s.to_string()),
            ("max_downloads", self.max_downloads.to_string()),
            (
                "max_downloads_per_device",
                self.max_downloads_per_device.to_string(),
            ),
            // --- end of connections and downloads ---
            // --- Devices and targeting (issue 9) ---
            ("max_tags_per_device", self.max_tags_per_device.to_string()),
            (
                "device_filter_scan_max",
                self.device_filter_scan_max.to_string(),
            ),
            // --- end of devices and targeting ---
            // Audit log (issue 9).
            (
                "audit_unauthenticated_per_minute",
                self.audit_unauthenticated_per_minute.to_string(),
            ),
            (
                "trusted_proxies",
                format!(
                    "[{}]",
                    self.trusted_proxies
                        .iter()
                        .map(|a| format!("{:?}", a.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            // --- Blob store and downloads (issue 9) ---
            ("blob_backend", format!("{:?}", self.blob_backend)),
            ("s3_bucket", show_opt(self.s3_bucket.as_deref())),
            ("s3_endpoint", show_opt(self.s3_endpoint.as_deref())),
            ("s3_region", format!("{:?}", self.s3_region)),
            ("s3_prefix", format!("{:?}", self.s3_prefix)),
            (
                "s3_access_key_id",
                show_opt(self.s3_access_key_id.as_deref()),
            ),
            (
                "s3_secret_access_key",
                show_opt(self.s3_secret_access_key.as_ref().map(|_| "***")),
            ),
            ("s3_allow_http", self.s3_allow_http.to_string()),
            ("download_redirect", format!("{:?}", self.download_redirect)),
            (
                "download_presign_ttl_s",
                self.download_presign_ttl_s.to_string(),
            ),
            // --- end of blob store and downloads ---
            // --- Arduino clients (issue 13) ---
            (
                "arduino_auth_failures_per_minute",
                self.arduino_auth_failures_per_minute.to_string(),
            ),
            (
                "arduino_auth_failures_burst",
                self.arduino_auth_failures_burst.to_string(),
            ),
            // --- end of arduino clients ---
            // --- GitHub Releases as a source (issue 13) ---
            ("github_api_url", format!("{:?}", self.github_api_url)),
            (
                "github_poll_interval_s",
                self.github_poll_interval_s.to_string(),
            ),
            ("github_timeout_s", self.github_timeout_s.to_string()),
            (
                "github_releases_per_poll",
                self.github_releases_per_poll.to_string(),
            ),
            (
                "github_import_key_file",
                format!(
                    "{:?}",
                    self.github_import_key_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ),
            // --- end of github releases ---
        ];
        let mut out = String::new();
        for (k, v) in values.into_iter().chain(self.limits.values()) {
            if with_sources {
                out.push_str(&format!("{k} = {v}  # {}\n", self.sources[k]));
            } else {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}

// --- Limits on device data and enrolment (issue 8, items 6 and 14) ---------------------------

/// Keys of [`Limits`], as in the config file (`OTTER_<KEY>` in the environment).
pub const LIMIT_KEYS: [&str; 5] = [
    "device_reports_per_minute",
    "device_reports_burst",
    "device_history_max",
    "wal_size_limit_bytes",
    "wal_checkpoint_interval_s",
];

/// Bounds on what devices can make the server store, and on the database's log
/// (docs/configuration.md, "Limits"; docs/security.md says what each protects against).
/// Per-product enrolment bounds are not here: admins set them per product
/// (`otter product update`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Status reports a device may send a minute, sustained (0: no limit). Beyond it the device
    /// gets `429` with `Retry-After`.
    pub device_reports_per_minute: u32,
    /// Reports a device may send at once before the per-minute rate applies.
    pub device_reports_burst: u32,
    /// Newest history events kept per device (0: keep all).
    pub device_history_max: u32,
    /// SQLite `journal_size_limit`: the write-ahead log is cut back to this size after a
    /// checkpoint.
    pub wal_size_limit_bytes: u64,
    /// Seconds between checkpoints that empty the write-ahead log.
    pub wal_checkpoint_interval_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            device_reports_per_minute: 60,
            device_reports_burst: 60,
            device_history_max: 1000,
            wal_size_limit_bytes: 16 * 1024 * 1024,
            wal_checkpoint_interval_s: 60,
        }
    }
}

impl Limits {
    fn values(&self) -> [(&'static str, String); 5] {
        [
            (
                "device_reports_per_minute",
                self.device_reports_per_minute.to_string(),
            ),
            (
                "device_reports_burst",
                self.device_reports_burst.to_string(),
            ),
            ("device_history_max", self.device_history_max.to_string()),
            (
                "wal_size_limit_bytes",
                self.wal_size_limit_bytes.to_string(),
            ),
            (
                "wal_checkpoint_interval_s",
                self.wal_checkpoint_interval_s.to_string(),
            ),
        ]
    }
}

// --- end of limits ---------------------------------------------------------------------------

// --- Blob store and downloads (issue 9) ---

/// A secret setting: `Debug` and `Display` show `***`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
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

/// An optional string as `config show` prints it (`""` when unset).
fn show_opt(v: Option<&str>) -> String {
    format!("{:?}", v.unwrap_or(""))
}

// --- end of blob store and downloads ---

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

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url()))
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("poll_interval_s", &self.poll_interval_s)
            .field("max_in_flight", &self.max_in_flight)
            .field("limits", &self.limits)
            .field("blob_backend", &self.blob_backend)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &self.s3_secret_access_key)
            .field("download_redirect", &self.download_redirect)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_remember_their_source() {
        let mut s = Settings::default();
        let file: Layer =
            toml::from_str("listen = \"127.0.0.1:9000\"\npoll_interval_s = 60\n").unwrap();
        s.apply(file, Source::File);
        let env =
            Layer::from_env(|k| (k == "OTTER_POLL_INTERVAL_S").then(|| "30".to_string())).unwrap();
        s.apply(env, Source::Env);
        s.apply(
            Layer {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            },
            Source::Flag,
        );
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.poll_interval_s, 30);
        assert_eq!(s.sources["listen"], Source::File);
        assert_eq!(s.sources["poll_interval_s"], Source::Env);
        assert_eq!(s.sources["data_dir"], Source::Flag);
        assert_eq!(s.sources["max_in_flight"], Source::Default);
        assert!(s.show(true).contains("poll_interval_s = 30  # environment"));
    }

    #[test]
    fn bad_values_name_every_way_to_fix_them() {
        let e = Layer::from_env(|k| (k == "OTTER_LISTEN").then(|| "nope".to_string())).unwrap_err();
        assert!(
            e.0.contains("OTTER_LISTEN") && e.0.contains("`listen`"),
            "{}",
            e.0
        );
        assert!(toml::from_str::<Layer>("bogus = 1").is_err());
        let s = Settings {
            log_format: "xml".into(),
            ..Settings::default()
        };
        let e = s.validate().unwrap_err().0;
        assert!(
            e.contains("--log-format") && e.contains("OTTER_LOG_FORMAT"),
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
            toml::from_str("blob_gc_interval_s = 60\nblob_gc_grace_s = 120\n").unwrap(),
            Source::File,
        );
        s.apply(
            Layer::from_env(|k| (k == "OTTER_MANIFEST_MAX_FUTURE_S").then(|| "30".to_string()))
                .unwrap(),
            Source::Env,
        );
        assert_eq!(
            (
                s.blob_gc_interval_s,
                s.blob_gc_grace_s,
                s.manifest_max_future_s
            ),
            (60, 120, 30)
        );
        let shown = s.show(true);
        assert!(
            shown.contains("blob_gc_grace_s = 120  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("manifest_max_future_s = 30  # environment"),
            "{shown}"
        );
    }

    #[test]
    fn limits_layer_like_every_other_setting() {
        let mut s = Settings::default();
        assert_eq!(s.limits, Limits::default());
        let file: Layer =
            toml::from_str("device_history_max = 50\ndevice_reports_per_minute = 10\n").unwrap();
        s.apply(file, Source::File);
        let env = Layer::from_env(|k| (k == "OTTER_DEVICE_HISTORY_MAX").then(|| "20".to_string()))
            .unwrap();
        s.apply(env, Source::Env);
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
        let file: Layer =
            toml::from_str("max_connections = 100\nkeepalive_timeout_s = 5\n").unwrap();
        s.apply(file, Source::File);
        let env = Layer::from_env(|k| match k {
            "OTTER_MAX_DOWNLOADS_PER_DEVICE" => Some("4".into()),
            "OTTER_HEADER_READ_TIMEOUT_S" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        s.apply(env, Source::Env);
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
            shown.contains("max_downloads_per_device = 4  # environment"),
            "{shown}"
        );
        assert!(shown.contains("max_downloads = 256  # default"), "{shown}");
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
        s.apply(
            toml::from_str("max_tags_per_device = 8\n").unwrap(),
            Source::File,
        );
        s.apply(
            Layer::from_env(|k| (k == "OTTER_DEVICE_FILTER_SCAN_MAX").then(|| "5000".into()))
                .unwrap(),
            Source::Env,
        );
        let shown = s.show(true);
        assert!(
            shown.contains("max_tags_per_device = 8  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("device_filter_scan_max = 5000  # environment"),
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
            .contains("device_filter_scan_max"));
    }

    #[test]
    fn audit_budget_is_a_layered_setting() {
        let mut s = Settings::default();
        assert_eq!(s.audit_unauthenticated_per_minute, 60);
        let file: Layer = toml::from_str("audit_unauthenticated_per_minute = 10\n").unwrap();
        s.apply(file, Source::File);
        assert_eq!(s.audit_unauthenticated_per_minute, 10);
        let env = Layer::from_env(|k| {
            (k == "OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE").then(|| "0".into())
        })
        .unwrap();
        s.apply(env, Source::Env);
        assert_eq!(s.audit_unauthenticated_per_minute, 0);
        assert!(s
            .show(true)
            .contains("audit_unauthenticated_per_minute = 0  # environment"));
        let bad = Layer::from_env(|k| {
            (k == "OTTER_AUDIT_UNAUTHENTICATED_PER_MINUTE").then(|| "-1".into())
        });
        assert!(bad
            .unwrap_err()
            .0
            .contains("audit_unauthenticated_per_minute"));
    }

    #[test]
    fn trusted_proxies_are_a_layered_list() {
        let mut s = Settings::default();
        assert!(s.show(false).contains("trusted_proxies = []"));
        let file: Layer = toml::from_str("trusted_proxies = [\"10.0.0.1\"]\n").unwrap();
        s.apply(file, Source::File);
        assert_eq!(s.trusted_proxies, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let env =
            Layer::from_env(|k| (k == "OTTER_TRUSTED_PROXIES").then(|| "127.0.0.1, ::1".into()))
                .unwrap();
        s.apply(env, Source::Env);
        assert!(s
            .show(true)
            .contains("trusted_proxies = [\"127.0.0.1\", \"::1\"]  # environment"));
        let bad = Layer::from_env(|k| (k == "OTTER_TRUSTED_PROXIES").then(|| "10.0.0.0/8".into()));
        assert!(bad.unwrap_err().0.contains("OTTER_TRUSTED_PROXIES"));
        assert!(toml::from_str::<Layer>("trusted_proxies = [\"proxy\"]").is_err());
    }

    #[test]
    fn rollout_worker_interval_is_a_layered_setting() {
        let mut s = Settings::default();
        assert_eq!(s.rollout_eval_interval_s, 30);
        s.apply(
            toml::from_str("rollout_eval_interval_s = 10\n").unwrap(),
            Source::File,
        );
        assert_eq!(s.rollout_eval_interval_s, 10);
        s.apply(
            Layer::from_env(|k| (k == "OTTER_ROLLOUT_EVAL_INTERVAL_S").then(|| "5".to_string()))
                .unwrap(),
            Source::Env,
        );
        assert!(s
            .show(true)
            .contains("rollout_eval_interval_s = 5  # environment"));
        s.rollout_eval_interval_s = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_ROLLOUT_EVAL_INTERVAL_S"));
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Settings {
            database_url: Some("postgres://otter:hunter2@db/otter".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.show(true).contains("hunter2"));
        let env = Layer::from_env(|k| match k {
            "OTTER_DATABASE_MAX_CONNECTIONS" => Some("3".into()),
            "OTTER_DATABASE_ACQUIRE_TIMEOUT_S" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        let mut pg = s.clone();
        pg.apply(env, Source::Env);
        assert_eq!(pg.database_max_connections, 3);
        assert!(pg
            .show(true)
            .contains("database_max_connections = 3  # environment"));
        assert!(pg
            .validate()
            .unwrap_err()
            .0
            .contains("OTTER_DATABASE_ACQUIRE_TIMEOUT_S"));
        for url in [
            "postgres://otter:hunter2@db:5432/otter?sslmode=require",
            "postgres://otter:p@hunter2@db/otter",
            "postgres://otter@db/otter?sslmode=require&password=hunter2",
        ] {
            let r = redact_url(url);
            assert!(!r.contains("hunter2"), "{r}");
            assert!(r.contains("db"), "{r}");
        }
        assert!(!s.show(false).contains("hunter2"));
    }

    #[test]
    fn s3_settings_layer_validate_and_hide_the_secret() {
        let mut s = Settings::default();
        s.apply(
            toml::from_str(
                "blob_backend = \"s3\"\ns3_bucket = \"fw\"\ns3_access_key_id = \"AKIA1\"\ns3_secret_access_key = \"sup3rsecret\"\n",
            )
            .unwrap(),
            Source::File,
        );
        let env = Layer::from_env(|k| match k {
            "OTTER_S3_ENDPOINT" => Some("http://127.0.0.1:9000".into()),
            "OTTER_DOWNLOAD_REDIRECT" => Some("presigned".into()),
            _ => None,
        })
        .unwrap();
        s.apply(env, Source::Env);
        let e = s.validate().unwrap_err().0;
        assert!(e.contains("OTTER_S3_ALLOW_HTTP"), "{e}");
        s.s3_allow_http = true;
        s.validate().unwrap();
        let shown = s.show(true);
        assert!(!shown.contains("sup3rsecret"), "{shown}");
        assert!(!format!("{s:?}").contains("sup3rsecret"));
        assert!(
            shown.contains("s3_secret_access_key = \"***\"  # config file"),
            "{shown}"
        );
        assert!(
            shown.contains("download_redirect = \"presigned\"  # environment"),
            "{shown}"
        );
        assert!(
            shown.contains("s3_region = \"us-east-1\"  # default"),
            "{shown}"
        );
        s.blob_backend = "local".into();
        let e = s.validate().unwrap_err().0;
        assert!(
            e.contains("download_redirect") && e.contains("blob_backend"),
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
            toml::from_str("arduino_auth_failures_per_minute = 3\n").unwrap(),
            Source::File,
        );
        s.apply(
            Layer::from_env(|k| {
                (k == "OTTER_ARDUINO_AUTH_FAILURES_BURST").then(|| "5".to_string())
            })
            .unwrap(),
            Source::Env,
        );
        assert_eq!(s.arduino_auth_failures_per_minute, 3);
        assert_eq!(s.arduino_auth_failures_burst, 5);
        let shown = s.show(true);
        assert!(
            shown.contains("arduino_auth_failures_per_minute = 3  # config file"),
            "{shown}"
        );
        s.arduino_auth_failures_burst = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("arduino_auth_failures_burst"));
    }

    #[test]
    fn github_settings_are_layered_and_checked() {
        let mut s = Settings::default();
        assert_eq!(s.github_api_url, "https://api.github.com");
        s.apply(
            toml::from_str("github_poll_interval_s = 60\ngithub_releases_per_poll = 5\n").unwrap(),
            Source::File,
        );
        s.apply(
            Layer::from_env(|k| {
                (k == "OTTER_GITHUB_API_URL").then(|| "http://127.0.0.1:9/api".to_string())
            })
            .unwrap(),
            Source::Env,
        );
        assert_eq!(
            (s.github_poll_interval_s, s.github_releases_per_poll),
            (60, 5)
        );
        assert_eq!(s.github_api_url, "http://127.0.0.1:9/api");
        let shown = s.show(true);
        assert!(
            shown.contains("github_api_url = \"http://127.0.0.1:9/api\"  # environment"),
            "{shown}"
        );
        assert!(s.validate().is_ok());
        s.github_releases_per_poll = 101;
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("github_releases_per_poll"));
        s.github_releases_per_poll = 5;
        s.github_api_url = "ftp://x".into();
        assert!(s.validate().unwrap_err().0.contains("github_api_url"));
    }
}
