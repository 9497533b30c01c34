"""Mirror benchmarks: every ratio compares two measurements taken in the same run, same machine.

    .venv/bin/python -m bench.mirror [--size 1GiB] [--cold-size 256MiB] [--wan-rate 50MB,200MB,1000MB] [--reps 3]
                                     [--clients 8] [--only warm,cold,fanout] [--loop uvloop,asyncio]

* warm   — blob GET throughput from corral's cache vs nginx serving the same file (sendfile both).
           Target ≥ 0.9.
* cold   — pull-through throughput from a cold corral vs downloading straight from the upstream
           (Debian's docker-registry). Target ≥ 0.9. Measured on bare loopback, where the
           upstream serves from page cache at memory speed and the ratio shows corral's CPU cost
           per byte on this machine; and "WAN-like", through a relay limiting every connection to
           each --wan-rate (as distance and CDNs do; the reason ollama downloads in parallel parts).
           (nginx's limit_rate was tried first: on proxied ranges it let 2-3× the limit through.)
           Each cold case also prints the CPU-seconds per GB the corral process used (user +
           system, all threads, until the blob is published: ollama's parts end before the last
           bytes are hashed; target ≤ 1.5): the figure that holds on a busy machine too.
           A plain GET through docker-registry's own pull-through cache is the reference: when its
           client had the blob (relayed from an upstream download of its own) and when its own
           copy was stored, with its CPU until then.
           Right before every cold transfer through corral or docker-registry's proxy, the bench
           writes and deletes a scratch file of the blob's size (`recycle_pages`), so the program
           under test writes into recently freed memory, as it would on bare metal. Why: this VM
           hands memory that stays free ~2 s back to its host (free page reporting), and a page
           cache page then costs a fault to the host: 1–3 CPU-seconds per GB on top of the program's
           own work, depending only on how long the machine idled before (corral, starting slower
           than the Go proxy, paid it more often). `--no-recycle` measures without; the machine's
           cost of writing a new file after a pause is printed first either way.
           corral runs on each `--loop` in turn (uvloop and asyncio's own by default), interleaved
           per rep: the loop is the server's biggest per-event cost.
* fanout — N clients pull the same cold model at once: bytes the upstream sent ÷ model size
           (target 1.0; the same run against docker-registry in proxy mode for comparison, counted
           once it has stored its own copy: it fetches that apart from what it relays), and
           the peak RSS of the corral process meanwhile (target < 200 MB: blobs are streamed).

Two client shapes are measured, both with curl so the client is never the bottleneck:
"ollama" = ollama's legacy downloader pattern (HEAD, then its parts of clamp(size/16, 100 MB,
1 GB) fetched as parallel Range requests), "single" = one plain GET of the whole blob.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from registry.model.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
from registry.model.names import Digest
from registry.units import format_byte_size, parse_byte_size
from tests.support.docker_registry import DockerRegistry, push_model, start_registry
from tests.support.legacy_pull import OLLAMA_UA, part_ranges
from tests.support.server import ServerProcess, free_port, start_server

TAG = "latest"


@dataclass
class Setup:
    """One model in the upstream: a weights blob of `size` bytes plus a template and the config."""

    root: Path
    upstream: DockerRegistry
    repository: str
    digest: str
    size: int
    model_total: int


def make_blob(path: Path, size: int) -> str:
    """Random (incompressible) bytes, hashed as they are written."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def setup(root: Path, upstream: DockerRegistry, repository: str, size: int) -> Setup:
    blob = root / "model.bin"
    digest = make_blob(blob, size)
    template = b"{{ .Prompt }}"
    push_model(upstream.url, repository, TAG, [(MEDIA_MODEL, blob), (MEDIA_TEMPLATE, template)])
    blob.unlink()
    config_size = len(b'{"model_format":"gguf","model_family":"llama"}')
    return Setup(root, upstream, repository, digest, size, size + len(template) + config_size)


def corral(root: Path, upstream: str, event_loop: str = "auto") -> ServerProcess:
    return start_server(root, extra_env={"CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": upstream,
                                         "CORRAL_EVENT_LOOP": event_loop})


