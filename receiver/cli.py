"""The ``posthog-receiver`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from receiver import __version__
from receiver.config import (
    ConfigError,
    Settings,
    load_settings,
    require_secrets,
    secret_problems,
)

if TYPE_CHECKING:
    from receiver.alertmanager import WebhookPayload
    from receiver.evidence import EvidenceCollector
    from receiver.explain import TriageReport

__all__ = ["install_fast_loop", "main"]

EXIT_CONFIG = 2
EXIT_NOT_FOUND = 1
EXIT_PAYLOAD = 3
EXIT_UNAVAILABLE = 4
EXIT_DRILL_FAILED = 1


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

    check = sub.add_parser(
        "check-config",
        help="validate a configuration and exit",
        description=(
            "Validate a configuration: every problem is listed, each naming its field. "
            "Secrets that cannot be read are warnings (serve needs them; the other commands "
            "do not); exit status 0 when the configuration can be used, 2 otherwise."
        ),
    )
    _add_config(check)
    check.add_argument(
        "--require-secrets",
        action="store_true",
        help="a secret that cannot be read is an error (use where the receiver will serve)",
    )

    triage = sub.add_parser(
        "triage",
        help="explain, without acting, what would be decided and done for one payload",
        description=(
            "Classify and rate an Alertmanager webhook payload, walk the runbook's decision "
            "tree (reading PostHog's status page and our health URL), and print the result. "
            "Nothing is stored, changed or sent."
        ),
    )
    _add_config(triage)
    triage.add_argument("payload", type=Path, metavar="PAYLOAD.json", help="webhook payload")
    triage.add_argument("--json", action="store_true", help="print one JSON object")

    postmortem = sub.add_parser(
        "postmortem", help="print an incident's postmortem draft (Markdown)"
    )
    _add_config(postmortem)
    postmortem.add_argument("incident_id", metavar="ID", help="incident id (inc-YYYYMMDD-...)")
    postmortem.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )

    evidence = sub.add_parser(
        "evidence", help="write an incident's evidence bundle (.tar.gz), collecting it if needed"
    )
    _add_config(evidence)
    evidence.add_argument("incident_id", metavar="ID", help="incident id (inc-YYYYMMDD-...)")
    evidence.add_argument(
        "-o", "--output", type=Path, metavar="FILE", required=True, help="where to write it"
    )

    drill = sub.add_parser(
        "drill",
        help="run a game day now: a DRILL incident through every configured destination",
        description=(
            "Send a PagerDuty event (resolved at the end) and a Slack message marked DRILL, read "
            "the status page and its component (nothing published), dry-run every configured "
            "runbook action and check every permission it needs in Kubernetes, read PostHog's "
            "status page and the health URL. Each step is printed with its time and, when it "
            "fails, what to fix; exit status 1 when any step fails."
        ),
    )
    _add_config(drill)
    drill.add_argument(
        "--report-to",
        metavar="URL",
        help="the running receiver's base URL: the result is sent to its POST /api/drills "
        "(with the webhook credentials) and exported as metrics",
    )
    return parser


def _config_error(error: ConfigError) -> SystemExit:
    for line in error.lines():
        print(f"posthog-receiver: config error: {line}", file=sys.stderr)
    return SystemExit(EXIT_CONFIG)


def _load(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        raise _config_error(e) from None


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

    from receiver.app import create_app
    from receiver.keys import METRICS
    from receiver.listener import serve
    from receiver.logs import configure_logging
    from receiver.redaction import Redactor

    settings = _load(args.config)
    try:
        # Read every secret now: a missing one stops the start here, named, not at first use.
        require_secrets(settings, args.config)
    except ConfigError as e:
        raise _config_error(e) from None
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update=overrides)}
        )
    # One redactor for the process: its log lines, the outbox's errors and evidence.
    redactor = Redactor.from_settings(settings)
    configure_logging(settings.logging, redactor=redactor)
    loop = install_fast_loop()
    structlog.get_logger(__name__).info("serving", event_loop=loop, port=settings.server.port)
    app = create_app(settings, redactor=redactor)
    app.on_startup.append(tune_collector)  # after the application's own startup
    refused = app[METRICS].connections_refused.inc
    asyncio.run(serve(app, settings.server, on_refused=refused))
    return 0


# The collector's youngest generation is collected once this many more container objects were
# allocated than freed (CPython's default is 700). Under load, the 50-odd requests in flight
# hold a few thousand such objects while they wait for their spool write: at 700 every
# collection promoted them, and freeing them later did not count back, so a collection of
# ~2,600 objects ran every ~55 requests (about 5 % of the event loop's time). Above what the
# requests in flight hold, only garbage cycles trigger a collection (docs/benchmarks.md).
GC_YOUNG_THRESHOLD = 20_000


async def tune_collector(app: object) -> None:
    """For the served process only (an application built many times in one process, the
    tests, is left alone):

    - everything loaded at startup lives as long as the process: frozen, out of the
      collector's full passes, which otherwise rescan it (tens of milliseconds each, a p99
      latency spike under load);
    - the youngest generation is collected at ``GC_YOUNG_THRESHOLD``.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if args.require_secrets:
        try:
            require_secrets(settings, args.config)
        except ConfigError as e:
            raise _config_error(e) from None
    else:
        for problem in secret_problems(settings):
            print(
                f"posthog-receiver: warning: {problem} (serve needs it; --require-secrets "
                "makes this an error)",
                file=sys.stderr,
            )
    source = args.config or "embedded default"
    print(f"config OK: {source} (store: {settings.store.path})")
    return 0


