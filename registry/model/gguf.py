"""GGUF header metadata for /api/show, /api/tags and config blobs, read as ollama's fs/ggml does.

Only the header is read — key/values and tensor descriptors, sequentially through a small chunk
buffer — never the tensor data, so a multi-gigabyte blob costs a few hundred kilobytes of reads.
(gguf.GGUFReader parses the same header but builds numpy views for every token string, which
takes seconds on a 50k vocabulary; /api/show is called far too often for that.)

The checks are ollama's: the magic, the array and dimension limits, the alignment, and that every
tensor lies inside the file, so a truncated download is reported instead of being served.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import gguf
import numpy as np

_CHUNK = 256 << 10
_MAX_ARRAY_SIZE = 64 << 20  # ollama's fs/gguf.MaxArraySize
_MAX_TENSOR_DIMS = 4
_DEFAULT_ALIGNMENT = 32

# GGUF value types, in the spec's numbering: struct format of the fixed-size ones.
_TYPE_UINT8, _TYPE_INT8, _TYPE_UINT16, _TYPE_INT16, _TYPE_UINT32, _TYPE_INT32 = range(6)
_TYPE_FLOAT32, _TYPE_BOOL, _TYPE_STRING, _TYPE_ARRAY, _TYPE_UINT64, _TYPE_INT64, _TYPE_FLOAT64 = range(6, 13)
_SCALAR_FORMATS = {
    _TYPE_UINT8: "B",
    _TYPE_INT8: "b",
    _TYPE_UINT16: "H",
    _TYPE_INT16: "h",
    _TYPE_UINT32: "I",
    _TYPE_INT32: "i",
    _TYPE_FLOAT32: "f",
    _TYPE_BOOL: "?",
    _TYPE_UINT64: "Q",
    _TYPE_INT64: "q",
    _TYPE_FLOAT64: "d",
}

# ollama drops these from model_info: the name is noise, the template is returned separately.
_HIDDEN_KEYS = frozenset({"general.name", "tokenizer.chat_template"})

# llama_ftype names as ollama prints them ("Q4_K_M", "F16"); gguf-py spells them MOSTLY_Q4_K_M.
_FILE_TYPE_NAMES = {
    t.value: t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    for t in gguf.LlamaFileType
    if t is not gguf.LlamaFileType.GUESSED
}
_TENSOR_TYPE_NAMES = {t.value: t.name for t in gguf.GGMLQuantizationType}
_TENSOR_SIZES = {t.value: sizes for t, sizes in gguf.GGML_QUANT_SIZES.items()}

# Go template actions, and what inside them is not an identifier reference.
_GO_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_GO_NON_CODE = re.compile(r"/\*.*?\*/|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|'(?:[^'\\]|\\.)*'", re.DOTALL)
_GO_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


class GGUFError(ValueError):
    """The file is not a GGUF model ollama could load: bad magic, truncated or inconsistent."""


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor descriptor; `offset` counts from the start of the tensor data."""

    name: str
    type: str  # ggml type name as ollama prints it ("Q4_1", "F32")
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """A GGUF header: key/values as plain Python values in file order, and tensor descriptors.

    Integers are int, floats are float (float32 values as the shortest decimal that identifies
    them, like ollama's JSON), strings are str (invalid UTF-8 replaced), arrays are lists.
    """

    version: int
    kv: dict[str, Any]
    tensors: tuple[GGUFTensor, ...]
    parameter_count: int  # sum of the tensors' element counts, what ollama reports
    data_offset: int  # where tensor data starts in the file
    types: dict[str, int] = field(default_factory=dict)  # each key's GGUF value type, as in the file

    @property
    def architecture(self) -> str:
        return self.kv.get("general.architecture", "unknown")

    def arch_value(self, key: str) -> Any:
        """An architecture-scoped key (`llama.context_length` for "context_length"), or None."""
        return self.kv.get(f"{self.architecture}.{key}")

    def _typed(self, key: str, kind: int) -> Any:
        """The value of `key` only if the file stores it with GGUF type `kind`, else None: ollama
        reads keys with Go type assertions, so a block count written as uint64 counts as absent."""
        return self.kv.get(key) if self.types.get(key) == kind else None

    def _arch_uint32(self, key: str) -> int:
        value = self._typed(f"{self.architecture}.{key}", _TYPE_UINT32)
        return value if value is not None else 0

    @property
    def kind(self) -> str:
        """`general.type` ("model", "adapter", "mmproj"…), "unknown" when absent, as ollama's KV.Kind."""
        value = self._typed("general.type", _TYPE_STRING)
        return value if value is not None else "unknown"

    @property
    def is_adapter(self) -> bool:
        """A LoRA adapter (llama.cpp's converter marks them `general.type = adapter`)."""
        return self.kind == "adapter"

    @property
    def is_projector(self) -> bool:
        """A multimodal projector rather than a language model, by ollama's rule: the file says so
        (`general.type` projector or mmproj), or it has vision blocks but no text blocks, or it is
        a `clip` file without text blocks that declares a vision or audio encoder."""
        if self.kind in ("projector", "mmproj"):
            return True
        text_blocks = self._arch_uint32("block_count")
        if text_blocks == 0 and self._arch_uint32("vision.block_count") > 0:
            return True
        encoders = (self._typed(f"{self.architecture}.has_{what}_encoder", _TYPE_BOOL) for what in ("vision", "audio"))
        return self.architecture == "clip" and text_blocks == 0 and any(encoders)

    @property
    def file_type(self) -> str:
        """ollama's quantization name; "unknown" for file_type 0 (F32) or missing, as in ollama."""
        value = self.kv.get("general.file_type")
        if not isinstance(value, int) or value <= 0:
            return "unknown"
        return _FILE_TYPE_NAMES.get(value, "unknown")

    @property
    def context_length(self) -> int | None:
        return self.arch_value("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self.arch_value("embedding_length")

    @property
    def vocab_size(self) -> int:
        """How many tokens the vocabulary holds (0 when the header does not say): the length of
        tokenizer.ggml.tokens, which /api/show hides, or the architecture's vocab_size."""
        tokens = self.kv.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list) and tokens:
            return len(tokens)
        size = self.arch_value("vocab_size")
        return size if isinstance(size, int) and size > 0 else 0

    @property
    def chat_template(self) -> str | None:
        """The Jinja template embedded by the converter, the fallback when there is no Go one."""
        return self.kv.get("tokenizer.chat_template") or None

    def kv_info(self, verbose: bool = False) -> dict[str, Any]:
        """Every key/value as /api/show prints a GGUF's (its `projector_info` as is): keys sorted
        (Go marshals maps so), general.parameter_count set to the tensor element count. Without
        `verbose` every non-empty array is None (JSON null), as ollama reads them with
        maxArraySize 0; empty arrays stay []."""
        info = {
            key: None if isinstance(value, list) and value and not verbose else value
            for key, value in self.kv.items()
        }
        info["general.parameter_count"] = self.parameter_count
        return dict(sorted(info.items()))

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """/api/show's `model_info`: `kv_info` without general.name and tokenizer.chat_template."""
        return {key: value for key, value in self.kv_info(verbose).items() if key not in _HIDDEN_KEYS}

    def show_tensors(self) -> list[dict[str, Any]]:
        """/api/show's `tensors` entries: name, type and shape of every tensor."""
        return [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in self.tensors]

    def config_fields(self) -> dict[str, Any]:
        """The config blob fields ollama's create fills from a GGUF model layer.

        ollama sets context_length/embedding_length in the config only for remote (cloud) models,
        so they are not here; read them from the `context_length`/`embedding_length` properties.
        """
        return {
            "model_format": "gguf",
            "model_family": self.architecture,
            "model_families": [self.architecture],
            "model_type": human_number(self.parameter_count),
            "file_type": self.file_type,
        }


