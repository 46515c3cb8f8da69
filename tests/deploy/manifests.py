"""Reading the deployment files the way their tools do: rendered Kustomize, Compose with anchors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# What the settings and the `gateway` command read: env_*("NAME", ...) and os.environ.get("NAME").
_READ = re.compile(r"(?:env_[a-z]+|environ\.get|getenv)\(\s*\"([A-Z][A-Z0-9_]*)\"")


def settings_env_names() -> set[str]:
    """Every environment variable the product reads (gateway_project is the only place)."""
    names: set[str] = set()
    for path in (ROOT / "gateway_project").glob("*.py"):
        names.update(_READ.findall(path.read_text()))
    return names


def kustomize(path: Path) -> list[dict[str, Any]]:
    """The rendered documents of a Kustomize directory (`kubectl kustomize`, offline)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: it renders the Kustomize manifests")
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def compose() -> dict[str, Any]:
    """deploy/compose.yaml with its anchors and merge keys resolved."""
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} against `env`."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose requires {name}: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(:-|:\?)?([^}]*)\}", one, value)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a Deployment or Job."""
    return dict(doc["spec"]["template"]["spec"])


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in {"Deployment", "Job"}}


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (PATH aside): what every container starts with."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.partition("=")[::2] for pair in line.split()[1:])
    env.pop("PATH", None)
    return env
