"""The client's HTTP: kept-alive connections, stale ones, forks, proxies, timeouts."""

import os
import threading
import time
import unittest
import warnings
from unittest import mock

from tests import support
from tests.support import Recorder, clean_env, new_community

from footfall import FootfallError, VisitorBroadcaster, _transport


class TransportTestCase(unittest.TestCase):
    def setUp(self):
        _transport.close_connections()
        self.addCleanup(_transport.close_connections)

    def recorder(self, answer=None):
        r = Recorder(answer)
        self.addCleanup(r.close)
        return r


class KeepAliveTest(TransportTestCase):
    def test_one_connection_for_many_calls(self):
        srv = support.server()
        b = srv.broadcaster()
        cid = new_community()
        ports = set()
        for i in range(5):
            b.visitor_event(cid, "v%d" % i, "join")
            (conn,) = _transport._local.conns.values()
            ports.add(conn.sock.getsockname()[1])
        self.assertEqual(len(ports), 1)
        # A refusal keeps the connection too.
        with self.assertRaises(FootfallError):
            srv.broadcaster(api_key="wrong").visitor_event(cid, "v", "join")
        (conn,) = _transport._local.conns.values()
        self.assertEqual({conn.sock.getsockname()[1]}, ports)

    def test_threads_have_connections_of_their_own(self):
        srv = support.server()
        b = srv.broadcaster()
        cid = new_community()
        errors = []

        def work(n):
            try:
                for i in range(20):
                    b.visitor_event(cid, "t%d-%d" % (n, i), "join")
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(b.visitor_event(cid, "last", "join")["count"], 161)

    def test_stale_connection_is_retried_once(self):
        calls = []

        def answer(handler, body):
            calls.append(1)
            # Answers as if the connection stayed open, then drops it.
            handler.reply(202, b'{"ok":true}', close=True)

        r = self.recorder(answer)
        b = VisitorBroadcaster(url=r.url, api_key="k")
        cid = new_community()
        self.assertEqual(b.broadcast_analytics_metric(cid, "m", 1), {"ok": True})
        time.sleep(0.1)  # the server has closed its end by now
        self.assertEqual(b.broadcast_analytics_metric(cid, "m", 2), {"ok": True})
        self.assertEqual([req[3]["value"] for req in r.requests], [1, 2])
        self.assertNotEqual(r.requests[0][4], r.requests[1][4], "the second call should use a new connection")

    def test_a_fresh_connection_that_fails_is_not_retried(self):
        def answer(handler, body):
            handler.close_connection = True  # no answer at all
            handler.wfile.flush()

        r = self.recorder(answer)
        with self.assertRaises(FootfallError) as cm:
            VisitorBroadcaster(url=r.url, api_key="k").broadcast_analytics_metric(new_community(), "m", 1)
        self.assertEqual(cm.exception.error, "unreachable")
        self.assertEqual(len(r.requests), 1)

    def test_fork_drops_the_parents_connections(self):
        r = self.recorder()
        b = VisitorBroadcaster(url=r.url, api_key="k")
        cid = new_community()
        b.broadcast_analytics_metric(cid, "m", 1)
        parent_conn = list(_transport._local.conns.values())[0]
        with mock.patch.object(_transport.os, "getpid", return_value=os.getpid() + 100000):
            b.broadcast_analytics_metric(cid, "m", 2)
            child_conn = list(_transport._local.conns.values())[0]
        self.assertIsNot(child_conn, parent_conn)
        self.assertNotEqual(r.requests[0][4], r.requests[1][4])

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork")
    def test_real_fork(self):
        # Celery's prefork pool: the parent has a connection when it forks.
        r = self.recorder()
        b = VisitorBroadcaster(url=r.url, api_key="k")
        cid = new_community()
        b.broadcast_analytics_metric(cid, "parent", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                b.broadcast_analytics_metric(cid, "child", 2)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0)
        b.broadcast_analytics_metric(cid, "parent", 3)
        ports = {req[3]["metric"] + str(req[3]["value"]): req[4] for req in r.requests}
        self.assertEqual(ports["parent1"], ports["parent3"], "the parent keeps its connection")
        self.assertNotEqual(ports["parent1"], ports["child2"], "the child makes its own")

    def test_timeout(self):
        def answer(handler, body):
            time.sleep(3)
            handler.reply(200, b"{}")

        r = self.recorder(answer)
        start = time.monotonic()
        with self.assertRaises(FootfallError) as cm:
            VisitorBroadcaster(url=r.url, api_key="k", timeout=0.3).broadcast_analytics_metric(new_community(), "m", 1)
        self.assertLess(time.monotonic() - start, 2.5, "the call should give up after its 0.3 s, not wait for the answer")
        self.assertEqual((cm.exception.status, cm.exception.error), (None, "unreachable"))
        self.assertEqual(len(r.requests), 1, "a timeout is not retried")


class ProxyTest(TransportTestCase):
    def test_proxy_from_the_environment(self):
        proxy = self.recorder()
        cid = new_community()
        with clean_env(http_proxy=proxy.url, no_proxy=""):
            with mock.patch.dict(os.environ, {"HTTP_PROXY": proxy.url, "NO_PROXY": ""}):
                VisitorBroadcaster(url="http://footfall.internal:8080", api_key="k").visitor_event(cid, "a", "join")
        method, path, headers, body, _ = proxy.requests[0]
        self.assertEqual((method, path), ("POST", "http://footfall.internal:8080/api/v1/communities/%s/visitor-events" % cid))
        self.assertEqual(headers["Authorization"], "Bearer k")
        self.assertEqual(body, {"visitor_id": "a", "authenticated": False, "action": "join"})

    def test_no_proxy_goes_direct(self):
        proxy = self.recorder()
        target = self.recorder()
        with clean_env(http_proxy=proxy.url, no_proxy="127.0.0.1"):
            with mock.patch.dict(os.environ, {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"}):
                VisitorBroadcaster(url=target.url, api_key="k").visitor_event(new_community(), "a", "join")
        self.assertEqual((len(proxy.requests), len(target.requests)), (0, 1))

    def test_refusal_through_a_proxy(self):
        proxy = self.recorder(lambda h, body: h.reply(401, b'{"error":"unauthorized","message":"missing or wrong API key"}'))
        with clean_env(http_proxy=proxy.url):
            with mock.patch.dict(os.environ, {"HTTP_PROXY": proxy.url, "NO_PROXY": ""}):
                with self.assertRaises(FootfallError) as cm:
                    VisitorBroadcaster(url="http://footfall.internal:8080", api_key="k").visitor_event(new_community(), "a", "join")
        self.assertEqual((cm.exception.status, cm.exception.error), (401, "unauthorized"), repr(cm.exception.__cause__))


if __name__ == "__main__":
    unittest.main()
