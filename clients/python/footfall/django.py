"""Django helpers: a view that answers footfall's auth hook from the site's own login.

footfall, given a stream or snapshot request with no footfall credential but
with the site's cookies, asks the site who that is (CONTRACT section 9,
``FOOTFALL_AUTH_HOOK_URL``). ``auth_hook_view`` answers from Django's session
and ``request.user``, with the community role a function of the site decides::

    # urls.py
    from footfall.django import auth_hook_view

    def community_role(user, community_id):
        if user.is_superuser:
            return "admin"
        m = Membership.objects.filter(user=user, community_id=community_id).first()
        return m.role if m else None          # "member", "moderator", "admin" or None

    urlpatterns = [path("footfall/auth-hook/", auth_hook_view(community_role))]

and footfall runs with ``FOOTFALL_AUTH_HOOK_URL=https://site/footfall/auth-hook/``.

``webhook_view`` receives footfall's webhooks (CONTRACT section 10,
``FOOTFALL_WEBHOOK_URL``), checks their signature and hands each event to a
function of the site::

    def on_footfall_event(event):
        if event["type"] == "community_occupied":
            ...

    urlpatterns = [path("footfall/webhook/", webhook_view(on_footfall_event))]

Importing this module needs Django; the rest of footfall does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from importlib import import_module
from typing import Any, Callable, Optional

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.cookie import parse_cookie
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from ._settings import setting
from ._tokens import ROLES, community_id_str
from ._webhooks import DEFAULT_TOLERANCE, SIGNATURE_HEADER, verify_webhook

__all__ = ["auth_hook_view", "user_for_cookie", "webhook_view"]

log = logging.getLogger("footfall")


def user_for_cookie(cookie: str) -> tuple:
    """Returns (user, session) for a Cookie header as a browser sent it.

    The user is what ``request.user`` would be on a request carrying that
    header: the session's user if the session is live and its user still
    valid (Django's session-hash check included), else ``AnonymousUser``.
    """
    cookies = parse_cookie(cookie or "")
    request = HttpRequest()
    request.COOKIES = cookies
    request.META["HTTP_COOKIE"] = cookie or ""
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(cookies.get(settings.SESSION_COOKIE_NAME))
    return get_user(request), request.session


def _anonymous_sub(session):
    # An anonymous visitor is named by its session, but never by the session key itself:
    # footfall may show visitor ids (logs, webhooks), and the key is a credential.
    key = session.session_key
    if not key:
        return None
    return "django-" + hashlib.sha256(("footfall-anon:" + key).encode()).hexdigest()[:32]


def auth_hook_view(
    membership: Callable[[Any, str], Optional[str]], ttl_seconds: int = 300, require_api_key: bool = True
) -> Callable[[HttpRequest], JsonResponse]:
    """Returns a Django view that answers footfall's auth hook.

    ``membership(user, community_id)`` returns the user's role in the
    community (``"member"``, ``"moderator"`` or ``"admin"``) or None; it gets
    the community id in lower case. For a signed-in user a role gives
    ``200 {"sub": str(user.pk), "role": role, "anonymous": false,
    "ttl_seconds": ttl_seconds}`` and None gives 403 (footfall: 4003). For a
    visitor who is not signed in, ``membership`` gets ``AnonymousUser``: a
    role makes the visitor an anonymous one (``"anonymous": true``, its
    ``sub`` derived from the session, so it needs a server-side session
    engine and a session that exists), None gives 401 (footfall: a guest on a
    public community, else 4001). ``user.pk`` is the same visitor as
    ``visitor_event(..., visitor_id=user.pk, authenticated=True)`` and a
    token minted for ``str(user.pk)``.

    footfall's request must carry ``Authorization: Bearer <FOOTFALL_API_KEY>``
    (the setting of this site, compared in constant time); without the right
    key the answer is 401, and with no key set at all 500 (footfall then
    reports the hook as unavailable rather than treating everyone as
    signed out). ``require_api_key=False`` turns the check off.
    """
    if not callable(membership):
        raise TypeError("footfall: membership must be a function (user, community_id) -> role or None")
    ttl_seconds = int(ttl_seconds)
    if not 1 <= ttl_seconds <= 3600:
        raise ValueError("footfall: ttl_seconds must be between 1 and 3600")

    @csrf_exempt
    @require_POST
    def footfall_auth_hook(request):
        if require_api_key:
            key = setting("FOOTFALL_API_KEY")
            if not key:
                log.error("footfall auth hook: FOOTFALL_API_KEY is not set; refusing every request")
                return JsonResponse({"error": "not_configured"}, status=500)
            got = request.META.get("HTTP_AUTHORIZATION", "")
            scheme, _, value = got.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), str(key).encode()):
                log.warning("footfall auth hook: a request without the right API key")
                return JsonResponse({"error": "unauthorized"}, status=401)
        try:
            body = json.loads(request.body.decode("utf-8"))
            community_id = community_id_str(body["community_id"])
            cookie = body.get("cookie") or ""
            if not isinstance(cookie, str):
                raise ValueError("cookie")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return JsonResponse({"error": "invalid_body"}, status=400)

        user, session = user_for_cookie(cookie)
        role = membership(user, community_id)
        if role is not None and role not in ROLES:
            raise ValueError("footfall: membership returned %r; want one of %s or None" % (role, ", ".join(ROLES)))
        if user.is_authenticated:
            if role is None:
                return JsonResponse({"error": "forbidden"}, status=403)
            sub, anonymous = str(user.pk), False
        else:
            sub = _anonymous_sub(session) if role is not None else None
            if sub is None:
                return JsonResponse({"error": "unauthorized"}, status=401)
            anonymous = True
        return JsonResponse({"sub": sub, "role": role, "anonymous": anonymous, "ttl_seconds": ttl_seconds})

    return footfall_auth_hook


def webhook_view(
    handler: Callable[[dict], Any], secret: Any = None, tolerance: Optional[float] = DEFAULT_TOLERANCE
) -> Callable[[HttpRequest], HttpResponse]:
    """Returns a Django view (CSRF-exempt, POST only) that receives footfall's webhooks.

    Each request's ``Footfall-Signature`` is checked with ``verify_webhook``
    under ``secret``, by default the setting ``FOOTFALL_WEBHOOK_SECRET``
    (Django's settings, else the environment, read at each request; a list
    of secrets while rotating). A good signature calls ``handler(event)``
    with the event dict (``{"id", "type", "community_id", "timestamp",
    "data"}``) and answers 204. A bad, missing or old signature answers 400
    without calling the handler. A handler that raises gets 500 (the
    exception logged to the ``footfall`` logger), and so does a view with no
    secret at all: footfall retries a non-2xx answer for at least 10
    minutes. footfall delivers each event at least once: the handler should
    dedupe on ``event["id"]``, and be quick (footfall waits 5 s), handing
    slow work to a task queue.
    """
    if not callable(handler):
        raise TypeError("footfall: handler must be a function (event) -> None")

    @csrf_exempt
    @require_POST
    def footfall_webhook(request):
        key = secret if secret is not None else setting("FOOTFALL_WEBHOOK_SECRET")
        if not key:
            log.error("footfall webhook: FOOTFALL_WEBHOOK_SECRET is not set; refusing every request")
            return JsonResponse({"error": "not_configured"}, status=500)
        try:
            event = verify_webhook(key, request.headers.get(SIGNATURE_HEADER), request.body, tolerance=tolerance)
        except ValueError as e:  # WebhookSignatureError, or a signed body that is not a JSON object
            log.warning("footfall webhook: refused: %s", e)
            return JsonResponse({"error": "invalid_signature", "message": str(e)}, status=400)
        try:
            handler(event)
        except Exception:
            log.exception("footfall webhook: the handler failed on %s event %s", event.get("type"), event.get("id"))
            return JsonResponse({"error": "handler_failed"}, status=500)
        return HttpResponse(status=204)

    return footfall_webhook
