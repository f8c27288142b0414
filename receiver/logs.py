"""Structured logging: JSON lines in production, readable console output on a terminal.

Secrets must never reach a log line. Every configured secret is registered here at start-up
and a final processor replaces any occurrence of one, in any field, with ``[redacted]``: a
safety net under the rule that code never logs secrets in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from receiver.config import LoggingSettings

__all__ = [
    "configure_logging",
    "debug_enabled",
    "error_line",
    "redact_secrets",
    "register_secrets",
]

_secrets: set[str] = set()
REDACTED = "[redacted]"
# An error shown to people (a page, the timeline) is a hint, not a traceback: the log has that.
ERROR_LINE_CHARS = 200


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so that they are scrubbed from every log event."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def error_line(error: BaseException) -> str:
    """An error for people: its kind and message on one short line, registered secrets
    redacted (a message may carry a URL or a header that holds one)."""
    text = " ".join(str(_scrub(str(error))).split())
    if len(text) > ERROR_LINE_CHARS:
        text = text[: ERROR_LINE_CHARS - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace registered secret values with ``[redacted]``."""
    if not _secrets:
        return event_dict
    return {k: _scrub(v) for k, v in event_dict.items()}


def configure_logging(settings: LoggingSettings, *, stream: Any = None) -> None:
    """Configure structlog (and route stdlib logging through the same output)."""
    out = stream or sys.stderr
    console = settings.format == "console" or (settings.format == "auto" and out.isatty())
    level = getattr(logging, settings.level.upper())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Loggers are module globals; binding them anew on every call costs more than the
        # JSON rendering. Logging is configured once, before the application is built.
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp, kubernetes_asyncio) log through stdlib logging: same format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # aiohttp's access log duplicates our own request log line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def debug_enabled() -> bool:
    """Whether debug lines are written, as logging is configured now.

    The request path asks once, when the application is built, and skips building debug lines
    otherwise: a filtered-out call still costs its arguments and the lookups of the logger.
    """
    check = getattr(structlog.get_logger().bind(), "is_enabled_for", None)
    return True if check is None else bool(check(logging.DEBUG))
