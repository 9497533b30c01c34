"""Go text/template rendering of chat templates, checked against ollama's golden outputs.

The expected strings of the unit tests were cross-checked with Go's text/template, the chat ones
with ollama's data types -- except that `{{ .Function }}` prints JSON here, as ollama intends.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.template.chat import Message, ToolCall, render_chat, render_generate
from runner.template.errors import TemplateError
from runner.template.template import Template

CONFORMANCE_DIR = Path(__file__).resolve().parent / "testdata"
# From the conformance README (ollama's template_test.go): these drop one trailing space.
TRAILING_SPACE_TRIMMED = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}


def _conformance_cases() -> list[Any]:
    return [
        pytest.param(folder, case, id=f"{folder.name}/{case.stem}")
        for folder in sorted(p for p in CONFORMANCE_DIR.iterdir() if p.is_dir())
        for case in sorted(folder.glob("cases/*.json"))
    ]


@pytest.mark.parametrize(("folder", "case"), _conformance_cases())
def test_conformance(folder: Path, case: Path) -> None:
    template = Template.parse((folder / "template.gotmpl").read_text(encoding="utf-8"))
    messages = [Message(role=m["role"], content=m["content"]) for m in json.loads(case.read_text())["messages"]]
    rendered = render_chat(template, messages)
    if folder.name in TRAILING_SPACE_TRIMMED and rendered.endswith(" "):
        rendered = rendered[:-1]
    assert rendered == case.with_suffix(".expected").read_bytes().decode("utf-8")


def run(source: str, **data: Any) -> str:
    """Executes a template on data; `Response` is supplied because Parse appends `{{ .Response }}`
    to templates that mention neither it nor `.Messages`."""
    return Template.parse(source).execute({"Response": "", **data})


# --- language ---------------------------------------------------------------------------------


def test_trim_markers_and_comments() -> None:
    assert run("x {{- .a -}} y {{ .a }} z", a=5) == "x5y 5 z"
    assert run("a  {{- /* note */ -}}  b{{/* x */}}c") == "abc"
    assert run("{{ .s -}}\n\n  x  \n{{- .s }}", s="|") == "|x|"
    assert run("{{- 3 }} {{ -3 }}") == "3 -3"


def test_missing_key_prints_no_value_and_is_false() -> None:
    assert run("{{ .missing }}|{{ if .missing }}y{{ else }}n{{ end }}|{{ not .missing }}") == "<no value>|n|true"


def test_range_over_map_is_sorted() -> None:
    data = {"b": 2, "a": 1, "c": 3}
    assert run("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", m=data) == "a=1;b=2;c=3;"
    assert run("{{ range .m }}{{ . }}{{ end }}", m=data) == "123"
    assert run("{{ .m }}", m={"b": [1, "x"], "a": None}) == "map[a:<nil> b:[1 x]]"


def test_range_forms() -> None:
    assert run("{{ range $i, $e := .l }}{{ $i }}:{{ $e }} {{ end }}", l=["a", "b"]) == "0:a 1:b "
    assert run("{{ range .l }}x{{ else }}empty{{ end }}", l=[]) == "empty"
    assert run("{{ range .missing }}x{{ else }}none{{ end }}") == "none"
    assert run("{{ range 3 }}{{ . }}{{ end }}") == "012"
    assert run("{{ $x := 3 }}{{ range $x := .l }}{{ $x }}{{ end }}{{ $x }}", l=[1, 2]) == "123"


def test_break_and_continue() -> None:
    template = "{{ range .l }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}"
    assert run(template, l=[1, 2, 3, 4, 5]) == "13"


def test_if_else_if_chain() -> None:
    template = "{{ if eq .a 1 }}one{{ else if eq .a 5 }}five{{ else }}other{{ end }}"
    assert [run(template, a=a) for a in (1, 5, 7)] == ["one", "five", "other"]
    assert run("{{- if .a -}} A {{- else if .b -}} B {{- end -}}", a=0, b=1) == "B"


def test_with_sets_dot() -> None:
    assert run("{{ with .m }}{{ .k }}{{ end }}{{ with .e }}x{{ else }}empty{{ end }}", m={"k": "v"}, e="") == "vempty"


def test_variables_assignment_and_scope() -> None:
    assert run("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}") == "2"
    assert run('{{ $s := "" }}{{ range .l }}{{ $s = printf "%s%s" $s . }}{{ end }}{{ $s }}', l=["a", "b"]) == "ab"
    assert run("{{ with .m }}{{ $.top }}{{ end }}", m={"k": 1}, top="T") == "T"
    with pytest.raises(TemplateError, match='undefined variable "\\$y"'):
        Template.parse("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_truthiness() -> None:
    template = "{{ range .v }}{{ if . }}T{{ else }}F{{ end }}{{ end }}"
    assert run(template, v=[0, 1, "", "x", [], [0], {}, {"a": 1}, None, False, True, 0.0]) == "FTFTFTFTFFTF"


def test_and_or_return_operands_and_short_circuit() -> None:
    assert run('{{ and 1 0 2 }}|{{ and 1 2 }}|{{ or 0 "" }}|{{ or 0 3 4 }}') == "0|2||3"
    # the second operand would fail if it were evaluated: .missing is nil
    assert run("{{ and .missing .missing.field }}|{{ or 1 .missing.field }}") == "<no value>|1"


def test_comparisons() -> None:
    assert (
        run("{{ eq .a 5 6 }} {{ eq .a 4 6 }} {{ ne .a 5 }} {{ lt .a 6 }} {{ le 5 5 }}", a=5)
        == "true false false true true"
    )
    assert run('{{ gt "b" "a" }} {{ ge 1 2 }} {{ eq .missing "x" }} {{ eq .s "héllo" }}', s="héllo") == (
        "true false false true"
    )
    with pytest.raises(TemplateError, match="incompatible types for comparison"):
        run('{{ eq .a "x" }}', a=5)


def test_len_counts_utf8_bytes() -> None:
    assert run("{{ len .s }} {{ len .l }} {{ len .m }}", s="héllo", l=[1, 2], m={"a": 1}) == "6 2 1"


def test_index_and_slice() -> None:
    data = {"s": "héllo", "l": [1, "x", None], "m": {"a": 1, "c": {"z": [7, 8]}}}
    template = (
        '{{ slice .s 0 1 }}|{{ slice .l 1 }}|{{ index .l 1 }}|{{ index .m "a" }}|'
        '{{ index .m "q" }}|{{ index .s 1 }}|{{ index .m "c" "z" 1 }}'
    )
    assert run(template, **data) == "h|[x <nil>]|x|1|<no value>|195|8"
    with pytest.raises(TemplateError, match="index out of range: 9"):
        run("{{ index .l 9 }}", l=[1])
    with pytest.raises(TemplateError, match="invalid slice index: 3 > 1"):
        run("{{ slice .l 3 1 }}", l=[1, 2, 3])


def test_last_message_idiom() -> None:
    template = (
        "{{- range $i, $_ := .l }}{{- $last := eq (len (slice $.l $i)) 1 }}{{ . }}{{ if $last }}!{{ end }}{{ end }}"
    )
    assert run(template, l=["a", "b"]) == "ab!"


def test_json_is_go_encoding() -> None:
    value = {"b": "<a&b>", "a": "日本\u2028", "n": 5.0, "f": 1e21, "e": 1e-7, "l": [True, None, 1.5], "c": "\b\x01"}
    assert run("{{ json .v }}", v=value) == (
        '{"a":"日本\\u2028","b":"\\u003ca\\u0026b\\u003e","c":"\\b\\u0001","e":1e-7,"f":1e+21,'
        '"l":[true,null,1.5],"n":5}'
    )
    assert run("{{ json .missing }}") == "null"


def test_printf_verbs() -> None:
    template = (
        '{{ printf "%s|%d|%v|%q|%5.2f|%-4d|%x|%t|%08.3f|%+d|%e|%g|%c|%U" '
        ".s 5 .l .s -3.25 5 .s true -3.25 5 1e6 .f 65 65 }}"
    )
    assert run(template, s="héllo", l=[1, "x", None, 2.5], f=123456789.5) == (
        'héllo|5|[1 x <nil> 2.5]|"héllo"|-3.25|5   |68c3a96c6c6f|true|-003.250|+5|1.000000e+06|1.234567895e+08|A|U+0041'
    )
    assert run('{{ printf "%6.2v|%10.3e|%-10.1f|%G|%.0f|%.3g" 3.14159 1234.5678 2.25 1e-7 2.5 100.0 }}') == (
        "   3.1| 1.235e+03|2.2       |1E-07|2|100"
    )
    assert run('{{ printf "%[2]d %[1]d" 1 2 }}|{{ printf "%*d|%.*f|%05d|%x" 4 7 2 3.14159 -42 255 }}') == (
        "2 1|   7|3.14|-0042|ff"
    )


def test_printf_reports_bad_arguments_in_band() -> None:
    template = (
        '{{ printf "%d" "x" }} {{ printf "%s" 5 }} {{ printf "%d %d" 1 }} '
        '{{ printf "%d" 1 2 }} {{ printf "%s" .missing }}'
    )
    assert run(template) == "%!d(string=x) %!s(int=5) 1 %!d(MISSING) 1%!(EXTRA int=2) %!s(<nil>)"


def test_float_printing_matches_go() -> None:
    assert run(
        "{{ .a }} {{ .b }} {{ .c }} {{ .d }} {{ 1e21 }} {{ 1.5 }} {{ 3 }}", a=1e6, b=123456.0, c=1e-5, d=2.0
    ) == ("1e+06 123456 1e-05 2 1e+21 1.5 3")


def test_print_and_println_spacing() -> None:
    assert run('{{ print 1 2 "a" "b" 3 .missing true }}|{{ println 1 "a" }}') == "1 2ab3 <nil> true|1 a\n"


def test_escaping_functions() -> None:
    text = "<a href='x'>&\"</a>"
    assert run("{{ html .t }}", t=text) == "&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;"
    assert (
        run("{{ js .t }}", t=text + "=\n")
        == "\\u003Ca href\\u003D\\'x\\'\\u003E\\u0026\\\"\\u003C/a\\u003E\\u003D\\u000A"
    )
    assert run('{{ urlquery "a b&c=d/é" }}') == "a+b%26c%3Dd%2F%C3%A9"


def test_literals() -> None:
    assert run("{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ 0o17 }} {{ +5 }} {{ .5 }} {{ 1e3 }} {{ 017 }}") == (
        "97 31 1000 15 5 0.5 1000 15"
    )
    assert run('{{ "\\t\\u00e9\\x41\\101" }}|{{ `raw\\n` }}|{{ true }} {{ false }}') == "\téAA|raw\\n|true false"


def test_pipelines_and_parentheses() -> None:
    assert run(
        '{{ .a | printf "%d-%d" 7 }}|{{ (index .l 1).name }}|{{ print (len "ab") (print "x") }}',
        a=1,
        l=[0, {"name": "n"}],
    ) == ("7-1|n|2x")


def test_define_template_and_block() -> None:
    template = (
        '{{ define "x" }}[{{ . }}]{{ end }}{{ template "x" .a }}{{ template "x" "s" }}'
        '{{ block "y" .a }}<{{ . }}>{{ end }}'
    )
    assert run(template, a=5) == "[5][s]<5>"
    recursive = (
        '{{ define "down" }}{{ . }}{{ if gt . 0 }}{{ template "down" 0 }}{{ end }}{{ end }}{{ template "down" 2 }}'
    )
    assert run(recursive) == "20"
    assert Template.parse('{{ define "d" }}{{ .Inner }}{{ end }}{{ template "d" . }}').mentions("inner")


def test_date_functions() -> None:
    assert run("{{ currentDate }}") == date.today().isoformat()
    assert run("{{ yesterdayDate }}") == (date.today() - timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ .Prompt ", "unclosed action"),
        ("{{ foo }}", 'function "foo" not defined'),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ if .a }}x", "unexpected EOF"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ("{{ $x }}", 'undefined variable "$x"'),
        ('{{ "a" | "b" }}', "non executable command in pipeline stage 2"),
        ("{{ if }}{{ end }}", "missing value for if"),
        ("{{/* open", "unclosed comment"),
        ('{{ "open }}', "unterminated quoted string"),
        ('{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}', 'multiple definition of template "x"'),
        ('{{ define "x" }}{{ . }}{{ end }}{{ template "x" }}', "undefined template specified"),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=f"^.*{_escape(message)}"):
        Template.parse(source)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "$.{}()[]|*+?^\\" else c for c in text)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ .m.k.deeper }}", "can't evaluate field deeper in type interface {}"),
        ("{{ .missing.field }}", "nil pointer evaluating interface {}.field"),
        ('{{ template "nope" . }}', 'template "nope" not defined'),
        ("{{ len 3 }}", "error calling len: len of type int"),
        ("{{ ne 1 2 3 }}", "wrong number of args for ne: want 2 got 3"),
        ("{{ .m 1 }}", "m is not a method but has arguments"),
        ("{{ range .m.k }}{{ end }}", "range can't iterate over v"),
    ],
)
def test_execution_errors(source: str, message: str) -> None:
    template = Template.parse(source)
    with pytest.raises(TemplateError) as caught:
        template.execute({"m": {"k": "v"}, "Response": ""})
    assert message in str(caught.value)
    assert str(caught.value).startswith("template: :1:")


def test_mentions_and_response_appended() -> None:
    template = Template.parse("{{ .System }} {{ .Prompt }}")
    assert template.mentions("prompt") and template.mentions("System") and template.mentions("Response")
    assert not template.mentions("Messages")
    assert template.execute({"System": "S", "Prompt": "P", "Response": "R"}) == "S PR"
    assert template.source == "{{ .System }} {{ .Prompt }}"
    chat = Template.parse("{{ range $.Messages }}{{ .Content }}{{ end }}")
    assert chat.mentions("messages") and chat.mentions("content") and not chat.mentions("response")


# --- chat rendering ---------------------------------------------------------------------------

CHATML_TOOLS = """{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather <now> & later",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {
                "unit": {"type": "string", "enum": ["c", "f"]},
                "city": {"type": "string", "description": "e.g. Zürich", "default": "dropped"},
            },
        },
    },
}

