"""The interactive chat of `corral run`, with ollama's commands and keys.

A line is a message, a slash command or part of a `\"\"\"` multi-line message. The commands are
ollama's: /set (parameters, system message, verbose, format, think, history, word wrap), /show,
/load, /save (creates a model from the session through /api/create), /clear, /bye and /? help.
Ctrl+C while the model answers stops the answer, not the session: the request is closed (so the
server stops generating) and, as in ollama, the partial answer is dropped while the question stays
in the conversation. Ctrl+C at the prompt clears the line; Ctrl+D on an empty line ends the chat.

The prompt is read on the event loop's own thread, blocking it: nothing else runs while the user
types, and only the main thread receives Ctrl+C, which readline needs to abandon a line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from typing import Any

from registry.cli.chat import ChatOptions, answer, load
from registry.cli.client import ClientError, CorralClient
from registry.cli.library import print_info
from registry.cli.lineinput import LineInput
from registry.model.modelfile import ModelfileError, parse_parameters

QUOTES = '"""'

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""

USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""

USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit corral (/bye)
"""

USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""

USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters
"""


def _help(text: str) -> None:
    print(text, file=sys.stderr)


def _go_value(value: Any) -> str:
    """An option value as Go's %v prints it (ollama shows user parameters that way)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


def _cut_closing(text: str) -> tuple[str, bool]:
    """`text` without a closing \"\"\", and whether it had one."""
    return (text[: -len(QUOTES)], True) if text.endswith(QUOTES) else (text, False)


