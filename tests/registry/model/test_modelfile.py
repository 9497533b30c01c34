"""Modelfile parsing and /api/show rendering against ollama's behaviour (parser/parser.go,
server/routes.go ShowHandler, server/images.go Model.String)."""

from __future__ import annotations

import logging

import pytest

from registry.model.modelfile import (
    DEFAULT_TEMPLATE,
    Modelfile,
    ModelfileError,
    format_parameters,
    parse_modelfile,
    parse_parameters,
    render_modelfile,
)

INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", '
    '"parser", "parameter", "message", or "requires"'
)
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'

LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)

FULL_MODELFILE = f'''# A Modelfile using every command
FROM llama3.2:3b
adapter ./lora.gguf
Draft ./draft.gguf
TEMPLATE """{LLAMA3_TEMPLATE}"""
system You are Mario from "Super Mario Bros."
RENDERER qwen3-coder
PARSER qwen3-coder
REQUIRES 0.14.0
PARAMETER temperature 0.7
PARAMETER num_ctx 4096
PARAMETER use_mmap false
PARAMETER stop <|start_header_id|>
PARAMETER stop "<|eot_id|> "
    # indented comments are comments too
MESSAGE user Is Toronto in Canada?
MESSAGE assistant """yes,
it is"""
LICENSE """Llama 3.2 Community License
"Agreement" means the terms."""
LICENSE MIT
'''


def commands(text: str | bytes) -> list[tuple[str, str]]:
    return parse_modelfile(text).commands


def error(text: str) -> str:
    with pytest.raises(ModelfileError) as exc:
        parse_modelfile(text)
    return str(exc.value)


# --- parsing ----------------------------------------------------------------------------------------


def test_every_command_in_order() -> None:
    assert commands(FULL_MODELFILE) == [
        ("from", "llama3.2:3b"),
        ("adapter", "./lora.gguf"),
        ("draft", "./draft.gguf"),
        ("template", LLAMA3_TEMPLATE),
        ("system", 'You are Mario from "Super Mario Bros."'),
        ("renderer", "qwen3-coder"),
        ("parser", "qwen3-coder"),
        ("requires", "0.14.0"),
        ("temperature", "0.7"),
        ("num_ctx", "4096"),
        ("use_mmap", "false"),
        ("stop", "<|start_header_id|>"),
        ("stop", "<|eot_id|> "),
        ("message", "user Is Toronto in Canada?"),
        ("message", "assistant yes,\nit is"),
        ("license", 'Llama 3.2 Community License\n"Agreement" means the terms.'),
        ("license", "MIT"),
    ]


def test_modelfile_parameters_are_typed() -> None:
    assert parse_modelfile(FULL_MODELFILE).parameters == {
        "temperature": 0.7,
        "num_ctx": 4096,
        "use_mmap": False,
        "stop": ["<|start_header_id|>", "<|eot_id|> "],
    }


@pytest.mark.parametrize("word", ["FROM", "from", "From", "fRoM"])
def test_command_words_are_case_insensitive(word: str) -> None:
    assert commands(f"{word} foo\nSYSTEM hi") == [("from", "foo"), ("system", "hi")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FROM "FOO  BAR  "', [("from", "FOO  BAR  ")]),
        ("FROM     FOOO BAR    ", [("from", "FOOO BAR")]),
        ("FROM /what/is/the path ", [("from", "/what/is/the path")]),
        ("FROM llama3:7b-instruct-q4_K_M", [("from", "llama3:7b-instruct-q4_K_M")]),
        ("PARAMETER seed 1\nFROM foo", [("seed", "1"), ("from", "foo")]),
        ("\n\n  \tFROM foo\n\n", [("from", "foo")]),
        ("FROM foo\r\nSYSTEM a b\r\n", [("from", "foo"), ("system", "a b")]),
        ("FROM test\n\tSYSTEM 你好👋", [("from", "test"), ("system", "你好👋")]),
        ("FROM foo\nSYSTEM\tx # not a comment", [("from", "foo"), ("system", "x # not a comment")]),
    ],
)
def test_values_are_trimmed_and_keep_inner_spaces(text: str, expected: list[tuple[str, str]]) -> None:
    assert commands(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"""\nThis is a\nmultiline system.\n"""', "\nThis is a\nmultiline system.\n"),
        ('"""\nThis is a\nmultiline system."""', "\nThis is a\nmultiline system."),
        ('"""This is a multiline system."""', "This is a multiline system."),
        ('"""\nwith "quotes".\n"""', '\nwith "quotes".\n'),
        ('""""""', ""),
        ('""', ""),
        ('"\'"', "'"),
        ('"""\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""', "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'"),
        ('"line one\nline two"', "line one\nline two"),
        ('"""   padded   """   ', "   padded   "),
    ],
)
def test_quoted_values(value: str, expected: str) -> None:
    assert commands(f"FROM foo\nSYSTEM {value}\n") == [("from", "foo"), ("system", expected)]


