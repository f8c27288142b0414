"""Typed keys for what the application holds (settings, store, metrics, workers)."""

from __future__ import annotations

from aiohttp import web

from receiver.config import Settings
from receiver.duties import LeaderDuties
from receiver.leadership import Leader
from receiver.metrics import Metrics
from receiver.notify import OutboxWorker
from receiver.responder import IncidentResponder
from receiver.response_times import ResponseTimes
from receiver.spool import Spool
from receiver.store import Store
from receiver.worker import Worker

__all__ = [
    "DUTIES",
    "LEADER",
    "METRICS",
    "OUTBOX",
    "RESPONDER",
    "RESPONSE_TIMES",
    "SETTINGS",
    "SPOOL",
    "STORE",
    "WORKER",
]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
WORKER = web.AppKey("worker", Worker)
SPOOL = web.AppKey("spool", Spool)
OUTBOX = web.AppKey("outbox", OutboxWorker)
RESPONSE_TIMES = web.AppKey("response_times", ResponseTimes)
# The full responder, where the application built it (approvals are decided through it).
RESPONDER = web.AppKey("responder", IncidentResponder)
# Leader is a Protocol: the key's type is given by annotation.
LEADER: web.AppKey[Leader] = web.AppKey("leader")
DUTIES = web.AppKey("duties", LeaderDuties)
