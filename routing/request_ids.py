"""Request ids: unique across processes and restarts, shaped like a UUID, made without a random
draw per request."""

from __future__ import annotations

import itertools
import os
import secrets


class _Ids:
    """A random UUID-v4-shaped prefix per process and a counter for the last 12 hex digits."""

    prefix = ""
    counter: itertools.count[int] = itertools.count()

    @classmethod
    def renew(cls) -> None:
        raw = secrets.token_hex(10)
        # Version 4 and the RFC 4122 variant: 74 random bits tell processes apart.
        variant = "89ab"[int(raw[15], 16) & 3]
        cls.prefix = f"{raw[:8]}-{raw[8:12]}-4{raw[12:15]}-{variant}{raw[16:19]}-"
        cls.counter = itertools.count()


_Ids.renew()
# A forked worker draws its own prefix: it must not share the parent's ids.
os.register_at_fork(after_in_child=_Ids.renew)


def request_id_new() -> str:
    """A new request id (`X-Request-ID`, the usage event's `requestId`)."""
    return f"{_Ids.prefix}{next(_Ids.counter):012x}"
