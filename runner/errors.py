"""Typed failures of the runner, mapped by each HTTP layer to its own error shape.

The ollama API answers `{"error": message}` with `status`; the OpenAI layer wraps the same
message in its error object. Keeping status and message together here means both layers agree.
"""

from __future__ import annotations

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class RequestError(Exception):
    """A request that cannot be served, with the HTTP status ollama uses for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelLoadError(RequestError):
    """llama.cpp refused the model (unknown architecture, bad file, out of memory): 500."""

    def __init__(self, message: str) -> None:
        super().__init__(500, message)
