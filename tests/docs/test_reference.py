"""docs/ checked against the code: docs/configuration.md has one row for every environment variable
the product reads and none for a variable nothing reads; every error code the product raises is
named in docs/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway_project.env import BASE_DIR

PRODUCT = ("gateway_project", "groups", "keys", "routing", "billing", "manage.py")
READERS = frozenset({"env_str", "env_int", "env_float", "env_bool", "env_list", "env_header"})
ENVIRON_METHODS = frozenset({"get", "setdefault", "pop"})
PAGE = BASE_DIR / "docs" / "configuration.md"
_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", re.MULTILINE)


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def env_reads(source: str) -> set[str]:
    """Names of the environment variables a module reads: the typed readers of
    gateway_project.env, os.environ[...], os.environ.get/setdefault/pop and os.getenv."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            via_environ = isinstance(func, ast.Attribute) and _is_environ(func.value)
            if (
                called in READERS
                or called == "getenv"
                or (via_environ and called in ENVIRON_METHODS)
            ):
                name = _literal(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _literal(node.slice)
        if name:
            names.add(name)
    return names


def _product_files() -> list[Path]:
    files: list[Path] = []
    for entry in PRODUCT:
        path = BASE_DIR / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _documented() -> set[str]:
    return set(_ROW.findall(PAGE.read_text()))


def test_the_scanner_finds_every_way_of_reading_a_variable() -> None:
    source = (
        "import os\nfrom gateway_project.env import env_int\n"
        "A = env_int('GATEWAY_A', 1)\nB = os.environ.get('GATEWAY_B')\n"
        "C = os.environ['GATEWAY_C']\nD = os.getenv('GATEWAY_D', '')\n"
        "os.environ.setdefault('GATEWAY_E', 'x')\nF = settings.GATEWAY_F\n"
    )

    found = env_reads(source)

    assert found == {"GATEWAY_A", "GATEWAY_B", "GATEWAY_C", "GATEWAY_D", "GATEWAY_E"}


def test_every_variable_the_code_reads_has_a_row() -> None:
    read = {name for path in _product_files() for name in env_reads(path.read_text())}

    missing = sorted(read - _documented())

    assert len(read) > 40
    assert not missing, f"add rows to docs/configuration.md for {missing}"


def test_every_row_names_a_variable_the_code_reads() -> None:
    read = {name for path in _product_files() for name in env_reads(path.read_text())}

    stale = sorted(_documented() - read)

    assert not stale, f"docs/configuration.md describes variables nothing reads: {stale}"


def _raised_codes(source: str) -> set[str]:
    """Error codes a module raises: every `code="..."` keyword given a string literal."""
    return {
        code
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.keyword) and node.arg == "code"
        if (code := _literal(node.value))
    }


def test_every_error_code_the_product_raises_is_documented() -> None:
    documented = "\n".join(page.read_text() for page in (BASE_DIR / "docs").glob("*.md"))
    raised = {code for path in _product_files() for code in _raised_codes(path.read_text())}

    missing = sorted(code for code in raised if f"`{code}`" not in documented)

    assert len(raised) > 50
    assert not missing, f"document these error codes in docs/: {missing}"
