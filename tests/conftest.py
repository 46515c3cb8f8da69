"""Fixtures shared by every suite: the embedded/real Redis, workspaces, keys; and the check that a
run leaves no process of its own behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings

from tests.leftovers import leftovers, leftovers_stop, run_mark

if TYPE_CHECKING:
    from groups.models import Workspace


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """Start the embedded redis-server when REDIS_URL is unset (the local default); the session's
    end stops it (see pytest_sessionfinish)."""
    if settings.REDIS_EMBEDDED:
        from gateway_project import embedded_redis

        embedded_redis.start()
    yield settings.REDIS_URL


_BEFORE = pytest.StashKey[tuple[bool, set[int]]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """What was running before the run (a server of `make run`, a run it is nested in) is not the
    run's to stop."""
    if hasattr(session.config, "workerinput"):
        return
    from gateway_project import embedded_redis

    run_mark()
    before = {proc.pid for proc in leftovers()}
    session.config.stash[_BEFORE] = (embedded_redis.is_running(), before)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Pass or fail, nothing the run started outlives it: the embedded redis-server is stopped, and
    any other process left behind is named, stopped, and fails the run."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controlling process checks once everything has ended
    from gateway_project import embedded_redis

    was_running, before = session.config.stash.get(_BEFORE, (True, set()))
    if settings.REDIS_EMBEDDED and not was_running:
        embedded_redis.stop()
    left = leftovers_stop(ignore=before)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in left:
        if reporter is not None:
            reporter.write_line(f"LEFT RUNNING (now stopped): {line}", red=True)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete() -> Iterator[None]:
    """A transactional test ends with every table emptied. On PostgreSQL Django empties them with
    one TRUNCATE, which gives each table new files synced at commit: about a second a test on a busy
    machine, for the few rows a test writes. DELETE empties them in milliseconds, as it does on
    SQLite; the tables end the same (neither resets sequences unless asked, and then Django's
    TRUNCATE stays)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(
        self: DatabaseOperations,
        style: Any,
        tables: list[str],
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> list[str]:
        if reset_sequences or allow_cascade:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        # Foreign keys are deferred until commit, so the order of the tables does not matter.
        return [f"DELETE FROM {self.quote_name(table)};" for table in tables]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", sql_flush)
        yield


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: str) -> Iterator[None]:
    """Every test starts with an empty Redis database (tests use their own db number in CI)."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield
    client.close()


@pytest.fixture
def workspace(db: None) -> Workspace:
    """An onboarded workspace owning the org prefix `acme`."""
    from groups.models import OrgPrefix, Workspace

    ws = Workspace.objects.create(name="Acme Labs", onboarded=True)
    OrgPrefix.objects.create(workspace=ws, prefix="acme")
    return ws


@pytest.fixture
def other_workspace(db: None) -> Workspace:
    """A second onboarded tenant owning the org prefix `globex`."""
    from groups.models import OrgPrefix, Workspace

    ws = Workspace.objects.create(name="Globex", onboarded=True)
    OrgPrefix.objects.create(workspace=ws, prefix="globex")
    return ws


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Admin logins in tests do not need a slow password hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
