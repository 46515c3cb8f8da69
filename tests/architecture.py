"""The import rules import-linter cannot express, checked over the source tree.

- The composition root: the apps and the kernel take only `gateway_project.kernel.*` from
  gateway_project; the rest of it (settings, urls, asgi, the CLI...) wires the apps together.
- Public faces: across apps, a module imports only `<app>.models`, `<app>.selectors` and
  `<app>.services` (or a module of a `services` package).
- No `_private` name is imported from another module of the project.
- No function-local import of a project module inside the apps (they hid cycles); an app's
  `AppConfig.ready()` is the one place Django requires them.
- No plug-in by dotted path (`import_string`) and no reach through a relation to another app's
  manager (`_default_manager`) inside the apps: a dependency the rules forbid stays forbidden.

`python -m tests.architecture [ROOT]` prints each violation and exits 1 if there is one;
tests/test_architecture.py runs it (and proves that it bites), `make lint` too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APPS = ("groups", "keys", "routing", "billing")
PROJECT = (*APPS, "gateway_project")
FACES = ("models", "selectors", "services")
CHECKED = (*PROJECT, "bench")
KERNEL = "gateway_project.kernel"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Import:
    module: str
    names: tuple[str, ...]
    line: int
    local: bool


def module_name(root: Path, path: Path) -> str:
    """`groups/services/audit.py` -> `groups.services.audit`; `x/__init__.py` -> `x`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.Module, current: str, is_package: bool) -> Iterator[Import]:
    """Every import in `tree`, relative ones resolved, marked local when inside a function."""
    local_nodes = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        local = id(node) in local_nodes
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, (), node.lineno, local)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, current, is_package)
            names = tuple(alias.name for alias in node.names)
            yield Import(base, names, node.lineno, local)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = current.split(".")
    if not is_package:
        package.pop()
    for _ in range(node.level - 1):
        package.pop()
    return ".".join([*package, *([node.module] if node.module else [])])


def app_of(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in APPS else None


def is_face(module: str) -> bool:
    """`<app>.models`, `<app>.selectors`, `<app>.services[.*]`, or the app package itself."""
    parts = module.split(".")
    return len(parts) == 1 or parts[1] in FACES


def in_kernel(module: str) -> bool:
    return module == KERNEL or module.startswith(f"{KERNEL}.")


def is_composition(module: str) -> bool:
    """gateway_project or one of its modules outside the kernel."""
    return module.split(".")[0] == "gateway_project" and not in_kernel(module)


def is_ready_hook(path: Path) -> bool:
    return path.name == "apps.py"


def file_violations(root: Path, path: Path) -> Iterator[Violation]:
    """The violations of one source file."""
    current = module_name(root, path)
    own_app = app_of(current)
    tree = ast.parse(path.read_text(), filename=str(path))
    where = str(path.relative_to(root))
    for imp in imports_of(tree, current, path.name == "__init__.py"):
        target_app = app_of(imp.module)
        if imp.module.split(".")[0] not in PROJECT:
            continue
        if (own_app or in_kernel(current)) and is_composition(imp.module):
            yield Violation(where, imp.line, f"`{imp.module}` is the composition root")
        if target_app and own_app and target_app != own_app and not is_face(imp.module):
            yield Violation(where, imp.line, f"`{imp.module}` is not a public face of {target_app}")
        for name in imp.names:
            if name.startswith("_") and imp.module != current:
                yield Violation(where, imp.line, f"`{name}` is private to `{imp.module}`")
        if imp.local and own_app and not is_ready_hook(path) and "migrations" not in path.parts:
            yield Violation(
                where, imp.line, f"function-local import of `{imp.module}` (import at the top)"
            )
    if own_app and "migrations" not in path.parts:
        yield from hidden_couplings(tree, where)


HIDDEN = {"import_string": "a plug-in by dotted path", "_default_manager": "a reach-through"}


def hidden_couplings(tree: ast.Module, where: str) -> Iterator[Violation]:
    """Names that hide an import the rules would forbid."""
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if isinstance(node, ast.Name | ast.Attribute) and name in HIDDEN:
            yield Violation(where, node.lineno, f"`{name}` is {HIDDEN[name]}; import a face")


def violations(root: Path) -> list[Violation]:
    """Every violation under `root` (a checkout)."""
    found: list[Violation] = []
    for package in CHECKED:
        for path in sorted((root / package).rglob("*.py")):
            # Hidden folders hold installed third-party code (bench/.peers), not the project's.
            if not any(part.startswith(".") for part in path.relative_to(root).parts):
                found.extend(file_violations(root, path))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    found = violations(root)
    for violation in found:
        print(violation)
    if found:
        print(f"{len(found)} import rule violation(s); see tests/architecture.py for the rules.")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
