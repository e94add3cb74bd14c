"""The Dockerfile and deploy/kubernetes/ agree with each other and with the
configuration they carry: Docker and a Kubernetes cluster cannot run here, so
the manifests are parsed and the fields that matter are checked, and the TOML
inside each ConfigMap is read by hedgeplug's own loader with the environment
the Deployment gives a pod."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hedgeplug.address import Address
from hedgeplug.config import load_config
from hedgeplug.errors import ConfigError, PluginError
from hedgeplug.keyring import read_key_file
from hedgeplug.options import parse_duration
from hedgeplug.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
STORES = ("postgres", "etcd")
KINDS = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
POD_IP = "10.244.3.17"
CLOSE_BUDGET = 2.0  # seconds a stopping node may take to close its transport and lock


# ------------------------------------------------------------ reading


def documents(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


class Manifests:
    """The objects `kubectl apply -f deploy/kubernetes/<store>/` creates, and the Secret beside them."""

    def __init__(self, store: str) -> None:
        self.store = store
        docs = documents(DEPLOY / store)
        self.by_kind: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            self.by_kind.setdefault(doc["kind"], []).append(doc)
        self.secrets = documents(DEPLOY / store / "secrets")

    def one(self, kind: str) -> dict[str, Any]:
        found = self.by_kind.get(kind, [])
        assert len(found) == 1, f"{self.store}: {len(found)} {kind} objects"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["containers"]
        assert len(containers) == 1
        return containers[0]

    def port(self, name: str) -> int:
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        return ports[name]

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container["env"]}

    @property
    def toml_text(self) -> str:
        return self.one("ConfigMap")["data"]["hedgeplug.toml"]

    @property
    def toml(self) -> dict[str, Any]:
        return tomllib.loads(self.toml_text)

    @property
    def args(self) -> list[str]:
        return list(self.container["args"])

    def flag(self, name: str) -> str:
        args = self.args
        return args[args.index(name) + 1]

    @property
    def pre_stop_seconds(self) -> float:
        command = self.container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        return float(command[1])


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def exec_form(name: str) -> list[str]:
    values = instruction(name)
    assert len(values) == 1, f"one {name} in the Dockerfile"
    parsed = json.loads(values[0])
    assert isinstance(parsed, list), f"{name} in exec form, so hedgeplug is PID 1 and gets SIGTERM"
    return parsed


@pytest.fixture(params=STORES)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return Manifests(request.param)


# ------------------------------------------------------------ the image


def test_dockerfile_runs_hedgeplug_on_python_311_slim() -> None:
    assert instruction("FROM") == ["python:3.11-slim"]
    assert exec_form("ENTRYPOINT") == ["hedgeplug", "run"]
    command = exec_form("CMD")
    assert command == ["--config", "/etc/hedgeplug/hedgeplug.toml", "--health", "0.0.0.0:8080"]
    run = " ".join(instruction("RUN"))
    for plugin in ("hedgeplug-postgres", "hedgeplug-etcd", "hedgeplug-prometheus"):
        assert plugin in " ".join(instruction("ARG")), f"the image installs {plugin}"
        assert (ROOT / "plugins" / plugin / "pyproject.toml").exists()
    assert "pip install ." in run
    assert instruction("USER") and not instruction("USER")[0].startswith("0"), "not root"


def test_the_image_exposes_the_ports_the_manifests_use(manifests: Manifests) -> None:
    exposed = {int(port) for line in instruction("EXPOSE") for port in line.split()}
    assert exposed == {manifests.port("transport"), manifests.port("health")}
    assert exec_form("CMD") == manifests.args, "the Deployment runs the image's own command"
    assert "command" not in manifests.container, "the image's entrypoint (hedgeplug run) stays"


# ------------------------------------------------------------ the manifests


def test_every_object_is_there_and_labelled_for_its_store(manifests: Manifests) -> None:
    assert set(manifests.by_kind) == KINDS
    for docs in manifests.by_kind.values():
        for doc in docs:
            assert doc["metadata"]["labels"]["hedgeplug.io/store"] == manifests.store
    assert [s["metadata"]["name"] for s in manifests.secrets][0] == "hedgeplug-cluster-key"


def test_the_store_matches_the_directory(manifests: Manifests) -> None:
    lock = manifests.toml["lock"]
    assert lock["use"] == manifests.store
    if manifests.store == "postgres":
        assert ":" not in lock["dsn"].split("@")[0].removeprefix("postgresql://"), "no password in the dsn"
        ref = manifests.env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] in {s["metadata"]["name"] for s in manifests.secrets}
    else:
        assert lock["endpoints"] and "PGPASSWORD" not in manifests.env


def test_the_transport_port_is_the_same_everywhere(manifests: Manifests) -> None:
    bind = Address.parse(manifests.toml["transport"]["bind"])
    assert bind.host == "0.0.0.0"
    port = manifests.port("transport")
    assert bind.port == port
    service = manifests.one("Service")["spec"]
    ports = {p["name"]: p for p in service["ports"]}
    assert ports["transport"]["port"] == port and ports["transport"]["targetPort"] in (port, "transport")
    assert ports["health"]["port"] == manifests.port("health")
    assert service["clusterIP"] == "None", "headless"
    assert service["selector"] == manifests.one("Deployment")["spec"]["selector"]["matchLabels"]


def test_probes_point_at_the_health_port(manifests: Manifests) -> None:
    health = Address.parse(manifests.flag("--health"))
    assert health.port == manifests.port("health")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = manifests.container[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in ("health", health.port)
    annotations = manifests.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == health.port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_grace_period_covers_the_pre_stop_sleep_and_a_graceful_stop(manifests: Manifests) -> None:
    stop_timeout = parse_duration(manifests.toml["node"]["stop_timeout"])
    grace = manifests.pod["terminationGracePeriodSeconds"]
    pre_stop = manifests.pre_stop_seconds
    assert pre_stop > 0
    # A graceful stop spends up to a third of stop_timeout handing services
    # over, half leaving, half releasing the lease, then closes.
    worst_stop = stop_timeout * (1 / 3 + 1 / 2 + 1 / 2) + CLOSE_BUDGET
    assert grace > pre_stop + worst_stop, (grace, pre_stop, worst_stop)


def test_the_autoscaler_and_the_disruption_budget(manifests: Manifests) -> None:
    hpa = manifests.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 150)
    deployment = manifests.one("Deployment")
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert manifests.container["resources"]["requests"]["cpu"], "utilization needs a cpu request"
    pdb = manifests.one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "maxUnavailable" in pdb or "minAvailable" in pdb


def test_the_key_comes_from_the_secret_and_the_address_from_the_pod_ip(manifests: Manifests) -> None:
    node = manifests.toml["node"]
    assert "key" not in node and "key_file" not in node and "insecure" not in node
    env = manifests.env
    assert "HEDGEPLUG_NODE_KEY" not in env, "never a key inline"
    key_file = Path(env["HEDGEPLUG_NODE_KEY_FILE"]["value"])
    mounts = {m["name"]: m for m in manifests.container["volumeMounts"]}
    volumes = {v["name"]: v for v in manifests.pod["volumes"]}
    secret_mounts = [name for name, v in volumes.items() if "secret" in v]
    assert len(secret_mounts) == 1
    mount = mounts[secret_mounts[0]]
    assert key_file.parent == Path(mount["mountPath"]) and mount["readOnly"]
    secret = volumes[secret_mounts[0]]["secret"]
    assert secret["secretName"] == "hedgeplug-cluster-key"
    assert secret["defaultMode"] & 0o007 == 0, "not readable by others"
    config_volume = next(name for name, v in volumes.items() if "configMap" in v)
    assert Path(mounts[config_volume]["mountPath"]) / "hedgeplug.toml" == Path(manifests.flag("--config"))
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    names = list(env)
    assert names.index("POD_IP") < names.index("HEDGEPLUG_TRANSPORT_ADVERTISE"), "$(POD_IP) needs it first"
    advertise = env["HEDGEPLUG_TRANSPORT_ADVERTISE"]["value"]
    assert advertise == f"$(POD_IP):{manifests.port('transport')}"


def test_the_secret_placeholder_holds_no_key(manifests: Manifests, tmp_path: Path) -> None:
    """Applied unchanged, the placeholder makes every node refuse to start, never run on a known key."""
    secret = next(s for s in manifests.secrets if s["metadata"]["name"] == "hedgeplug-cluster-key")
    placeholder = tmp_path / "cluster.keys"
    placeholder.write_text(secret["stringData"]["cluster.keys"])
    with pytest.raises(ConfigError, match="holds no key"):
        read_key_file(str(placeholder))


# ------------------------------------------------------------ the configuration as a pod reads it


def pod_environment(manifests: Manifests, key_file: Path) -> dict[str, str]:
    """The Deployment's environment as the kubelet would give it to one pod."""
    fields = {"status.podIP": POD_IP, "metadata.name": f"hedgeplug-{manifests.store}-7d9f8-x2x4q"}
    env: dict[str, str] = {}
    for name, entry in manifests.env.items():
        if "value" in entry:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            env[name] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[name] = "a-password-from-the-secret"
    env["HEDGEPLUG_NODE_KEY_FILE"] = str(key_file)  # the Secret's file, here a real key
    return env


