"""Unit tests of cdc.logging: rendering choices, and that no password ever reaches a log line."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from cdc.logging import configure_logging, redact_dsn, redact_secrets

PASSWORD = "hunter2"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def fail(exc: Exception) -> NoReturn:
    """Raise ``exc``, so tests can log from inside an ``except`` block."""
    raise exc


def json_lines(buffer: io.StringIO | io.BytesIO) -> list[dict[str, Any]]:
    raw = buffer.getvalue()
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [orjson.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- redact_dsn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://cdc:hunter2@db:5432/inv", "postgresql://cdc:***@db:5432/inv"),
        (
            "postgres://cdc:hun@ter/2@db/inv?sslmode=require",
            "postgres://cdc:***@db/inv?sslmode=require",
        ),
        (
            "host=db user=cdc password=hunter2 dbname=inv",
            "host=db user=cdc password=*** dbname=inv",
        ),
        ("host=db password='hun ter\\'2' dbname=inv", "host=db password=*** dbname=inv"),
        ("host=db PASSWORD = hunter2", "host=db PASSWORD = ***"),
        (
            "connection to 'postgresql://u:hunter2@h/d' failed",
            "connection to 'postgresql://u:***@h/d' failed",
        ),
        ("postgresql://cdc@db/inv", "postgresql://cdc@db/inv"),
        ("postgresql://db:5432/inv", "postgresql://db:5432/inv"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_dsn(text: str, expected: str) -> None:
    assert redact_dsn(text) == expected


# --------------------------------------------------------------------------- processor


def test_processor_masks_secret_keys_and_scrubs_values() -> None:
    event = {
        "event": f"connect failed: postgresql://u:{PASSWORD}@h/d",
        "dsn": f"host=h password={PASSWORD}",
        "password": PASSWORD,
        "client_secret": PASSWORD,
        "nested": {"sasl.password": PASSWORD, "items": [f"password={PASSWORD}"]},
        "count": 3,
    }
    result = redact_secrets(None, "info", event)
    assert result == {
        "event": "connect failed: postgresql://u:***@h/d",
        "dsn": "host=h password=***",
        "password": "***",
        "client_secret": "***",
        "nested": {"sasl.password": "***", "items": ["password=***"]},
        "count": 3,
    }


def test_processor_scrubs_exception_values() -> None:
    result = redact_secrets(
        None, "error", {"error": RuntimeError(f"bad postgresql://u:{PASSWORD}@h/d")}
    )
    assert result == {"error": "RuntimeError: bad postgresql://u:***@h/d"}


def test_capture_logs_through_the_redaction_processor() -> None:
    configure_logging("info", "json", stream=io.StringIO())
    with capture_logs(processors=[redact_secrets]) as logs:
        structlog.get_logger().info("slot_created", dsn=f"postgresql://u:{PASSWORD}@h/d", slot="s")
    assert logs == [
        {"event": "slot_created", "dsn": "postgresql://u:***@h/d", "slot": "s", "log_level": "info"}
    ]


# --------------------------------------------------------------------------- configure_logging


def test_json_lines_have_level_timestamp_and_context() -> None:
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    structlog.contextvars.bind_contextvars(connector="inv")
    structlog.get_logger().info("slot_created", slot="cdc_inv")
    (line,) = json_lines(buffer)
    assert line["event"] == "slot_created"
    assert (line["level"], line["connector"], line["slot"]) == ("info", "inv", "cdc_inv")
    assert line["timestamp"].endswith("Z")


def test_level_filters_lower_levels() -> None:
    buffer = io.StringIO()
    configure_logging("warning", "json", stream=buffer)
    log = structlog.get_logger()
    log.info("dropped")
    log.warning("kept")
    assert [line["event"] for line in json_lines(buffer)] == ["kept"]


def test_binary_stream_gets_json_bytes() -> None:
    buffer = io.BytesIO()
    configure_logging("info", "auto", stream=buffer)
    structlog.get_logger().info("started")
    assert [line["event"] for line in json_lines(buffer)] == ["started"]


def test_auto_format_is_json_off_a_tty() -> None:
    buffer = io.StringIO()
    configure_logging("info", "auto", stream=buffer)
    structlog.get_logger().info("started")
    assert json_lines(buffer)[0]["event"] == "started"


def test_auto_format_is_console_on_a_tty() -> None:
    buffer = FakeTTY()
    configure_logging("info", "auto", stream=buffer)
    structlog.get_logger().info("started", slot="s")
    output = buffer.getvalue()
    assert "started" in output
    assert not output.startswith("{")


def test_json_output_never_contains_the_password() -> None:
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    log = structlog.get_logger()
    dsn = f"postgresql://cdc:{PASSWORD}@db/inv"
    log.info("connecting", dsn=dsn, password=PASSWORD, extra={"conninfo": dsn})
    try:
        fail(ConnectionError(f"could not connect with {dsn}"))
    except ConnectionError:
        log.exception("connect_failed")
    output = buffer.getvalue()
    assert PASSWORD not in output
    lines = json_lines(buffer)
    assert (
        lines[1]["exception"][0]["exc_value"]
        == "could not connect with postgresql://cdc:***@db/inv"
    )


def test_json_tracebacks_omit_local_variables() -> None:
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    opaque_name = f"x {PASSWORD}"  # a local whose name gives no hint it is secret
    try:
        fail(ValueError("boom"))
    except ValueError:
        structlog.get_logger().exception("failed")
    assert opaque_name not in buffer.getvalue()
    assert "locals" not in json_lines(buffer)[0]["exception"][0]["frames"][0]


def test_console_output_never_contains_the_password() -> None:
    buffer = io.StringIO()
    configure_logging("debug", "console", stream=buffer)
    log = structlog.get_logger()
    dsn = f"host=db password={PASSWORD}"
    log.info("connecting", dsn=dsn)
    try:
        fail(ConnectionError(f"could not connect with {dsn}"))
    except ConnectionError:
        log.exception("connect_failed")
    output = buffer.getvalue()
    assert "connect_failed" in output
    assert "password=***" in output
    assert PASSWORD not in output


def test_a_library_warning_becomes_a_json_line() -> None:
    buffer = io.StringIO()
    with warnings.catch_warnings():  # restores showwarning and the filters afterwards
        warnings.simplefilter("always")
        configure_logging("info", "json", stream=buffer)
        warnings.warn("abort_transaction failed during close", RuntimeWarning, stacklevel=1)
    (line,) = json_lines(buffer)
    assert line["event"] == "python_warning"
    assert line["level"] == "warning"
    assert line["category"] == "RuntimeWarning"
    assert line["message"] == "abort_transaction failed during close"
    assert "test_logging.py:" in line["where"]
