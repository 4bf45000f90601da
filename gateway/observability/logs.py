"""JSON log lines, one object per line, for every component.

Callers pass structured fields with ``extra={...}``; only those fields and the message are
written. Nothing here formats tokens or cookies: callers never pass them.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, object] | None = None) -> None:
        super().__init__()
        self._static = static or {}

    _second = -1
    _stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
        }
        for key in vars(record).keys() - _STANDARD_ATTRIBUTES:
            if not key.startswith("_"):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class FastLine:
    """Writes one JSON log line per call without a LogRecord: for the per-check decision
    line, where the logging module's record and formatter cost more than the decision.

    Same shape as JsonFormatter's lines; enabled when its logger is enabled for INFO.
    """

    def __init__(self, logger_name: str) -> None:
        self._logger = logging.getLogger(logger_name)
        self._name = logger_name
        self._clock = JsonFormatter()

    def __call__(self, message: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        created = time.time()
        line = {
            "time": self._clock._time(created),
            "level": "info",
            "logger": self._name,
            "message": message,
            **_STATIC,
            **fields,
        }
        _STREAM[0].write(json.dumps(line, default=str, ensure_ascii=False) + "\n")


_STATIC: dict[str, object] = {}
_STREAM = [sys.stderr]


def configure_logging(level: str, *, worker: int | None = None) -> None:
    """Send JSON lines to stderr at ``level`` (debug, info, warning, error)."""
    static: dict[str, object] = {"worker": worker} if worker is not None else {}
    _STATIC.clear()
    _STATIC.update(static)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static or None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
