"""Go `text/template` for ollama chat templates, and ollama's way of feeding them.

Model manifests carry their prompt format as a Go template, and clients (and ollama's own
golden tests) expect byte-identical prompts. Python has no Go template engine, so this module
implements the part of `text/template` that chat templates use -- lexer, parser and executor
with Go's truthiness, printing, `fmt` verbs and `encoding/json` output -- plus the data layout
and the legacy `.Prompt`/`.Response` turn loop of ollama's `template` package.

Deliberate differences from ollama are few and favour the intended behaviour over its bugs:
`{{ .Function }}` and `{{ .Function.Parameters }}` print JSON (ollama prints Go struct syntax
since v0.14), the final legacy pass keeps the custom functions and defined templates that
ollama loses when it rebuilds the cut tree, and ints/floats compare with each other (Go's
arguments are float64 where Python's JSON decoder yields ints).
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, NoReturn, cast


class TemplateError(ValueError):
    """A template that does not parse or fails while executing; the message suits a 400 reply."""


# ---------------------------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_KEYWORDS = frozenset({"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"})

# token kinds
_TEXT, _LEFT, _RIGHT, _SPC, _IDENT, _FIELD, _VAR, _DOT = "text", "{{", "}}", "space", "ident", "field", "var", "."
_STRING, _RAW, _CHARCONST, _NUMBER, _BOOL, _NIL = "string", "raw", "charconst", "number", "bool", "nil"
_PIPE, _LPAREN, _RPAREN, _DECLARE, _ASSIGN, _CHAR = "|", "(", ")", ":=", "=", "char"
_KW, _EOF, _ERROR = "keyword", "EOF", "error"


class _Tok(NamedTuple):
    kind: str
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        if self.kind == _EOF:
            return "EOF"
        if self.kind == _KW:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return _go_quote(self.val[:10]) + "..."
        return _go_quote(self.val)


class _LexError(Exception):
    """Raised by the lexer; the parser turns it into a TemplateError with the line number."""


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _rune_desc(c: str) -> str:
    """Go's %#U, used in lexer messages."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


