"""End-to-end tests: the whole chain with real Prometheus and Alertmanager (marked ``slow``).

Run them alone with ``./dev.sh test tests/e2e``; ``E2E_STORM_SECONDS=60`` makes the storm last
the full minute. The harness (``stack.py``) and the storm (``storm.py``) are shared with
``bench/alert_to_action.py``.
"""
