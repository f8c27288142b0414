"""Structured logging: JSON lines in production, readable console output on a terminal.

Secrets must never reach a log line. The :class:`~receiver.redaction.Redactor` built from the
settings is the final processor before rendering: it replaces any occurrence of a secret, in
any field, with ``[redacted]``, a safety net under the rule that code never logs secrets in
the first place.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from receiver.config import LoggingSettings
from receiver.redaction import Redactor

__all__ = ["configure_logging", "debug_enabled"]


def configure_logging(settings: LoggingSettings, *, redactor: Redactor, stream: Any = None) -> None:
    """Configure structlog (and route stdlib logging through the same output), every line
    redacted by ``redactor``."""
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
        redactor.log_processor,
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