def test_triple_quoted_template_keeps_crlf_inside_quotes() -> None:
    assert commands('FROM foo\r\nTEMPLATE """a\r\nb"""\r\n')[1] == ("template", "a\r\nb")


def test_long_quoted_value_with_lines_ending_in_quotes() -> None:
    license_text = "\n".join(f'{i}. "Term" means "this"' if i % 3 else f"{i}. plain line" for i in range(3000))
    parsed = parse_modelfile(f'FROM foo\nLICENSE """{license_text}"""\nSYSTEM after')
    assert parsed.commands[1:] == [("license", license_text), ("system", "after")]


def test_comments_only_at_line_start() -> None:
    text = "# leading comment\nFROM foo # trailing text belongs to the value\n# FROM bar\n"
    assert commands(text) == [("from", "foo # trailing text belongs to the value")]


def test_messages_keep_role_and_content() -> None:
    text = 'FROM foo\nMESSAGE system """\nYou are a parser.\n"""\nMESSAGE user Hey there!'
    assert commands(text)[1:] == [("message", "system \nYou are a parser.\n"), ("message", "user Hey there!")]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")],
)
def test_bytes_with_a_bom_are_decoded_like_ollama(data: bytes, encoding: str) -> None:
    raw = data + "FROM bob\nPARAMETER num_ctx 4096\nSYSTEM 你好👋\n".encode(encoding)
    assert commands(raw) == [("from", "bob"), ("num_ctx", "4096"), ("system", "你好👋")]


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM foo\nBADCOMMAND param1 value1\n", f"(line 2): {INVALID_COMMAND}"),
        ("\nFROM foo\nBADCOMMAND param1 value1\n", f"(line 3): {INVALID_COMMAND}"),
        ("FROM foo\nSYSTEM-X hi\n", f"(line 2): {INVALID_COMMAND}"),
        ("FROM\nfoo", f"(line 2): {INVALID_COMMAND}"),
        ("FROM foo\nMESSAGE badguy I'm a bad guy!\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE tool result\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nMESSAGE User hi\n", f"(line 2): {INVALID_ROLE}"),
        ("FROM foo\nPARAMETER param1\n", "unexpected EOF: param1"),
        ("FROM foo\nMESSAGE system\n", "unexpected EOF: system"),
        ("FROM foo\nMESSAGE system", "unexpected EOF"),
        ("FROM foo\nSYSTEM", "unexpected EOF"),
        ('FROM foo\nSYSTEM """This is a multiline system.""\n', "unexpected EOF"),
        ('FROM foo\nSYSTEM "\n', "unexpected EOF"),
        ('FROM foo\nTEMPLATE """{{ .Prompt }}\n', "unexpected EOF"),
        ("", "no FROM line"),
        ("# only a comment\n", "no FROM line"),
        ("PARAMETER seed 1", "no FROM line"),
    ],
)
def test_parse_errors_use_ollama_messages(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PARAMETER temprature 0.7", "unknown parameter 'temprature'"),
        ("PARAMETER Temperature 0.7", "unknown parameter 'Temperature'"),
        ("PARAMETER numa true", "unknown parameter 'numa'"),
        ("PARAMETER num_ctx 4k", "invalid int value [4k]"),
        ("PARAMETER num_ctx 4096.0", "invalid int value [4096.0]"),
        ("PARAMETER seed 9223372036854775808", "invalid int value [9223372036854775808]"),
        ("PARAMETER temperature warm", "invalid float value [warm]"),
        ("PARAMETER temperature 1e39", "invalid float value [1e39]"),
        ("PARAMETER use_mmap yes", "invalid bool value [yes]"),
        ("REQUIRES latest", "requires must be a valid semver (e.g. 0.14.0)"),
        ("REQUIRES 0.14.0.1", "requires must be a valid semver (e.g. 0.14.0)"),
    ],
)
def test_create_time_checks(line: str, message: str) -> None:
    assert error(f"FROM foo\n{line}\n") == message


@pytest.mark.parametrize("version", ["0.14.0", "v0.14.0", "1", "1.2", "0.14.0-rc2", "1.0.0+build.5"])
def test_requires_accepts_semver(version: str) -> None:
    assert commands(f"FROM foo\nREQUIRES {version}")[1] == ("requires", version)


def test_modelfile_error_is_a_value_error() -> None:
    assert issubclass(ModelfileError, ValueError)


# --- parameters -------------------------------------------------------------------------------------


def test_parse_parameters_types_like_go() -> None:
    pairs = [
        ("num_ctx", "8192"),
        ("num_gpu", "-1"),
        ("main_gpu", "+1"),
        ("use_mmap", "T"),
        ("seed", "42"),
        ("top_k", "40"),
        ("top_p", "0.9"),
        ("min_p", ".05"),
        ("temperature", "1"),
        ("repeat_penalty", "1.1"),
        ("presence_penalty", "1e-3"),
        ("frequency_penalty", "0.1234567891"),
        ("stop", "<|im_end|>"),
        ("num_ctx", "2048"),
        ("stop", "\n"),
    ]
    params = parse_parameters(pairs)
    assert params == {
        "num_ctx": 2048,
        "num_gpu": -1,
        "main_gpu": 1,
        "use_mmap": True,
        "seed": 42,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "temperature": 1.0,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.001,
        "frequency_penalty": 0.12345679,  # float32 precision, as Go marshals it
        "stop": ["<|im_end|>", "\n"],
    }
    assert type(params["seed"]) is int and type(params["temperature"]) is float


