"""footfall: the Python client of footfall, the realtime visitor-count gateway.

A drop-in for the seed's ``analytics.websocket_utils``::

    from footfall import visitor_broadcaster

    visitor_broadcaster.broadcast_visitor_count(community_id, count=42, change=1)

``visitor_broadcaster`` reads ``FOOTFALL_URL`` and ``FOOTFALL_API_KEY`` from
Django's settings or the environment when it is used. ``mint_token`` signs
the HS256 tokens browsers present to footfall's streams. Every refused call
raises ``FootfallError``. ``verify_webhook`` checks the signature of a webhook
footfall sent, raising ``WebhookSignatureError``. Standard library only;
Python 3.9 or later.
"""

from ._client import VERSION as __version__
from ._client import VisitorBroadcaster, utc_timestamp, visitor_broadcaster
from ._errors import FootfallError
from ._tokens import mint_token
from ._webhooks import WebhookSignatureError, verify_webhook

# Shown as footfall.FootfallError in tracebacks, not footfall._errors.FootfallError.
FootfallError.__module__ = VisitorBroadcaster.__module__ = WebhookSignatureError.__module__ = __name__

__all__ = ["visitor_broadcaster", "mint_token", "FootfallError", "VisitorBroadcaster", "utc_timestamp",
           "verify_webhook", "WebhookSignatureError"]
