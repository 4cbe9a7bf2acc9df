"""One exception root for the streaming package."""


class FirstmileError(Exception):
    """Root of every error raised on purpose by the hot path."""


class BrokerError(FirstmileError):
    """The embedded broker could not be started or reached."""


class PolicyError(FirstmileError):
    """A policy document is invalid; the message names the field or rule at fault."""
