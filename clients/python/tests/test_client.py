"""visitor_broadcaster against a real footfall: each call's effect seen on SSE streams and REST snapshots."""

import datetime
import decimal
import http.server
import json
import pickle
import threading
import unittest
import uuid

from tests import support
from tests.support import TIMESTAMP, clean_env, new_community

import footfall
from footfall import FootfallError, VisitorBroadcaster


def setUpModule():
    support.server()


class StreamTestCase(unittest.TestCase):
    """Helpers: a fresh community, a broadcaster, streams opened with minted tokens."""

    def setUp(self):
        self.srv = support.server()
        self.b = self.srv.broadcaster()
        self.cid = new_community()

    def visitors(self, sub="viewer", cid=None):
        cid = cid or self.cid
        sse = self.srv.sse(cid, token=self.srv.token(sub, {cid: "member"}))
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200, sse.error)
        first = sse.next()
        self.assertEqual(first.type, "visitor_count")
        return sse

    def dashboard(self, cid=None):
        cid = cid or self.cid
        sse = self.srv.sse(cid, "visitor-dashboard", token=self.srv.token("moderator-1", {cid: "moderator"}))
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200, sse.error)
        self.assertEqual(sse.next().type, "dashboard_update")
        return sse

    def assert_recent(self, ts):
        self.assertRegex(ts, TIMESTAMP)
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        age = (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()
        self.assertTrue(-2 <= age <= 10, "timestamp %s is %.0f s old" % (ts, age))


class BroadcastTest(StreamTestCase):
    def test_broadcast_visitor_count(self):
        sse = self.visitors()
        answer = self.b.broadcast_visitor_count(self.cid, 42, change=1)
        ev = sse.wait_for(lambda e: e.data.get("count") == 42)
        self.assertEqual(ev.type, "visitor_count")
        ts = ev.data.pop("timestamp")
        self.assert_recent(ts)
        self.assertEqual(ev.data, {"type": "visitor_count", "community_id": self.cid, "count": 42, "change": 1})
        self.assertEqual(answer["community_id"], self.cid)
        self.assertEqual(ev.id, answer["event_id"])

    def test_broadcast_visitor_count_change_defaults_to_zero(self):
        sse = self.visitors()
        self.b.broadcast_visitor_count(community_id=self.cid, count=7)
        ev = sse.wait_for(lambda e: e.data.get("count") == 7)
        self.assertEqual(ev.data["change"], 0)

    def test_community_id_as_uuid_and_upper_case(self):
        sse = self.visitors()
        self.b.broadcast_visitor_count(uuid.UUID(self.cid), 11)
        self.assertEqual(sse.wait_for(lambda e: e.data.get("count") == 11).data["community_id"], self.cid)
        self.b.broadcast_visitor_count(self.cid.upper(), 12)
        self.assertEqual(sse.wait_for(lambda e: e.data.get("count") == 12).data["community_id"], self.cid)

    def test_broadcast_visitor_joined_and_left(self):
        sse = self.visitors()
        self.b.broadcast_visitor_joined(self.cid, 100)
        ev = sse.wait_for(lambda e: e.data.get("count") == 100)
        self.assertEqual(ev.type, "visitor_joined")
        self.assertNotIn("change", ev.data)
        self.b.broadcast_visitor_left(self.cid, 99)
        self.assertEqual(sse.wait_for(lambda e: e.data.get("count") == 99).type, "visitor_left")

    def test_broadcast_dashboard_update_fills_in_community_and_total(self):
        sse = self.dashboard()
        data = {"today_visitors": {"authenticated_visitors": 150, "anonymous_visitors": 320}, "realtime_count": 4242}
        self.b.broadcast_dashboard_update(self.cid, data)
        ev = sse.wait_for(lambda e: e.data.get("data", {}).get("realtime_count") == 4242)
        self.assertEqual(ev.type, "dashboard_update")
        self.assert_recent(ev.data["timestamp"])
        self.assertEqual(ev.data["data"], {
            "today_visitors": {"authenticated_visitors": 150, "anonymous_visitors": 320, "total_unique_visitors": 470},
            "realtime_count": 4242,
            "community_id": self.cid,
        })
        # The caller's dict is left as it was.
        self.assertEqual(data, {"today_visitors": {"authenticated_visitors": 150, "anonymous_visitors": 320}, "realtime_count": 4242})

    def test_broadcast_dashboard_update_keeps_given_fields(self):
        sse = self.dashboard()
        data = {"today_visitors": {"authenticated_visitors": 1, "anonymous_visitors": 2, "total_unique_visitors": 3},
                "realtime_count": 5151, "community_id": self.cid.upper(), "peak_today": {"count": 9, "at": "2026-01-01T10:00:00Z"}}
        self.b.broadcast_dashboard_update(self.cid, data)
        ev = sse.wait_for(lambda e: e.data.get("data", {}).get("realtime_count") == 5151)
        self.assertEqual(ev.data["data"], data)

    def test_broadcast_analytics_metric(self):
        sse = self.dashboard()
        self.b.broadcast_analytics_metric(self.cid, "conversion_rate", 14.5)
        ev = sse.wait_for(lambda e: e.type == "analytics_update")
        self.assert_recent(ev.data.pop("timestamp"))
        self.assertEqual(ev.data, {"type": "analytics_update", "metric": "conversion_rate", "value": 14.5})
        # An object value, as in the seed's conversion signal; and the values a Django model hands over.
        sid = uuid.uuid4()
        at = datetime.datetime(2025, 10, 10, 14, 31, tzinfo=datetime.timezone.utc)
        self.b.broadcast_analytics_metric(self.cid, "conversion", {"session_id": sid, "converted_at": at, "amount": decimal.Decimal("9.50")})
        ev = sse.wait_for(lambda e: e.data.get("metric") == "conversion")
        self.assertEqual(ev.data["value"], {"session_id": str(sid), "converted_at": "2025-10-10T14:31:00Z", "amount": 9.5})

    def test_record_conversion(self):
        sse = self.dashboard()
        self.b.record_conversion(self.cid, "sess-1", datetime.datetime(2025, 10, 10, 14, 31, 0, 500, tzinfo=datetime.timezone.utc))
        ev = sse.wait_for(lambda e: e.type == "analytics_update")
        self.assertEqual((ev.data["metric"], ev.data["value"]), ("conversion", {"session_id": "sess-1", "converted_at": "2025-10-10T14:31:00Z"}))

    def test_dashboard_stream_does_not_see_visitor_broadcasts(self):
        dash = self.dashboard()
        vis = self.visitors()
        self.b.broadcast_visitor_count(self.cid, 31337)
        vis.wait_for(lambda e: e.data.get("count") == 31337)
        self.b.broadcast_analytics_metric(self.cid, "marker", 1)
        ev = dash.wait_for(lambda e: e.type == "analytics_update")
        self.assertEqual(ev.data["metric"], "marker")


class VisitorEventTest(StreamTestCase):
    def test_join_heartbeat_leave_change_the_count(self):
        sse = self.visitors("user-7")
        answer = self.b.visitor_event(self.cid, "anon-1", "join", False)
        self.assertEqual((answer["community_id"], answer["count"]), (self.cid, 2))
        self.assert_recent(answer["timestamp"])
        ev = sse.wait_for(lambda e: e.data.get("count") == 2)
        self.assertIn(ev.type, ("visitor_joined", "visitor_count"))

        self.assertEqual(self.b.visitor_event(self.cid, "anon-1", "heartbeat")["count"], 2)
        # authenticated=True with the stream's sub is the visitor already present.
        self.assertEqual(self.b.visitor_event(self.cid, "user-7", "join", authenticated=True)["count"], 2)

        self.assertEqual(self.b.visitor_event(self.cid, "anon-1", "leave")["count"], 1)
        ev = sse.wait_for(lambda e: e.data.get("count") == 1)
        self.assertIn(ev.type, ("visitor_left", "visitor_count"))

    def test_today_figures_split_authenticated_and_anonymous(self):
        self.b.visitor_event(self.cid, "anon-1", "join")
        self.b.visitor_event(self.cid, 42, "join", authenticated=True)  # a Django user's pk
        status, body = self.srv.get("/api/v1/communities/%s/visitor-dashboard" % self.cid,
                                    token=self.srv.token("mod", {self.cid: "moderator"}))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"]["today_visitors"],
                         {"authenticated_visitors": 1, "anonymous_visitors": 1, "total_unique_visitors": 2})
        self.assertEqual(body["data"]["realtime_count"], 2)

    def test_batch(self):
        answer = self.b.visitor_events(self.cid, [
            ("a", "join", False),
            {"visitor_id": "b", "action": "join"},
            {"visitor_id": "c", "action": "join", "authenticated": True},
            ("a", "leave", False),
        ])
        self.assertEqual(answer["count"], 2)

    def test_batch_refusal_names_the_element(self):
        b = self.srv.broadcaster()
        with self.assertRaises(FootfallError) as cm:
            b._post("/api/v1/communities/%s/visitor-events" % self.cid,
                    [{"visitor_id": "a", "action": "join"}, {"visitor_id": "b", "action": "wave"}])
        e = cm.exception
        self.assertEqual((e.status, e.error, e.field, e.index), (400, "invalid_body", "action", 1))

    def test_bad_arguments_are_refused_before_any_request(self):
        b = VisitorBroadcaster(url="http://127.0.0.1:9", api_key="k")  # nothing listens there
        with self.assertRaises(ValueError):
            b.visitor_event(self.cid, "a", "wave")
        with self.assertRaises(ValueError):
            b.visitor_event(self.cid, "", "join")
        with self.assertRaises(ValueError):
            b.broadcast_visitor_count("not a community!", 1)
        with self.assertRaises(TypeError):
            b.broadcast_dashboard_update(self.cid, [1, 2])


