"""mint_token: HS256 JWTs for footfall's streams (CONTRACT sections 2 and 8)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from datetime import timedelta
from typing import Iterable, Mapping, Optional, Union

from ._errors import FootfallError
from ._settings import setting

ROLES = ("member", "moderator", "admin")

CommunityID = Union[str, uuid.UUID]
Communities = Union[Mapping[CommunityID, str], Iterable[CommunityID], None]

# CONTRACT section 2: community ids match [0-9a-fA-F-]+; footfall allows at most 64 characters.
_COMMUNITY_ID = re.compile(r"\A[0-9a-fA-F-]{1,64}\Z")


def community_id_str(community_id: CommunityID) -> str:
    """Returns a community id as footfall shows it: a string, lower case.

    Accepts a string or anything whose ``str()`` is the id, such as a
    ``uuid.UUID`` from a Django ``UUIDField``. Raises ValueError for an id
    footfall would answer 404 to.
    """
    s = str(community_id).lower()
    if not _COMMUNITY_ID.match(s):
        raise ValueError("footfall: %r is not a community id (hex digits and dashes, at most 64)" % (community_id,))
    return s


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _communities_claim(communities: Communities) -> dict:
    """Returns the ``communities`` claim from a mapping {id: role} or an iterable of ids (members)."""
    if communities is None:
        return {}
    if isinstance(communities, (str, bytes)):
        raise TypeError("footfall: communities must be a mapping {id: role} or a list of ids, not a string")
    if hasattr(communities, "items"):
        pairs = communities.items()
    else:
        pairs = ((c, "member") for c in communities)
    claim = {}
    for cid, role in pairs:
        if role not in ROLES:
            raise ValueError("footfall: role %r of community %s must be one of %s" % (role, cid, ", ".join(ROLES)))
        claim[community_id_str(cid)] = role
    return claim


def mint_token(
    sub: str,
    communities: Communities,
    ttl: Union[float, timedelta] = 3600,
    anon: bool = False,
    admin: bool = False,
    secret: Union[str, bytes, None] = None,
    audience: Optional[str] = None,
    issuer: Optional[str] = None,
) -> str:
    """Returns an HS256 JWT that footfall accepts on its streams and snapshots.

    ``sub`` is the visitor (a user id, or with ``anon=True`` an anonymous
    session id: the same visitor as ``visitor_event(..., visitor_id=sub,
    authenticated=False)``). ``communities`` maps community ids to ``member``,
    ``moderator`` or ``admin``; a list of ids makes the visitor a member of
    each. ``ttl`` is in seconds (the token's ``exp`` is now + ttl, rounded
    up to a whole second). ``admin=True`` adds ``"role": "admin"`` (a site
    admin, allowed everywhere except, for an anonymous token, dashboards).

    ``secret`` (str or bytes) defaults to the setting ``FOOTFALL_JWT_SECRET``;
    ``audience`` and ``issuer`` default to ``FOOTFALL_JWT_AUDIENCE`` and
    ``FOOTFALL_JWT_ISSUER`` and are left out when unset, as footfall checks
    them only when it has them. Raises FootfallError(error="not_configured")
    when there is no secret.
    """
    if not isinstance(sub, str) or sub == "":
        raise ValueError("footfall: sub must be a non-empty string")
    if hasattr(ttl, "total_seconds"):  # a datetime.timedelta
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError("footfall: ttl must be a positive number of seconds")
    if secret is None:
        secret = setting("FOOTFALL_JWT_SECRET")
        if secret is None:
            raise FootfallError(
                None, "not_configured",
                "no JWT secret: pass secret= or set FOOTFALL_JWT_SECRET (environment or Django settings)")
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ValueError("footfall: the secret is empty")
    if audience is None:
        audience = setting("FOOTFALL_JWT_AUDIENCE")
    if issuer is None:
        issuer = setting("FOOTFALL_JWT_ISSUER")

    now = time.time()
    # exp is rounded up to a whole second, as footfall's own minter does.
    claims = {"sub": sub, "iat": int(now), "exp": int(math.ceil(now + ttl)), "communities": _communities_claim(communities)}
    if admin:
        claims["role"] = "admin"
    if anon:
        claims["anon"] = True
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer

    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    )
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(signature)
