"""How a serving process is set up for the control plane's load."""

from __future__ import annotations

import gc


def test_a_served_process_keeps_its_loaded_code_out_of_the_collectors_walks() -> None:
    from gateway_project import asgi

    asgi.collector_tune()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == asgi.GC_GEN0_THRESHOLD
