"""The grammar of Go's text/template/parse: tokens in, a parse tree and its definitions out.

Go rejects a bad template when it parses, not when it runs -- an undefined variable or
function, `{{break}}` outside a range, a second definition of a name -- and ollama answers
those templates with Go's messages. The parser is its own stage so that those checks, and the
tree the executor and the prompt layer rely on, come out exactly as Go's parser makes them.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from typing import NoReturn

from runner.template.errors import TemplateError
from runner.template.lex import (
    ASSIGN,
    BOOL,
    CHAR,
    CHARCONST,
    DECLARE,
    DOT,
    EOF,
    ERROR,
    FIELD,
    IDENT,
    KW,
    LEFT,
    LPAREN,
    NIL,
    NUMBER,
    PIPE,
    RAW,
    RIGHT,
    RPAREN,
    SPACE,
    SPACE_CHARS,
    STRING,
    TEXT,
    VAR,
    Lexer,
    Tok,
)
from runner.template.node import (
    ActionNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    IfNode,
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
from runner.template.strconv import go_quote, go_unquote


def parse(text: str, funcs: Container[str]) -> tuple[ListNode, dict[str, ListNode]]:
    """The main tree of template source and the trees it defines by name (`define`, `block`).

    `funcs` names the functions a template may call; any other name is a parse error, as in Go.
    """
    parser = _Parser(Lexer(text).run(), funcs)
    root = parser.parse()
    return root, parser.defs


@dataclass(eq=False)
class _End(Node):
    """An `{{end}}`: closes the list being parsed and never stays in the tree."""

    def __str__(self) -> str:
        return "{{end}}"


@dataclass(eq=False)
class _Else(Node):
    """An `{{else}}`: switches a control structure to its else list and never stays in the tree."""

    def __str__(self) -> str:
        return "{{else}}"


_OPERAND_START = frozenset({BOOL, CHARCONST, DOT, FIELD, IDENT, NUMBER, NIL, RAW, STRING, VAR, LPAREN})


class _Parser:
    """Builds the parse tree with text/template/parse's grammar and its parse-time checks."""

    def __init__(self, tokens: list[Tok], funcs: Container[str]) -> None:
        self.tokens = tokens
        self.funcs = funcs
        self.i = 0
        self.line = 1
        self.vars = ["$"]
        self.range_depth = 0
        self.defs: dict[str, ListNode] = {}

    # token stream -----------------------------------------------------------------------------

    def next(self) -> Tok:
        tok = self.tokens[self.i]
        self.line = tok.line
        if tok.kind == ERROR:
            self.error(tok.val)
        if tok.kind != EOF:
            self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> Tok:
        tok = self.next()
        if tok.kind != EOF:
            self.backup()
        return tok

    def next_non_space(self) -> Tok:
        tok = self.next()
        while tok.kind == SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Tok:
        tok = self.next_non_space()
        if tok.kind != EOF:
            self.backup()
        return tok

    def expect(self, kind: str, context: str) -> Tok:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def error(self, message: str) -> NoReturn:
        raise TemplateError(f"template: :{self.line}: {message}")

    def unexpected(self, tok: Tok, context: str) -> NoReturn:
        self.error(f"unexpected {tok} in {context}")

    # structure --------------------------------------------------------------------------------

    def parse(self) -> ListNode:
        root = ListNode(self.peek().pos, [])
        while self.peek().kind != EOF:
            if self.peek().kind == LEFT:
                start = self.i
                self.next()
                tok = self.next_non_space()
                if tok.kind == KW and tok.val == "define":
                    self.parse_definition()
                    continue
                self.i = start
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                self.error(f"unexpected {node}")
            root.nodes.append(node)
        return root

    def parse_definition(self) -> None:
        name = self.template_name(self.next_non_space(), "define clause")
        self.expect(RIGHT, "define clause")
        self.add_definition(name, self.sub_tree("define clause"))

    def sub_tree(self, context: str) -> ListNode:
        """The body of a define or block: a fresh tree with only `$` in scope."""
        outer = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list()
        if not isinstance(end, _End):
            self.error(f"unexpected {end} in {context}")
        self.vars, self.range_depth = outer
        return body

    def add_definition(self, name: str, body: ListNode) -> None:
        existing = self.defs.get(name)
        if existing is None or _is_empty_tree(existing):
            self.defs[name] = body
        elif not _is_empty_tree(body):
            self.error(f"template: multiple definition of template {go_quote(name)}")

    def item_list(self) -> tuple[ListNode, Node]:
        items = ListNode(self.peek_non_space().pos, [])
        while self.peek_non_space().kind != EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return items, node
            items.nodes.append(node)
        self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.kind == LEFT:
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == KW:
            control = {
                "block": self.block_control,
                "break": self.break_control,
                "continue": self.break_control,
                "else": self.else_control,
                "end": self.end_control,
                "if": self.if_control,
                "range": self.range_control,
                "template": self.template_control,
                "with": self.with_control,
            }.get(tok.val)
            if control is not None:
                return control(tok)
        self.backup()
        start = self.peek()
        return ActionNode(start.pos, self.pipeline("command", RIGHT))

    def parse_control(self, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        nvars = len(self.vars)
        pipe = self.pipeline(context, RIGHT)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, _Else):
            follow = self.peek()
            if context in ("if", "with") and follow.kind == KW and follow.val == context:
                # "{{else if x}}" is "{{else}}{{if x}}...{{end}}" sharing the outer {{end}}
                kw = self.next()
                chained = self.if_control(kw) if context == "if" else self.with_control(kw)
                else_list = ListNode(nxt.pos, [chained])
            else:
                else_list, nxt = self.item_list()
                if not isinstance(nxt, _End):
                    self.error(f"expected end; found {nxt}")
        del self.vars[nvars:]
        return pipe, body, else_list

    def if_control(self, tok: Tok) -> Node:
        return IfNode(tok.pos, *self.parse_control("if"))

    def range_control(self, tok: Tok) -> Node:
        return RangeNode(tok.pos, *self.parse_control("range"))

    def with_control(self, tok: Tok) -> Node:
        return WithNode(tok.pos, *self.parse_control("with"))

    def end_control(self, tok: Tok) -> Node:
        self.expect(RIGHT, "end")
        return _End(tok.pos)

    def else_control(self, tok: Tok) -> Node:
        follow = self.peek_non_space()
        if follow.kind == KW and follow.val in ("if", "with"):
            return _Else(follow.pos)
        self.expect(RIGHT, "else")
        return _Else(tok.pos)

    def break_control(self, tok: Tok) -> Node:
        after = self.next_non_space()
        if after.kind != RIGHT:
            self.unexpected(after, f"{{{{{tok.val}}}}}")
        if self.range_depth == 0:
            self.error(f"{{{{{tok.val}}}}} outside {{{{range}}}}")
        return BreakNode(tok.pos) if tok.val == "break" else ContinueNode(tok.pos)

    def template_control(self, tok: Tok) -> Node:
        name_tok = self.next_non_space()
        name = self.template_name(name_tok, "template clause")
        pipe = None
        if self.next_non_space().kind != RIGHT:
            self.backup()
            pipe = self.pipeline("template clause", RIGHT)
        return TemplateNode(name_tok.pos, name, pipe)

    def block_control(self, tok: Tok) -> Node:
        name_tok = self.next_non_space()
        name = self.template_name(name_tok, "block clause")
        pipe = self.pipeline("block clause", RIGHT)
        self.add_definition(name, self.sub_tree("block clause"))
        return TemplateNode(name_tok.pos, name, pipe)

    def template_name(self, tok: Tok, context: str) -> str:
        if tok.kind not in (STRING, RAW):
            self.unexpected(tok, context)
        return self.unquote(tok)

    # pipelines --------------------------------------------------------------------------------

    def pipeline(self, context: str, end: str) -> PipeNode:
        pipe = PipeNode(self.peek_non_space().pos, [], False, [])
        self.declarations(pipe, context)
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.kind not in _OPERAND_START:
                self.unexpected(tok, context)
            self.backup()
            pipe.cmds.append(self.command())

    def declarations(self, pipe: PipeNode, context: str) -> None:
        while self.peek_non_space().kind == VAR:
            start = self.i
            var = self.next()
            follow = self.peek_non_space()
            if follow.kind in (ASSIGN, DECLARE):
                self.next_non_space()
                pipe.is_assign = follow.kind == ASSIGN
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                return
            if follow.kind == CHAR and follow.val == ",":
                self.next_non_space()
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in (VAR, RIGHT, RPAREN):
                        continue
                    self.error("range can only initialize variables")
                self.error(f"too many declarations in {context}")
            self.i = start
            return

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.error(f"missing value for {context}")
        for stage, cmd in enumerate(pipe.cmds[1:], start=2):
            if isinstance(cmd.args[0], LiteralNode | DotNode | NilNode):
                self.error(f"non executable command in pipeline stage {stage}")

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos, [])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind == SPACE:
                continue
            if tok.kind in (RIGHT, RPAREN):
                self.backup()
            elif tok.kind != PIPE:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != FIELD:
            return node
        chain_pos = self.peek().pos
        fields: list[str] = []
        while self.peek().kind == FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(chain_pos, (*node.idents, *fields))
        if isinstance(node, VariableNode):
            return VariableNode(chain_pos, (*node.idents, *fields))
        if isinstance(node, LiteralNode | NilNode | DotNode):
            self.error(f"unexpected . after term {go_quote(str(node))}")
        return ChainNode(chain_pos, node, tuple(fields))

    def term(self) -> Node | None:
        tok = self.next_non_space()
        kind = tok.kind
        if kind == IDENT:
            if tok.val not in self.funcs:
                self.error(f"function {go_quote(tok.val)} not defined")
            return IdentifierNode(tok.pos, tok.val)
        if kind == DOT:
            return DotNode(tok.pos)
        if kind == NIL:
            return NilNode(tok.pos)
        if kind == VAR:
            if tok.val not in self.vars:
                self.error(f"undefined variable {go_quote(tok.val)}")
            return VariableNode(tok.pos, (tok.val,))
        if kind == FIELD:
            return FieldNode(tok.pos, (tok.val[1:],))
        if kind == BOOL:
            return LiteralNode(tok.pos, tok.val, tok.val == "true")
        if kind == CHARCONST:
            char = self.unquote(tok)
            if not char:
                self.error("invalid syntax")
            if len(char) != 1:
                self.error(f"malformed character constant: {tok.val}")
            return LiteralNode(tok.pos, tok.val, ord(char))
        if kind == NUMBER:
            return LiteralNode(tok.pos, tok.val, self.number(tok.val))
        if kind == LPAREN:
            return self.pipeline("parenthesized pipeline", RPAREN)
        if kind in (STRING, RAW):
            return LiteralNode(tok.pos, tok.val, self.unquote(tok))
        self.backup()
        return None

    def number(self, text: str) -> int | float:
        """Go's ideal constants: floats when written with a point or exponent, ints otherwise."""
        unsigned = text.lstrip("+-")
        hex_int = unsigned[:2].lower() == "0x" and not any(c in unsigned for c in "pP")
        try:
            if not hex_int and any(c in unsigned for c in ".eEpP"):
                if unsigned[:2].lower() == "0x":
                    return float.fromhex(text.replace("_", ""))
                return float(text)
            if re.fullmatch(r"[+-]?0[0-7_]+", text):
                return int(text.replace("_", ""), 8)
            return int(text, 0)
        except ValueError:
            self.error(f"illegal number syntax: {go_quote(text)}")

    def unquote(self, tok: Tok) -> str:
        if tok.kind == RAW:
            return tok.val[1:-1].replace("\r", "")
        try:
            return go_unquote(tok.val[1:-1], tok.val[0])
        except ValueError:
            self.error("invalid syntax")


def _is_empty_tree(node: Node) -> bool:
    if isinstance(node, ListNode):
        return all(_is_empty_tree(n) for n in node.nodes)
    return isinstance(node, TextNode) and not node.text.strip(SPACE_CHARS)
