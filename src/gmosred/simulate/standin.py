"""The local HTTP services the stand-ins share: a server on 127.0.0.1, started and stopped with them."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn:
    """A service on 127.0.0.1 (a free port) answering with ``_request(handler, method, body)``; a context manager."""

    protocol = "HTTP/1.1"

    def __init__(self):
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _request(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        raise NotImplementedError

    def start(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = service.protocol

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                service._request(self, "GET", b"")

            def do_POST(self):
                service._request(self, "POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
    """One whole HTTP answer."""
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (extra or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