def _read_payload(path: Path) -> WebhookPayload:
    from pydantic import ValidationError

    from receiver.alertmanager import WebhookPayload

    def fail(message: str) -> SystemExit:
        print(f"posthog-receiver: bad payload {path}: {message}", file=sys.stderr)
        return SystemExit(EXIT_PAYLOAD)

    try:
        text = path.read_bytes()
    except OSError as e:
        raise fail(e.strerror or "cannot read") from None
    try:
        return WebhookPayload.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = len(e.errors()) - 1
        raise fail(f"{where}: {first['msg']}" + (f" (and {more} more)" if more else "")) from None


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


_STATUS_WORDS = {"dry_run": "dry run"}


def _action_line(item: Mapping[str, Any]) -> list[str]:
    """One planned action: name, target and status, then why (and the change, if known)."""
    status = str(item.get("status", ""))
    lines = [
        f"  - {item.get('action')} on {item.get('target')}: {_STATUS_WORDS.get(status, status)}"
    ]
    before, after = item.get("before"), item.get("after")
    if before is not None or after is not None:
        was = "not read" if before is None else before
        lines.append(f"    change: {was} → {_cell(after)}")
    if item.get("reason"):
        lines.append(f"    {item['reason']}")
    return lines


def _notification_line(item: Mapping[str, Any]) -> list[str]:
    """One message that would be queued: where, what, on which occasion, after what wait."""
    delay = item.get("delay_seconds") or 0
    wait = f", held {delay} s" if delay else ""
    return [
        f"  - {item.get('destination')}: {item.get('kind')} (on {item.get('on')}{wait})",
        f"    {item.get('summary')}",
    ]


def _plan_lines(item: Mapping[str, Any]) -> list[str]:
    if "action" in item and "status" in item:
        return _action_line(item)
    if "destination" in item and "kind" in item:
        return _notification_line(item)
    return ["  - " + ", ".join(f"{k}: {_cell(v)}" for k, v in item.items())]


def render_report(report: TriageReport) -> str:
    """The human-readable form: aligned fields, then the decision path."""
    assessed = len(report.alerts)
    lines = [
        f"{'Alert group':<15}{report.group_key}",
        f"{'Status':<15}{report.status} ({assessed} alert{'s' if assessed != 1 else ''} assessed)",
        f"{'Error class':<15}{report.error_class.value}",
        f"{'Severity':<15}{report.severity.value}  (acknowledge by "
        f"{report.acknowledge_by.strftime('%Y-%m-%d %H:%M UTC')})",
        f"{'Verdict':<15}{report.decision.verdict.value}",
        f"{'Summary':<15}{report.decision.summary}",
        "",
        "Alerts",
    ]
    for a in report.alerts:
        lines.append(f"  {a.fingerprint:<20} {a.error_class.value:<15} {a.severity.value}")
    lines += ["", "Decision path"]
    width = max((len(s.question) for s in report.decision.steps), default=0)
    for n, step in enumerate(report.decision.steps, 1):
        lines.append(
            f"  {n}. {step.question:<{width}}  {step.answer.value:<14} {step.duration_ms:>7.0f} ms"
        )
        lines.append(f"     → {step.finding}")
    for title, items, who in (
        ("Actions", report.actions, "remediation planning"),
        ("Notifications", report.notifications, "notification planning"),
    ):
        lines.append("")
        if not items:
            lines.append(f"{title:<15}none ({who} supplied nothing)")
            continue
        lines.append(title)
        for item in items:
            lines += _plan_lines(item)
    return "\n".join(lines)


