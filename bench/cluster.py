"""Cluster benchmarks: two corral nodes against one, every ratio measured in the same run.

    .venv/bin/python -m bench.cluster [--size 256MiB] [--clients 8] [--reps 5] [--cold-reps 3]
                                      [--only cold,warm]

The nodes are `corral serve` processes in cluster mode (CORRAL_CLUSTER=1, each its own
CORRAL_NODE_NAME) on one throwaway PostgreSQL catalogue (Debian's `postgresql`, as the tests start
it) and one models folder, Debian's docker-registry upstream. "1 node" is the same cluster setup
with a single node, so only the number of nodes differs between the two sides of a ratio.

* cold — N ollama-shaped clients (bench.mirror's "ollama" shape: parallel Range parts) pull one
         cold model at once, split over nodes a and b, each client keeping its parts on disk as
         ollama does: bytes the upstream sent for the weights blob ÷ its size (target 1.000:
         one fill per digest in the whole cluster), every client's sha256 of every blob checked,
         and the aggregate throughput against the same fan-out through one node (a fresh cold
         cluster of its own; ratio 2 nodes ÷ 1 node, target ≥ 0.9 here).
* warm — the model cached in the shared folder, N clients GET it at once, all through node a
         (node b idle) vs spread over a and b: aggregate throughput of each and the ratio 2 nodes
         ÷ 1 node (target ≥ 0.9 here), in both of bench.mirror's client shapes.

A cold client whose pull fails, or whose bytes do not hash to the digest, is counted and reported
with the ERROR lines the nodes logged; a run with one is left out of the median time (the client
stopped early), and the ratio says so when every run of a side had one.

Both print each node's CPU-seconds (user + system, all threads) per GB it sent to its clients,
its fill included when cold: the figure that holds on a busy machine too. On one host both nodes
share the CPUs, the disk and the page cache, so a ratio here measures what a second node costs,
not scale-out: two nodes can only be faster than one on separate hosts (their own NICs, disks and
cores), which one machine cannot show.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.mirror import TAG, Setup, cpu_seconds, fan_out, fetch, peak_rss, rate, setup
from registry.units import format_byte_size, parse_byte_size
from tests.support.docker_registry import start_registry
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.server import ServerProcess, start_server

NAMES = ("a", "b")


@contextmanager
def cluster(root: Path, postgres: PostgresServer, s: Setup,
            names: tuple[str, ...]) -> Iterator[dict[str, ServerProcess]]:
    """Cold nodes, by name: a new database, an empty shared models folder; all removed afterwards."""
    url = postgres.new_database()
    env = {"OLLAMA_MODELS": str(root / "shared-models"), "CORRAL_DATABASE_URL": url, "CORRAL_CLUSTER": "1",
           "CORRAL_OFFLINE": "0", "CORRAL_UPSTREAM": s.upstream.url}
    nodes: dict[str, ServerProcess] = {}
    try:
        for name in names:
            nodes[name] = start_server(root / name, {**env, "CORRAL_NODE_NAME": name})
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def spread(names: tuple[str, ...], clients: int) -> dict[str, int]:
    """How many of the clients each node serves (fan_out gives client i to node i mod n)."""
    return {name: len(range(i, clients, len(names))) for i, name in enumerate(names)}


def node_cpu(nodes: dict[str, ServerProcess]) -> dict[str, float]:
    return {name: cpu_seconds(node.process.pid) for name, node in nodes.items()}


def parts_digest(folder: Path) -> str:
    """sha256 of a blob's parts joined in order, as ollama verifies its download."""
    h = hashlib.sha256()
    for part in sorted(folder.iterdir()):
        with open(part, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def mismatches(into: Path, clients: int, failed: dict[int, str]) -> dict[int, list[str]]:
    """The blobs (short digests) whose bytes do not hash to their digest, for each client that got
    every blob (fan_out checked the sizes) and has such a blob."""
    wrong = {i: [blob.name.removeprefix("sha256:")[:12] for blob in sorted((into / str(i)).iterdir())
                 if parts_digest(blob) != blob.name]
             for i in range(clients) if i not in failed}
    return {i: blobs for i, blobs in wrong.items() if blobs}


def errors_logged(node: ServerProcess, most: int = 3) -> list[str]:
    """The first distinct ERROR lines of a node's log, without their timestamps: why clients failed."""
    cluster_root = f"{node.root.parent}/"  # paths shortened to the part inside the bench's cluster folder
    lines = [line.split(" ERROR ", 1)[1].replace(cluster_root, "") for line in node.log().splitlines()
             if " ERROR " in line]
    return list(dict.fromkeys(lines))[:most]


# ---- cold -------------------------------------------------------------------------------------


@dataclass
class ColdRun:
    seconds: float
    upstream_copies: float  # bytes the upstream sent for the weights blob ÷ its size
    verified: int  # clients whose sha256 of every blob matched
    failures: list[str]  # "node a: <why>" for each other client: curl's error, or the sha256 mismatch
    errors: dict[str, list[str]]  # node → ERROR lines of its log, when a client failed
    cpu_per_gb: dict[str, float]  # node → CPU-seconds per GB it sent to its clients
    peak_rss: dict[str, int]  # node → bytes


def cold_run(root: Path, postgres: PostgresServer, s: Setup, names: tuple[str, ...], clients: int) -> ColdRun:
    with cluster(root, postgres, s, names) as nodes:
        before_cpu, before_sent = node_cpu(nodes), s.upstream.blob_bytes_sent(s.digest)
        failed: dict[int, str] = {}
        seconds = fan_out([node.url for node in nodes.values()], s, clients, "ollama", root / "clients", failed)
        cpu = {name: used - before_cpu[name] for name, used in node_cpu(nodes).items()}
        sent = s.upstream.blob_bytes_sent(s.digest) - before_sent
        rss = {name: peak_rss(node.process.pid) for name, node in nodes.items()}
        for i, blobs in mismatches(root / "clients", clients, failed).items():
            failed[i] = f"finished, but the bytes it got of {', '.join(blobs)} do not hash to the digest"
        errors = {name: errors_logged(node) for name, node in nodes.items()} if failed else {}
    served = spread(names, clients)
    failures = [f"node {names[i % len(names)]}: {error.split(': ', 1)[-1]}" for i, error in sorted(failed.items())]
    return ColdRun(seconds, sent / s.size, clients - len(failed), failures, errors,
                   {name: cpu[name] / (served[name] * s.model_total / 1e9) for name in names}, rss)


def bench_cold(s: Setup, postgres: PostgresServer, clients: int, reps: int) -> None:
    print(f"cold: {clients} ollama clients pull the same cold {format_byte_size(s.model_total)} model at once, "
          "through 1 node vs split over 2", flush=True)
    fetch(f"{s.upstream.url}/v2/{s.repository}/blobs/{s.digest}", s.size, "single")  # upstream's page cache warm
    cases = {"1 node": NAMES[:1], "2 nodes": NAMES}
    runs: dict[str, list[ColdRun]] = {case: [] for case in cases}
    for rep in range(reps):  # alternating who goes first cancels drifts of this shared machine
        for case, names in list(cases.items())[:: 1 if rep % 2 else -1]:
            runs[case].append(cold_run(s.root / f"cold-{len(names)}-{rep}", postgres, s, names, clients))
    seconds = {case: report_cold(case, names, runs[case], s, clients) for case, names in cases.items()}
    comparable = all(any(not run.failures for run in case_runs) for case_runs in runs.values())
    caveat = "" if comparable else ", not comparable: every run of one side had failed clients"
    print(f"  aggregate throughput, 2 nodes ÷ 1 node: {seconds['1 node'] / seconds['2 nodes']:.2f}  "
          f"(target ≥ 0.9 on one host{caveat})", flush=True)


def report_cold(case: str, names: tuple[str, ...], runs: list[ColdRun], s: Setup, clients: int) -> float:
    """Prints one side's runs; returns its median seconds, of the runs where every client got verified
    bytes (a failed client stops early, so such a run's time and CPU are not comparable)."""
    clean = [run for run in runs if not run.failures]
    timed = clean or runs
    seconds = statistics.median(run.seconds for run in timed)
    which = (f"median of {len(clean)} run{'s' * (len(clean) > 1)} without failures" if clean
             else "every run had failures: median of all")
    copies = ", ".join(f"{run.upstream_copies:.3f}" for run in runs)
    verified = ", ".join(f"{run.verified}/{clients}" for run in runs)
    print(f"  {case} ({' + '.join(str(n) for n in spread(names, clients).values())} clients): upstream sent {copies} "
          f"× the blob (target 1.000), sha256 matched for {verified} clients, {seconds:.1f}s = "
          f"{rate(clients * s.model_total, seconds)} aggregate ({which})", flush=True)
    for name in names:
        cpu = statistics.median(run.cpu_per_gb[name] for run in timed)
        rss = max(run.peak_rss[name] for run in runs)
        print(f"    node {name}: {cpu:.2f} CPU-seconds per GB sent to its clients (its fill included), "
              f"peak RSS {rss / 1e6:.0f} MB", flush=True)
    for rep, run in enumerate(runs, 1):
        if run.failures:
            print(f"    run {rep}: {len(run.failures)} of {clients} clients failed:", flush=True)
            for failure, times in Counter(run.failures).items():
                print(f"      {times} × {failure}", flush=True)
            for name, lines in run.errors.items():
                for line in lines:
                    print(f"      node {name} logged: {line}", flush=True)
    return seconds


# ---- warm -------------------------------------------------------------------------------------


def bench_warm(s: Setup, postgres: PostgresServer, clients: int, reps: int) -> None:
    print(f"warm: the {format_byte_size(s.model_total)} model cached, {clients} clients pull it at once, "
          "all through node a (b idle) vs spread over a and b", flush=True)
    with cluster(s.root / "warm", postgres, s, NAMES) as nodes:
        r = httpx.post(f"{nodes['a'].url}/api/pull", json={"model": f"{s.upstream.host}/{s.repository}:{TAG}",
                                                            "stream": False}, timeout=600)
        r.raise_for_status()
        cases = {"1 node": {"a": nodes["a"]}, "2 nodes": nodes}
        total = clients * s.model_total
        for shape in ("ollama", "single"):
            for serving in cases.values():  # page cache and each node's first read warm
                fan_out([node.url for node in serving.values()], s, clients, shape)
            times: dict[str, list[float]] = {case: [] for case in cases}
            cpu = {case: dict.fromkeys(serving, 0.0) for case, serving in cases.items()}
            for rep in range(reps):  # alternating who goes first cancels drifts of this shared machine
                for case, serving in list(cases.items())[:: 1 if rep % 2 else -1]:
                    before = node_cpu(serving)
                    times[case].append(fan_out([node.url for node in serving.values()], s, clients, shape))
                    for name, used in node_cpu(serving).items():
                        cpu[case][name] += used - before[name]
            one, two = statistics.median(times["1 node"]), statistics.median(times["2 nodes"])
            print(f"  {shape} GET   1 node {rate(total, one):>10}   2 nodes {rate(total, two):>10}   "
                  f"ratio {one / two:5.2f}  (target ≥ 0.9 on one host)", flush=True)
            print(f"  {'':<12} CPU-seconds per GB sent, by node: "
                  + "; ".join(f"{case}: {per_gb(used, s, clients, reps)}" for case, used in cpu.items()), flush=True)


def per_gb(cpu: dict[str, float], s: Setup, clients: int, reps: int) -> str:
    """Each node's CPU-seconds per GB it sent, as "a 0.20, b 0.18", over `reps` fan-outs of `clients`."""
    served = spread(tuple(cpu), clients)
    return ", ".join(f"{name} {used / (reps * served[name] * s.model_total / 1e9):.2f}" for name, used in cpu.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="the model's weights blob")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5, help="warm runs of each side")
    parser.add_argument("--cold-reps", type=int, default=3, help="cold runs of each side (each on fresh nodes)")
    parser.add_argument("--only", default="cold,warm")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        postgres = start_postgres()
        try:
            upstream = start_registry(root / "upstream")
            try:
                s = setup(root, upstream, "library/bench", parse_byte_size(args.size))
                if "cold" in only:
                    bench_cold(s, postgres, args.clients, args.cold_reps)
                if "warm" in only:
                    bench_warm(s, postgres, args.clients, args.reps)
            finally:
                upstream.stop()
        finally:
            postgres.stop()
            shutil.rmtree(postgres.root, ignore_errors=True)


if __name__ == "__main__":
    main()
