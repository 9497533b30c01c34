"""ollama's template autodetection: a GGUF's Jinja chat template → one of ollama's Go templates.

`ollama create` from a GGUF without a TEMPLATE compares `tokenizer.chat_template` with the Jinja
templates in its index (`templates/index.json`, shipped here as package data, see the README
there) by Levenshtein distance over code points; the closest one wins (the first in index order
on a tie) if its distance is under 100. The model then gets that name's Go template as its
template layer and the template's stop parameters as its params layer. The layer bytes are the
files' bytes (CRLF made LF, as ollama does) and the parameters as ollama re-encodes them (only
`stop` survives its struct), so the digests are the ones ollama writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from rapidfuzz.distance import Levenshtein

MAX_DISTANCE = 99  # ollama accepts the closest template only when its distance is below 100


@dataclass(frozen=True)
class KnownTemplate:
    name: str
    jinja: str  # the chat template a GGUF carries, as listed in the index
    text: bytes  # the Go template: the template layer's exact bytes
    parameters: dict[str, Any] | None  # what ollama reads of <name>.json: {"stop": […]} or None


@cache
def known_templates() -> tuple[KnownTemplate, ...]:
    """The index in its order, each entry with its Go template and parameters (read once)."""
    folder = resources.files("registry.model") / "templates"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    out = []
    for entry in index:
        name = entry["name"]
        text = (folder / f"{name}.gotmpl").read_bytes().replace(b"\r\n", b"\n")
        params_file = folder / f"{name}.json"
        parameters = None
        if params_file.is_file():
            parameters = {"stop": json.loads(params_file.read_text(encoding="utf-8")).get("stop")}
        out.append(KnownTemplate(name, entry["template"], text, parameters))
    return tuple(out)


def detect(chat_template: str) -> KnownTemplate | None:
    """The template ollama would pick for this GGUF chat template, or None when none is close."""
    best: KnownTemplate | None = None
    best_distance = MAX_DISTANCE + 1
    for candidate in known_templates():
        # past the cutoff rapidfuzz stops early and answers cutoff + 1, which can never win
        distance = Levenshtein.distance(chat_template, candidate.jinja, score_cutoff=best_distance - 1)
        if distance < best_distance:
            best, best_distance = candidate, distance
            if distance == 0:
                break
    return best