def curl(url: str, byte_range: tuple[int, int] | None = None, output: Path | str = "/dev/null") -> subprocess.Popen:
    args = ["curl", "-sS", "-f", "-o", str(output), "-A", "Go-http-client/1.1", "-w", "%{size_download}", url]
    if byte_range is not None:
        args += ["-r", f"{byte_range[0]}-{byte_range[0] + byte_range[1] - 1}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fetch(url: str, size: int, shape: str, into: Path | None = None) -> float:
    """Seconds to download a blob of `size` bytes from `url` in the given client shape. With `into`,
    the parts are kept there in order (part-000, part-001, …) for a sha256 check afterwards, as
    ollama writes its parts to disk before it hashes them; otherwise they are discarded."""
    start = time.perf_counter()
    parts = [None] if shape == "single" else part_ranges(size)
    if into is not None:
        into.mkdir(parents=True, exist_ok=True)
    procs = [curl(url, part, "/dev/null" if into is None else into / f"part-{i:03}") for i, part in enumerate(parts)]
    got = 0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"curl {url}: {err.strip()}")
        got += int(out)
    elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"{url}: {got} bytes, expected {size}")
    return elapsed


def prime_manifest(base: str, repository: str) -> None:
    """What every ollama pull does first; it also tells corral the blob sizes."""
    r = httpx.get(f"{base}/v2/{repository}/manifests/{TAG}", headers={"User-Agent": OLLAMA_UA,
                  "Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=60)
    r.raise_for_status()


def rate(size: int, seconds: float) -> str:
    return f"{format_byte_size(int(size / seconds))}/s"


def compare(label: str, size: int, ours: list[float], theirs: list[float], other: str, target: str,
            who: str = "corral") -> None:
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"  {label:<28} {who} {rate(size, a):>10}   {other} {rate(size, b):>10}   "
          f"ratio {b / a:5.2f}  (target {target})", flush=True)


# ---- warm -------------------------------------------------------------------------------------


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
{user}
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
}}
"""
STATIC = "location /blobs/ {{ alias {blobs}/; }}"


def start_nginx(directory: Path, location: str) -> tuple[subprocess.Popen, int]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, location=location, user=user))
    proc = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")])
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def bench_warm(s: Setup, reps: int, event_loop: str) -> None:
    print(f"warm: a cached {format_byte_size(s.size)} blob, corral ({event_loop}) vs nginx on the same file",
          flush=True)
    server = corral(s.root / "warm", s.upstream.url, event_loop)
    nginx, port = None, 0
    try:
        r = httpx.post(f"{server.url}/api/pull", json={"model": f"{s.upstream.host}/{s.repository}:{TAG}",
                                                        "stream": False}, timeout=600)
        r.raise_for_status()
        nginx, port = start_nginx(s.root / "nginx", STATIC.format(blobs=server.root / "models" / "blobs"))
        ours_url = f"{server.url}/v2/{s.repository}/blobs/{s.digest}"
        nginx_url = f"http://127.0.0.1:{port}/blobs/{s.digest.replace(':', '-')}"
        for shape in ("single", "ollama"):
            fetch(ours_url, s.size, shape), fetch(nginx_url, s.size, shape)  # page cache and connections warm
            ours, theirs = [], []
            for rep in range(reps):  # alternating who goes first cancels drifts of this shared machine
                for url, times in ((ours_url, ours), (nginx_url, theirs))[:: 1 if rep % 2 else -1]:
                    times.append(fetch(url, s.size, shape))
            compare(f"{shape} GET", s.size, ours, theirs, "nginx", "≥ 0.9")
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        server.stop()


# ---- cold -------------------------------------------------------------------------------------


def bench_cold(s: Setup, reps: int, wan_rates: list[int], recycle: bool, loops: list[str]) -> None:
    print(f"cold: pulling a {format_byte_size(s.size)} blob through a cold corral vs straight from "
          "the upstream (docker-registry)", flush=True)
    print(f"  sha256 on one core of this machine: {format_byte_size(int(sha256_rate()))}/s (every byte is hashed "
          "before the last one is served)", flush=True)
    print(f"  this disk stores {format_byte_size(int(disk_write_rate(s.root, s.size)))}/s (write + fdatasync; "
          "every byte of a cold pull is stored)", flush=True)
    print(f"  writing a new file costs this machine {page_cache_cost(s.root, s.size):.2f} CPU-seconds per GB (page "
          "cache after an idle pause; a floor under every cold fill's CPU figure, paid by the proxy too)", flush=True)
    print("  pages are recycled before each transfer (see --no-recycle)" if recycle else
          "  pages are not recycled: each transfer pays what this machine charges for new page cache", flush=True)
    print("  loopback, unthrottled:", flush=True)
    direct = cold_runs(s, reps, s.upstream.url, "loopback", recycle, loops)
    proxy = proxy_cold_runs(s, reps, recycle)
    compare("single pull (reference)", s.size, proxy.client, direct, "direct", "-", who="docker-registry proxy")
    compare("  its own copy stored", s.size, proxy.stored, direct, "direct", "-", who="docker-registry proxy")
    print(f"  {'':<28} docker-registry proxy used {proxy.cpu_per_gb:.2f} CPU-seconds per GB until its copy was "
          f"stored; its upstream sent {proxy.copies:.2f} × the blob per cold GET (its client gets a relayed "
          "download of its own, neither stored nor verified on the way)", flush=True)
    for wan_rate in wan_rates:
        with Throttle(s.upstream.port, wan_rate) as port:
            print(f"  WAN-like, every upstream connection limited to {format_byte_size(wan_rate)}/s:", flush=True)
            cold_runs(s, reps, f"http://127.0.0.1:{port}", f"wan{wan_rate}", recycle, loops)


class Throttle:
    """A TCP relay in front of the upstream that sends each connection's responses at `rate` bytes/s
    (its own event loop in a thread; requests pass unthrottled)."""

    CHUNK = 64 * 1024

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", self.port), self.loop).result()
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(client_r, up_w, 0), self._pump(up_r, client_w, self.rate),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int) -> None:
        start, sent = time.perf_counter(), 0
        try:
            while chunk := await reader.read(self.CHUNK):
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if rate and (ahead := sent / rate - (time.perf_counter() - start)) > 0:
                    await asyncio.sleep(ahead)
        finally:
            writer.close()


def cold_runs(s: Setup, reps: int, upstream: str, label: str, recycle: bool, loops: list[str]) -> list[float]:
    """Both client shapes, direct and through a fresh corral on each event loop (interleaved per
    rep, so the loops share the machine's drifts); returns the direct single-GET times."""
    direct_url = f"{upstream}/v2/{s.repository}/blobs/{s.digest}"
    for shape in ("ollama", "single"):
        fetch(direct_url, s.size, shape)  # the upstream's page cache warm for both sides
        theirs: list[float] = []
        ours: dict[str, list[float]] = {loop: [] for loop in loops}
        cpu: dict[str, list[float]] = {loop: [] for loop in loops}
        for rep in range(reps):
            theirs.append(fetch(direct_url, s.size, shape))
            for loop in loops[rep % len(loops):] + loops[:rep % len(loops)]:
                root = s.root / f"cold-{label}-{shape}-{loop}-{rep}"
                server = corral(root, upstream, loop)
                try:
                    prime_manifest(server.url, s.repository)
                    if recycle:
                        recycle_pages(s.root, s.size)
                    before = cpu_seconds(server.process.pid)
                    ours[loop].append(fetch(f"{server.url}/v2/{s.repository}/blobs/{s.digest}", s.size, shape))
                    wait_published(server, s.digest)  # ollama's parts end before the last bytes are hashed
                    cpu[loop].append(cpu_seconds(server.process.pid) - before)
                finally:
                    server.stop()
                    shutil.rmtree(root, ignore_errors=True)
        for loop in loops:
            compare(f"{shape} pull ({loop})", s.size, ours[loop], theirs, "direct", "≥ 0.9")
            print(f"  {'':<28} corral used {statistics.median(cpu[loop]) / (s.size / 1e9):.2f} CPU-seconds "
                  "per GB (target ≤ 1.5)", flush=True)
    return theirs


def wait_published(server: ServerProcess, digest: str) -> None:
    """Until the fill's blob is in the store: its CPU figure covers the whole fill, hashing included."""
    wait_exists(server.root / "models" / "blobs" / Digest.parse(digest).filename)


def wait_exists(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout:g}s")
        time.sleep(0.005)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_write_rate(directory: Path, size: int) -> float:
    """Bytes/s this disk stores durably (write + fdatasync), as a fill must before it verifies."""
    path = directory / "disk-rate"
    block = os.urandom(4 << 20)
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(0, size, len(block)):
            f.write(block)
        os.fdatasync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return size / elapsed


def page_cache_cost(directory: Path, size: int) -> float:
    """CPU-seconds per GB this process spends writing a new file of `size` bytes (no fsync).

    Measured because it varies by an order of magnitude between machines and moments: a VM whose
    balloon reports free pages to its host (this one) faults every page freed a few seconds ago
    back in from the host — 0.2 CPU-seconds per GB when pages are reused at once, 2.5 after a pause
    — and every byte of a cold fill lands in such pages."""
    time.sleep(5)  # as between two pulls: freed pages have gone back to the host, if it takes them
    before = time.process_time()
    write_scratch(directory / "page-cache-cost", size)
    return (time.process_time() - before) / (size / 1e9)


def sha256_rate() -> float:
    """Bytes/s one core hashes: a verified cold pull cannot deliver its last byte sooner."""
    data = os.urandom(64 << 20)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - start)