class SessionTest(StreamTestCase):
    def test_create_and_revoke(self):
        s = self.b.create_session("user-9", {self.cid: "member"}, ttl_seconds=600)
        self.assertTrue(s["session_id"])
        self.assert_recent_future(s["expires_at"], 600)
        sse = self.srv.sse(self.cid, cookie="footfall_session=" + s["session_id"])
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200, sse.error)
        self.assertEqual(sse.next().data["count"], 1)
        # The dashboard needs more than a member's session.
        dash = self.srv.sse(self.cid, "visitor-dashboard", cookie="footfall_session=" + s["session_id"])
        self.assertEqual((dash.status, dash.error["code"]), (403, 4003))

        self.assertIsNone(self.b.revoke_session(s["session_id"]))
        rest = sse.closed()
        self.assertEqual([(e.type, e.data.get("code")) for e in rest], [("error", "expired")])
        with self.assertRaises(FootfallError) as cm:
            self.b.revoke_session(s["session_id"])
        self.assertEqual((cm.exception.status, cm.exception.error), (404, "not_found"))
        again = self.srv.sse(self.cid, cookie="footfall_session=" + s["session_id"])
        self.assertEqual((again.status, again.error["code"]), (401, 4004))

    def test_admin_session_opens_dashboards(self):
        s = self.b.create_session(17, role="admin")
        dash = self.srv.sse(self.cid, "visitor-dashboard", cookie="footfall_session=" + s["session_id"])
        self.addCleanup(dash.close)
        self.assertEqual(dash.status, 200, dash.error)
        self.assertEqual(dash.next().type, "dashboard_update")

    def test_session_communities_as_list(self):
        s = self.b.create_session("u", [self.cid.upper()])
        sse = self.srv.sse(self.cid, cookie="footfall_session=" + s["session_id"])
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200, sse.error)

    def test_bad_ttl(self):
        with self.assertRaises(FootfallError) as cm:
            self.b.create_session("u", {self.cid: "member"}, ttl_seconds=0)
        self.assertEqual((cm.exception.status, cm.exception.error, cm.exception.field), (400, "invalid_body", "ttl_seconds"))

    def test_unknown_session(self):
        with self.assertRaises(FootfallError) as cm:
            self.b.revoke_session("no-such/session")
        self.assertEqual(cm.exception.status, 404)

    def assert_recent_future(self, ts, seconds):
        self.assertRegex(ts, TIMESTAMP)
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        left = (t - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        self.assertTrue(seconds - 10 <= left <= seconds + 2, "expires_at %s is %.0f s ahead" % (ts, left))


class HistoryTest(StreamTestCase):
    def join_three_leave_one(self):
        for v in ("h-1", "h-2", "h-3"):
            self.b.visitor_event(self.cid, v, "join")
        self.assertEqual(self.b.visitor_event(self.cid, "h-1", "leave")["count"], 2)

    def test_minute_and_hour_points_show_the_peak(self):
        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=2)
        self.join_three_leave_one()
        for step, start in [("minute", before), ("hour", None)]:
            with self.subTest(step=step):
                h = self.b.visitor_history(self.cid, step, start=start)
                self.assertEqual((h["community_id"], h["step"]), (self.cid, step))
                points = h["points"]
                self.assertTrue(points)
                for p in points:
                    self.assertRegex(p["time"], TIMESTAMP)
                    self.assertTrue(0 <= p["average"] <= p["peak"] <= 3, p)
                self.assertEqual([p["time"] for p in points], sorted(p["time"] for p in points))
                # The joins may straddle a bucket edge: the later bucket then starts at the count so far.
                self.assertEqual(max(p["peak"] for p in points), 3)
                self.assertGreaterEqual(points[-1]["peak"], 2)
                if step == "minute":
                    self.assertEqual(points[0]["time"], utc_minute(before))
                    self.assertEqual(points[0]["peak"], 0)

    def test_day_points_count_distinct_visitors(self):
        self.b.visitor_event(self.cid, "anon-d", "join")
        self.b.visitor_event(self.cid, 77, "join", authenticated=True)
        p = self.b.visitor_history(self.cid, step="day")["points"][-1]
        self.assertEqual((p["peak"], p["authenticated_visitors"], p["anonymous_visitors"], p["total_unique_visitors"]), (2, 1, 1, 2))
        self.assertRegex(p["peak_at"], TIMESTAMP)

    def test_csv(self):
        self.join_three_leave_one()
        start = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=3)  # naive: UTC
        text = self.b.visitor_history_csv(self.cid, "minute", start=start)
        self.assertIsInstance(text, str)
        rows = text.splitlines()
        self.assertEqual(rows[0], "time,peak,average")
        points = self.b.visitor_history(self.cid, "minute", start=start)["points"]
        self.assertIn(len(rows) - 1, (len(points), len(points) - 1))  # a minute may begin between the two calls
        first = rows[1].split(",")
        self.assertEqual((first[0], int(first[1])), (points[0]["time"], points[0]["peak"]))
        self.assertEqual(max(int(r.split(",")[1]) for r in rows[1:]), 3)
        day = self.b.visitor_history_csv(self.cid, "day").splitlines()
        self.assertEqual(day[0], "time,peak,average,authenticated_visitors,anonymous_visitors,total_unique_visitors,peak_at")

    def test_range_as_strings_and_aware_datetimes(self):
        self.join_three_leave_one()
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        tz = datetime.timezone(datetime.timedelta(hours=-5))
        h = self.b.visitor_history(self.cid, "minute", start=utc(now - datetime.timedelta(minutes=5)), end=now.astimezone(tz))
        self.assertEqual([p["time"] for p in h["points"]][:1], [utc_minute(now - datetime.timedelta(minutes=5))])
        self.assertEqual(h["points"][-1]["time"], utc_minute(now))
        self.assertEqual(len(h["points"]), 6)

    def test_refusals_name_the_field(self):
        for kw, field in [({"step": "week"}, "step"), ({"start": "yesterday"}, "from"), ({"end": "2026-13-01T00:00:00Z"}, "to"),
                          ({"step": "minute", "start": datetime.datetime(2000, 1, 1)}, "from")]:
            for call in (self.b.visitor_history, self.b.visitor_history_csv):
                with self.subTest(kw=kw, call=call.__name__):
                    with self.assertRaises(FootfallError) as cm:
                        call(self.cid, **kw)
                    e = cm.exception
                    self.assertEqual((e.status, e.error, e.field), (400, "invalid_query", field))
        with self.assertRaises(FootfallError) as cm:
            self.srv.broadcaster(api_key="wrong-key").visitor_history(self.cid)
        self.assertEqual(cm.exception.status, 401)
        with self.assertRaises(TypeError):
            self.b.visitor_history(self.cid, start=datetime.date.today())
        with self.assertRaises(ValueError):
            self.b.visitor_history("not a community!")

    def test_request(self):
        rec = support.Recorder(lambda handler, body: handler.reply(200, b'{"community_id":"x","step":"minute","points":[]}'))
        self.addCleanup(rec.close)
        b = VisitorBroadcaster(url=rec.url + "/footfall", api_key="k")
        b.visitor_history(self.cid.upper())
        b.visitor_history(uuid.UUID(self.cid), "minute", start=datetime.datetime(2026, 12, 4, 17, 0, 0, 250000),
                          end="2026-12-04T19:00:00+01:00")
        rec.answer = lambda handler, body: handler.reply(200, b"time,peak,average\n", "text/csv; charset=utf-8")
        self.assertEqual(b.visitor_history_csv(self.cid, "day"), "time,peak,average\n")
        base = "/footfall/api/v1/communities/%s/visitors/history?" % self.cid
        self.assertEqual([r[1] for r in rec.requests], [
            base + "step=hour",
            base + "step=minute&from=2026-12-04T17%3A00%3A00.250000Z&to=2026-12-04T19%3A00%3A00%2B01%3A00",
            base + "step=day",
        ])
        self.assertEqual([(r[0], r[2]["Accept"], r[2]["Authorization"]) for r in rec.requests],
                         [("GET", "application/json", "Bearer k")] * 2 + [("GET", "text/csv", "Bearer k")])


