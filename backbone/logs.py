"""Logging set-up for the command-line tools: once, from two flags.

Both CLIs (``backbone`` and ``harness``) call :func:`configure_logging` with
``--log-level`` and ``--log-format``; library modules only ever call
``logging.getLogger(__name__)``. ``json`` writes one JSON object per line
(python-json-logger) for log shippers; ``text`` is for people.

Every record passes through :class:`RedactingFilter` first, so a password that
reaches a log message by accident (a DSN in an exception, a ``password=`` in a
client's repr) is masked before any handler formats it.
"""

from __future__ import annotations

import logging
import re
import sys
from enum import StrEnum
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "LogFormat",
    "LogLevel",
    "RedactingFilter",
    "configure_logging",
    "redact",
]

#: What a redacted secret is replaced with.
MASK = "**********"

# ``password=...``, ``"password": "..."``, ``secret: ...``, ``token=...`` and the
# password of a URL's user-info (``scheme://user:pw@host``).
_KEY_VALUE = re.compile(
    r"(?P<key>(?:pass(?:word)?|passwd|secret|token|api[_-]?key|credentials?)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<value>[^@\s]+)(?=@)")


class LogLevel(StrEnum):
    """``--log-level`` choices."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    """``--log-format`` choices."""

    text = "text"
    json = "json"


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential masked."""
    text = _URL_USERINFO.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_VALUE.sub(lambda m: m.group("key") + MASK, text)


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message and exception text, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Marks the handler this module installed, so a second call replaces it.
_HANDLER_NAME = "backbone-cli"


def configure_logging(
    level: LogLevel | str = LogLevel.warning,
    fmt: LogFormat | str = LogFormat.text,
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route the root logger to one stderr handler with ``level`` and ``fmt``.

    Idempotent: calling it again replaces the handler it installed before
    (tests and nested CLIs call it more than once). Returns the handler.
    """
    level_name = LogLevel(level).value.upper()
    formatter: logging.Formatter
    if LogFormat(fmt) is LogFormat.json:
        formatter = JsonFormatter(
            _JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    else:
        formatter = logging.Formatter(_TEXT_FORMAT)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name)
    # kafka-python logs every refused connection while a broker starts (at ERROR)
    # and every SASL handshake over plaintext; the backbone reports the failures
    # that matter itself, so kafka-python's own lines show only when debugging.
    kafka_level = logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("kafka").setLevel(kafka_level)
    return handler
