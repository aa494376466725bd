"""Log output for people (default) or as JSON lines (``--log-format json``) for collectors.

Under systemd, stderr goes to the journal, which stamps every line itself and reads a leading
``<N>`` as the syslog priority (``SyslogLevelPrefix=``, on by default). So when stderr *is* the
journal (``$JOURNAL_STREAM`` names it), human lines drop the timestamp and carry the prefix, and
``journalctl -p err`` finds errors. JSON lines carry the level as a field and also get the prefix
there. Context passed as ``extra={"stream": ..., "event": ...}`` becomes fields of the JSON object
and ``key=value`` pairs on human lines, so a log line and the ``events`` row it mirrors share names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

# logging level -> syslog priority (sd-daemon(3) prefixes).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields a caller attached with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, thread, msg, context fields, exc."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        for key, value in extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str)
        return f"<{_priority(record.levelno)}>{line}" if self.journal else line


class HumanFormatter(logging.Formatter):
    """``time level logger: message key=value``; under the journal, ``<N>logger: message``."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        if self.journal:
            text = f"<{_priority(record.levelno)}>{record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
        else:
            text = super().format(record)
        context = extras(record)
        if context:
            first, nl, rest = text.partition("\n")
            text = first + "".join(f" {k}={v}" for k, v in context.items()) + nl + rest
        return text


def stderr_is_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal's socket, as named by ``$JOURNAL_STREAM`` (``dev:inode``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def configure(level: int, fmt: str = "human") -> None:
    """Send log records to stderr in ``fmt`` ('human' or 'json')."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    handler.setFormatter(JsonFormatter(journal=journal) if fmt == "json" else HumanFormatter(journal=journal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
