"""``python -m receiver``: the same as the ``posthog-receiver`` command."""

from receiver.cli import main

raise SystemExit(main())