def utc(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_minute(t):
    return t.strftime("%Y-%m-%dT%H:%M:00Z")


class ErrorTest(unittest.TestCase):
    def setUp(self):
        self.srv = support.server()
        self.cid = new_community()

    def test_wrong_api_key_is_401(self):
        b = self.srv.broadcaster(api_key="wrong-key")
        calls = [
            lambda: b.broadcast_visitor_count(self.cid, 1),
            lambda: b.broadcast_dashboard_update(self.cid, {"today_visitors": {}, "realtime_count": 0}),
            lambda: b.broadcast_analytics_metric(self.cid, "m", 1),
            lambda: b.visitor_event(self.cid, "a", "join"),
            lambda: b.create_session("u"),
            lambda: b.revoke_session("s"),
        ]
        for call in calls:
            with self.assertRaises(FootfallError) as cm:
                call()
            e = cm.exception
            self.assertEqual((e.status, e.error), (401, "unauthorized"))
            self.assertTrue(e.message)
            self.assertIn("401 unauthorized", str(e))

    def test_invalid_message_is_400_naming_the_field(self):
        b = self.srv.broadcaster()
        with self.assertRaises(FootfallError) as cm:
            b.broadcast_visitor_count(self.cid, -1)
        self.assertEqual((cm.exception.status, cm.exception.error, cm.exception.field), (400, "invalid_body", "message.count"))
        with self.assertRaises(FootfallError) as cm:
            b.broadcast_dashboard_update(self.cid, {"realtime_count": 1})
        self.assertEqual(cm.exception.field, "message.data.today_visitors")
        with self.assertRaises(FootfallError) as cm:
            b.broadcast_analytics_metric(self.cid, "m", None)
        self.assertEqual(cm.exception.field, "value")

    def test_unreachable(self):
        b = VisitorBroadcaster(url="http://127.0.0.1:%d" % support.free_port(), api_key="k", timeout=2)
        with self.assertRaises(FootfallError) as cm:
            b.broadcast_visitor_count(self.cid, 1)
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.error, "unreachable")
        self.assertIsInstance(cm.exception.__cause__, OSError)

    def test_not_configured(self):
        with clean_env():
            for b, missing in [(VisitorBroadcaster(), "FOOTFALL_URL"), (VisitorBroadcaster(url=self.srv.url), "FOOTFALL_API_KEY")]:
                with self.assertRaises(FootfallError) as cm:
                    b.broadcast_visitor_count(self.cid, 1)
                self.assertEqual((cm.exception.status, cm.exception.error), (None, "not_configured"))
                self.assertIn(missing, str(cm.exception))
        with clean_env(FOOTFALL_URL="ftp://x", FOOTFALL_API_KEY="k"):
            with self.assertRaises(FootfallError) as cm:
                VisitorBroadcaster().broadcast_visitor_count(self.cid, 1)
            self.assertEqual(cm.exception.error, "not_configured")

    def test_error_pickles(self):
        # Celery pickles a failed task's exception.
        e = pickle.loads(pickle.dumps(FootfallError(400, "invalid_body", "bad", "message.count", 2)))
        self.assertEqual((e.status, e.error, e.message, e.field, e.index), (400, "invalid_body", "bad", "message.count", 2))
        self.assertEqual(type(e).__module__, "footfall")


