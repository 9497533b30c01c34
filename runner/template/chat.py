"""ollama's chat layer over Go templates: the data a template sees for a chat or generate call.

A chat template is only half of a prompt format; the other half is how ollama lays out the
request for it -- message structs, tool definitions as Go types, Think flags, merged
consecutive turns, image markers, and the legacy `.System`/`.Prompt`/`.Response` turn loop for
templates without `.Messages`. Clients compare prompts byte for byte with ollama's, so that
layout is reproduced here, on top of the engine. One deliberate difference: `{{ .Function }}`
and `{{ .Function.Parameters }}` print JSON, as ollama intends (it prints Go struct syntax
since v0.14).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from runner.template.template import Template
from runner.template.values import GoMap, GoSlice, GoStruct, PropertyType


@dataclass
class ToolCall:
    """A function call made by the model; `index` counts calls within one response."""

    id: str = ""
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    index: int = 0


@dataclass
class Message:
    """One chat message as the API receives it; `images` hold raw (decoded) image bytes."""

    role: str
    content: str = ""
    thinking: str = ""
    images: Sequence[bytes] = ()
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_name: str = ""
    tool_call_id: str = ""


def _message_value(message: Message) -> GoStruct:
    return GoStruct(
        "*template.templateMessage",
        {
            "Role": message.role,
            "Content": message.content,
            "Thinking": message.thinking,
            "Images": GoSlice(message.images, go_type="[]api.ImageData"),
            "ToolCalls": GoSlice(map(_tool_call_value, message.tool_calls), go_type="[]template.templateToolCall"),
            "ToolName": message.tool_name,
            "ToolCallID": message.tool_call_id,
        },
    )


def _tool_call_value(call: ToolCall) -> GoStruct:
    function = GoStruct(
        "template.templateToolCallFunction",
        {
            "Index": call.index,
            "Name": call.name,
            "Arguments": GoMap(call.arguments, go_type="template.templateArgs", stringer=True),
        },
    )
    return GoStruct("template.templateToolCall", {"ID": call.id, "Function": function})


def _strings(value: Any) -> GoSlice:
    items = value if isinstance(value, list | tuple) else ()
    return GoSlice((str(v) for v in items), go_type="[]string")


def _property_value(prop: Any) -> GoStruct:
    """An api.ToolProperty: only the fields ollama keeps from a property's JSON schema."""
    prop = prop if isinstance(prop, Mapping) else {}
    kind = prop.get("type")
    types = [kind] if isinstance(kind, str) else [str(t) for t in kind] if isinstance(kind, list) else []
    nested = prop.get("properties")
    return GoStruct(
        "api.ToolProperty",
        {
            "AnyOf": GoSlice(map(_property_value, prop.get("anyOf") or ()), go_type="[]api.ToolProperty"),
            "Type": PropertyType(types),
            "Items": prop.get("items"),
            "Description": str(prop.get("description") or ""),
            "Enum": prop.get("enum") if isinstance(prop.get("enum"), list) else GoSlice(),
            "Properties": (
                GoMap(
                    {k: _property_value(v) for k, v in nested.items()}, go_type="*api.ToolPropertiesMap", ordered=True
                )
                if isinstance(nested, Mapping)
                else None
            ),
            "Required": _strings(prop.get("required")),
        },
        (
            ("AnyOf", "anyOf", True),
            ("Type", "type", True),
            ("Items", "items", True),
            ("Description", "description", True),
            ("Enum", "enum", True),
            ("Properties", "properties", True),
            ("Required", "required", True),
        ),
        stringer=True,
    )


def _tool_value(tool: Mapping[str, Any]) -> GoStruct:
    """A templateTool: the request's tool, printing as JSON with properties in sorted order."""
    function = tool.get("function") if isinstance(tool.get("function"), Mapping) else {}
    params = function.get("parameters") if isinstance(function.get("parameters"), Mapping) else {}
    props = params.get("properties")
    parameters = GoStruct(
        "template.templateToolFunctionParameters",
        {
            "Type": str(params.get("type") or ""),
            "Defs": params.get("$defs"),
            "Items": params.get("items"),
            "Required": _strings(params.get("required")),
            "Properties": GoMap(
                {k: _property_value(v) for k, v in props.items()} if isinstance(props, Mapping) else None,
                go_type="template.templateProperties",
                stringer=True,
            ),
        },
        (
            ("Type", "type", False),
            ("Defs", "$defs", True),
            ("Items", "items", True),
            ("Required", "required", True),
            ("Properties", "properties", False),
        ),
        stringer=True,
    )
    function_value = GoStruct(
        "template.templateToolFunction",
        {
            "Name": str(function.get("name") or ""),
            "Description": str(function.get("description") or ""),
            "Parameters": parameters,
        },
        (("Name", "name", False), ("Description", "description", False), ("Parameters", "parameters", False)),
        stringer=True,
    )
    return GoStruct(
        "template.templateTool",
        {"Type": str(tool.get("type") or ""), "Items": tool.get("items"), "Function": function_value},
        (("Type", "type", False), ("Items", "items", True), ("Function", "function", False)),
        stringer=True,
    )