def test_deprecated_parameters_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="registry.model.modelfile"):
        params = parse_parameters([("mirostat", "2"), ("penalize_newline", "true"), ("seed", "3")])
    assert params == {"seed": 3}
    assert "parameter mirostat is deprecated" in caplog.text


def test_float32_edges() -> None:
    assert parse_parameters([("temperature", "3.4028235e38")]) == {"temperature": 3.4028235e38}
    assert parse_parameters([("temperature", "1e-50")]) == {"temperature": 0.0}


# --- /api/show text ---------------------------------------------------------------------------------


def test_format_parameters_pads_keys_and_uses_go_syntax() -> None:
    params = {
        "stop": ["<|start_header_id|>", "<|eot_id|>", 'say "hi"\n'],
        "temperature": 0.6,
        "num_ctx": 4096,
        "seed": 1_000_000,
        "use_mmap": False,
    }
    assert format_parameters(params) == "\n".join(
        [
            'stop                           "<|start_header_id|>"',
            'stop                           "<|eot_id|>"',
            'stop                           "say \\"hi\\"\\n"',
            "temperature                    0.6",
            "num_ctx                        4096",
            "seed                           1e+06",
            "use_mmap                       false",
        ]
    )
    assert format_parameters({}) == ""


def test_render_modelfile_matches_ollama_show() -> None:
    text = render_modelfile(
        from_line="/root/.ollama/models/blobs/sha256-dde5aa3fc5ff",
        short_name="llama3.2:latest",
        template=LLAMA3_TEMPLATE,
        system="",
        params={"stop": ["<|start_header_id|>", "<|eot_id|>"], "temperature": 0.6, "num_ctx": 1e6},
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 'Say "hello"\n'}],
        license=["LLAMA 3.2 COMMUNITY LICENSE", " padded"],
        adapters=["/root/.ollama/models/blobs/sha256-aaaa"],
    )
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM llama3.2:latest\n"
        "\n"
        "FROM /root/.ollama/models/blobs/sha256-dde5aa3fc5ff\n"
        "ADAPTER /root/.ollama/models/blobs/sha256-aaaa\n"
        f'TEMPLATE "{LLAMA3_TEMPLATE}"\n'
        "PARAMETER stop <|start_header_id|>\n"
        "PARAMETER stop <|eot_id|>\n"
        "PARAMETER temperature 0.6\n"
        "PARAMETER num_ctx 1e+06\n"
        "LICENSE LLAMA 3.2 COMMUNITY LICENSE\n"
        'LICENSE " padded"\n'
        "MESSAGE user Hi\n"
        'MESSAGE assistant """Say "hello"\n"""\n'
    )


def test_render_defaults_template_and_orders_optional_commands() -> None:
    text = render_modelfile(
        from_line="/blobs/sha256-model",
        template=None,
        system="Be brief.",
        params={},
        messages=[],
        license=[],
        adapters=[],
        projectors=["/blobs/sha256-mmproj"],
        draft="/blobs/sha256-draft",
        renderer="qwen3",
        parser="qwen3",
    )
    assert text.splitlines()[2:] == [
        "# FROM /blobs/sha256-model",
        "",
        "FROM /blobs/sha256-model",
        "DRAFT /blobs/sha256-draft",
        "FROM /blobs/sha256-mmproj",
        f"TEMPLATE {DEFAULT_TEMPLATE}",
        "SYSTEM Be brief.",
        "RENDERER qwen3",
        "PARSER qwen3",
    ]


def _render_parsed(parsed: Modelfile) -> str:
    """Feed a parsed Modelfile back through render_modelfile, as a created model would be shown."""
    args: dict[str, list[str]] = {}
    for name, value in parsed.commands:
        args.setdefault(name, []).append(value)
    return render_modelfile(
        from_line=args["from"][0],
        short_name="mario:latest",
        template=args.get("template", [None])[-1],
        system=args.get("system", [None])[-1],
        params=parsed.parameters,
        messages=[dict(zip(("role", "content"), m.split(" ", 1), strict=True)) for m in args.get("message", [])],
        license=args.get("license", []),
        adapters=args.get("adapter", []),
        draft=args.get("draft", [None])[-1],
        renderer=args.get("renderer", [None])[-1],
        parser=args.get("parser", [None])[-1],
    )


def test_round_trip_parse_render_parse() -> None:
    first = parse_modelfile(FULL_MODELFILE)
    rendered = _render_parsed(first)
    second = parse_modelfile(rendered)
    without_requires = [c for c in first.commands if c[0] != "requires"]
    assert sorted(second.commands) == sorted(without_requires)
    assert second.parameters == first.parameters
    assert _render_parsed(second) == rendered