class _Lexer:
    """Splits template source into tokens the way text/template/parse's lexer does.

    Lexing is eager; an error becomes a final `_ERROR` token so that the parser reports it at
    the place it is reached, as Go's lazy lexer does.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.paren = 0
        self.tokens: list[_Tok] = []

    def run(self) -> list[_Tok]:
        try:
            self._lex_text()
        except _LexError as err:
            self.tokens.append(_Tok(_ERROR, str(err), self.pos, self.line))
        return self.tokens

    def _emit(self, kind: str, start: int) -> None:
        self.tokens.append(_Tok(kind, self.text[start : self.pos], start, self.line))

    def _advance_to(self, pos: int) -> None:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos

    def _lex_text(self) -> None:
        text = self.text
        while True:
            x = text.find("{{", self.pos)
            if x < 0:
                if self.pos < len(text):
                    self.tokens.append(_Tok(_TEXT, text[self.pos :], self.pos, self.line))
                self.pos = len(text)
                self.tokens.append(_Tok(_EOF, "", self.pos, self.line))
                return
            trim = len(text) > x + 3 and text[x + 2] == "-" and text[x + 3] in _SPACE
            end = x
            if trim:
                while end > self.pos and text[end - 1] in _SPACE:
                    end -= 1
            if end > self.pos:
                self.tokens.append(_Tok(_TEXT, text[self.pos : end], self.pos, self.line))
            self._advance_to(x)
            after = x + (4 if trim else 2)
            if text.startswith("/*", after):
                self._advance_to(after)
                self._lex_comment()
            else:
                self.tokens.append(_Tok(_LEFT, "{{", x, self.line))
                self._advance_to(after)
                self._lex_action()

    def _at_right_delim(self) -> tuple[bool, bool]:
        text, p = self.text, self.pos
        if p + 1 < len(text) and text[p] in _SPACE and text[p + 1] == "-" and text.startswith("}}", p + 2):
            return True, True
        return text.startswith("}}", p), False

    def _skip_trimmed_space(self) -> None:
        p = self.pos
        while p < len(self.text) and self.text[p] in _SPACE:
            p += 1
        self._advance_to(p)

    def _lex_comment(self) -> None:
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise _LexError("unclosed comment")
        self._advance_to(end + 2)
        delim, trim = self._at_right_delim()
        if not delim:
            raise _LexError("comment ends before closing delimiter")
        self._advance_to(self.pos + (4 if trim else 2))
        if trim:
            self._skip_trimmed_space()

    def _at_terminator(self, p: int) -> bool:
        text = self.text
        return p >= len(text) or text[p] in _SPACE or text[p] in ".,|:)(" or text.startswith("}}", p)

    def _lex_action(self) -> None:
        self.paren = 0
        text = self.text
        while True:
            delim, trim = self._at_right_delim()
            if delim:
                if self.paren:
                    raise _LexError("unclosed left paren")
                if trim:
                    self._advance_to(self.pos + 2)
                self.tokens.append(_Tok(_RIGHT, "}}", self.pos, self.line))
                self.pos += 2
                if trim:
                    self._skip_trimmed_space()
                return
            if self.pos >= len(text):
                raise _LexError("unclosed action")
            self._lex_action_token(text[self.pos])

    def _lex_action_token(self, c: str) -> None:
        text, start = self.text, self.pos
        nxt = text[start + 1] if start + 1 < len(text) else ""
        if c in _SPACE:
            self._lex_space()
        elif c in "=|()":
            if c == "(":
                self.paren += 1
            elif c == ")":
                self.paren -= 1
            self.pos += 1
            self._emit({"=": _ASSIGN, "|": _PIPE, "(": _LPAREN, ")": _RPAREN}[c], start)
        elif c == ":":
            if nxt != "=":
                raise _LexError("expected :=")
            self.pos += 2
            self._emit(_DECLARE, start)
        elif c == '"':
            self._lex_quote()
        elif c == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise _LexError("unterminated raw quoted string")
            self.pos = end + 1
            self._emit(_RAW, start)
            self.line += text.count("\n", start, end)
        elif c == "'":
            self._lex_char()
        elif c in "$.":
            if c == "." and "0" <= nxt <= "9":
                self._lex_number()
            else:
                self._lex_field_or_variable(_VAR if c == "$" else _FIELD)
        elif c in "+-" or "0" <= c <= "9":
            self._lex_number()
        elif _is_alnum(c):
            self._lex_identifier()
        elif c.isascii() and c.isprintable():
            self.pos += 1
            self._emit(_CHAR, start)
        else:
            raise _LexError(f"unrecognized character in action: {_rune_desc(c)}")

    def _lex_space(self) -> None:
        text, start = self.text, self.pos
        p = start
        while p < len(text) and text[p] in _SPACE:
            p += 1
        if text.startswith("-}}", p):
            p -= 1  # the last space belongs to a " -}}" trim marker
            if p == start:
                return
        self._advance_to(p)
        self.tokens.append(_Tok(_SPC, text[start:p], start, self.line))

    def _lex_quote(self) -> None:
        text, start = self.text, self.pos
        p = start + 1
        while True:
            if p >= len(text) or text[p] == "\n":
                raise _LexError("unterminated quoted string")
            if text[p] == "\\":
                p += 1
                if p >= len(text) or text[p] == "\n":
                    raise _LexError("unterminated quoted string")
            elif text[p] == '"':
                break
            p += 1
        self.pos = p + 1
        self._emit(_STRING, start)

    def _lex_char(self) -> None:
        text, start = self.text, self.pos
        p = start + 1
        while True:
            if p >= len(text) or text[p] == "\n":
                raise _LexError("unterminated character constant")
            if text[p] == "\\":
                p += 1
                if p >= len(text) or text[p] == "\n":
                    raise _LexError("unterminated character constant")
            elif text[p] == "'":
                break
            p += 1
        self.pos = p + 1
        self._emit(_CHARCONST, start)

    def _lex_field_or_variable(self, kind: str) -> None:
        start = self.pos
        p = start + 1
        if self._at_terminator(p):
            self.pos = p
            self._emit(_VAR if kind == _VAR else _DOT, start)
            return
        while p < len(self.text) and _is_alnum(self.text[p]):
            p += 1
        if not self._at_terminator(p):
            raise _LexError(f"bad character {_rune_desc(self.text[p])}")
        self.pos = p
        self._emit(kind, start)

    def _lex_identifier(self) -> None:
        start = p = self.pos
        while p < len(self.text) and _is_alnum(self.text[p]):
            p += 1
        if not self._at_terminator(p):
            raise _LexError(f"bad character {_rune_desc(self.text[p])}")
        self.pos = p
        word = self.text[start:p]
        if word in _KEYWORDS:
            self._emit(_KW, start)
        elif word == "nil":
            self._emit(_NIL, start)
        elif word in ("true", "false"):
            self._emit(_BOOL, start)
        else:
            self._emit(_IDENT, start)

    def _lex_number(self) -> None:
        text, start = self.text, self.pos
        p = start
        if p < len(text) and text[p] in "+-":
            p += 1
        base = ""
        if text.startswith("0", p):
            p += 1
            if text[p : p + 1].lower() in ("x", "o", "b"):
                base = text[p].lower()
                p += 1
        digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}.get(base, "0123456789_")
        p = _accept_run(text, p, digits)
        if text.startswith(".", p):
            p = _accept_run(text, p + 1, digits)
        exponent = {"": "eE", "x": "pP"}.get(base, "")  # only decimal and hex numbers have one
        if p < len(text) and exponent and text[p] in exponent:
            p += 1
            if p < len(text) and text[p] in "+-":
                p += 1
            p = _accept_run(text, p, "0123456789_")
        if p < len(text) and (text[p] == "i" or _is_alnum(text[p]) or text[p] in "+-"):
            raise _LexError(f"bad number syntax: {_go_quote(text[start : p + 1])}")
        self.pos = p
        self._emit(_NUMBER, start)


def _accept_run(text: str, p: int, chars: str) -> int:
    while p < len(text) and text[p] in chars:
        p += 1
    return p


# ---------------------------------------------------------------------------------------------
# Parse tree
# ---------------------------------------------------------------------------------------------


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
        return f"{{{{template {_go_quote(self.name)}{tail}}}}}"


@dataclass(eq=False)
class BreakNode(Node):
    def __str__(self) -> str:
        return "{{break}}"


@dataclass(eq=False)
class ContinueNode(Node):
    def __str__(self) -> str:
        return "{{continue}}"


@dataclass(eq=False)
class _End(Node):
    def __str__(self) -> str:
        return "{{end}}"


@dataclass(eq=False)
class _Else(Node):
    def __str__(self) -> str:
        return "{{else}}"


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------

_OPERAND_START = frozenset({_BOOL, _CHARCONST, _DOT, _FIELD, _IDENT, _NUMBER, _NIL, _RAW, _STRING, _VAR, _LPAREN})
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


class _Parser:
    """Builds the parse tree with text/template/parse's grammar and its parse-time checks."""

    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0
        self.line = 1
        self.vars = ["$"]
        self.range_depth = 0
        self.defs: dict[str, ListNode] = {}

    # token stream -----------------------------------------------------------------------------

    def next(self) -> _Tok:
        tok = self.tokens[self.i]
        self.line = tok.line
        if tok.kind == _ERROR:
            self.error(tok.val)
        if tok.kind != _EOF:
            self.i += 1
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Tok:
        tok = self.next()
        if tok.kind != _EOF:
            self.backup()
        return tok

    def next_non_space(self) -> _Tok:
        tok = self.next()
        while tok.kind == _SPC:
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Tok:
        tok = self.next_non_space()
        if tok.kind != _EOF:
            self.backup()
        return tok

    def expect(self, kind: str, context: str) -> _Tok:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def error(self, message: str) -> NoReturn:
        raise TemplateError(f"template: :{self.line}: {message}")

    def unexpected(self, tok: _Tok, context: str) -> NoReturn:
        self.error(f"unexpected {tok} in {context}")

    # structure --------------------------------------------------------------------------------

    def parse(self) -> ListNode:
        root = ListNode(self.peek().pos, [])
        while self.peek().kind != _EOF:
            if self.peek().kind == _LEFT:
                start = self.i
                self.next()
                tok = self.next_non_space()
                if tok.kind == _KW and tok.val == "define":
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
        self.expect(_RIGHT, "define clause")
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
            self.error(f"template: multiple definition of template {_go_quote(name)}")

    def item_list(self) -> tuple[ListNode, Node]:
        items = ListNode(self.peek_non_space().pos, [])
        while self.peek_non_space().kind != _EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return items, node
            items.nodes.append(node)
        self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == _TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.kind == _LEFT:
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == _KW:
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
        return ActionNode(start.pos, self.pipeline("command", _RIGHT))

    def parse_control(self, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        nvars = len(self.vars)
        pipe = self.pipeline(context, _RIGHT)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, _Else):
            follow = self.peek()
            if context in ("if", "with") and follow.kind == _KW and follow.val == context:
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

    def if_control(self, tok: _Tok) -> Node:
        return IfNode(tok.pos, *self.parse_control("if"))

    def range_control(self, tok: _Tok) -> Node:
        return RangeNode(tok.pos, *self.parse_control("range"))

    def with_control(self, tok: _Tok) -> Node:
        return WithNode(tok.pos, *self.parse_control("with"))

    def end_control(self, tok: _Tok) -> Node:
        self.expect(_RIGHT, "end")
        return _End(tok.pos)

    def else_control(self, tok: _Tok) -> Node:
        follow = self.peek_non_space()
        if follow.kind == _KW and follow.val in ("if", "with"):
            return _Else(follow.pos)
        self.expect(_RIGHT, "else")
        return _Else(tok.pos)

    def break_control(self, tok: _Tok) -> Node:
        after = self.next_non_space()
        if after.kind != _RIGHT:
            self.unexpected(after, f"{{{{{tok.val}}}}}")
        if self.range_depth == 0:
            self.error(f"{{{{{tok.val}}}}} outside {{{{range}}}}")
        return BreakNode(tok.pos) if tok.val == "break" else ContinueNode(tok.pos)

    def template_control(self, tok: _Tok) -> Node:
        name_tok = self.next_non_space()
        name = self.template_name(name_tok, "template clause")
        pipe = None
        if self.next_non_space().kind != _RIGHT:
            self.backup()
            pipe = self.pipeline("template clause", _RIGHT)
        return TemplateNode(name_tok.pos, name, pipe)

    def block_control(self, tok: _Tok) -> Node:
        name_tok = self.next_non_space()
        name = self.template_name(name_tok, "block clause")
        pipe = self.pipeline("block clause", _RIGHT)
        self.add_definition(name, self.sub_tree("block clause"))
        return TemplateNode(name_tok.pos, name, pipe)

    def template_name(self, tok: _Tok, context: str) -> str:
        if tok.kind not in (_STRING, _RAW):
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
        while self.peek_non_space().kind == _VAR:
            start = self.i
            var = self.next()
            follow = self.peek_non_space()
            if follow.kind in (_ASSIGN, _DECLARE):
                self.next_non_space()
                pipe.is_assign = follow.kind == _ASSIGN
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                return
            if follow.kind == _CHAR and follow.val == ",":
                self.next_non_space()
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in (_VAR, _RIGHT, _RPAREN):
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
            if tok.kind == _SPC:
                continue
            if tok.kind in (_RIGHT, _RPAREN):
                self.backup()
            elif tok.kind != _PIPE:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != _FIELD:
            return node
        chain_pos = self.peek().pos
        fields: list[str] = []
        while self.peek().kind == _FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(chain_pos, (*node.idents, *fields))
        if isinstance(node, VariableNode):
            return VariableNode(chain_pos, (*node.idents, *fields))
        if isinstance(node, LiteralNode | NilNode | DotNode):
            self.error(f"unexpected . after term {_go_quote(str(node))}")
        return ChainNode(chain_pos, node, tuple(fields))

    def term(self) -> Node | None:
        tok = self.next_non_space()
        kind = tok.kind
        if kind == _IDENT:
            if tok.val not in _FUNCS:
                self.error(f"function {_go_quote(tok.val)} not defined")
            return IdentifierNode(tok.pos, tok.val)
        if kind == _DOT:
            return DotNode(tok.pos)
        if kind == _NIL:
            return NilNode(tok.pos)
        if kind == _VAR:
            if tok.val not in self.vars:
                self.error(f"undefined variable {_go_quote(tok.val)}")
            return VariableNode(tok.pos, (tok.val,))
        if kind == _FIELD:
            return FieldNode(tok.pos, (tok.val[1:],))
        if kind == _BOOL:
            return LiteralNode(tok.pos, tok.val, tok.val == "true")
        if kind == _CHARCONST:
            char = self.unquote(tok)
            if not char:
                self.error("invalid syntax")
            if len(char) != 1:
                self.error(f"malformed character constant: {tok.val}")
            return LiteralNode(tok.pos, tok.val, ord(char))
        if kind == _NUMBER:
            return LiteralNode(tok.pos, tok.val, self.number(tok.val))
        if kind == _LPAREN:
            return self.pipeline("parenthesized pipeline", _RPAREN)
        if kind in (_STRING, _RAW):
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
            self.error(f"illegal number syntax: {_go_quote(text)}")

    def unquote(self, tok: _Tok) -> str:
        if tok.kind == _RAW:
            return tok.val[1:-1].replace("\r", "")
        try:
            return _go_unquote(tok.val[1:-1], tok.val[0])
        except ValueError:
            self.error("invalid syntax")