@dataclass
class ProxyRuns:
    """Cold single GETs through docker-registry's pull-through cache, medians where one figure."""

    client: list[float]  # seconds until its client had the whole blob
    stored: list[float]  # seconds until its own copy was committed to its storage
    cpu_per_gb: float  # its CPU-seconds per GB of blob, until its copy was stored
    copies: float  # blobs its upstream sent per cold GET


def proxy_cold_runs(s: Setup, reps: int, recycle: bool) -> ProxyRuns:
    """The same cold single GET through Docker distribution's own pull-through cache (Go).

    It answers a cold GET by relaying a download of its own to the client (neither stored nor
    hashed on the way) while a second download from the upstream is stored and verified in the
    background, so the time its client waits and the time until it holds a verified copy differ:
    both are measured, the CPU until the copy is stored (as corral's until it is published)."""
    client, stored, cpu, copies = [], [], [], []
    for rep in range(reps):
        proxy = start_registry(s.root / f"proxy-cold-{rep}", proxy_of=s.upstream.url)
        try:
            prime_manifest(proxy.url, s.repository)
            if recycle:
                recycle_pages(s.root, s.size)
            before, sent_before = cpu_seconds(proxy.process.pid), s.upstream.blob_bytes_sent(s.digest)
            start = time.perf_counter()
            client.append(fetch(f"{proxy.url}/v2/{s.repository}/blobs/{s.digest}", s.size, "single"))
            wait_exists(proxy.stored_blob(s.digest))
            stored.append(time.perf_counter() - start)
            cpu.append(cpu_seconds(proxy.process.pid) - before)
            copies.append((s.upstream.blob_bytes_sent(s.digest) - sent_before) / s.size)
        finally:
            proxy.stop()
            shutil.rmtree(proxy.root, ignore_errors=True)
    return ProxyRuns(client, stored, statistics.median(cpu) / (s.size / 1e9), statistics.median(copies))


