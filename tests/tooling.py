"""Suites that need a program from outside the Python environment (Chromium, Node.js).

When the program is absent, the suite's tests are replaced at collection time by one test that
fails with one line saying what to install: no skip, and no traceback per test. `make test`
installs the programs first when the machine allows it (tests/provision.sh).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class ToolMissing(Exception):
    """What to install, in one line."""


class MissingToolItem(pytest.Item):
    """Stands for a whole suite whose program is missing; fails with `message` only."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def runtest(self) -> None:
        raise ToolMissing(self.message)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        return self.message

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def _under(item: pytest.Item, where: Path) -> bool:
    return item.path == where or where in item.path.parents


def suite_requires(
    items: list[pytest.Item], *, where: Path, name: str, missing: str | None
) -> None:
    """Replace the items under `where` (a folder or a file) by one failing item when `missing`
    (the one line saying what to install) is set."""
    if missing is None:
        return
    suite = [item for item in items if _under(item, where)]
    if not suite:
        return
    chain = [node for node in suite[0].listchain() if isinstance(node, pytest.Collector)]
    parent = next((node for node in chain if node.path == where), chain[-1])
    stand_in = MissingToolItem.from_parent(parent, name=name, message=missing)
    items[items.index(suite[0])] = stand_in
    for item in suite[1:]:
        items.remove(item)
