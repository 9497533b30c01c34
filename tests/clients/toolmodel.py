"""A tool-capable SmolLM2: a Hermes-style Go template and one tool the tests execute themselves.

The template announces calls as `<tool_call>{"name": ..., "arguments": ...}</tool_call>` and
replays tool results as `<tool_response>`, the convention of Qwen/Hermes models in ollama's
library; corral infers the `<tool_call>` tag from it exactly as ollama does.
"""

from __future__ import annotations

from typing import Any

TOOLS_TEMPLATE = """{{- if .Tools }}<|im_start|>system
You can call functions. Available functions:
{{- range .Tools }}
{{ json .Function }}
{{- end }}
To call one, reply <tool_call>{"name": <name>, "arguments": <object>}</tool_call>.<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "tool" }}<|im_start|>user
<tool_response>{{ .Content }}</tool_response><|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ if .ToolCalls }}
{{- range .ToolCalls }}<tool_call>{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- "</tool_call>" }}
{{- end }}
{{- else }}{{ .Content }}{{ end }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""

# Tool calls as bare JSON objects (Llama 3.1 style): ollama infers the tag "{", so a JSON `format`
# shaped like a call makes any model answer with a call the ollama API reports as tool_calls.
JSON_TOOLS_TEMPLATE = """{{- if .Tools }}<|im_start|>system
Answer with a JSON function call {"name": ..., "arguments": ...} using one of:
{{- range .Tools }}
{{ json .Function }}
{{- end }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "tool" }}<|im_start|>user
Result of {{ .ToolName }}: {{ .Content }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ if .ToolCalls }}
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}
{{- else }}{{ .Content }}{{ end }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "London"]}},
            "required": ["city"],
        },
    },
}

WEATHER_CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER_TOOL["function"]["parameters"]},
    "required": ["name", "arguments"],
}

FORECASTS = {"Paris": {"temperature_c": 18, "sky": "sunny"}, "London": {"temperature_c": 12, "sky": "rain"}}


def get_weather(city: str) -> dict[str, Any]:
    """Current weather in a city.

    Args:
      city: Paris or London
    """
    return FORECASTS[city]
