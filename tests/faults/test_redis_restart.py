"""SIGKILL Redis under steady streaming load, keep it down, restart it on its append-only file."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import redis

from routing.limit_counters import SCRIPT_SHA
from tests.faults.ledger import accounting_check
from tests.faults.traffic import Load, Outcome, chat_body, summary
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
CONCURRENCY = 20
OUTAGE_SECONDS = 3.0  # Redis stays down at least this long and until requests were turned away


@dataclass
class Restart:
    """What the clients saw around one Redis restart."""

    outcomes: list[Outcome]
    killed_at: float
    restarted_at: float
    script_loaded: bool
    pids: tuple[dict[str, list[int]], dict[str, list[int]]]  # before, after

    def during(self) -> list[Outcome]:
        return [o for o in self.outcomes if self.killed_at <= o.started < self.restarted_at]

    def after(self) -> list[Outcome]:
        """Requests started from one second after the restart."""
        return [o for o in self.outcomes if o.started >= self.restarted_at + 1]

    def line(self) -> str:
        first_ok = min(
            (o.ended for o in self.outcomes if o.complete and o.started >= self.restarted_at),
            default=self.restarted_at,
        )
        return (
            f"injected: SIGKILL redis-server under {CONCURRENCY} concurrent streams, down"
            f" {self.restarted_at - self.killed_at:.1f}s, restarted on its AOF; counted: while down"
            f" {summary(self.during())}, from 1 s after the restart {summary(self.after())}, all"
            f" {summary(self.outcomes)}; first success {first_ok - self.restarted_at:.2f}s after"
            f" the restart; limits script loaded again after NOSCRIPT: {self.script_loaded};"
            f" processes before/after {self.pids[0]} / {self.pids[1]}"
        )


def _rejected(outcome: Outcome) -> bool:
    return outcome.status == 503


def _restart_under_load(stack) -> Restart:
    body = chat_body(slug=stack.tenant["slug"], tokens=5, delay_ms=20)
    load = Load(base=stack.gateway.url, key=stack.tenant["key"], body=body, concurrency=CONCURRENCY)
    load.start()
    wait_until(lambda: load.count(lambda o: o.complete) >= 100, timeout=30, what="warm load")
    before = stack.pids()

    killed_at = time.monotonic()
    stack.redis.kill()
    wait_until(
        lambda: (
            time.monotonic() - killed_at >= OUTAGE_SECONDS
            and load.count(_rejected, since=killed_at) >= 50
        ),
        timeout=30,
        what="50 requests answered while Redis is down",
    )
    stack.redis.start()
    restarted_at = time.monotonic()
    wait_until(
        lambda: load.count(lambda o: o.complete, since=restarted_at + 1) >= 100,
        timeout=30,
        what="requests complete again after the restart",
    )
    outcomes = load.stop()
    loaded = bool(redis.Redis.from_url(stack.redis.url).script_exists(SCRIPT_SHA)[0])
    return Restart(outcomes, killed_at, restarted_at, loaded, (before, stack.pids()))


def test_a_redis_restart_gives_503_limits_unavailable_then_recovers(stack):
    restart = _restart_under_load(stack)

    print(f"\n[redis restart] {restart.line()}")
    outcomes = restart.outcomes
    unexpected = [o for o in outcomes if not o.complete and not _rejected(o)]
    assert not unexpected, (
        f"neither complete nor 503 (a 500, a broken stream or a hang): {summary(unexpected)}"
    )
    assert {o.code for o in outcomes if _rejected(o)} == {"limits_unavailable"}, summary(outcomes)
    assert any(_rejected(o) for o in restart.during()), summary(restart.during())
    assert restart.after() and all(o.complete for o in restart.after()), summary(restart.after())
    assert restart.script_loaded
    assert restart.pids[0] == restart.pids[1], f"a process died: {restart.pids}"
    accounting = accounting_check(stack=stack, outcomes=outcomes, check_tokens=False)
    print(f"[redis restart] counted: {accounting.line()}")


def test_token_usage_of_streams_in_flight_across_a_redis_restart_is_settled(stack):
    restart = _restart_under_load(stack)

    # A settle Redis could not take is retried in the background, backing off up to 15 s between
    # tries: the TOKEN/DAY counter comes down to the events' tokens within the settle timeout
    # (20 s), or a settle was dropped.
    try:
        accounting = accounting_check(stack=stack, outcomes=restart.outcomes)
    except AssertionError as exc:
        if not str(exc).startswith("counters "):
            raise
        raise AssertionError(
            f"{exc}: the settle of streams in flight while Redis was down was dropped, so their"
            " reservation stays charged all day"
        ) from None

    print(f"\n[redis restart, tokens] {restart.line()}; counted: {accounting.line()}")
    assert accounting.token_counter == accounting.token_events
