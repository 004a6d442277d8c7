"""Test support: a real footfall process, an SSE client, and a clean environment.

The footfall binary is ``$FOOTFALL_BIN`` (``go test`` in this directory builds
it and passes it) or, without it, built here with ``go build ./cmd/footfall``
into a temporary directory. One process serves the whole test run; every test
uses communities of its own. Without a binary and without Go the end-to-end
tests skip, or fail under ``FOOTFALL_TEST_REQUIRE_TOOLS=1``.
"""

import atexit
import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(CLIENT_DIR))

if CLIENT_DIR not in sys.path:  # so that the tests import this checkout's footfall
    sys.path.insert(0, CLIENT_DIR)

import footfall  # noqa: E402

TIMESTAMP = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def require_tools():
    return os.environ.get("FOOTFALL_TEST_REQUIRE_TOOLS") == "1"


def skip_or_fail(reason):
    """Skips the test (or module), or fails it under FOOTFALL_TEST_REQUIRE_TOOLS=1."""
    if require_tools():
        raise AssertionError(reason + " (FOOTFALL_TEST_REQUIRE_TOOLS=1)")
    raise unittest.SkipTest(reason)


@contextlib.contextmanager
def clean_env(**overrides):
    """Runs a block with no FOOTFALL_* or DJANGO_SETTINGS_MODULE variable but ``overrides``."""
    saved = dict(os.environ)
    try:
        for k in list(os.environ):
            if k.startswith("FOOTFALL_") or k == "DJANGO_SETTINGS_MODULE":
                del os.environ[k]
        os.environ.update({k: str(v) for k, v in overrides.items()})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def new_community():
    return str(uuid.uuid4())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_built = {}


