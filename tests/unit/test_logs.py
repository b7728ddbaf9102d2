"""Logging is configured once from two flags, and secrets never reach a log line."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from backbone.logs import MASK, configure_logging, redact

_SECRET = st.text(
    alphabet=st.characters(
        whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="!#$%*+-_"
    ),
    min_size=6,
    max_size=30,
)


@given(secret=_SECRET)
def test_password_in_a_key_value_pair_or_a_url_is_masked(secret: str) -> None:
    for template in (
        "connect failed: password={} host=127.0.0.1",
        '{{"user": "backbone", "password": "{}"}}',
        "dsn postgresql://backbone:{}@127.0.0.1:5432/marketdata",
    ):
        # Exactly the secret is replaced, and nothing around it.
        assert redact(template.format(secret)) == template.format(MASK)


def test_text_without_credentials_is_unchanged() -> None:
    text = "consume backbone-ingest: 120.0 bars/s, lag 3, last commit 07:01:02Z"
    assert redact(text) == text


def test_json_format_writes_one_object_per_line_with_the_secret_masked() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", "json", stream=stream)
    try:
        log = logging.getLogger("backbone.test")
        log.info("opened %s", "redis://backbone:hunter2secret@127.0.0.1:6379")
        log.debug("below the threshold")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.getLogger().removeHandler(handler)
    assert len(lines) == 1
    assert lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "backbone.test"
    assert "hunter2secret" not in lines[0]["message"]
    assert lines[0]["message"].startswith("opened redis://backbone:")


def test_configuring_twice_replaces_the_handler() -> None:
    first = configure_logging("warning", "text", stream=io.StringIO())
    second_stream = io.StringIO()
    second = configure_logging("info", "text", stream=second_stream)
    try:
        root = logging.getLogger()
        assert first not in root.handlers and second in root.handlers
        logging.getLogger("backbone.test").info("once")
        assert second_stream.getvalue().count("once") == 1
    finally:
        logging.getLogger().removeHandler(second)
