"""A short coverage-guided fuzz run of the data contract's readers (``make fuzz``).

atheris (libFuzzer for Python) mutates bytes to reach new branches of the Kafka
decoder (:func:`backbone.stream.codec.decode_record`, schema then contract) and
of the CSV reader (:class:`backbone.csvfile.CsvBarFile`). The property is the
one the hypothesis tests state: no input raises, and every item is either a bar
that passes the contract or a dead letter with a registered reason code. Not
part of ``make test``: it runs for a fixed number of inputs and is for finding
crashes, not for proving anything in CI.

    python scripts/fuzz_contract.py -runs=20000          # default corpus-free run
    python scripts/fuzz_contract.py -max_total_time=60
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

# atheris 2.3's import hook crashes on pydantic/kafka-python's C extensions and
# mis-rewrites a loop in backbone.csvfile on Python 3.11 (the same input passes
# uninstrumented), so modules load plainly and the functions that decide are
# instrumented one by one.
from backbone import csvfile
from backbone.bars import Bar
from backbone.contract import REASON_CODES, BarContract, reason_code
from backbone.csvfile import CsvBarFile, CsvHeaderError
from backbone.stream import codec
from backbone.stream.codec import CONTENT_TYPE

for _name in ("decode_record", "_item_bar", "_version_problem", "_loads"):
    setattr(codec, _name, atheris.instrument_func(getattr(codec, _name)))
for _name in ("check", "admit", "_check_symbol", "_check_prices", "_check_volume",
              "_check_ohlc", "_check_ts"):  # fmt: skip
    setattr(BarContract, _name, atheris.instrument_func(getattr(BarContract, _name)))
csvfile._parse = atheris.instrument_func(csvfile._parse)
CsvBarFile._record = atheris.instrument_func(CsvBarFile._record)  # type: ignore[method-assign]
decode_record = codec.decode_record

CONTRACT = BarContract()
HEADERS = [("schema-version", b"1"), ("content-type", CONTENT_TYPE.encode())]
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-contract-"))
_CSV = _DIR / "f.csv"


def _check(items: list[object]) -> None:
    for item in items:
        if isinstance(item, Bar):
            assert CONTRACT.check(item) is None, item
        else:
            code = reason_code(item.reason)  # type: ignore[attr-defined]
            assert code in REASON_CODES, item


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 1)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    if which == 0:
        decoded = decode_record(body, HEADERS, key=b"EURUSD", origin="fuzz", contract=CONTRACT)
        assert decoded.items >= 1
        _check([*decoded.bars, *decoded.dead_letters])
    else:
        _CSV.write_bytes(b"symbol,timeframe,ts,open,high,low,close,volume\n" + body)
        try:
            with CsvBarFile(_CSV, contract=CONTRACT) as f:
                _check(list(f))
        except CsvHeaderError:
            raise AssertionError("a valid header was refused") from None


def _seed_corpus() -> Path:
    """Valid inputs to mutate from: a record of two bars, and a CSV with good and bad rows."""
    corpus = _DIR / "corpus"
    corpus.mkdir()
    bar = (
        b'{"symbol":"EURUSD","timeframe":"1m","ts":"2024-01-02T10:00:00+00:00","open":1.1,'
        b'"high":1.2,"low":1.0,"close":1.15,"volume":10.0,"source":"live"}'
    )
    (corpus / "record").write_bytes(b"\x00[" + bar + b"," + bar.replace(b"10:00", b"10:01") + b"]")
    (corpus / "csv").write_bytes(
        b"\x01EURUSD,1m,2024-01-02T10:00:00Z,1.1,1.2,1.0,1.15,10\n"
        b'"EUR,USD",1d,2024-01-02T13:00:00Z,-1,1e308,nan,1,-5\n'
    )
    return corpus


def main() -> None:
    argv = list(sys.argv)
    if not any(a.startswith(("-runs=", "-max_total_time=")) for a in argv[1:]):
        argv.append("-runs=20000")
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(str(_seed_corpus()))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
