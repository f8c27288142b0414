"""Typed application keys of the web UI."""

from __future__ import annotations

from aiohttp import web

from receiver.web.access import Access

__all__ = ["ACCESS"]

ACCESS = web.AppKey("ui_access", Access)
