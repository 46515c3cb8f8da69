"""Usage events' idempotency keys (and every public id) are ULIDs: readable by any ULID library,
with the time they were drawn, strictly increasing within a process, and never repeated by a
forked worker."""

from __future__ import annotations

import os
import time

from ulid import ULID

from gateway_project.kernel import ids


def test_a_ulid_reads_back_as_the_same_ulid_with_the_time_it_was_drawn() -> None:
    before = time.time()

    drawn = [ids.new_ulid() for _ in range(2000)]

    after = time.time()
    for text in drawn:
        parsed = ULID.from_str(text)
        assert str(parsed) == text
        assert before - 0.001 <= parsed.timestamp <= after + 0.001


def test_ulids_of_one_process_strictly_increase_even_past_the_randomness_s_end() -> None:
    now_ms = time.time_ns() // 1_000_000 + 10_000  # a clock standing behind the last ULID
    ids._last[:] = [now_ms, 2**80 - 3]

    drawn = [ids.new_ulid() for _ in range(5000)]

    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)
    assert ULID.from_str(drawn[0]).milliseconds == now_ms
    assert ULID.from_str(drawn[3]).milliseconds == now_ms + 1


def test_a_forked_child_draws_other_ulids_than_its_parent() -> None:
    ids.new_ulid()
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child
        os.write(write_end, "".join(ids.new_ulid() for _ in range(20)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 20 * 26).decode()
    parent = "".join(ids.new_ulid() for _ in range(20))
    os.close(read_end)
    os.close(write_end)

    child_ids = {child[i : i + 26] for i in range(0, len(child), 26)}
    parent_ids = {parent[i : i + 26] for i in range(0, len(parent), 26)}
    assert len(child_ids) == 20
    assert not child_ids & parent_ids


def test_a_public_id_carries_its_kind_and_a_ulid() -> None:
    kind, _, text = ids.new_id("grp").partition("_")

    assert kind == "grp"
    assert str(ULID.from_str(text)) == text
