"""config/corral.service: systemd's own checker, its hardening score, and what the unit must say.

`systemd-analyze verify` and `security --offline` read unit files without a running systemd (the
test machines have none). verify insists that ExecStart exists, so it reads a copy whose
ExecStart is this environment's `corral`; everything else is the file as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from registry.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "corral.service"
INSTALLER = ROOT / "scripts" / "wheelhouse-install.sh"
STATE = Path("/var/lib/corral")
#: systemd-analyze's exposure scale is 0-100 (shown as 0.0-10.0); 2.0 and under reads "OK".
MAX_EXPOSURE = 20

systemd_analyze = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(systemd_analyze is None,
                                           reason="systemd-analyze is not installed (Debian package systemd)")


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value (a key may repeat, as Environment= does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), defaultdict(list))
            continue
        key, _, value = line.partition("=")
        current[key].append(value)
    return sections


SERVICE = read_unit(UNIT.read_text())["Service"]


def checkable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's `corral` (verify requires it to exist)."""
    corral = Path(sys.executable).parent / "corral"
    assert corral.exists()
    text, replaced = re.subn(r"^ExecStart=/opt/corral/bin/corral ", f"ExecStart={corral} ", UNIT.read_text(),
                             flags=re.MULTILINE)
    assert replaced == 1
    copy = tmp_path / "corral.service"
    copy.write_text(text)
    return copy


@needs_systemd_analyze
def test_systemd_verifies_the_unit_without_a_word(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze, "verify", str(checkable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too; it only warns, so any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_rates_the_hardening_ok(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}",
                             "--no-pager", str(checkable_copy(tmp_path))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-600:] + result.stderr


def test_the_unit_runs_corral_as_its_own_user_with_only_the_port_capability() -> None:
    assert SERVICE["User"] == ["corral"] and SERVICE["Group"] == ["corral"]
    assert "DynamicUser" not in SERVICE
    assert SERVICE["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert SERVICE["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert SERVICE["Restart"] == ["on-failure"] and SERVICE["KillMode"] == ["mixed"]
    assert read_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_unit_is_hardened_but_leaves_llama_cpp_what_it_needs() -> None:
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes"}.items():
        assert SERVICE[key] == [value], key
    # Both would break a CUDA build (/dev/nvidia*, PTX JIT) or ctypes callbacks into llama.cpp.
    assert "PrivateDevices" not in SERVICE and "MemoryDenyWriteExecute" not in SERVICE
    # The runner children talk over AF_UNIX socketpairs.
    assert "AF_UNIX" in SERVICE["RestrictAddressFamilies"][0].split()


def test_everything_corral_writes_lies_in_the_state_directory() -> None:
    assert SERVICE["StateDirectory"] == ["corral"]  # i.e. /var/lib/corral, created and owned by systemd
    env = dict(value.split("=", 1) for value in SERVICE["Environment"])
    settings = load_settings(env=env)
    written = {"models": settings.models, "catalogue": settings.default_database, "key": settings.key_path,
               "scratch": settings.scratch_dir, "tls": settings.models.parent / "tls", "home": Path(env["HOME"])}
    assert {k: p for k, p in written.items() if p is None or not p.is_relative_to(STATE)} == {}
    assert SERVICE["WorkingDirectory"] == [str(STATE)]


def test_exec_start_is_where_the_air_gap_installer_puts_corral() -> None:
    (prefix,) = re.findall(r"^PREFIX=(\S+)$", INSTALLER.read_text(), re.MULTILINE)
    assert SERVICE["ExecStart"] == [f"{prefix}/bin/corral serve"]
    assert SERVICE["EnvironmentFile"] == ["-/etc/corral/corral.env"]
