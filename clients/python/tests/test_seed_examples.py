"""The seed's three backend examples, run against a real footfall with only their import line changed.

The files in tests/seed_examples/ are the seed's "From Celery Task", "From
Signal" and "Manual Broadcasting" blocks, byte for byte except
``from analytics.websocket_utils import visitor_broadcaster``, which reads
``from footfall import visitor_broadcaster`` (test_fixtures_are_the_seed
checks that against the seed when the seed is at hand). Each runs as a module
whose globals hold what the seed's site has around it and these tests do not:
Celery's ``app`` (its ``@app.task`` stubbed as a plain decorator), the site's
``get_today_visitors`` and ``get_realtime_count``, the model
``AnonymousSession``, and Django's ``receiver`` (the example uses it without
importing it) and ``post_save``: the real ones when Django is installed, else
a minimal stand-in of Django's Signal.
"""

import datetime
import os
import sys
import types
import unittest
import uuid
from unittest import mock

from tests import support
from tests.support import clean_env, new_community

EXAMPLES = os.path.join(support.HERE, "seed_examples")
SEED_NAME = "000_e7a01cfd3c88a6e0.txt"
ORIGINAL_IMPORT = "from analytics.websocket_utils import visitor_broadcaster"
FOOTFALL_IMPORT = "from footfall import visitor_broadcaster"
FIXTURES = {
    "From Celery Task": "celery_task.py",
    "From Signal": "signal_receiver.py",
    "Manual Broadcasting": "manual_broadcasting.py",
}


def setUpModule():
    support.server()


def run_example(filename, **scaffolding):
    """Runs a seed example as a module with the given globals; returns the module."""
    path = os.path.join(EXAMPLES, filename)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module = types.ModuleType("seed_example_" + filename[:-3])
    module.__file__ = path
    module.__dict__.update(scaffolding)
    exec(compile(source, path, "exec"), module.__dict__)
    return module


class CeleryApp:
    """Celery's app, reduced to what the example uses: ``@app.task`` (the task runs when called)."""

    def __init__(self):
        self.tasks = {}

    def task(self, fn):
        self.tasks[fn.__name__] = fn
        return fn


class Signal:
    """A stand-in for django.dispatch.Signal when Django is not installed: connect, send."""

    def __init__(self):
        self.receivers = []

    def connect(self, receiver, sender=None, **kwargs):
        self.receivers.append((receiver, sender))

    def send(self, sender, **named):
        return [(r, r(signal=self, sender=sender, **named)) for r, s in self.receivers if s is None or s is sender]


def django_signals():
    """Returns (post_save, receiver, patch of sys.modules): Django's own if installed, else stand-ins."""
    try:
        import django  # noqa: F401
        from django.db.models.signals import post_save
        from django.dispatch import receiver
    except ImportError:
        post_save = Signal()

        def receiver(signal, **kwargs):
            def decorate(fn):
                signal.connect(fn, **kwargs)
                return fn
            return decorate

        modules = {}
        for name in ("django", "django.db", "django.db.models", "django.db.models.signals"):
            modules[name] = types.ModuleType(name)
        modules["django.db.models.signals"].post_save = post_save
        return post_save, receiver, mock.patch.dict(sys.modules, modules)
    from tests import django_site

    django_site.configure()
    return post_save, receiver, mock.patch.dict(sys.modules)


class AnonymousSession:
    """The seed's model, as far as the signal example reads it."""

    def __init__(self, community_id, converted_at=None):
        self.id = uuid.uuid4()
        self.community_id = community_id
        self.converted_at = converted_at


class SeedExamplesTest(unittest.TestCase):
    def setUp(self):
        self.srv = support.server()
        env = clean_env(**self.srv.env())
        env.__enter__()
        self.addCleanup(env.__exit__, None, None, None)

    def dashboard(self, cid):
        sse = self.srv.sse(cid, "visitor-dashboard", token=self.srv.token("moderator-1", {cid: "moderator"}))
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200, sse.error)
        self.assertEqual(sse.next().type, "dashboard_update")
        return sse

    def test_fixtures_are_the_seed(self):
        seed = os.environ.get("FOOTFALL_SEED") or os.path.join(os.path.dirname(support.REPO), "shared", "seed", SEED_NAME)
        if not os.path.exists(seed):
            self.skipTest("the seed is not at %s (set FOOTFALL_SEED)" % seed)
        with open(seed, encoding="utf-8") as f:
            text = f.read()
        for title, filename in FIXTURES.items():
            start = text.index("```python\n", text.index("### " + title)) + len("```python\n")
            block = text[start:text.index("```", start)]
            self.assertEqual(block.count(ORIGINAL_IMPORT), 1, title)
            with open(os.path.join(EXAMPLES, filename), encoding="utf-8") as f:
                fixture = f.read()
            self.assertEqual(fixture, block.replace(ORIGINAL_IMPORT, FOOTFALL_IMPORT), title)

    def test_from_celery_task(self):
        cid = new_community()
        dash = self.dashboard(cid)
        stats = {"authenticated_visitors": 150, "anonymous_visitors": 320, "total_unique_visitors": 470}
        app = CeleryApp()
        module = run_example(
            "celery_task.py", app=app,
            get_today_visitors=lambda community_id: dict(stats),
            get_realtime_count=lambda community_id: 42,
        )
        self.assertIn("update_visitor_analytics", app.tasks)
        module.update_visitor_analytics(cid)
        ev = dash.wait_for(lambda e: e.data["data"].get("realtime_count") == 42)
        self.assertEqual(ev.data["data"], {"today_visitors": stats, "realtime_count": 42, "community_id": cid})
        self.assertRegex(ev.data["timestamp"], support.TIMESTAMP)

    def test_from_signal(self):
        cid = uuid.uuid4()  # a Django UUIDField
        dash = self.dashboard(str(cid))
        post_save, receiver, modules = django_signals()
        with modules:
            module = run_example("signal_receiver.py", receiver=receiver, AnonymousSession=AnonymousSession)
        self.assertTrue(callable(module.on_session_converted))

        # Saved without a conversion: nothing goes out.
        post_save.send(sender=AnonymousSession, instance=AnonymousSession(cid), created=True)
        converted = datetime.datetime(2025, 10, 10, 14, 31, 0, 250000, tzinfo=datetime.timezone.utc)
        session = AnonymousSession(cid, converted_at=converted)
        post_save.send(sender=AnonymousSession, instance=session, created=False)
        ev = dash.wait_for(lambda e: e.type == "analytics_update")
        self.assertEqual(ev.data["metric"], "conversion")
        self.assertEqual(ev.data["value"], {"session_id": str(session.id), "converted_at": converted.isoformat()})

    def test_manual_broadcasting(self):
        cid = "123e4567-e89b-12d3-a456-426614174000"  # the example's own community
        visitors = self.srv.sse(cid, token=self.srv.token("viewer", {cid: "member"}))
        self.addCleanup(visitors.close)
        self.assertEqual(visitors.next().type, "visitor_count")
        dash = self.dashboard(cid)
        run_example("manual_broadcasting.py")
        ev = visitors.wait_for(lambda e: e.data.get("count") == 42)
        self.assertEqual((ev.type, ev.data["change"], ev.data["community_id"]), ("visitor_count", 1, cid))
        ev = dash.wait_for(lambda e: e.type == "analytics_update")
        self.assertEqual((ev.data["metric"], ev.data["value"]), ("conversion_rate", 14.5))


if __name__ == "__main__":
    unittest.main()
