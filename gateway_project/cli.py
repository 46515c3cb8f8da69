"""The `gateway` command: one entry point for every process of a deployment.

    gateway serve [--workers N] [--bind HOST:PORT]   the HTTP node (gunicorn + uvicorn workers)
    gateway worker [--concurrency N]                 a Celery worker (webhooks, usage ingest)
    gateway beat                                     the Celery scheduler (run exactly one)
    gateway migrate                                  apply database migrations
    gateway create-workspace ...                     same options as `manage.py create_workspace`
    gateway check                                    configuration and connectivity, in plain words
    gateway probe [PATH]                             GET /healthz (or PATH) here: exit 0 on 200
    gateway manage ...                               any other Django management command
    gateway local                                    everything on one machine (`make run`)

serve, worker and beat replace this process with theirs, so a container's SIGTERM reaches them.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from gateway_project.env import env_int, env_list, shutdown_timeout, var_dir

SETTINGS_MODULE = "gateway_project.settings"
# Seconds gunicorn gives a worker to finish its requests after SIGTERM, beyond the drain bound.
SHUTDOWN_MARGIN_SECONDS = 5.0
# Subcommands whose arguments belong to a Django management command.
PASSTHROUGH = frozenset({"create-workspace", "manage"})


def serve_argv(*, workers: int, bind: str) -> list[str]:
    """The gunicorn command line of one gateway node."""
    graceful = shutdown_timeout() + SHUTDOWN_MARGIN_SECONDS
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "gateway_project.asgi:application",
        "-k",
        "gateway_project.worker.GatewayWorker",
        "--config",
        "python:gateway_project.gunicorn_conf",
        "--workers",
        str(workers),
        "--bind",
        bind,
        "--graceful-timeout",
        f"{graceful:g}",
    ]


def worker_argv(*, concurrency: int, name: str) -> list[str]:
    """The Celery worker command line."""
    return [*_celery("worker"), "--concurrency", str(concurrency), "-n", name]


def beat_argv(*, schedule: str) -> list[str]:
    """The Celery beat command line."""
    return [*_celery("beat"), "-s", schedule]


def _celery(role: str) -> list[str]:
    # --quiet: no startup banner, so stdout holds the JSON log lines only.
    return [sys.executable, "-m", "celery", "-A", "gateway_project", "--quiet", role, "-l", "info"]


def _exec(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 1  # not reached: execv replaces the process


def _django(*argv: str) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["gateway", *argv])
    return 0


def _check() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    from gateway_project.configcheck import config_report

    lines, ok = config_report()
    for line in lines:
        print(line)
    return 0 if ok else 1


def _probe(path: str) -> int:
    # Django answers only the host names it serves: ask with the first one, as a balancer would.
    hosts = [host for host in env_list("ALLOWED_HOSTS", []) if "*" not in host]
    port = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000").rpartition(":")[2]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Host", hosts[0].lstrip(".") if hosts else "localhost")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1


def _local() -> int:
    from gateway_project.localrun import main as localrun_main

    return localrun_main()


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests to prove a manifest's command is real)."""
    root = argparse.ArgumentParser(prog="gateway", description="Run the inference gateway.")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="the HTTP node: gunicorn with uvicorn workers")
    serve.add_argument("--workers", type=int, default=env_int("WEB_CONCURRENCY", 2))
    serve.add_argument("--bind", default=os.environ.get("GATEWAY_BIND", "127.0.0.1:8000"))
    worker = sub.add_parser("worker", help="a Celery worker")
    worker.add_argument("--concurrency", type=int, default=env_int("CELERY_CONCURRENCY", 2))
    worker.add_argument("--name", default="gateway@%h", help="Celery node name")
    beat = sub.add_parser("beat", help="the Celery scheduler; run exactly one")
    beat.add_argument("--schedule", default=None, help="beat state file (default: var dir)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("create-workspace", help="create a workspace (see --help)", add_help=False)
    sub.add_parser("check", help="check configuration, database, Redis; exit 1 on a problem")
    probe = sub.add_parser("probe", help="GET a path of the node on this machine; exit 0 on 200")
    probe.add_argument("path", nargs="?", default="/healthz")
    sub.add_parser("manage", help="any Django management command", add_help=False)
    sub.add_parser("local", help="the whole stack on this machine with embedded defaults")
    return root


def run(args: argparse.Namespace, rest: list[str]) -> int:
    """Dispatch one parsed command line; `rest` goes to the Django commands as it is."""
    match args.command:
        case "serve":
            return _exec(serve_argv(workers=args.workers, bind=args.bind))
        case "worker":
            return _exec(worker_argv(concurrency=args.concurrency, name=args.name))
        case "beat":
            schedule = args.schedule or str(var_dir() / "celerybeat-schedule")
            return _exec(beat_argv(schedule=schedule))
        case "migrate":
            return _django("migrate", "--no-input")
        case "create-workspace":
            return _django("create_workspace", *rest)
        case "check":
            return _check()
        case "probe":
            return _probe(args.path)
        case "manage":
            return _django(*rest)
        case _:
            return _local()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    root = parser()
    args, rest = root.parse_known_args(argv)
    if rest and args.command not in PASSTHROUGH:
        root.error(f"unrecognized arguments: {' '.join(rest)}")
    return run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
