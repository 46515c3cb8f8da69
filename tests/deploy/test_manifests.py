"""The Kustomize manifests: rendered offline, every command, variable and probe is a real one."""

from __future__ import annotations

import os
from typing import Any

import pytest

from gateway_project.cli import parser
from tests.deploy.manifests import (
    DEPLOY,
    kustomize,
    pod_spec,
    settings_env_names,
    workloads,
)

BASE = DEPLOY / "k8s" / "base"
PRODUCTION = DEPLOY / "k8s" / "overlays" / "production"
SERVICEMONITOR = DEPLOY / "k8s" / "components" / "servicemonitor"
PROCESSES = {
    "gateway": "serve",
    "gateway-worker": "worker",
    "gateway-beat": "beat",
    "gateway-migrate": "migrate",
}


@pytest.fixture(params=[BASE, PRODUCTION], ids=["base", "production"])
def rendered(request) -> list[dict[str, Any]]:
    return kustomize(request.param)


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return dict(config["data"])


def test_every_process_runs_a_real_gateway_subcommand(rendered):
    found = {}
    for name, doc in workloads(rendered).items():
        (container,) = pod_spec(doc)["containers"]

        args = parser().parse_args(container["args"])

        assert "command" not in container, "the image's entrypoint is `gateway`"
        found[name] = args.command
    assert found == PROCESSES


def test_every_variable_set_is_one_the_gateway_reads(rendered):
    read = settings_env_names()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GATEWAY_SHUTDOWN_TIMEOUT"} <= read

    set_names = set(_config(rendered))
    for doc in workloads(rendered).values():
        for container in pod_spec(doc)["containers"]:
            set_names.update(item["name"] for item in container.get("env", []))
            refs = [ref["configMapRef"]["name"] for ref in container.get("envFrom", [])]
            assert refs == ["gateway-config"]

    assert set_names - read == set()


def test_secrets_come_from_the_secret_and_nothing_secret_is_in_the_config(rendered):
    secret_names = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GATEWAY_METRICS_TOKEN"}

    assert not secret_names & set(_config(rendered))
    assert not [d for d in rendered if d["kind"] == "Secret"]
    for doc in workloads(rendered).values():
        (container,) = pod_spec(doc)["containers"]
        for item in container.get("env", []):
            assert item["valueFrom"]["secretKeyRef"]["name"] == "gateway-secrets"
            assert item["valueFrom"]["secretKeyRef"]["key"] == item["name"]


@pytest.mark.django_db
def test_probes_point_at_real_paths_with_an_allowed_host(rendered, client, settings):
    settings.ALLOWED_HOSTS = _config(rendered)["ALLOWED_HOSTS"].split(",")
    (container,) = pod_spec(workloads(rendered)["gateway"])["containers"]

    for probe, expected in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        host = {h["name"]: h["value"] for h in get["httpHeaders"]}["Host"]
        response = client.get(get["path"], HTTP_HOST=host)

        assert get["path"] == expected
        assert get["port"] == "http"
        assert response.status_code == 200, response.content


def test_gateway_nodes_drain_within_their_grace_period(rendered):
    spec = pod_spec(workloads(rendered)["gateway"])
    (container,) = spec["containers"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])

    drain = float(_config(rendered)["GATEWAY_SHUTDOWN_TIMEOUT"])

    assert pause + drain < spec["terminationGracePeriodSeconds"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]


def test_one_beat_is_replaced_never_doubled(rendered):
    beat = workloads(rendered)["gateway-beat"]

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_service_hpa_and_budget_select_the_gateway_pods(rendered):
    by_kind = {d["kind"]: d for d in rendered}
    labels = workloads(rendered)["gateway"]["spec"]["template"]["metadata"]["labels"]

    service = by_kind["Service"]["spec"]["selector"]
    budget = by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    target = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]

    assert service.items() <= labels.items()
    assert budget.items() <= labels.items()
    assert (target["kind"], target["name"]) == ("Deployment", "gateway")
    assert by_kind["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_production_pins_its_image_and_host_names():
    docs = kustomize(PRODUCTION)

    images = {
        container["image"]
        for doc in workloads(docs).values()
        for container in pod_spec(doc)["containers"]
    }

    assert images == {"registry.example.com/inference-gateway:0.1.0"}
    assert {d["metadata"].get("namespace") for d in docs} == {"gateway"}
    assert "*" not in _config(docs)["ALLOWED_HOSTS"]


def test_the_optional_servicemonitor_scrapes_metrics_with_the_token(tmp_path):
    overlay, component = (os.path.relpath(path, tmp_path) for path in (PRODUCTION, SERVICEMONITOR))
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{overlay}]\ncomponents: [{component}]\n"
    )
    docs = kustomize(tmp_path)

    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (endpoint,) = monitor["spec"]["endpoints"]

    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["key"] == "GATEWAY_METRICS_TOKEN"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_manifests_match_the_kubernetes_schemas(rendered):
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is missing: run `make venv`"
    )
    for doc in rendered:
        validate.validate(doc, "1.32", strict=True)