TOOL_CONVERSATION = [
    Message(role="user", content="Weather in Paris?"),
    Message(
        role="assistant",
        tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"unit": "c", "city": "Paris"})],
    ),
    Message(role="tool", content="18", tool_name="get_weather"),
]


def test_tools_render_in_chatml_style_template() -> None:
    rendered = render_chat(Template.parse(CHATML_TOOLS), TOOL_CONVERSATION, system="Be brief.", tools=[WEATHER_TOOL])
    assert rendered == (
        "<|im_start|>system\n"
        "Be brief.\n\n"
        "<tools>\n"
        '{"type": "function", "function": {"name":"get_weather",'
        '"description":"Weather \\u003cnow\\u003e \\u0026 later","parameters":{"type":"object","required":["city"],'
        '"properties":{"city":{"type":"string","description":"e.g. Zürich"},'
        '"unit":{"type":"string","enum":["c","f"]}}}}}\n'
        "</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n18\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tools_render_as_json_objects() -> None:
    template = Template.parse(
        "{{ range $.Tools }}{{ . }}\n{{ end }}{{ json .Tools }}|{{ range .Messages }}{{ range .ToolCalls }}"
        "{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }}{{ .Function.Index }}{{ end }}{{ end }}"
    )
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    rendered = render_chat(template, TOOL_CONVERSATION, tools=[tool])
    line = (
        '{"type":"function","function":{"name":"now","description":"",'
        '"parameters":{"type":"object","properties":null}}}'
    )
    assert rendered == f"{line}\n[{line}]|city=Paris;unit=c;0"


def test_property_fields_and_typescript_types() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": ["integer", "null"], "description": "A"},
                    "b": {"type": "object"},
                    "c": {"anyOf": [{"type": "string"}, {"type": "array"}]},
                    "d": {},
                },
            },
        },
    }
    template = Template.parse(
        "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
        "{{ $name }}:{{ $p.Type }}:{{ toTypeScriptType $p }}:{{ $p.Description }};{{ end }}{{ end }}"
    )
    rendered = render_chat(template, [Message(role="user", content="x")], tools=[tool])
    assert rendered == "a:[integer null]:number | null:A;b:object:Record<string, any>:;c::string | any[]:;d::any:;"


