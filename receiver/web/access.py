"""Who is looking at the pages, and whether a form really comes from one of them.

A viewer is known in one of three ways, checked in this order:

- the identity header of an authenticating proxy (``ui.proxy_user_header``, e.g.
  oauth2-proxy's ``X-Auth-Request-User``), trusted only when configured: the proxy must remove
  that header from clients' requests, or anyone could name themselves;
- HTTP basic auth against ``ui.users`` (checked in constant time);
- a signed link (:mod:`receiver.links`) to one incident: it shows that incident only, and
  changes nothing.

CSRF: every form carries a token that is the HMAC of the signed-in person's name and the time
it was issued, under a key made at start (a restart asks for a reload of the page). A
state-changing request without a valid token for the same person is refused with 403, so a
page elsewhere cannot make a signed-in browser switch anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from receiver import links
from receiver.config import UiSettings

__all__ = ["Access", "Viewer"]

# A form stays usable this long after its page was rendered.
CSRF_TTL_SECONDS = 12 * 3600
REALM = 'Basic realm="posthog-receiver", charset="UTF-8"'


@dataclass(frozen=True)
class Viewer:
    """Someone allowed to see a page: ``name`` (for the audit log and the page header) and
    how they were recognised; a ``link`` viewer sees ``incident_id`` only."""

    name: str
    via: Literal["proxy", "basic", "link"]
    incident_id: str | None = None

    @property
    def may_change(self) -> bool:
        """Signed-in people may change things; a signed link only shows."""
        return self.via != "link"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class Access:
    """The configured ways in, their secrets resolved once."""

    def __init__(self, settings: UiSettings, *, csrf_key: bytes | None = None) -> None:
        self._header = settings.proxy_user_header
        self._users = {
            user.username: user.password.secret.get_secret_value() for user in settings.users
        }
        self._link_key = (
            settings.link_key.secret.get_secret_value().encode("utf-8")
            if settings.link_key is not None
            else None
        )
        self._csrf_key = csrf_key or secrets.token_bytes(32)

    @property
    def link_key(self) -> bytes | None:
        return self._link_key

    def _basic(self, header: str | None) -> str | None:
        if not header or not self._users:
            return None
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        # Every user is compared, so the time taken does not tell which names exist.
        found = None
        for name, expected in self._users.items():
            if _same(user, name) & _same(password, expected):
                found = name
        return found

    def viewer(self, request: web.Request, *, incident_id: str | None = None) -> Viewer | None:
        """Who is asking, or ``None``; ``incident_id`` lets a signed link to it count."""
        if self._header is not None:
            name = request.headers.get(self._header, "").strip()
            if name:
                return Viewer(name[:200], "proxy")
        user = self._basic(request.headers.get("Authorization"))
        if user is not None:
            return Viewer(user, "basic")
        signed = (
            incident_id is not None
            and self._link_key is not None
            and links.verify(
                self._link_key,
                links.incident_path(incident_id),
                exp=request.query.get("exp"),
                sig=request.query.get("sig"),
                now=time.time(),
            )
        )
        return Viewer("signed link", "link", incident_id) if signed else None

    def require(self, request: web.Request, *, incident_id: str | None = None) -> Viewer:
        """The viewer, or the answer that refuses them: 403 for a link that is tampered with or
        expired, 401 (asking for basic auth where users are configured) for no credentials."""
        viewer = self.viewer(request, incident_id=incident_id)
        if viewer is not None:
            return viewer
        if "sig" in request.query:
            raise web.HTTPForbidden(text="This link is not valid or has expired.\n")
        headers = {"WWW-Authenticate": REALM} if self._users else {}
        raise web.HTTPUnauthorized(text="Sign in to see this page.\n", headers=headers)

    # -- CSRF -------------------------------------------------------------------------------

    def _mac(self, name: str, issued: int) -> str:
        mac = hmac.new(self._csrf_key, f"{name}\n{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    def csrf_token(self, viewer: Viewer, *, now: float | None = None) -> str:
        """A token for ``viewer``'s forms."""
        issued = int(now if now is not None else time.time())
        return f"{issued}.{self._mac(viewer.name, issued)}"

    def csrf_valid(self, viewer: Viewer, token: str | None, *, now: float | None = None) -> bool:
        """Whether ``token`` was issued to ``viewer`` and is still fresh."""
        if not token:
            return False
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        current = now if now is not None else time.time()
        if not 0 <= current - issued <= CSRF_TTL_SECONDS:
            return False
        return hmac.compare_digest(self._mac(viewer.name, issued), mac)
