"""The local protocol between the server and a runner child (runner/engine/child.py).

Two byte streams (socketpairs, see runner/engine/process.py), one each way, carry frames: a
4-byte big-endian length, then one UTF-8 JSON object. JSON rather than pickle because the child runs
llama.cpp on files from the network: what comes back from it is data to check, never objects to
rebuild. A frame per token costs well under the time a token takes (runner/engine/process.py
gives the measured figure); the token frames use one-letter keys to keep that small.

Server → child: `{"op": "load", "spec": …, "settings": …}` once, then
`{"op": "complete", "id": n, "completion": …}` (its images base64 in it, like the request's),
`{"op": "embed", "id": n, "inputs": [[…]]}` and
`{"op": "cancel", "id": n}`.
Child → server: `{"op": "ready", "num_ctx", "n_ctx_train", "n_embd", "vram"}` or
`{"op": "failed", "status", "message"}` after the load; then per request `{"i": id, "t": text,
"l": logprobs}` (a piece), `{"i": id, "d": [reason, prompt_eval_count, prompt_eval_duration,
eval_count, eval_duration, stop], "s": steps}` (finished), `{"i": id, "v": vectors}` (embeddings) or
`{"i": id, "e": message, "c": status}` (failed).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

from runner.engine.engine import Completion, Finished, Piece
from runner.engine.loading import EngineSettings
from runner.options import Options, RunnerOptions
from runner.spec import ModelSpec

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a batch of embeddings is the largest honest frame


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must hold a JSON object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None when the other side closed the stream between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream closed inside a frame header") from None
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes is over the limit")
    try:
        return decode(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream closed inside a frame") from None


# ----------------------------------------------------------------------------- values


def spec_to_wire(spec: ModelSpec) -> dict[str, Any]:
    """What the child needs of a spec to load it: files and the two GGUF keys the Engine reads."""
    arch = spec.architecture
    gguf = {"general.architecture": arch}
    pooling = f"{arch}.pooling_type"
    if pooling in spec.gguf:
        gguf[pooling] = spec.gguf[pooling]
    return {
        "name": spec.name,
        "digest": spec.digest,
        "model_path": str(spec.model_path),
        "size": spec.size,
        "adapters": [str(path) for path in spec.adapters],
        "projector": str(spec.projector) if spec.projector is not None else None,
        "gguf": gguf,
    }


def spec_from_wire(data: dict[str, Any]) -> ModelSpec:
    projector = data["projector"]
    return ModelSpec(
        name=data["name"],
        digest=data["digest"],
        model_path=Path(data["model_path"]),
        size=data["size"],
        adapters=tuple(Path(path) for path in data["adapters"]),
        projector=Path(projector) if projector is not None else None,
        gguf=data["gguf"],
    )


def settings_to_wire(settings: EngineSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def settings_from_wire(data: dict[str, Any]) -> EngineSettings:
    return EngineSettings(**data)


def completion_to_wire(completion: Completion) -> dict[str, Any]:
    return {
        "tokens": list(completion.tokens),
        "options": dataclasses.asdict(completion.options),
        "grammar": completion.grammar,
        "preserved": sorted(completion.preserved),
        "shift": completion.shift,
        "logprobs": completion.logprobs,
        "images": [base64.b64encode(image).decode() for image in completion.images],
    }


def completion_from_wire(data: dict[str, Any]) -> Completion:
    options = dict(data["options"])
    runner = RunnerOptions(**options.pop("runner"))
    options["stop"] = tuple(options["stop"])
    return Completion(
        tokens=tuple(data["tokens"]),
        options=Options(runner=runner, **options),
        grammar=data["grammar"],
        preserved=frozenset(data["preserved"]),
        shift=data["shift"],
        logprobs=data["logprobs"],
        images=tuple(base64.b64decode(image) for image in data["images"]),
    )


def piece_frame(request_id: int, piece: Piece) -> bytes:
    message: dict[str, Any] = {"i": request_id, "t": piece.text}
    if piece.logprobs:
        message["l"] = list(piece.logprobs)
    return encode(message)


def finished_frame(request_id: int, event: Finished, steps: int) -> bytes:
    fields = [event.reason, event.prompt_eval_count, event.prompt_eval_duration, event.eval_count, event.eval_duration,
              event.stop]
    return encode({"i": request_id, "d": fields, "s": steps})


def finished_from_wire(fields: list[Any]) -> Finished:
    reason, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration, stop = fields
    return Finished(reason, prompt_eval_count, prompt_eval_duration, eval_count, eval_duration, stop)
