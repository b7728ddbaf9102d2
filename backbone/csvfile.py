"""Bars CSV files: the whole-file checks first, then one record per physical line.

What a file must be is decided before any row is read: :class:`CsvBarFile`
opens it, drops a UTF-8 byte-order mark (spreadsheet tools write one), reads
the header and raises :class:`CsvHeaderError` naming the missing columns and
the columns found — so a wrong file is refused whole, and nothing of it is
stored. An empty file or one with only a header is not an error:
:attr:`CsvBarFile.empty` says which, and iteration yields nothing.

Rows are read one physical line at a time, in constant memory whatever the
file size (lines longer than :data:`MAX_LINE_BYTES` are refused, not
buffered). A quoted field may therefore not span lines: a line whose quote is
not closed is refused with its line number (``csv_malformed``), and the next
line is read as its own record, so one bad quote never shifts or swallows the
rows after it. Every data line yields exactly one item: a :class:`Bar` or a
:class:`DeadLetter` (origin ``csv:PATH:LINE``) with its reason code.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from backbone.bars import CSV_COLUMNS, Bar
from backbone.contract import DEFAULT_POLICY, BarContract, reason, show_value
from backbone.deadletter import DeadLetter

__all__ = ["MAX_LINE_BYTES", "CsvBarFile", "CsvHeaderError"]

#: The longest line read as a record; a longer one is refused (and skipped in
#: chunks), so memory stays bounded whatever the file holds.
MAX_LINE_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_NUMERIC = ("open", "high", "low", "close", "volume")


class CsvHeaderError(ValueError):
    """The file's header lacks required columns; nothing of the file was read as data."""


class CsvBarFile:
    """A bars CSV with a checked header; iterate it for bars and rejects.

    Use it as a context manager (or call :meth:`close`). ``contract`` checks
    every parsed bar, so rejects carry their line number.
    """

    def __init__(self, path: Path | str, *, contract: BarContract | None = None) -> None:
        self.path = Path(path)
        self.contract = contract or BarContract(DEFAULT_POLICY)
        self._fh: IO[bytes] = self.path.open("rb")
        self.line = 0
        self.columns: list[str] = []
        self._index: dict[str, int] = {}
        self._pending: bytes | None = None
        self.bom = False
        #: ``"empty"``, ``"header only"``, or ``None`` when the file has data rows.
        self.empty: Literal["empty", "header only"] | None = None
        try:
            self._read_header()
        except BaseException:
            self._fh.close()
            raise

    # --- whole-file checks ------------------------------------------------------
    def _read_header(self) -> None:
        raw = self._next_line()
        if raw is None:
            self.empty = "empty"
            return
        if raw.startswith(_BOM):
            self.bom, raw = True, raw[len(_BOM) :]
        try:
            fields = next(csv.reader([raw.decode("utf-8")], strict=True), [])
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CsvHeaderError(
                f"{self.path}: the header (line {self.line}) cannot be read ({exc}); "
                f"the first line must name the columns {', '.join(CSV_COLUMNS)}"
            ) from None
        self.columns = [name.strip() for name in fields]
        self._index = {name.lower(): i for i, name in enumerate(self.columns)}
        missing = [c for c in CSV_COLUMNS if c not in self._index]
        if missing:
            found = ", ".join(show_value(c, 24) for c in self.columns[:20]) or "none"
            raise CsvHeaderError(
                f"{self.path}: the header lacks the required columns {', '.join(missing)} "
                f"(found: {found}); the first line must name {', '.join(CSV_COLUMNS)} "
                "in any order. Nothing was ingested."
            )
        self._pending = self._next_line()
        self.empty = "header only" if self._pending is None else None

    def _next_line(self) -> bytes | None:
        """The next non-blank physical line (without its end), or ``None`` at the end."""
        while True:
            raw = self._fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return None
            self.line += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                self._skip_rest_of_line()
                return b"\x00too-long"
            line = raw.rstrip(b"\r\n")
            if line.strip():
                return line

    def _skip_rest_of_line(self) -> None:
        while chunk := self._fh.readline(MAX_LINE_BYTES):
            if chunk.endswith(b"\n"):
                return

    # --- rows -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Bar | DeadLetter]:
        while self._pending is not None:
            line, lineno = self._pending, self.line
            self._pending = self._next_line()
            yield self._record(line, lineno)

    def _record(self, line: bytes, lineno: int) -> Bar | DeadLetter:
        origin = f"csv:{self.path}:{lineno}"
        if line == b"\x00too-long":
            why = reason("csv_malformed", f"line {lineno} is longer than {MAX_LINE_BYTES} bytes")
            return DeadLetter(origin, why, b"")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = reason(
                "csv_undecodable", f"line {lineno} is not UTF-8 (bad byte at column {exc.start})"
            )
            return DeadLetter(origin, why, line)
        if text.count('"') % 2:
            why = reason(
                "csv_malformed",
                f"line {lineno} has an unbalanced quote: a quoted field spans lines, which "
                "this reader refuses (each line is one record)",
            )
            return DeadLetter(origin, why, line)
        try:
            fields = next(csv.reader([text], strict=True), [])
        except csv.Error as exc:
            why = reason(
                "csv_malformed",
                f"line {lineno}: {exc}; a quoted field must close on its own line",
            )
            return DeadLetter(origin, why, line)
        if len(fields) != len(self.columns):
            why = reason(
                "csv_malformed",
                f"line {lineno} has {len(fields)} fields; the header has {len(self.columns)}",
            )
            return DeadLetter(origin, why, line)
        values = {c: fields[self._index[c]].strip() for c in CSV_COLUMNS}
        parsed = _parse(values)
        if isinstance(parsed, str):
            return DeadLetter(origin, parsed, _payload(values))
        admitted = self.contract.admit(parsed)
        if isinstance(admitted, Bar):
            return admitted
        return DeadLetter(origin, admitted.reason, _payload(values))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvBarFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _payload(values: dict[str, str]) -> bytes:
    """A refused row as a JSON object, so `backbone dead-letters replay` can read it."""
    return json.dumps(values, ensure_ascii=False).encode()


def _parse(values: dict[str, str]) -> Bar | str:
    """The bar in one row's values, or the reason it is not one."""
    raw_ts = values["ts"]
    try:
        ts = datetime.fromisoformat(raw_ts)
        if ts.tzinfo is not None:
            ts = ts.astimezone(UTC)
    except (ValueError, OverflowError):
        return reason(
            "field_unreadable",
            f"ts {show_value(raw_ts)} is not ISO-8601 (use e.g. 2024-01-02T10:00:00Z)",
        )
    if ts.tzinfo is None:
        return reason("ts_naive", f"ts {show_value(raw_ts)} has no timezone; add Z or +00:00")
    numbers: dict[str, float] = {}
    for col in _NUMERIC:
        try:
            numbers[col] = float(values[col])
        except ValueError:
            return reason("field_unreadable", f"{col} {show_value(values[col])} is not a number")
    return Bar(
        values["symbol"],
        values["timeframe"],
        ts,
        numbers["open"],
        numbers["high"],
        numbers["low"],
        numbers["close"],
        numbers["volume"],
        "csv",
    )
