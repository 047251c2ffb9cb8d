//! Slow and idle clients cannot take the server down (issue 8, item 5), and stalled downloads
//! stay counted (item 17). Real sockets against a real server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use otter_core::Chip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;

use crate::edge::raw;
use crate::harness::*;

fn addr(url: &str) -> std::net::SocketAddr {
    url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Waits until the server closes `s` (EOF or reset); returns how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn idle_half_open_and_kept_alive_connections_are_closed_after_their_timeouts() {
    let srv = spawn_with(|s| {
        s.header_read_timeout_s = 1;
        s.keepalive_timeout_s = 2;
    })
    .await;
    let a = addr(&srv.url);
    let mut idle = Vec::new();
    let mut half = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(a).await.unwrap());
        let mut h = TcpStream::connect(a).await.unwrap();
        h.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        half.push(h);
    }
    // A kept-alive connection after a complete request counts as idle from its answer on.
    let mut kept = TcpStream::connect(a).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    for s in &mut half {
        let t = closed_within(s, Duration::from_secs(6))
            .await
            .expect("a half-open head is cut after header_read_timeout_s");
        assert!(t < Duration::from_millis(4500), "{t:?}");
    }
    for s in idle.iter_mut().chain(std::iter::once(&mut kept)) {
        let t = closed_within(s, Duration::from_secs(8))
            .await
            .expect("an idle connection is closed after keepalive_timeout_s");
        assert!(t < Duration::from_millis(6500), "{t:?}");
    }
}

#[tokio::test]
async fn a_request_in_progress_is_not_cut_by_the_idle_timeout() {
    let srv = spawn_with(|s| {
        s.header_read_timeout_s = 1;
        s.keepalive_timeout_s = 1;
    })
    .await;
    // A body sent slowly over three seconds: the request is in progress, not idle.
    let mut s = TcpStream::connect(addr(&srv.url)).await.unwrap();
    let body = br#"{"name": "thermo", "chip": "esp32c3"}"#;
    s.write_all(
        format!(
            "POST /api/v1/products HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            srv.admin,
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for chunk in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        s.write_all(chunk).await.unwrap();
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 201");
}

/// Starts the real `otterd` with an open-file limit of `fd_limit` and extra environment.
async fn start_limited(
    data: &std::path::Path,
    fd_limit: u32,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {fd_limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_otterd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::harness::with_database(&mut cmd, data);
    spawn_otterd(cmd).await
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_exhaust_a_real_otterds_file_descriptors() {
    let dir = tempfile::TempDir::new().unwrap();
    let (mut child, url) = start_limited(
        &dir.path().join("data"),
        256,
        &[
            ("OTTER_MAX_DOWNLOADS", "16"),
            ("OTTER_HEADER_READ_TIMEOUT_S", "2"),
            ("OTTER_KEEPALIVE_TIMEOUT_S", "2"),
        ],
    )
    .await;
    let pid = child.id().unwrap();
    let a = addr(&url);
    // 400 slow clients, far more than the 256 descriptors the server has: each sends a part of
    // a head and then nothing. None of them is closed by the client.
    let mut slow = Vec::new();
    let mut max_fds = 0;
    for i in 0..400 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(a)).await {
            Ok(Ok(mut s)) => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
                slow.push(s);
            }
            Ok(Err(_)) => {}
            // The server stopped accepting: what this test guards against.
            Err(_) => panic!("connection {i} was not accepted within 2 s"),
        }
        if i % 50 == 0 {
            max_fds = max_fds.max(open_fds(pid));
        }
    }
    max_fds = max_fds.max(open_fds(pid));
    assert!(max_fds < 256, "the server used {max_fds} descriptors");
    // Those over the cap were told so, in the JSON error body, and closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    for s in &slow {
        let mut buf = [0u8; 512];
        if let Ok(n) = s.try_read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("HTTP/1.1 503") && text.contains("\"overloaded\"") {
                refused += 1;
            }
        }
    }
    assert!(
        refused > 100,
        "{refused} of 400 slow clients were refused with a 503"
    );
    // A new client over the cap is answered at once, cleanly (503 JSON or a close), not hung.
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(5),
        raw(
            &url,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("a client over the cap is not left hanging");
    assert!(
        status == 503 || status == 200 || status == 0,
        "{status} {body}"
    );
    if status == 503 {
        let v: serde_json::Value = serde_json::from_str(&body).expect("a whole JSON body");
        assert_eq!(v["error"], "overloaded", "{body}");
    }
    // Once the slow clients time out, the server serves again, while they still hold their
    // sockets open on their side.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = tokio::time::timeout(
            Duration::from_secs(5),
            raw(
                &url,
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            ),
        )
        .await
        .unwrap_or((0, String::new(), String::new()));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not serve again within 15 s (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open_fds(pid) < 256);
    drop(slow);
    child.kill().await.unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(!err.contains("Too many open files"), "{err}");
    assert!(err.contains("max_connections does not fit"), "{err}");
}

/// Sends a GET for the image on a socket with a tiny receive buffer, reads only the head and
/// returns the socket (the download then stalls) with the status.
async fn stalled_download(url: &str, token: &str, release: &str) -> (TcpStream, u16, String) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr(url)).await.unwrap();
    s.write_all(
        format!(
            "GET /device/v1/releases/{release}/image HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (s, status, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_downloads_are_capped_per_device_and_in_total_until_they_end() {
    let srv = spawn_with(|s| {
        s.max_downloads = 3;
        s.max_downloads_per_device = 2;
    })
    .await;
    let (key, secret) = srv.product("thermo", Chip::Esp32).await;
    // Larger than the socket buffers on both sides, so a client that does not read stalls.
    let img = otter_core::image::synth::build(&otter_core::image::synth::SynthApp {
        chip: Chip::Esp32,
        version: "1.0.0".into(),
        payload_len: 12 << 20,
        seed: 7,
        ..Default::default()
    });
    let b = bundle_of(
        &key,
        &manifest_for("thermo", Chip::Esp32, "1.0.0", &img),
        img,
    );
    let (s, v) = srv.push("thermo", "stable", &srv.admin, b).await;
    assert_eq!(s, 201, "{v}");
    let release = v["id"].as_str().unwrap().to_string();
    let (_, dev_a) = srv.enroll("thermo", &secret, "a").await;
    let (_, dev_b) = srv.enroll("thermo", &secret, "b").await;
    let (_, dev_c) = srv.enroll("thermo", &secret, "c").await;

    let (a1, st, _) = stalled_download(&srv.url, &dev_a, &release).await;
    assert_eq!(st, 200);
    let (_a2, st, _) = stalled_download(&srv.url, &dev_a, &release).await;
    assert_eq!(st, 200);
    // The device's third download is refused while its two stalled ones are open.
    let (_a3, st, head) = stalled_download(&srv.url, &dev_a, &release).await;
    assert_eq!(st, 429, "{head}");
    assert!(head.contains("retry-after:"), "{head}");
    assert!(head.contains("application/json"), "{head}");
    let (_b1, st, _) = stalled_download(&srv.url, &dev_b, &release).await;
    assert_eq!(st, 200);
    // Server-wide: three stalled downloads are the limit, whoever asks next.
    let (_c1, st, head) = stalled_download(&srv.url, &dev_c, &release).await;
    assert_eq!(st, 429, "{head}");
    // A download whose client went away gives its slot back.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, st, _) = stalled_download(&srv.url, &dev_c, &release).await;
        if st == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
