"""bench-control's figures: per-operation summaries and the server's CPU time per request."""

from __future__ import annotations

import os
import time

import pytest
from django.db import connection

from bench.control import CpuMeter, Op, _cpu_since, database_settle


def _spin(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_the_meter_counts_the_node_process_tree_and_nothing_without_a_database() -> None:
    meter = CpuMeter(os.getpid(), None)
    before = meter.read()
    _spin(0.2)
    node, database = _cpu_since(meter, before)

    # The kernel counts process CPU in clock ticks (10 ms here): allow for one either side.
    assert node >= 0.17
    assert database == 0.0


def test_cpu_per_request_is_the_phase_cpu_over_its_requests() -> None:
    op = Op(latencies=[0.01, 0.02, 0.03, 0.04], wall=2.0, cpu=(0.2, 0.04))

    summary = op.summary()

    assert summary["server_cpu_ms"] == 50.0
    assert summary["db_cpu_ms"] == 10.0
    assert summary["per_s"] == 2.0
    assert "server_cpu_ms" not in Op(latencies=[0.01], wall=1.0).summary()


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statistics")
def test_the_database_is_settled_as_autovacuum_leaves_it_before_the_timed_reads() -> None:
    import psycopg

    # A scratch database: analysing the suite's own would change the plans later tests check.
    conf = connection.settings_dict
    server = f"postgresql://{conf['USER']}@{conf['HOST']}:{conf['PORT']}"
    scratch = f"{conf['NAME']}_settle_{os.getpid()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        with psycopg.connect(f"{server}/{scratch}", autocommit=True) as conn:
            conn.execute("CREATE TABLE limits (id int PRIMARY KEY)")

        database_settle(f"{server}/{scratch}")
        database_settle(None)  # SQLite: nothing to do

        with psycopg.connect(f"{server}/{scratch}") as conn:
            row = conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'limits'").fetchone()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
    # A table never vacuumed nor analyzed has -1: the planner then guesses its size and spread.
    assert row == (0,)
