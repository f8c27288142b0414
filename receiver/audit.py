"""The audit log: who changed what, when and from where.

Kept in the store: its records and SQL are :mod:`receiver.store.audit`, named here for the
callers that speak of the audit log.
"""

from receiver.store.audit import AuditEntry, recent_audit, record_audit

__all__ = ["AuditEntry", "recent_audit", "record_audit"]
