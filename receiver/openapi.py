"""The OpenAPI description of the HTTP API, served by the service itself.

Why a hand-written file shipped in the package rather than one generated from the handlers:
the description is the contract that Alertmanager set-ups, dashboards and scripts rely on, so
it is written and reviewed as such, and the tests check the running service against it; a
handler that drifts from the contract fails the tests instead of silently changing it.

The file is read once, when first asked for; ``info.version`` is the installed package's.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from receiver import __version__

__all__ = ["ROUTES", "SPEC_RESOURCE", "load_spec"]

SPEC_RESOURCE = "openapi.yaml"
JSON_PATH = "/openapi.json"
YAML_PATH = "/openapi.yaml"


@functools.cache
def load_spec() -> dict[str, Any]:
    """The OpenAPI document, parsed, with ``info.version`` set to the package version.

    Callers get the cached object: treat it as read-only.
    """
    text = resources.files("receiver").joinpath(SPEC_RESOURCE).read_text(encoding="utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    spec["info"]["version"] = __version__
    return spec


@functools.cache
def _rendered() -> tuple[bytes, bytes]:
    spec = load_spec()
    as_json = json.dumps(spec, indent=2, ensure_ascii=False).encode()
    as_yaml = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).encode()
    return as_json, as_yaml


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the description as JSON."""
    return web.Response(body=_rendered()[0], content_type="application/json", charset="utf-8")


async def openapi_yaml(request: web.Request) -> web.Response:
    """``GET /openapi.yaml``: the description as YAML."""
    return web.Response(body=_rendered()[1], content_type="application/yaml", charset="utf-8")


# The description, served at ``/openapi.json`` and ``/openapi.yaml`` (no credentials).
ROUTES = (web.get(JSON_PATH, openapi_json), web.get(YAML_PATH, openapi_yaml))
