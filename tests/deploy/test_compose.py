"""config/compose.yaml: valid for Compose, and saying what the Dockerfiles say.

docker-compose (Debian's, from scripts/bootstrap) validates the file against the Compose schema
without a daemon; the rest reads it with PyYAML and compares it with the Dockerfiles: the volume
at the image's /data, the port it exposes and listens on, the same health check, the env file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.config import SETTINGS_SPEC, load_settings
from tests.support.dockerfile import Stage, parse

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "config" / "compose.yaml"
ENV_EXAMPLE = ROOT / "config" / "corral.env.example"
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}

FILE: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, Any] = FILE["services"]
DOCKERFILE_OF = {"corral": "Dockerfile", "corral-cuda": "Dockerfile.cuda"}


def image(service: str) -> Stage:
    return parse(ROOT / DOCKERFILE_OF[service])[1][-1]


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose, in scripts/bootstrap)")
    # A copy beside the two Dockerfiles, with the env file an operator makes from the example.
    (tmp_path / "config").mkdir()
    for name in DOCKERFILE_OF.values():
        shutil.copyfile(ROOT / name, tmp_path / name)
    shutil.copyfile(COMPOSE, tmp_path / "config" / "compose.yaml")
    shutil.copyfile(ENV_EXAMPLE, tmp_path / "config" / "corral.env")
    for profile in ([], ["--profile", "cuda"]):
        result = subprocess.run([compose, "-f", "config/compose.yaml", *profile, "config", "--quiet"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr) == (0, ""), profile


def test_the_services_are_the_cpu_one_and_the_cuda_one_behind_a_profile() -> None:
    assert set(SERVICES) == set(DOCKERFILE_OF)
    assert "profiles" not in SERVICES["corral"] and SERVICES["corral-cuda"]["profiles"] == ["cuda"]
    for service, dockerfile in DOCKERFILE_OF.items():
        build = SERVICES[service]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT and build["dockerfile"] == dockerfile
    (gpu,) = SERVICES["corral-cuda"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    build_args = {a.split("=")[0] for s in parse(ROOT / "Dockerfile.cuda")[1] for a in s.all("ARG")}
    assert set(SERVICES["corral-cuda"]["build"]["args"]) <= build_args


@pytest.mark.parametrize("service", sorted(DOCKERFILE_OF))
def test_the_service_agrees_with_its_dockerfile(service: str) -> None:
    spec, stage = SERVICES[service], image(service)
    (volume,) = spec["volumes"]
    name, target = volume.split(":")
    assert [f'["{target}"]'] == stage.all("VOLUME") and name in FILE["volumes"]
    environment = spec["environment"]
    assert environment["OLLAMA_MODELS"] == stage.env["OLLAMA_MODELS"]
    (port,) = spec["ports"]
    _, container = port.split(":")
    assert stage.all("EXPOSE") == [container]
    assert load_settings(env={"OLLAMA_HOST": environment["OLLAMA_HOST"]}).host.port == int(container)
    assert spec["healthcheck"]["test"] == ["CMD", *stage.healthcheck]
    assert spec["restart"] in RESTART_POLICIES


def test_the_env_file_example_names_real_settings() -> None:
    assert SERVICES["corral"]["env_file"] == ["corral.env"]  # the copy of the example, not committed
    assert "/config/corral.env" in (ROOT / ".gitignore").read_text().splitlines()
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.removeprefix("# ").strip()
        if line and not line.startswith("#") and "=" in line and " " not in line.split("=")[0]:
            names.add(line.split("=")[0])
    assert "CORRAL_ADMIN_TOKEN" in names and names <= {spec.env for spec in SETTINGS_SPEC}
