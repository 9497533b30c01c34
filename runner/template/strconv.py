"""Go's strconv spellings of strings and floats, which every layer of the engine prints.

Lexer and parser errors quote source text, `fmt` prints `%q` and `%v` of floats, and
`encoding/json` writes float digits -- all of them the way Go's strconv does, which no Python
formatting reproduces. Keeping those spellings here lets each layer share one exact copy.
"""

from __future__ import annotations

import math
from decimal import Decimal

_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def quote_char(ch: str, quote: str) -> str:
    """One character as it appears inside a Go literal delimited by `quote` (`"` or `'`)."""
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


def go_quote(text: str) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    return '"' + "".join(quote_char(ch, '"') for ch in text) + '"'


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def go_unquote(body: str, quote: str) -> str:
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


def shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) != 0, and where the decimal point goes."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    return digits.rstrip("0") or "0", len(digits) + exponent


def digits_exp(digits: str, point: int, letter: str) -> str:
    """`d.ddde±XX` from digits and their decimal point, as strconv's %e spells it."""
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}{letter}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def digits_fixed(digits: str, point: int) -> str:
    """`ddd.ddd` from digits and their decimal point, without an exponent."""
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def format_g(value: float, prec: int | None, *, upper: bool) -> str:
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
        digits, point = shortest_digits(value)
    else:
        mantissa, exp = f"{value:.{max(prec, 1) - 1}e}".split("e")
        digits, point = mantissa.replace(".", "").rstrip("0") or "0", int(exp) + 1
    eprec = 6 if prec is None else max(prec, 1)
    if prec is not None and eprec > len(digits) >= point:
        eprec = len(digits)
    if point - 1 < -4 or point - 1 >= eprec:
        return sign + digits_exp(digits, point, "E" if upper else "e")
    return sign + digits_fixed(digits, point)
