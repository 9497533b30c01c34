"""GGUF header reading, /api/show model_info, config fields and capabilities, against the real
SmolLM2 file and small GGUFs written with the gguf package."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from registry.model import gguf as gguf_info
from registry.model.gguf import GGUFError, GGUFInfo, capabilities, human_number, read_gguf_info
from tests.support.models import smollm2_gguf, write_gguf

SMOLLM2_PARAMETERS = 134_515_008


@pytest.fixture(scope="module")
def smollm2() -> GGUFInfo:
    return read_gguf_info(smollm2_gguf())


def spy_on_reads(monkeypatch: pytest.MonkeyPatch, *, sizes_requested: bool = False) -> list[int]:
    """Make gguf_info open files that record each read: bytes returned, or sizes asked for."""
    log: list[int] = []

    class Recording(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            log.append(size if sizes_requested else len(data))
            return data

    monkeypatch.setattr(gguf_info, "open", lambda path, mode: Recording(path, "r"), raising=False)
    return log


# --- the real model ---------------------------------------------------------------------------------


def test_smollm2_header(smollm2: GGUFInfo) -> None:
    assert smollm2.version == 3
    assert smollm2.architecture == "llama"
    assert smollm2.file_type == "Q4_1"
    assert smollm2.parameter_count == SMOLLM2_PARAMETERS
    assert smollm2.context_length == 8192
    assert smollm2.embedding_length == 576
    assert smollm2.chat_template is not None and "<|im_start|>" in smollm2.chat_template
    assert len(smollm2.tensors) == 272
    assert smollm2.kv["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(smollm2.kv["tokenizer.ggml.merges"]) == 48_900


def test_smollm2_config_fields(smollm2: GGUFInfo) -> None:
    # format.HumanNumber prints two decimals below a billion: 134,515,008 → "134.52M", not "135M".
    assert smollm2.config_fields() == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "134.52M",
        "file_type": "Q4_1",
    }


def test_smollm2_model_info_like_ollama_show(smollm2: GGUFInfo) -> None:
    info = smollm2.model_info()
    assert list(info) == sorted(info)
    assert info["general.architecture"] == "llama"
    assert info["general.parameter_count"] == SMOLLM2_PARAMETERS
    assert info["llama.context_length"] == 8192
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32 read as its shortest decimal
    assert info["llama.rope.freq_base"] == 100000.0
    assert info["tokenizer.ggml.add_bos_token"] is False
    assert info["tokenizer.ggml.model"] == "gpt2"
    # every non-empty array is null unless verbose, even short ones
    assert info["tokenizer.ggml.tokens"] is None
    assert info["tokenizer.ggml.token_type"] is None
    assert info["general.languages"] is None
    # ollama removes these two: the chat template is served as `template`, the name is noise
    assert "tokenizer.chat_template" not in info
    assert "general.name" not in info


def test_smollm2_verbose_model_info_has_arrays(smollm2: GGUFInfo) -> None:
    info = smollm2.model_info(verbose=True)
    assert len(info["tokenizer.ggml.tokens"]) == 49_152
    assert info["tokenizer.ggml.token_type"][:2] == [3, 3]
    assert info["general.languages"] == ["en"]
    assert "tokenizer.chat_template" not in info


def test_smollm2_tensors(smollm2: GGUFInfo) -> None:
    assert smollm2.show_tensors()[:3] == [
        {"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]},
        {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [576]},
        {"name": "blk.0.ffn_down.weight", "type": "Q4_1", "shape": [1536, 576]},
    ]
    assert smollm2.data_offset % 32 == 0
    last = max(smollm2.tensors, key=lambda t: t.offset)
    assert smollm2.data_offset + last.offset + last.nbytes <= smollm2_gguf().stat().st_size


def test_smollm2_capabilities(smollm2: GGUFInfo) -> None:
    assert capabilities(smollm2, None) == ["completion"]


def test_reads_only_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = spy_on_reads(monkeypatch)
    info = read_gguf_info(smollm2_gguf())
    assert sum(reads) < info.data_offset + (1 << 20)  # the header plus at most one read-ahead chunk
    assert smollm2_gguf().stat().st_size > 50 * sum(reads)


# --- synthetic files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(None, "unknown"), (0, "unknown"), (1, "F16"), (2, "Q4_0"), (7, "Q8_0"), (15, "Q4_K_M"), (32, "BF16")],
)
def test_file_type_names(tmp_path: Path, file_type: int | None, name: str) -> None:
    def kv(w: gguf.GGUFWriter) -> None:
        if file_type is not None:
            w.add_file_type(file_type)

    assert read_gguf_info(write_gguf(tmp_path / "m.gguf", kv=kv)).file_type == name


def test_value_types_and_parameter_count(tmp_path: Path) -> None:
    def kv(w: gguf.GGUFWriter) -> None:
        w.add_context_length(2048)
        w.add_int8("t.i8", -3)
        w.add_uint16("t.u16", 65535)
        w.add_int64("t.i64", -(2**40))
        w.add_float64("t.f64", 0.1)
        w.add_float32("t.f32", 0.1)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "héllo")
        w.add_array("t.floats", [0.5, 0.1])

    path = write_gguf(
        tmp_path / "m.gguf",
        kv=kv,
        tensors={"a": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(5, dtype=np.float16)},
    )
    info = read_gguf_info(path)
    assert info.context_length == 2048
    assert info.kv["t.i8"] == -3 and info.kv["t.u16"] == 65535 and info.kv["t.i64"] == -(2**40)
    assert info.kv["t.f64"] == 0.1 and info.kv["t.f32"] == 0.1
    assert info.kv["t.bool"] is True and info.kv["t.str"] == "héllo"
    assert info.kv["t.floats"] == [0.5, 0.1]
    assert info.parameter_count == 17
    assert info.model_info()["t.floats"] is None
    assert [(t.name, t.type, t.shape) for t in info.tensors] == [("a", "F32", (4, 3)), ("b", "F16", (5,))]


def test_empty_array_stays_a_list(tmp_path: Path) -> None:
    """gguf-py refuses to write empty arrays, so this header is built by hand."""

    def string(text: str) -> bytes:
        return len(text).to_bytes(8, "little") + text.encode()

    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (2).to_bytes(8, "little")
    header += string("general.architecture") + (8).to_bytes(4, "little") + string("llama")
    header += string("t.empty") + (9).to_bytes(4, "little") + (5).to_bytes(4, "little") + bytes(8)
    path = tmp_path / "m.gguf"
    path.write_bytes(header)
    info = read_gguf_info(path)
    assert info.model_info() == {"general.architecture": "llama", "general.parameter_count": 0, "t.empty": []}


def _chatty(template: str) -> Callable[[gguf.GGUFWriter], None]:
    return lambda w: w.add_chat_template(template)


@pytest.mark.parametrize(
    ("arch", "kv", "go_template", "projector", "expected"),
    [
        ("llama", None, None, False, ["completion"]),
        ("bert", lambda w: w.add_pooling_type(gguf.PoolingType.MEAN), None, False, ["embedding"]),
        ("mllama", lambda w: w.add_uint32("mllama.vision.block_count", 8), None, False, ["completion", "vision"]),
        ("llama", None, None, True, ["completion", "vision"]),
        ("gptoss", None, None, False, ["completion", "thinking"]),
        ("llama", _chatty("{% if tools %}{{ tools | tojson }}{% endif %}"), None, False, ["tools", "completion"]),
        ("qwen3", _chatty("<think>\n{{ reasoning }}\n</think>"), None, False, ["thinking", "completion"]),
        # a Go template takes over from the GGUF's chat template
        ("llama", _chatty("{% if tools %}{% endif %}"), "{{ .Prompt }}", False, ["completion"]),
        ("llama", None, "{{ if .Tools }}{{ range $.Tools }}{{ . }}{{ end }}{{ end }}", False, ["completion", "tools"]),
        ("llama", None, "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>", False, ["completion", "insert"]),
        (
            "llama",
            None,
            "{{ range .Messages }}<think>{{ .Thinking }}</think>{{ end }}",
            False,
            ["completion", "thinking"],
        ),
        # mentions outside actions, in strings or in comments are not references
        ("llama", None, 'Use .Tools wisely {{ "call .Tools" }}{{/* .Suffix */}}', False, ["completion"]),
    ],
)
def test_capabilities(
    tmp_path: Path,
    arch: str,
    kv: Callable[[gguf.GGUFWriter], None] | None,
    go_template: str | None,
    projector: bool,
    expected: list[str],
) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", arch=arch, kv=kv))
    assert capabilities(info, go_template, has_projector=projector) == expected


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_500, "2K"),
        (22_000, "22K"),
        (1_000_000, "1M"),
        (SMOLLM2_PARAMETERS, "134.52M"),
        (494_032_768, "494.03M"),
        (1_000_000_000, "1B"),
        (3_212_749_824, "3.2B"),
        (8_030_261_248, "8.0B"),
        (70_553_706_496, "70.6B"),
    ],
)
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


# --- broken files -----------------------------------------------------------------------------------


def _copy_prefix(path: Path, size: int) -> Path:
    with open(smollm2_gguf(), "rb") as src:
        path.write_bytes(src.read(size))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "unexpected EOF"),
        (b"GG", "unexpected EOF"),
        (b"<html>not a model</html>", "invalid file magic"),
        (b"\x00" * 64, "invalid file magic"),
        (b"GGUF" + (1).to_bytes(4, "little") + b"\x00" * 16, "unsupported GGUF version 1"),
    ],
)
def test_not_gguf(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "blob"
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=f"^{message}$"):
        read_gguf_info(path)


def test_truncated_header(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match=r"^unexpected EOF$"):
        read_gguf_info(_copy_prefix(tmp_path / "blob", 100_000))


def test_truncated_tensor_data(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match=r'^tensor ".+" offset\+size \(\d+\) exceeds file size \(5000000\)$'):
        read_gguf_info(_copy_prefix(tmp_path / "blob", 5_000_000))


def test_corrupt_string_length_fails_without_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    path = tmp_path / "blob"
    path.write_bytes(header + (2**62).to_bytes(8, "little") + b"key")
    requested = spy_on_reads(monkeypatch, sizes_requested=True)
    with pytest.raises(GGUFError, match=r"^unexpected EOF$"):
        read_gguf_info(path)
    assert all(n <= 1 << 20 for n in requested)


def test_gguf_error_is_a_value_error() -> None:
    assert issubclass(GGUFError, ValueError)
