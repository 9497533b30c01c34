"""The public face of the template engine: parse once, then execute, the way ollama does.

Callers hold a `Template` parsed from a model's manifest and execute it per request; ollama's
template.Parse adds to Go's parsing the `{{ .Response }}` appended to templates that never
mention it, the case-insensitive `mentions` check and the legacy cut at `.Response` that ends
a prompt where the model's answer starts. Those belong to neither the parser nor the executor.
Unlike ollama, the cut pass keeps the custom functions and defined templates that ollama loses
when it rebuilds the cut tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

from runner.template.errors import TemplateError
from runner.template.exec import DEFAULT_LIMITS, Limits, execute
from runner.template.funcs import FUNCS
from runner.template.node import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    TemplateNode,
    VariableNode,
    walk,
)
from runner.template.parse import parse


def _identifiers(tree: ListNode) -> Iterator[str]:
    """Field and variable names, walked like ollama's template.Identifiers.

    Like ollama it does not look inside `(pipeline).Field` chains, and it rejects a
    `{{template}}` call without a pipeline ("undefined template specified").
    """
    for node, _ in walk(tree):
        if isinstance(node, TemplateNode) and node.pipe is None:
            raise TemplateError("undefined template specified")
        if isinstance(node, FieldNode | VariableNode):
            yield from node.idents


def _response_action(pos: int) -> ActionNode:
    """`{{ .Response }}`, which ollama appends to templates that never mention it."""
    field_node = FieldNode(pos, ("Response",))
    return ActionNode(pos, PipeNode(pos, [], False, [CommandNode(pos, [field_node])]))


class _ResponseCut:
    """Copies a tree without everything after the first `.Response` field, like ollama's deleteNode.

    The walk visits nodes in ollama's order: control-structure conditions are not looked at, and
    a pipeline whose command loses all its arguments disappears with its action.
    """

    def __init__(self) -> None:
        self.cut = False

    def drop(self, node: Node) -> bool:
        if isinstance(node, FieldNode) and "Response" in node.idents:
            self.cut = True
            return False
        return self.cut

    def copy(self, node: Node) -> Node | None:
        if self.drop(node):
            return None
        if isinstance(node, ListNode):
            return ListNode(node.pos, [c for c in map(self.copy, node.nodes) if c is not None])
        if isinstance(node, BranchNode):
            body = cast(ListNode, self.copy(node.body))
            else_body = None if node.else_body is None else cast(ListNode | None, self.copy(node.else_body))
            return type(node)(node.pos, node.pipe, body, else_body)
        if isinstance(node, ActionNode):
            pipe = self.copy(node.pipe)
            return None if pipe is None else ActionNode(node.pos, cast(PipeNode, pipe))
        if isinstance(node, PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = [a for a in map(self.copy, cmd.args) if a is not None]
                if not args:
                    return None
                cmds.append(CommandNode(cmd.pos, args))
            return PipeNode(node.pos, node.decl, node.is_assign, cmds) if cmds else None
        return node


class Template:
    """A parsed chat template. Build one with `Template.parse`."""

    def __init__(self, source: str, root: ListNode, defs: dict[str, ListNode], names: frozenset[str]) -> None:
        self._source = source
        self._root = root
        self._defs = defs
        self._names = names
        self._legacy_root: ListNode | None = None

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parses Go template source the way ollama's template.Parse does, `{{ .Response }}` included.

        Go's parser recurses on a growable stack; Python's does not, so a template nested deeper
        than the interpreter allows is refused as a TemplateError rather than failing as a crash.
        """
        try:
            root, defs = parse(text, FUNCS)
            names = {name.lower() for body in (root, *defs.values()) for name in _identifiers(body)}
        except RecursionError:
            raise TemplateError("template: nesting too deep") from None
        if "messages" not in names and "response" not in names:
            root.nodes.append(_response_action(len(text)))
            names.add("response")
        return cls(text, root, defs, frozenset(names))

    @property
    def source(self) -> str:
        return self._source

    @property
    def root(self) -> ListNode:
        """The main tree, for static analysis such as tool-call and thinking tag inference."""
        return self._root

    def mentions(self, field: str) -> bool:
        """Whether a field or variable of that name (compared case-insensitively, as ollama does)
        is referenced anywhere in the template or its definitions."""
        return field.lower() in self._names

    def execute(self, data: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
        """Runs the template on `data` with Go semantics and `missingkey=zero`, within `limits`."""
        return execute(self._root, dict(data), source=self._source, defs=self._defs, limits=limits)

    def execute_until_response(self, data: Mapping[str, Any]) -> str:
        """Runs the template with everything after its first `.Response` removed, so a legacy
        template ends where the model's answer starts."""
        if self._legacy_root is None:
            self._legacy_root = cast(ListNode, _ResponseCut().copy(self._root))
        return execute(self._legacy_root, dict(data), source=self._source, defs=self._defs)
