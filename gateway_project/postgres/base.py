"""Django's PostgreSQL backend, its pool checking a connection before lending it without a round
trip when the connection is idle and the server has sent it nothing.

Django's CONN_HEALTH_CHECKS makes the pool send an empty query before every loan: one more round
trip a request. A server that ends a session (restart, `pg_terminate_backend`, idle timeout) writes
its reason to the socket and closes it, so an idle connection with nothing to read is alive as far
as a check could tell; anything else still gets the empty query, and one that fails it is replaced.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool


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


class DatabaseWrapper(base.DatabaseWrapper):
    """With a pool, a connection that fails `connection_fit` is closed and handed back (the pool
    replaces it) and another is taken, as psycopg_pool's own check would."""

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
