"""The Prometheus HTTP API, as used by verification and evidence: instant and range queries.

Thin on purpose: one aiohttp session, a timeout per call, and errors in our own terms so
callers can tell "Prometheus is down" (:class:`PrometheusUnavailable`, worth retrying later)
from "the query is wrong" (:class:`PrometheusQueryError`, not worth retrying).
See https://prometheus.io/docs/prometheus/latest/querying/api/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

__all__ = [
    "PrometheusClient",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusUnavailable",
    "Sample",
    "Series",
]

ERROR_BODY_LIMIT = 300


class PrometheusError(Exception):
    """Any failure talking to Prometheus."""


class PrometheusUnavailable(PrometheusError):
    """Unreachable, timed out or answering 5xx: transient."""


class PrometheusQueryError(PrometheusError):
    """Prometheus refused the query (4xx, or status 'error'): permanent for that query."""


@dataclass(frozen=True)
class Sample:
    """One value of an instant vector."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: (unix time, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class PrometheusClient:
    """Queries one Prometheus server. Use as an async context manager, or call ``close()``."""

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self._base}{path}"
        try:
            async with self._http().get(url, params=params) as resp:
                text = await resp.text()
                if resp.status >= 500:
                    raise PrometheusUnavailable(
                        f"Prometheus answered {resp.status}: {text[:ERROR_BODY_LIMIT]}"
                    )
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    raise PrometheusUnavailable(
                        f"Prometheus answered {resp.status} with a body that is not JSON"
                    ) from None
        except (TimeoutError, aiohttp.ClientError) as e:
            raise PrometheusUnavailable(
                f"cannot reach Prometheus at {self._base}: {type(e).__name__}: {e}"
            ) from e
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "unknown error") if isinstance(body, dict) else "bad body"
            raise PrometheusQueryError(f"query refused: {str(error)[:ERROR_BODY_LIMIT]}")
        return body["data"]

    async def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        """Evaluate ``promql`` now (or at ``at``); scalars come back as one unlabelled sample."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = await self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            return [Sample(dict(r["metric"]), float(r["value"][1])) for r in result]
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        raise PrometheusQueryError(f"expected a vector or scalar result, got {kind}")

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step_seconds: float
    ) -> list[Series]:
        """Evaluate ``promql`` over ``[start, end]`` every ``step_seconds``."""
        params = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{max(step_seconds, 1.0):g}",
        }
        data = await self._get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PrometheusQueryError(f"expected a matrix, got {data.get('resultType')}")
        return [
            Series(dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]
