"""Tells every gateway process that a workspace's configuration changed (after commit).

Two independent signals, in this order:

1. INCR of the version key. Gateway processes check it at least once a second, so this alone
   makes a change (a revoked key) effective everywhere within about a second.
2. A PUBLISH of `<version>:<workspace id>` on the channel of this Redis database, so processes drop
   only that workspace's entries at once instead of everything at their next check.

A failed publish costs nothing but speed. A failed bump is owed: it is retried in the background and
by the next change until it lands (consumer: routing/authcache.py, routing/cache_listener.py).
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import transaction
from django_redis import get_redis_connection
from redis.connection import parse_url

VERSION_KEY = "gw:cfg:version"
# Pub/sub channels are shared by all databases of a Redis server: the db number keeps two
# deployments that share one server from evicting each other's caches.
CHANNEL_PREFIX = "gw:cfg:"
BUMP_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
logger = logging.getLogger(__name__)


def channel() -> str:
    """The invalidation channel of the configured Redis database."""
    options = parse_url(settings.REDIS_URL)  # type: ignore[no-untyped-call]  # unannotated
    return f"{CHANNEL_PREFIX}{options.get('db') or 0}"


def message_encode(*, version: int, workspace_id: str) -> str:
    """`<version>:<workspace id>`: the version lets a listener notice messages it missed."""
    return f"{version}:{workspace_id}"


def message_decode(data: bytes | str) -> tuple[int, str] | None:
    """(version, workspace id), or None for a payload this code did not write."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    version, sep, workspace_id = text.partition(":")
    if not sep or not version.isdigit() or not workspace_id:
        return None
    return int(version), workspace_id


def config_changed(*, workspace_id: str) -> None:
    """Schedule the invalidation for when the current transaction commits."""
    transaction.on_commit(lambda: publish(workspace_id=workspace_id))


def publish(*, workspace_id: str) -> None:
    """Bump the version, then broadcast the workspace id; neither failure raises."""
    version = _bump.run()
    if version is None:
        return  # Redis is unreachable; the retries of the owed bump will cover this change
    try:
        payload = message_encode(version=version, workspace_id=workspace_id)
        get_redis_connection("default").publish(channel(), payload)
    except Exception:  # noqa: BLE001 - the bump landed: workers see the change at their next check
        logger.warning(
            "config invalidation not broadcast; workers apply it at their next version check",
            extra={"workspace": workspace_id},
            exc_info=True,
        )


def bump_owed() -> bool:
    """Whether a committed change has not reached the version key yet."""
    return _bump.owed


class _Bump:
    """The version INCR, owed and retried on a background thread while Redis refuses it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owed = False
        self.retrying = False
        self.failures = 0  # a failure during a retry's INCR may postdate it: the retry goes on

    def run(self) -> int | None:
        """INCR now (the new version); on failure owe it, start the retries and return None."""
        with self.lock:
            # A change whose bump is still owed rides on this one: a step of 2 reads as a missed
            # message, so listeners drop every workspace, not just the one this message names.
            step = 2 if self.owed else 1
        try:
            version = int(get_redis_connection("default").incr(VERSION_KEY, step))
        except Exception:  # noqa: BLE001 - the write committed; the bump must not be lost
            logger.exception("config version bump failed; retrying until Redis accepts it")
            self._owe()
            return None
        with self.lock:
            self.owed = False
        return version

    def _owe(self) -> None:
        with self.lock:
            self.owed = True
            self.failures += 1
            if self.retrying:
                return
            self.retrying = True
        threading.Thread(target=self._retry, name="config-version-bump", daemon=True).start()

    def _retry(self) -> None:
        attempt, stop = 0, threading.Event()
        while True:
            stop.wait(BUMP_RETRY_SECONDS[min(attempt, len(BUMP_RETRY_SECONDS) - 1)])
            attempt += 1
            with self.lock:
                if not self.owed:
                    self.retrying = False
                    return
                failures = self.failures
            try:
                get_redis_connection("default").incr(VERSION_KEY)
            except Exception:  # noqa: BLE001 - still down: keep owing, back off
                continue
            with self.lock:
                if self.failures != failures:
                    continue
                self.owed, self.retrying = False, False
            logger.warning("owed config version bump landed after %d retries", attempt)
            return


_bump = _Bump()
