"""The action journal: what was about to be done, what was done, and how to undo it.

Why an intent row comes before every change, and the states an entry goes through:
:mod:`receiver.store.journal`, which holds the journal's records and SQL.
"""

from receiver.store.journal import (
    JournalEntry,
    State,
    actions_used,
    due_reverts,
    finish_revert,
    get_entry,
    hand_over,
    holders,
    last_applied,
    others,
    postpone_revert,
    revertible,
    schedule_revert,
    set_state,
    touch_cooldown,
    write_intent,
)

__all__ = [
    "JournalEntry",
    "State",
    "actions_used",
    "due_reverts",
    "finish_revert",
    "get_entry",
    "hand_over",
    "holders",
    "last_applied",
    "others",
    "postpone_revert",
    "revertible",
    "schedule_revert",
    "set_state",
    "touch_cooldown",
    "write_intent",
]
