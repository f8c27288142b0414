"""The ``posthog-receiver`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from receiver import __version__
from receiver.config import ConfigError, Settings, load_settings

__all__ = ["install_fast_loop", "main"]

EXIT_CONFIG = 2


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML configuration (default: the embedded example, safe on a laptop)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posthog-receiver",
        description=(
            "Alertmanager webhook receiver that runs the PostHog incident runbook: triage, "
            "guarded Kubernetes remediation, PagerDuty/status page/Slack, evidence."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook receiver")
    _add_config(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")

    check = sub.add_parser("check-config", help="validate a configuration and exit")
    _add_config(check)
    return parser


def _load(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        print(f"posthog-receiver: config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def install_fast_loop() -> str:
    """Use uvloop when it is installed (the optional ``fast`` extra); name the loop in use.

    Optional because the receiver is correct on the standard loop; uvloop only makes each
    request cheaper (docs/benchmarks.md).
    """
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _serve(args: argparse.Namespace) -> int:
    import structlog
    from aiohttp import web

    from receiver.app import create_app
    from receiver.logs import configure_logging

    settings = _load(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update=overrides)}
        )
    configure_logging(settings.logging)
    loop = install_fast_loop()
    structlog.get_logger(__name__).info("serving", event_loop=loop, port=settings.server.port)
    web.run_app(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=settings.server.shutdown_timeout_seconds,
        print=None,
        access_log=None,
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    source = args.config or "embedded default"
    print(f"config OK: {source} (store: {settings.store.path})")
    return 0


COMMANDS = {"serve": _serve, "check-config": _check_config}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
