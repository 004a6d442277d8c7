"""Settings lookup: Django settings when Django is configured, else the environment.

Every value is read at the moment it is needed, never cached, so a Celery worker
or a test that sets ``FOOTFALL_URL`` after ``import footfall`` is still seen, and
so is Django's ``override_settings``.
"""

import os
import sys


def django_setting(name):
    """Returns Django's ``settings.<name>``, or None.

    None when Django is not installed, not configured (no ``settings.configure()``
    and no ``DJANGO_SETTINGS_MODULE``), or has no such setting. Django is imported
    only if it is installed; footfall works the same without it.
    """
    if "django" not in sys.modules:
        # Import Django only if the process could be a Django process at all:
        # importing it costs ~50 ms and a non-Django worker has no settings.
        if not os.environ.get("DJANGO_SETTINGS_MODULE"):
            return None
    try:
        from django.conf import settings
    except ImportError:
        return None
    try:
        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            return None
        return getattr(settings, name, None)
    except Exception:  # ImproperlyConfigured, or a settings module that fails to import
        return None


def setting(name, default=None):
    """Returns the setting ``name``: Django's if set and non-empty, else the environment's."""
    value = django_setting(name)
    if value is None or value == "":
        value = os.environ.get(name, "")
    if value == "":
        return default
    return value
