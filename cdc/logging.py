"""Logging of ``cdc``: the only ``structlog.configure()`` call, and secret redaction.

Its one job is to set up structlog once, at CLI start, so every log line is either a
console line (on a TTY) or one JSON object per line, and so no password ever reaches a
log: a redaction processor scrubs DSN passwords from every string value and masks keys
that name a secret. This module must not decide *what* is logged; modules log through
``structlog.get_logger()`` and bind ``connector``/``slot`` themselves.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Literal, TextIO, cast

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.types import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "redact_dsn", "redact_secrets"]

#: What a secret is replaced with.
REDACTED = "***"

# URL form: scheme://user:password@host… The password runs to the *last* "@" of the
# whitespace-delimited token, because people write raw "@" and "/" in passwords.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<password>\S*)(?P<tail>@[^\s@]*)"
)
# key=value form (libpq conninfo, URL query strings, PGPASSWORD=…, sasl.password=…):
# a quoted value with backslash escapes, or everything up to whitespace.
_KV_PASSWORD = re.compile(
    r"(?P<head>password\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'?|\S+)",
    re.IGNORECASE,
)
# Event-dict keys whose whole value is a secret, or a DSN to redact.
_SECRET_KEY = re.compile(r"password|passwd|secret", re.IGNORECASE)
_DSN_KEY = re.compile(r"dsn|conninfo", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Replace the password in every connection string found in ``dsn`` with ``***``.

    Handles the URL form (``postgresql://user:pw@host/db``) and the key=value form
    (``host=h password=pw``), anywhere in a longer text such as an exception message,
    so it is also the scrubber for error text that may quote a DSN.
    """
    if "=" not in dsn and "://" not in dsn:
        return dsn  # fast path: nothing that could hold a password
    text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<tail>", dsn)
    return _KV_PASSWORD.sub(rf"\g<head>{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_dsn(value)
    if isinstance(value, dict):
        return {key: _redact_item(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseException):
        # Exceptions are rendered with str(); scrub that text, keep the type name.
        return f"{type(value).__name__}: {redact_dsn(str(value))}"
    return value


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str):
        if _SECRET_KEY.search(key) and value is not None:
            return REDACTED
        if _DSN_KEY.search(key) and value is not None:
            return redact_dsn(str(value.get_secret_value() if _is_secret(value) else value))
    return _redact_value(value)


def _is_secret(value: Any) -> bool:
    return hasattr(value, "get_secret_value")


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: scrub passwords from every value, recursively.

    Keys naming a secret (``password``, ``secret`` …) are masked whole; keys
    naming a DSN keep the DSN with its password masked; every other string value has
    any embedded connection-string password masked.
    """
    for key in list(event_dict):
        event_dict[key] = _redact_item(key, event_dict[key])
    return event_dict


def _binary_stream(stream: IO[Any]) -> BinaryIO | None:
    """The byte stream under ``stream``, so JSON lines skip a decode/encode round trip."""
    if isinstance(stream, io.RawIOBase | io.BufferedIOBase):
        return cast(BinaryIO, stream)
    buffer = getattr(stream, "buffer", None)
    if isinstance(buffer, io.RawIOBase | io.BufferedIOBase):
        stream.flush()  # keep anything already written to the text layer in order
        return cast(BinaryIO, buffer)
    return None


def _orjson_str(event_dict: Any, **_kwargs: Any) -> str:
    return orjson.dumps(event_dict).decode()


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    stream: IO[Any] | None = None,
) -> None:
    """Configure structlog for the whole process. Call once, at CLI start.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``; lower levels cost nothing.
        fmt: ``console`` for people, ``json`` (one object per line) for log shippers,
            ``auto`` for console when ``stream`` is a TTY and JSON otherwise.
        stream: where lines go; standard error by default, so standard output stays
            free for command output. Text or binary.
    """
    out: IO[Any] = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and _isatty(out))

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    logger_factory: Callable[..., WrappedLogger]
    if console:
        processors += [
            # Render the traceback to text *before* redaction so an exception message
            # quoting a DSN is scrubbed too (the console renderer would print it raw).
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.dev.ConsoleRenderer(colors=_isatty(out)),
        ]
        logger_factory = structlog.WriteLoggerFactory(file=cast(TextIO, out))
    else:
        processors += [
            # Like structlog's dict_tracebacks, but never with local variables: a frame's
            # locals may hold the DSN under any name.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_secrets,
        ]
        binary = _binary_stream(out)
        if binary is not None:
            processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
            logger_factory = structlog.BytesLoggerFactory(file=binary)
        else:
            processors.append(structlog.processors.JSONRenderer(serializer=_orjson_str))
            logger_factory = structlog.WriteLoggerFactory(file=cast(TextIO, out))

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level.lower()),
        context_class=dict,
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # A library's warnings.warn (confluent-kafka warns from Producer.close()) would print
    # a bare text line among the JSON ones: log it as an event instead.
    warnings.showwarning = _log_warning


def _log_warning(  # noqa: PLR0917 - warnings.showwarning's signature
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one ``python_warning`` log line."""
    structlog.get_logger().warning(
        "python_warning",
        category=category.__name__,
        message=str(message),
        where=f"{filename}:{lineno}",
    )


def _isatty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False
