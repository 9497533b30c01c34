"""Option layering, keep_alive parsing and stop-string streaming: the pure parts, no model."""

from __future__ import annotations

import pytest

from runner.engine.textstream import TextStream
from runner.errors import RequestError
from runner.options import FOREVER, build_options, parse_go_duration, parse_keep_alive


def test_defaults_are_ollamas() -> None:
    options = build_options(0)
    assert options.runner.num_ctx == 4096
    assert (options.temperature, options.top_k, options.top_p, options.num_keep) == (0.8, 40, 0.9, 4)
    assert (options.repeat_last_n, options.num_predict, options.seed) == (64, -1, -1)
    assert (options.runner.num_batch, options.runner.num_gpu) == (512, -1)


def test_later_layers_win_and_unknown_keys_are_ignored() -> None:
    options = build_options(2048, {"temperature": 0.2, "stop": ["a"]}, {"temperature": 0, "bogus": 1, "seed": 7.0})
    assert options.runner.num_ctx == 2048
    assert options.temperature == 0.0
    assert options.stop == ("a",)
    assert options.seed == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k": "many"}, 'option "top_k" must be of type integer'),
        ({"top_k": True}, 'option "top_k" must be of type integer'),
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"stop": "x"}, 'option "stop" must be of type array'),
        ({"stop": [1]}, 'option "stop" must be of an array of strings'),
    ],
)
def test_wrong_option_types_are_400(options: dict, message: str) -> None:
    with pytest.raises(RequestError) as exc:
        build_options(0, options)
    assert (exc.value.status, exc.value.message) == (400, message)


def test_go_durations() -> None:
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("250ms") == 0.25
    assert parse_go_duration("0") == 0
    assert parse_go_duration("-1m") == -60
    with pytest.raises(ValueError, match='time: missing unit in duration "10"'):
        parse_go_duration("10")
    with pytest.raises(ValueError, match='time: invalid duration "abc"'):
        parse_go_duration("abc")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (10, 10.0), (1.5, 1.5), ("5m", 300.0), ("0", 0.0), (-1, FOREVER), ("-1m", FOREVER)],
)
def test_keep_alive_forms(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize(("value", "message"), [("10", 'time: missing unit in duration "10"'), (True, "Unsupported")])
def test_bad_keep_alive_is_400(value: object, message: str) -> None:
    with pytest.raises(RequestError) as exc:
        parse_keep_alive(value)
    assert exc.value.status == 400
    assert message in exc.value.message


def test_stop_strings_across_tokens_are_cut() -> None:
    stream = TextStream(("<|end|>",))
    released = [stream.feed(piece.encode()) for piece in ("Hello", " wor", "ld<|e", "nd|>more")]
    assert "".join(released) == "Hello world"
    assert stream.stopped and stream.matched == "<|end|>"
    assert stream.flush() == ""


def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    stream = TextStream(("STOP",))
    assert stream.feed(b"ab ST") == "ab "
    assert stream.feed(b"AR") == "STAR"
    assert stream.feed(b" ST") == " "
    assert stream.flush() == "ST"
    assert not stream.stopped and stream.matched == ""


def test_split_utf8_characters_wait_for_their_last_byte() -> None:
    stream = TextStream(())
    data = "é".encode()
    assert stream.feed(data[:1]) == ""
    assert stream.feed(data[1:]) == "é"
