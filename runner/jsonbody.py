"""The one decoder of JSON request bodies, used by every route of the registry and the runner.

Python's `json.loads` differs from Go's `encoding/json` (what ollama and the registry clients
are written against) in two ways that turn a client's mistake into a server error:

* nesting deeper than the interpreter's recursion limit (about a thousand levels) raises
  `RecursionError`, which no handler expects; Go refuses nesting past 10000 levels with
  "exceeded max depth". Here the parser's own refusal is answered with Go's words: no request
  corral serves needs more than a few levels, and a pre-scan of the bytes in Python would cost
  the event loop more than the parse.
* `NaN`, `Infinity` and numbers too large for a float64 (`1e400`) decode to non-finite floats
  that reach sampling parameters; Go refuses them as invalid JSON, and so does this.
* a lone UTF-16 surrogate escape (`"\\ud800"`) decodes to a `str` that cannot be encoded to
  UTF-8 again, so the first log line, file name or response holding it fails; Go replaces it
  with U+FFFD, and so does this.

Stdlib only, so the registry may import it too (tests/test_architecture.py lists the seam).
Callers turn `BodyError` into their own dialect's 400 (ollama's `{"error"}`, OpenAI's error
object, the registry's error list).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """A body that is not acceptable JSON; `message` suits a 400 answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_json(raw: bytes | str) -> Any:
    """The JSON value of a request body (or of JSON text a field carries, such as tool-call
    arguments); BodyError for an empty, malformed or too deep one."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if not raw.strip():
        raise BodyError("missing request body")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
        return _replace_lone_surrogates(value) if _SURROGATE_ESCAPE.search(raw) else value
    except UnicodeDecodeError:
        raise BodyError("invalid UTF-8 in request body") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"invalid JSON in request body: {exc}") from None
    except RecursionError:
        raise BodyError("exceeded max depth") from None
    except ValueError as exc:  # from the two hooks below
        raise BodyError(str(exc)) from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as Go's unmarshal errors spell it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _replace_lone_surrogates(value: Any) -> Any:
    """The same value with every unpaired surrogate in keys and strings made U+FFFD, as Go decodes."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_LONE_SURROGATE.sub("\ufffd", key): _replace_lone_surrogates(item) for key, item in value.items()}
    return value
