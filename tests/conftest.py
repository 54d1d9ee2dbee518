"""Shared test fixtures: a local HTTP server on 127.0.0.1 with scriptable misbehaviour, and a refused URL.

Usage:
    def test_x(http_server, tmp_path):
        url = http_server.serve("/a.bin", b"data", status=404, times=1)   # 404 once, then 200
        ...
        assert http_server.count("/a.bin") == 2
        assert http_server.requests_for("/a.bin")[-1]["Range"] == "bytes=2-"
"""

import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

# The real SMS data, handed to the package explicitly (it never looks beside the project by itself): the team's
# copy in ../shared when present; .ci/run sets the same variable. Notebook kernels inherit it.
_SHARED_ZIP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared", "data",
                           "sms_spam_collection.zip")
if "SMS_SPAM_ZIP" not in os.environ and os.path.isfile(_SHARED_ZIP):
    os.environ["SMS_SPAM_ZIP"] = os.path.abspath(_SHARED_ZIP)


class _Route:
    """What one path serves and how it misbehaves (for the first `times` requests; None = always)."""

    def __init__(self, body, status=200, drop_after=None, content_length=None, hang=None, ranges=True, times=None):
        self.body, self.status, self.drop_after, self.content_length = body, status, drop_after, content_length
        self.hang, self.ranges, self.times = hang, ranges, times
        self.hits = 0


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 serving a dict of path -> bytes, recording every request."""

    def __init__(self):
        self.routes = {}
        self.requests = []  # dicts: {"method", "path", **headers}
        self._stop_hanging = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def serve(self, path, body, *, status=200, drop_after=None, content_length=None, hang=None, ranges=True,
              times=None):
        """Serve body at path; returns its URL.

        status: HTTP status to answer (non-2xx sends a short error body); drop_after: send only this many body bytes
        then close the connection; content_length: announce this Content-Length instead of the real one; hang: sleep
        this many seconds before answering (the fixture wakes it at teardown); ranges: honour `Range: bytes=N-`
        with 206 (False = ignore it and send 200 + the whole body); times: misbehave only for the first N requests.
        """
        if not path.startswith("/"):
            path = "/" + path
        self.routes[path] = _Route(bytes(body), status, drop_after, content_length, hang, ranges, times)
        return self.url(path)

    def url(self, path):
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def requests_for(self, path):
        return [r for r in self.requests if r["path"] == path]

    def count(self, path=None):
        return len(self.requests if path is None else self.requests_for(path))

    def stop(self):
        """Shut the server down (later connections are refused)."""
        if self.running:
            self.running = False
            self._stop_hanging.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._answer(send_body=False)

            def do_GET(self):
                self._answer(send_body=True)

            def _answer(self, send_body):
                with server._lock:
                    server.requests.append({"method": self.command, "path": self.path, **dict(self.headers)})
                    route = server.routes.get(self.path)
                    if route is not None:
                        route.hits += 1
                        misbehave = route.times is None or route.hits <= route.times
                if route is None:
                    return self._error(404)
                if misbehave and route.hang:
                    server._stop_hanging.wait(route.hang)
                    self.close_connection = True
                    return None
                if misbehave and route.status >= 400:
                    return self._error(route.status)
                body, status, extra = route.body, 200, {}
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match and route.ranges:
                    start = int(match.group(1))
                    if start >= len(route.body):
                        extra["Content-Range"] = f"bytes */{len(route.body)}"
                        return self._error(416, extra)
                    body, status = route.body[start:], 206
                    extra["Content-Range"] = f"bytes {start}-{len(route.body) - 1}/{len(route.body)}"
                announced = route.content_length if (misbehave and route.content_length is not None) else len(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(announced))
                self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                if not send_body:
                    return None
                if misbehave and route.drop_after is not None:
                    body = body[:route.drop_after]
                self.wfile.write(body)
                self.wfile.flush()
                if len(body) < announced:
                    self.close_connection = True  # closing early is what the client must detect
                    self.connection.shutdown(socket.SHUT_RDWR)
                return None

            def _error(self, status, headers=None):
                body = f"error {status}".encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


def _bypass_proxies(monkeypatch):
    # a developer's http_proxy must not route requests for 127.0.0.1 elsewhere (urllib reads no_proxy per request)
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(key, ",".join(filter(None, [os.environ.get(key), "127.0.0.1", "localhost"])))


@pytest.fixture
def http_server(monkeypatch):
    """A LocalHTTPServer on 127.0.0.1 for this test; stopped (and hanging handlers woken) at teardown."""
    _bypass_proxies(monkeypatch)
    server = LocalHTTPServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_url(monkeypatch):
    """A URL on 127.0.0.1 whose port nobody listens on: connecting fails at once, like having no network."""
    _bypass_proxies(monkeypatch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def pytest_configure(config):
    config.addinivalue_line("markers", "tensorflow: needs TensorFlow (slow import); deselect with -m 'not tensorflow'")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: tiny models gain nothing from threads, and on a busy 2-core machine
    idle-spinning threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
