"""The database pool lends a connection without a round trip, and never one the server ended."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.waiting import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's"),
]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _statements_sent(action, monkeypatch) -> int:
    """Statements the raw connection executed during `action` (checks included)."""
    sent: list[str] = []
    original = psycopg.Connection.execute

    def counting(self, query, *args, **kwargs):
        sent.append(query)
        return original(self, query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Connection, "execute", counting)
        action()
    return len(sent)


def test_an_idle_pooled_connection_is_lent_without_a_check_query(monkeypatch):
    _backend_pid()
    connection.close()  # back to the pool, as at the end of a request

    with CaptureQueriesContext(connection) as queries:
        checks = _statements_sent(connection.ensure_connection, monkeypatch)

    assert connection.connection is not None
    assert checks == 0
    assert len(queries) == 0


def test_pooled_connections_the_server_ended_are_replaced_not_lent():
    ended = _backend_pid()
    connection.close()
    params = connection.get_connection_params()
    params.pop("context", None)
    params.pop("cursor_factory", None)
    others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s"
    with psycopg.connect(**params, autocommit=True) as admin:
        mine = admin.info.backend_pid
        pooled = [pid for (pid,) in admin.execute(others, [mine]).fetchall()]
        for pid in pooled:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: not admin.execute(others, [mine]).fetchall(), what="the backends ended")

    lent = _backend_pid()

    assert ended in pooled
    assert lent not in pooled
