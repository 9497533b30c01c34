"""Go's fmt as templates print with it: `{{ . }}`, `print`, `println` and `printf`.

Every action's output goes through fmt's %v, so maps print as `map[a:1]`, floats as Go's
shortest form and Stringer types through their String() method; `printf` adds verbs, flags
and fmt's in-band error reports. The rules are many and exact, so they stay in one module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.template.gojson import JSONUnsupported, to_json
from runner.template.strconv import format_g, go_quote, quote_char
from runner.template.values import GoMap, GoSlice, GoStruct, PropertyType, sorted_keys, type_name


def _stringer_text(value: Any) -> str | None:
    """What a Go String() method would return for the value, or None when it has none."""
    if isinstance(value, PropertyType):
        return str.__str__(value)
    if not isinstance(value, GoStruct | GoSlice | GoMap) or not value.stringer:
        return None
    if isinstance(value, GoMap) and value.is_nil:
        return "{}"
    try:
        return to_json(value)
    except JSONUnsupported:
        return ""


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
    return f"%!{verb}({type_name(value)}={_format(value, 'v', spec or _Spec(), 0)})"


def _format(value: Any, verb: str, spec: _Spec, depth: int) -> str:
    """fmt's printArg/printValue for one operand."""
    if value is None:
        if depth == 0 and verb not in "vT":
            return _bad_verb(verb, None)
        return spec.pad("<nil>")
    if verb == "T":
        return spec.pad(type_name(value))
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
            for k in sorted_keys(value)
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
        return spec.pad(go_quote(text))
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
        return spec.pad("'" + quote_char(chr(value), "'") + "'" if 0 <= value <= 0x10FFFF else "'\ufffd'")
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
        body = format_g(magnitude, spec.prec, upper=verb == "G")
    elif verb in "eE":
        body = f"{magnitude:.{prec}{verb}}"
    else:
        body = f"{magnitude:.{prec}f}"
    sign = _sign(negative, spec)
    if spec.zero and not spec.minus and spec.width is not None:
        return sign + body.rjust(spec.width - len(sign), "0")
    return spec.pad(sign + body, zero=False)


def sprint(args: Sequence[Any]) -> str:
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


def sprintln(args: Sequence[Any]) -> str:
    """fmt.Sprintln: operands separated by spaces, then a newline."""
    return " ".join(_format(arg, "v", _Spec(), 0) for arg in args) + "\n"


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """fmt.Sprintf, including its in-band error reports (%!d(string=x), MISSING, EXTRA...)."""
    return _Printf(fmt, args).run()


class _Printf:
    """One Sprintf call: walks the format, consuming arguments as its directives ask."""

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
                "<nil>" if a is None else f"{type_name(a)}={_format(a, 'v', _Spec(), 0)}"
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
