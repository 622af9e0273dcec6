"""The tests' one loopback HTTP file server (Range requests, cut or slowed responses)."""

from __future__ import annotations

import http.server
import re
import threading
import time
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        srv.requests.append((path, self.headers.get("Range")))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not srv.ignore_range:
            start, status = int(match[1]), 206
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cuts = srv.cuts.get(path)
        if cuts:
            body = body[: cuts.pop(0)]  # the response just stops: the connection closes early
        for i in range(0, len(body), 16384):
            self.wfile.write(body[i : i + 16384])
            if srv.delay:
                time.sleep(srv.delay)

    def log_message(self, *args):
        pass


class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 with Range support.

    ``cut(path, n, ...)`` truncates the next responses for ``path`` to those
    lengths; ``ignore_range`` answers every request with the whole file;
    ``delay`` sleeps after each 16 KiB written (a throttled link).
    """

    def __init__(self, delay: float = 0.0):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.cuts, self.httpd.requests = {}, {}, []
        self.httpd.ignore_range, self.httpd.delay = False, delay
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.httpd.files[path] = data
        return self.base + urllib.parse.quote(path)

    def cut(self, path: str, *lengths: int) -> None:
        self.httpd.cuts.setdefault(path, []).extend(lengths)

    @property
    def requests(self) -> list:
        """``(path, Range header or None)`` of every request, in order."""
        return self.httpd.requests

    @property
    def ignore_range(self) -> bool:
        return self.httpd.ignore_range

    @ignore_range.setter
    def ignore_range(self, value: bool) -> None:
        self.httpd.ignore_range = value

    @property
    def delay(self) -> float:
        return self.httpd.delay

    @delay.setter
    def delay(self, value: float) -> None:
        self.httpd.delay = value

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