async def _explain_with_plans(payload: WebhookPayload, settings: Settings) -> TriageReport:
    """Triage, plus what remediation and notification would do; nothing applied or sent."""
    from receiver.explain import explain
    from receiver.responder import ResponsePreview

    async with ResponsePreview(settings, payload) as preview:
        return await explain(
            payload,
            settings,
            plan_actions=preview.actions,
            plan_notifications=preview.notifications,
        )


def _triage(args: argparse.Namespace) -> int:
    from receiver.logs import configure_logging
    from receiver.redaction import Redactor

    settings = _load(args.config)
    payload = _read_payload(args.payload)
    # The report is the output: logs go to stderr, and only problems unless debugging.
    level = "debug" if settings.logging.level == "debug" else "warning"
    configure_logging(
        settings.logging.model_copy(update={"level": level}),
        redactor=Redactor.from_settings(settings),
    )
    report = asyncio.run(_explain_with_plans(payload, settings))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render_report(report))
    return 0


def _with_collector(
    args: argparse.Namespace, use: Callable[[EvidenceCollector], Awaitable[int]]
) -> int:
    """Run ``use(collector)`` against the local store named by ``--config``, read-only.

    The store must exist already (it is never created or migrated here). A bundle the store
    does not have yet is collected into a scratch directory and not recorded: the command
    leaves the receiver's state as it found it.
    """
    import tempfile

    from receiver.evidence import EvidenceCollector, IncidentNotFound
    from receiver.kube.client import open_cluster
    from receiver.logs import configure_logging
    from receiver.redaction import Redactor
    from receiver.store import Store, StoreNotReadable, StoreUnavailable

    settings = _load(args.config)
    # The draft and the bundle are redacted as the service's are, for every secret that can
    # be resolved here (a secret this machine cannot read, it cannot look for either).
    redactor = Redactor.from_settings(settings)
    configure_logging(settings.logging, redactor=redactor)  # to stderr: stdout carries the draft

    async def run(scratch: Path) -> int:
        store = Store(settings.store)
        await store.open_read_only()
        evidence = settings.evidence.model_copy(update={"directory": scratch})
        try:
            async with open_cluster(settings.kubernetes) as cluster:
                collector = EvidenceCollector.from_settings(
                    settings.model_copy(update={"evidence": evidence}),
                    store=store,
                    cluster=cluster.connection,
                    redactor=redactor,
                )
                try:
                    return await use(collector)
                finally:
                    await collector.close()
        finally:
            await store.close()

    try:
        with tempfile.TemporaryDirectory(prefix="posthog-receiver-evidence-") as scratch:
            return asyncio.run(run(Path(scratch)))
    except StoreNotReadable as e:
        print(f"posthog-receiver: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
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


def _drill(args: argparse.Namespace) -> int:
    from receiver.drill import StepResult, report_to_receiver, run_drill
    from receiver.logs import configure_logging
    from receiver.redaction import Redactor

    settings = _load(args.config)
    try:
        # The drill sends for real, as serve does: a secret that cannot be read stops it here.
        require_secrets(settings, args.config)
    except ConfigError as e:
        raise _config_error(e) from None
    redactor = Redactor.from_settings(settings)
    # The steps are the output: logs go to stderr, and only problems unless debugging.
    level = "debug" if settings.logging.level == "debug" else "warning"
    configure_logging(settings.logging.model_copy(update={"level": level}), redactor=redactor)

    def show(step: StepResult) -> None:
        print("\n".join(step.lines()), flush=True)

    async def run() -> bool:
        report = await run_drill(settings, redactor=redactor, on_step=show)
        ok = report.ok
        if args.report_to:
            recorded = await report_to_receiver(
                report, receiver_url=args.report_to, settings=settings, redactor=redactor
            )
            show(recorded)
            ok = ok and recorded.status == "passed"
        print(report.summary())
        return ok

    return 0 if asyncio.run(run()) else EXIT_DRILL_FAILED


COMMANDS = {
    "serve": _serve,
    "check-config": _check_config,
    "triage": _triage,
    "postmortem": _postmortem,
    "evidence": _evidence,
    "drill": _drill,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