def footfall_binary():
    """Returns the path of a footfall binary: $FOOTFALL_BIN, or one built now (once per run)."""
    path = os.environ.get("FOOTFALL_BIN")
    if path:
        if not os.access(path, os.X_OK):
            raise AssertionError("FOOTFALL_BIN=%s is not an executable" % path)
        return path
    if "path" in _built:
        return _built["path"]
    if "error" in _built:  # built once per run, failed or not
        raise AssertionError(_built["error"])
    go = shutil.which("go")
    if go is None:
        skip_or_fail("neither FOOTFALL_BIN nor the go command: cannot build footfall")
    tmp = tempfile.mkdtemp(prefix="footfall-bin-")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "footfall")
    res = subprocess.run([go, "build", "-o", out, "./cmd/footfall"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if res.returncode != 0:
        _built["error"] = "go build ./cmd/footfall failed:\n" + res.stdout.decode(errors="replace")
        raise AssertionError(_built["error"])
    _built["path"] = out
    return out


class Server:
    """A running footfall process with a known JWT secret and API key."""

    def __init__(self, binary, **settings):
        self.secret = "test-jwt-secret-" + uuid.uuid4().hex  # 48 bytes: footfall wants 32 or more
        self.api_key = "test-api-key-" + uuid.uuid4().hex
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOOTFALL_")}
        env.update({
            "FOOTFALL_ADDR": "127.0.0.1:%d" % self.port,
            "FOOTFALL_JWT_SECRET": self.secret,
            "FOOTFALL_API_KEY": self.api_key,
            "FOOTFALL_LOG_FORMAT": "text",
            # The tests open many streams from one address in a few seconds.
            "FOOTFALL_CONN_RATE_PER_IP": "1000",
            # Dashboard updates come from the tests, not from the clock.
            "FOOTFALL_DASHBOARD_INTERVAL": "1h",
        })
        env.update(settings)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("footfall exited with %s at start:\n%s" % (self.proc.returncode, self.output()))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("footfall did not answer /healthz within 15 s:\n" + self.output())
            time.sleep(0.05)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def broadcaster(self, **kw):
        kw.setdefault("url", self.url)
        kw.setdefault("api_key", self.api_key)
        return footfall.VisitorBroadcaster(**kw)

    def token(self, sub, communities, **kw):
        return footfall.mint_token(sub, communities, secret=self.secret, **kw)

    def env(self):
        """The settings a platform using this server has."""
        return {"FOOTFALL_URL": self.url, "FOOTFALL_API_KEY": self.api_key, "FOOTFALL_JWT_SECRET": self.secret}

    def get(self, path, token=None, headers=None):
        """GETs path; returns (status, parsed JSON body or None)."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, (json.loads(raw) if raw else None)

    def sse(self, community_id, stream="visitors", token=None, cookie=None):
        return SSE(self.port, "/sse/communities/%s/%s/" % (community_id, stream), token=token, cookie=cookie)


_server = {}


def server():
    """Returns the footfall process of this test run, started on first use."""
    if "s" not in _server:
        s = Server(footfall_binary())
        atexit.register(s.stop)
        _server["s"] = s
    return _server["s"]


class Event:
    def __init__(self, type, id, data):
        self.type, self.id, self.data = type, id, data

    def __repr__(self):
        return "Event(%r, id=%r, %r)" % (self.type, self.id, self.data)


_CLOSED = object()


class SSE:
    """A Server-Sent Events stream read by a thread of its own.

    ``status`` is the HTTP status; for a refusal ``error`` is the JSON body and
    nothing is read. Events arrive in a queue: ``next()`` takes one,
    ``wait_for()`` skips until one matches, ``closed()`` waits for the end.
    """

    def __init__(self, port, path, token=None, cookie=None):
        if token:
            path += "?token=" + urllib.parse.quote(token)
        headers = {"Accept": "text/event-stream"}
        if cookie:
            headers["Cookie"] = cookie
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", path, headers=headers)
        self.sock = self.conn.sock  # the response keeps using it after getresponse
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.error = None
        self.events = queue.Queue()
        if self.status != 200:
            raw = self.resp.read()
            self.error = json.loads(raw) if raw else None
            self.conn.close()
            return
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        typ, eid, data = None, None, []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        self.events.put(Event(typ or "message", eid, json.loads("\n".join(data))))
                    typ, eid, data = None, None, []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        typ = value
                    elif field == "id":
                        eid = value
                    elif field == "data":
                        data.append(value)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.events.put(_CLOSED)

    def next(self, timeout=5.0):
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no SSE event within %.1f s" % timeout) from None
        if ev is _CLOSED:
            self.events.put(_CLOSED)
            raise AssertionError("the SSE stream ended")
        return ev

    def wait_for(self, match, timeout=5.0):
        """Returns the first event for which match(event) is true, skipping others."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching SSE event within %.1f s; saw %r" % (timeout, seen))
            try:
                ev = self.next(left)
            except AssertionError as e:
                raise AssertionError("%s; saw %r" % (e, seen)) from None
            if match(ev):
                return ev
            seen.append(ev)

    def closed(self, timeout=5.0):
        """Waits for the stream to end; returns the events that came before."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the SSE stream did not end within %.1f s; saw %r" % (timeout, seen))
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev is _CLOSED:
                return seen
            seen.append(ev)

    def close(self):
        if self.status == 200:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.thread.join(5)
        with contextlib.suppress(OSError):
            self.resp.close()
            self.conn.close()
            self.sock.close()


class Recorder:
    """A stand-in HTTP server (a proxy, a misbehaving footfall) that records requests.

    ``answer(handler, body)`` writes each response; the default is 200 ``{}``
    over a kept-alive HTTP/1.1 connection. ``requests`` holds (method, path,
    headers, parsed JSON body, client port) tuples.
    """

    def __init__(self, answer=None):
        import http.server

        recorder = self
        self.requests = []
        self.answer = answer or (lambda handler, body: handler.reply(200, b"{}"))

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                recorder.requests.append((self.command, self.path, dict(self.headers), json.loads(body) if body else None,
                                          self.client_address[1]))
                recorder.answer(self, body)

            do_POST = do_GET = do_DELETE = handle_one

            def reply(self, status, body, content_type="application/json", close=False):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                # close=True drops the connection without saying so: a kept-alive connection gone stale.
                self.close_connection = close

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
