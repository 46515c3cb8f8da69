"""Django's PostgreSQL backend, its pool checking a connection before lending it without a round
trip when the connection is idle and the server has sent it nothing.

Django's CONN_HEALTH_CHECKS makes the pool send an empty query before every loan: one more round
trip a request. A server that ends a session (restart, `pg_terminate_backend`, idle timeout) writes
its reason to the socket and closes it, so an idle connection with nothing to read is alive as far
as a check could tell; anything else still gets the empty query, and one that fails it is replaced.

`prepared_cursor()` gives a cursor whose statements are prepared on the session (`prepared.py`).
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base, operations
from django.db.backends.postgresql.psycopg_any import register_tzloader  # type: ignore[import-untyped]
from django.db.backends.utils import CursorWrapper
from psycopg.pq import Format, TransactionStatus
from psycopg_pool import ConnectionPool

from gateway_project.postgres.prepared import PreparingCursor

_TIMESTAMPTZ = psycopg.adapters.types["timestamptz"].oid


def connection_fit(conn: Any) -> bool:
    """Whether a pooled connection may be lent (a round trip only when it has something to read
    or is not idle)."""
    if not conn.closed and conn.pgconn.transaction_status == TransactionStatus.IDLE:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return True
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


class DatabaseOperations(operations.DatabaseOperations):
    """Queries of `prepared_cursor()` logged as Django logs its own (values inlined)."""

    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        if not isinstance(cursor, PreparingCursor):
            return super().last_executed_query(cursor, sql, params)
        try:
            return self.compose_sql(sql, params)  # type: ignore[no-any-return]
        except psycopg.DataError:
            return sql


class DatabaseWrapper(base.DatabaseWrapper):
    """With a pool, a connection that fails `connection_fit` is closed and handed back (the pool
    replaces it) and another is taken, as psycopg_pool's own check would."""

    ops_class = DatabaseOperations

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        pool = self.pool  # type: ignore[attr-defined]  # django-stubs lack the pool
        if pool is None:
            return connection
        for _attempt in range(pool.max_size):
            if connection_fit(connection):
                break
            connection.close()
            pool.putconn(connection)
            connection = super().get_new_connection(conn_params)
        return connection

    def prepared_cursor(self) -> CursorWrapper:
        """A cursor as `cursor()` gives (execute wrappers, captured queries), its statements
        prepared on the session; `cursor()` itself on a connection that does not prepare."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        connection = self.connection
        if connection.prepare_threshold is None:
            return self.cursor()
        with self.wrap_database_errors:
            cursor = PreparingCursor(connection)
            # As Django's own cursors: the session's time zone, if the connection's differs.
            tzloader = connection.adapters.get_loader(_TIMESTAMPTZ, Format.TEXT)
            if self.timezone != tzloader.timezone:
                register_tzloader(self.timezone, cursor)
            return self._prepare_cursor(cursor)  # type: ignore[attr-defined,no-any-return]
