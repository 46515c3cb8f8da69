"""The house rules (import contracts in pyproject.toml, tests/architecture.py) hold and bite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import architecture

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway_project", "groups", "keys", "routing", "billing", "bench")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the checkout at `root`, its contracts from root/pyproject.toml."""
    code = "import sys; from importlinter.cli import lint_imports as l; sys.exit(l(no_cache=True))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the sources and the contracts, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", ".peers"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_house_rules_hold() -> None:
    found = architecture.violations(ROOT)

    assert found == [], "\n".join(map(str, found))


@pytest.mark.parametrize(
    ("files", "contract"),
    [
        ({"groups/probe.py": "import routing.proxy\n"}, "groups is not allowed to import routing"),
        (
            {"billing/probe.py": "import routing.limiter\n"},
            "billing is not allowed to import routing",
        ),
        (
            {"gateway_project/kernel/probe.py": "import groups.models\n"},
            "The kernel imports no app",
        ),
        (
            {"groups/probe.py": "import groups.twin\n", "groups/twin.py": "import groups.probe\n"},
            "No import cycle",
        ),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    checkout: Path, files: dict[str, str], contract: str
) -> None:
    for path, source in files.items():
        (checkout / path).write_text(source)

    result = lint_imports(checkout)

    assert result.returncode == 1
    assert contract in result.stdout
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize(
    ("path", "source", "message"),
    [
        ("keys/probe.py", "from groups.limits import effective\n", "not a public face of groups"),
        ("keys/probe.py", "import gateway_project.urls\n", "composition root"),
        (
            "gateway_project/kernel/probe.py",
            "from gateway_project import cli\n",
            "composition root",
        ),
        ("bench/probe.py", "from billing.services import _hidden\n", "private to"),
        (
            "billing/probe.py",
            "def f():\n    from billing.models import UsageEvent\n",
            "function-local import",
        ),
        (
            "groups/probe.py",
            "from django.utils.module_loading import import_string\nf = import_string('x.y')\n",
            "plug-in by dotted path",
        ),
        ("groups/probe.py", "def f(g):\n    return g.keys.field.model._default_manager\n", "reach"),
    ],
)
def test_a_broken_house_rule_is_reported(
    checkout: Path, path: str, source: str, message: str
) -> None:
    (checkout / path).write_text(source)

    found = architecture.violations(checkout)

    assert [v for v in found if v.path == path and message in v.message]


def test_installed_packages_in_a_hidden_folder_are_not_checked(checkout: Path) -> None:
    peers = checkout / "bench" / ".peers" / "venv"
    peers.mkdir(parents=True)
    (peers / "vendored.py").write_text("\ufeff# a byte-order mark: not parseable by ast\n")
    (checkout / "bench" / "probe.py").write_text("from routing.proxy import _private\n")

    found = architecture.violations(checkout)

    assert [v.path for v in found] == ["bench/probe.py"]
