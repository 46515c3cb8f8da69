"""A cursor whose statements PostgreSQL parses and plans once per session, not at every execution.

Django binds parameters on the client, so each execution of even the same statement is parsed and
planned anew (planning a group read costs PostgreSQL three times what running it does). This
cursor binds them on the server and prepares each statement the first time the session runs it
(psycopg keeps the names of those it prepared per connection, 100 at most, and deallocates them
all after a rollback). A pooler that lends its server sessions per transaction (pgbouncer's
transaction mode before 1.21 or without `max_prepared_statements`) may run the next execution on
a session that does not hold the statement (26000), or prepare it on one where another client's
statement of the same name is (42P05): the connection then stops preparing for good, and the
statement is run again unprepared unless it failed inside a transaction (now aborted).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

# What a session that is not the one psycopg prepared on answers.
SESSION_SWAPPED = (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement)


class PreparingCursor(psycopg.Cursor[Any]):
    """A server-binding cursor preparing every statement it executes (once per session)."""

    def execute(self, query: Any, params: Any = None, **options: Any) -> PreparingCursor:
        """Run `query` prepared while its connection prepares; unprepared after a swap."""
        conn = self.connection
        if conn.prepare_threshold is None:
            return super().execute(query, params, **options)
        try:
            return super().execute(query, params, prepare=True, **options)
        except SESSION_SWAPPED:
            conn.prepare_threshold = None
            if conn.pgconn.transaction_status != TransactionStatus.IDLE:
                raise
        return super().execute(query, params, **options)
