"""posthog-incident-receiver: the PostHog incident runbook, run by an Alertmanager receiver."""

__all__ = ["__version__"]

__version__ = "0.1.0"
