"""scripts/wheelhouse and the install.sh inside its archive: built here, installed with the index off.

Compiling llama.cpp takes minutes, and pip's wheel cache holds the llama-cpp-python wheel that
scripts/bootstrap built for this environment, so the archive takes that one (`--llama-wheel`);
everything else is resolved and fetched as on a connected machine. The archive is then installed
into a new virtual environment with PIP_NO_INDEX=1, and the `corral` of that environment serves.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port, start_server

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / "scripts" / "wheelhouse"


def cached_llama_wheel() -> Path | None:
    """The llama-cpp-python wheel pip built for this environment, from pip's wheel cache."""
    listed = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "llama_cpp_python", "--format=abspath"],
                            capture_output=True, text=True, timeout=60)
    installed = version("llama_cpp_python")
    matching = [Path(p) for p in listed.stdout.split() if Path(p).name.split("-")[1] == installed]
    return matching[0] if matching else None


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without pip settings, a virtual environment or corral settings leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "OLLAMA_", "CORRAL_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    llama = cached_llama_wheel()
    if llama is None:
        pytest.skip("pip's wheel cache has no llama-cpp-python wheel of the installed version (scripts/bootstrap "
                    "builds one); compiling it here would take minutes")
    output = tmp_path_factory.mktemp("wheelhouse") / "corral.tar"
    result = subprocess.run([sys.executable, str(WHEELHOUSE), "--llama-wheel", str(llama), "--output", str(output)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wheelhouse: {output} (" in result.stdout
    return output


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (folder,) = into.iterdir()
    return folder


def install(folder: Path, prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(folder / "install.sh"), "--prefix", str(prefix)],
                          env=clean_env(PIP_NO_INDEX="1"), cwd=folder.parent, capture_output=True, text=True,
                          timeout=600)


def test_the_archive_holds_every_wheel_with_its_hash_and_says_what_the_host_needs(archive: Path,
                                                                                    tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    wheels = sorted(p.name for p in (folder / "wheels").iterdir())
    assert manifest["wheels"] == wheels
    assert manifest["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert manifest["machine"] == "x86_64" and manifest["glibc"] and manifest["target"] == "prebuilt"
    assert manifest["llama_cpp_python"]["version"] == version("llama_cpp_python")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert folder.name == f"corral-{project['version']}-prebuilt" and manifest["corral"] == project["version"]
    pinned = [line.split(" ")[0] for line in (folder / "requirements.txt").read_text().splitlines()]
    assert len(pinned) == len(wheels) and all("==" in p for p in pinned)
    assert all(" --hash=sha256:" in line for line in (folder / "requirements.txt").read_text().splitlines())
    names = {p.split("==")[0] for p in pinned}
    for requirement in project["dependencies"]:
        name = requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0]
        assert name.lower().replace("-", "_") in names, requirement
    assert {"corral", "pip"} <= names
    assert os.access(folder / "install.sh", os.X_OK)
    assert (folder / "config" / "corral.service").read_text() == (ROOT / "config" / "corral.service").read_text()


def test_install_with_the_index_disabled_then_serve(archive: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path / "unpacked")
    prefix = tmp_path / "corral"
    installed = install(folder, prefix)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"install: done: {prefix}/bin/corral serve" in installed.stdout
    where = subprocess.run([str(prefix / "bin" / "python"), "-c", "import registry; print(registry.__file__)"],
                           env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(prefix), where

    port = free_port()
    env = clean_env(OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(tmp_path / "models"), CORRAL_OFFLINE="1")
    server = start_server(tmp_path / "server", port=port, command=[str(prefix / "bin" / "corral"), "serve"], env=env)
    try:
        answer = httpx.get(f"{server.url}/api/version", timeout=10)
        assert answer.status_code == 200
        assert answer.json()["corral"] == json.loads((folder / "manifest.json").read_text())["corral"]
    finally:
        server.stop()

    again = install(folder, prefix)  # the same archive once more: nothing to change, no error
    assert again.returncode == 0, again.stderr


def test_a_host_with_another_python_is_told_which_one_the_wheels_need(archive: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "python": "3.99"}))
    refused = install(folder, tmp_path / "corral")
    assert refused.returncode == 1
    assert "these wheels are for Python 3.99 and no python3.99 is on PATH" in refused.stderr
    assert not (tmp_path / "corral").exists()


def test_a_damaged_wheel_is_refused(archive: Path, tmp_path: Path) -> None:
    folder = unpack(archive, tmp_path)
    (wheel,) = (folder / "wheels").glob("corral-*.whl")
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    refused = install(folder, tmp_path / "corral")
    assert refused.returncode == 1
    assert "DO NOT MATCH THE HASHES" in refused.stderr and "install: pip could not install" in refused.stderr
    assert not (tmp_path / "corral" / "bin" / "corral").exists()


def test_a_cuda_build_needs_its_architectures_named() -> None:
    result = subprocess.run([sys.executable, str(WHEELHOUSE), "--target", "cuda"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and '--target cuda needs --cuda-arch, e.g. --cuda-arch "80;86;89;90"' in result.stderr


def test_the_target_decides_how_llama_cpp_is_compiled() -> None:
    """The build flags, read from the script itself (compiling them is what the test avoids)."""
    targets = runpy.run_path(str(WHEELHOUSE), run_name="wheelhouse")["TARGET_CMAKE_ARGS"]
    assert isinstance(targets, dict) and set(targets) == {"cpu", "cpu-generic", "cuda"}
    assert all("-DGGML_NATIVE=OFF" in args for args in targets.values())
    assert "-DGGML_AVX2=OFF" in targets["cpu-generic"] and "-DGGML_CUDA=ON" in targets["cuda"]
