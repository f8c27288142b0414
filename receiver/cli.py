"""The ``posthog-receiver`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from receiver import __version__
from receiver.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from receiver.evidence import EvidenceCollector

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_NOT_FOUND = 1
EXIT_UNAVAILABLE = 3


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

    postmortem = sub.add_parser(
        "postmortem", help="print an incident's postmortem draft (Markdown)"
    )
    _add_config(postmortem)
    postmortem.add_argument("incident_id", metavar="ID", help="incident id (inc-...)")
    postmortem.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )

    evidence = sub.add_parser(
        "evidence", help="write an incident's evidence bundle (.tar.gz), collecting it if needed"
    )
    _add_config(evidence)
    evidence.add_argument("incident_id", metavar="ID", help="incident id (inc-...)")
    evidence.add_argument(
        "-o", "--output", type=Path, metavar="FILE", required=True, help="where to write it"
    )
    return parser


def _load(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        print(f"posthog-receiver: config error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _serve(args: argparse.Namespace) -> int:
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


def _with_collector(
    args: argparse.Namespace, use: Callable[[EvidenceCollector], Awaitable[int]]
) -> int:
    """Run ``use(collector)`` against the local store named by ``--config``."""
    import asyncio

    from receiver.evidence import EvidenceCollector, IncidentNotFound
    from receiver.logs import configure_logging
    from receiver.store import Store, StoreUnavailable

    settings = _load(args.config)
    configure_logging(settings.logging)  # to stderr: stdout carries the draft

    async def run() -> int:
        store = Store(settings.store)
        await store.open()
        collector = EvidenceCollector.from_settings(settings.evidence, store=store)
        try:
            return await use(collector)
        finally:
            await collector.close()
            await store.close()

    try:
        return asyncio.run(run())
    except IncidentNotFound:
        print(f"posthog-receiver: no incident {args.incident_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except StoreUnavailable as e:
        print(f"posthog-receiver: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _postmortem(args: argparse.Namespace) -> int:
    async def use(collector: EvidenceCollector) -> int:
        text = await collector.postmortem(args.incident_id)
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text, encoding="utf-8")
        return 0

    return _with_collector(args, use)


def _evidence(args: argparse.Namespace) -> int:
    import shutil

    async def use(collector: EvidenceCollector) -> int:
        path = await collector.bundle(args.incident_id)
        shutil.copyfile(path, args.output)
        print(f"evidence bundle for {args.incident_id} written to {args.output}")
        return 0

    return _with_collector(args, use)


COMMANDS = {
    "serve": _serve,
    "check-config": _check_config,
    "postmortem": _postmortem,
    "evidence": _evidence,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
