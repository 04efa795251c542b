"""deploy/: the images and KubeRay manifests agree with the package they ship.

No docker, no cluster, no network: the files are read and checked against the installed
package (Ray version, CLI, settings, the app's health route).
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from functools import cache
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PACKAGE_VERSION = version("auditor")
RAY_IMAGE = re.compile(r"^FROM\s+rayproject/ray:(\S+)", re.MULTILINE)
OUR_IMAGE = re.compile(r"^(?P<repo>[^:@\s]+):(?P<version>[^-\s]+)-(?P<flavour>cpu|cuda)$")
HEALTH_PATH = "/api/v1/health"


@cache
def manifests() -> list[tuple[str, dict]]:
    """Every object of every YAML file under deploy/k8s, as (file name, object)."""
    found = []
    for path in sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


def of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc.get("kind") == kind]


def raycluster() -> dict:
    (cluster,) = of_kind("RayCluster")
    return cluster


def workloads() -> list[dict]:
    """Deployments and Jobs: the objects outside the Ray cluster that run the image."""
    return of_kind("Deployment") + of_kind("Job")


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def workload_containers() -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], c) for doc in workloads() for c in containers(doc["spec"]["template"])]


def ray_groups() -> list[tuple[str, dict]]:
    spec = raycluster()["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def requests_gpu(group: dict) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(group["template"]))


def dockerfiles() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(DEPLOY.glob("Dockerfile*")) if p.suffix != ".dockerignore"}


def ci_torch_pin() -> str:
    pins = set(re.findall(r"torch==([\w.+]+)", (ROOT / ".ci" / "run").read_text()))
    assert len(pins) == 1, f".ci/run should pin torch exactly once, found {pins}"
    return pins.pop()


def test_every_manifest_parses_and_names_its_object():
    found = manifests()
    kinds = {doc["kind"] for _, doc in found}
    assert {"RayCluster", "Deployment", "Service", "Job", "ConfigMap", "Secret", "PersistentVolumeClaim"} <= kinds
    for name, doc in found:
        assert isinstance(doc, dict), name
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), name
    assert len(of_kind("RayCluster")) == 1


def test_raycluster_runs_the_installed_ray_with_autoscaling():
    cluster = raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == ray.__version__
    assert cluster["spec"]["enableInTreeAutoscaling"] is True


def test_dockerfiles_start_from_the_ray_image_of_the_installed_version():
    files = dockerfiles()
    assert set(files) == {"Dockerfile", "Dockerfile.cuda"}
    for name, text in files.items():
        tags = RAY_IMAGE.findall(text)
        assert tags, f"{name} is not based on rayproject/ray"
        for tag in tags:
            assert tag.startswith(f"{ray.__version__}-py311-"), f"{name}: rayproject/ray:{tag}"
        assert f'"ray[default]=={ray.__version__}"' in text, f"{name} should keep the base image's Ray"
    assert all(t.endswith("-cpu") for t in RAY_IMAGE.findall(files["Dockerfile"]))
    assert all(re.search(r"-cu\d+$", t) for t in RAY_IMAGE.findall(files["Dockerfile.cuda"]))


def test_dockerfiles_pin_torch_as_ci_does():
    pin = ci_torch_pin()
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    for name, text in dockerfiles().items():
        assert set(re.findall(r"torch==([\w.+]+)", text)) == {pin}, name
    assert cpu_index in dockerfiles()["Dockerfile"]
    assert "download.pytorch.org/whl/cpu" not in dockerfiles()["Dockerfile.cuda"]


def test_dockerfiles_install_every_package_with_the_server_extra_and_run_unprivileged():
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    assert packages == {"auditor", "api", "store", "workers", "migrations"}
    for name, text in dockerfiles().items():
        copied = {word.rstrip("/") for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE)
                  for word in line.split() if not word.startswith("--")}
        missing = (packages | {"pyproject.toml", "README.md", "alembic.ini"}) - copied
        assert not missing, f"{name} does not copy {sorted(missing)}"
        assert re.search(r'^RUN pip install --no-cache-dir "\.\[server\]" ', text, re.MULTILINE), name
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users and users[-1] not in {"root", "0"}, name
        assert re.search(r"^EXPOSE\s+8000\b", text, re.MULTILINE), name


def test_images_carry_the_package_version_and_the_right_flavour():
    images = [(f"ray group {group}", c["image"], requests_gpu(spec))
              for group, spec in ray_groups() for c in containers(spec["template"])]
    images += [(workload, c["image"], False) for workload, c in workload_containers()]
    assert images
    repos = set()
    for where, image, gpu in images:
        match = OUR_IMAGE.match(image)
        assert match, f"{where}: {image} is not <repo>:<version>-cpu|cuda"
        assert match["version"] == PACKAGE_VERSION, f"{where}: {image}"
        assert match["flavour"] == ("cuda" if gpu else "cpu"), f"{where}: {image}"
        repos.add(match["repo"])
    assert len(repos) == 1, f"one image repository for every component, found {repos}"


def test_gpu_workers_scale_from_zero_with_one_gpu_each():
    gpu_groups = [(name, g) for name, g in ray_groups() if requests_gpu(g)]
    assert len(gpu_groups) == 1
    name, group = gpu_groups[0]
    assert name != "head"
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
    for c in containers(group["template"]):
        resources = c["resources"]
        gpus = resources["limits"]["nvidia.com/gpu"]
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert group["rayStartParams"]["num-gpus"] == str(gpus)
    tolerations = group["template"]["spec"].get("tolerations", [])
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)


def test_head_takes_no_trials():
    head = raycluster()["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for c in containers(head["template"]):
        assert c["resources"]["requests"] and c["resources"]["limits"]


def test_api_probes_a_health_route_the_app_serves(tmp_path):
    from api.main import create_app
    from api.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path))
    assert "get" in app.openapi()["paths"][HEALTH_PATH]

    async def probe() -> int:                        # as the kubelet does: no API key
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
            return (await client.get(HEALTH_PATH)).status_code

    assert asyncio.run(probe()) == 200

    api = [c for _, c in workload_containers() if c.get("command", [])[:2] == ["auditor", "serve"]]
    assert len(api) == 1
    (container,) = api
    ports = {p["containerPort"] for p in container["ports"]}
    for kind in ("readinessProbe", "livenessProbe"):
        check = container[kind]["httpGet"]
        assert check["path"] == HEALTH_PATH and check["port"] in ports | {p["name"] for p in container["ports"]}
    assert 8000 in ports


def test_database_url_comes_from_a_secret():
    secrets = {(s["metadata"]["name"], key) for s in of_kind("Secret")
               for key in {**s.get("data", {}), **s.get("stringData", {})}}
    for config in of_kind("ConfigMap"):
        assert "AUDITOR_DATABASE_URL" not in config.get("data", {})
    pods = [c for _, c in workload_containers()]
    pods += [c for _, g in ray_groups() for c in containers(g["template"])]
    for container in pods:
        for var in container.get("env", []):
            if var["name"] == "AUDITOR_DATABASE_URL":
                assert "value" not in var, f"{container['name']}: plain-text database URL"
    for workload, container in workload_containers():
        env = {var["name"]: var for var in container.get("env", [])}
        ref = env.get("AUDITOR_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{workload} gets no AUDITOR_DATABASE_URL from a Secret"
        assert (ref["name"], ref["key"]) in secrets, f"{workload}: no Secret {ref}"
    for name, doc in manifests():
        if doc["kind"] in {"Deployment", "Job", "RayCluster"}:
            assert "postgresql" not in yaml.safe_dump(doc), f"{name}: a database URL in plain text"
    for secret in of_kind("Secret"):
        for value in secret.get("stringData", {}).values():
            assert "CHANGE-ME" in value, "the example Secret must hold a placeholder, not a real password"


def test_workloads_share_the_data_volume_and_reach_the_ray_head():
    claims = {c["metadata"]["name"]: c for c in of_kind("PersistentVolumeClaim")}
    config = {k: v for c in of_kind("ConfigMap") for k, v in c.get("data", {}).items()}
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert deployments
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            data_dir = {**config, **{v["name"]: v.get("value") for v in container.get("env", [])}}
            assert mounts.get(data_dir["AUDITOR_DATA_DIR"]) in claims, name
    for claim in claims.values():
        assert "ReadWriteMany" in claim["spec"]["accessModes"]

    head = raycluster()["spec"]["headGroupSpec"]["template"]
    client_ports = {p["containerPort"] for c in containers(head) for p in c.get("ports", [])}
    addresses = [v["value"] for _, c in workload_containers() for v in c.get("env", [])
                 if v["name"] == "AUDITOR_RAY_ADDRESS"]
    assert addresses
    for address in addresses:
        assert address == f"ray://{raycluster()['metadata']['name']}-head-svc:10001"
    assert 10001 in client_ports


def test_migrations_job_upgrades_the_schema():
    (job,) = of_kind("Job")
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert [c["command"] for c in containers(job["spec"]["template"])] == [["alembic", "upgrade", "head"]]
    for name, text in dockerfiles().items():         # alembic finds alembic.ini in its working directory
        assert re.search(r"^WORKDIR\s+\S+", text, re.MULTILINE), name
        assert re.search(r"^COPY\s.*\balembic\.ini\b.*\s\./?$", text, re.MULTILINE), name


def test_every_auditor_variable_is_a_setting():
    from api.settings import Settings

    fields = {f"AUDITOR_{name.upper()}" for name in Settings.model_fields}
    names = {key for c in of_kind("ConfigMap") for key in c.get("data", {})}
    names |= {v["name"] for _, c in workload_containers() for v in c.get("env", [])}
    used = {name for name in names if name.startswith("AUDITOR_")}
    assert {"AUDITOR_DATABASE_URL", "AUDITOR_DATA_DIR", "AUDITOR_RAY_ADDRESS"} <= used
    assert not used - fields, f"no such setting: {sorted(used - fields)}"


def test_gpu_group_can_place_every_gpu_retrainer():
    env = {v["name"]: v.get("value") for _, c in workload_containers() for v in c.get("env", [])}
    gpus_each = float(env.get("AUDITOR_RETRAINER_GPUS") or 0)
    if gpus_each == 0:
        pytest.skip("the dispatcher runs CPU retrainers")
    (group,) = [g for _, g in ray_groups() if requests_gpu(g)]
    capacity = group["maxReplicas"] * float(group["rayStartParams"]["num-gpus"])
    # Without a fixed count the pool sizes itself to the GPUs present: none while the group is at 0.
    assert env.get("AUDITOR_RETRAINERS"), "GPU retrainers need a fixed AUDITOR_RETRAINERS to scale from zero"
    assert int(env["AUDITOR_RETRAINERS"]) * gpus_each <= capacity


@pytest.mark.parametrize("command", sorted({tuple(c["command"]) for _, c in workload_containers()
                                            if c.get("command", [""])[0] == "auditor"}), ids=" ".join)
def test_manifest_commands_are_auditor_commands(command):
    from auditor.cli import build_parser

    try:
        args = build_parser().parse_args(list(command[1:]))
    except SystemExit:
        pytest.fail(f"`{' '.join(command)}` is not accepted by the auditor command line")
    assert hasattr(args, "handler"), f"`{' '.join(command)}` names no sub-command"


def test_manifests_run_the_api_and_the_dispatcher():
    commands = {tuple(c["command"][:2]) for _, c in workload_containers()}
    assert {("auditor", "serve"), ("auditor", "worker")} <= commands


ALL_INTERFACES = re.compile(r"0\.0\.0\.0|\[::\]|[\"']::[\"']")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def comment_above(lines: list[str], index: int) -> str:
    """The comment lines right above ``lines[index]`` (up to the first line that is not a
    comment), plus a comment at the end of that line."""
    above = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("#"):
            break
        above.append(line.strip().lstrip("#"))
    trailing = lines[index].split("#", 1)[1] if "#" in lines[index] else ""
    return " ".join([*reversed(above), trailing])


def test_nothing_listens_on_every_interface_without_saying_how_it_is_fronted():
    files = [*sorted(K8S.glob("*.y*ml")), *(DEPLOY / name for name in dockerfiles())]
    found = 0
    for path in files:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if ALL_INTERFACES.search(line.split("#", 1)[0]):
                found += 1
                note = comment_above(lines, index)
                assert "networkpolicy.yaml" in note and re.search(r"ClusterIP|in-cluster", note), (
                    f"{path.name}:{index + 1} binds every interface without a comment naming the "
                    f"NetworkPolicy and the in-cluster Service that front it: {line.strip()}")
    assert found <= 1, "only the API's pod should listen on every interface"


def test_ray_dashboards_stay_on_the_pods_loopback():
    head = raycluster()["spec"]["headGroupSpec"]["rayStartParams"]
    assert head.get("dashboard-host") in LOOPBACK, "KubeRay binds the dashboard to 0.0.0.0 unless told"
    for name, group in ray_groups():
        for key in ("dashboard-host", "node-ip-address", "ray-client-server-host"):
            value = group.get("rayStartParams", {}).get(key)
            assert value is None or not ALL_INTERFACES.search(value), f"{name}: {key}={value}"


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists)
    picks a pod with ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for rule in selector.get("matchExpressions", []):
        key, op, values = rule["key"], rule["operator"], rule.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def ray_pod_labels(group: str) -> dict:
    """The labels KubeRay gives a pod of ``group`` (on top of the template's)."""
    spec = dict(ray_groups())[group]
    labels = dict(spec["template"].get("metadata", {}).get("labels", {}))
    node_type = "head" if group == "head" else "worker"
    return {**labels, "ray.io/cluster": raycluster()["metadata"]["name"], "ray.io/node-type": node_type,
            "ray.io/group": "headgroup" if group == "head" else group}


def ingress_policies(labels: dict) -> list[dict]:
    return [p for p in of_kind("NetworkPolicy")
            if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], labels)]


