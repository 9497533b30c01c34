"""config/cluster/: the load-balancer examples of README's "Running several nodes", checked by the
load balancers' own parsers (`nginx -t`, `haproxy -c`), and shown in the README as shipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "config" / "cluster" / "nginx.conf"
HAPROXY = ROOT / "config" / "cluster" / "haproxy.cfg"
INFERENCE = ("/api/generate", "/api/chat", "/api/embed", "/v1/")

nginx = shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin"))
haproxy = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin"))


@pytest.mark.skipif(nginx is None, reason="nginx is not installed (Debian package nginx-light)")
def test_the_nginx_example_is_valid_nginx(tmp_path: Path) -> None:
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n    include {NGINX};\n}}\n")
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


@pytest.mark.skipif(haproxy is None, reason="haproxy is not installed (Debian package haproxy)")
def test_the_haproxy_example_is_valid_haproxy() -> None:
    checked = subprocess.run([haproxy, "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_examples_route_inference_hash_blobs_and_check_health() -> None:
    conf, cfg = NGINX.read_text(), HAPROXY.read_text()
    assert "hash $uri consistent;" in conf and "balance uri" in cfg
    assert cfg.count("option httpchk GET /api/version") == 3  # every backend
    for path in INFERENCE:
        assert path.strip("/").split("/")[-1] in conf and path.strip("/").split("/")[-1] in cfg


def test_the_readme_shows_the_examples_as_shipped() -> None:
    readme = (ROOT / "README.md").read_text()
    for example in (NGINX, HAPROXY):
        assert example.read_text() in readme, f"README's copy of {example.relative_to(ROOT)} differs"
