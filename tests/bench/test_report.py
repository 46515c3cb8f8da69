"""The `make bench` report: latest.json's shape with the floor systems, ours against the floor and
the added latency at concurrency 1."""

from __future__ import annotations

import pytest

from bench.load import LoadResult
from bench.report import (
    SYSTEMS,
    RunRecord,
    added_p50_ms,
    floor_ratio,
    markdown,
    readme_update,
    results_json,
    summary,
)
from bench.run import SCENARIOS

# c1_json p50 ms and c32_json req/s per system, as one run could measure them.
P50 = {"direct": 0.2, "floor": 0.8, "floor_redis": 1.5, "gateway": 2.6, "portkey": 2.4}
RPS = {"direct": 5000.0, "floor": 3206.0, "floor_redis": 1482.0, "gateway": 636.0, "portkey": 393.0}


def _result(system: str) -> LoadResult:
    return LoadResult(
        requests=1000, rps=RPS[system], p50_ms=P50[system], p99_ms=P50[system] * 4, errors=0
    )


@pytest.fixture
def record() -> RunRecord:
    """Every system measured in c1_json and c32_json except LiteLLM, which did not start."""
    run = RunRecord(
        machine="test box",
        when="2026-12-03T13:00:00+00:00",
        load="wrk",
        duration_s=6,
        scenarios=SCENARIOS,
    )
    for scenario in ("c1_json", "c32_json"):
        run.results[scenario] = {system: _result(system) for system in P50}
    run.missing["litellm"] = "not selected (--systems)"
    return run


def test_latest_json_keeps_its_shape_with_the_floor_systems_as_more_keys(record):
    document = results_json(record)

    assert set(document) == {"machine", "when", "scenarios"}
    assert set(document["scenarios"]["c32_json"]) == set(P50)
    assert document["scenarios"]["c32_json"]["floor_redis"] == {
        "rps": 1482.0,
        "p50_ms": 1.5,
        "p99_ms": 6.0,
        "errors": 0,
    }


def test_ours_over_floor_redis_is_computed_per_scenario(record):
    ratio = floor_ratio(record, "c32_json")

    assert ratio == pytest.approx(636 / 1482)
    assert floor_ratio(record, "c128_stream") is None  # not measured


def test_added_p50_is_measured_against_direct(record):
    assert added_p50_ms(record, "gateway") == pytest.approx(2.4)
    assert added_p50_ms(record, "portkey") == pytest.approx(2.2)
    assert added_p50_ms(record, "litellm") is None


def test_the_report_shows_ours_over_floor_redis_and_added_p50_against_portkey(record):
    report = markdown(record)

    assert "| c32_json | 3,206 | 1,482 | 636 | 0.43× |" in report
    assert "| c128_stream | — | — | — | — |" in report
    assert "ours minus Portkey's added p50: +0.20 ms" in report
    assert "Added p50 at concurrency 1 over direct: ours 2.40 ms" in report
    row = next(line for line in report.splitlines() if line.startswith("| c32_json req/s"))
    assert row.split(" | ")[len(SYSTEMS) + 1] == "0.43×"  # the first ratio column: floor_redis
    assert "- litellm: not available (not selected (--systems))" in report


def test_the_readme_summary_has_the_floor_ratio_and_the_added_latency(record):
    text = summary(record)

    assert "| c32_json | 636 | 1,482 | 393 | — | 0.43× | 1.62× | — | 10.4 |" in text
    assert "ours 2.40 ms" in text and "Portkey 2.20 ms" in text


def test_readme_update_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- a -->\nold\n<!-- /a -->\noutro\n")

    readme_update("new\n", readme=readme, markers=("<!-- a -->", "<!-- /a -->"))

    assert readme.read_text() == "intro\n<!-- a -->\nnew\n<!-- /a -->\noutro\n"