def _tools_value(tools: Sequence[Mapping[str, Any]] | None) -> GoSlice:
    value = GoSlice(map(_tool_value, tools or ()), go_type="template.templateTools", stringer=True)
    value.is_nil = tools is None
    return value


def _think_fields(think: bool | str | None) -> dict[str, Any]:
    """Think/ThinkLevel/IsThinkSet from the request's `think` (a bool or a level name)."""
    if isinstance(think, str):
        enabled = think in ("low", "medium", "high", "max")
        return {"Think": enabled, "ThinkLevel": think, "IsThinkSet": True}
    return {"Think": bool(think), "ThinkLevel": "medium" if think else "", "IsThinkSet": think is not None}


def _collate(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """Merges consecutive same-role messages (tool results stay apart); returns the system text too."""
    system = [m.content for m in messages if m.role == "system"]
    collated: list[Message] = []
    for message in messages:
        if collated and collated[-1].role == message.role and message.role != "tool":
            collated[-1] = replace(collated[-1], content=collated[-1].content + "\n\n" + message.content)
        else:
            collated.append(message)
    return "\n\n".join(system), collated


def tag_images(messages: Sequence[Message]) -> list[Message]:
    """Puts `[img-N]` markers where the runner substitutes images, as ollama's chatPrompt does:
    replacing a literal `[img]` in the text, else prefixed to it; N counts across messages."""
    tagged = []
    count = 0
    for message in messages:
        prefix, content = "", message.content
        for _ in message.images:
            tag = f"[img-{count}]"
            count += 1
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        tagged.append(replace(message, content=prefix + content) if message.images else message)
    return tagged


def _execute(
    template: Template,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None,
    think: bool | str | None,
) -> str:
    """ollama's Template.Execute for chat data: one pass over .Messages, or the legacy turn loop."""
    flags = _think_fields(think)
    system, collated = _collate(messages)
    if template.mentions("messages"):
        values = GoSlice(map(_message_value, collated), go_type="[]*template.templateMessage")
        data = {"System": system, "Messages": values, "Tools": _tools_value(tools), "Response": ""}
        return template.execute(data | flags)
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for message in collated:
        complete = (message.role == "system" and (turn["Prompt"] or turn["Response"])) or (
            message.role == "user" and turn["Response"]
        )
        if complete:
            out.append(template.execute(turn | flags))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(message.role)
        if key is not None:
            turn[key] = message.content
    out.append(template.execute_until_response(turn | flags))
    return "".join(out)


def render_chat(
    template: Template,
    messages: Sequence[Message],
    *,
    system: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: bool | str | None = None,
) -> str:
    """The prompt ollama renders for /api/chat (without context-window truncation).

    `system` is the model's default system prompt, used when the conversation does not start
    with a system message; `tools` are the request's tool definitions as JSON objects.
    """
    conversation = list(messages)
    if system and (not conversation or conversation[0].role != "system"):
        conversation.insert(0, Message(role="system", content=system))
    return _execute(template, tag_images(conversation), tools, think)


def render_generate(
    template: Template,
    *,
    prompt: str,
    system: str | None = None,
    suffix: str | None = None,
    images: Sequence[bytes] = (),
    think: bool | str | None = None,
    history: Sequence[Message] = (),
) -> str:
    """The prompt ollama's /api/generate renders by executing the template directly.

    With a suffix this is fill-in-the-middle ({Prompt, Suffix, Response: ""}); otherwise the
    system prompt, the model's preset `history` (MESSAGE lines) and the prompt as a user turn
    are the messages. ollama takes this path for suffix requests and `template` overrides; a
    plain request on the model's own template goes through its chat path instead, which is
    `render_chat` with `tools=[]` (image markers, an empty tool list).
    """
    if suffix:
        if prompt:
            data = {"Prompt": prompt, "Suffix": suffix, "Response": ""}
            return template.execute(data | _think_fields(think))
        return _execute(template, [], None, think)
    conversation = [Message(role="system", content=system)] if system else []
    conversation += [*history, Message(role="user", content=prompt, images=tuple(images))]
    return _execute(template, conversation, None, think)