def store_installed(store: str) -> bool:
    return store in Registry.load().names("lock")


def test_the_configuration_loads_as_a_pod_sees_it(manifests: Manifests, tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.keys"
    key = subprocess.run(
        [sys.executable, "-m", "hedgeplug", "keygen"], capture_output=True, text=True, check=True
    ).stdout
    key_file.write_text(key)
    key_file.chmod(0o600)
    config_file = tmp_path / "hedgeplug.toml"
    config_file.write_text(manifests.toml_text)
    env = pod_environment(manifests, key_file)
    registry = Registry.load()
    if store_installed(manifests.store):
        config = load_config(str(config_file), env=env, registry=registry)
        assert config.lock.use == manifests.store
    else:  # without the plugin the loader names it; every other section still loads
        with pytest.raises((ConfigError, PluginError), match=f"hedgeplug-{manifests.store}"):
            load_config(str(config_file), env=env, registry=registry)
        lockless = {k: v for k, v in manifests.toml.items() if k != "lock"}
        config_file.write_text(_dump(lockless))
        config = load_config(str(config_file), env=env, registry=registry)
    assert config.node.id == env["HEDGEPLUG_NODE_ID"]
    assert config.node.key_file == str(key_file) and not config.node.insecure
    assert config.node.stop_timeout == parse_duration(manifests.toml["node"]["stop_timeout"])
    options = config.transport.options
    assert options.bind.port == manifests.port("transport")
    assert options.advertise == Address(POD_IP, manifests.port("transport"))


def _dump(data: dict[str, Any]) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def test_kubectl_apply_reads_no_secret(manifests: Manifests) -> None:
    """`kubectl apply -f deploy/kubernetes/<store>/` must never overwrite the real Secret."""
    assert "Secret" not in manifests.by_kind
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    assert f"kubectl apply -f deploy/kubernetes/{manifests.store}/" in doc
    assert "kubectl create secret generic hedgeplug-cluster-key" in doc
