"""groups reaches routing (live endpoint slugs) and keys (keys of deleted groups, renamed slugs)
only through groups/ports.py; the composition root wires them in every process loading the apps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway_project.env import BASE_DIR
from groups.ports import Ports, ports
from keys.services import group_keys_revoke, key_slugs_rename
from routing.selectors import endpoint_live_slugs

WIRED = " ".join(
    (
        "routing.selectors.endpoint_live_slugs",
        "keys.services.group_keys_revoke",
        "keys.services.key_slugs_rename",
    )
)
SHOW = (
    "from groups.ports import ports; p = ports(); "
    "print(*(f'{f.__module__}.{f.__name__}' for f in "
    "(p.live_endpoint_slugs, p.group_keys_revoke, p.key_slugs_rename)))"
)
ENTRY_POINTS = {
    "management command": ["manage.py", "shell", "--no-imports", "-c", SHOW],
    "web worker": ["-c", f"import gateway_project.asgi; {SHOW}"],
    "celery worker": [
        "-c",
        f"from gateway_project.celery import app; app.loader.init_worker(); {SHOW}",
    ],
}


def test_the_test_process_has_the_ports_wired() -> None:
    wired = ports()

    assert wired == Ports(
        live_endpoint_slugs=endpoint_live_slugs,
        group_keys_revoke=group_keys_revoke,
        key_slugs_rename=key_slugs_rename,
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_process_entry_point_wires_the_ports(entry: str) -> None:
    run = subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry]],
        cwd=BASE_DIR,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == WIRED
