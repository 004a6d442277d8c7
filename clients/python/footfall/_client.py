"""VisitorBroadcaster: the seed's broadcaster, speaking footfall's service API (CONTRACT section 6)."""

from __future__ import annotations

import datetime
import decimal
import http.client
import json
import logging
import urllib.parse
import uuid
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import _transport
from ._errors import FootfallError
from ._settings import setting
from ._tokens import CommunityID, Communities, _communities_claim, community_id_str

Answer = Dict[str, Any]
VisitorEvent = Union[Mapping[str, Any], tuple]
TimeArg = Union[datetime.datetime, str, None]

__all__ = ["VisitorBroadcaster", "visitor_broadcaster"]

log = logging.getLogger("footfall")

VERSION = "0.1.0"
DEFAULT_TIMEOUT = 5.0
ACTIONS = ("join", "leave", "heartbeat")


def utc_timestamp(now: Optional[datetime.datetime] = None) -> str:
    """Returns ``now`` (default: the current time) as footfall writes timestamps: RFC 3339, UTC, whole seconds."""
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    elif now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_default(o):
    # The values a Django site hands over: UUIDField ids, DateTimeField values, DecimalField figures.
    if isinstance(o, uuid.UUID):
        return str(o)
    if isinstance(o, datetime.datetime):
        if o.tzinfo is not None:
            return utc_timestamp(o) if o.microsecond == 0 else o.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        return o.isoformat()
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError("footfall: %s is not JSON serializable" % type(o).__name__)


