"""footfall.django: the auth hook view, served over real HTTP by a real Django, and footfall asking it.

Needs Django (Debian: ``apt-get install python3-django``, which serves
``/usr/bin/python3``); without it these tests skip. ``go test`` runs them with
an interpreter that has Django when there is one.
"""

import hashlib
import hmac
import json
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request
import wsgiref.simple_server

from tests import support
from tests.support import new_community

try:
    import django  # noqa: F401
except ImportError:
    django = None

KEY = "hook-test-key-0123456789abcdef0123456789"


def setUpModule():
    if django is None:
        raise unittest.SkipTest("Django is not installed for this interpreter (Debian: apt-get install python3-django)")
    from tests import django_site

    django_site.configure()


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


class DjangoSiteTestCase(unittest.TestCase):
    """A real Django site on a free port, serving tests.django_site's URLs."""

    @classmethod
    def setUpClass(cls):
        from django.core.wsgi import get_wsgi_application

        cls.httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=QuietHandler)
        cls.thread = threading.Thread(target=cls.httpd.serve_forever, daemon=True)
        cls.thread.start()
        cls.hook_url = "http://127.0.0.1:%d/footfall/auth-hook/" % cls.httpd.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.httpd.server_close()
        cls.thread.join()

    def setUp(self):
        from django.contrib.auth.models import User
        from django.test import override_settings

        from tests import django_site

        self.memberships = django_site.MEMBERSHIPS
        self.memberships.clear()
        self.settings = override_settings(FOOTFALL_API_KEY=KEY)
        self.settings.enable()
        self.addCleanup(self.settings.disable)
        self.user = User.objects.create_user("user-%s" % new_community()[:8], password="pw")
        self.cid = new_community()

    def session_cookie(self, user):
        """Returns a Cookie header with a live Django session of user, as its browser would send it."""
        from django.conf import settings
        from django.test import Client

        c = Client()
        c.force_login(user)
        return "%s=%s; csrftoken=abc; footfall_vid=v1" % (settings.SESSION_COOKIE_NAME, c.cookies[settings.SESSION_COOKIE_NAME].value)

    def hook(self, cookie, community_id=None, key=KEY, body=None):
        """POSTs footfall's hook request (CONTRACT section 9); returns (status, JSON answer)."""
        if body is None:
            body = {"community_id": community_id or self.cid, "stream": "visitors", "transport": "sse",
                    "cookie": cookie, "client_ip": "203.0.113.9"}
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Bearer " + key
        req = urllib.request.Request(self.hook_url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"null")


