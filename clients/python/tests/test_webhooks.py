"""verify_webhook with events signed here, and (when footfall delivers webhooks) with footfall's own deliveries."""

import datetime
import hashlib
import hmac
import http.server
import json
import os
import pickle
import queue
import threading
import time
import unittest

from tests import support
from tests.support import new_community

import footfall
from footfall import FootfallError, WebhookSignatureError, verify_webhook

SECRET = "whsec-test-0123456789abcdef"
NOW = 1796400000  # 2026-12-04T18:40:00Z


def event_body(**kw):
    event = {"id": "evt-1", "type": "community_occupied", "community_id": new_community(),
             "timestamp": "2026-12-04T18:40:00Z", "data": {"count": 1}}
    event.update(kw)
    return json.dumps(event, separators=(",", ":")).encode()


def sign(body, t=NOW, secret=SECRET):
    return hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()


def header(body, t=NOW, secret=SECRET):
    return "t=%d,v1=%s" % (t, sign(body, t, secret))


class VerifyWebhookTest(unittest.TestCase):
    def assert_refused(self, *args, **kw):
        kw.setdefault("now", NOW)
        with self.assertRaises(WebhookSignatureError) as cm:
            verify_webhook(*args, **kw)
        return str(cm.exception)

    def test_good_signature(self):
        body = event_body()
        event = verify_webhook(SECRET, header(body), body, now=NOW)
        self.assertEqual(event, json.loads(body))
        # The secret as bytes, the body as a bytearray or memoryview, spaces in the header, upper-case hex.
        h = " t=%d , v1=%s " % (NOW, sign(body).upper())
        self.assertEqual(verify_webhook(SECRET.encode(), h, memoryview(bytearray(body)), now=NOW), event)

    def test_tampered_body(self):
        body = event_body()
        h = header(body)
        msg = self.assert_refused(SECRET, h, body.replace(b'"count":1', b'"count":9'))
        self.assertIn("no signature matches", msg)
        self.assert_refused(SECRET, h, body + b" ")
        # The signature covers t too.
        self.assert_refused(SECRET, h.replace("t=%d" % NOW, "t=%d" % (NOW + 1)), body)

    def test_wrong_secret(self):
        body = event_body()
        self.assert_refused("another-secret-0123456789", header(body), body)
        self.assert_refused(SECRET, header(body, secret="another-secret-0123456789"), body)

    def test_old_or_future_timestamp(self):
        body = event_body()
        old = NOW - 301
        self.assertIn("ago", self.assert_refused(SECRET, header(body, t=old), body))
        self.assertIn("future", self.assert_refused(SECRET, header(body, t=NOW + 301), body))
        # Within the tolerance either way; a tolerance of one's own; none at all.
        self.assertTrue(verify_webhook(SECRET, header(body, t=NOW - 300), body, now=NOW))
        self.assertTrue(verify_webhook(SECRET, header(body, t=NOW + 300), body, now=NOW))
        self.assertTrue(verify_webhook(SECRET, header(body, t=old), body, tolerance=600, now=NOW))
        self.assert_refused(SECRET, header(body, t=NOW - 11), body, tolerance=10)
        self.assertTrue(verify_webhook(SECRET, header(body, t=0), body, tolerance=None))
        # now as a datetime (naive: UTC) or by default the clock.
        at = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)
        self.assertTrue(verify_webhook(SECRET, header(body), body, now=at))
        self.assertTrue(verify_webhook(SECRET, header(body), body, now=at.replace(tzinfo=None)))
        self.assertTrue(verify_webhook(SECRET, header(body, t=int(time.time())), body))
        with self.assertRaises(WebhookSignatureError):
            verify_webhook(SECRET, header(body), body)  # NOW is not now

    def test_missing_or_malformed_header(self):
        body = event_body()
        for h in [None, "", "garbage", "t=%d" % NOW, "v1=" + sign(body), "t=abc,v1=" + sign(body),
                  "t=%d,t=%d,v1=%s" % (NOW, NOW, sign(body)), "t=-%d,v1=%s" % (NOW, sign(body)), "t=%d,v1" % NOW,
                  "t=%d,v1=" % NOW, "t=%d,v1=\u00e9\u00e9" % NOW]:
            with self.subTest(header=h):
                self.assert_refused(SECRET, h, body)

    def test_several_v1_values(self):
        # footfall signing with the new and the old secret while they rotate: either one is enough.
        body = event_body()
        new = "new-secret-0123456789abcdef"
        h = "t=%d,v1=%s,v1=%s" % (NOW, sign(body, secret=new), sign(body))
        self.assertTrue(verify_webhook(SECRET, h, body, now=NOW))
        self.assertTrue(verify_webhook(new, h, body, now=NOW))
        self.assert_refused("neither-0123456789abcdef", h, body)
        # Unknown schemes are skipped, not refused.
        self.assertTrue(verify_webhook(SECRET, "t=%d,v0=abc,v1=%s,v2=def" % (NOW, sign(body)), body, now=NOW))
        # The receiver's side of a rotation: a list of secrets.
        self.assertTrue(verify_webhook([new, SECRET], header(body), body, now=NOW))

    def test_arguments(self):
        body = event_body()
        with self.assertRaises(TypeError):
            verify_webhook(SECRET, header(body), body.decode(), now=NOW)
        for secret in ["", b"", []]:
            with self.subTest(secret=secret), self.assertRaises(ValueError) as cm:
                verify_webhook(secret, header(body), body, now=NOW)
            self.assertNotIsInstance(cm.exception, WebhookSignatureError)
        # Signed but not an event: a ValueError that is not a signature error.
        for bad in [b"not json", b"[1,2]", b"\xff"]:
            with self.subTest(body=bad), self.assertRaises(ValueError) as cm:
                verify_webhook(SECRET, header(bad), bad, now=NOW)
            self.assertNotIsInstance(cm.exception, WebhookSignatureError)

    def test_error_type(self):
        self.assertTrue(issubclass(WebhookSignatureError, ValueError))
        self.assertFalse(issubclass(WebhookSignatureError, FootfallError))
        e = pickle.loads(pickle.dumps(WebhookSignatureError("footfall webhook: no header")))
        self.assertEqual((type(e), str(e)), (WebhookSignatureError, "footfall webhook: no header"))
        self.assertEqual(WebhookSignatureError.__module__, "footfall")
        self.assertIs(footfall.verify_webhook, verify_webhook)