class InteractiveChat:
    """One interactive session: the conversation so far, and the lines of a message not yet closed."""

    def __init__(self, c: CorralClient, opts: ChatOptions, lines: LineInput) -> None:
        self.c = c
        self.opts = opts
        self.lines = lines
        self.pending: list[str] = []  # lines of an open \"\"\" block
        self.open_block: str | None = None  # "message" or "system" while a \"\"\" block is open

    async def run(self) -> None:
        """Read and act on lines until /bye or Ctrl+D."""
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while True:
                try:
                    line = self.lines.read("... " if self.open_block else ">>> ")
                except EOFError:
                    print()
                    return
                except KeyboardInterrupt:
                    if not self.lines.pending() and not self.open_block:
                        print("\nUse Ctrl + d or /bye to exit.")
                    else:
                        print()
                    self.pending, self.open_block = [], None
                    continue
                if not await self.take(line):
                    return
        finally:
            signal.signal(signal.SIGINT, previous)

    async def take(self, line: str) -> bool:
        """Act on one line; False when it ends the session."""
        if self.open_block is not None:
            text, closed = _cut_closing(line)
            self.pending.append(text)
            if closed:
                block, whole = self.open_block, "\n".join(self.pending)
                self.pending, self.open_block = [], None
                if block == "system":
                    self.set_system(whole)
                else:
                    await self.send(whole)
            return True
        if line.startswith(QUOTES):
            text, closed = _cut_closing(line[len(QUOTES):])
            if closed:
                await self.send(text)
            else:
                self.pending, self.open_block = [text], "message"
            return True
        if line.startswith("/"):
            return await self.command(line)
        if line:
            await self.send(line)
        return True

    async def send(self, text: str) -> None:
        """Ask the model; Ctrl+C while it answers cancels the answer (closing its request)."""
        self.opts.messages.append({"role": "user", "content": text})
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(answer(self.c, self.opts))
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            reply = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            print()  # the prompt starts on a line of its own after the cut-off answer
            return
        except ClientError as exc:
            self.opts.messages.pop()
            print(f"Error: {exc}")
            return
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        self.opts.messages.append(reply)

    async def command(self, line: str) -> bool:
        args = line.split()
        name, rest = args[0], args[1:]
        if name in ("/bye", "/exit"):
            return False
        if name in ("/?", "/help"):
            topic = rest[0].lstrip("/") if rest else ""
            _help({"set": USAGE_SET, "show": USAGE_SHOW, "shortcut": USAGE_SHORTCUTS,
                   "shortcuts": USAGE_SHORTCUTS}.get(topic, USAGE))
        elif name == "/set":
            self.set(rest)
        elif name == "/show":
            await self.show(rest)
        elif name == "/load":
            await self.load(rest)
        elif name == "/save":
            await self.save(rest)
        elif name == "/clear":
            self.opts.messages = [{"role": "system", "content": self.opts.system}] if self.opts.system else []
            print("Cleared session context")
        else:
            print(f"Unknown command '{name}'. Type /? for help")
        return True

    def set(self, args: list[str]) -> None:
        if not args:
            _help(USAGE_SET)
            return
        what, values = args[0], args[1:]
        opts = self.opts
        if what in ("history", "nohistory"):
            self.lines.recording = what == "history"
        elif what in ("wordwrap", "nowordwrap"):
            opts.wordwrap = what == "wordwrap"
            print(f"Set '{what}' mode.")
        elif what in ("verbose", "quiet"):
            opts.verbose = what == "verbose"
            print(f"Set '{what}' mode.")
        elif what == "think":
            opts.think = values[0] if values else True
            print(f"Set 'think' mode to '{values[0]}'." if values else "Set 'think' mode.")
        elif what == "nothink":
            opts.think = False
            print("Set 'nothink' mode.")
        elif what == "format":
            if values[:1] != ["json"]:
                print("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                opts.format = "json"
                print("Set format to 'json' mode.")
        elif what == "noformat":
            opts.format = None
            print("Disabled format.")
        elif what == "parameter":
            self.set_parameter(values)
        elif what == "system":
            self.start_system(values)
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")

    def set_parameter(self, values: list[str]) -> None:
        if len(values) < 2:
            _help(USAGE_PARAMETERS)
            return
        name, given = values[0], values[1:]
        try:
            parsed = parse_parameters((name, value) for value in given)
        except (ModelfileError, ValueError) as exc:
            print(f'Couldn\'t set parameter: "{exc}"')
            return
        if name not in parsed:
            print(f'Couldn\'t set parameter: "{name} is deprecated"')
            return
        self.opts.options[name] = parsed[name]
        print(f"Set parameter '{name}' to '{', '.join(given)}'")

    def start_system(self, words: list[str]) -> None:
        if not words:
            _help(USAGE_SET)
            return
        text = " ".join(words)
        if text.startswith(QUOTES):
            text, closed = _cut_closing(text[len(QUOTES):])
            if not closed:
                self.pending, self.open_block = [text], "system"
                return
        self.set_system(text)

    def set_system(self, text: str) -> None:
        """The system message: it replaces one that ends the conversation, else it is appended."""
        self.opts.system = text
        message = {"role": "system", "content": text}
        if self.opts.messages and self.opts.messages[-1]["role"] == "system":
            self.opts.messages[-1] = message
        else:
            self.opts.messages.append(message)
        print("Set system message.")

    async def show(self, args: list[str]) -> None:
        if not args:
            _help(USAGE_SHOW)
            return
        request: dict[str, Any] = {"model": self.opts.model}
        if self.opts.system:
            request["system"] = self.opts.system
        try:
            data = await self.c.request("POST", "/api/show", request)
        except ClientError as exc:
            print(f"error: couldn't get model: {exc}")
            return
        what = args[0]
        if what == "info":
            print_info(data, sys.stderr)
        elif what == "license":
            print(data.get("license") or "No license was specified for this model.")
        elif what == "modelfile":
            print(data.get("modelfile", ""))
        elif what == "parameters":
            self.show_parameters(data.get("parameters", ""))
        elif what == "system":
            system = self.opts.system or data.get("system", "")
            print(f"{system}\n" if system else "No system message was specified for this model.")
        elif what == "template":
            print(data.get("template") or "No prompt template was specified for this model.")
        else:
            print(f"Unknown command '/show {what}'. Type /? for help")

    def show_parameters(self, stored: str) -> None:
        print("Model defined parameters:")
        if stored:
            for line in stored.splitlines():
                print(f"  {line}")
        else:
            print("  No additional parameters were specified for this model.")
        print()
        if self.opts.options:
            print("User defined parameters:")
            for key, value in self.opts.options.items():
                print(f"  {key:<30} {_go_value(value)}")
            print()

    async def load(self, args: list[str]) -> None:
        """Switch to another model (or a saved session): a fresh conversation, the options kept."""
        if len(args) != 1:
            print("Usage:\n  /load <modelname>")
            return
        name = args[0]
        print(f"Loading model '{name}'")
        try:
            info = await self.c.request("POST", "/api/show", {"model": name})
            candidate = dataclasses.replace(self.opts, model=name, messages=[], system="",
                                            loaded_messages=list(info.get("messages", [])))
            await load(self.c, candidate)
        except ClientError as exc:
            print(f"Couldn't find model '{name}'" if exc.status == 404 else f"error: {exc}")
            return
        self.opts = candidate

    async def save(self, args: list[str]) -> None:
        """Create a model from this session: its model, system message, parameters and messages."""
        if len(args) != 1:
            print("Usage:\n  /save <modelname>")
            return
        name = args[0]
        body: dict[str, Any] = {"model": name, "from": self.opts.model}
        if self.opts.system:
            body["system"] = self.opts.system
        if self.opts.options:
            body["parameters"] = self.opts.options
        messages = [*self.opts.loaded_messages, *self.opts.messages]
        if messages:
            body["messages"] = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
        try:
            async for _ in self.c.stream("/api/create", body):
                pass
        except ClientError as exc:
            print(f"error: The model name '{name}' is invalid" if "invalid model name" in str(exc)
                  else f"error: {exc}")
            return
        print(f"Created new model '{name}'")


def print_loaded_messages(messages: list[dict[str, Any]]) -> None:
    """A model's own MESSAGEs, shown as the conversation so far when the chat starts (as ollama does)."""
    for message in messages:
        if message.get("role") == "user":
            print(f">>> {message.get('content', '')}")
        elif message.get("role") == "assistant":
            print(f"{message.get('content', '')}\n")
