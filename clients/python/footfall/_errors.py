"""FootfallError: every failure of a footfall call."""

from __future__ import annotations

from typing import Optional


class FootfallError(Exception):
    """A footfall call that did not succeed.

    ``status`` is the HTTP status footfall answered (401, 400, 404, 413, ...),
    or None when there was no answer: the client is not configured
    (``error == "not_configured"``) or footfall could not be reached
    (``error == "unreachable"``, the cause chained as ``__cause__``).
    ``error`` is the slug of footfall's error body (``"unauthorized"``,
    ``"invalid_body"``, ``"not_found"``, ...), ``message`` its message, and
    for a 400 ``field`` (and ``index`` in a batch) name what was wrong.
    """

    def __init__(self, status: Optional[int], error: str, message: str = "", field: Optional[str] = None,
                 index: Optional[int] = None) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.index = index
        super().__init__(status, error, message)

    def __reduce__(self):
        # Keeps every attribute through pickle (Celery stores a failed task's exception).
        return (type(self), (self.status, self.error, self.message, self.field, self.index))

    def __str__(self):
        where = ""
        if self.field:
            where = " (field %s%s)" % (self.field, "" if self.index is None else ", index %d" % self.index)
        if self.status is None:
            return "footfall: %s: %s%s" % (self.error, self.message, where)
        return "footfall: %d %s: %s%s" % (self.status, self.error, self.message, where)

    def __repr__(self):
        return "FootfallError(status=%r, error=%r, message=%r)" % (self.status, self.error, self.message)
