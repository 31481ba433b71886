"""The Docker Compose stack parses, and its pinned versions agree.

Needs only a Docker Compose v2 client, no engine: `docker compose config` renders the
file locally. Install the client with `sudo bash scripts/install-compose.sh`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker" / "compose.cpu.yml"
ES_DOCKERFILE = REPO / "docker" / "elasticsearch" / "Dockerfile"

# Variables the file reads; unset so the test sees the file's own defaults.
_COMPOSE_VARS = (
    "ES_VERSION",
    "LTR_PLUGIN_VERSION",
    "OPENSEARCH_VERSION",
    "OPENSEARCH_INITIAL_ADMIN_PASSWORD",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
    "ESRANK_TOKEN",
)

Compose = Callable[..., str]

_INSTALL_HINT = (
    "no Docker Compose v2 client found: neither `docker compose` nor a v2 "
    "`docker-compose` is on PATH. Install it (client only, no engine needed) with: "
    "sudo bash scripts/install-compose.sh"
)


def _compose_command() -> list[str]:
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        proc = subprocess.run(
            [*cmd, "version", "--short"], capture_output=True, text=True, check=False
        )
        major = proc.stdout.strip().lstrip("v").split(".")[0]
        if proc.returncode == 0 and major.isdigit() and int(major) >= 2:
            return cmd
    pytest.fail(_INSTALL_HINT, pytrace=False)


@pytest.fixture(scope="module")
def compose() -> Compose:
    """Run `compose config` on the repo's file; returns a callable giving stdout."""
    cmd = _compose_command()
    base = {k: v for k, v in os.environ.items() if k not in _COMPOSE_VARS}

    def run(*args: str, files: tuple[Path, ...] = (COMPOSE_FILE,),
            token: str | None = "t0ken", ok: bool = True) -> str:
        env = {**base, **({"ESRANK_TOKEN": token} if token else {})}
        file_args = [a for f in files for a in ("-f", str(f))]
        proc = subprocess.run(
            # --env-file /dev/null: a developer's .env must not change what is checked.
            [
                *cmd,
                *file_args,
                "--project-directory",
                str(REPO),
                "--env-file",
                os.devnull,
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert (proc.returncode == 0) == ok, f"`{' '.join(proc.args)}`:\n{proc.stderr}"
        return proc.stdout + proc.stderr

    return run


@pytest.fixture(scope="module")
def config(compose: Compose) -> dict[str, Any]:
    return json.loads(compose("--profile", "opensearch", "config", "--format", "json"))


def _tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def _published(service: dict[str, Any]) -> set[str]:
    return {f"{p.get('host_ip', '0.0.0.0')}:{p['published']}:{p['target']}"
            for p in service.get("ports", [])}


def test_default_services(compose: Compose) -> None:
    default = json.loads(compose("config", "--format", "json"))
    assert set(default["services"]) == {"elasticsearch", "kibana", "sidecar"}


def test_opensearch_profile(compose: Compose, config: dict[str, Any]) -> None:
    assert compose("config", "--profiles").split() == ["opensearch"]
    services = config["services"]
    assert set(services) == {
        "elasticsearch",
        "kibana",
        "sidecar",
        "opensearch",
        "opensearch-dashboards",
    }
    for name in ("opensearch", "opensearch-dashboards"):
        assert services[name]["profiles"] == ["opensearch"], name
    # Published apart from Elasticsearch/Kibana so both stacks can run at once.
    assert _published(services["opensearch"]) == {"127.0.0.1:9201:9200"}
    assert _published(services["opensearch-dashboards"]) == {"127.0.0.1:5602:5601"}
    assert services["opensearch"]["environment"]["DISABLE_SECURITY_PLUGIN"] == "true"


def test_elasticsearch_stack(config: dict[str, Any]) -> None:
    es = config["services"]["elasticsearch"]
    assert _published(es) == {"127.0.0.1:9200:9200"}
    assert es["environment"]["discovery.type"] == "single-node"
    assert "-Xmx1g" in es["environment"]["ES_JAVA_OPTS"]
    assert "healthcheck" in es
    kibana = config["services"]["kibana"]
    assert _published(kibana) == {"127.0.0.1:5601:5601"}
    assert kibana["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_sidecar_reserves_a_gpu(config: dict[str, Any]) -> None:
    sidecar = config["services"]["sidecar"]
    devices = sidecar["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert sidecar["build"]["dockerfile"] == "docker/sidecar/Dockerfile"
    assert sidecar["build"]["args"] == {"ORT": "gpu"}
    assert sidecar["environment"] == {
        "ESRANK_URL": "http://elasticsearch:9200",
        "ESRANK_FLAVOR": "elasticsearch",
        "ESRANK_SERVE__TOKEN": "t0ken",
    }
    assert _published(sidecar) == {"127.0.0.1:8080:8080"}
    assert sidecar["command"][:2] == ["esrank", "serve"]


def test_nothing_is_open_without_a_token(compose: Compose, config: dict[str, Any]) -> None:
    # every port is on the host's loopback only, and the sidecar will not start without a token
    for name, service in config["services"].items():
        assert all(p["host_ip"] == "127.0.0.1" for p in service.get("ports", [])), name
    refused = compose("config", token=None, ok=False)
    assert "set ESRANK_TOKEN" in refused


def test_the_gpu_image_installs_onnxruntime_gpu_with_its_cuda_libraries() -> None:
    dockerfile = (REPO / "docker" / "sidecar" / "Dockerfile").read_text()
    assert "ARG ORT=gpu" in dockerfile and 'pip install ".[serve,${ORT}]"' in dockerfile
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("onnxruntime-gpu[cuda,cudnn]") for d in extras["gpu"])
    assert not any(d.startswith("onnxruntime") for d in extras["serve"])  # one wheel only


def test_cpu_override_drops_the_gpu_reservation(compose: Compose) -> None:
    out = compose("config", "--format", "json", files=(COMPOSE_FILE, CPU_OVERRIDE))
    sidecar = json.loads(out)["services"]["sidecar"]
    assert "deploy" not in sidecar
    assert sidecar["build"]["args"] == {"ORT": "cpu"}


def test_es_kibana_and_ltr_plugin_versions_agree(config: dict[str, Any]) -> None:
    services = config["services"]
    args = services["elasticsearch"]["build"]["args"]
    es_version = args["ES_VERSION"]
    assert _tag(services["elasticsearch"]["image"]) == es_version
    assert _tag(services["kibana"]["image"]) == es_version

    dockerfile = ES_DOCKERFILE.read_text()
    assert (
        "FROM docker.elastic.co/elasticsearch/elasticsearch:${ES_VERSION}" in dockerfile
    )
    # The Dockerfile's defaults (for a plain `docker build`) match the compose file.
    for name, value in args.items():
        assert f"ARG {name}={value}\n" in dockerfile, f"Dockerfile default for {name}"

    url = re.search(r"https://\S+\.zip", dockerfile)
    assert url, f"no plugin zip URL in {ES_DOCKERFILE}"
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], url.group(0))
    release = f"v{args['LTR_PLUGIN_VERSION']}-es{es_version}"
    assert rendered == (
        "https://github.com/o19s/elasticsearch-learning-to-rank/releases/download/"
        f"{release}/ltr-plugin-{release}.zip"
    )


def test_version_defaults_are_written_consistently() -> None:
    text = COMPOSE_FILE.read_text()
    for var in ("ES_VERSION", "LTR_PLUGIN_VERSION", "OPENSEARCH_VERSION"):
        defaults = set(re.findall(r"\$\{" + var + r":-([^}]+)\}", text))
        assert len(defaults) == 1, (
            f"{var} has defaults {sorted(defaults)} in {COMPOSE_FILE}"
        )


def test_opensearch_and_dashboards_versions_agree(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["opensearch"]["image"].startswith("opensearchproject/opensearch:")
    assert services["opensearch-dashboards"]["image"].startswith(
        "opensearchproject/opensearch-dashboards:"
    )
    version = _tag(services["opensearch"]["image"])
    assert version.startswith("3.")
    assert _tag(services["opensearch-dashboards"]["image"]) == version