def human_number(n: int) -> str:
    """ollama's format.HumanNumber: 134515008 → "134.52M", 3212749824 → "3.2B", 8e9 → "8B"."""
    for unit, scale, decimals in (("B", 1_000_000_000, 1), ("M", 1_000_000, 2)):
        if n >= scale:
            number = n / scale
            return f"{number:.0f}{unit}" if number.is_integer() else f"{number:.{decimals}f}{unit}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


class _HeaderReader:
    """Sequential little- or big-endian reads of the header through a chunk buffer.

    Lengths and counts come from the file, so each read is checked against the bytes left in the
    file before anything is allocated: a corrupt length fails fast instead of exhausting memory.
    """

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._size = size
        self.order = "<"  # set from the magic
        self._buf = b""
        self._pos = 0
        self._structs: dict[str, struct.Struct] = {}
        self.offset = 0  # bytes consumed from the start of the file

    def take(self, n: int) -> bytes:
        if n > self._size - self.offset:
            raise GGUFError("unexpected EOF")
        if self._pos + n > len(self._buf):
            rest = self._buf[self._pos :]
            self._buf = rest + self._f.read(max(n - len(rest), _CHUNK))
            self._pos = 0
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return data

    def scalar(self, fmt: str) -> Any:
        layout = self._structs.get(fmt)
        if layout is None:
            layout = self._structs[fmt] = struct.Struct(self.order + fmt)
        return layout.unpack(self.take(layout.size))[0]

    def string(self) -> str:
        return self.take(self.scalar("Q")).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == _TYPE_STRING:
            return self.string()
        if kind == _TYPE_ARRAY:
            return self.array()
        if kind == _TYPE_FLOAT32:
            return _shortest_float32(self.scalar("f"))
        if kind in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[kind])
        raise GGUFError(f"invalid type: {kind}")

    def array(self) -> list[Any]:
        kind = self.scalar("I")
        count = self.scalar("Q")
        if count > _MAX_ARRAY_SIZE:
            raise GGUFError(f"GGUF array size {count} exceeds maximum {_MAX_ARRAY_SIZE}")
        if kind == _TYPE_STRING:
            return [self.string() for _ in range(count)]
        if kind not in _SCALAR_FORMATS:
            raise GGUFError(f"invalid array type: {kind}")
        dtype = np.dtype(_SCALAR_FORMATS[kind]).newbyteorder(self.order)
        values = np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
        if kind == _TYPE_FLOAT32:
            return [float(text) for text in values.astype(str)]  # numpy prints float32 shortest
        return values.tolist()


