"""Opaque, time-ordered string ids: `<kind>_<ULID>`."""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as its two Crockford base32 characters.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_RANDOM_BITS = 80
# The last ULID this process drew (milliseconds, randomness): one drawn in the same millisecond,
# or while the clock stands behind it, is that one plus 1, so a process's ULIDs strictly increase.
_last = [0, 0]
_lock = threading.Lock()
# Random bytes drawn from the OS a batch at a time (one system call per 400 ULIDs).
_POOL_BYTES = 4000


class _Pool:
    data = b""
    offset = 0


def _forget() -> None:
    _last[:] = [0, 0]
    _Pool.data, _Pool.offset = b"", 0


# A forked child continuing its parent's sequence or random bytes would draw its parent's ULIDs.
os.register_at_fork(after_in_child=_forget)


def _random_80() -> int:
    data, offset = _Pool.data, _Pool.offset
    if offset >= len(data):
        data, offset = os.urandom(_POOL_BYTES), 0
        _Pool.data = data
    _Pool.offset = offset + _RANDOM_BITS // 8
    return int.from_bytes(data[offset : offset + _RANDOM_BITS // 8], "big")


def new_id(kind: str) -> str:
    """A fresh id such as `grp_01J9X7Y0Z3K4M5N6P7Q8R9S0T1`; sorts by creation time."""
    return f"{kind}_{new_ulid()}"


def new_workspace_id() -> str:
    return new_id("ws")


def new_group_id() -> str:
    return new_id("grp")


def new_endpoint_id() -> str:
    return new_id("ep")


def new_secret_id() -> str:
    return new_id("sec")


def new_management_key_id() -> str:
    return new_id("mk")


def new_api_key_id() -> str:
    return new_id("key")


def new_webhook_endpoint_id() -> str:
    return new_id("whe")


def new_delivery_id() -> str:
    return new_id("msg")


def new_audit_id() -> str:
    return new_id("aud")


def new_ulid() -> str:
    """A bare ULID (usage events' idempotency keys): 48 bits of Unix milliseconds, then 80 bits
    from the OS CSPRNG, in 26 characters of Crockford's base32."""
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        last_ms, last_random = _last
        if now_ms > last_ms:
            random = _random_80()
        else:
            now_ms, random = last_ms, last_random + 1
            if random >> _RANDOM_BITS:
                now_ms, random = now_ms + 1, _random_80()
        _last[0], _last[1] = now_ms, random
    v, p = now_ms << _RANDOM_BITS | random, _PAIRS
    # 26 characters of 5 bits (the first holds the top 2 of 130), two at a time.
    return "".join(
        (
            p[v >> 120],
            p[v >> 110 & 1023],
            p[v >> 100 & 1023],
            p[v >> 90 & 1023],
            p[v >> 80 & 1023],
            p[v >> 70 & 1023],
            p[v >> 60 & 1023],
            p[v >> 50 & 1023],
            p[v >> 40 & 1023],
            p[v >> 30 & 1023],
            p[v >> 20 & 1023],
            p[v >> 10 & 1023],
            p[v & 1023],
        )
    )