class Receiver:
    """A webhook receiver on a free port: keeps each request's signature header and raw body, answers 204."""

    def __init__(self):
        self.requests = queue.Queue()
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.put((self.path, self.headers.get("Footfall-Signature"), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hooks/footfall" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def next(self, timeout=15.0):
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no webhook within %.0f s" % timeout) from None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class FootfallDeliveryTest(unittest.TestCase):
    """footfall's own deliveries, received by a Python server and checked with verify_webhook."""

    def test_community_occupied_and_vacated(self):
        binary = support.footfall_binary()
        rcv = Receiver()
        self.addCleanup(rcv.close)
        secret = "py-webhook-secret-" + os.urandom(8).hex()
        srv = support.Server(binary, FOOTFALL_WEBHOOK_URL=rcv.url, FOOTFALL_WEBHOOK_SECRET=secret,
                             FOOTFALL_LEAVE_GRACE="0s")
        self.addCleanup(srv.stop)
        cid = new_community()
        b = srv.broadcaster()
        self.assertEqual(b.visitor_event(cid, "hook-visitor", "join")["count"], 1)

        path, sig, body = rcv.next()
        self.assertEqual(path, "/hooks/footfall")
        event = verify_webhook(secret, sig, body)
        self.assertEqual((event["type"], event["community_id"], event["data"]), ("community_occupied", cid, {"count": 1}))
        self.assertTrue(event["id"])
        self.assertRegex(event["timestamp"], support.TIMESTAMP)
        with self.assertRaises(WebhookSignatureError):
            verify_webhook("not-" + secret, sig, body)

        self.assertEqual(b.visitor_event(cid, "hook-visitor", "leave")["count"], 0)
        path, sig, body = rcv.next()
        event = verify_webhook(secret, sig, body)
        self.assertEqual((event["type"], event["community_id"], event["data"]), ("community_vacated", cid, {"count": 0}))


if __name__ == "__main__":
    unittest.main()