class AuthHookViewTest(DjangoSiteTestCase):
    def test_signed_in_member(self):
        self.memberships[(self.user.pk, self.cid)] = "moderator"
        status, body = self.hook(self.session_cookie(self.user), self.cid.upper())
        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"sub": str(self.user.pk), "role": "moderator", "anonymous": False, "ttl_seconds": 120})

    def test_signed_in_but_not_a_member_is_403(self):
        status, body = self.hook(self.session_cookie(self.user))
        self.assertEqual((status, body["error"]), (403, "forbidden"))

    def test_not_signed_in_is_401(self):
        self.memberships[(self.user.pk, self.cid)] = "member"
        for cookie in ["", "csrftoken=abc", "sessionid=nosuchsession12345678"]:
            with self.subTest(cookie=cookie):
                status, body = self.hook(cookie)
                self.assertEqual((status, body["error"]), (401, "unauthorized"))

    def test_signed_out_session_is_401(self):
        from django.contrib.sessions.models import Session

        self.memberships[(self.user.pk, self.cid)] = "member"
        cookie = self.session_cookie(self.user)
        self.assertEqual(self.hook(cookie)[0], 200)
        Session.objects.all().delete()
        self.assertEqual(self.hook(cookie)[0], 401)

    def test_password_change_ends_the_session(self):
        # Django's session hash: a session from before a password change is no longer the user's.
        self.memberships[(self.user.pk, self.cid)] = "member"
        cookie = self.session_cookie(self.user)
        self.user.set_password("new")
        self.user.save()
        self.assertEqual(self.hook(cookie)[0], 401)

    def test_anonymous_visitor(self):
        from django.contrib.sessions.backends.db import SessionStore

        session = SessionStore()
        session["cart"] = 1
        session.create()
        cookie = "sessionid=" + session.session_key
        self.assertEqual(self.hook(cookie)[0], 401)  # membership says no to anonymous users
        self.memberships[("anonymous", self.cid)] = "member"
        status, body = self.hook(cookie)
        self.assertEqual(status, 200, body)
        self.assertTrue(body["anonymous"])
        self.assertEqual(body["role"], "member")
        self.assertTrue(body["sub"].startswith("django-"))
        self.assertNotIn(session.session_key, body["sub"])
        self.assertEqual(self.hook(cookie)[1]["sub"], body["sub"])  # stable
        # No session at all: nobody to count.
        self.assertEqual(self.hook("csrftoken=x")[0], 401)

    def test_api_key(self):
        from django.test import override_settings

        self.memberships[(self.user.pk, self.cid)] = "member"
        cookie = self.session_cookie(self.user)
        for key in [None, "wrong", KEY + "x"]:
            with self.subTest(key=key), self.assertLogs("footfall", "WARNING"):
                self.assertEqual(self.hook(cookie, key=key), (401, {"error": "unauthorized"}))
        with override_settings(FOOTFALL_API_KEY=""), support.clean_env(), self.assertLogs("footfall", "ERROR") as logs:
            self.assertEqual(self.hook(cookie), (500, {"error": "not_configured"}))
        self.assertIn("FOOTFALL_API_KEY is not set", logs.output[0])

    def test_bad_body_and_method(self):
        for body in [{"stream": "visitors"}, {"community_id": "not hex"}, {"community_id": self.cid, "cookie": 5}]:
            with self.subTest(body=body):
                self.assertEqual(self.hook("", body=body), (400, {"error": "invalid_body"}))
        req = urllib.request.Request(self.hook_url, headers={"Authorization": "Bearer " + KEY})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        cm.exception.close()
        self.assertEqual(cm.exception.code, 405)

    def test_view_arguments(self):
        from footfall.django import auth_hook_view

        with self.assertRaises(TypeError):
            auth_hook_view("not callable")
        for ttl in (0, 3601):
            with self.assertRaises(ValueError):
                auth_hook_view(lambda u, c: None, ttl_seconds=ttl)


WEBHOOK_SECRET = "settings-webhook-secret-0123456789"


def signed(event, secret=WEBHOOK_SECRET, t=None):
    """Returns (body, Footfall-Signature) of event as footfall would send it."""
    body = json.dumps(event).encode()
    t = int(time.time()) if t is None else t
    return body, "t=%d,v1=%s" % (t, hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest())


