"""Approvals: a runbook action that waits for a person before it changes anything.

How an approval is requested, decided at most once and expired, and its SQL:
:mod:`receiver.store.approvals`.
"""

from receiver.store.approvals import (
    Approval,
    Decision,
    State,
    awaiting,
    decide,
    expire,
    expired_due,
    for_incident,
    get,
    request,
)

__all__ = [
    "Approval",
    "Decision",
    "State",
    "awaiting",
    "decide",
    "expire",
    "expired_due",
    "for_incident",
    "get",
    "request",
]