def test_no_tools_prints_null_and_is_false() -> None:
    template = Template.parse("{{ range .Messages }}{{ end }}{{ .Tools }}|{{ if .Tools }}t{{ else }}f{{ end }}")
    assert render_chat(template, [Message(role="user", content="x")]) == "null|f"
    assert render_chat(template, [Message(role="user", content="x")], tools=[]) == "[]|f"


def test_messages_are_collated() -> None:
    template = Template.parse("{{ .System }}|{{ range .Messages }}{{ .Role }}:{{ .Content }}|{{ end }}")
    messages = [
        Message(role="system", content="s1"),
        Message(role="system", content="s2"),
        Message(role="user", content="a"),
        Message(role="user", content="b"),
        Message(role="tool", content="t1"),
        Message(role="tool", content="t2"),
    ]
    assert render_chat(template, messages) == "s1\n\ns2|system:s1\n\ns2|user:a\n\nb|tool:t1|tool:t2|"


def test_default_system_prompt_only_without_system_message() -> None:
    template = Template.parse("{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}")
    user = Message(role="user", content="hi")
    assert render_chat(template, [user], system="default") == "system:default;user:hi;"
    assert (
        render_chat(template, [Message(role="system", content="own"), user], system="default") == "system:own;user:hi;"
    )