def _shortest_float32(value: float) -> float:
    return float(str(np.float32(value)))


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF file's header. Blocking; callers run it in a worker thread.

    Raises GGUFError for anything ollama would refuse to load, with ollama's wording where it
    has one ("invalid file magic", "unexpected EOF", tensor bounds), and OSError if unreadable.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        reader = _HeaderReader(f, size)
        magic = reader.take(4)
        if magic == b"FUGG":  # ollama's big-endian magic
            reader.order = ">"
        elif magic != b"GGUF":
            raise GGUFError("invalid file magic")
        return _read_header(reader, size)


def _read_header(reader: _HeaderReader, size: int) -> GGUFInfo:
    version = reader.scalar("I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors = reader.scalar("Q")
    n_kv = reader.scalar("Q")

    kv: dict[str, Any] = {}
    types: dict[str, int] = {}
    for _ in range(n_kv):
        key = reader.string()
        types[key] = reader.scalar("I")
        kv[key] = reader.value(types[key])

    tensors = tuple(_read_tensor(reader) for _ in range(n_tensors))

    alignment = kv.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFError(f"invalid GGUF alignment: {alignment}")
    data_offset = -(-reader.offset // alignment) * alignment
    for tensor in tensors:
        end = data_offset + tensor.offset + tensor.nbytes
        if end > size:
            raise GGUFError(f'tensor "{tensor.name}" offset+size ({end}) exceeds file size ({size})')

    return GGUFInfo(
        version=version,
        kv=kv,
        tensors=tensors,
        parameter_count=sum(_elements(t.shape) for t in tensors),
        data_offset=data_offset,
        types=types,
    )


def _read_tensor(reader: _HeaderReader) -> GGUFTensor:
    name = reader.string()
    dims = reader.scalar("I")
    if dims > _MAX_TENSOR_DIMS:
        raise GGUFError(f'tensor "{name}" dimensions {dims} exceeds maximum {_MAX_TENSOR_DIMS}')
    shape = tuple(reader.scalar("Q") for _ in range(dims))
    kind = reader.scalar("I")
    offset = reader.scalar("Q")
    nbytes = _tensor_bytes(name, kind, shape)
    return GGUFTensor(name, _TENSOR_TYPE_NAMES[kind], shape, offset, nbytes)


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _tensor_bytes(name: str, kind: int, shape: tuple[int, ...]) -> int:
    """Bytes of tensor data from the type's block layout. A type without a known layout, or rows
    that are not whole blocks, is an error, as in ollama (which cannot load such a file either)."""
    if kind not in _TENSOR_SIZES:
        raise GGUFError(f'tensor "{name}" has unsupported type {kind}')
    block_size, type_size = _TENSOR_SIZES[kind]
    if shape and shape[0] % block_size:
        raise GGUFError(f'tensor "{name}" size overflow')
    return _elements(shape) // block_size * type_size


# --- capabilities ---------------------------------------------------------------------------------


def _template_fields(template: str) -> set[str]:
    """Lower-cased field and variable names a Go template references (ollama's Template.Vars),
    found in its actions with comments and string literals removed."""
    fields: set[str] = set()
    for action in _GO_ACTION.findall(template):
        code = _GO_NON_CODE.sub(" ", action)
        fields.update(name.lower() for name in _GO_FIELD.findall(code))
    return fields


def _chat_template_capabilities(chat_template: str) -> list[str]:
    """ollama's substring checks on a GGUF Jinja chat template."""
    caps = []
    if "tools" in chat_template or "tool_call" in chat_template:
        caps.append("tools")
    split_think = "content.split('</think>')" in chat_template or 'content.split("</think>")' in chat_template
    if ("<think>" in chat_template and "</think>" in chat_template) or (
        split_think and "reasoning_content" not in chat_template and "<SPECIAL_12>" not in chat_template
    ):
        caps.append("thinking")
    return caps


def _go_template_capabilities(template: str) -> list[str]:
    fields = _template_fields(template)
    return [
        cap for cap, field in (("tools", "tools"), ("insert", "suffix"), ("thinking", "thinking")) if field in fields
    ]


def capabilities(info: GGUFInfo, template_text: str | None, *, has_projector: bool = False) -> list[str]:
    """What a GGUF model supports, in ollama's order, as /api/show lists and requests check.

    `template_text` is the model's Go TEMPLATE layer (None without one). Checked, like ollama:
      - without a Go template, the GGUF chat template: "tools" if it mentions tools/tool_call,
        "thinking" if it has <think>…</think> (or splits content at </think>);
      - "embedding" if the GGUF has `<arch>.pooling_type`, else "completion";
      - "vision" for `<arch>.vision.block_count` or a projector layer, "audio" for
        `<arch>.audio.block_count`;
      - with a Go template: "tools" if it references .Tools, "insert" for .Suffix, "thinking"
        for .Thinking (ollama also requires the reference to sit between literal tags inside a
        range over .Messages; every library template that references .Thinking does);
      - "thinking" for the gpt-oss family.
    """
    caps: list[str] = []
    if not template_text and info.chat_template:
        caps += _chat_template_capabilities(info.chat_template)
    caps.append("embedding" if info.arch_value("pooling_type") is not None else "completion")
    if info.arch_value("vision.block_count") is not None:
        caps.append("vision")
    if info.arch_value("audio.block_count") is not None:
        caps.append("audio")
    if has_projector:
        caps.append("vision")
    if template_text:
        caps += _go_template_capabilities(template_text)
    if info.architecture in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    return list(dict.fromkeys(caps))


def list_capabilities(info: GGUFInfo | None, template_text: str | None, config: Mapping[str, Any], *,
                      has_projector: bool = False) -> list[str]:
    """What /api/tags lists, as ollama's model list builds it (server/model_list_cache.go).

    A cheaper cousin of `capabilities`: from the GGUF header (None when there is none to read),
    "vision"/"audio" in the order their `<arch>.*.block_count` keys come, then "embedding" for
    `<arch>.pooling_type` or else "completion"; the config's own `capabilities`; from the Go
    template "tools", "insert" and "thinking" (none without a template layer: ollama's default
    template is `{{ .Prompt }}`, and the GGUF chat template is not read here); "thinking" for the
    gpt-oss family; "vision" for a projector layer. Each once, in that order.
    """
    caps: list[str] = []
    if info is not None:
        arch = info.architecture
        media = {f"{arch}.vision.block_count": "vision", f"{arch}.audio.block_count": "audio"}
        caps += [media[key] for key in info.kv if key in media]
        caps.append("embedding" if info.arch_value("pooling_type") is not None else "completion")
    declared = config.get("capabilities")
    if isinstance(declared, list):
        caps += [c for c in declared if isinstance(c, str) and c]
    if template_text:
        caps += _go_template_capabilities(template_text)
    if config.get("model_family") in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    if has_projector:
        caps.append("vision")
    return list(dict.fromkeys(caps))