class ConfigurationTest(unittest.TestCase):
    def test_module_broadcaster_reads_the_environment_when_used(self):
        srv = support.server()
        cid = new_community()
        with clean_env():
            with self.assertRaises(FootfallError):
                footfall.visitor_broadcaster.broadcast_visitor_count(cid, 1)
        # Set after import: still seen.
        with clean_env(FOOTFALL_URL=srv.url + "/", FOOTFALL_API_KEY=srv.api_key):
            self.assertEqual(footfall.visitor_broadcaster.visitor_event(cid, "a", "join")["count"], 1)

    def test_timeout_setting(self):
        srv = support.server()
        with clean_env(FOOTFALL_URL=srv.url, FOOTFALL_API_KEY=srv.api_key, FOOTFALL_TIMEOUT="soon"):
            with self.assertRaises(FootfallError) as cm:
                footfall.visitor_broadcaster.visitor_event(new_community(), "a", "join")
            self.assertIn("FOOTFALL_TIMEOUT", str(cm.exception))

    def test_path_prefix_and_headers(self):
        # footfall behind a proxy at /footfall/: a recording server stands in for the proxy.
        seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((self.path, self.headers["Authorization"], self.headers["Content-Type"], json.loads(body)))
                self.send_response(502)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<html>bad gateway</html>")

            def log_message(self, *args):
                pass

        httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        cid = new_community()
        b = VisitorBroadcaster(url="http://127.0.0.1:%d/footfall/" % httpd.server_address[1], api_key="k")
        with self.assertRaises(FootfallError) as cm:
            b.visitor_event(cid, "a", "join")
        # A body that is not footfall's error JSON still gives a status and a slug.
        self.assertEqual((cm.exception.status, cm.exception.error), (502, "http_502"))
        self.assertIn("bad gateway", cm.exception.message)
        self.assertEqual(seen, [("/footfall/api/v1/communities/%s/visitor-events" % cid, "Bearer k", "application/json",
                                 {"visitor_id": "a", "authenticated": False, "action": "join"})])


class TimestampTest(unittest.TestCase):
    def test_utc_timestamp(self):
        self.assertRegex(footfall.utc_timestamp(), TIMESTAMP)
        tz = datetime.timezone(datetime.timedelta(hours=2))
        self.assertEqual(footfall.utc_timestamp(datetime.datetime(2025, 10, 10, 16, 30, 5, 999, tzinfo=tz)), "2025-10-10T14:30:05Z")


if __name__ == "__main__":
    unittest.main()