def _dumps(body):
    return json.dumps(body, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class VisitorBroadcaster:
    """A client of footfall's service API with the seed's ``VisitorBroadcaster`` methods.

    ``url`` (footfall's base URL, for example ``http://footfall:8080``, a path
    prefix allowed), ``api_key`` and ``timeout`` (seconds) default to the
    settings ``FOOTFALL_URL``, ``FOOTFALL_API_KEY`` and ``FOOTFALL_TIMEOUT``
    (default 5), looked up in Django's settings when Django is configured and
    else in the environment, at each call: the module-level
    ``visitor_broadcaster`` needs no setup code.

    Every method sends one HTTP request and returns footfall's JSON answer
    (None for an empty one). A call footfall refuses, or cannot be made,
    raises FootfallError. Instances are safe to share between threads; each
    thread keeps its own connection to footfall alive between calls.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: Optional[float] = None) -> None:
        self._url = url
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self):
        return "<VisitorBroadcaster url=%r>" % (self._url or setting("FOOTFALL_URL"),)

    # The seed's methods.

    def broadcast_visitor_count(self, community_id: CommunityID, count: int, change: int = 0) -> Answer:
        """Sends ``{"type":"visitor_count","community_id","count","change","timestamp"}`` to the visitors stream."""
        return self._broadcast_count("visitor_count", community_id, count, change)

    def broadcast_visitor_joined(self, community_id: CommunityID, count: int) -> Answer:
        """Sends a ``visitor_joined`` message with the new ``count`` to the visitors stream."""
        return self._broadcast_count("visitor_joined", community_id, count, None)

    def broadcast_visitor_left(self, community_id: CommunityID, count: int) -> Answer:
        """Sends a ``visitor_left`` message with the new ``count`` to the visitors stream."""
        return self._broadcast_count("visitor_left", community_id, count, None)

    def broadcast_dashboard_update(self, community_id: CommunityID, data: Mapping[str, Any]) -> Answer:
        """Sends ``{"type":"dashboard_update","data":data,"timestamp"}`` to the dashboard stream.

        ``data`` is the seed's ``{"today_visitors": {...}, "realtime_count": N}``;
        ``data["community_id"]`` is filled in when missing, and so is
        ``today_visitors["total_unique_visitors"]`` (the sum of the other two).
        The caller's dict is not changed.
        """
        cid = community_id_str(community_id)
        if not hasattr(data, "items"):
            raise TypeError("footfall: data must be a mapping, not %s" % type(data).__name__)
        data = dict(data)
        data.setdefault("community_id", cid)
        today = data.get("today_visitors")
        if hasattr(today, "items") and "total_unique_visitors" not in today:
            auth, anon = today.get("authenticated_visitors"), today.get("anonymous_visitors")
            if isinstance(auth, int) and isinstance(anon, int):
                data["today_visitors"] = dict(today, total_unique_visitors=auth + anon)
        message = {"type": "dashboard_update", "data": data, "timestamp": utc_timestamp()}
        return self._post("/api/v1/communities/%s/broadcast" % cid, {"stream": "dashboard", "message": message})

    def broadcast_analytics_metric(self, community_id: CommunityID, metric: str, value: Any) -> Answer:
        """Sends ``{"type":"analytics_update","metric","value","timestamp"}`` to the dashboard stream.

        ``value`` is any JSON value: a number, or an object as in the seed's
        conversion signal. footfall stamps the time.
        """
        cid = community_id_str(community_id)
        return self._post("/api/v1/communities/%s/metrics" % cid, {"metric": metric, "value": value})

    # Presence, conversions and sessions.

    def visitor_event(self, community_id: CommunityID, visitor_id: Union[str, int], action: str,
                      authenticated: bool = False) -> Answer:
        """Reports a visitor's ``action``: ``join``, ``heartbeat`` or ``leave`` (CONTRACT section 4).

        ``visitor_id`` with ``authenticated=True`` is the same visitor as a
        token whose ``sub`` is that id; with False, an anonymous visitor.
        A join or heartbeat keeps it present for ``FOOTFALL_PRESENCE_TTL``.
        Returns ``{"community_id", "count", "timestamp"}``, count being the new count.
        """
        cid = community_id_str(community_id)
        return self._post("/api/v1/communities/%s/visitor-events" % cid, _visitor_event(visitor_id, action, authenticated))

    def visitor_events(self, community_id: CommunityID, events: Iterable[VisitorEvent]) -> Answer:
        """Sends several visitor events at once (up to 1,000), each a dict with the
        keys of ``visitor_event`` or a tuple ``(visitor_id, action, authenticated)``.
        footfall checks them all before applying any; the answer's count is the one after the last.
        """
        cid = community_id_str(community_id)
        batch = []
        for e in events:
            if hasattr(e, "items"):
                batch.append(_visitor_event(e.get("visitor_id"), e.get("action"), e.get("authenticated", False)))
            else:
                batch.append(_visitor_event(*e))
        return self._post("/api/v1/communities/%s/visitor-events" % cid, batch)

    def record_conversion(self, community_id: CommunityID, session_id: Union[str, uuid.UUID],
                          converted_at: Union[datetime.datetime, str, None] = None) -> Answer:
        """Reports that an anonymous session converted: an ``analytics_update`` with metric ``conversion``.

        ``converted_at`` (a datetime or an ISO 8601 string) defaults to now.
        """
        cid = community_id_str(community_id)
        body = {"session_id": str(session_id)}
        if converted_at is not None:
            body["converted_at"] = converted_at
        return self._post("/api/v1/communities/%s/conversions" % cid, body)

    def create_session(self, user_id: Union[str, int], communities: Communities = None, role: Optional[str] = None,
                       ttl_seconds: Optional[int] = None) -> Answer:
        """Creates a footfall session for a signed-in user; returns ``{"session_id", "expires_at"}``.

        ``communities`` maps community ids to roles (or is a list of ids:
        member of each); ``role="admin"`` makes a site admin; ``ttl_seconds``
        defaults to 3600 (at most 30 days). The browser presents the session as
        the cookie ``footfall_session=<session_id>``.
        """
        body = {"user_id": str(user_id), "communities": _communities_claim(communities)}
        if role is not None:
            body["role"] = role
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        return self._call("POST", "/api/v1/sessions", body)

    # History.

    def visitor_history(self, community_id: CommunityID, step: str = "hour", start: TimeArg = None,
                        end: TimeArg = None) -> Answer:
        """Returns the community's visitor history: ``{"community_id", "step", "points": [...]}``.

        ``GET /api/v1/communities/{id}/visitors/history`` with the service API
        key. ``step`` is ``"minute"``, ``"hour"`` or ``"day"``; each point is
        ``{"time", "peak", "average"}`` (day points add the day's
        ``authenticated_visitors``, ``anonymous_visitors``,
        ``total_unique_visitors`` and ``peak_at``), oldest first, the last one
        the current bucket so far. ``start`` and ``end`` (footfall's ``from``
        and ``to``) are datetimes (naive ones are UTC) or RFC 3339 strings;
        None leaves them to footfall: ``end`` now, ``start`` an hour, a day or
        30 days before it. A bad parameter raises FootfallError with status
        400, error ``invalid_query`` and ``field`` ``"step"``, ``"from"`` or ``"to"``.
        """
        return self._call("GET", _history_path(community_id, step, start, end))

    def visitor_history_csv(self, community_id: CommunityID, step: str = "hour", start: TimeArg = None,
                            end: TimeArg = None) -> str:
        """The same points as ``visitor_history``, as CSV text with a header row (``Accept: text/csv``).

        The columns are ``time,peak,average``, and for day points also
        ``authenticated_visitors,anonymous_visitors,total_unique_visitors,peak_at``.
        """
        path = _history_path(community_id, step, start, end)
        _, raw = self._request("GET", path, accept="text/csv")
        return raw.decode("utf-8")

    def revoke_session(self, session_id: str) -> None:
        """Revokes a session: its open streams close within a second.

        Raises FootfallError with status 404 when there is no live session with that id.
        """
        if not session_id:
            raise ValueError("footfall: session_id is empty")
        self._call("DELETE", "/api/v1/sessions/" + urllib.parse.quote(str(session_id), safe=""))

    # HTTP.

    def _broadcast_count(self, typ, community_id, count, change):
        cid = community_id_str(community_id)
        message = {"type": typ, "community_id": cid, "count": count}
        if change is not None:
            message["change"] = change
        message["timestamp"] = utc_timestamp()
        return self._post("/api/v1/communities/%s/broadcast" % cid, {"stream": "visitors", "message": message})

    def _post(self, path, body):
        return self._call("POST", path, body)

    def _config(self):
        url = self._url or setting("FOOTFALL_URL")
        api_key = self._api_key or setting("FOOTFALL_API_KEY")
        if not url:
            raise FootfallError(None, "not_configured", "no footfall URL: set FOOTFALL_URL (environment or Django settings)")
        if not api_key:
            raise FootfallError(None, "not_configured", "no API key: set FOOTFALL_API_KEY (environment or Django settings)")
        url = str(url).rstrip("/")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise FootfallError(None, "not_configured", "FOOTFALL_URL must be an http:// or https:// URL")
        timeout = self._timeout
        if timeout is None:
            raw = setting("FOOTFALL_TIMEOUT")
            try:
                timeout = DEFAULT_TIMEOUT if raw is None else float(raw)
            except ValueError:
                raise FootfallError(None, "not_configured", "FOOTFALL_TIMEOUT must be a number of seconds") from None
        return url, str(api_key), timeout

    def _call(self, method, path, body=None):
        """Sends a request with a JSON body (or none); returns footfall's parsed JSON answer, None for none."""
        status, raw = self._request(method, path, body)
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise FootfallError(status, "bad_answer", "%s %s answered a body that is not JSON" % (method, path)) from None

    def _request(self, method, path, body=None, accept="application/json"):
        """Sends a request; returns (status, body bytes) of a 2xx answer and raises FootfallError for anything else."""
        url, api_key, timeout = self._config()
        headers = {
            "Authorization": "Bearer " + api_key,
            "Accept": accept,
            "User-Agent": "footfall-python/" + VERSION,
        }
        data = None
        if body is not None:
            data = _dumps(body)
            headers["Content-Type"] = "application/json"
        log.debug("footfall: %s %s", method, path)
        try:
            status, raw = _transport.send(method, url + path, headers, data, timeout)
        except (OSError, http.client.HTTPException, ValueError) as e:
            # ValueError: http.client's InvalidURL (a bad port, say) and the like.
            raise FootfallError(None, "unreachable", "%s %s: %s" % (method, url, e)) from e
        if not 200 <= status < 300:
            raise _refusal(status, raw)
        return status, raw


def _visitor_event(visitor_id, action, authenticated):
    if visitor_id is None or str(visitor_id) == "":
        raise ValueError("footfall: visitor_id is required")
    if action not in ACTIONS:
        raise ValueError("footfall: action must be one of %s, not %r" % (", ".join(ACTIONS), action))
    return {"visitor_id": str(visitor_id), "authenticated": bool(authenticated), "action": action}


def _query_time(name, t):
    """Returns t (a datetime, naive meaning UTC, or an RFC 3339 string) as RFC 3339 for a query string."""
    if isinstance(t, str):
        if not t.strip():
            raise ValueError("footfall: %s is an empty string" % name)
        return t.strip()
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        # isoformat writes the microseconds only when there are some.
        return t.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    # A date alone is refused: which midnight (UTC, footfall's FOOTFALL_TIMEZONE, the site's) is the caller's call.
    raise TypeError("footfall: %s must be a datetime or an RFC 3339 string, not %s" % (name, type(t).__name__))


def _history_path(community_id, step, start, end):
    cid = community_id_str(community_id)
    query = [("step", str(step))]
    if start is not None:
        query.append(("from", _query_time("start", start)))
    if end is not None:
        query.append(("to", _query_time("end", end)))
    return "/api/v1/communities/%s/visitors/history?%s" % (cid, urllib.parse.urlencode(query))


def _refusal(status, raw):
    """Returns the FootfallError for a non-2xx answer, reading footfall's error body."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return FootfallError(status, body["error"], str(body.get("message", "")), body.get("field"), body.get("index"))
    text = raw.decode("utf-8", "replace").strip()[:200]
    return FootfallError(status, "http_%d" % status, text)


visitor_broadcaster = VisitorBroadcaster()