def test_network_policies_admit_only_ray_pods_and_the_dispatcher_to_ray():
    dispatcher = of_kind("Deployment")
    dispatcher = [d for d in dispatcher if any(c.get("command", [])[:2] == ["auditor", "worker"]
                                               for c in containers(d["spec"]["template"]))]
    assert len(dispatcher) == 1
    dispatcher_labels = dispatcher[0]["spec"]["template"]["metadata"]["labels"]
    client_port = 10001
    for group, _ in ray_groups():
        labels = ray_pod_labels(group)
        policies = ingress_policies(labels)
        assert policies, f"no NetworkPolicy restricts who reaches the Ray {group} pods"
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                sources = rule.get("from")
                assert sources, f"{policy['metadata']['name']}: a rule open to every source"
                for source in sources:
                    assert set(source) == {"podSelector"}, f"{policy['metadata']['name']}: {source}"
                    peer = source["podSelector"]
                    from_ray = all(selects(peer, ray_pod_labels(g)) for g, _ in ray_groups())
                    from_dispatcher = selects(peer, dispatcher_labels)
                    assert from_ray or from_dispatcher, f"{policy['metadata']['name']} admits {peer}"
                    assert not any(selects(peer, d["spec"]["template"]["metadata"]["labels"])
                                   for d in of_kind("Deployment") if d is not dispatcher[0]), peer
                    if from_dispatcher and not from_ray:
                        ports = {p["port"] for p in rule.get("ports", [])}
                        assert ports == {client_port}, f"the dispatcher needs Ray Client only, not {ports}"


def test_every_workload_pod_has_an_ingress_policy():
    for doc in workloads():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        policies = ingress_policies(labels)
        assert policies, f"{doc['metadata']['name']}: no NetworkPolicy"
        ports = {p["port"] for policy in policies for rule in policy["spec"].get("ingress", [])
                 for p in rule.get("ports", [{"port": "any"}])}
        served = {p["containerPort"] for c in containers(doc["spec"]["template"]) for p in c.get("ports", [])}
        assert ports <= served, f"{doc['metadata']['name']} admits {ports - served}, serves {served}"
