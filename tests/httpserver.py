"""A small loopback HTTP file server with Range support and fault injection, for fetch tests.

It serves an in-memory tree (`{"v3/misc/filelist.json": b"...", ...}`) on 127.0.0.1 and records
every request and every body byte it sends, so tests can assert what went over the wire.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Login required</title></head>"
             b"<body><p>Please sign in to download this file.</p></body></html>\n")


@dataclass
class Faults:
    """What goes wrong, per path (no leading slash)."""

    drop_once: set[str] = field(default_factory=set)      # first GET cut off halfway
    fail_times: dict[str, int] = field(default_factory=dict)  # answer 500 this many times
    status: dict[str, int] = field(default_factory=dict)  # always answer this status
    lie_size: dict[str, int] = field(default_factory=dict)  # announce this many extra bytes
    html: set[str] = field(default_factory=set)           # a login page as text/html
    html_disguised: set[str] = field(default_factory=set)  # a login page labelled video/mp4
    ignore_range: bool = False                            # answer every GET with the full file
    stall_once: dict[str, float] = field(default_factory=dict)  # first GET waits this long
    delay: float = 0.0                                    # every GET waits this long


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    range: str | None
    status: int


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or hang up are part of the tests, not noise


class FileServer:
    """`with FileServer(files) as srv:` serves `files` at `srv.url` until the block ends."""

    def __init__(self, files: dict[str, bytes], faults: Faults | None = None):
        self.files = dict(files)
        self.faults = faults or Faults()
        self.hits: list[Hit] = []
        self.served: Counter[str] = Counter()  # body bytes actually sent, per path
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0  # most GETs in flight at once
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def gets(self, path: str) -> list[Hit]:
        """The GET requests made for `path`."""
        return [h for h in self.hits if h.method == "GET" and h.path == path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and ranges, like a real file server

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                server._answer(self, head=True)

            def do_GET(self) -> None:
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    server._answer(self, head=False)
                finally:
                    with server.lock:
                        server.active -= 1

        return Handler

    def _record(self, req: BaseHTTPRequestHandler, path: str, status: int) -> None:
        with self.lock:
            self.hits.append(Hit(req.command, path, req.headers.get("Range"), status))

    def _send(self, req: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
              body: bytes, path: str, head: bool, cut_at: int | None = None) -> None:
        self._record(req, path, status)
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.end_headers()
        if head:
            return
        payload = body if cut_at is None else body[:cut_at]
        req.wfile.write(payload)
        with self.lock:
            self.served[path] += len(payload)
        if cut_at is not None or len(payload) < int(headers.get("Content-Length", 0)):
            req.close_connection = True  # the client sees the body end early

    def _answer(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(req.path).path).lstrip("/")
        f = self.faults
        if not head:
            with self.lock:
                stall = f.stall_once.pop(path, 0.0)
            time.sleep(f.delay + stall)  # a stall longer than the client's timeout times out
        with self.lock:
            failing = f.fail_times.get(path, 0)
            if failing and not head:
                f.fail_times[path] = failing - 1
        if failing and not head:
            msg = b"temporarily unavailable"
            return self._send(req, 500, {"Content-Length": str(len(msg))}, msg, path, head)
        if path in f.status or path not in self.files:
            code = f.status.get(path, 404)
            msg = b"no"
            return self._send(req, code, {"Content-Length": str(len(msg)),
                                          "Content-Type": "text/plain"}, msg, path, head)
        if path in f.html or path in f.html_disguised:
            ctype = "text/html; charset=utf-8" if path in f.html else "video/mp4"
            return self._send(req, 200, {"Content-Length": str(len(HTML_PAGE)),
                                         "Content-Type": ctype}, HTML_PAGE, path, head)

        data = self.files[path]
        size = len(data) + f.lie_size.get(path, 0)  # what the server claims
        ctype = "application/json" if path.endswith(".json") else "video/mp4"
        rng = req.headers.get("Range")
        m = re.match(r"^bytes=(\d+)-$", rng or "")
        if m and not f.ignore_range:
            start = int(m.group(1))
            if start >= size:
                return self._send(req, 416, {"Content-Range": f"bytes */{size}",
                                             "Content-Length": "0"}, b"", path, head)
            return self._send(req, 206, {"Content-Type": ctype,
                                         "Content-Range": f"bytes {start}-{size - 1}/{size}",
                                         "Content-Length": str(size - start)},
                              data[start:], path, head)
        cut = None
        if not head and path in f.drop_once:
            with self.lock:
                f.drop_once.discard(path)
            cut = len(data) // 2
        return self._send(req, 200, {"Content-Type": ctype, "Content-Length": str(size),
                                     "Accept-Ranges": "bytes"}, data, path, head, cut_at=cut)