class WebhookViewTest(unittest.TestCase):
    """footfall.django.webhook_view through Django's test client, CSRF checks on."""

    def setUp(self):
        from django.test import Client, override_settings

        from tests import django_site

        self.events = django_site.WEBHOOK_EVENTS
        self.events.clear()
        self.settings = override_settings(FOOTFALL_WEBHOOK_SECRET=WEBHOOK_SECRET)
        self.settings.enable()
        self.addCleanup(self.settings.disable)
        self.client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        self.event = {"id": "evt-%s" % new_community()[:8], "type": "community_occupied", "community_id": new_community(),
                      "timestamp": "2026-12-04T18:40:00Z", "data": {"count": 1}}

    def post(self, body, signature, url="/footfall/webhook/"):
        extra = {} if signature is None else {"HTTP_FOOTFALL_SIGNATURE": signature}
        return self.client.post(url, data=body, content_type="application/json", **extra)

    def test_good_signature_calls_the_handler(self):
        resp = self.post(*signed(self.event))
        self.assertEqual((resp.status_code, resp.content), (204, b""))
        self.assertEqual(self.events, [self.event])

    def test_bad_signatures_are_400(self):
        body, sig = signed(self.event)
        cases = {
            "tampered body": (body.replace(b'"count": 1', b'"count": 2'), sig),
            "wrong secret": signed(self.event, secret="another-secret-0123456789"),
            "old timestamp": signed(self.event, t=int(time.time()) - 301),
            "missing header": (body, None),
            "malformed header": (body, "v1=abc"),
        }
        for name, (b, s) in cases.items():
            with self.subTest(name), self.assertLogs("footfall", "WARNING"):
                resp = self.post(b, s)
                self.assertEqual((resp.status_code, resp.json()["error"]), (400, "invalid_signature"))
        self.assertEqual(self.events, [])

    def test_two_v1_values(self):
        body, sig = signed(self.event)
        _, other = signed(self.event, secret="next-secret-0123456789abcdef")
        t = sig.split(",")[0]
        resp = self.post(body, "%s,%s,%s" % (t, other.split(",")[1], sig.split(",")[1]))
        self.assertEqual(resp.status_code, 204)
        self.assertEqual(len(self.events), 1)

    def test_handler_failure_is_500(self):
        self.event["data"]["fail"] = True
        with self.assertLogs("footfall", "ERROR") as logs:
            resp = self.post(*signed(self.event))
        self.assertEqual((resp.status_code, resp.json()), (500, {"error": "handler_failed"}))
        self.assertIn(self.event["id"], logs.output[0])
        self.assertIn("RuntimeError", logs.output[0])
        self.assertEqual(self.events, [self.event])

    def test_secret_argument_and_settings(self):
        from django.test import override_settings

        from tests import django_site

        # The view's own secret wins over the setting.
        with self.assertLogs("footfall", "WARNING"):
            resp = self.post(*signed(self.event), url="/footfall/webhook-own-secret/")
        self.assertEqual(resp.status_code, 400)
        resp = self.post(*signed(self.event, secret=django_site.OWN_WEBHOOK_SECRET), url="/footfall/webhook-own-secret/")
        self.assertEqual(resp.status_code, 204)
        # The setting is read at each request; a list of secrets while rotating.
        with override_settings(FOOTFALL_WEBHOOK_SECRET=["next-secret-0123456789abcdef", WEBHOOK_SECRET]):
            self.assertEqual(self.post(*signed(self.event)).status_code, 204)
        # No secret anywhere: 500, so that footfall tries again once the site is fixed.
        with override_settings(FOOTFALL_WEBHOOK_SECRET=""), support.clean_env(), self.assertLogs("footfall", "ERROR") as logs:
            resp = self.post(*signed(self.event))
        self.assertEqual((resp.status_code, resp.json()), (500, {"error": "not_configured"}))
        self.assertIn("FOOTFALL_WEBHOOK_SECRET is not set", logs.output[0])
        with override_settings(FOOTFALL_WEBHOOK_SECRET=""), support.clean_env(FOOTFALL_WEBHOOK_SECRET=WEBHOOK_SECRET):
            self.assertEqual(self.post(*signed(self.event)).status_code, 204)
        self.assertEqual(len(self.events), 3)

    def test_post_only(self):
        self.assertEqual(self.client.get("/footfall/webhook/").status_code, 405)

    def test_view_arguments(self):
        from footfall.django import webhook_view

        with self.assertRaises(TypeError):
            webhook_view("not callable")


class DjangoSettingsTest(unittest.TestCase):
    """visitor_broadcaster and mint_token read real Django settings, before the environment."""

    def test_settings_win_over_the_environment(self):
        from django.test import override_settings

        import footfall

        srv = support.server()
        cid = new_community()
        with support.clean_env(FOOTFALL_URL="http://127.0.0.1:9", FOOTFALL_API_KEY="wrong", FOOTFALL_JWT_SECRET="wrong-secret-wrong-secret-wrong-secret"):
            with override_settings(FOOTFALL_URL=srv.url, FOOTFALL_API_KEY=srv.api_key, FOOTFALL_JWT_SECRET=srv.secret):
                self.assertEqual(footfall.visitor_broadcaster.visitor_event(cid, "a", "join")["count"], 1)
                token = footfall.mint_token("m", {cid: "member"})
            status, body = srv.get("/api/v1/communities/%s/visitors/count" % cid, token=token)
            self.assertEqual(status, 200, body)
            # Without the settings, the environment's (wrong) values are used.
            with self.assertRaises(footfall.FootfallError) as cm:
                footfall.visitor_broadcaster.visitor_event(cid, "a", "join")
            self.assertEqual(cm.exception.error, "unreachable")


def footfall_has_auth_hook(binary):
    res = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return b"FOOTFALL_AUTH_HOOK_URL" in res.stdout