def recycle_pages(directory: Path, size: int) -> None:
    """Write and delete a scratch file of `size` bytes: the next transfer's page cache then comes
    from memory freed a moment ago, not from pages this VM has handed back to its host."""
    write_scratch(directory / "recycle", size)


def write_scratch(path: Path, size: int) -> None:
    """Write `size` bytes to a new file (page cache only, no fsync), then delete it."""
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for offset in range(0, size, len(block)):
            os.pwrite(fd, block, offset)
    finally:
        os.close(fd)
    path.unlink()


# ---- fanout + RSS -----------------------------------------------------------------------------


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fan_out(bases: list[str], s: Setup, clients: int, shape: str, into: Path | None = None,
            failures: dict[int, str] | None = None) -> float:
    """`clients` pulls of the model's blobs at once, client i through bases[i % len(bases)], layer
    after layer like ollama; wall seconds. With `into`, client i keeps each blob's parts in
    into/<i>/<digest>/ (see `fetch`). A failed download ends the fan-out, or with `failures` only
    its client, whose error is recorded there."""
    for base in bases:  # every node is asked for the manifest, as its clients' pulls would
        manifest = httpx.get(f"{base}/v2/{s.repository}/manifests/{TAG}", headers={"User-Agent": OLLAMA_UA,
                             "Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=60).json()
    blobs = [(layer["digest"], layer["size"]) for layer in [*manifest["layers"], manifest["config"]]]

    async def one_client(i: int) -> None:
        base = bases[i % len(bases)]
        try:
            for digest, size in blobs:  # like ollama: layer after layer, each in parallel parts
                await asyncio.to_thread(fetch, f"{base}/v2/{s.repository}/blobs/{digest}", size, shape,
                                        None if into is None else into / str(i) / digest)
        except RuntimeError as exc:
            if failures is None:
                raise
            failures[i] = str(exc)

    async def all_clients() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        return time.perf_counter() - start

    return asyncio.run(all_clients())


def bench_fanout(s: Setup, clients: int, event_loop: str) -> None:
    print(f"fanout: {clients} clients pull the same cold {format_byte_size(s.model_total)} model at once "
          f"(corral on {event_loop})", flush=True)
    server = corral(s.root / "fanout", s.upstream.url, event_loop)
    try:
        idle = current_rss(server.process.pid)
        before = s.upstream.blob_bytes_sent()
        seconds = fan_out([server.url], s, clients, "ollama")
        sent = s.upstream.blob_bytes_sent() - before
        peak = peak_rss(server.process.pid)
    finally:
        server.stop()
    print(f"  corral: upstream sent {format_byte_size(sent)} = {sent / s.model_total:.3f} × model size "
          f"(target 1.0), {clients} clients done in {seconds:.1f}s", flush=True)
    print(f"  corral peak RSS {peak / 1e6:.0f} MB (idle {idle / 1e6:.0f} MB) while serving "
          f"{clients} × {format_byte_size(s.size)} (target < 200 MB)", flush=True)
    # docker-registry's proxy answers a Range request on a blob it has not cached yet with 200 and
    # the whole blob (which corrupts ollama's parts), so its clients make plain GETs here.
    proxy = start_registry(s.root / "proxy", proxy_of=s.upstream.url)
    try:
        before = s.upstream.blob_bytes_sent()
        seconds = fan_out([proxy.url], s, clients, "single")
        # its own copy of the weights is a download apart from what it relays: count it too (the
        # template's and config's copies are a few bytes)
        wait_exists(proxy.stored_blob(s.digest))
        sent = s.upstream.blob_bytes_sent() - before
        print(f"  docker-registry proxy (plain GETs): upstream sent {format_byte_size(sent)} = "
              f"{sent / s.model_total:.3f} × model size, done in {seconds:.1f}s", flush=True)
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="weights blob for warm and fanout (≥ 1 GB for RSS)")
    parser.add_argument("--cold-size", default="256MiB",
                        help="weights blob for cold (smaller: a single stream at --wan-rate is slow)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--only", default="warm,cold,fanout")
    parser.add_argument("--no-recycle", action="store_true",
                        help="cold transfers write into whatever pages the machine hands out (see cold)")
    parser.add_argument("--wan-rate", default="50MB,200MB,1000MB",
                        help="per-connection limits of the WAN-like upstream, comma-separated")
    parser.add_argument("--loop", default="uvloop,asyncio",
                        help="corral's event loops (CORRAL_EVENT_LOOP), comma-separated: cold measures each, "
                             "warm and fanout the first")
    args = parser.parse_args()
    only = set(args.only.split(","))
    loops = args.loop.split(",")
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers read corral's blobs
        upstream = start_registry(root / "upstream")
        try:
            if only & {"warm", "fanout"}:
                big = setup(root, upstream, "library/bench", parse_byte_size(args.size))
                if "warm" in only:
                    bench_warm(big, args.reps, loops[0])
                if "fanout" in only:
                    bench_fanout(big, args.clients, loops[0])
            if "cold" in only:
                small = setup(root, upstream, "library/bench-cold", parse_byte_size(args.cold_size))
                bench_cold(small, args.reps, [parse_byte_size(r) for r in args.wan_rate.split(",")],
                           recycle=not args.no_recycle, loops=loops)
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
