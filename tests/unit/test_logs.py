"""The per-connection lines written directly (logs.line) are exactly what the formatter makes,
in text and JSON, and fall back to `logging` whenever anything else listens."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from rdpbalancer import logs

NOW = 1796280000.0421  # a fixed clock: 2026-12-03T... with milliseconds 042
EVENT = {"event": "end", "session": "00ab", "user": 'a"b\u00e9', "bytes_up": 10}
TEXT = 'session=00ab end client=127.0.0.1:5 user="a\\"b\\xe9" 100% done'


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("rdpbalancer.logs.time.time", lambda: NOW)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)  # pytest's own capture handlers among them
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logs._direct = None


def _setup(fmt: str) -> io.StringIO:
    """setup_logging as `rdpbalancer run` calls it, its handler writing into a buffer."""
    logs.setup_logging("info", fmt)
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


def _no_record(_logger: logging.Logger, _record: logging.LogRecord) -> None:
    raise AssertionError("a LogRecord was handled")


def _formatted() -> str:
    """What logging's own path prints for the same line at the same time."""
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("rdpbalancer.session", logging.INFO, __file__, 1, TEXT, None, None)
    record.created, record.msecs = NOW, int((NOW - int(NOW)) * 1000)
    record.event = EVENT
    return handler.format(record) + "\n"


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.usefixtures("restored")
def test_a_direct_line_is_what_the_formatter_prints(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _setup(fmt)
    monkeypatch.setattr(logging.Logger, "handle", _no_record)  # the direct path makes no LogRecord
    logs.line(logging.getLogger("rdpbalancer.session"), logging.INFO, TEXT, EVENT)
    assert out.getvalue() == _formatted()
    if fmt == "json":
        doc = json.loads(out.getvalue())
        assert doc["user"] == 'a"b\u00e9' and doc["msg"] == TEXT and doc["ts"].endswith(".042Z")


@pytest.mark.usefixtures("restored")
def test_another_handler_gets_the_record_through_logging() -> None:
    out = _setup("text")
    seen: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(other)  # as a test's log capture or an embedding program does
    logs.line(logging.getLogger("rdpbalancer.session"), logging.INFO, TEXT, EVENT)
    assert [r.getMessage() for r in seen] == [TEXT] and seen[0].event == EVENT  # type: ignore[attr-defined]
    assert out.getvalue() == _formatted()  # and ours still prints it, through logging


@pytest.mark.usefixtures("restored")
def test_a_filter_on_the_way_is_honoured() -> None:
    out = _setup("text")
    session_log = logging.getLogger("rdpbalancer.session")
    quiet = logging.Filter("nothing")  # passes no record of rdpbalancer.*
    session_log.addFilter(quiet)
    try:
        logs.line(session_log, logging.INFO, TEXT, EVENT)
    finally:
        session_log.removeFilter(quiet)
    assert out.getvalue() == ""
