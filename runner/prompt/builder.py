"""Prompt text for one model: which template renders it, what it can do, and fitting it to num_ctx.

Template choice follows ollama: the manifest's Go template when it has one, otherwise the GGUF's
Jinja `tokenizer.chat_template` (what ollama's native llama-server mode renders), otherwise
`{{ .Prompt }}`. Capabilities come from the same source, as in server/images.go. Conversations
longer than the context drop their oldest messages first, keeping every system message and the
last message (server/prompt.go's chatPrompt), each image counted as ollama's 768 tokens. The
images of the messages rendered come with the prompt (runner/prompt/images.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from runner.engine.native import Vocab
from runner.errors import RequestError
from runner.prompt.images import IMAGE_TOKEN_ESTIMATE, Rendered, count_images, images_of
from runner.prompt.jinja import JinjaChatTemplate, has_thinking_support, has_tool_support
from runner.prompt.thinking import ThinkingParser, infer_thinking_tags
from runner.prompt.tools import ToolCallParser, infer_tool_tag
from runner.spec import ModelSpec
from runner.template.chat import Message, ToolCall, render_chat, render_generate, tag_images
from runner.template.errors import TemplateError
from runner.template.exec import TemplateLimitError
from runner.template.template import Template

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@functools.lru_cache(maxsize=64)
def parse_template(source: str, status: int = 500) -> Template:
    """A parsed Go template; a broken one is the model's fault (500) or the request's (400)."""
    try:
        return Template.parse(source)
    except TemplateError as exc:
        raise RequestError(status, f"template: {exc}") from None


def _jinja_source(spec: ModelSpec) -> str:
    source = spec.gguf.get("tokenizer.chat_template")
    return source if isinstance(source, str) else ""


def capabilities(spec: ModelSpec) -> frozenset[str]:
    """completion/embedding from the GGUF, tools/insert/thinking from the template in use, vision
    from a projector (the runner sees through one; a GGUF's own vision blocks it cannot run)."""
    caps = {"embedding" if f"{spec.architecture}.pooling_type" in spec.gguf else "completion"}
    if spec.projector is not None:
        caps.add("vision")
    if spec.template:
        template = parse_template(spec.template)
        if template.mentions("tools"):
            caps.add("tools")
        if template.mentions("suffix"):
            caps.add("insert")
        if infer_thinking_tags(template) is not None:
            caps.add("thinking")
    elif source := _jinja_source(spec):
        if has_tool_support(source):
            caps.add("tools")
        if has_thinking_support(source):
            caps.add("thinking")
    return frozenset(caps)


def think_enabled(think: bool | str | None) -> bool:
    return think is True or isinstance(think, str)


def _message(m: Mapping[str, Any]) -> Message:
    calls = [
        ToolCall(
            id=c.get("id", ""),
            name=c["function"]["name"],
            arguments=c["function"]["arguments"],
            index=c["function"].get("index", i),
        )
        for i, c in enumerate(m.get("tool_calls", ()))
    ]
    return Message(
        role=m["role"],
        content=m.get("content", ""),
        thinking=m.get("thinking", ""),
        images=tuple(m.get("images", ())),
        tool_calls=calls,
        tool_name=m.get("tool_name", ""),
        tool_call_id=m.get("tool_call_id", ""),
    )


def _jinja_message(m: Mapping[str, Any]) -> dict[str, Any]:
    """Hugging Face's message layout: tool calls typed "function", tool results named."""
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content", "")}
    if m.get("thinking"):
        out["reasoning_content"] = m["thinking"]
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"type": "function", "id": c.get("id", ""), "function": dict(c["function"])} for c in m["tool_calls"]
        ]
    if m.get("tool_name"):
        out["name"] = m["tool_name"]
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out


