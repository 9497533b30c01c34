"""Model names and digests, with ollama's rules (types/model/name.go).

Names parse right to left — `[scheme://][host/][namespace/]model[:tag]` — and missing parts come
from the defaults. Every path on disk and every upstream URL is derived from a validated
`ModelName` or `Digest`, never from request text, so a name cannot escape the store or point the
mirror at an arbitrary host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MISSING = "!MISSING!"  # ollama marks a promised-but-empty part this way so validation fails
_HOST_MAX = 350
_PART_MAX = 80


class InvalidNameError(ValueError):
    """Raised for any name ollama would reject; the API answers 400 "invalid model name"."""

    def __init__(self, text: str = "") -> None:
        super().__init__("invalid model name")
        self.text = text


class InvalidDigestError(ValueError):
    """A digest that is not sha256 with 64 hex digits."""

    def __init__(self, text: str = "") -> None:
        super().__init__(f"invalid digest format {text!r}" if text else "invalid digest format")
        self.text = text


def _cut_last(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return (s[:i] or _MISSING), (s[i + 1 :] or _MISSING), True


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _valid_part(kind: str, s: str) -> bool:
    limit = _HOST_MAX if kind == "host" else _PART_MAX
    if not 1 <= len(s) <= limit or not _is_word_char(s[0]):
        return False
    for c in s[1:]:
        if c in "_-":
            continue
        if c == ".":
            if kind == "namespace":
                return False
            continue
        if c == ":":
            if kind != "host":
                return False
            continue
        if not _is_word_char(c):
            return False
    return True


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name. Parts keep the case the user typed; compare with `key`."""

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = "https"

    @classmethod
    def parse(cls, text: str, *, default_host: str = DEFAULT_HOST) -> ModelName:
        """Parse and validate like ollama's ParseName + IsValid; raise InvalidNameError."""
        if not isinstance(text, str) or not text:
            raise InvalidNameError(str(text))
        s = text
        host = namespace = model = tag = ""
        scheme = "https"
        if s.rfind(":") > s.rfind("/"):
            s, tag, _ = _cut_last(s, ":")
        s, model, promised = _cut_last(s, "/")
        if not promised:
            model = s
        else:
            s, namespace, promised = _cut_last(s, "/")
            if not promised:
                namespace = s
            else:
                scheme_part, sep, rest = s.partition("://")
                if sep:
                    scheme, host = scheme_part, rest
                else:
                    host = s
        name = cls(
            host=host or default_host,
            namespace=namespace or DEFAULT_NAMESPACE,
            model=model,
            tag=tag or DEFAULT_TAG,
            scheme=scheme if scheme in ("http", "https") else "https",
        )
        if not (
            _valid_part("host", name.host)
            and _valid_part("namespace", name.namespace)
            and _valid_part("model", name.model)
            and _valid_part("tag", name.tag)
        ):
            raise InvalidNameError(text)
        return name

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelName:
        """Build from separately received parts (e.g. /v2 URL segments), validating each."""
        return cls.parse(f"{host}/{namespace}/{model}:{tag}")

    @property
    def key(self) -> str:
        """Case-insensitive identity: ollama matches local names regardless of case."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    @property
    def repository(self) -> str:
        """`namespace/model`, the repository path on a registry (DisplayNamespaceModel)."""
        return f"{self.namespace}/{self.model}"

    def display_shortest(self, default_host: str = DEFAULT_HOST) -> str:
        """ollama's DisplayShortest: drop the default host, then the default namespace."""
        if self.host.lower() != default_host.lower():
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")


@dataclass(frozen=True, order=True)
class Digest:
    """A sha256 content digest, normalised to lower-case hex."""

    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Accept `sha256:<hex>` or the file form `sha256-<hex>` (as ollama's paths.go does)."""
        m = _DIGEST.match(text or "") if isinstance(text, str) else None
        if not m:
            raise InvalidDigestError(str(text))
        return cls(m.group(1).lower())

    @classmethod
    def is_valid(cls, text: str) -> bool:
        return isinstance(text, str) and bool(_DIGEST.match(text))

    @property
    def filename(self) -> str:
        return f"sha256-{self.hex}"

    @property
    def short(self) -> str:
        """The 12 hex characters ollama shows in progress lines and `ollama list`."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"sha256:{self.hex}"
