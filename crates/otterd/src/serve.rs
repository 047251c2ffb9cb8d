//! The HTTP accept loop (issue 8, item 5): what keeps slow or idle clients from taking the server
//! down.
//!
//! - **Connection cap** (`max_connections`): each open connection holds a permit; at the cap a
//!   new connection gets a short `503` JSON answer and is closed at once, so the process never
//!   runs out of file descriptors. At start the soft file-descriptor limit is raised to the hard
//!   one, and the cap is lowered (with a warning) if it still would not fit.
//! - **Header-read timeout** (`header_read_timeout_s`): once a client sent the first byte of a
//!   request, its whole head must arrive within this time.
//! - **Idle timeout** (`keepalive_timeout_s`): a connection with no request in progress (just
//!   opened, or between keep-alive requests) is closed after this time.
//!
//! A request in progress (its body being read, or its response being written) is never cut by
//! these timeouts; the request-body timeout and the download limits bound those.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// File descriptors kept free for the database, image files being streamed and logs.
const FD_RESERVE: u64 = 64;

/// The limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// hyper's buffer per HTTP/1 connection (`[http] connection_buffer_bytes`).
    pub buffer_bytes: usize,
}

/// Raises the soft file-descriptor limit to the hard one and returns the connection cap that
/// fits in it next to `other_fds` descriptors used elsewhere (open image files while streaming).
pub fn fit_connection_cap(wanted: usize, other_fds: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        if let (Some(cur), max) = (lim.current, lim.maximum) {
            let target = max.unwrap_or(u64::MAX).min(1 << 20);
            if target > cur && setrlimit(Resource::Nofile, lim.clone_with(target)).is_ok() {
                lim = getrlimit(Resource::Nofile);
            }
        }
        if let Some(cur) = lim.current {
            let room = cur.saturating_sub(FD_RESERVE + other_fds as u64) as usize;
            if wanted > room {
                let fitted = room.max(1);
                tracing::warn!(
                    max_connections = wanted,
                    fd_limit = cur,
                    using = fitted,
                    "max_connections does not fit in the open-file limit; using fewer. Raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections or max_downloads"
                );
                return fitted;
            }
        }
    }
    let _ = other_fds;
    wanted
}

#[cfg(unix)]
trait CloneWith {
    fn clone_with(&self, current: u64) -> Self;
}

#[cfg(unix)]
impl CloneWith for rustix::process::Rlimit {
    fn clone_with(&self, current: u64) -> Self {
        rustix::process::Rlimit {
            current: Some(current),
            maximum: self.maximum,
        }
    }
}

/// What the watchdog of one connection knows about it.
struct ConnState {
    start: Instant,
    /// Requests whose response is not finished yet.
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `start` + 1 when the first byte of the next request arrived; 0: none.
    head_started_ms: AtomicU64,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// When the connection must be closed unless something happens; `None` while a request
    /// is in progress.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::SeqCst);
        Some(if head > 0 {
            self.start + Duration::from_millis(head - 1) + limits.header_read_timeout
        } else {
            self.start
                + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst))
                + limits.keepalive_timeout
        })
    }
}

/// Marks a request in progress until the response body is finished or dropped.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(st: &Arc<ConnState>) -> InFlight {
        st.in_flight.fetch_add(1, Ordering::SeqCst);
        st.head_started_ms.store(0, Ordering::SeqCst);
        InFlight(st.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.idle_since_ms.store(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that ends the request's [`InFlight`] when it is finished or dropped.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when the first byte of a request arrives while none is in progress, and
/// giving hyper's own error answers (a request it cannot parse) the JSON error body.
struct Watched {
    inner: TcpStream,
    st: Arc<ConnState>,
    /// Bytes of a rewritten answer not yet written.
    pending: Vec<u8>,
}

/// hyper answers a request it cannot parse (malformed, head or URI too long) by itself, with a
/// bare status line and no body; every answer of ours to an error has a `content-type`. Such an
/// answer is replaced by the same status with the JSON error body (the connection closes after
/// it either way).
fn rewrite_bare_error(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() < 12 || !buf.starts_with(b"HTTP/1.") || !matches!(buf[9], b'4' | b'5') {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("\r\ncontent-type:") {
        return None;
    }
    let status = axum::http::StatusCode::from_bytes(&buf[9..12]).ok()?;
    let (code, message) = match status.as_u16() {
        431 => (
            "headers_too_large",
            "the request head is too large; send fewer or shorter header fields",
        ),
        414 => ("uri_too_long", "the request target is too long"),
        _ => ("bad_request", "the request is not valid HTTP/1.1"),
    };
    tracing::info!(
        status = status.as_u16(),
        code,
        reason = ?message,
        "request refused"
    );
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl Watched {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.st.in_flight.load(Ordering::SeqCst) == 0
            && self.st.head_started_ms.load(Ordering::SeqCst) == 0
        {
            let now = self.st.now_ms() + 1;
            self.st.head_started_ms.store(now, Ordering::SeqCst);
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(answer) = rewrite_bare_error(buf) {
            self.pending = answer;
            // What is left is written by the next write or flush.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The answer to a connection over the cap, written without waiting and then closed.
fn over_cap_answer() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "overloaded",
        "message": "the server has too many open connections; retry after the Retry-After delay",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nx-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `shutdown` resolves; then asks every connection to finish
/// and returns when all are closed. (The caller bounds that wait.)
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let last_refusal_log = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let over_cap = over_cap_answer();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to be freed instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("otter_connections_refused_total").increment(1);
            let now = epoch.elapsed().as_secs() + 1;
            if last_refusal_log.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached; refusing new connections (503)"
                );
            }
            let _ = stream.try_write(&over_cap);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, stop_rx).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit: having them all back means every connection is closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut stop_rx: watch::Receiver<bool>,
) {
    let st = Arc::new(ConnState {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
        head_started_ms: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        st: st.clone(),
        pending: Vec::new(),
    });
    let st2 = st.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = InFlight::start(&st2);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|e| match e {});
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(Tracked {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    // Our own watchdog below times heads and idle connections; hyper's timer only serves HTTP/2
    // keep-alive pings.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(crate::edge::HYPER_MAX_HEADERS)
        // Bounds what a slow reader makes the server hold (hyper's default is ~400 KB).
        .max_buf_size(limits.buffer_bytes);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Check at least once a second: a request starting or ending moves the deadline.
        let mut wake = now + Duration::from_secs(1);
        if let Some(d) = st.deadline(&limits) {
            wake = wake.min(d);
        }
        if let Some(hard) = closing {
            wake = wake.min(hard);
        }
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop_rx.wait_for(|s| *s), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + Duration::from_secs(1));
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let Some(hard) = closing {
                    if now >= hard && st.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                }
                if closing.is_none() && st.deadline(&limits).is_some_and(|d| now >= d) {
                    metrics::counter!("otter_connections_timed_out_total").increment(1);
                    conn.as_mut().graceful_shutdown();
                    // A client that is sending a head slowly is not idle for hyper; cut it
                    // shortly after if it is still there.
                    closing = Some(now + Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_error_answers_are_rewritten() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("content-type: application/json"));
        assert!(out.ends_with("\"headers_too_large\",\"message\":\"the request head is too large; send fewer or shorter header fields\"}"), "{out}");
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n{}";
        assert!(rewrite_bare_error(ours).is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 304 Not Modified\r\n\r\n").is_none());
    }
}
