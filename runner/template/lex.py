"""The lexer of Go's text/template/parse, split from the parser as Go splits it.

Which characters end an action, how trim markers eat blanks and which message a malformed
token gets decide both the parse tree and the error text callers see, so tokenizing follows
Go's lexer rule by rule, apart from the grammar that consumes the tokens.
"""

from __future__ import annotations

from typing import NamedTuple

from runner.template.strconv import go_quote

SPACE_CHARS = " \t\r\n"
_KEYWORDS = frozenset({"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"})

# token kinds
TEXT, LEFT, RIGHT, SPACE, IDENT, FIELD, VAR, DOT = "text", "{{", "}}", "space", "ident", "field", "var", "."
STRING, RAW, CHARCONST, NUMBER, BOOL, NIL = "string", "raw", "charconst", "number", "bool", "nil"
PIPE, LPAREN, RPAREN, DECLARE, ASSIGN, CHAR = "|", "(", ")", ":=", "=", "char"
KW, EOF, ERROR = "keyword", "EOF", "error"


class Tok(NamedTuple):
    """One token: its kind, its text as written, and where it starts; printed as Go's parser
    names tokens in its "unexpected ..." messages."""

    kind: str
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        if self.kind == EOF:
            return "EOF"
        if self.kind == KW:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


class _LexError(Exception):
    """Raised by the lexer; the parser turns it into a TemplateError with the line number."""


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _rune_desc(c: str) -> str:
    """Go's %#U, used in lexer messages."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


class Lexer:
    """Splits template source into tokens the way text/template/parse's lexer does.

    Lexing is eager; an error becomes a final `ERROR` token so that the parser reports it at
    the place it is reached, as Go's lazy lexer does.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.paren = 0
        self.tokens: list[Tok] = []

    def run(self) -> list[Tok]:
        try:
            self._lex_text()
        except _LexError as err:
            self.tokens.append(Tok(ERROR, str(err), self.pos, self.line))
        return self.tokens

    def _emit(self, kind: str, start: int) -> None:
        self.tokens.append(Tok(kind, self.text[start : self.pos], start, self.line))

    def _advance_to(self, pos: int) -> None:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos

    def _lex_text(self) -> None:
        text = self.text
        while True:
            x = text.find("{{", self.pos)
            if x < 0:
                if self.pos < len(text):
                    self.tokens.append(Tok(TEXT, text[self.pos :], self.pos, self.line))
                self.pos = len(text)
                self.tokens.append(Tok(EOF, "", self.pos, self.line))
                return
            trim = len(text) > x + 3 and text[x + 2] == "-" and text[x + 3] in SPACE_CHARS
            end = x
            if trim:
                while end > self.pos and text[end - 1] in SPACE_CHARS:
                    end -= 1
            if end > self.pos:
                self.tokens.append(Tok(TEXT, text[self.pos : end], self.pos, self.line))
            self._advance_to(x)
            after = x + (4 if trim else 2)
            if text.startswith("/*", after):
                self._advance_to(after)
                self._lex_comment()
            else:
                self.tokens.append(Tok(LEFT, "{{", x, self.line))
                self._advance_to(after)
                self._lex_action()

    def _at_right_delim(self) -> tuple[bool, bool]:
        text, p = self.text, self.pos
        if p + 1 < len(text) and text[p] in SPACE_CHARS and text[p + 1] == "-" and text.startswith("}}", p + 2):
            return True, True
        return text.startswith("}}", p), False

    def _skip_trimmed_space(self) -> None:
        p = self.pos
        while p < len(self.text) and self.text[p] in SPACE_CHARS:
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
        return p >= len(text) or text[p] in SPACE_CHARS or text[p] in ".,|:)(" or text.startswith("}}", p)

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
                self.tokens.append(Tok(RIGHT, "}}", self.pos, self.line))
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
        if c in SPACE_CHARS:
            self._lex_space()
        elif c in "=|()":
            if c == "(":
                self.paren += 1
            elif c == ")":
                self.paren -= 1
            self.pos += 1
            self._emit({"=": ASSIGN, "|": PIPE, "(": LPAREN, ")": RPAREN}[c], start)
        elif c == ":":
            if nxt != "=":
                raise _LexError("expected :=")
            self.pos += 2
            self._emit(DECLARE, start)
        elif c == '"':
            self._lex_quote()
        elif c == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise _LexError("unterminated raw quoted string")
            self.pos = end + 1
            self._emit(RAW, start)
            self.line += text.count("\n", start, end)
        elif c == "'":
            self._lex_char()
        elif c in "$.":
            if c == "." and "0" <= nxt <= "9":
                self._lex_number()
            else:
                self._lex_field_or_variable(VAR if c == "$" else FIELD)
        elif c in "+-" or "0" <= c <= "9":
            self._lex_number()
        elif _is_alnum(c):
            self._lex_identifier()
        elif c.isascii() and c.isprintable():
            self.pos += 1
            self._emit(CHAR, start)
        else:
            raise _LexError(f"unrecognized character in action: {_rune_desc(c)}")

    def _lex_space(self) -> None:
        text, start = self.text, self.pos
        p = start
        while p < len(text) and text[p] in SPACE_CHARS:
            p += 1
        if text.startswith("-}}", p):
            p -= 1  # the last space belongs to a " -}}" trim marker
            if p == start:
                return
        self._advance_to(p)
        self.tokens.append(Tok(SPACE, text[start:p], start, self.line))

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
        self._emit(STRING, start)

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
        self._emit(CHARCONST, start)

    def _lex_field_or_variable(self, kind: str) -> None:
        start = self.pos
        p = start + 1
        if self._at_terminator(p):
            self.pos = p
            self._emit(VAR if kind == VAR else DOT, start)
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
            self._emit(KW, start)
        elif word == "nil":
            self._emit(NIL, start)
        elif word in ("true", "false"):
            self._emit(BOOL, start)
        else:
            self._emit(IDENT, start)

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
            raise _LexError(f"bad number syntax: {go_quote(text[start : p + 1])}")
        self.pos = p
        self._emit(NUMBER, start)


def _accept_run(text: str, p: int, chars: str) -> int:
    while p < len(text) and text[p] in chars:
        p += 1
    return p
