"""ollama's template autodetection: the closest known Jinja template under distance 100 wins."""

from __future__ import annotations

import hashlib

from registry.model.chat_templates import detect, known_templates
from registry.model.gguf import read_gguf_info
from tests.support.models import smollm2_gguf

# sha256 of ollama's template/llama3-instruct.gotmpl at commit fb3076099.
OLLAMA_LLAMA3_DIGEST = "61dc7b1a77154f4015bbf548fb63b33550162cfd5d6cbf59b7e7843ece99a49e"


def test_every_known_template_detects_its_own_name() -> None:
    templates = known_templates()
    assert len(templates) == 37 and len({t.name for t in templates}) == 19
    for template in templates:
        assert detect(template.jinja).name == template.name
        assert template.parameters is not None and template.parameters["stop"]


def test_smollm2s_chat_template_is_chatml() -> None:
    found = detect(read_gguf_info(smollm2_gguf()).chat_template)
    assert found is not None and found.name == "chatml"
    assert found.parameters == {"stop": ["<|im_start|>", "<|im_end|>"]}


def test_near_misses_match_and_distant_texts_do_not() -> None:
    chatml = next(t for t in known_templates() if t.name == "chatml")
    assert detect(chatml.jinja + " " * 99).name == "chatml"
    assert detect(chatml.jinja + "x" * 200) is None
    assert detect("") is None


def test_the_template_bytes_are_ollamas_files() -> None:
    llama3 = next(t for t in known_templates() if t.name == "llama3-instruct")
    assert hashlib.sha256(llama3.text).hexdigest() == OLLAMA_LLAMA3_DIGEST


def test_parameters_keep_only_what_ollamas_struct_reads() -> None:
    gemma3 = next(t for t in known_templates() if t.name == "gemma3-instruct")
    assert set(gemma3.parameters) == {"stop"}  # the file also sets temperature; ollama drops it
