"""Guarded remediation: the runbook's immediate actions, applied, verified and reverted.

Talks to the cluster only through :mod:`receiver.kube`; never imports the Kubernetes client.
"""

from receiver.remediation.outcome import ActionOutcome
from receiver.remediation.remediator import Remediator
from receiver.remediation.setup import open_remediator

__all__ = ["ActionOutcome", "Remediator", "open_remediator"]
