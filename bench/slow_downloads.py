"""Holds many slow downloads open against otterd and reports its resident memory meanwhile.

    python3 bench/slow_downloads.py HOST:PORT RELEASE_ID TOKENS_FILE CONNECTIONS SECONDS PID

Each connection is a different device (one token per line in TOKENS_FILE) fetching the whole
image with a 4 KiB receive buffer and reading 1 KiB every 100 ms (10 KiB/s), so the server
cannot hand an image to the kernel at once: it must hold every download open. After all have
started, the server's VmRSS (/proc/PID/status) is sampled every 0.5 s for SECONDS; the
highest is printed as `rss_kib=N started=N ok=N` (ok: answered 200 and still streaming).
"""

import asyncio
import socket
import sys


async def one(host, port, path, token, started, ok, stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, (host, port))
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    await loop.sock_sendall(s, req.encode())
    started.append(1)
    head = await loop.sock_recv(s, 1024)
    if head.startswith(b"HTTP/1.1 200"):
        ok.append(1)
    try:
        while not stop.is_set():
            if not await loop.sock_recv(s, 1024):
                break
            await asyncio.sleep(0.1)
    finally:
        s.close()


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main():
    addr, release, tokens_file, n, seconds, pid = sys.argv[1:7]
    host, port = addr.rsplit(":", 1)
    tokens = [t.strip() for t in open(tokens_file) if t.strip()][: int(n)]
    path = f"/device/v1/releases/{release}/image"
    started, ok, stop = [], [], asyncio.Event()
    tasks = []
    for t in tokens:
        tasks.append(asyncio.create_task(one(host, int(port), path, t, started, ok, stop)))
        await asyncio.sleep(0.001)
    while len(started) < len(tokens):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    peak = 0
    for _ in range(int(float(seconds) * 2)):
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.5)
    still = len(ok)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"rss_kib={peak} started={len(started)} ok={still}")


asyncio.run(main())
