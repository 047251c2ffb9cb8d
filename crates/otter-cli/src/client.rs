//! The HTTP client of the management API: authentication, JSON errors mapped to exit codes,
//! retries after `429`, and streaming uploads with a progress bar.

use std::io::Read;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::{CliError, CliResult, Exit};

/// How often a request refused with `429 overloaded` is tried again.
const OVERLOAD_RETRIES: u32 = 3;
/// The longest `Retry-After` the CLI honours before giving up.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Where the server is and who we are.
pub struct Api {
    base: String,
    token: String,
    http: Client,
}

impl Api {
    /// Builds a client from `--server`/`OTTER_SERVER` and `--token`/`OTTER_TOKEN`.
    pub fn new(server: Option<&str>, token: Option<&str>) -> CliResult<Api> {
        let base = server
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CliError::usage(
                    "no server given: pass --server https://otter.example.com or set OTTER_SERVER",
                )
            })?
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::usage(format!(
                "the server {base:?} must start with https:// (or http:// for a local test server)"
            )));
        }
        check_base_url(&base)?;
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CliError::new(
                    Exit::Auth,
                    "unauthorized",
                    "no API token given: pass --token or set OTTER_TOKEN (an admin creates one with `otter token create`)",
                )
            })?
            .to_string();
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None::<Duration>)
            .user_agent(concat!("otter-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::new(Exit::Server, "client", e.to_string()))?;
        Ok(Api { base, token, http })
    }

    pub fn get(&self, path: &str) -> CliResult<Value> {
        self.json(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.json(Method::POST, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.json(Method::PATCH, path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.json(Method::PUT, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> CliResult<Value> {
        self.json(Method::DELETE, path, None)
    }

    /// `DELETE` with a JSON body (e.g. the tags to remove).
    pub fn delete_json(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.json(Method::DELETE, path, Some(body))
    }

    /// Every item of a paged list (docs/api.md, "Pages"), following `next`; at most `max` items
    /// when given. Answers `{key: [...]}`, plus `"next"` when `max` cut the list short.
    pub fn get_all(&self, path: &str, key: &str, max: Option<usize>) -> CliResult<Value> {
        // Items per request: the server's most, unless OTTER_PAGE_SIZE says less.
        let page_size = std::env::var("OTTER_PAGE_SIZE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=1000).contains(n))
            .unwrap_or(1000);
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = max.map_or(page_size, |m| (m - items.len()).clamp(1, page_size));
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit={want}&cursor={c}"),
                None => format!("{path}{sep}limit={want}"),
            };
            let mut page = self.get(&url)?;
            if let Some(a) = page[key].as_array_mut() {
                items.append(a);
            }
            cursor = page["next"].as_str().map(str::to_owned);
            let full = max.is_some_and(|m| items.len() >= m);
            if cursor.is_none() || full {
                let mut out = serde_json::json!({ key: items });
                if let (true, Some(c)) = (full, cursor) {
                    out["next"] = Value::String(c);
                }
                return Ok(out);
            }
        }
    }

    /// Posts a text body of the given type (e.g. a CSV).
    pub fn post_text(&self, path: &str, body: &str, content_type: &str) -> CliResult<Value> {
        let response = self.send(|| {
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.to_string())
        })?;
        read_json(response)
    }

    fn json(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let response = self.send(|| {
            let r = self.request(method.clone(), path);
            match body {
                Some(b) => r.json(b),
                None => r,
            }
        })?;
        read_json(response)
    }

    /// Posts a small binary body (no progress bar).
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> CliResult<Value> {
        let response = self.send(|| {
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec())
        })?;
        read_json(response)
    }

    /// Uploads bytes, showing a progress bar on a terminal.
    pub fn upload(&self, path: &str, bytes: &[u8], show_progress: bool) -> CliResult<Value> {
        let bar = if show_progress {
            let bar = ProgressBar::new(bytes.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let response = self.send(|| {
            bar.reset();
            let reader = ProgressReader {
                inner: std::io::Cursor::new(bytes.to_vec()),
                bar: bar.clone(),
            };
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::sized(reader, bytes.len() as u64))
        });
        bar.finish_and_clear();
        read_json(response?)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends, waiting and retrying while the server answers `429`.
    fn send(&self, build: impl Fn() -> RequestBuilder) -> CliResult<Response> {
        let mut attempt = 0;
        loop {
            let response = build().send().map_err(|e| self.unreachable(e))?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS || attempt == OVERLOAD_RETRIES {
                return Ok(response);
            }
            attempt += 1;
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1))
                .min(MAX_RETRY_WAIT);
            std::thread::sleep(wait);
        }
    }

    fn unreachable(&self, err: reqwest::Error) -> CliError {
        let mut cause = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        // A TLS handshake answered in plain HTTP: rustls sees an "InvalidContentType" record.
        if let Some(rest) = self.base.strip_prefix("https://") {
            if cause.contains("InvalidContentType") || cause.contains("wrong version number") {
                return CliError::new(
                    Exit::Server,
                    "unreachable",
                    format!(
                        "the server at {} does not speak TLS (it answered in plain HTTP); use http://{rest}, or put otterd behind a TLS proxy",
                        self.base
                    ),
                );
            }
        }
        CliError::new(
            Exit::Server,
            "unreachable",
            format!(
                "cannot reach otterd at {} ({cause}); check --server / OTTER_SERVER and that the server runs",
                self.base
            ),
        )
    }
}

/// Refuses a server URL that names an API path rather than otterd's base URL (the CLI adds
/// `/api/v1/…` itself). Another path is allowed: otterd may be served under a prefix by a proxy.
fn check_base_url(base: &str) -> CliResult<()> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| CliError::usage(format!("the server URL {base:?} is not a URL: {e}")))?;
    let path = url.path().trim_end_matches('/');
    if ["/api", "/api/v1", "/device", "/device/v1"]
        .iter()
        .any(|api| path.ends_with(api))
    {
        let root = base.trim_end_matches('/');
        let root = &root[..root.len() - path.len()];
        return Err(CliError::usage(format!(
            "the server URL {base} names an API path; give otterd's base URL ({root}): the CLI adds {path}/… itself"
        )));
    }
    Ok(())
}

/// Reads a JSON answer, or turns the server's `{"error", "message"}` into a [`CliError`].
fn read_json(response: Response) -> CliResult<Value> {
    let status = response.status();
    let url = response.url().clone();
    let text = response.text().unwrap_or_default();
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_success() {
        return Ok(body);
    }
    let code = body["error"].as_str().unwrap_or("http_error").to_string();
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"));
    let exit = match status.as_u16() {
        401 | 403 => Exit::Auth,
        429 | 500..=599 => Exit::Server,
        _ => Exit::Refused,
    };
    let hint = match status.as_u16() {
        401 => " (check --token / OTTER_TOKEN)".to_string(),
        403 => " (this token's role or products do not allow it; see `otter whoami`)".to_string(),
        // The server knows no such route: most often --server carries a path it should not.
        404 if message.starts_with("no such route") => format!(
            " (asked {url}: is --server / OTTER_SERVER otterd's base URL, e.g. https://otter.example.com, with no extra path?)"
        ),
        _ => String::new(),
    };
    Err(CliError::new(exit, &code, format!("{message}{hint}")))
}

/// Counts bytes read into the progress bar.
struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
