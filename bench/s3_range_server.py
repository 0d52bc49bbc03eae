"""A minimal S3-compatible server for benchmarks: real ranged reads from files on disk.

moto copies the whole object on every GET, so it says nothing about throughput. This serves the
subset pyarrow's S3FileSystem uses to read known objects: HEAD, GET with `Range`, and
ListObjectsV2. Requests are not authenticated. Each response waits `latency_s` before the first
byte and is paced to `bandwidth_bps` per connection, like an object store seen from a VM.

    server = RangeServer(root, latency_s=0.02, bandwidth_bps=100e6); server.start(); server.url
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

CHUNK = 256 << 10


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._object(head=True)

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if "list-type" in query:
            self._list(url.path.strip("/"), query.get("prefix", [""])[0])
        else:
            self._object(head=False)

    def _file(self) -> Path | None:
        path = self.server.owner.root / urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
        return path if path.is_file() else None

    def _object(self, head: bool) -> None:
        with self.server.owner.lock:
            self.server.owner.requests += 1
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            a, _, b = rng[6:].partition("-")
            start, end, status = int(a), min(size - 1, int(b) if b else size - 1), 206
        time.sleep(self.server.owner.latency_s)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1 if not head else size))
        self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        self.send_header("ETag", f'"{hashlib.md5(str(path.stat().st_mtime_ns).encode()).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            began = time.monotonic()
            sent = 0
            while left > 0:
                data = f.read(min(CHUNK, left))
                self.wfile.write(data)
                sent += len(data)
                left -= len(data)
                ahead = sent / self.server.owner.bandwidth_bps - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        with self.server.owner.lock:
            self.server.owner.bytes_sent += sent

    def _list(self, bucket: str, prefix: str) -> None:
        base = self.server.owner.root / bucket
        items = sorted(p for p in base.rglob("*") if p.is_file())
        keys = [(str(p.relative_to(base)), p.stat().st_size) for p in items]
        keys = [(k, n) for k, n in keys if k.startswith(prefix)]
        body = ("<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"
                f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
                "<IsTruncated>false</IsTruncated>"
                + "".join(f"<Contents><Key>{escape(k)}</Key><Size>{n}</Size>"
                          f"<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>" for k, n in keys)
                + "</ListBucketResult>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RangeServer:
    def __init__(self, root: Path, latency_s: float = 0.02, bandwidth_bps: float = 100e6) -> None:
        self.root, self.latency_s, self.bandwidth_bps = Path(root), latency_s, bandwidth_bps
        self.requests = 0
        self.bytes_sent = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="s3-range-server").start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