LEGACY = "{{ if .System }}<<{{ .System }}>>{{ end }}[INST] {{ .Prompt }} [/INST]{{ .Response }}</s>"


def test_legacy_template_renders_each_turn_and_stops_at_response() -> None:
    messages = [
        Message(role="system", content="S"),
        Message(role="user", content="u1"),
        Message(role="assistant", content="a1"),
        Message(role="user", content="u2"),
    ]
    assert render_chat(Template.parse(LEGACY), messages) == "<<S>>[INST] u1 [/INST]a1</s>[INST] u2 [/INST]"


def test_legacy_template_continues_a_prefilled_answer() -> None:
    messages = [Message(role="user", content="u1"), Message(role="assistant", content="My name is")]
    assert render_chat(Template.parse(LEGACY), messages) == "[INST] u1 [/INST]My name is"


def test_legacy_cut_removes_following_structures() -> None:
    template = Template.parse("{{ .Prompt }}>{{ .Response | print }}{{ if .Response }}<end>{{ end }} tail")
    # the pipeline `.Response | print` loses its second command, so the whole action goes too
    assert render_chat(template, [Message(role="user", content="q")]) == "q>"


def test_template_without_response_gets_it_appended() -> None:
    template = Template.parse("[INST] {{ .Prompt }} [/INST]")
    messages = [
        Message(role="user", content="a"),
        Message(role="assistant", content="b"),
        Message(role="user", content="c"),
    ]
    assert render_chat(template, messages) == "[INST] a [/INST]b[INST] c [/INST]"


