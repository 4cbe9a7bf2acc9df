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


class MissingExtraError(FirstmileError, ImportError):
    """An optional part of firstmile was used without its extra installed; the message names the extra."""


def require_extra(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``pip install 'firstmile[<extra>]'`` if ``module`` is not importable."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{what} needs {module!r}, which the [{extra}] extra installs: "
                                f"pip install 'firstmile[{extra}]' (make installs every extra)")
