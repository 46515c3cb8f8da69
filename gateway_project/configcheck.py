"""`gateway check`: what is wrong with this node's configuration and connections, in plain words."""

from __future__ import annotations

from collections.abc import Callable

import redis

Probe = Callable[[], str | None]


def _settings_problem() -> str | None:
    # Settings refuse unsafe production values (and malformed numbers) at import: report them.
    try:
        import django

        django.setup()
    except Exception as exc:  # noqa: BLE001 - every startup error is reported, not raised
        return f"settings: {exc}"
    return None


def _database() -> str | None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # noqa: BLE001
        return f"cannot reach the database ({type(exc).__name__}: {exc}); check DATABASE_URL"
    finally:
        connection.close()
    if pending:
        return f"{len(pending)} migration(s) not applied; run `gateway migrate`"
    return None


def _redis_probe(name: str, url: str) -> str | None:
    if url.startswith("redis+cluster://"):
        return None  # a cluster URL is checked by the limiter itself on first use
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return f"cannot reach Redis at {name} ({type(exc).__name__}: {exc})"
    return None


def _redis() -> str | None:
    from django.conf import settings

    if settings.REDIS_EMBEDDED:
        return (
            "REDIS_URL is unset: only a local run starts the embedded Redis; "
            "set REDIS_URL for any shared deployment"
        )
    return _redis_probe("REDIS_URL", settings.REDIS_URL) or _redis_probe(
        "GATEWAY_LIMITS_REDIS_URL", settings.GATEWAY_LIMITS_REDIS_URL
    )


CHECKS: tuple[tuple[str, Probe], ...] = (
    ("database", _database),
    ("redis", _redis),
)


def config_report() -> tuple[list[str], bool]:
    """One line per check, `ok` or what to fix, and whether all passed."""
    problem = _settings_problem()
    if problem:
        return [f"FAIL {problem}"], False
    lines, ok = [], True
    for name, probe in CHECKS:
        problem = probe()
        lines.append(f"FAIL {name}: {problem}" if problem else f"ok   {name}")
        ok = ok and not problem
    return lines, ok
