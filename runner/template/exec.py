"""Go's text/template executor: runs a parse tree on data and returns the text it writes.

Execution is where Go's semantics show -- `missingkey=zero`, variable scoping, lazy `and`/`or`,
range over maps in key order, field lookup that errors on structs but not on maps -- and where
its error messages name the action and position that failed. It is kept apart from the
`Template` class so that the parsed tree, not the API around it, is all it depends on.

Unlike Go's, an execution is bounded (`Limits`): a template comes from whoever can create a
model or send a request, and `{{ range $i := 1000000000 }}` or a `{{template}}` that calls
itself twice would otherwise hold a worker thread and grow memory for as long as it likes.
Past a bound it stops with `TemplateLimitError`, which names the bound and where it was hit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from runner.template.errors import TemplateError
from runner.template.fmt import sprint
from runner.template.funcs import FUNCS, ArgError, CallError
from runner.template.node import (
    ActionNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    ListNode,
    LiteralNode,
    NilNode,
    Node,
    PipeNode,
    RangeNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)
from runner.template.strconv import go_quote
from runner.template.values import GoMap, GoStruct, PropertyType, is_true, sorted_keys, type_name


@dataclass(frozen=True)
class Limits:
    """How much one execution may do. Real chat templates use a tiny part of each: a prompt is
    at most a request body (16 MiB) of text, one range step per message or tool."""

    steps: int = 10_000_000  # nodes executed, range iterations and template calls included
    range_iterations: int = 1_000_000
    output: int = 64 * 1024 * 1024  # characters written, or held by one value
    seconds: float = 30.0


DEFAULT_LIMITS = Limits()
_CLOCK_EVERY = 4096  # steps between looks at the clock


class TemplateLimitError(TemplateError):
    """An execution went past one of its `Limits`."""


def execute(
    root: ListNode, data: Any, *, source: str, defs: Mapping[str, ListNode], limits: Limits = DEFAULT_LIMITS
) -> str:
    """The text `root` writes when run on `data`; `defs` are the trees `{{template}}` can call
    and `source` is the template text that error positions refer to."""
    return _State(source, defs, limits).run(root, data)


class _Break(Exception):
    """{{ break }}: unwinds to the innermost range."""


class _Continue(Exception):
    """{{ continue }}: unwinds to the innermost range, which moves to its next element."""


_MISSING: Any = object()  # "no value piped in", distinct from a nil value
_MAX_DEPTH = 50


class _State:
    """One execution: output buffer, variable stack and the node being evaluated (for errors)."""

    def __init__(self, source: str, defs: Mapping[str, ListNode], limits: Limits) -> None:
        self.source = source
        self.defs = defs
        self.limits = limits
        self.steps = self.iterations = self.size = 0
        self.deadline = time.monotonic() + limits.seconds
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.node: Node | None = None
        self.name = ""
        self.depth = 0

    def run(self, root: ListNode, data: Any) -> str:
        self.vars = [["$", data]]
        try:
            self.walk(data, root)
        except RecursionError:
            self.error("template nesting too deep")
        return "".join(self.out)

    def error(self, message: str, kind: type[TemplateError] = TemplateError) -> NoReturn:
        node = self.node
        if node is None:
            raise kind(f"template: {message}")
        before = self.source[: node.pos]
        location = f"{before.count(chr(10)) + 1}:{node.pos - (before.rfind(chr(10)) + 1)}"
        raise kind(f"template: :{location}: executing {go_quote(self.name)} at <{node}>: {message}")

    # bounds -----------------------------------------------------------------------------------

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            self.error(f"execution exceeded {self.limits.steps} steps", TemplateLimitError)
        if self.steps % _CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
            self.error(f"execution exceeded {self.limits.seconds:g} seconds", TemplateLimitError)

    def check_size(self, value: Any) -> None:
        """A string longer than the output bound may not be written nor held (doubling a variable
        in a loop grows memory without writing anything)."""
        if isinstance(value, str) and len(value) > self.limits.output:
            self.error(f"a value exceeded {self.limits.output} characters", TemplateLimitError)

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limits.output:
            self.error(f"output exceeded {self.limits.output} characters", TemplateLimitError)
        self.out.append(text)

    # statements -------------------------------------------------------------------------------

    def walk(self, dot: Any, node: Node) -> None:
        self.node = node
        self.step()
        if isinstance(node, TextNode):
            self.write(node.text)
        elif isinstance(node, ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.write("<no value>" if value is None else sprint([value]))
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, BranchNode):
            self.walk_if_or_with(dot, node)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue

    def walk_if_or_with(self, dot: Any, node: BranchNode) -> None:
        mark = len(self.vars)
        try:
            value = self.eval_pipeline(dot, node.pipe)
            if is_true(value):
                self.walk(value if isinstance(node, WithNode) else dot, node.body)
            elif node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: RangeNode) -> None:
        mark = len(self.vars)
        try:
            value = self.eval_pipeline(dot, node.pipe)
            top = len(self.vars)
            ran = False
            for index, elem in self.range_items(value, node):
                ran = True
                self.iterations += 1
                if self.iterations > self.limits.range_iterations:
                    self.node = node
                    self.error(f"range exceeded {self.limits.range_iterations} iterations", TemplateLimitError)
                self.set_range_vars(node.pipe, index, elem)
                try:
                    with contextlib.suppress(_Continue):
                        self.walk(elem, node.body)
                except _Break:
                    return
                finally:
                    del self.vars[top:]
            if not ran and node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def range_items(self, value: Any, node: RangeNode) -> Iterable[tuple[Any, Any]]:
        if value is None:
            return ()
        if isinstance(value, PropertyType):
            return enumerate(value.types)
        if isinstance(value, dict):
            return ((key, value[key]) for key in sorted_keys(value))
        if isinstance(value, list | tuple | bytes | bytearray):
            return enumerate(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.error(f"can't use {value} to iterate over more than one variable")
            return ((None, i) for i in range(value))
        self.error(f"range can't iterate over {sprint([value])}")

    def set_range_vars(self, pipe: PipeNode, index: Any, elem: Any) -> None:
        decl = pipe.decl
        if decl:
            if pipe.is_assign:
                self.set_var(decl[0], index if len(decl) > 1 else elem)
            else:
                self.vars[-1][1] = elem
        if len(decl) > 1:
            if pipe.is_assign:
                self.set_var(decl[1], elem)
            else:
                self.vars[-2][1] = index

    def walk_template(self, dot: Any, node: TemplateNode) -> None:
        body = self.defs.get(node.name)
        if body is None:
            self.error(f"template {go_quote(node.name)} not defined")
        if self.depth >= _MAX_DEPTH:
            self.error(f"exceeded maximum template depth ({_MAX_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        saved = self.vars, self.name
        self.vars, self.name = [["$", new_dot]], node.name
        self.depth += 1
        try:
            self.walk(new_dot, body)
        finally:
            self.vars, self.name = saved
            self.depth -= 1

    # variables --------------------------------------------------------------------------------

    def var_value(self, name: str) -> Any:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        self.error(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        self.error(f"undefined variable: {name}")

    # expressions ------------------------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: PipeNode) -> Any:
        self.node = pipe
        value = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def eval_command(self, dot: Any, cmd: CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            return self.eval_field_chain(dot, first, first.idents, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self.node = cmd if isinstance(first, PipeNode) else first
        self.not_a_function(cmd.args, final)
        if isinstance(first, PipeNode):
            return self.eval_pipeline(dot, first)
        if isinstance(first, NilNode):
            self.error("nil is not a command")
        if isinstance(first, LiteralNode):
            return first.value
        return dot

    def not_a_function(self, args: Sequence[Node], final: Any) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.error(f"can't give argument to non-function {args[0]}")

    def eval_arg(self, dot: Any, node: Node) -> Any:
        self.node = node
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, FieldNode):
            return self.eval_field_chain(dot, node, node.idents, [node], _MISSING)
        if isinstance(node, VariableNode):
            return self.eval_variable(dot, node, [node], _MISSING)
        if isinstance(node, PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.eval_function(dot, node, node, [node], _MISSING)
        if isinstance(node, ChainNode):
            return self.eval_chain(dot, node, [node], _MISSING)
        return cast(LiteralNode, node).value

    def eval_variable(self, dot: Any, node: VariableNode, args: Sequence[Node], final: Any) -> Any:
        self.node = node
        value = self.var_value(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_fields(value, node, node.idents[1:], args, final)

    def eval_chain(self, dot: Any, node: ChainNode, args: Sequence[Node], final: Any) -> Any:
        if isinstance(node.node, NilNode):
            self.error(f"indirection through explicit nil in {node}")
        receiver = self.eval_arg(dot, node.node)
        return self.eval_fields(receiver, node, node.fields, args, final)

    def eval_field_chain(
        self, dot: Any, node: FieldNode, idents: Sequence[str], args: Sequence[Node], final: Any
    ) -> Any:
        self.node = node
        return self.eval_fields(dot, node, idents, args, final)

    def eval_fields(self, receiver: Any, node: Node, idents: Sequence[str], args: Sequence[Node], final: Any) -> Any:
        """Follows `.A.B.C` from a receiver; only the last step may receive arguments.

        A nil receiver at the start yields nil (Go's invalid value), but a nil met half-way is
        a nil interface that Go refuses to look into.
        """
        last = len(idents) - 1
        from_map = False  # values held by a map[string]any are `interface {}` to Go
        for i, name in enumerate(idents):
            has_args = i == last and (len(args) > 1 or final is not _MISSING)
            if receiver is None:
                if i == 0:
                    return None
                self.error(f"nil pointer evaluating interface {{}}.{name}")
            if isinstance(receiver, GoStruct) and name in receiver.fields:
                if has_args:
                    self.error(f"{name} has arguments but cannot be invoked as function")
                receiver = receiver.fields[name]
            elif isinstance(receiver, dict):
                if has_args:
                    self.error(f"{name} is not a method but has arguments")
                from_map = not isinstance(receiver, GoMap) or receiver.go_type == "template.templateArgs"
                receiver = receiver.get(name)
            else:
                receiver_type = "interface {}" if from_map else type_name(receiver)
                self.error(f"can't evaluate field {name} in type {receiver_type}")
        return receiver

    def eval_function(self, dot: Any, node: IdentifierNode, cmd: Node, args: Sequence[Node], final: Any) -> Any:
        self.node = node
        name = node.name
        func = FUNCS[name]
        count = len(args) - 1 + (final is not _MISSING)
        if count < func.min_args or (func.max_args is not None and count > func.max_args):
            want = f"at least {func.min_args}" if func.max_args is None else str(func.min_args)
            self.error(f"wrong number of args for {name}: want {want} got {count}")
        if func.impl is None:
            return self.eval_and_or(dot, name, args[1:], final)
        values = [self.eval_arg(dot, arg) for arg in args[1:]]
        if final is not _MISSING:
            values.append(final)
        self.node = cmd
        self.step()
        try:
            result = func.impl(*values)
        except CallError as err:
            self.error(f"error calling {name}: {err}")
        except ArgError as err:
            self.error(str(err))
        self.check_size(result)
        return result

    def eval_and_or(self, dot: Any, name: str, args: Sequence[Node], final: Any) -> Any:
        """`and`/`or` stop at the first operand that decides the result and return it."""
        value = None
        for arg in args:
            value = self.eval_arg(dot, arg)
            if is_true(value) == (name == "or"):
                return value
        return final if final is not _MISSING else value