def _go_unquote(body: str, quote: str) -> str:
    """strconv.Unquote's escape handling; byte escapes become UTF-8 bytes of the result."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc].encode()
            i += 2
        elif esc == quote:
            out += quote.encode()
            i += 2
        elif esc and esc in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(body)
            value = int(digits, 16)
            if esc == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError(body)
            else:
                out += chr(value).encode()
            i += 2 + size
        elif esc and esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(body)
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(body)
    return out.decode("utf-8", errors="replace")


def _is_empty_tree(node: Node) -> bool:
    if isinstance(node, ListNode):
        return all(_is_empty_tree(n) for n in node.nodes)
    return isinstance(node, TextNode) and not node.text.strip(_SPACE)


# ---------------------------------------------------------------------------------------------
# Go values
# ---------------------------------------------------------------------------------------------


class GoStruct:
    """A Go struct as a template sees it: named fields, and an error for any other name.

    `json_fields` plays the part of struct tags, as (field, json key, omitempty) triples; None
    means untagged, which `encoding/json` writes with the Go field names. `stringer` marks types
    whose String() method prints their JSON, so `{{ . }}` shows JSON instead of `{a b}`.
    """

    __slots__ = ("fields", "go_type", "json_fields", "stringer")

    def __init__(
        self,
        go_type: str,
        fields: dict[str, Any],
        json_fields: tuple[tuple[str, str, bool], ...] | None = None,
        *,
        stringer: bool = False,
    ) -> None:
        self.go_type = go_type
        self.fields = fields
        self.json_fields = json_fields
        self.stringer = stringer

    def __repr__(self) -> str:
        return f"GoStruct({self.go_type!r}, {self.fields!r})"


class GoSlice(list):
    """A Go slice that remembers nil-ness (JSON `null`) and whether String() prints JSON."""

    __slots__ = ("go_type", "is_nil", "stringer")

    def __init__(self, items: Iterable[Any] = (), *, go_type: str = "[]interface {}", stringer: bool = False) -> None:
        super().__init__(items)
        self.go_type = go_type
        self.is_nil = not self
        self.stringer = stringer


class GoMap(dict):
    """A Go map: ranged and printed in sorted key order.

    `ordered` maps encode their JSON in insertion order (ollama's ordered maps); `stringer`
    maps print JSON, `{}` when nil, like ollama's templateArgs and templateProperties.
    """

    __slots__ = ("go_type", "is_nil", "ordered", "stringer")

    def __init__(
        self,
        items: Mapping[str, Any] | None = None,
        *,
        go_type: str = "map[string]interface {}",
        stringer: bool = False,
        ordered: bool = False,
    ) -> None:
        super().__init__(items or {})
        self.go_type = go_type
        self.is_nil = items is None
        self.stringer = stringer
        self.ordered = ordered


class PropertyType(str):
    """A tool property's JSON-schema type: one name or several, printed like ollama's String().

    It behaves as the string templates compare it with (`eq .Type "string"`) while ranging,
    indexing and JSON see the list of names.
    """

    types: tuple[str, ...]

    def __new__(cls, types: Sequence[str]) -> PropertyType:
        text = types[0] if len(types) == 1 else f"[{' '.join(types)}]" if types else ""
        obj = super().__new__(cls, text)
        obj.types = tuple(types)
        return obj


def _type_name(value: Any) -> str:
    """Go's name for the type of a value, as `%T` and error messages show it."""
    if value is None:
        return "<nil>"
    if isinstance(value, GoStruct | GoSlice | GoMap):
        return value.go_type
    if isinstance(value, PropertyType):
        return "api.PropertyType"
    for kind, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float64"),
        (str, "string"),
        (bytes | bytearray, "[]uint8"),
        (dict, "map[string]interface {}"),
        (list | tuple, "[]interface {}"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _truth(value: Any) -> bool:
    """Go's template truth: zero values, nil and empty containers are false, structs true."""
    if value is None:
        return False
    if isinstance(value, GoStruct):
        return True
    return bool(value)


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=str)


# ---------------------------------------------------------------------------------------------
# encoding/json
# ---------------------------------------------------------------------------------------------


class _JSONUnsupported(ValueError):
    """A value Go's encoding/json would refuse to marshal."""


_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _json_escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if "\ud800" <= ch <= "\udfff":
        return "\\ufffd"
    return _JSON_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _json_string(text: str) -> str:
    return '"' + _JSON_SPECIAL.sub(_json_escape_char, text) + '"'


def _json_float(value: float) -> str:
    if not math.isfinite(value):
        raise _JSONUnsupported(f"json: unsupported value: {_format_g(value, None, upper=False)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if 1e-6 <= abs(value) < 1e21:
        return sign + _digits_fixed(digits, point)
    return sign + re.sub(r"e-0(\d)$", r"e-\1", _digits_exp(digits, point, "e"))


def _json_empty(value: Any) -> bool:
    """encoding/json's omitempty test."""
    if isinstance(value, PropertyType):
        return not value.types
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, str | bytes | bytearray | list | tuple | dict) and not value


def _to_json(value: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, `< > &` escaped, UTF-8 kept."""
    out: list[str] = []
    _encode_json(value, out)
    return "".join(out)


def _encode_json(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, PropertyType):
        if len(value.types) == 1:
            out.append(_json_string(value.types[0]))
        else:
            _encode_json(list(value.types) or None, out)
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_json_float(value))
    elif isinstance(value, str):
        out.append(_json_string(value))
    elif isinstance(value, bytes | bytearray):
        out.append(_json_string(base64.b64encode(value).decode()))
    elif isinstance(value, GoStruct):
        _encode_json_struct(value, out)
    elif isinstance(value, dict):
        _encode_json_map(value, out)
    elif isinstance(value, list | tuple):
        if isinstance(value, GoSlice) and value.is_nil:
            out.append("null")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode_json(item, out)
        out.append("]")
    else:
        raise _JSONUnsupported(f"json: unsupported type: {_type_name(value)}")


def _encode_json_struct(value: GoStruct, out: list[str]) -> None:
    tags = value.json_fields or tuple((name, name, False) for name in value.fields)
    out.append("{")
    first = True
    for name, key, omitempty in tags:
        item = value.fields[name]
        if omitempty and _json_empty(item):
            continue
        if not first:
            out.append(",")
        first = False
        out.append(_json_string(key) + ":")
        _encode_json(item, out)
    out.append("}")


def _encode_json_map(value: dict[Any, Any], out: list[str]) -> None:
    if isinstance(value, GoMap) and value.is_nil:
        out.append("null")
        return
    keys = list(value) if isinstance(value, GoMap) and value.ordered else sorted(value, key=str)
    out.append("{")
    for i, key in enumerate(keys):
        if i:
            out.append(",")
        out.append(_json_string(str(key)) + ":")
        _encode_json(value[key], out)
    out.append("}")


def _stringer_text(value: Any) -> str | None:
    """What a Go String() method would return for the value, or None when it has none."""
    if isinstance(value, PropertyType):
        return str.__str__(value)
    if not isinstance(value, GoStruct | GoSlice | GoMap) or not value.stringer:
        return None
    if isinstance(value, GoMap) and value.is_nil:
        return "{}"
    try:
        return _to_json(value)
    except _JSONUnsupported:
        return ""


# ---------------------------------------------------------------------------------------------
# fmt
# ---------------------------------------------------------------------------------------------


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) != 0, and where the decimal point goes."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    return digits.rstrip("0") or "0", len(digits) + exponent


def _digits_exp(digits: str, point: int, letter: str) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}{letter}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _digits_fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _format_g(value: float, prec: int | None, *, upper: bool) -> str:
    """strconv.FormatFloat(value, 'g', prec, 64), which is also what %v prints."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    value = abs(value)
    if value == 0:
        digits, point = "0", 1
    elif prec is None:
        digits, point = _shortest_digits(value)
    else:
        mantissa, exp = f"{value:.{max(prec, 1) - 1}e}".split("e")
        digits, point = mantissa.replace(".", "").rstrip("0") or "0", int(exp) + 1
    eprec = 6 if prec is None else max(prec, 1)
    if prec is not None and eprec > len(digits) >= point:
        eprec = len(digits)
    if point - 1 < -4 or point - 1 >= eprec:
        return sign + _digits_exp(digits, point, "E" if upper else "e")
    return sign + _digits_fixed(digits, point)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _quote_char(ch: str, quote: str) -> str:
    code = ord(ch)
    if ch in (quote, "\\"):
        return "\\" + ch
    if ch in _QUOTE_ESCAPES:
        return _QUOTE_ESCAPES[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"
    if ch.isprintable():
        return ch
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _go_quote(text: str) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    return '"' + "".join(_quote_char(ch, '"') for ch in text) + '"'


@dataclass
class _Spec:
    """Flags, width and precision of one fmt verb."""

    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False
    width: int | None = None
    prec: int | None = None

    def pad(self, text: str, *, zero: bool | None = None) -> str:
        if self.width is None or len(text) >= self.width:
            return text
        fill = self.width - len(text)
        if self.minus:
            return text + " " * fill
        return ("0" if (self.zero if zero is None else zero) else " ") * fill + text


def _bad_verb(verb: str, value: Any, spec: _Spec | None = None) -> str:
    """fmt's `%!verb(type=value)`; the value is printed with %v under the directive's flags."""
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_type_name(value)}={_format(value, 'v', spec or _Spec(), 0)})"


def _format(value: Any, verb: str, spec: _Spec, depth: int) -> str:
    """fmt's printArg/printValue for one operand."""
    if value is None:
        if depth == 0 and verb not in "vT":
            return _bad_verb(verb, None)
        return spec.pad("<nil>")
    if verb == "T":
        return spec.pad(_type_name(value))
    if verb in "vsxXq":
        text = _stringer_text(value)
        if text is not None:
            return _format_string(text, verb, spec)
    if isinstance(value, bool):
        return spec.pad("true" if value else "false") if verb in "tv" else _bad_verb(verb, value, spec)
    if isinstance(value, int):
        return _format_int(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    if isinstance(value, str):
        return _format_string(value, verb, spec) if verb in "vsxXq" else _bad_verb(verb, value, spec)
    if isinstance(value, bytes | bytearray) and verb in "sxXq":
        return _format_string(value.decode("utf-8", errors="replace"), verb, spec)
    if isinstance(value, dict):
        items = (
            f"{_format(k, verb, spec, depth + 1)}:{_format(value[k], verb, spec, depth + 1)}"
            for k in _sorted_keys(value)
        )
        return "map[" + " ".join(items) + "]"
    if isinstance(value, list | tuple | bytes | bytearray):
        return "[" + " ".join(_format(item, verb, spec, depth + 1) for item in value) + "]"
    if isinstance(value, GoStruct):
        names = spec.plus_v and verb == "v"
        parts = ((f"{k}:" if names else "") + _format(v, verb, spec, depth + 1) for k, v in value.fields.items())
        return "{" + " ".join(parts) + "}"
    return spec.pad(str(value))


def _format_string(text: str, verb: str, spec: _Spec) -> str:
    if spec.prec is not None:
        text = text[: spec.prec]
    if verb == "q":
        if spec.sharp and "`" not in text and all(c == "\t" or c.isprintable() for c in text):
            return spec.pad(f"`{text}`")
        return spec.pad(_go_quote(text))
    if verb in "xX":
        data = text.encode()
        hexed = data.hex() if verb == "x" else data.hex().upper()
        if spec.space:
            prefix = ("0" + verb) if spec.sharp else ""
            hexed = " ".join(prefix + hexed[i : i + 2] for i in range(0, len(hexed), 2))
        elif spec.sharp and hexed:
            hexed = "0" + verb + hexed
        return spec.pad(hexed)
    return spec.pad(text)


def _sign(negative: bool, spec: _Spec) -> str:
    if negative:
        return "-"
    return "+" if spec.plus else " " if spec.space else ""


def _format_int(value: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return spec.pad(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd", zero=False)
    if verb == "q":
        return spec.pad("'" + _quote_char(chr(value), "'") + "'" if 0 <= value <= 0x10FFFF else "'\ufffd'")
    if verb == "U":
        text = f"U+{value:04X}"
        if spec.sharp and 0 <= value <= 0x10FFFF and chr(value).isprintable():
            text += f" '{chr(value)}'"
        return spec.pad(text)
    base = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(verb)
    if base is None:
        return _bad_verb(verb, value, spec)
    digits = format(abs(value), base)
    sign = _sign(value < 0, spec)
    if spec.prec is not None:
        digits = "" if spec.prec == 0 and value == 0 else digits.rjust(spec.prec, "0")
    elif spec.zero and spec.width is not None and not spec.minus:
        digits = digits.rjust(spec.width - len(sign), "0")
    prefix = ""
    if verb == "O" or (spec.sharp and verb == "o" and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif spec.sharp and verb in "bxX":
        prefix = "0" + verb
    return spec.pad(sign + prefix + digits, zero=False)


def _format_float(value: float, verb: str, spec: _Spec) -> str:
    if verb not in "vgGeEfF":
        return _bad_verb(verb, value, spec)
    if not math.isfinite(value):
        body = "NaN" if math.isnan(value) else "Inf"
        return spec.pad(_sign(value < 0, spec) + body, zero=False)
    negative = math.copysign(1.0, value) < 0
    magnitude = abs(value)
    prec = 6 if spec.prec is None else spec.prec
    if verb in "vgG":
        body = _format_g(magnitude, spec.prec, upper=verb == "G")
    elif verb in "eE":
        body = f"{magnitude:.{prec}{verb}}"
    else:
        body = f"{magnitude:.{prec}f}"
    sign = _sign(negative, spec)
    if spec.zero and not spec.minus and spec.width is not None:
        return sign + body.rjust(spec.width - len(sign), "0")
    return spec.pad(sign + body, zero=False)


def _sprint(args: Sequence[Any]) -> str:
    """fmt.Sprint: operands side by side, a space between two that are not strings."""
    parts: list[str] = []
    previous_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str) and not isinstance(arg, PropertyType)
        if i and not is_string and not previous_string:
            parts.append(" ")
        parts.append(_format(arg, "v", _Spec(), 0))
        previous_string = is_string
    return "".join(parts)


def _sprintln(args: Sequence[Any]) -> str:
    return " ".join(_format(arg, "v", _Spec(), 0) for arg in args) + "\n"


class _Printf:
    """fmt.Sprintf, including its in-band error reports (%!d(string=x), MISSING, EXTRA...)."""

    def __init__(self, fmt: str, args: Sequence[Any]) -> None:
        self.fmt = fmt
        self.args = args
        self.i = 0
        self.argnum = 0
        self.reordered = False
        self.good_argnum = True
        self.out: list[str] = []

    def run(self) -> str:
        fmt, end = self.fmt, len(self.fmt)
        while self.i < end:
            pct = fmt.find("%", self.i)
            if pct < 0:
                self.out.append(fmt[self.i :])
                break
            self.out.append(fmt[self.i : pct])
            self.i = pct + 1
            if not self.verb():
                break
        if not self.reordered and self.argnum < len(self.args):
            extra = (
                "<nil>" if a is None else f"{_type_name(a)}={_format(a, 'v', _Spec(), 0)}"
                for a in self.args[self.argnum :]
            )
            self.out.append("%!(EXTRA " + ", ".join(extra) + ")")
        return "".join(self.out)

    def verb(self) -> bool:
        """Formats one directive after its '%'; False when the format ended without a verb."""
        fmt, end = self.fmt, len(self.fmt)
        spec = _Spec()
        self.good_argnum = True
        while self.i < end and fmt[self.i] in "#0+- ":
            flag = fmt[self.i]
            if flag == "#":
                spec.sharp = True
            elif flag == "0":
                spec.zero = not spec.minus
            elif flag == "+":
                spec.plus = True
            elif flag == "-":
                spec.minus, spec.zero = True, False
            else:
                spec.space = True
            self.i += 1
        after_index = self.arg_index()
        if self.i < end and fmt[self.i] == "*":
            self.i += 1
            spec.width = self.int_arg("%!(BADWIDTH)")
            if spec.width is not None and spec.width < 0:
                spec.width, spec.minus, spec.zero = -spec.width, True, False
            after_index = False
        else:
            spec.width = self.number()
            if after_index and spec.width is not None:
                self.good_argnum = False
        if self.i + 1 < end and fmt[self.i] == ".":
            self.i += 1
            if after_index:
                self.good_argnum = False
            after_index = self.arg_index()
            if self.i < end and fmt[self.i] == "*":
                self.i += 1
                spec.prec = self.int_arg("%!(BADPREC)")
                if spec.prec is not None and spec.prec < 0:
                    spec.prec = None
                after_index = False
            else:
                spec.prec = self.number() or 0
        if not after_index:
            self.arg_index()
        if self.i >= end:
            self.out.append("%!(NOVERB)")
            return False
        verb = fmt[self.i]
        self.i += 1
        if verb == "%":
            self.out.append("%")
        elif not self.good_argnum:
            self.out.append(f"%!{verb}(BADINDEX)")
        elif self.argnum >= len(self.args):
            self.out.append(f"%!{verb}(MISSING)")
        else:
            if verb == "v":
                spec.plus_v, spec.plus = spec.plus, False
            self.out.append(_format(self.args[self.argnum], verb, spec, 0))
            self.argnum += 1
        return True

    def number(self) -> int | None:
        start = self.i
        while self.i < len(self.fmt) and self.fmt[self.i].isdigit() and self.fmt[self.i].isascii():
            self.i += 1
        return int(self.fmt[start : self.i]) if self.i > start else None

    def arg_index(self) -> bool:
        """Handles an explicit `[n]` argument index; True when one was present and valid."""
        if not self.fmt.startswith("[", self.i):
            return False
        self.reordered = True
        close = self.fmt.find("]", self.i)
        text = self.fmt[self.i + 1 : close] if close > 0 else ""
        if close < 0 or not text.isdigit():
            self.i = close + 1 if close > 0 else self.i + 1
            self.good_argnum = False
            return False
        self.i = close + 1
        index = int(text) - 1
        if 0 <= index < len(self.args):
            self.argnum = index
            return True
        self.good_argnum = False
        return True

    def int_arg(self, bad: str) -> int | None:
        value = self.args[self.argnum] if self.argnum < len(self.args) else None
        if self.argnum < len(self.args):
            self.argnum += 1
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 1_000_000:
            return value
        self.out.append(bad)
        return None


# ---------------------------------------------------------------------------------------------
# Built-in functions
# ---------------------------------------------------------------------------------------------


class _CallError(Exception):
    """A function failed; reported as `error calling NAME: ...` like Go's safeCall."""


class _ArgError(Exception):
    """An argument of the wrong type; reported as is, like Go's argument conversion."""


def _expect_string(value: Any) -> str:
    if not isinstance(value, str):
        raise _ArgError(f"wrong type for value; expected string; got {_type_name(value)}")
    return value


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise _CallError("cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise _CallError(f"cannot index slice/array with type {_type_name(index)}")
    if index < 0 or index > cap:
        raise _CallError(f"index out of range: {index}")
    return index


def _fn_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _CallError("index of untyped nil")
    for index in indexes:
        if item is None:
            raise _CallError("index of nil pointer")
        if isinstance(item, dict):
            if not isinstance(index, str):
                raise _CallError(f"value has type {_type_name(index)}; should be string")
            item = item.get(index)
            continue
        if isinstance(item, PropertyType):
            item = item.types
        elif isinstance(item, str):
            item = item.encode()
        elif not isinstance(item, list | tuple | bytes | bytearray):
            raise _CallError(f"can't index item of type {_type_name(item)}")
        position = _index_arg(index, len(item))
        if position == len(item):
            raise _CallError(f"index out of range: {position}")
        item = item[position]
    return item


def _fn_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise _CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _CallError("cannot 3-index slice a string")
        data: Sequence[Any] = item.encode()
    elif isinstance(item, list | tuple):
        data = item
    else:
        raise _CallError(f"can't slice item of type {_type_name(item)}")
    bounds = [0, len(data), len(data)]
    for i, index in enumerate(indexes):
        bounds[i] = _index_arg(index, len(data))
    for low, high in ((bounds[0], bounds[1]), (bounds[1], bounds[2])):
        if low > high:
            raise _CallError(f"invalid slice index: {low} > {high}")
    part = data[bounds[0] : bounds[1]]
    if isinstance(part, bytes):
        return part.decode("utf-8", errors="replace")
    if isinstance(item, GoSlice):
        return GoSlice(part, go_type=item.go_type, stringer=item.stringer)
    return list(part)


def _fn_len(item: Any) -> int:
    if item is None:
        raise _CallError("len of nil pointer")
    if isinstance(item, PropertyType):
        return len(item.types)
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, list | tuple | dict | bytes | bytearray):
        return len(item)
    raise _CallError(f"len of type {_type_name(item)}")


def _basic_kind(value: Any) -> str:
    if value is None:
        return "invalid"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "other"


_NUMERIC = frozenset({"int", "float"})


def _fn_eq(first: Any, *others: Any) -> bool:
    if not others:
        raise _CallError("missing argument for comparison")
    kind = _basic_kind(first)
    for other in others:
        other_kind = _basic_kind(other)
        if kind != other_kind:
            if {kind, other_kind} <= _NUMERIC:
                truth = first == other
            elif "invalid" in (kind, other_kind):
                truth = False
            else:
                raise _CallError("incompatible types for comparison")
        elif kind == "invalid":
            truth = True
        elif kind == "other":
            if isinstance(first, list | dict) or isinstance(other, list | dict):
                raise _CallError(f"non-comparable type {_type_name(first)}")
            truth = first is other
        else:
            truth = first == other
        if truth:
            return True
    return False


def _fn_lt(first: Any, second: Any) -> bool:
    kinds = {_basic_kind(first), _basic_kind(second)}
    if not kinds <= {"int", "float", "string"}:
        raise _CallError("invalid type for comparison")
    if len(kinds) > 1 and not kinds <= _NUMERIC:
        raise _CallError("incompatible types for comparison")
    return bool(first < second)


def _eval_args_text(args: Sequence[Any]) -> str:
    """The text html, js and urlquery escape: one string as is, anything else through Sprint."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(["<no value>" if arg is None else arg for arg in args])


_HTML_ESCAPES = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\x00": "\ufffd"}
_JS_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _fn_html(*args: Any) -> str:
    return "".join(_HTML_ESCAPES.get(ch, ch) for ch in _eval_args_text(args))


def _js_char(ch: str) -> str:
    if ch in _JS_ESCAPES:
        return _JS_ESCAPES[ch]
    if ch < " " or (ch >= "\x80" and not ch.isprintable()):
        return f"\\u{ord(ch):04X}"
    return ch


def _fn_js(*args: Any) -> str:
    return "".join(_js_char(ch) for ch in _eval_args_text(args))


def _fn_urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args_text(args), safe="")


def _fn_printf(fmt: Any, *args: Any) -> str:
    return _Printf(_expect_string(fmt), args).run()


def _fn_json(value: Any) -> str:
    try:
        return _to_json(value)
    except _JSONUnsupported:
        return ""  # ollama discards json.Marshal's error


def _fn_current_date(*args: Any) -> str:
    for arg in args:
        _expect_string(arg)
    return date.today().isoformat()


def _fn_yesterday_date(*args: Any) -> str:
    for arg in args:
        _expect_string(arg)
    return (date.today() - timedelta(days=1)).isoformat()


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def _fn_to_typescript_type(value: Any) -> str:
    """ollama's ToolProperty.ToTypeScriptType; anything that is not a tool property is `any`."""
    if not isinstance(value, GoStruct) or value.go_type != "api.ToolProperty":
        return "any"
    any_of = value.fields["AnyOf"]
    if any_of:
        return " | ".join(_fn_to_typescript_type(option) for option in any_of)
    types = value.fields["Type"].types
    return " | ".join(_TS_TYPES.get(t, "any") for t in types) if types else "any"


def _fn_call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise _CallError("call of nil")
    if not callable(fn):
        raise _CallError(f"non-function of type {_type_name(fn)}")
    return fn(*args)


class _Func(NamedTuple):
    impl: Callable[..., Any] | None  # None: and/or, which the executor evaluates lazily
    min_args: int
    max_args: int | None


_FUNCS: dict[str, _Func] = {
    "and": _Func(None, 1, None),
    "or": _Func(None, 1, None),
    "not": _Func(lambda value: not _truth(value), 1, 1),
    "len": _Func(_fn_len, 1, 1),
    "index": _Func(_fn_index, 1, None),
    "slice": _Func(_fn_slice, 1, None),
    "eq": _Func(_fn_eq, 1, None),
    "ne": _Func(lambda a, b: not _fn_eq(a, b), 2, 2),
    "lt": _Func(_fn_lt, 2, 2),
    "le": _Func(lambda a, b: _fn_lt(a, b) or _fn_eq(a, b), 2, 2),
    "gt": _Func(lambda a, b: not (_fn_lt(a, b) or _fn_eq(a, b)), 2, 2),
    "ge": _Func(lambda a, b: not _fn_lt(a, b), 2, 2),
    "print": _Func(lambda *args: _sprint(args), 0, None),
    "printf": _Func(_fn_printf, 1, None),
    "println": _Func(lambda *args: _sprintln(args), 0, None),
    "html": _Func(_fn_html, 0, None),
    "js": _Func(_fn_js, 0, None),
    "urlquery": _Func(_fn_urlquery, 0, None),
    "call": _Func(_fn_call, 1, None),
    "json": _Func(_fn_json, 1, 1),
    "currentDate": _Func(_fn_current_date, 0, None),
    "yesterdayDate": _Func(_fn_yesterday_date, 0, None),
    "toTypeScriptType": _Func(_fn_to_typescript_type, 1, 1),
}


# ---------------------------------------------------------------------------------------------
# Executor
# ---------------------------------------------------------------------------------------------


class _Break(Exception):
    """{{ break }}: unwinds to the innermost range."""


class _Continue(Exception):
    """{{ continue }}: unwinds to the innermost range, which moves to its next element."""


_MISSING: Any = object()  # "no value piped in", distinct from a nil value
_MAX_DEPTH = 50


class _State:
    """One execution: output buffer, variable stack and the node being evaluated (for errors)."""

    def __init__(self, template: Template) -> None:
        self.template = template
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

    def error(self, message: str) -> NoReturn:
        node = self.node
        if node is None:
            raise TemplateError(f"template: {message}")
        before = self.template.source[: node.pos]
        location = f"{before.count(chr(10)) + 1}:{node.pos - (before.rfind(chr(10)) + 1)}"
        raise TemplateError(f"template: :{location}: executing {_go_quote(self.name)} at <{node}>: {message}")

    # statements -------------------------------------------------------------------------------

    def walk(self, dot: Any, node: Node) -> None:
        self.node = node
        if isinstance(node, TextNode):
            self.out.append(node.text)
        elif isinstance(node, ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append("<no value>" if value is None else _format(value, "v", _Spec(), 0))
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
            if _truth(value):
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
            return ((key, value[key]) for key in _sorted_keys(value))
        if isinstance(value, list | tuple | bytes | bytearray):
            return enumerate(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.error(f"can't use {value} to iterate over more than one variable")
            return ((None, i) for i in range(value))
        self.error(f"range can't iterate over {_format(value, 'v', _Spec(), 0)}")

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
        body = self.template._defs.get(node.name)
        if body is None:
            self.error(f"template {_go_quote(node.name)} not defined")
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
                type_name = "interface {}" if from_map else _type_name(receiver)
                self.error(f"can't evaluate field {name} in type {type_name}")
        return receiver

    def eval_function(self, dot: Any, node: IdentifierNode, cmd: Node, args: Sequence[Node], final: Any) -> Any:
        self.node = node
        name = node.name
        func = _FUNCS[name]
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
        try:
            return func.impl(*values)
        except _CallError as err:
            self.error(f"error calling {name}: {err}")
        except _ArgError as err:
            self.error(str(err))

    def eval_and_or(self, dot: Any, name: str, args: Sequence[Node], final: Any) -> Any:
        """`and`/`or` stop at the first operand that decides the result and return it."""
        value = None
        for arg in args:
            value = self.eval_arg(dot, arg)
            if _truth(value) == (name == "or"):
                return value
        return final if final is not _MISSING else value


# ---------------------------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------------------------


def _identifiers(node: Node | None) -> Iterator[str]:
    """Field and variable names, walked like ollama's template.Identifiers.

    Like ollama it does not look inside `(pipeline).Field` chains, and it rejects a
    `{{template}}` call without a pipeline ("undefined template specified").
    """
    if isinstance(node, ListNode):
        for child in node.nodes:
            yield from _identifiers(child)
    elif isinstance(node, TemplateNode):
        if node.pipe is None:
            raise TemplateError("undefined template specified")
        yield from _identifiers(node.pipe)
    elif isinstance(node, ActionNode):
        yield from _identifiers(node.pipe)
    elif isinstance(node, BranchNode):
        yield from _identifiers(node.pipe)
        yield from _identifiers(node.body)
        yield from _identifiers(node.else_body)
    elif isinstance(node, PipeNode):
        for cmd in node.cmds:
            for arg in cmd.args:
                yield from _identifiers(arg)
    elif isinstance(node, FieldNode | VariableNode):
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
        """Parses Go template source the way ollama's template.Parse does, `{{ .Response }}` included."""
        parser = _Parser(_Lexer(text).run())
        root = parser.parse()
        names = {name.lower() for body in (root, *parser.defs.values()) for name in _identifiers(body)}
        if "messages" not in names and "response" not in names:
            root.nodes.append(_response_action(len(text)))
            names.add("response")
        return cls(text, root, parser.defs, frozenset(names))

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

    def execute(self, data: Mapping[str, Any]) -> str:
        """Runs the template on `data` with Go semantics and `missingkey=zero`."""
        return _State(self).run(self._root, dict(data))

    def execute_until_response(self, data: Mapping[str, Any]) -> str:
        """Runs the template with everything after its first `.Response` removed, so a legacy
        template ends where the model's answer starts."""
        if self._legacy_root is None:
            self._legacy_root = cast(ListNode, _ResponseCut().copy(self._root))
        return _State(self).run(self._legacy_root, dict(data))


# ---------------------------------------------------------------------------------------------
# Chat data, the way ollama hands it to templates
# ---------------------------------------------------------------------------------------------


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


def _tag_images(messages: Sequence[Message]) -> list[Message]:
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
    return _execute(template, _tag_images(conversation), tools, think)


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
