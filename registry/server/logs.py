"""Where the server's log records go and how they look: text for people, JSON lines for collectors.

Every record goes to stderr, one line each. With `CORRAL_LOG_FORMAT=json` a line is one JSON
object: `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, every field a
record was given with `extra=` as a key of its own (the access log's `client`, `method`, `path`,
`status`, `bytes`, `duration_ms`), and `exception` when there is a traceback, so a log collector
needs no parsing rules. The text format is the one corral always had.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from registry.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    """INFO (OLLAMA_DEBUG=0) or DEBUG, access lines included, in the chosen format on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO if settings.debug == 0 else logging.DEBUG, handlers=[handler])
    logging.captureWarnings(True)  # Python's warnings as records too, so no line on stderr escapes the format
