"""The runtime kill switch: switched from the operations page, kept in the store.

Why it exists and how remediation reads it: :mod:`receiver.store.runtime_switches`, which
holds its SQL.
"""

from receiver.store.runtime_switches import (
    RuntimeSwitch,
    runtime_kill_switch,
    set_runtime_kill_switch,
)

__all__ = ["RuntimeSwitch", "runtime_kill_switch", "set_runtime_kill_switch"]