def test_think_fields() -> None:
    template = Template.parse("{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}")
    user = [Message(role="user", content="x")]
    assert [render_chat(template, user, think=t) for t in (None, False, True, "high")] == [
        "false  false",
        "false  true",
        "true medium true",
        "true high true",
    ]


def test_generate_fill_in_the_middle() -> None:
    template = Template.parse(
        "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    )
    assert render_generate(template, prompt="def add(", suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    assert render_generate(template, prompt="hello") == "hello"


def test_generate_builds_a_conversation() -> None:
    template = Template.parse("{{ range .Messages }}{{ .Role }}:{{ .Content }}:{{ len .Images }};{{ end }}{{ .Tools }}")
    history = [Message(role="user", content="h1"), Message(role="assistant", content="h2")]
    rendered = render_generate(template, prompt="see", system="S", images=[b"png1", b"png2"], history=history)
    assert rendered == "system:S:0;user:h1:0;assistant:h2:0;user:see:2;null"


def test_generate_with_a_legacy_template() -> None:
    template = Template.parse("{{ if .System }}[{{ .System }}] {{ end }}Q: {{ .Prompt }}\nA:")
    assert render_generate(template, prompt="why?", system="S") == "[S] Q: why?\nA:"


def test_image_markers_replace_placeholders() -> None:
    template = Template.parse("{{ range .Messages }}{{ .Content }}|{{ len .Images }};{{ end }}")
    messages = [
        Message(role="user", content="first", images=[b"a"]),
        Message(role="assistant", content="ok"),
        Message(role="user", content="look [img] here [img]", images=[b"b", b"c"]),
    ]
    assert render_chat(template, messages) == "[img-0]first|1;ok|0;look [img-1] here [img-2]|2;"
