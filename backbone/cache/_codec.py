"""Bars <-> bytes for cache entries (JSON of the bar dict codec)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from backbone.bars import Bar, bar_from_dict, bar_to_dict

__all__ = ["decode_bar", "decode_bars", "encode_bar", "encode_bars"]


def encode_bar(bar: Bar) -> bytes:
    return json.dumps(bar_to_dict(bar), separators=(",", ":")).encode()


def decode_bar(raw: bytes | str) -> Bar:
    return bar_from_dict(json.loads(raw))


def encode_bars(bars: Sequence[Bar]) -> bytes:
    return json.dumps([bar_to_dict(b) for b in bars], separators=(",", ":")).encode()


def decode_bars(raw: bytes | str) -> list[Bar]:
    return [bar_from_dict(item) for item in json.loads(raw)]