class PromptBuilder:
    """Renders prompts for one loaded model; blocking (it tokenizes), so call it from a thread."""

    def __init__(self, spec: ModelSpec, vocab: Vocab) -> None:
        self.spec = spec
        self.vocab = vocab
        self.jinja: JinjaChatTemplate | None = None
        self.go: Template = parse_template(spec.template or DEFAULT_TEMPLATE)
        if not spec.template and (source := _jinja_source(spec)):
            bos = vocab.piece(vocab.bos, special=True).decode("utf-8", errors="replace")
            eos = vocab.piece(vocab.eos, special=True).decode("utf-8", errors="replace")
            self.jinja = JinjaChatTemplate(source, bos, eos)

    def render(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None, think: bool | str | None
    ) -> str:
        """One rendering of a whole conversation, without truncation; images marked `[img-N]`."""
        if self.jinja is not None:
            tagged = tag_images([_message(m) for m in messages])
            jinja = [_jinja_message({**m, "content": t.content}) for m, t in zip(messages, tagged, strict=True)]
            return self.jinja.render(jinja, tools, think)
        try:
            return render_chat(self.go, [_message(m) for m in messages], tools=tools, think=think)
        except TemplateError as exc:
            raise RequestError(500, f"template: {exc}") from None

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        think: bool | str | None,
        *,
        num_ctx: int,
        truncate: bool,
    ) -> Rendered:
        """ollama's chatPrompt: drop the oldest messages until the prompt fits num_ctx tokens,
        always keeping system messages and the last message."""
        if not truncate or not messages:
            return Rendered(self.render(messages, tools, think), images_of(messages))
        last = len(messages) - 1
        for i in range(last):
            system = [m for m in messages[:i] if m["role"] == "system"]
            kept = [*system, *messages[i:]]
            prompt = self.render(kept, tools, think)
            if len(self.vocab.tokenize(prompt)) + IMAGE_TOKEN_ESTIMATE * count_images(messages[i:]) <= num_ctx:
                if i:
                    log.debug("truncated %d old messages to fit num_ctx=%d", i, num_ctx)
                return Rendered(prompt, images_of(kept))
        kept = [*(m for m in messages[:last] if m["role"] == "system"), messages[last]]
        return Rendered(self.render(kept, tools, think), images_of(kept))

    def generate(
        self,
        *,
        prompt: str,
        suffix: str,
        system: str,
        template: str,
        context: list[int] | None,
        think: bool | str | None,
        num_ctx: int,
        truncate: bool,
        images: tuple[bytes, ...] = (),
    ) -> Rendered:
        """The /api/generate prompt: fill-in-the-middle or an override template run directly,
        otherwise the chat path with system, preset messages and the prompt as a user turn (with
        the request's images). The direct path marks no images, as ollama's: the template must."""
        prefix = self.vocab.detokenize(context) if context else ""
        system = system or self.spec.system or ""
        history = [] if context is not None else [dict(m) for m in self.spec.messages]
        if suffix or template:
            tmpl = parse_template(template, 400) if template else self.go
            turns = [_message(m) for m in history]
            try:
                text = render_generate(
                    tmpl, prompt=prompt, system=system, suffix=suffix, images=images, think=think, history=turns
                )
                return Rendered(prefix + text, images)
            except TemplateError as exc:
                # a request's own template that runs past its bounds is that request's mistake
                status = 400 if template and isinstance(exc, TemplateLimitError) else 500
                raise RequestError(status, f"template: {exc}") from None
        messages = [{"role": "system", "content": system}] if system else []
        user: dict[str, Any] = {"role": "user", "content": prompt}
        if images:
            user["images"] = images
        messages += [*history, user]
        rendered = self.chat(messages, [], think, num_ctx=num_ctx, truncate=truncate)
        return Rendered(prefix + rendered.text, rendered.images)

    def tool_parser(self, tools: Sequence[Mapping[str, Any]]) -> ToolCallParser:
        """ollama's generic parser, its tag read from the Go template ("{" when there is none);
        for a Jinja template, Hermes-style `<tool_call>` when the template uses it."""
        if self.jinja is not None:
            tag = "<tool_call>" if "<tool_call>" in _jinja_source(self.spec) else "{"
        else:
            tag = infer_tool_tag(self.go) or "{"
        return ToolCallParser(tag, tools)

    def preserved_tokens(self, parser: ToolCallParser | None) -> frozenset[int]:
        """A tool tag that is one special token must reach the parser as text (llama-server's
        preserved tokens); other special tokens stay invisible in the output."""
        if parser is None or parser.tag in ("{", "["):
            return frozenset()
        token = self.vocab.single_token(parser.tag)
        return frozenset() if token is None else frozenset({token})

    def thinking_parser(self, prompt: str, think: bool | str | None) -> ThinkingParser | None:
        """A splitter of thinking from content when thinking is on and the template has tags;
        a prompt that already opens the thinking block starts the parser inside it."""
        if not think_enabled(think):
            return None
        tags = ("<think>", "</think>") if self.jinja is not None else infer_thinking_tags(self.go)
        if tags is None:
            return None
        parser = ThinkingParser(*tags)
        if prompt.rstrip().endswith(tags[0]):
            parser.add(tags[0])
        return parser
