"""Model names and digests follow ollama's rules (protocol doc §2)."""

from __future__ import annotations

import pytest

from registry.model.names import Digest, InvalidDigestError, InvalidNameError, ModelName


@pytest.mark.parametrize(
    ("text", "host", "ns", "model", "tag", "shortest"),
    [
        ("gemma", "registry.ollama.ai", "library", "gemma", "latest", "gemma:latest"),
        ("gemma:2b", "registry.ollama.ai", "library", "gemma", "2b", "gemma:2b"),
        ("jdoe/mymodel", "registry.ollama.ai", "jdoe", "mymodel", "latest", "jdoe/mymodel:latest"),
        ("myhost:8080/library/gemma:2b", "myhost:8080", "library", "gemma", "2b", "myhost:8080/library/gemma:2b"),
        ("http://myhost:8080/library/gemma", "myhost:8080", "library", "gemma", "latest",
         "myhost:8080/library/gemma:latest"),
        ("registry.ollama.ai/library/llama3.2:3b", "registry.ollama.ai", "library", "llama3.2", "3b", "llama3.2:3b"),
        ("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M", "hf.co", "bartowski",
         "SmolLM2-135M-Instruct-GGUF", "Q4_K_M", "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"),
    ],
)
def test_parse_table(text: str, host: str, ns: str, model: str, tag: str, shortest: str) -> None:
    name = ModelName.parse(text)
    assert (name.host, name.namespace, name.model, name.tag) == (host, ns, model, tag)
    assert name.display_shortest() == shortest


def test_scheme_is_parsed_but_not_part_of_identity() -> None:
    name = ModelName.parse("http://myhost:8080/library/gemma")
    assert name.scheme == "http"
    assert name.key == ModelName.parse("myhost:8080/library/gemma").key


def test_case_insensitive_key_keeps_display_case() -> None:
    a, b = ModelName.parse("Gemma:2B"), ModelName.parse("gemma:2b")
    assert a.key == b.key
    assert a.display_shortest() == "Gemma:2B"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "myhost:8080/gemma:2b",  # namespace may not contain ':'
        "my.ns/gemma",  # ... nor '.'
        "../../etc",
        "../etc/passwd",
        "library/../../x",
        "/absolute",
        "a/b/c/d",
        "model:",
        ":tag",
        "-leading-dash",
        ".hidden",
        "sp ace",
        "semi;colon",
        "x" * 81,
        "ns/" + "m" * 81,
        "model:" + "t" * 81,
        "h" * 351 + "/ns/model",
        "m\u00e9t\u00e9o",  # non-ASCII letters are not word characters to ollama
    ],
)
def test_invalid_names_are_rejected(text: str) -> None:
    with pytest.raises(InvalidNameError):
        ModelName.parse(text)


def test_longest_valid_parts_are_accepted() -> None:
    name = ModelName.parse("h" * 350 + "/" + "n" * 80 + "/" + "m" * 80 + ":" + "t" * 80)
    assert len(name.host) == 350


def test_digest_forms() -> None:
    hexd = "ab" * 32
    assert Digest.parse(f"sha256:{hexd}") == Digest.parse(f"sha256-{hexd.upper()}")
    assert Digest.parse(f"sha256:{hexd}").filename == f"sha256-{hexd}"
    for bad in ("sha256:" + "g" * 64, "sha256:abc", "md5:" + "a" * 64, "sha256:" + "a" * 64 + "/../x", ""):
        with pytest.raises(InvalidDigestError):
            Digest.parse(bad)
