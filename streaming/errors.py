"""One exception root for firstmile: every error raised on purpose derives from :class:`FirstmileError`.

A caller that wants "anything firstmile refused or could not do" catches the root; each class below also derives
from the builtin its callers already expect (``ValueError`` for bad input), so ``except ValueError`` keeps working.
The classes live beside the code that raises them and subclass the root from here.
"""


class FirstmileError(Exception):
    """Root of every error raised on purpose by firstmile (hot path, warehouse, learning, orchestration)."""


class BrokerError(FirstmileError):
    """The embedded broker could not be started or reached."""


class PolicyError(FirstmileError):
    """A policy document is invalid; the message names the field or rule at fault."""
