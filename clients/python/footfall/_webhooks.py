"""verify_webhook: checks the Footfall-Signature of a webhook footfall sent (CONTRACT section 10).

footfall POSTs ``{"id","type","community_id","timestamp","data"}`` with the header
``Footfall-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time
from typing import Any, Dict, Iterable, Optional, Union

__all__ = ["verify_webhook", "WebhookSignatureError", "SIGNATURE_HEADER", "DEFAULT_TOLERANCE"]

SIGNATURE_HEADER = "Footfall-Signature"
DEFAULT_TOLERANCE = 300

Secret = Union[str, bytes]
Now = Union[float, int, datetime.datetime, None]


class WebhookSignatureError(ValueError):
    """A webhook request whose ``Footfall-Signature`` does not prove it came from footfall.

    The header is missing or malformed, no ``v1`` signature in it matches the
    body under the secret, or its time ``t`` is further from now than the
    tolerance (a replay). Answer such a request with 400 and do nothing else.

    A ``ValueError`` (bad input from the request, like a body that is not
    JSON), not a ``FootfallError``: that one means a call to footfall failed,
    which a Celery task may retry; a forged or replayed request is never worth
    a retry.
    """


def _secrets(secret) -> list:
    if isinstance(secret, (str, bytes, bytearray)):
        secret = [secret]
    out = []
    for s in secret:
        if isinstance(s, str):
            s = s.encode("utf-8")
        elif not isinstance(s, (bytes, bytearray)):
            raise TypeError("footfall: a webhook secret is a str or bytes, not %s" % type(s).__name__)
        if not s:
            raise ValueError("footfall: the webhook secret is empty (FOOTFALL_WEBHOOK_SECRET)")
        out.append(bytes(s))
    if not out:
        raise ValueError("footfall: no webhook secret given (FOOTFALL_WEBHOOK_SECRET)")
    return out


def _unix(now: Now) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=datetime.timezone.utc)
        return now.timestamp()
    return float(now)


def _parse_header(header: str):
    """Returns (the t text, [v1 signatures]) of a Footfall-Signature value; unknown keys are skipped."""
    t, signatures = None, []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            raise WebhookSignatureError("footfall webhook: malformed %s header" % SIGNATURE_HEADER)
        key, value = key.strip(), value.strip()
        if key == "t":
            if t is not None:
                raise WebhookSignatureError("footfall webhook: %s has more than one t" % SIGNATURE_HEADER)
            t = value
        elif key == "v1":
            signatures.append(value)
    if t is None or not t.isascii() or not t.isdigit():
        raise WebhookSignatureError("footfall webhook: %s has no timestamp t=<unix seconds>" % SIGNATURE_HEADER)
    if not signatures:
        raise WebhookSignatureError("footfall webhook: %s has no v1 signature" % SIGNATURE_HEADER)
    return t, signatures


def verify_webhook(secret: Union[Secret, Iterable[Secret]], signature_header: Optional[str], body: bytes,
                   tolerance: Optional[float] = DEFAULT_TOLERANCE, now: Now = None) -> Dict[str, Any]:
    """Checks a webhook request's signature; returns its event, the parsed JSON body.

    ``secret`` is footfall's ``FOOTFALL_WEBHOOK_SECRET`` (str or bytes), or a
    list of secrets while you rotate it (any one may have signed).
    ``signature_header`` is the request's ``Footfall-Signature`` header
    (``request.headers.get("Footfall-Signature")`` in Django), ``body`` the
    raw body bytes exactly as received (``request.body``): a body parsed and
    dumped again no longer matches. Each ``v1=`` value of the header is
    tried, in constant time. ``t`` must be within ``tolerance`` seconds of
    ``now`` (default: the current time; a datetime, naive meaning UTC, or
    unix seconds); ``tolerance=None`` skips that check.

    Raises WebhookSignatureError (a ValueError) when the header is missing or
    malformed, no signature matches, or ``t`` is too old or too far ahead;
    a plain ValueError when a correctly signed body is not a JSON object.
    The event is ``{"id", "type", "community_id", "timestamp", "data"}``;
    footfall delivers at least once, so dedupe on ``id``.
    """
    if isinstance(body, str):
        raise TypeError("footfall: pass the raw body bytes as received (request.body), not a str")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("footfall: body must be bytes, not %s" % type(body).__name__)
    body = bytes(body)
    keys = _secrets(secret)
    if not signature_header:
        raise WebhookSignatureError("footfall webhook: no %s header" % SIGNATURE_HEADER)
    t, signatures = _parse_header(str(signature_header))

    signed = t.encode("ascii") + b"." + body
    expected = [hmac.new(k, signed, hashlib.sha256).hexdigest().encode("ascii") for k in keys]
    ok = False
    for sig in signatures:
        got = sig.lower().encode("utf-8", "replace")
        for want in expected:
            # No early exit: every pair is compared, so the time says nothing of which one matched.
            ok |= hmac.compare_digest(want, got)
    if not ok:
        raise WebhookSignatureError("footfall webhook: no signature matches the body (a wrong secret, or a changed body)")

    if tolerance is not None:
        age = _unix(now) - int(t)
        if age > tolerance:
            raise WebhookSignatureError("footfall webhook: signed %d s ago, more than the tolerance of %g s" % (age, tolerance))
        if -age > tolerance:
            raise WebhookSignatureError("footfall webhook: signed %d s in the future, more than the tolerance of %g s" % (-age, tolerance))

    try:
        event = json.loads(body.decode("utf-8"))
    except ValueError:
        raise ValueError("footfall webhook: the signed body is not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("footfall webhook: the signed body is not a JSON object")
    return event
