"""HTTP for the client: one kept-alive connection per thread and footfall URL.

A Celery worker or a Django process that broadcasts on every visitor event
should not pay a TCP (and TLS) handshake per call, so each thread keeps its
connection to footfall open between calls. Why per thread: http.client
connections are not thread-safe, and a lock would serialize the threads of a
WSGI server. Why the process id: Celery's prefork pool and gunicorn fork
workers after import, and a socket inherited through fork must never be used
by two processes, so a connection made by another process is dropped unused.

When the environment names a proxy for footfall's host (``http_proxy``,
``https_proxy``, minus ``no_proxy``), calls go through urllib and that proxy,
one connection per call. Only the environment is read, not the system proxy
settings of macOS or Windows.
"""

import atexit
import http.client
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request

# Failures that mean "the server closed the kept-alive connection before our
# request reached it": the request is sent again, once, on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Pool(dict):
    """A thread's connections, closed when the thread ends and its pool is collected."""

    def __del__(self):
        for conn in self.values():
            conn.close()


class _PerThread(threading.local):
    def __init__(self):
        self.pid = os.getpid()
        self.conns = _Pool()


_local = _PerThread()
_ssl_context = None


def _tls():
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def _connections():
    if _local.pid != os.getpid():
        # Forked: these sockets are shared with the parent. Dropping the pool closes
        # this process's copies only; the parent's connections stay open.
        _local.pid = os.getpid()
        _local.conns = _Pool()
    return _local.conns


_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")


def _via_proxy(scheme, host):
    # The quick look first: urllib's own reads the whole environment (~0.3 ms a call).
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return False
    proxies = urllib.request.getproxies_environment()
    return scheme in proxies and not urllib.request.proxy_bypass_environment(host, proxies)


def close_connections():
    """Closes this thread's kept-alive connections (they reopen on the next call)."""
    conns = _connections()
    for conn in conns.values():
        conn.close()
    conns.clear()


# The main thread's connection is closed at exit (other threads' close with their thread).
atexit.register(close_connections)


def send(method, url, headers, data, timeout):
    """Sends one request; returns (status, body bytes).

    Raises OSError or http.client.HTTPException when there is no answer, and
    ValueError for a URL http.client cannot use.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if _via_proxy(parts.scheme, parts.hostname or ""):
        return _send_urllib(method, url, headers, data, timeout)

    key = (parts.scheme, parts.netloc, timeout)
    conns = _connections()
    conn = conns.pop(key, None)
    reused = conn is not None
    while True:
        if conn is None:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=_tls())
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except _STALE:
            conn.close()
            if not reused:
                raise
            conn, reused = None, False  # once more, on a new connection
            continue
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            conns[key] = conn
        return resp.status, raw


def _send_urllib(method, url, headers, data, timeout):
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    # An opener of its own: urlopen's global one keeps the proxies of its first use.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(urllib.request.getproxies_environment()))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read()
        finally:
            e.close()
    except urllib.error.URLError as e:
        if isinstance(e.reason, OSError):
            raise e.reason from e
        raise OSError(str(e.reason)) from e
