"""A minimal Django site for the tests: settings, the auth hook's URL and its membership table, the webhook views.

Configured once per process (Django allows one configuration) by
``configure()``, which the Django tests and the seed's signal example share.
The settings hold no FOOTFALL_* value: tests that need one use
``override_settings``, so other tests keep reading the environment.
"""

import atexit
import os
import shutil
import tempfile

import django
from django.conf import settings
from django.urls import path

# (user pk or "anonymous", community id) -> role; the tests fill it in.
MEMBERSHIPS = {}


# The events webhook_view handed to on_webhook, in order; the tests clear it.
WEBHOOK_EVENTS = []
OWN_WEBHOOK_SECRET = "own-webhook-secret-0123456789"


def on_webhook(event):
    WEBHOOK_EVENTS.append(event)
    if event.get("data", {}).get("fail"):
        raise RuntimeError("the site's handler failed")


def community_role(user, community_id):
    who = user.pk if user.is_authenticated else "anonymous"
    return MEMBERSHIPS.get((who, community_id))


def _urlpatterns():
    from footfall.django import auth_hook_view, webhook_view

    return [
        path("footfall/auth-hook/", auth_hook_view(community_role, ttl_seconds=120)),
        # Verdicts that last one second: footfall asks again soon after a logout.
        path("footfall/auth-hook-1s/", auth_hook_view(community_role, ttl_seconds=1)),
        # FOOTFALL_WEBHOOK_SECRET from the settings, and a secret given to the view.
        path("footfall/webhook/", webhook_view(on_webhook)),
        path("footfall/webhook-own-secret/", webhook_view(on_webhook, secret=OWN_WEBHOOK_SECRET)),
    ]


def configure():
    """Configures Django for this process (once) and creates its tables."""
    if settings.configured:
        return
    # A file, not ":memory:": the WSGI server's thread has a connection of its own.
    tmp = tempfile.mkdtemp(prefix="footfall-django-")
    atexit.register(shutil.rmtree, tmp, True)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="footfall-tests-" + os.urandom(16).hex(),
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(tmp, "db.sqlite3")}},
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        ROOT_URLCONF=__name__,
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


def __getattr__(name):
    # urlpatterns is built when Django's URL resolver first asks for it, after configure().
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)
