"""Process-wide llama.cpp state (backend init, log routing) and the vocabulary helpers on top of it.

llama.cpp logs through one global callback. Left alone, llama-cpp-python prints every line to
stderr; here the lines go to the `runner.llama` logger instead (debug level for chatter), and the
first error line is kept so a failed model load can say why ("unknown model architecture: 'x'")
instead of only "failed to load".
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import weakref
from functools import lru_cache
from pathlib import Path

import llama_cpp as L

log = logging.getLogger("runner.llama")

# ggml_log_level at this llama.cpp: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_state = threading.local()
_first_error: list[str] = [""]
_FUNCTION_PREFIX = re.compile(r"^\w+: ")


@L.llama_log_callback
def log_callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace")
    if level == 5:
        level = getattr(_state, "level", 1)
    _state.level = level
    if level == 4 and message.strip() and not _first_error[0]:
        _first_error[0] = _FUNCTION_PREFIX.sub("", message.strip())
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", message.rstrip("\n"))


@lru_cache(maxsize=1)
def init_backend() -> None:
    """Initialise llama.cpp once per process and route its logs; idempotent."""
    L.llama_log_set(log_callback, ctypes.c_void_p(0))
    L.llama_backend_init()


def take_error() -> str:
    """The first error llama.cpp logged since the last call (the cause, not the aftermath)."""
    message, _first_error[0] = _first_error[0], ""
    return message


def gpu_offload_supported() -> bool:
    init_backend()
    return bool(L.llama_supports_gpu_offload())


class Vocab:
    """Tokenizer view of a loaded model. llama.cpp's vocabulary is read-only, so any thread may use it."""

    def __init__(self, model: L.llama_model_p) -> None:
        self._vocab = L.llama_model_get_vocab(model)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self.add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.bos = int(L.llama_vocab_bos(self._vocab))
        self.eos = int(L.llama_vocab_eos(self._vocab))
        self.n_tokens = int(L.llama_vocab_n_tokens(self._vocab))

    @classmethod
    def from_file(cls, path: Path) -> Vocab:
        """The vocabulary of a GGUF file without its weights (llama.cpp's vocab_only load, ~0.1 s and
        ~20 MB for SmolLM2): what the server keeps of a model whose weights live in a runner child,
        so tokenizing a prompt costs no round trip. ollama's server loads its runners' models the
        same way for tokenization. The file's model is freed when the Vocab is garbage, never
        while a thread still tokenizes with it."""
        init_backend()
        params = L.llama_model_default_params()
        params.vocab_only = True
        take_error()
        model = L.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(take_error() or f"llama.cpp could not read the vocabulary of {path.name}")
        vocab = cls(model)
        weakref.finalize(vocab, L.llama_model_free, model).atexit = False
        return vocab

    @property
    def pointer(self) -> L.llama_vocab_p:
        return self._vocab

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buffer = (L.llama_token * capacity)()
            n = L.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, parse_special)
            if n >= 0:
                return list(buffer[:n])
            capacity = -n

    def piece(self, token: int, special: bool = False) -> bytes:
        """Raw bytes of one token (may be part of a UTF-8 sequence); control tokens empty unless special.

        Memoized: the vocabulary never changes and the decode loop asks for every token it samples."""
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is None:
            cached = self._pieces[key] = self._piece(token, special)
        return cached

    def _piece(self, token: int, special: bool) -> bytes:
        if not 0 <= token < self.n_tokens:  # llama.cpp would throw std::out_of_range and abort the process
            raise ValueError(f"token id {token} is outside the vocabulary of {self.n_tokens} tokens")
        buffer = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t, special=True) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self._vocab, token))

    def single_token(self, text: str) -> int | None:
        """The id of `text` when the vocabulary has it as one (special) token, else None."""
        tokens = self.tokenize(text, add_special=False, parse_special=True)
        return tokens[0] if len(tokens) == 1 else None
