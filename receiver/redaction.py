"""Redaction: configured secrets replaced by ``[redacted]`` wherever text leaves the process.

Secrets must never reach logs, evidence bundles, postmortems or the errors the outbox stores.
Code does not write them on purpose; redaction is the safety net for what others echo back: a
pod that logs its API key, a service whose error answer quotes the URL it was called on.

Why one object passed explicitly, not a registry: what is secret is a property of one set of
settings. A process that builds two applications (the tests), or a CLI command that never
serves, redacts exactly the secrets of the settings it runs with, and every writer of text
receives its :class:`Redactor` from whoever built it from those settings.

Why several forms per secret: an echo is rarely byte for byte. A JSON answer may escape ``/``
as ``\\/``; a URL or a form body percent-encodes (``%2F`` or ``%2f``, ``+`` for spaces);
basic credentials travel as base64 of ``user:password``. A webhook URL is the credential as a
whole, and its path alone is enough to post to it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, final
from urllib.parse import quote, quote_plus, urlsplit

from pydantic import BaseModel

from receiver.config import BasicAuth, SecretSource

__all__ = ["REDACTED", "Redactor", "configured_secrets"]

REDACTED = "[redacted]"
# Shorter values are not looked for: replacing every "abc" would shred the text around it,
# and a secret that short protects nothing anyway.
MIN_SECRET_LENGTH = 4

_PERCENT = re.compile(r"%[0-9A-F]{2}")


def configured_secrets(settings: BaseModel) -> list[str]:
    """Every secret value in ``settings`` (any settings model or group) that can be resolved,
    with the other values that give it away: the path of a webhook URL, the base64 of basic
    credentials. The one place that knows where secrets sit in the settings."""
    found: list[str] = []
    for model in _models(settings):
        if isinstance(model, SecretSource):
            value = model.resolved()
            if value is not None:
                found.extend(_giveaways(value.get_secret_value()))
        elif isinstance(model, BasicAuth):
            password = model.password.resolved()
            if password is not None:
                pair = f"{model.username}:{password.get_secret_value()}"
                found.append(base64.b64encode(pair.encode("utf-8")).decode("ascii"))
    return found


def _models(value: Any) -> Iterator[BaseModel]:
    """``value`` and every settings model nested in it, in fields, lists and mappings."""
    if isinstance(value, BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from _models(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _models(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _models(item)


def _giveaways(secret: str) -> list[str]:
    """The secret, and for an http(s) URL its path and query (what a service's error answer
    quotes back) and any password in it."""
    found = [secret]
    try:
        url = urlsplit(secret)
    except ValueError:
        return found
    if url.scheme in ("http", "https") and url.netloc:
        found.append(url.path)
        if url.query:
            found += [url.query, f"{url.path}?{url.query}"]
        if url.password:
            found.append(url.password)
    return found


def _encodings(secret: str) -> set[str]:
    """The forms in which ``secret`` may be echoed back."""
    escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        quote_plus(secret, safe="/"),
    }
    lower = {_PERCENT.sub(lambda m: m.group().lower(), form) for form in forms}
    return forms | lower


ERROR_LINE_CHARS = 200  # an error shown to people


@final
class Redactor:
    """Replaces the secrets it was built with, in any of their forms, by ``[redacted]``.

    Immutable; its ``repr`` never shows what it looks for. ``Redactor()`` redacts nothing.
    """

    __slots__ = ("_count", "_pattern")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms |= {f for f in _encodings(secret) if len(f) >= MIN_SECRET_LENGTH}
        # Longest first: where one form contains another (a URL and its path), the whole goes.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._count = len(ordered)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_settings(cls, settings: BaseModel) -> Redactor:
        """A redactor for every secret of ``settings`` that can be resolved."""
        return cls(configured_secrets(settings))

    def __repr__(self) -> str:
        return f"Redactor({self._count} forms)"

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_pattern"):
            raise AttributeError("a Redactor cannot be changed")
        object.__setattr__(self, name, value)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        if self._pattern is None:
            return value
        return self._pattern.sub(REDACTED, value)

    def data(self, data: bytes) -> bytes:
        """Bytes (a file's content) with every secret replaced; bytes that are not UTF-8 are
        kept as they are."""
        if self._pattern is None:
            return data
        return self.text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def value(self, value: Any) -> Any:
        """Strings inside ``value`` (nested in dicts, lists and tuples) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def error_line(self, error: BaseException) -> str:
        """An error for people (a page, the timeline): its kind and message on one short line,
        secrets redacted (a message may carry a URL or a header that holds one). A hint, not
        a traceback: the log has that."""
        text = " ".join(self.text(str(error)).split())
        if len(text) > ERROR_LINE_CHARS:
            text = text[: ERROR_LINE_CHARS - 1] + "…"
        return f"{type(error).__name__}: {text}" if text else type(error).__name__

    def log_processor(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: every field of the event redacted."""
        if self._pattern is None:
            return event_dict
        return {k: self.value(v) for k, v in event_dict.items()}
