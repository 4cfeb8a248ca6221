"""Logging set-up: one line per event, to stdout, UTC timestamps.

The two lines of every relayed connection (routed, end) go through `line()`: when logging is as
`setup_logging` left it (its one handler on the root logger), the line is built and written
here directly, the same text (or JSON object) the formatter would make, without a LogRecord,
`%`-formatting or the handler chain (about 10 us instead of 30-200 us a line at connection
rates). Anything else (another handler, a test's log capture, a filter) gets the standard
`logging` call. Each line is flushed as it is written, as `logging.StreamHandler` does: a crash
loses none that were logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


class _JSONFormatter(_UTCFormatter):
    """One JSON object per line: ts, level, logger, msg (and exc when there is a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            doc.update(event)  # structured fields of session events: session, user, server, ...
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class _Direct:
    """The handler `setup_logging` installed, and how to write one line to it directly."""

    def __init__(self, handler: logging.StreamHandler[Any], json_lines: bool) -> None:
        self.handler = handler
        self.handlers = [handler]  # what the root logger must hold for the direct path
        self.json = json_lines
        self._second = -1
        self._stamp = ""

    def timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # strftime once a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, level: int, name: str, text: str, event: dict[str, Any]) -> None:
        stamp = self.timestamp(time.time())
        if self.json:
            doc = {"ts": stamp, "level": logging.getLevelName(level).lower(), "logger": name, "msg": text}
            doc.update(event)
            out = json.dumps(doc, ensure_ascii=False)
        else:
            out = f"{stamp} {logging.getLevelName(level)} {name} {text}"
        handler = self.handler
        handler.acquire()  # the sticky writer thread may log at the same moment
        try:
            handler.stream.write(out + handler.terminator)
            handler.flush()
        except Exception:  # a closed or full stdout: as logging does, report and go on
            handler.handleError(logging.makeLogRecord({"msg": text, "levelno": level, "name": name}))
        finally:
            handler.release()


_direct: _Direct | None = None


def line(logger: logging.Logger, level: int, text: str, event: dict[str, Any]) -> None:
    """Log `text` (already formatted; JSON adds the fields of `event`) at `level`. The caller
    checks `logger.isEnabledFor(level)` first, so a disabled line costs nothing to build."""
    direct = _direct
    if direct is not None and logging.root.handlers == direct.handlers and _plain(logger, direct.handler):
        direct.write(level, logger.name, text, event)
    else:
        logger.log(level, text, extra={"event": event})


def _plain(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Nothing between `logger` and the root handler would see, filter or divert the line."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or not node.propagate:
            return False
        node = node.parent
    return not logging.root.filters and not handler.filters and handler.level <= logging.DEBUG


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _direct
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_UTCFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _direct = _Direct(handler, fmt == "json")
