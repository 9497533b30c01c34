"""The runner child's frames: values survive the trip, and what is not a frame is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runner.engine import wire
from runner.engine.engine import Completion, Finished, Piece
from runner.engine.loading import EngineSettings
from runner.engine.media import image_slot
from runner.options import build_options
from runner.spec import ModelSpec


def _trip(message: dict) -> dict:
    """A message encoded as a frame and decoded again."""
    return wire.decode(wire.encode(message)[wire.HEADER.size :])


def test_a_completion_survives_the_trip() -> None:
    options = build_options(2048, {"stop": ["<|im_end|>"], "temperature": 0.0, "num_predict": 7, "num_ctx": 512})
    completion = Completion(
        tokens=(1, 2, 3), options=options, grammar='root ::= "a"', preserved=frozenset({5, 9}), shift=False, logprobs=3
    )
    assert wire.completion_from_wire(_trip(wire.completion_to_wire(completion))) == completion
    with_images = Completion(tokens=(1, image_slot(0), 2, image_slot(1)), options=options,
                             images=(b"\x89PNG\r\n\x1a\n\x00\xff", b"GIF89a"))
    assert wire.completion_from_wire(_trip(wire.completion_to_wire(with_images))) == with_images


def test_settings_and_the_spec_the_child_needs_survive_the_trip() -> None:
    settings = EngineSettings(num_ctx=256, num_parallel=2, gpu_layers=10, flash_attention=True)
    assert wire.settings_from_wire(_trip(wire.settings_to_wire(settings))) == settings
    spec = ModelSpec(
        name="m:latest", digest="sha256:" + "a" * 64, model_path=Path("/blobs/x"), size=5,
        adapters=(Path("/blobs/y"),), projector=Path("/blobs/z"),
        gguf={"general.architecture": "bert", "bert.pooling_type": 2, "big": [0] * 9},
    )
    back = wire.spec_from_wire(_trip(wire.spec_to_wire(spec)))
    assert (back.model_path, back.adapters, back.projector) == (spec.model_path, spec.adapters, spec.projector)
    assert back.gguf == {"general.architecture": "bert", "bert.pooling_type": 2}  # not the whole header


def test_events_survive_the_trip() -> None:
    frame = wire.piece_frame(4, Piece("hé", ({"token": "h", "logprob": -0.5},)))
    assert wire.decode(frame[wire.HEADER.size :]) == {"i": 4, "t": "hé", "l": [{"token": "h", "logprob": -0.5}]}
    done = Finished("stop", 3, 100, 2, 200, stop="</s>")
    message = wire.decode(wire.finished_frame(4, done, steps=9)[wire.HEADER.size :])
    assert wire.finished_from_wire(message["d"]) == done and message["s"] == 9


async def _read(data: bytes, eof: bool = True) -> dict | None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return await wire.read_frame(reader)


async def test_frames_are_read_whole_and_eof_between_frames_is_none() -> None:
    assert await _read(wire.encode({"op": "x"})) == {"op": "x"}
    assert await _read(b"") is None


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00", wire.HEADER.pack(10) + b"{}", wire.HEADER.pack(2) + b"[]", wire.HEADER.pack(2) + b"\xff\xfe",
     wire.HEADER.pack(wire.MAX_FRAME + 1)],
)
async def test_what_is_not_a_frame_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        await _read(data)