class FootfallAsksDjangoTest(DjangoSiteTestCase):
    """footfall itself asking the view (skips with a footfall that has no FOOTFALL_AUTH_HOOK_URL)."""

    def test_streams_admitted_by_the_django_session(self):
        binary = support.footfall_binary()
        if not footfall_has_auth_hook(binary):
            self.skipTest("this footfall does not implement FOOTFALL_AUTH_HOOK_URL yet (CONTRACT section 9)")
        from django.test import override_settings

        srv = support.Server(binary, FOOTFALL_AUTH_HOOK_URL=self.hook_url)
        self.addCleanup(srv.stop)
        with override_settings(FOOTFALL_API_KEY=srv.api_key):
            self.memberships[(self.user.pk, self.cid)] = "member"
            cookie = self.session_cookie(self.user)
            sse = srv.sse(self.cid, cookie=cookie)
            self.addCleanup(sse.close)
            self.assertEqual(sse.status, 200, sse.error)
            self.assertEqual(sse.next().data["count"], 1)
            # The same visitor as visitor_event(visitor_id=user.pk, authenticated=True).
            self.assertEqual(srv.broadcaster().visitor_event(self.cid, self.user.pk, "join", authenticated=True)["count"], 1)
            dash = srv.sse(self.cid, "visitor-dashboard", cookie=cookie)
            self.assertEqual((dash.status, dash.error and dash.error.get("code")), (403, 4003))
            other = srv.sse(self.cid, cookie="sessionid=nosuchsession12345678")
            self.assertEqual((other.status, other.error and other.error.get("code")), (401, 4001))

            # A moderator's session opens the dashboard, which sees the member above.
            moderator = type(self.user).objects.create_user("mod-%s" % new_community()[:8], password="pw")
            self.memberships[(moderator.pk, self.cid)] = "moderator"
            mod_dash = srv.sse(self.cid, "visitor-dashboard", cookie=self.session_cookie(moderator))
            self.addCleanup(mod_dash.close)
            self.assertEqual(mod_dash.status, 200, mod_dash.error)
            today = mod_dash.next().data["data"]["today_visitors"]
            self.assertEqual((today["authenticated_visitors"], today["anonymous_visitors"]), (1, 0))

            # A visitor who is not signed in but has a session, when the site counts such visitors.
            from django.contrib.sessions.backends.db import SessionStore

            session = SessionStore()
            session["seen"] = True
            session.create()
            self.memberships[("anonymous", self.cid)] = "moderator"  # still never a dashboard (CONTRACT section 9)
            anon = srv.sse(self.cid, cookie="sessionid=" + session.session_key)
            self.addCleanup(anon.close)
            self.assertEqual(anon.status, 200, anon.error)
            self.assertEqual(anon.next().data["count"], 2)
            ev = mod_dash.wait_for(lambda e: e.data["data"]["today_visitors"]["anonymous_visitors"] == 1)
            self.assertEqual(ev.data["data"]["realtime_count"], 2)
            anon_dash = srv.sse(self.cid, "visitor-dashboard", cookie="sessionid=" + session.session_key)
            self.assertEqual((anon_dash.status, anon_dash.error and anon_dash.error.get("code")), (403, 4003))

    def test_webhook_delivered_to_the_view(self):
        from tests import django_site

        events = django_site.WEBHOOK_EVENTS
        events.clear()
        secret = "e2e-webhook-secret-0123456789"
        url = self.hook_url.replace("auth-hook/", "webhook/")
        srv = support.Server(support.footfall_binary(), FOOTFALL_WEBHOOK_URL=url, FOOTFALL_WEBHOOK_SECRET=secret)
        self.addCleanup(srv.stop)
        from django.test import override_settings

        with override_settings(FOOTFALL_WEBHOOK_SECRET=secret):
            srv.broadcaster().visitor_event(self.cid, "w-1", "join")
            deadline = time.monotonic() + 15
            while not events and time.monotonic() < deadline:
                time.sleep(0.05)
        self.assertEqual([(e["type"], e["community_id"], e["data"]) for e in events], [("community_occupied", self.cid, {"count": 1})])

    def test_logout_closes_the_stream(self):
        binary = support.footfall_binary()
        if not footfall_has_auth_hook(binary):
            self.skipTest("this footfall does not implement FOOTFALL_AUTH_HOOK_URL yet (CONTRACT section 9)")
        from django.contrib.sessions.models import Session
        from django.test import override_settings

        srv = support.Server(binary, FOOTFALL_AUTH_HOOK_URL=self.hook_url.replace("auth-hook/", "auth-hook-1s/"))
        self.addCleanup(srv.stop)
        with override_settings(FOOTFALL_API_KEY=srv.api_key):
            self.memberships[(self.user.pk, self.cid)] = "member"
            sse = srv.sse(self.cid, cookie=self.session_cookie(self.user))
            self.addCleanup(sse.close)
            self.assertEqual(sse.status, 200, sse.error)
            self.assertEqual(sse.next().data["count"], 1)
            Session.objects.all().delete()  # the user logs out everywhere
            rest = sse.closed(timeout=10)
            self.assertEqual([(e.type, e.data.get("code")) for e in rest][-1:], [("error", "expired")])


if __name__ == "__main__":
    unittest.main()
