"""Signed links to an incident: what goes into Slack and PagerDuty opens the page without a
sign-in, for that incident only, until it expires.

A link carries ``exp`` (Unix seconds) and ``sig``, the HMAC-SHA256 of the path and the expiry
under the configured key (``ui.link_key``), in URL-safe base64. The path is signed whole, so a
signature for one incident (or for its page) is worth nothing on another. Verification is in
constant time, and a tampered or expired link is simply not valid: the page answers 403.

Pure functions: the notifiers (links in messages: :func:`incident_url`) and the pages
(checking them) share them; outside :mod:`receiver.web`, which the notifiers do not import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote, urlencode

from receiver.config import UiSettings

__all__ = ["incident_path", "incident_url", "sign", "signed_incident_url", "verify"]


def incident_path(incident_id: str) -> str:
    """The incident page's path (the id quoted: it is derived from untrusted labels)."""
    return f"/incidents/{quote(incident_id, safe='')}"


def _signature(key: bytes, path: str, expires: int) -> str:
    mac = hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def sign(key: bytes, path: str, *, expires: int) -> str:
    """The query string (``exp=…&sig=…``) that makes ``path`` valid until ``expires``."""
    return urlencode({"exp": str(expires), "sig": _signature(key, path, expires)})


def signed_incident_url(public_url: str, key: bytes, incident_id: str, *, expires: int) -> str:
    """The full signed link to an incident's page, for a message."""
    path = incident_path(incident_id)
    return f"{public_url.rstrip('/')}{path}?{sign(key, path, expires=expires)}"


def verify(key: bytes, path: str, *, exp: str | None, sig: str | None, now: float) -> bool:
    """Whether ``exp``/``sig`` (as given in the query) sign ``path`` and have not expired."""
    if not exp or not sig or not exp.isdigit() or len(exp) > 12:
        return False
    expires = int(exp)
    if expires <= now:
        return False
    return hmac.compare_digest(_signature(key, path, expires), sig)


def incident_url(ui: UiSettings, public_url: str, incident_id: str, *, now: float) -> str:
    """The link to put in a message: the incident's page, signed for ``ui.link_ttl_hours``
    where ``ui.link_key`` is set, else plain (the page asks for a sign-in). With the UI off
    there is no page: the incident's JSON in the API."""
    base = public_url.rstrip("/")
    if not ui.enabled:
        return f"{base}/api/incidents/{quote(incident_id, safe='')}"
    if ui.link_key is None:
        return f"{base}{incident_path(incident_id)}"
    key = ui.link_key.secret.get_secret_value().encode("utf-8")
    expires = int(now + ui.link_ttl_hours * 3600)
    return signed_incident_url(public_url, key, incident_id, expires=expires)
