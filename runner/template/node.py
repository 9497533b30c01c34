"""The parse tree of a Go template, and the one way to walk it.

The parser builds these nodes, the executor runs them, and the prompt layer reads them to infer
a model's thinking and tool-call tags; keeping them apart from all three lets each depend on the
tree alone. Printing a node gives its source form, which Go's error messages quote.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runner.template.strconv import go_quote


@dataclass(eq=False)
class Node:
    """A parse-tree node; `pos` is the offset in the source, for error messages."""

    pos: int


@dataclass(eq=False)
class TextNode(Node):
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class FieldNode(Node):
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


@dataclass(eq=False)
class VariableNode(Node):
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.idents)


@dataclass(eq=False)
class IdentifierNode(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(eq=False)
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass(eq=False)
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass(eq=False)
class LiteralNode(Node):
    """A bool, number, char or string constant: `text` as written, `value` as evaluated."""

    text: str
    value: Any

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class CommandNode(Node):
    args: list[Node]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass(eq=False)
class PipeNode(Node):
    decl: list[str]
    is_assign: bool
    cmds: list[CommandNode]

    def __str__(self) -> str:
        head = f"{', '.join(self.decl)} {'=' if self.is_assign else ':='} " if self.decl else ""
        return head + " | ".join(str(c) for c in self.cmds)


@dataclass(eq=False)
class ChainNode(Node):
    node: Node
    fields: tuple[str, ...]

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + f for f in self.fields)


@dataclass(eq=False)
class ListNode(Node):
    nodes: list[Node]

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass(eq=False)
class ActionNode(Node):
    pipe: PipeNode

    def __str__(self) -> str:
        return f"{{{{{self.pipe}}}}}"


@dataclass(eq=False)
class BranchNode(Node):
    """Shared shape of if, range and with."""

    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None

    keyword = ""

    def __str__(self) -> str:
        tail = f"{{{{else}}}}{self.else_body}" if self.else_body is not None else ""
        return f"{{{{{self.keyword} {self.pipe}}}}}{self.body}{tail}{{{{end}}}}"


class IfNode(BranchNode):
    keyword = "if"


class RangeNode(BranchNode):
    keyword = "range"


class WithNode(BranchNode):
    keyword = "with"


@dataclass(eq=False)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None

    def __str__(self) -> str:
        tail = f" {self.pipe}" if self.pipe is not None else ""
        return f"{{{{template {go_quote(self.name)}{tail}}}}}"


@dataclass(eq=False)
class BreakNode(Node):
    def __str__(self) -> str:
        return "{{break}}"


@dataclass(eq=False)
class ContinueNode(Node):
    def __str__(self) -> str:
        return "{{continue}}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, ListNode):
        return list(node.nodes)
    if isinstance(node, BranchNode):
        return [n for n in (node.pipe, node.body, node.else_body) if n is not None]
    if isinstance(node, ActionNode | TemplateNode):
        return [node.pipe] if node.pipe is not None else []
    if isinstance(node, PipeNode):
        return list(node.cmds)
    if isinstance(node, CommandNode):
        return list(node.args)
    return []


def walk(node: Node, ancestors: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    """Every node from `node` down, in source order, each with the chain of nodes above it.

    The chain runs outermost first, starting from `ancestors`. A node comes before its children,
    and a control structure's pipeline before its bodies. Like ollama's tree visitors it does
    not enter the receiver of a `(pipeline).Field` chain.
    """
    yield node, ancestors
    above = (*ancestors, node)
    for child in _children(node):
        yield from walk(child, above)
